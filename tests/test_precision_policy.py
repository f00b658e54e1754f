"""Precision policy: importing surrinf never switches JAX to float64 nor pyhf away from its numpy backend; the
simulator runs in float32."""

from __future__ import annotations

import os
import subprocess
import sys


def test_import_keeps_float32_and_simulator_outputs_float32():
    code = (
        "import sys, jax, numpy as np, pyhf\n"
        "import surrinf, surrinf.sim, surrinf.data, surrinf.validation, surrinf.report, surrinf.pipeline, surrinf.cli\n"
        "import surrinf.inference, surrinf.generators, surrinf.unfolding, surrinf.kinfit, surrinf.sensitivity\n"
        "assert not jax.config.jax_enable_x64\n"
        "assert pyhf.tensorlib.name == 'numpy' and 'pyhf.tensor.jax_backend' not in sys.modules\n"
        "cal = surrinf.sim.calorimeter('default')\n"
        "with jax.enable_x64(True):\n"  # inside a float64 region the simulator still runs in float32
        "    b64 = cal.simulate(jax.random.key(0), np.array([10.0]))\n"
        "b = cal.simulate(jax.random.key(0), np.array([10.0]))\n"
        "assert b64.showers.dtype == np.float32 and np.array_equal(b64.showers, b.showers)\n"
        "assert b.showers.dtype == np.float32 and b.deposited.dtype == np.float32\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_import_sets_the_xla_cpu_scheduler_workaround_flag():
    # surrinf/_xla.py: without this flag vmapped GLS over 1000 toys hung in 6 of 12 runs (XLA CPU, jaxlib 0.10.2)
    code = "import os, surrinf\nprint(os.environ['XLA_FLAGS'])\n"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert "--xla_cpu_enable_concurrency_optimized_scheduler=false" in out.stdout
    env["XLA_FLAGS"] = "--xla_cpu_enable_concurrency_optimized_scheduler=true"  # the user's choice wins
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "--xla_cpu_enable_concurrency_optimized_scheduler=true"
