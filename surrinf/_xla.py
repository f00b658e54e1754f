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


def apply_cpu_scheduler_workaround() -> None:
    """Append :data:`FLAG` to ``XLA_FLAGS`` unless the option is already there (the user's choice wins)."""
    current = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_enable_concurrency_optimized_scheduler" not in current:
        os.environ["XLA_FLAGS"] = f"{current} {FLAG}".strip()


apply_cpu_scheduler_workaround()
