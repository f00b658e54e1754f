"""Small argument checks shared by the analysis modules (which must not import each other)."""

from __future__ import annotations

import operator
from typing import Any


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
