"""Invertible preprocessing transforms for generative shower models (equinox modules, float32).

:class:`LayerFractionTransform` maps showers to an unconstrained space: per active layer the ratio of
layer energy to incident energy (``log``) and per voxel its fraction of the layer energy (``logit``).
:class:`Standardize` rescales features to zero mean and unit variance. Both are ``jit``/``vmap``
friendly and serialise to JSON-safe dicts (:meth:`to_dict`, :func:`transform_from_dict`).
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from surrinf.data.geometry import Geometry

__all__ = ["LayerFractionTransform", "Standardize", "transform_from_dict"]


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_non_negative(name: str, x: Any, strict: bool = False) -> None:
    """Raise ValueError when a concrete ``x`` has negative (or, if ``strict``, non-positive) or NaN values."""
    if not _is_concrete(x):
        return
    a = np.asarray(x)
    bad = ~(a > 0) if strict else ~(a >= 0)
    if bad.any():
        i = np.unravel_index(int(np.argmax(bad)), a.shape)
        need = "positive" if strict else "non-negative"
        raise ValueError(
            f"argument {name} must be {need} (and not NaN); found {a[i]!r} at index {tuple(int(j) for j in i)}. "
            "LayerFractionTransform is for noise-free or zero-suppressed showers"
        )


class LayerFractionTransform(eqx.Module):
    """Showers ``(N, V)`` + incident energies ``(N,)`` -> ``z`` ``(N, n_active_layers + V)``.

    Forward, per active layer ``l`` (layers with voxels) with energy ``E_l`` and incident energy ``E``:

    * ``z[:, l] = log(E_l / E + eps_layer)`` (exactly ``log(eps_layer)`` for an empty layer);
    * ``z[:, L + v] = logit(eps + (1 - 2 eps) f_v)`` with voxel fraction ``f_v = e_v / E_l``; an empty layer
      gets uniform fractions ``1 / n_l`` so the map stays defined; a zero voxel gives exactly ``logit(eps)``.

    The inverse maps ``z <= log(eps_layer)`` to an empty layer and ``z <= logit(eps)`` to a zero voxel
    (exact zeros are preserved), clips fractions to [0, 1] and renormalises them to sum to 1 in each
    layer (for samples of a generative model; a no-op up to rounding for exact inputs).

    Inputs must be non-negative: apply this to noise-free or zero-suppressed showers. Concrete inputs
    with negative values raise ValueError (inside ``jit`` this cannot be checked). Energies in any
    consistent unit (GeV in surrinf).
    """

    layer_sizes: tuple[int, ...] = eqx.field(static=True)
    eps: float = eqx.field(static=True)
    eps_layer: float = eqx.field(static=True)
    geometry_json: str = eqx.field(static=True)

    def __init__(self, geometry: Geometry, eps: float = 1e-6, eps_layer: float = 1e-8) -> None:
        if not 0 < eps < 0.5:
            raise ValueError(f"eps must be in (0, 0.5), got {eps}")
        if not eps_layer > 0:
            raise ValueError(f"eps_layer must be > 0, got {eps_layer}")
        vpl = geometry.voxels_per_layer
        self.layer_sizes = tuple(int(vpl[i]) for i in geometry.active_layers)
        self.eps = float(eps)
        self.eps_layer = float(eps_layer)
        self.geometry_json = geometry.to_json()

    # ------------------------------------------------------------------ helpers
    @property
    def geometry(self) -> Geometry:
        return Geometry.from_json(self.geometry_json)

    @property
    def n_layers(self) -> int:
        """Number of active layers (layers with voxels)."""
        return len(self.layer_sizes)

    @property
    def n_voxels(self) -> int:
        return int(sum(self.layer_sizes))

    @property
    def n_features(self) -> int:
        """Width of ``z``: n_active_layers + n_voxels."""
        return self.n_layers + self.n_voxels

    def _segments(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_layers), self.layer_sizes)

    def _layer_sum(self, x: jax.Array) -> jax.Array:
        """``(N, V)`` -> ``(N, n_active_layers)`` sums over each layer's voxels."""
        return jax.ops.segment_sum(x.T, jnp.asarray(self._segments()), num_segments=self.n_layers).T

    def _expand(self, x: jax.Array) -> jax.Array:
        """``(N, n_active_layers)`` -> ``(N, V)`` by repeating each layer's value over its voxels."""
        return x[:, jnp.asarray(self._segments())]

    def _consts(self) -> tuple[np.float32, np.float32]:
        log_eps_layer = np.log(np.float32(self.eps_layer), dtype=np.float32)
        e = np.float32(self.eps)
        logit_eps = np.log(e, dtype=np.float32) - np.log1p(-e, dtype=np.float32)
        return log_eps_layer, np.float32(logit_eps)

    # ------------------------------------------------------------------ maps
    def forward(self, showers: jax.Array, energies: jax.Array) -> jax.Array:
        """Showers ``(N, V)`` and incident energies ``(N,)`` or ``(N, 1)`` -> ``z`` ``(N, n_active_layers + V)``.

        A single shower ``(V,)`` with a scalar energy gives ``(n_active_layers + V,)`` (so ``jax.vmap`` works)."""
        if np.ndim(showers) == 1 and np.ndim(energies) <= 1 and np.size(energies) == 1:
            return self.forward(jnp.reshape(showers, (1, -1)), jnp.reshape(energies, (1,)))[0]
        if np.ndim(showers) != 2 or np.shape(showers)[1] != self.n_voxels:
            raise ValueError(f"argument showers must have shape (N, {self.n_voxels}), got {np.shape(showers)}")
        n = np.shape(showers)[0]
        if np.shape(energies) not in ((n,), (n, 1)):
            raise ValueError(f"argument energies must have shape ({n},) or ({n}, 1), got {np.shape(energies)}")
        _check_non_negative("showers", showers)
        _check_non_negative("energies", energies, strict=True)
        return self._forward(jnp.asarray(showers, dtype=jnp.float32), jnp.asarray(energies, dtype=jnp.float32))

    @eqx.filter_jit
    def _forward(self, s: jax.Array, e: jax.Array) -> jax.Array:
        e = e.reshape(-1, 1)
        log_eps_layer, logit_eps = self._consts()
        E_l = self._layer_sum(s)
        full = E_l > 0
        u = jnp.where(full, E_l, 0.0) / e
        y = jnp.where(full, jnp.log(jnp.where(full, u, 1.0) + self.eps_layer), log_eps_layer)
        sizes = jnp.asarray(self.layer_sizes, dtype=jnp.float32)
        E_v = self._expand(E_l)
        full_v = E_v > 0
        f = jnp.where(full_v, s / jnp.where(full_v, E_v, 1.0), self._expand(jnp.broadcast_to(1.0 / sizes, E_l.shape)))
        p = self.eps + (1.0 - 2.0 * self.eps) * f
        x = jnp.where(f > 0, jnp.log(p) - jnp.log1p(-p), logit_eps)
        return jnp.concatenate([y, x], axis=1)

    def inverse(self, z: jax.Array, energies: jax.Array) -> jax.Array:
        """``z`` ``(N, n_active_layers + V)`` and incident energies ``(N,)`` or ``(N, 1)`` -> showers ``(N, V)``
        (or a single ``z`` ``(n_active_layers + V,)`` with a scalar energy -> ``(V,)``)."""
        if np.ndim(z) == 1 and np.ndim(energies) <= 1 and np.size(energies) == 1:
            return self.inverse(jnp.reshape(z, (1, -1)), jnp.reshape(energies, (1,)))[0]
        if np.ndim(z) != 2 or np.shape(z)[1] != self.n_features:
            raise ValueError(f"argument z must have shape (N, {self.n_features}), got {np.shape(z)}")
        n = np.shape(z)[0]
        if np.shape(energies) not in ((n,), (n, 1)):
            raise ValueError(f"argument energies must have shape ({n},) or ({n}, 1), got {np.shape(energies)}")
        return self._inverse(jnp.asarray(z, dtype=jnp.float32), jnp.asarray(energies, dtype=jnp.float32))

    @eqx.filter_jit
    def _inverse(self, z: jax.Array, e: jax.Array) -> jax.Array:
        e = e.reshape(-1, 1)
        log_eps_layer, logit_eps = self._consts()
        y, x = z[:, : self.n_layers], z[:, self.n_layers :]
        u = jnp.where(y <= log_eps_layer, 0.0, jnp.maximum(jnp.exp(y) - self.eps_layer, 0.0))
        E_l = u * e
        p = jax.nn.sigmoid(x)
        f = jnp.where(x <= logit_eps, 0.0, jnp.clip((p - self.eps) / (1.0 - 2.0 * self.eps), 0.0, 1.0))
        norm = self._expand(self._layer_sum(f))
        sizes = jnp.asarray(self.layer_sizes, dtype=jnp.float32)
        uniform = self._expand(jnp.broadcast_to(1.0 / sizes, E_l.shape))
        f = jnp.where(norm > 0, f / jnp.where(norm > 0, norm, 1.0), uniform)
        return f * self._expand(E_l)

    __call__ = forward

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description."""
        return {
            "type": "LayerFractionTransform",
            "geometry": self.geometry.to_dict(),
            "eps": self.eps,
            "eps_layer": self.eps_layer,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerFractionTransform:
        _check_type(d, "LayerFractionTransform")
        return cls(Geometry.from_dict(d["geometry"]), eps=float(d["eps"]), eps_layer=float(d["eps_layer"]))


class Standardize(eqx.Module):
    """Per-feature affine map ``(z - mean) / std`` on ``(..., F)`` arrays (float32).

    Fit with :meth:`fit`; features whose standard deviation is <= ``min_std`` get ``std = 1`` (they are
    only centred), so the map stays invertible."""

    mean: jax.Array
    std: jax.Array

    def __init__(self, mean: Any, std: Any) -> None:
        mean = jnp.asarray(mean, dtype=jnp.float32)
        std = jnp.asarray(std, dtype=jnp.float32)
        if mean.ndim != 1 or std.shape != mean.shape:
            raise ValueError(f"mean and std must be 1-D of equal length, got shapes {mean.shape} and {std.shape}")
        if _is_concrete(std) and not bool(jnp.all(std > 0)):
            raise ValueError("argument std must be positive")
        self.mean = mean
        self.std = std

    @classmethod
    def fit(cls, z: Any, min_std: float = 1e-6) -> Standardize:
        """Fit mean and std of ``z`` ``(N, F)`` (computed in float64)."""
        a = np.asarray(z, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] < 1:
            raise ValueError(f"argument z must have shape (N, F) with N >= 1, got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError("argument z has NaN/inf values")
        std = a.std(axis=0)
        return cls(a.mean(axis=0), np.where(std > min_std, std, 1.0))

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    def forward(self, z: jax.Array) -> jax.Array:
        return (jnp.asarray(z, dtype=jnp.float32) - self.mean) / self.std

    def inverse(self, y: jax.Array) -> jax.Array:
        return jnp.asarray(y, dtype=jnp.float32) * self.std + self.mean

    __call__ = forward

    def log_abs_det_jacobian(self, z: jax.Array | None = None) -> jax.Array:
        """``log|det d forward / dz|`` = ``-sum(log std)``: a scalar, or broadcast to ``z.shape[:-1]``."""
        ladj = -jnp.sum(jnp.log(self.std))
        return ladj if z is None else jnp.broadcast_to(ladj, jnp.shape(z)[:-1])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description (float32 values round-trip exactly)."""
        return {
            "type": "Standardize",
            "mean": [float(v) for v in np.asarray(self.mean)],
            "std": [float(v) for v in np.asarray(self.std)],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Standardize:
        _check_type(d, "Standardize")
        return cls(np.asarray(d["mean"], dtype=np.float32), np.asarray(d["std"], dtype=np.float32))


def _check_type(d: dict[str, Any], name: str) -> None:
    if not isinstance(d, dict) or d.get("type") != name:
        got = d.get("type") if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"expected a {name} description (dict with type={name!r}), got {got!r}")


_TRANSFORMS = {"LayerFractionTransform": LayerFractionTransform, "Standardize": Standardize}


def transform_from_dict(d: dict[str, Any]) -> LayerFractionTransform | Standardize:
    """Rebuild any transform of this module from its :meth:`to_dict` output."""
    kind = d.get("type") if isinstance(d, dict) else None
    if kind not in _TRANSFORMS:
        raise ValueError(f"unknown transform type {kind!r}; expected one of {', '.join(_TRANSFORMS)}")
    return _TRANSFORMS[kind].from_dict(d)
