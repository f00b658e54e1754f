"""The float64 switch of the statistics modules (unfolding, kinematic fits): entered locally, never globally.

Generators and the reference simulator run in float32; statistics need float64. Every public statistics function
enters ``jax.enable_x64(True)`` itself (this decorator), so importing surrinf never changes ``jax_enable_x64`` and
the precision of a result does not depend on what was imported before (see docs/architecture.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import jax

__all__ = ["float64"]

F = TypeVar("F", bound=Callable[..., Any])


def float64(fn: F) -> F:
    """Decorator: run ``fn`` with float64 enabled locally (``jax.enable_x64(True)``); re-entrant, so decorated
    functions can call each other and run under a caller's vmap/jit in a float64 region."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with jax.enable_x64(True):
            return fn(*args, **kwargs)

    return wrapped  # type: ignore[return-value]
