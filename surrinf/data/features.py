"""High-level shower features, as used in the CaloChallenge evaluation.

All functions take showers ``(N, V)`` (any consistent energy unit, e.g. GeV) in the voxel order of the
given :class:`~surrinf.data.geometry.Geometry`, and work on numpy or JAX arrays:

* numpy input is processed in float64, in blocks of rows (bounded temporaries), and numpy float64
  arrays are returned;
* JAX input (including tracers under ``jit``/``vmap``/``grad``) is processed with ``jax.numpy`` in the
  input dtype and JAX arrays are returned.

Negative voxel energies (electronic noise) are kept in the energy sums (``E_layer``, ``E_total``,
``E_ratio``) but clipped at 0 wherever energies act as weights (centroids, widths, the depth profile),
so that a weighted mean stays a mean. A layer whose clipped energy is 0 gets centroid 0 and width 0.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from surrinf.data.geometry import Geometry

__all__ = [
    "PER_LAYER_FEATURES",
    "centroids",
    "depth_of_maximum",
    "energy_ratio",
    "flatten_features",
    "high_level_features",
    "layer_energies",
    "sparsity",
    "total_energy",
    "widths",
]

#: Keys of :func:`high_level_features` whose arrays are ``(N, n_layers)``.
PER_LAYER_FEATURES = ("E_layer", "x_centroid", "y_centroid", "x_width", "y_width", "sparsity")
#: Elements per block of the numpy path (rows per block = this // V).
_BLOCK_ELEMENTS = 1 << 21


@dataclass(frozen=True)
class _Index:
    """Per-geometry lookup tables (cached)."""

    n_layers: int
    layer_of_voxel: np.ndarray  # (V,) int
    active: np.ndarray  # indices of layers with voxels
    starts: np.ndarray  # flat index of the first voxel of each active layer
    voxels_per_layer: np.ndarray  # (n_layers,)
    x_mm: np.ndarray  # (V,)
    y_mm: np.ndarray  # (V,)


@functools.lru_cache(maxsize=32)
def _index(geometry: Geometry) -> _Index:
    c = geometry.voxel_coordinates()
    active = geometry.active_layers
    return _Index(
        n_layers=geometry.n_layers,
        layer_of_voxel=c["layer"],
        active=active,
        starts=geometry.layer_offsets[active],
        voxels_per_layer=geometry.voxels_per_layer,
        x_mm=c["x_mm"],
        y_mm=c["y_mm"],
    )


def _is_jax(x: Any) -> bool:
    return isinstance(x, jax.Array)


def _layer_sum(values: Any, idx: _Index, xp: Any) -> Any:
    """Sum ``(N, V)`` values over the voxels of each layer -> ``(N, n_layers)`` (0 for empty layers)."""
    if xp is jnp:
        return jax.ops.segment_sum(values.T, jnp.asarray(idx.layer_of_voxel), num_segments=idx.n_layers).T
    out = np.zeros((values.shape[0], idx.n_layers), dtype=values.dtype)
    if idx.active.size:
        out[:, idx.active] = np.add.reduceat(values, idx.starts, axis=1)
    return out


def _check_showers(showers: Any, geometry: Geometry | None) -> None:
    shape = np.shape(showers)
    if len(shape) != 2:
        raise ValueError(f"showers must have shape (N, n_voxels), got {shape}")
    if geometry is not None and shape[1] != geometry.n_voxels:
        raise ValueError(
            f"showers have {shape[1]} voxels but geometry {geometry.name!r} has {geometry.n_voxels} (argument showers)"
        )


def _apply(fn: Callable[..., tuple], showers: Any, geometry: Geometry | None, *extra: Any) -> tuple:
    """Run ``fn(s, idx, xp, *extra_rows)``: JAX input at once, numpy input in float64 row blocks."""
    _check_showers(showers, geometry)
    idx = _index(geometry) if geometry is not None else None
    if _is_jax(showers) or any(_is_jax(e) for e in extra):
        return fn(jnp.asarray(showers), idx, jnp, *(jnp.asarray(e) for e in extra))
    s = np.asarray(showers)
    extra = tuple(np.asarray(e, dtype=np.float64) for e in extra)
    n, v = s.shape
    rows = max(1, _BLOCK_ELEMENTS // max(v, 1))
    if n <= rows:
        return fn(s.astype(np.float64), idx, np, *extra)
    parts = [
        fn(s[i : i + rows].astype(np.float64), idx, np, *(e[i : i + rows] for e in extra)) for i in range(0, n, rows)
    ]
    return tuple(np.concatenate(p, axis=0) for p in zip(*parts, strict=True))


def _safe_div(num: Any, den: Any, xp: Any) -> Any:
    """``num / den`` where ``den > 0``, else 0 (no warnings, no NaN gradients)."""
    ok = den > 0
    return xp.where(ok, num / xp.where(ok, den, 1.0), 0.0)


def _moments(s: Any, idx: _Index, xp: Any) -> tuple:
    """Per layer: clipped weight sum and first/second moments of x and y (clipped weights)."""
    w = xp.maximum(s, 0.0)
    x = xp.asarray(idx.x_mm, dtype=s.dtype)
    y = xp.asarray(idx.y_mm, dtype=s.dtype)
    wx, wy = w * x, w * y
    W = _layer_sum(w, idx, xp)
    mx = _safe_div(_layer_sum(wx, idx, xp), W, xp)
    my = _safe_div(_layer_sum(wy, idx, xp), W, xp)
    mxx = _safe_div(_layer_sum(wx * x, idx, xp), W, xp)
    myy = _safe_div(_layer_sum(wy * y, idx, xp), W, xp)
    return W, mx, my, mxx, myy


def _width(m2: Any, m: Any, W: Any, xp: Any) -> Any:
    var = m2 - m * m
    ok = (W > 0) & (var > 0)
    return xp.where(ok, xp.sqrt(xp.where(ok, var, 1.0)), 0.0)


def _sparsity(s: Any, idx: _Index, xp: Any, threshold: float) -> Any:
    below = _layer_sum((s <= threshold).astype(s.dtype), idx, xp)
    return _safe_div(below, xp.asarray(idx.voxels_per_layer, dtype=s.dtype), xp)


# ------------------------------------------------------------------------------------ public API


def layer_energies(showers: Any, geometry: Geometry) -> Any:
    """``(N, n_layers)`` energy summed over each layer's voxels (signed; 0 for layers without voxels)."""
    return _apply(lambda s, idx, xp: (_layer_sum(s, idx, xp),), showers, geometry)[0]


