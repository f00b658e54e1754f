"""Shared fixtures: one small simulated shower sample for every generator test (simulated once per session), and one
persistent XLA compilation cache per test session.

The cache (a fresh temporary directory per ``pytest`` invocation, shared by its xdist workers and the subprocesses
they start, removed at the end) lets a worker load an executable that the other worker, or an earlier test that
traced the same computation again, already compiled: identical programs are compiled once per session instead of
once per process and re-trace. It changes no result (the same compiled code runs).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest

from surrinf._xla import CPU_COMPILER_OPTIONS
from surrinf.data.geometry import Geometry
from surrinf.sim import calorimeter

_CACHE_ENV = "SURRINF_TEST_JAX_CACHE"
# set by the controlling pytest process before it starts its xdist workers, which inherit its environment
_cache_dir = os.environ.get(_CACHE_ENV) or os.path.join(tempfile.gettempdir(), f"surrinf-test-jax-cache-{os.getpid()}")
os.environ[_CACHE_ENV] = _cache_dir
os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir  # subprocesses started by tests
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
jax.config.update("jax_compilation_cache_dir", _cache_dir)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


_shared_dir = _cache_dir + "-shared"


#: Wall seconds of the slowest test modules in `make test` (fresh clone, 2 cores, measured 2026-11-30). With
#: `--dist loadscope --no-loadscope-reorder` (Makefile) each module runs whole on one worker (a module fixture is never
#: computed on both) and modules are handed out in collection order; sorting them longest first (longest-processing-
#: time scheduling) keeps a long module from starting last and leaving one worker idle at the end. Unlisted modules
#: (a few seconds each) keep their order after these. Stale numbers only cost balance, never correctness.
MODULE_SECONDS = {
    "test_pipeline_job.py": 140,
    "test_validation_acceptance.py": 110,
    "test_flow.py": 80,
    "test_docs_examples.py": 65,
    "test_flow_matching.py": 55,
    "test_sim_physics.py": 55,
    "test_inference_calibration.py": 46,
    "test_cli.py": 45,
    "test_vae.py": 42,
    "test_gan.py": 40,
    "test_kinfit_fit.py": 28,
    "test_inference_samplers.py": 28,
    "test_distributed.py": 25,
    "test_generators_integration.py": 25,
    "test_unfolding_bayesian.py": 24,
    "test_export.py": 23,
    "test_trainer.py": 23,
    "test_inference_diagnostics.py": 22,
    "test_distances.py": 21,
    "test_classifier.py": 20,
    "test_unfolding_ibu.py": 18,
    "test_tracks.py": 16,
    "test_bijection.py": 15,
    "test_pileup.py": 12,
    "test_sensitivity_significance.py": 12,
    "test_precision_policy.py": 10,
}


def pytest_collection_modifyitems(session, config, items):
    """Order the test modules longest first (see :data:`MODULE_SECONDS`); tests keep their order within a module."""
    items.sort(key=lambda item: -MODULE_SECONDS.get(item.path.name, 0))


def pytest_sessionfinish(session):
    """The controlling process (not an xdist worker) removes the session's compilation cache and shared directory."""
    if not hasattr(session.config, "workerinput"):
        shutil.rmtree(_cache_dir, ignore_errors=True)
        shutil.rmtree(_shared_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_once():
    """``once(name, fn)``: ``fn(directory)`` computed once per test session across all xdist workers (the others
    wait on a file lock, then call ``fn`` again, which must find its own earlier work, e.g. in a stage cache, in
    ``directory``). For expensive, deterministic setup that tests on either worker need."""
    import fcntl

    def once(name: str, fn):
        directory = Path(_shared_dir) / name
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                return fn(directory)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    return once


def toy_map(fn):
    """``jax.vmap(fn)`` under a top-level jit with :data:`CPU_COMPILER_OPTIONS` (single-threaded Eigen), as the
    library's toy loops do: an eager vmap of batched solves over thousands of toys can deadlock XLA CPU (surrinf._xla;
    observed here once, in test_inversion_closure_pulls)."""
    return jax.jit(jax.vmap(fn), compiler_options=CPU_COMPILER_OPTIONS)


def tiny_geometry() -> Geometry:
    """4 layers x 3 radial bins (12 voxels), unbounded last radial bin."""
    r = np.array([0.0, 5.0, 15.0, np.inf])
    return Geometry("tiny", np.array([0.0, 12.0, 24.0, 36.0, 60.0]), (r,) * 4, (1,) * 4)


@pytest.fixture(scope="session")
def tiny_showers():
    """(geometry, showers (3000, 12) [GeV] float32, energies (3000,) [GeV] float32): W/Si, log-uniform 5-50 GeV."""
    geo = tiny_geometry()
    energies = np.exp(np.random.default_rng(0).uniform(np.log(5.0), np.log(50.0), 3000)).astype(np.float32)
    showers = np.asarray(calorimeter(geo, "W/Si").simulate(jax.random.key(0), energies).showers)
    showers.setflags(write=False)
    energies.setflags(write=False)
    return geo, showers, energies


@pytest.fixture
def run_with_cpu_devices():
    """``run(script, n_devices) -> stdout``: run Python source in a fresh interpreter whose JAX sees ``n_devices`` CPU
    devices (JAX fixes its device count when its backend starts, hence the subprocess); asserts a zero exit status."""
    repo = Path(__file__).resolve().parents[1]

    def run(script: str, n_devices: int) -> str:
        env = dict(os.environ)
        flag = f"--xla_force_host_platform_device_count={n_devices}"
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flag).strip()
        env["JAX_PLATFORMS"] = "cpu"
        env["PYTHONPATH"] = os.pathsep.join([str(repo), env.get("PYTHONPATH", "")])
        proc = subprocess.run(
            [sys.executable, "-c", script], env=env, cwd=repo, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    return run


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture
def chromium_images(tmp_path):
    """``count(html_path) -> (loaded, total)``: open a copy of the page in headless Chromium and count its images that
    finished loading with a non-zero natural width. Skips when no Chromium is installed (Debian package
    ``chromium``)."""
    browser = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if browser is None:
        pytest.skip("Chromium not installed (Debian package 'chromium')")

    def count(html_path: Path) -> tuple[int, int]:
        html = Path(html_path).read_text(encoding="utf-8")
        probe = (
            "<script>window.addEventListener('load', function () {"
            " var imgs = Array.from(document.images);"
            " var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;"
            " document.title = 'loaded:' + ok + '/' + imgs.length; });</script>"
        )
        assert "</body>" in html, "not a complete HTML page"
        copy = Path(html_path).with_name("chromium-probe.html")
        copy.write_text(html.replace("</body>", probe + "</body>", 1), encoding="utf-8")
        cmd = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            copy.as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        copy.unlink()
        assert proc.returncode == 0, proc.stderr[-2000:]
        title = re.search(r"<title>loaded:(\d+)/(\d+)</title>", proc.stdout)
        assert title is not None, proc.stdout[:2000]
        return int(title.group(1)), int(title.group(2))

    return count
