"""Reference pile-up overlay: soft minimum-bias deposits added to simulated showers.

Model (:class:`PileupModel`). An event with pile-up mean ``mu`` receives a Poisson(mu) number of soft deposits
(the particles of the minimum-bias interactions that reach the calorimeter window; ``mu`` is their mean number
in the window, i.e. the mean number of interactions per crossing times the soft particles per interaction
that land in the window). Each deposit

- carries a true energy from an exponential spectrum of mean ``mean_energy_gev``: steeply falling (the
  maximum-entropy spectrum for a given mean; soft-hadron pT spectra fall roughly exponentially). The default
  mean 0.27 GeV is that of a photon from a pi0 decay at eta = 0: the mean transverse momentum of minimum-bias
  charged hadrons at sqrt(s) = 7 TeV is 0.545 +- 0.016 GeV (CMS, Phys. Rev. Lett. 105 (2010) 022002), pi0s
  share the pion spectrum (isospin) and each decay photon carries half of the pi0 momentum on average. It is
  a tunable parameter (other sqrt(s), eta, or a hadronic soft component);
- lands, with its whole energy, in one cell: its layer is drawn with the weights of the mean GFLASH
  longitudinal profile of an electromagnetic shower of the spectrum's mean energy in the calorimeter's material
  (:func:`layer_weights`), and its cell uniformly among the transverse cells of that layer. The soft component
  that an electromagnetic calorimeter sees is dominated by those pi0 photons, whose showers peak at
  T ~ ln(E / E_c) X0: about 1 X0 at 0.27 GeV in W/Si against 6-9 X0 for 5-100 GeV signal showers, so the
  weights favour the front layers. Uniform cells: the minimum-bias flux dN/(deta dphi) is flat over a small
  window (CMS, ibid.) and cells of a projective calorimeter subtend equal eta x phi; in the cylindrical test
  geometries this is an approximation. One cell per deposit (no lateral or longitudinal sharing) is the
  coarse-cell approximation: a 0.27 GeV shower's energy lies mostly within one Moliere radius;
- is seen on the visible scale of the showers: true energy times the material's sampling fraction times
  the calorimeter's energy scale s (``Calorimeter.params.energy_scale``), as the simulator's showers.

Vectorised sampling (jit). Every event draws a fixed number n_max of candidate deposits (arrival time,
cell, energy); candidate k exists iff its arrival time T_k (cumulative sum of unit exponentials) is <= mu, so the
number of deposits is exactly Poisson(mu) truncated at n_max. n_max is the Poisson quantile of the largest mu
of the call with P(N > n_max) < :data:`TRUNCATION` = 1e-12 per event (rounded up to a power of two, at least
16); existing deposits are scatter-added into their cells. Event i draws its candidates from the uniform stream
of ``jax.random.fold_in(key, i)`` (candidate k from its uniforms 3k, 3k+1, 3k+2); JAX's default partitionable
threefry makes that stream prefix-stable, so an event's deposits depend only on the key, its index and its mu,
not on batch composition or on the other events' mu.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import gflash
from .calorimeter import Calorimeter

__all__ = [
    "DEFAULT_SOFT_ENERGY_GEV",
    "PileupDeposits",
    "PileupModel",
    "PileupResponse",
    "cell_probabilities",
    "draw_pileup",
    "layer_weights",
    "overlay_pileup",
]

#: Default mean true energy [GeV] of a soft deposit: half the mean charged-hadron pT of minimum-bias pp
#: collisions at 7 TeV, 0.545 GeV (CMS, PRL 105 (2010) 022002), i.e. a pi0 decay photon at eta = 0.
DEFAULT_SOFT_ENERGY_GEV = 0.545 / 2.0

#: Probability per event that the true Poisson count exceeds the candidates drawn (then it is truncated).
TRUNCATION = 1e-12
_MIN_CANDIDATES = 16
_MIN_BATCH = 64
_MAX_BATCH = 8192
#: Events per compiled batch keep about this many float32 elements of work (candidates + cells) per batch.
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class PileupModel:
    """Parameters of the soft deposits (see the module docstring).

    mean_energy_gev: mean true energy of one deposit [GeV] (> 0; exponential spectrum), default
        :data:`DEFAULT_SOFT_ENERGY_GEV`.
    profile_energy_gev: energy [GeV] whose mean longitudinal profile weights the layers; None = mean_energy_gev.
    """

    mean_energy_gev: float = DEFAULT_SOFT_ENERGY_GEV
    profile_energy_gev: float | None = None

    def __post_init__(self) -> None:
        for name, optional in (("mean_energy_gev", False), ("profile_energy_gev", True)):
            v = getattr(self, name)
            if optional and v is None:
                continue
            ok = not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating))
            if not (ok and math.isfinite(v) and v > 0):
                raise ValueError(f"PileupModel.{name} must be a finite number > 0 [GeV], got {v!r}")
            object.__setattr__(self, name, float(v))


class PileupDeposits(NamedTuple):
    """Pile-up of N events on V cells: ``counts`` (N, V) number of deposits per cell (float32, integral),
    ``energy_gev`` (N, V) their summed energy on the visible scale [GeV]."""

    counts: np.ndarray
    energy_gev: np.ndarray


def layer_weights(calorimeter: Calorimeter, model: PileupModel | None = None) -> np.ndarray:
    """(n_layers,) probability of a deposit to land in each layer (0 for layers without cells), float64.

    The mean longitudinal profile of a GFLASH electromagnetic shower of energy ``profile_energy_gev`` (default
    the spectrum mean) in the calorimeter's material: depth of maximum T = exp(<ln T>), shape alpha =
    exp(<ln alpha>) (with GFLASH's T >= 1 X0, alpha >= 1.1), integrated over each layer [X0] and normalised
    over the layers with cells (energy beyond the last layer is assigned proportionally)."""
    model = model or PileupModel()
    geo, mat = calorimeter.geometry, calorimeter.material
    energy = model.profile_energy_gev or model.mean_energy_gev
    with jax.enable_x64(True):
        p = gflash.longitudinal_params(jnp.float64(energy), mat)
        t_max = jnp.maximum(jnp.exp(p.mean_log_t), 1.0)
        alpha = jnp.maximum(jnp.exp(p.mean_log_alpha), 1.1)
        cdf = np.asarray(gflash.gamma_cdf(jnp.asarray(geo.layer_edges_mm / mat.X0_mm), t_max, alpha))
    w = np.maximum(np.diff(cdf), 0.0) * (geo.voxels_per_layer > 0)
    if not w.sum() > 0:
        raise ValueError("the geometry has no cells in which the mean soft-shower profile deposits energy")
    return w / w.sum()


def cell_probabilities(calorimeter: Calorimeter, model: PileupModel | None = None) -> np.ndarray:
    """(n_voxels,) probability p_j of a deposit to land in cell j (sums to 1): :func:`layer_weights` shared
    uniformly among the cells of each layer."""
    geo = calorimeter.geometry
    w = layer_weights(calorimeter, model)
    layer = geo.voxel_coordinates()["layer"]
    return w[layer] / geo.voxels_per_layer[layer]


def _check_mu(mu, n: int | None) -> np.ndarray:
    """mu as float64 (n,) (a scalar broadcast); ValueError unless finite and >= 0."""
    m = np.asarray(mu, dtype=np.float64)
    if m.ndim == 0 and n is not None:
        m = np.full(n, float(m))
    if m.ndim != 1 or (n is not None and m.shape[0] != n):
        want = "a scalar or shape (N,)" if n is None else f"a scalar or shape ({n},)"
        raise ValueError(f"mu (mean number of pile-up deposits per event) must be {want}, got shape {m.shape}")
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise ValueError("mu (mean number of pile-up deposits per event) must be finite and >= 0")
    return m


def draw_pileup(
    key: jax.Array,
    mu,
    calorimeter: Calorimeter,
    model: PileupModel | None = None,
    n_events: int | None = None,
) -> PileupDeposits:
    """Pile-up deposits for N events: counts and visible energies (N, n_voxels), see :class:`PileupDeposits`.

    Args:
        key: JAX PRNG key; event i uses ``fold_in(key, i)``.
        mu: mean number of deposits per event, a scalar (then ``n_events`` is required) or (N,); >= 0.
        calorimeter: gives the geometry, the material (profile, sampling fraction) and the energy scale.
        model: the soft-deposit parameters (default :class:`PileupModel`).
        n_events: N when ``mu`` is a scalar.
    """
    model = model or PileupModel()
    if not isinstance(calorimeter, Calorimeter):
        raise ValueError(f"calorimeter must be a surrinf.sim.Calorimeter, got {type(calorimeter).__name__}")
    if np.ndim(mu) == 0 and n_events is None:
        raise ValueError("n_events is required when mu is a scalar")
    if n_events is not None and (isinstance(n_events, bool) or not isinstance(n_events, (int, np.integer))):
        raise ValueError(f"n_events must be an integer >= 0, got {n_events!r}")
    if n_events is not None and n_events < 0:
        raise ValueError(f"n_events must be an integer >= 0, got {n_events!r}")
    m = _check_mu(mu, n_events)
    n, v = m.size, calorimeter.geometry.n_voxels
    if n == 0:
        return PileupDeposits(np.zeros((0, v), np.float32), np.zeros((0, v), np.float32))
    cdf = np.cumsum(cell_probabilities(calorimeter, model))
    theta = calorimeter.material.sampling_fraction * calorimeter.params.energy_scale * model.mean_energy_gev
    from scipy import stats  # on use: scipy.stats costs ~0.4 s of import time for every `import surrinf.sim`

    # Candidates per event: the Poisson quantile of the largest mu with P(N > n_max) < TRUNCATION
    n_max = max(_MIN_CANDIDATES, int(stats.poisson.isf(TRUNCATION, float(m.max()))))
    n_max = 1 << (n_max - 1).bit_length()  # a few compiled shapes
    chunk = max(_MIN_BATCH, min(_MAX_BATCH, _CHUNK_ELEMENTS // (4 * n_max + 2 * v)))
    size = min(chunk, max(_MIN_BATCH, 1 << max(n - 1, 0).bit_length()))
    counts, energy = [], []
    for start in range(0, n, size):
        idx = np.arange(start, start + size)
        m_pad = np.where(idx < n, m[np.minimum(idx, n - 1)], 0.0).astype(np.float32)
        with jax.enable_x64(False):
            c, e = _draw(
                key,
                jnp.asarray(idx, dtype=jnp.uint32),
                jnp.asarray(m_pad),
                n_max,
                jnp.asarray(cdf, dtype=jnp.float32),
                jnp.float32(theta),
            )
        stop = min(size, n - start)
        counts.append(np.asarray(c)[:stop])
        energy.append(np.asarray(e)[:stop])
    return PileupDeposits(np.concatenate(counts), np.concatenate(energy))


@partial(jax.jit, static_argnums=(3,))
def _draw(key, index, mu, n_max: int, cdf, theta):
    """Counts and visible energies (B, V) of the events ``index`` with means ``mu`` (B,), from ``n_max``
    candidate deposits per event."""
    v = cdf.shape[0]

    def one(i, mu_i):
        # candidate k uses uniforms 3k..3k+2 of the event's stream: with JAX's default (partitionable) threefry
        # the stream is prefix-stable, so an event's deposits do not depend on n_max
        u = jax.random.uniform(jax.random.fold_in(key, i), (3 * n_max,)).reshape(n_max, 3).T
        # arrival times of a unit-rate Poisson process; deposit k exists iff T_k <= mu (u in [0, 1): T_k > 0)
        present = jnp.cumsum(-jnp.log(u[0])) <= mu_i
        cell = jnp.minimum(jnp.searchsorted(cdf, u[1] * cdf[-1], side="right"), v - 1)
        energy = -theta * jnp.log1p(-u[2])  # exponential spectrum of mean theta
        counts = jnp.zeros(v, jnp.float32).at[cell].add(present.astype(jnp.float32))
        dep = jnp.zeros(v, jnp.float32).at[cell].add(jnp.where(present, energy, 0.0))
        return counts, dep

    return jax.vmap(one)(index, mu)


def overlay_pileup(
    key: jax.Array,
    showers_gev,
    mu,
    calorimeter: Calorimeter,
    model: PileupModel | None = None,
) -> np.ndarray:
    """Showers (N, V) [GeV, visible] plus pile-up with mean ``mu`` (scalar or (N,), >= 0): float32 (N, V).

    ``mu = 0`` returns the showers unchanged (no deposit is drawn). See :func:`draw_pileup` for the rest."""
    s = np.asarray(showers_gev, dtype=np.float32)
    v = calorimeter.geometry.n_voxels if isinstance(calorimeter, Calorimeter) else None
    if s.ndim != 2 or (v is not None and s.shape[1] != v):
        raise ValueError(f"showers_gev must have shape (N, {v}) [GeV], got {s.shape}")
    dep = draw_pileup(key, _check_mu(mu, s.shape[0]), calorimeter, model)
    return s + dep.energy_gev


@dataclass(frozen=True, eq=False)
class PileupResponse:
    """Response model: reference showers of ``calorimeter`` with pile-up of ``pileup`` overlaid.

    ``sample(key, conditions)`` with conditions (N, 2), columns [E [GeV], mu (mean number of soft deposits,
    >= 0)], returns voxel energies (N, V) [GeV, visible]. The key is split into (showers, pile-up)."""

    calorimeter: Calorimeter
    pileup: PileupModel = field(default_factory=PileupModel)

    def sample(self, key: jax.Array, conditions) -> np.ndarray:
        c = np.asarray(conditions, dtype=np.float64)
        if c.ndim != 2 or c.shape[1] != 2:
            raise ValueError(f"conditions must have shape (N, 2) with columns [E [GeV], mu], got {c.shape}")
        mu = _check_mu(c[:, 1], c.shape[0])
        k_shower, k_pileup = jax.random.split(key)
        showers = self.calorimeter.sample(k_shower, c[:, 0])
        return overlay_pileup(k_pileup, showers, mu, self.calorimeter, self.pileup)
