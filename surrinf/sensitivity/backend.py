"""A contained switch of pyhf's tensor backend (numpy by default, JAX on request), always in float64.

pyhf keeps its backend in process-wide state, and loading its JAX backend has a process-wide side effect: the module
``pyhf.tensor.jax_backend`` runs ``jax.config.update("jax_enable_x64", True)`` when it is first imported, which would
switch every later JAX computation of the process (the float32 simulator and generators included) to float64.
:func:`pyhf_backend` contains both: inside the ``with`` block pyhf uses the requested backend in 64-bit precision (and,
for JAX, float64 is enabled globally and for the current thread); on exit, also on an exception, pyhf's previous
backend and optimizer and the previous global ``jax_enable_x64`` value are restored. Not thread-safe: pyhf's backend is
global, so do not switch it from two threads at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax
import pyhf

__all__ = ["BACKENDS", "pyhf_backend"]

#: The pyhf backends :func:`pyhf_backend` accepts.
BACKENDS = ("numpy", "jax")


def _global_x64() -> bool:
    """The process-wide (not thread-local) value of ``jax_enable_x64``."""
    holder = getattr(jax.config, "_value_holders", {}).get("jax_enable_x64")
    get_global = getattr(holder, "get_global", None)
    return bool(get_global()) if callable(get_global) else bool(jax.config.jax_enable_x64)


@contextlib.contextmanager
def pyhf_backend(name: str = "numpy") -> Iterator[str]:
    """Use pyhf's ``name`` backend ("numpy" or "jax", float64) inside the block; restore the previous state after.

    Restored on exit (also on an exception): pyhf's previous backend object and optimizer (``pyhf.get_backend()``) and
    the previous global ``jax_enable_x64``. With "jax", float64 is enabled both globally (as pyhf's JAX backend
    requires and does itself on import) and for the current thread (``jax.enable_x64(True)``, so a caller's
    thread-local float32 region cannot turn pyhf's float64 arrays into float32). Nestable. Yields ``name``.

    Raises:
        ValueError: ``name`` is not one of :data:`BACKENDS`.
    """
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    previous_backend, previous_optimizer = pyhf.get_backend()
    previous_x64 = _global_x64()
    try:
        with contextlib.ExitStack() as stack:
            if name == "jax":
                jax.config.update("jax_enable_x64", True)
                stack.enter_context(jax.enable_x64(True))
            pyhf.set_backend(name, precision="64b")
            yield name
    finally:
        pyhf.set_backend(previous_backend, custom_optimizer=previous_optimizer)
        if _global_x64() != previous_x64:
            jax.config.update("jax_enable_x64", previous_x64)
