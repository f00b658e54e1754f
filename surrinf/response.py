"""The response-model protocol that ties surrinf together.

A *response model* maps conditions (the truth) to detector observations. The reference simulators and
every trained surrogate implement it, so an analysis written against a response runs identically on both.

Conditions are a float array of shape ``(N, k)`` whose columns follow :data:`CONDITION_COLUMNS`; a model
reads the leading ``k`` columns it understands (``k = 1``: incident energy only; ``k = 4``: plus the
detector parameters theta; ``k = 6``: plus the beam impact offset). A 1-D array is read as ``(N, 1)``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

#: Column meaning of a conditions array: incident energy [GeV], theta = (energy scale [1], sampling term
#: [GeV^1/2], per-cell noise sigma [GeV]), beam impact offset (x, y) [mm].
CONDITION_COLUMNS = ("energy_gev", "energy_scale", "sampling_term", "noise_sigma_gev", "offset_x_mm", "offset_y_mm")


@runtime_checkable
class ResponseModel(Protocol):
    """Anything with ``sample(key, conditions) -> observations`` (and optionally ``log_prob``)."""

    def sample(self, key, conditions):  # pragma: no cover - protocol
        """Draw one observation per row of ``conditions`` ((N,) or (N, k)) with the JAX PRNG ``key``."""
        ...


def make_conditions(
    energies_gev: np.ndarray,
    theta: np.ndarray | tuple[float, float, float] | None = None,
    offset_mm: np.ndarray | tuple[float, float] | None = None,
) -> np.ndarray:
    """Stack incident energies [GeV] (N,), optional theta (3,) or (N, 3) and optional impact offset
    (2,) or (N, 2) [mm] into a float32 conditions array (N, 1 | 4 | 6)."""
    e = np.asarray(energies_gev, dtype=np.float32).reshape(-1, 1)
    n = e.shape[0]
    cols = [e]
    if offset_mm is not None and theta is None:
        raise ValueError("offset_mm needs theta as well: conditions columns are (E, theta..., offset...)")
    for name, value, width in (("theta", theta, 3), ("offset_mm", offset_mm, 2)):
        if value is None:
            continue
        v = np.asarray(value, dtype=np.float32)
        if v.shape not in ((width,), (n, width)):
            raise ValueError(f"{name} must have shape ({width},) or ({n}, {width}), got {v.shape}")
        cols.append(np.broadcast_to(v, (n, width)))
    return np.concatenate(cols, axis=1)