def total_energy(showers: Any) -> Any:
    """``(N,)`` visible energy: sum over all voxels (signed)."""
    return _apply(lambda s, idx, xp: (s.sum(axis=1),), showers, None)[0]


def _as_energy_column(energies: Any, n: int) -> Any:
    shape = np.shape(energies)
    if shape not in ((n,), (n, 1)):
        raise ValueError(f"energies must have shape (N,) or (N, 1) with N = {n}, got {shape}")
    return energies.reshape(n) if len(shape) == 2 else energies


def energy_ratio(showers: Any, energies: Any) -> Any:
    """``(N,)`` E_vis / E_inc, with ``energies`` the incident energies ``(N,)`` or ``(N, 1)`` (same unit)."""
    e = _as_energy_column(energies, np.shape(showers)[0])
    return _apply(lambda s, idx, xp, ei: (s.sum(axis=1) / ei,), showers, None, e)[0]


def centroids(showers: Any, geometry: Geometry) -> tuple[Any, Any]:
    """Energy-weighted mean voxel-centre ``(x, y)`` in mm per layer, each ``(N, n_layers)``.

    Weights are voxel energies clipped at 0; a layer with no positive energy gets 0."""
    _, mx, my, _, _ = _apply(_moments, showers, geometry)
    return mx, my


def widths(showers: Any, geometry: Geometry) -> tuple[Any, Any]:
    """Energy-weighted spread ``sqrt(<x^2> - <x>^2)`` (clipped at 0) of voxel centres in mm per layer,
    ``(x, y)`` each ``(N, n_layers)``; weights clipped at 0, 0 for a layer with no positive energy."""

    def fn(s: Any, idx: _Index, xp: Any) -> tuple:
        W, mx, my, mxx, myy = _moments(s, idx, xp)
        return _width(mxx, mx, W, xp), _width(myy, my, W, xp)

    return _apply(fn, showers, geometry)


def sparsity(showers: Any, geometry: Geometry, threshold: float = 0.0) -> Any:
    """``(N, n_layers)`` fraction of each layer's voxels with energy <= ``threshold`` (0 for layers
    without voxels)."""
    return _apply(lambda s, idx, xp: (_sparsity(s, idx, xp, threshold),), showers, geometry)[0]


