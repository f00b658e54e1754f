"""A bijection between voxel energies and R^V, with its log-Jacobian: exact densities for flows.

:class:`~surrinf.data.preprocessing.LayerFractionTransform` maps V voxels to n_layers + V numbers (the
fractions of each layer sum to 1), so a density on its output is not a density on the showers.
:class:`ShowerBijection` keeps the dimension: per active layer l with voxels e_1..e_n (GeV) and
incident energy E,

    e'_i = e_i + delta                        (delta > 0: a floor that keeps logarithms finite)
    u_l  = ln(sum_i e'_i / E)                 (layer energy over incident energy)
    y_i  = ln e'_i - ln e'_n,  i < n          (additive log-ratio of the layer's voxel fractions)

so z = (u_1..u_L, y...) has exactly V components. The map e' -> (ln S, y) has Jacobian determinant
prod_i 1/e'_i (the log-ratio part has unit determinant against ln S), hence

    log p_showers(e | E) = log p_z(z | E) - sum_i ln(e_i + delta).

The inverse returns e = e' - delta; a generative model's samples can come out slightly below zero there,
and are clipped at 0 by :meth:`ShowerBijection.inverse` (``clip=True``). ``delta`` is relative to the
incident energy (default 1e-7 E: 100 eV at 1 GeV), far below a visible voxel energy.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .geometry import Geometry


class ShowerBijection(eqx.Module):
    """Voxel energies (N, V) [GeV] with incident energies (N,) [GeV] <-> z (N, V); see the module docstring."""

    n_layers: int = eqx.field(static=True)
    n_voxels: int = eqx.field(static=True)
    relative_delta: float = eqx.field(static=True)
    # Index tables as tuples: hashable static data (no arrays in static fields).
    layer_of_voxel: tuple[int, ...] = eqx.field(static=True)
    last_of_layer: tuple[int, ...] = eqx.field(static=True)
    nonlast: tuple[int, ...] = eqx.field(static=True)
    geometry_json: str = eqx.field(static=True)

    def __init__(self, geometry: Geometry, relative_delta: float = 1e-7):
        if not relative_delta > 0:
            raise ValueError(f"relative_delta must be > 0 (a fraction of E), got {relative_delta}")
        active = geometry.active_layers
        offsets = geometry.layer_offsets
        # Re-index the active layers 0..L_a-1.
        layer_of_voxel = np.repeat(np.arange(active.size), geometry.voxels_per_layer[active])
        last = offsets[active + 1] - 1
        nonlast = np.setdiff1d(np.arange(geometry.n_voxels), last)
        self.n_layers = int(active.size)
        self.n_voxels = int(geometry.n_voxels)
        self.relative_delta = float(relative_delta)
        self.layer_of_voxel = tuple(int(i) for i in layer_of_voxel)
        self.last_of_layer = tuple(int(i) for i in last)
        self.nonlast = tuple(int(i) for i in nonlast)
        self.geometry_json = geometry.to_json()

    @property
    def geometry(self) -> Geometry:
        return Geometry.from_json(self.geometry_json)

    def _segment_logsumexp(self, v: jax.Array) -> jax.Array:
        seg = jnp.asarray(self.layer_of_voxel)
        m = jax.ops.segment_max(v, seg, num_segments=self.n_layers)
        return m + jnp.log(jax.ops.segment_sum(jnp.exp(v - m[seg]), seg, num_segments=self.n_layers))

    def _forward_one(self, e: jax.Array, energy: jax.Array) -> tuple[jax.Array, jax.Array]:
        log_e = jnp.log(e + self.relative_delta * energy)
        u = self._segment_logsumexp(log_e) - jnp.log(energy)
        layer_last = jnp.asarray(self.last_of_layer)[jnp.asarray(self.layer_of_voxel)[jnp.asarray(self.nonlast)]]
        y = log_e[jnp.asarray(self.nonlast)] - log_e[layer_last]
        return jnp.concatenate([u, y]), -jnp.sum(log_e)

    def forward(self, showers: Any, energies: Any) -> tuple[jax.Array, jax.Array]:
        """showers (N, V) >= 0 [GeV], energies (N,) > 0 [GeV] -> z (N, V), log|dz/de| (N,)."""
        s = jnp.asarray(showers, dtype=jnp.float32)
        e = jnp.asarray(energies, dtype=jnp.float32).reshape(-1)
        if s.ndim != 2 or s.shape[1] != self.n_voxels or s.shape[0] != e.shape[0]:
            raise ValueError(f"showers must be (N, {self.n_voxels}) with one incident energy each; got {s.shape}")
        if not isinstance(s, jax.core.Tracer) and bool(jnp.any(s < 0)):
            raise ValueError("showers must be non-negative (noise-free or zero-suppressed voxel energies, GeV)")
        return jax.vmap(self._forward_one)(s, e)

    def _inverse_one(self, z: jax.Array, energy: jax.Array) -> jax.Array:
        u, y = z[: self.n_layers], z[self.n_layers :]
        seg = jnp.asarray(self.layer_of_voxel)
        nonlast = jnp.asarray(self.nonlast)
        # log(1 + sum exp(y)) per layer: the last voxel carries log-ratio 0.
        v_rel = jnp.zeros(self.n_voxels, dtype=z.dtype).at[nonlast].set(y)
        lse = self._segment_logsumexp(v_rel)
        log_e = v_rel + (u + jnp.log(energy) - lse)[seg]
        return jnp.exp(log_e) - self.relative_delta * energy

    def inverse(self, z: Any, energies: Any, clip: bool = True) -> jax.Array:
        """z (N, V), energies (N,) [GeV] -> showers (N, V) [GeV]; ``clip`` sets values below 0 to 0."""
        zz = jnp.asarray(z, dtype=jnp.float32)
        e = jnp.asarray(energies, dtype=jnp.float32).reshape(-1)
        if zz.ndim != 2 or zz.shape[1] != self.n_voxels or zz.shape[0] != e.shape[0]:
            raise ValueError(f"z must be (N, {self.n_voxels}) with one incident energy each; got {zz.shape}")
        out = jax.vmap(self._inverse_one)(zz, e)
        return jnp.maximum(out, 0.0) if clip else out

    def to_dict(self) -> dict:
        return {"type": "ShowerBijection", "geometry": self.geometry.to_dict(), "relative_delta": self.relative_delta}

    @classmethod
    def from_dict(cls, d: dict) -> ShowerBijection:
        if d.get("type") != "ShowerBijection":
            raise ValueError(f"not a ShowerBijection description: type {d.get('type')!r}")
        return cls(Geometry.from_dict(d["geometry"]), float(d["relative_delta"]))
