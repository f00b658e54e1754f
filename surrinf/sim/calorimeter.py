"""Reference electromagnetic calorimeter simulator following the GFLASH parameterisation.

Reference: G. Grindhammer and S. Peters, hep-ex/0001020 (see :mod:`surrinf.sim.gflash`).

One shower of incident energy E [GeV] is simulated as follows.

1. Correlated per-shower fluctuation of the depth of maximum T and shape alpha (:func:`gflash.draw_t_alpha`).
2. The energy in each layer (and behind the last one) is E times the Gamma-profile integral over the
   layer, fluctuated by sampling: a Gamma variate of mean DE and variance a^2 DE (a = sampling term
   [GeV^1/2]). Sums of such Gamma variates are again Gamma, so the total has sigma/E = a/sqrt(E) exactly
   and the layering does not change the resolution. The visible energy is s * f_samp times this.
3. Energy carriers (spots), N_spots(E) on average, are distributed over the layers by the spot Gamma
   profile; each spot in a layer draws a depth inside the layer and a radius from the two-component
   radial profile at that depth, and a uniform azimuth. The number of spots landing in each cell of the
   layer (and outside the outermost radial edge) is Poisson with mean n_layer * P(cell): the Poissonised
   form of placing the spots one by one. Each spot carries an equal share of the layer's deposited energy,
   so the voxel energies of a layer plus its lateral leakage add up exactly to the layer's deposit. Cell
   probabilities are analytic for a beam on the axis (the radial CDF is r^2/(r^2+R^2) per component,
   averaged over depth with 4-point Gauss-Legendre weights of the spot profile). For a displaced beam the
   cell masses are integrated exactly along rays from the shower axis and averaged over 32 directions.
4. Gaussian noise of width sigma_n [GeV] is added to every voxel.

Each shower's random numbers come from ``jax.random.fold_in(key, index)``, so a shower depends only on
the key, its index and its inputs: results do not depend on chunking or batch composition.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..data.geometry import Geometry, get_geometry
from . import gflash
from .materials import Material, get_material
from .poisson import poisson

#: Valid incident-energy range [GeV] (GFLASH is fitted for roughly 1 GeV - 1 TeV; the range below is
#: where its formulas stay well defined).
ENERGY_RANGE_GEV = (0.1, 10_000.0)

_N_DEPTH_NODES = 4
_N_AZIMUTH = 32
#: Smallest compiled batch: shorter runs are padded to it (simulating a few dozen showers takes milliseconds,
#: a compilation seconds).
_MIN_BATCH = 64


class DetectorParams(NamedTuple):
    """Detector response parameters theta.

    energy_scale: s, multiplies the visible energy [dimensionless].
    sampling_term: a [GeV^1/2], the stochastic term of sigma/E = a / sqrt(E); ``None`` = the material's.
    noise_sigma_gev: sigma_n [GeV], Gaussian noise per cell.
    """

    energy_scale: float = 1.0
    sampling_term: float | None = None
    noise_sigma_gev: float = 0.0


class ShowerBatch(NamedTuple):
    """Simulated showers and their truth record (all energies in GeV, visible scale).

    showers: (N, n_voxels) voxel energies including noise.
    deposited: (N,) visible energy s * f_samp * (sampled deposit), before noise.
    leaked_longitudinal: (N,) visible energy behind the last layer.
    leaked_lateral: (N,) visible energy outside the outermost radial edges (and in layers without voxels).
    t_max: (N,) per-shower depth of maximum T [X0]; alpha: (N,) per-shower Gamma shape.
    """

    showers: jnp.ndarray
    deposited: jnp.ndarray
    leaked_longitudinal: jnp.ndarray
    leaked_lateral: jnp.ndarray
    t_max: jnp.ndarray
    alpha: jnp.ndarray


@dataclass(frozen=True, eq=False)
class Calorimeter:
    """A voxelised sampling or homogeneous calorimeter: the embedded reference response model.

    ``Calorimeter(geometry, material, params)``; see :func:`calorimeter` for the named presets. It
    implements the response-model protocol: ``sample(key, conditions) -> showers`` in GeV.
    """

    geometry: Geometry
    material: Material
    params: DetectorParams = field(default_factory=DetectorParams)

    # ------------------------------------------------------------------ static tables (numpy)
    @cached_property
    def _tables(self) -> dict[str, np.ndarray]:
        g, m = self.geometry, self.material
        n_layers = g.n_layers
        t_edges = g.layer_edges_mm / m.X0_mm
        # Slices: the layers plus the region behind the last layer (empty when the last edge is inf).
        t_slices = np.concatenate([t_edges, [np.inf]])
        # Gauss-Legendre depth nodes per layer (an unbounded last layer is sampled over 10 X0).
        xg, wg = np.polynomial.legendre.leggauss(_N_DEPTH_NODES)
        front = t_edges[:-1]
        back = np.where(np.isinf(t_edges[1:]), front + 10.0, t_edges[1:])
        half = 0.5 * (back - front)
        t_nodes = (0.5 * (back + front))[:, None] + half[:, None] * xg[None, :]
        w_nodes = half[:, None] * wg[None, :]
        n_r = g.n_radial
        r_max = max(int(n_r.max()), 1)
        a_max = int(max(g.n_alpha))
        r_edges = np.zeros((n_layers, r_max + 1))
        for i, r in enumerate(g.r_edges_mm):
            r_edges[i, : r.size] = r
            r_edges[i, r.size :] = r[-1]
        n_alpha = np.array(g.n_alpha, dtype=np.float64)
        alpha_mask = (np.arange(a_max)[None, :] < n_alpha[:, None]).astype(np.float64)
        coords = g.voxel_coordinates()
        gather = (coords["layer"] * a_max + coords["alpha_bin"]) * (r_max + 1) + coords["r_bin"]
        return {
            "t_slices": t_slices,
            "t_nodes": t_nodes,
            "w_nodes": w_nodes,
            "r_edges_rm": r_edges / m.RM_mm,
            "r_edges_mm": r_edges,
            "n_radial": n_r.astype(np.int32),
            "n_alpha": n_alpha,
            "alpha_mask": alpha_mask,
            "gather": gather.astype(np.int32),
            "shape": np.array([n_layers, a_max, r_max + 1]),
        }

    @property
    def x0_mm(self) -> float:
        return self.material.X0_mm

    @property
    def rm_mm(self) -> float:
        return self.material.RM_mm

    def default_theta(self) -> np.ndarray:
        """theta = (s, a [GeV^1/2], sigma_n [GeV]) used when conditions carry none, shape (3,)."""
        a = self.params.sampling_term
        a = self.material.nominal_sampling_term if a is None else a
        return np.array([self.params.energy_scale, a, self.params.noise_sigma_gev], dtype=np.float32)

    # ------------------------------------------------------------------ per-shower pieces (jax)
    def _depth_weights(self, t_max, alpha) -> jnp.ndarray:
        """(L, Q) weights of the depth nodes of each layer by the spot profile, normalised per layer."""
        tb = self._tables
        t_spot, a_spot = gflash.spot_t_alpha(t_max, alpha, self.material)
        w = jnp.asarray(tb["w_nodes"]) * gflash.gamma_pdf(jnp.asarray(tb["t_nodes"]), t_spot, a_spot)
        total = w.sum(axis=1, keepdims=True)
        return jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), 1.0 / _N_DEPTH_NODES)

    def _cell_probabilities_axial(self, energy, t_max, alpha) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Beam on the axis: (L, A, R+1) probabilities of a spot of each layer to land in each cell, the
        last radial index holding the lateral leakage; analytic radial integrals."""
        tb = self._tables
        w = self._depth_weights(t_max, alpha)
        tau = jnp.asarray(tb["t_nodes"]) / t_max
        rp = gflash.radial_params(tau[..., None], energy, self.material)  # (L, Q, 1)
        cdf = gflash.radial_cdf(jnp.asarray(tb["r_edges_rm"])[:, None, :], rp)  # (L, Q, R+1)
        p_r = jnp.einsum("lq,lqr->lr", w, jnp.diff(cdf, axis=-1))
        leak = 1.0 - jnp.einsum("lq,lq->l", w, cdf[..., -1])
        cells = p_r[:, None, :] * (jnp.asarray(tb["alpha_mask"]) / jnp.asarray(tb["n_alpha"])[:, None])[..., None]
        leak_cell = jnp.zeros((*cells.shape[:2], 1)).at[:, 0, 0].set(leak)
        return jnp.concatenate([cells, leak_cell], axis=-1)

    def _cell_probabilities_offset(self, energy, t_max, alpha, offset_mm) -> jnp.ndarray:
        """Displaced beam: the same (L, A, R+1) probabilities, integrated along rays from the shower axis.

        Along a ray from the shower axis in direction psi, every cell (annulus x angular wedge around the
        detector axis) is a union of radial intervals [r_a, r_b] whose ends are analytic (ray-circle and
        ray-line intersections), and the radial CDF gives the mass of each interval exactly. Only the
        average over psi is numerical (midpoint rule with _N_AZIMUTH directions, spectrally accurate for
        the smooth periodic integrand); with zero offset the result equals the axial one exactly.
        """
        tb = self._tables
        w = self._depth_weights(t_max, alpha)  # (L, Q)
        tau = jnp.asarray(tb["t_nodes"]) / t_max
        rp = gflash.radial_params(tau, energy, self.material)  # (L, Q)
        rp = gflash.RadialParams(
            *(x[:, :, None, None, None] * f for x, f in zip(rp, (self.rm_mm, self.rm_mm, 1.0), strict=True))
        )
        psi = 2.0 * jnp.pi * (jnp.arange(_N_AZIMUTH) + 0.5) / _N_AZIMUTH
        ux, uy = jnp.cos(psi), jnp.sin(psi)
        dx, dy = offset_mm[0], offset_mm[1]
        du = dx * ux + dy * uy  # (P,)
        # Ray-circle intersections for every radial edge: intervals [lo, hi] of the ray inside each disk.
        edges = jnp.asarray(tb["r_edges_mm"])  # (L, R+1)
        disc = jnp.square(du)[None, :, None] - (dx * dx + dy * dy) + jnp.square(edges)[:, None, :]
        root = jnp.sqrt(jnp.maximum(disc, 0.0))
        lo = jnp.maximum(-du[None, :, None] - root, 0.0)  # (L, P, R+1)
        hi = jnp.maximum(-du[None, :, None] + root, 0.0)
        # Angular wedges [theta1, theta2] around the detector axis: half-line conditions along the ray.
        n_alpha = jnp.asarray(tb["n_alpha"])[:, None]  # (L, 1)
        a_idx = jnp.arange(tb["alpha_mask"].shape[1])[None, :]
        theta1 = -jnp.pi + a_idx * 2.0 * jnp.pi / n_alpha  # (L, A)
        theta2 = theta1 + 2.0 * jnp.pi / n_alpha

        def half_line(theta, sign):
            # sign * cross(e_theta, d + r u) >= 0  ->  r >= bound (c_u > 0) or r <= bound (c_u < 0)
            c_d = sign * (jnp.cos(theta) * dy - jnp.sin(theta) * dx)[:, None, :]  # (L, 1, A)
            c_u = sign * (
                jnp.cos(theta)[:, None, :] * uy[None, :, None] - jnp.sin(theta)[:, None, :] * ux[None, :, None]
            )
            bound = -c_d / jnp.where(c_u == 0, 1.0, c_u)
            lower = jnp.where(c_u > 0, bound, jnp.where((c_u == 0) & (c_d < 0), jnp.inf, 0.0))
            upper = jnp.where(c_u < 0, bound, jnp.where((c_u == 0) & (c_d < 0), 0.0, jnp.inf))
            return lower, upper

        l1, u1 = half_line(theta1, 1.0)
        l2, u2 = half_line(theta2, -1.0)
        single = (n_alpha == 1)[:, None, :]
        w_lo = jnp.where(single, 0.0, jnp.maximum(jnp.maximum(l1, l2), 0.0))[..., None]  # (L, P, A, 1)
        w_hi = jnp.where(single, jnp.inf, jnp.minimum(u1, u2))[..., None]

        def mass(a, b):
            """Radial-profile mass of the ray interval [a, b] clipped to the wedge: (L, Q, P, A, R)."""
            a = jnp.maximum(a, w_lo)
            b = jnp.minimum(b, w_hi)
            b = jnp.maximum(a, b)
            return gflash.radial_cdf(b[:, None], rp) - gflash.radial_cdf(a[:, None], rp)

        inner_lo, outer_lo = lo[:, :, None, :-1], lo[:, :, None, 1:]
        inner_hi, outer_hi = hi[:, :, None, :-1], hi[:, :, None, 1:]
        ring = mass(outer_lo, inner_lo) + mass(inner_hi, outer_hi)  # (L, Q, P, A, R)
        cells = jnp.einsum("lq,lqpar->lar", w, ring) / _N_AZIMUTH * jnp.asarray(tb["alpha_mask"])[..., None]
        leak = 1.0 - cells.sum(axis=(1, 2))
        leak_cell = jnp.zeros((*cells.shape[:2], 1)).at[:, 0, 0].set(leak)
        return jnp.concatenate([cells, leak_cell], axis=-1)

    def _cell_probabilities(self, energy, t_max, alpha, offset_mm, displaced: bool) -> jnp.ndarray:
        if displaced:
            return self._cell_probabilities_offset(energy, t_max, alpha, offset_mm)
        return self._cell_probabilities_axial(energy, t_max, alpha)

    def _one_shower(self, key, energy, theta, offset_mm, displaced: bool):
        tb = self._tables
        m = self.material
        k_ta, k_dep, k_spot, k_noise = jax.random.split(key, 4)
        s, a, sigma_n = theta[0], theta[1], theta[2]
        params = gflash.longitudinal_params(energy, m)
        u = jax.random.normal(k_ta, (2,))
        t_max, alpha = gflash.draw_t_alpha(params, u[0], u[1])
        # Longitudinal energy per slice (layers + behind), with Gamma sampling fluctuations.
        cdf = gflash.gamma_cdf(jnp.asarray(tb["t_slices"]), t_max, alpha)
        de = jnp.maximum(jnp.diff(cdf), 0.0) * energy  # (L+1,) GeV
        a2 = jnp.square(a)
        shape = de / jnp.where(a2 > 0, a2, 1.0)
        fluct = jax.random.gamma(k_dep, shape) * a2
        dep = jnp.where(a2 > 0, fluct, de)
        visible = s * m.sampling_fraction * dep
        # Spots per layer from the spot profile.
        t_spot, a_spot = gflash.spot_t_alpha(t_max, alpha, m)
        spot_cdf = gflash.gamma_cdf(jnp.asarray(tb["t_slices"][:-1]), t_spot, a_spot)
        n_layer = gflash.n_spots(energy, m) * jnp.maximum(jnp.diff(spot_cdf), 0.0)  # (L,)
        # Rounding can leave -1e-7 in a cell; a Poisson rate must not be negative.
        prob = jnp.maximum(self._cell_probabilities(energy, t_max, alpha, offset_mm, displaced), 0.0)  # (L, A, R+1)
        counts = poisson(k_spot, n_layer[:, None, None] * prob)
        total = counts.sum(axis=(1, 2), keepdims=True)
        frac = jnp.where(total > 0, counts / jnp.where(total > 0, total, 1.0), prob)
        cells = visible[:-1, None, None] * frac
        voxels = cells.reshape(-1)[jnp.asarray(tb["gather"])]
        leaked_lateral = cells[..., -1].sum()
        noise = sigma_n * jax.random.normal(k_noise, voxels.shape)
        return ShowerBatch(voxels + noise, visible.sum(), visible[-1], leaked_lateral, t_max, alpha)

    # ------------------------------------------------------------------ public API
    def auto_chunk_size(self, displaced: bool = False) -> int:
        """Showers per compiled batch, keeping the per-batch working set near 200 MB (the displaced-beam
        integration needs more memory per shower than the axial path)."""
        per_shower = 40 * int(np.prod(self._tables["shape"]))
        if displaced:
            per_shower += int(np.prod(self._tables["shape"])) * _N_DEPTH_NODES * _N_AZIMUTH * 4 * 12
        return int(np.clip(200e6 // per_shower, 16, 8192))

    def _prepare(self, energies_gev, theta, offset_mm):
        e = np.asarray(energies_gev, dtype=np.float64)
        if e.ndim == 2 and e.shape[1] == 1:
            e = e[:, 0]
        if e.ndim != 1:
            raise ValueError(f"energies_gev must have shape (N,) or (N, 1) [GeV], got {e.shape}")
        if not np.all(np.isfinite(e)):
            raise ValueError("energies_gev must be finite (found NaN or inf)")
        lo, hi = ENERGY_RANGE_GEV
        bad = (e < lo) | (e > hi)
        if np.any(bad):
            raise ValueError(
                f"energies_gev must lie in [{lo}, {hi}] GeV (incident energy, GeV); "
                f"got {e[bad][0]!r} at index {int(np.nonzero(bad)[0][0])}"
            )
        n = e.size
        t = self.default_theta() if theta is None else np.asarray(theta, dtype=np.float64)
        if t.shape not in ((3,), (n, 3)):
            raise ValueError(
                f"theta must have shape (3,) or ({n}, 3) = (energy scale, sampling term, noise), got {t.shape}"
            )
        t = np.broadcast_to(t, (n, 3))
        if not np.all(np.isfinite(t)):
            raise ValueError("theta must be finite")
        if np.any(t[:, 0] <= 0):
            raise ValueError("theta[:, 0] (energy scale s) must be > 0")
        if np.any(t[:, 1] < 0) or np.any(t[:, 2] < 0):
            raise ValueError("theta[:, 1] (sampling term a [GeV^1/2]) and theta[:, 2] (noise sigma [GeV]) must be >= 0")
        o = np.zeros(2) if offset_mm is None else np.asarray(offset_mm, dtype=np.float64)
        if o.shape not in ((2,), (n, 2)):
            raise ValueError(f"offset_mm must have shape (2,) or ({n}, 2) [mm], got {o.shape}")
        if not np.all(np.isfinite(o)):
            raise ValueError("offset_mm must be finite [mm]")
        o = np.broadcast_to(o, (n, 2))
        return e.astype(np.float32), t.astype(np.float32), o.astype(np.float32), bool(np.any(o != 0))

    def iter_simulate(
        self,
        key: jax.Array,
        energies_gev: np.ndarray,
        theta: np.ndarray | None = None,
        offset_mm: np.ndarray | None = None,
        chunk_size: int | None = None,
    ) -> Iterator[ShowerBatch]:
        """Simulate in chunks of ``chunk_size`` showers (bounded memory), yielding numpy ShowerBatches.

        Args:
            key: JAX PRNG key; shower i uses ``fold_in(key, i)``.
            energies_gev: (N,) incident energies [GeV] in :data:`ENERGY_RANGE_GEV`.
            theta: (3,) or (N, 3) detector parameters (s, a [GeV^1/2], sigma_n [GeV]); default ``params``.
            offset_mm: (2,) or (N, 2) beam impact offset [mm]; default on the axis.
            chunk_size: showers per compiled batch; default :meth:`auto_chunk_size`.
        """
        e, t, o, displaced = self._prepare(energies_gev, theta, offset_mm)
        chunk = int(chunk_size or self.auto_chunk_size(displaced))
        if chunk < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        n = e.size
        # Every batch is padded to the chunk size or, for a run shorter than a chunk, to the next power of two (at
        # least _MIN_BATCH), so that runs of different lengths share a few compiled batch shapes (a compilation
        # takes seconds; the padding rows, simulated and dropped, milliseconds). Shower i depends only on
        # fold_in(key, i) and its inputs, as for any chunking.
        size = min(chunk, max(_MIN_BATCH, 1 << max(n - 1, 0).bit_length()))
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            idx = np.arange(start, start + size)
            sl = np.minimum(idx, n - 1)
            # float32 by the precision policy, also when called inside jax.enable_x64(True): a trace under float64
            # would also poison the jit cache for later float32 calls.
            with jax.enable_x64(False):
                out = _batch(self._kernel_key, key, jnp.asarray(idx, dtype=jnp.uint32), e[sl], t[sl], o[sl], displaced)
                batch = ShowerBatch(*(np.asarray(x)[: stop - start] for x in out))
            yield batch

    def simulate(
        self,
        key: jax.Array,
        energies_gev: np.ndarray,
        theta: np.ndarray | None = None,
        offset_mm: np.ndarray | None = None,
        chunk_size: int | None = None,
    ) -> ShowerBatch:
        """Simulate all showers at once (see :meth:`iter_simulate` for the arguments)."""
        parts = list(self.iter_simulate(key, energies_gev, theta, offset_mm, chunk_size))
        if not parts:
            return ShowerBatch(np.zeros((0, self.geometry.n_voxels), np.float32), *(np.zeros(0, np.float32),) * 5)
        return ShowerBatch(*(np.concatenate(x) for x in zip(*parts, strict=True)))

    def sample(self, key: jax.Array, conditions: np.ndarray) -> np.ndarray:
        """Response-model protocol: voxel energies (N, n_voxels) [GeV] for conditions (N,) or (N, k) with
        columns (E [GeV], s, a, sigma_n [GeV], offset x, y [mm]) (k = 1, 4 or 6)."""
        c = np.asarray(conditions, dtype=np.float64)
        if c.ndim == 1:
            c = c[:, None]
        if c.ndim != 2 or c.shape[1] not in (1, 4, 6):
            raise ValueError(
                "conditions must have shape (N,) or (N, k) with k = 1 (E), 4 (E, s, a, sigma_n) or "
                f"6 (E, s, a, sigma_n, x, y); got {c.shape}"
            )
        theta = c[:, 1:4] if c.shape[1] >= 4 else None
        offset = c[:, 4:6] if c.shape[1] == 6 else None
        return self.simulate(key, c[:, 0], theta, offset).showers

    def expected_showers(self, key: jax.Array, energy_gev: float, n_draws: int = 2000) -> np.ndarray:
        """GFLASH mean expectation of the voxel energies (n_voxels,) [GeV, visible] at one incident
        energy, beam on the axis: the analytic profile integrals averaged over ``n_draws`` draws of the
        per-shower (T, alpha) fluctuation. The simulator's spot and sampling fluctuations are unbiased,
        so this is the mean of :meth:`simulate` computed without them."""
        e, t, _, _ = self._prepare(np.array([energy_gev]), None, None)
        with jax.enable_x64(False):
            return np.asarray(_expected(self._kernel_key, key, jnp.float32(e[0]), jnp.asarray(t[0]), int(n_draws)))

    @property
    def _kernel_key(self) -> tuple[Geometry, Material]:
        """Static argument of the compiled kernels: they depend on the geometry and material only (theta is an
        argument), and both compare by value, so every calorimeter with this geometry and material (each
        ``calorimeter("default")``, whatever its params) reuses the same compilations."""
        return (self.geometry, self.material)


# ---------------------------------------------------------------------- compiled kernels
# Module-level, with (geometry, material) as a static argument compared by value: a jitted method with ``self``
# static would be keyed by the instance, and every new Calorimeter would compile its kernels again.


@partial(jax.jit, static_argnums=(0, 6))
def _batch(kernel_key, key, index, energies, theta, offsets, displaced: bool) -> ShowerBatch:
    cal = Calorimeter(*kernel_key)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(index)
    return jax.vmap(lambda k, e, t, o: cal._one_shower(k, e, t, o, displaced))(keys, energies, theta, offsets)


@partial(jax.jit, static_argnums=(0, 4))
def _expected(kernel_key, key, energy, theta, n_draws):
    cal = Calorimeter(*kernel_key)
    tb = cal._tables
    params = gflash.longitudinal_params(energy, cal.material)
    u = jax.random.normal(key, (n_draws, 2))

    def one(u_pair):
        t_max, alpha = gflash.draw_t_alpha(params, u_pair[0], u_pair[1])
        de = jnp.maximum(jnp.diff(gflash.gamma_cdf(jnp.asarray(tb["t_slices"]), t_max, alpha)), 0.0) * energy
        prob = cal._cell_probabilities_axial(energy, t_max, alpha)
        cells = (theta[0] * cal.material.sampling_fraction * de[:-1])[:, None, None] * prob
        return cells.reshape(-1)[jnp.asarray(tb["gather"])]

    return jax.lax.map(one, u, batch_size=256).mean(axis=0)


#: Material of each named geometry.
GEOMETRY_MATERIAL = {"default": "W/Si", "ds2": "W/Si", "ds3": "W/Si", "ds1-photons": "Pb/LAr", "ds1-pions": "Pb/LAr"}


def calorimeter(
    geometry: str | Geometry = "default",
    material: str | Material | None = None,
    params: DetectorParams | None = None,
) -> Calorimeter:
    """Build a calorimeter from a geometry name (``default``, ``ds1-photons``, ``ds1-pions``, ``ds2``,
    ``ds3``) or :class:`Geometry`, a material name (``W/Si``, ``Pb/LAr``, ``PbWO4``; default: the
    geometry's own, W/Si for custom geometries) and detector parameters."""
    geo = get_geometry(geometry) if isinstance(geometry, str) else geometry
    if material is None:
        material = GEOMETRY_MATERIAL.get(geo.name, "W/Si")
    mat = get_material(material) if isinstance(material, str) else material
    return Calorimeter(geo, mat, params or DetectorParams())
