"""Small argument checks shared by the analysis modules (which must not import each other)."""

from __future__ import annotations

import operator
from typing import Any

import numpy as np


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """value as an int >= minimum; a clear ValueError otherwise (bools and non-integral floats are rejected)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(v)


def check_widths(value: Any, name: str = "hidden") -> tuple[int, ...]:
    """value (a non-empty sequence of layer widths) as a tuple of ints >= 1; a clear ValueError otherwise."""
    try:
        widths = tuple(value)
    except TypeError:
        widths = ()
    if not widths or any(isinstance(h, bool) or not isinstance(h, int | np.integer) or h < 1 for h in widths):
        raise ValueError(f"{name} must be a non-empty list of integers >= 1, got {value!r}")
    return tuple(int(h) for h in widths)
