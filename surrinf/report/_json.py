"""Conversion of arbitrary Python/NumPy values to JSON-safe structures."""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections.abc import Mapping
from typing import Any


def to_jsonable(obj: Any) -> Any:
    """Return a JSON-safe copy of ``obj``.

    Mappings become dicts with string keys, sequences and sets become lists, NumPy scalars and arrays become Python
    numbers and (nested) lists, paths become strings, dataclasses become dicts, non-finite floats become the strings
    ``"nan"``, ``"inf"`` and ``"-inf"``; anything else falls back to ``str(obj)``. Never raises for ordinary input.
    """
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        value = float(obj)
        return value if math.isfinite(value) else str(value)
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, set | frozenset):
        items = [to_jsonable(v) for v in obj]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=repr)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    tolist = getattr(obj, "tolist", None)  # numpy arrays and scalars of other kinds, jax arrays
    if callable(tolist):
        try:
            return to_jsonable(tolist())
        except Exception:
            pass
    if isinstance(obj, numbers.Complex):
        return str(obj)
    return str(obj)