def _depth_tables(geometry: Geometry, x0_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Layer centres ``t`` and thicknesses ``dt`` in radiation lengths (an unbounded last layer is
    treated as 2 mm thick, consistent with :attr:`Geometry.layer_centers_mm`)."""
    if not (np.isfinite(x0_mm) and x0_mm > 0):
        raise ValueError(f"x0_mm must be a positive radiation length in mm, got {x0_mm!r}")
    centers = geometry.layer_centers_mm
    thickness = 2.0 * (centers - geometry.layer_edges_mm[:-1])
    return centers / x0_mm, thickness / x0_mm


def _depth_from_layers(E: Any, t: np.ndarray, dt: np.ndarray, xp: Any) -> Any:
    w = xp.maximum(E, 0.0)
    t = xp.asarray(t, dtype=E.dtype)
    dt = xp.asarray(dt, dtype=E.dtype)
    sw = w.sum(axis=1)
    ok = sw > 0
    sw_safe = xp.where(ok, sw, 1.0)
    m = (w * t).sum(axis=1) / sw_safe
    v = (w * (t - m[:, None]) ** 2).sum(axis=1) / sw_safe - (w * dt**2).sum(axis=1) / (12.0 * sw_safe)
    v = xp.maximum(v, 0.0)
    good = ok & (m > 0)
    return xp.where(good, m - v / xp.where(good, m, 1.0), xp.nan)


def depth_of_maximum(showers: Any, geometry: Geometry, x0_mm: float) -> Any:
    """``(N,)`` depth of the shower maximum in radiation lengths from the calorimeter front.

    Gamma-profile moment estimator on the layer energies ``w_l`` (clipped at 0) at layer centres
    ``t_l = layer_centers_mm / x0_mm``: ``m = sum w t / sum w``, ``v = sum w (t - m)^2 / sum w -
    sum w dt^2 / (12 sum w)`` (Sheppard correction, ``dt`` = layer thickness in X0; ``v`` clipped at 0)
    and ``T = m - v / m``, which is ``(alpha - 1) / beta`` for a Gamma(alpha, beta) profile.
    NaN for showers without positive layer energy. ``x0_mm``: radiation length in mm."""
    t, dt = _depth_tables(geometry, x0_mm)
    return _apply(lambda s, idx, xp: (_depth_from_layers(_layer_sum(s, idx, xp), t, dt, xp),), showers, geometry)[0]


def high_level_features(
    showers: Any,
    energies: Any,
    geometry: Geometry,
    x0_mm: float | None = None,
    *,
    sparsity_threshold: float = 0.0,
) -> dict[str, Any]:
    """All features at once (one pass over the showers).

    Args:
        showers: ``(N, V)`` voxel energies; energies: ``(N,)`` or ``(N, 1)`` incident energies (same unit).
        x0_mm: radiation length in mm; adds ``depth_of_max`` (X0) when given.

    Returns:
        ``{"E_inc", "E_total", "E_ratio"}`` ``(N,)``; ``{"E_layer", "x_centroid", "y_centroid", "x_width",
        "y_width", "sparsity"}`` ``(N, n_layers)`` (mm for centroids/widths); ``"depth_of_max"`` ``(N,)``.
    """
    e = _as_energy_column(energies, np.shape(showers)[0])
    tables = _depth_tables(geometry, x0_mm) if x0_mm is not None else None

    def fn(s: Any, idx: _Index, xp: Any, ei: Any) -> tuple:
        E = _layer_sum(s, idx, xp)
        W, mx, my, mxx, myy = _moments(s, idx, xp)
        tot = s.sum(axis=1)
        out = (ei, tot, tot / ei, E, mx, my, _width(mxx, mx, W, xp), _width(myy, my, W, xp))
        out += (_sparsity(s, idx, xp, sparsity_threshold),)
        if tables is not None:
            out += (_depth_from_layers(E, *tables, xp),)
        return out

    keys = ["E_inc", "E_total", "E_ratio", *PER_LAYER_FEATURES]
    if tables is not None:
        keys.append("depth_of_max")
    return dict(zip(keys, _apply(fn, showers, geometry, e), strict=True))


def flatten_features(
    features: dict[str, Any], geometry: Geometry, keys: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Stack features into a float64 matrix ``(N, n_features)`` with column names.

    1-D features give one column named by their key; per-layer ``(N, n_layers)`` features give one column
    per layer that has voxels, named ``"key[layer]"`` (layers without voxels are dropped). ``keys``
    selects and orders the features (default: all, in dict order)."""
    keys = list(features) if keys is None else list(keys)
    active = geometry.active_layers
    cols, names = [], []
    for k in keys:
        if k not in features:
            raise KeyError(f"feature {k!r} not in features (have {', '.join(features)})")
        a = np.asarray(features[k], dtype=np.float64)
        if a.ndim == 1:
            cols.append(a[:, None])
            names.append(k)
        elif a.ndim == 2 and a.shape[1] == geometry.n_layers:
            cols.append(a[:, active])
            names.extend(f"{k}[{int(i)}]" for i in active)
        else:
            raise ValueError(f"feature {k!r} has shape {a.shape}; expected (N,) or (N, {geometry.n_layers})")
    n = {c.shape[0] for c in cols}
    if len(n) > 1:
        raise ValueError(f"features have different numbers of rows: {sorted(n)}")
    matrix = np.concatenate(cols, axis=1) if cols else np.zeros((0, 0))
    return matrix, names
