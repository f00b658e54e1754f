"""Work around an XLA CPU runtime deadlock (jaxlib 0.10.2) before JAX initialises its backend.

With the CPU backend's concurrency-optimised HLO scheduler, some vmapped linear-algebra graphs (batched triangular
solves whose results feed further solves, as in generalised least squares over ~1000 pseudo-data sets) hang
nondeterministically in ``block_until_ready``: every XLA worker thread waits and no CPU is used. Measured on the 2-core
development machine: a 1000-toy GLS reproducer hung in 6 of 12 runs with the default scheduler and in 0 of 24 with
``--xla_cpu_enable_concurrency_optimized_scheduler=false``. Importing surrinf appends that flag to ``XLA_FLAGS``
unless the user already set the option; it only takes effect if no JAX computation ran before the import.
"""

from __future__ import annotations

import os

FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"

#: Compiler options of vmapped toy / event loops (pass them to your own top-level ``jax.jit``; JAX refuses them on
#: nested jits, so library kernels cannot carry them). Single-threaded Eigen: with the default multi-threaded Eigen,
#: XLA CPU (jaxlib 0.10.2) deadlocked nondeterministically on vmapped batched QR and triangular-solve graphs even with
#: :data:`FLAG` (a Tikhonov scan over 1000 toys hung in 5 of 6 runs, 0 of 6 with this option; the PyAutoFit project
#: reports the same wedge). The kernels are small per toy, so little speed is lost.
CPU_COMPILER_OPTIONS = {"xla_cpu_multi_thread_eigen": False}


def apply_cpu_scheduler_workaround() -> None:
    """Append :data:`FLAG` to ``XLA_FLAGS`` unless the option is already there (the user's choice wins)."""
    current = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_enable_concurrency_optimized_scheduler" not in current:
        os.environ["XLA_FLAGS"] = f"{current} {FLAG}".strip()


apply_cpu_scheduler_workaround()
