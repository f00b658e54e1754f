"""Shared fixtures: one small simulated shower sample for every generator test (simulated once per session)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from surrinf.data.geometry import Geometry
from surrinf.sim import calorimeter


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
