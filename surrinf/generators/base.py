"""What every shower surrogate shares: condition handling, the preprocessing chain and the sampler interface.

A surrogate is an ``eqx.Module`` with three parts:

- :class:`ConditionEncoder`: conditions (N,) or (N, k) with columns [E [GeV], theta...] (see
  :data:`surrinf.response.CONDITION_COLUMNS`) -> float32 encoding (N, n_e + n_theta): the energy (scaled ln E,
  n_e = 1, default; or a one-hot vector over K static energy bins, n_e = K) and theta standardised with the
  training mean / std.
- :class:`ShowerPreprocessor`: voxel showers (N, V) [GeV, >= 0] <-> standardised unconstrained vectors
  (N, V) through :class:`~surrinf.data.bijection.ShowerBijection` and
  :class:`~surrinf.data.preprocessing.Standardize`, with the log-Jacobian so densities can be reported in
  voxel space.
- a network that maps noise to the preprocessed space. :meth:`ShowerSurrogate.generate` is the
  deterministic sampler ``(noise, conditions) -> showers`` (what is exported to ONNX) and
  :meth:`ShowerSurrogate.sample` draws the noise from ``key``.

:func:`prepare_training_data` does the preprocessing once for a training set so each model's ``fit`` only
builds its network and loss.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..data.bijection import ShowerBijection
from ..data.preprocessing import Standardize
from .conditioning import check_energy_bin_edges, encode_conditions

__all__ = [
    "ZERO_SUPPRESSION",
    "ConditionEncoder",
    "ShowerPreprocessor",
    "ShowerSurrogate",
    "prepare_training_data",
    "sample_batched",
    "zero_suppress",
]


class ConditionEncoder(eqx.Module):
    """Validates and encodes conditions [E [GeV], theta...] for a surrogate trained with ``n_theta`` theta.

    ``energy_bin_edges_gev`` (static): None (default) encodes the energy as the scaled ln E (one column);
    K + 1 strictly increasing edges [GeV] encode it as a one-hot vector over the K bins, energies outside the
    edges clamped to the first / last bin (see :mod:`surrinf.generators.conditioning`)."""

    theta_mean: jax.Array  # (n_theta,)
    theta_std: jax.Array  # (n_theta,)
    energy_bin_edges_gev: tuple[float, ...] | None = eqx.field(static=True, default=None)

    def __init__(self, theta_mean: Any = (), theta_std: Any = (), energy_bin_edges_gev: Any | None = None):
        self.theta_mean = jnp.asarray(theta_mean, dtype=jnp.float32).reshape(-1)
        self.theta_std = jnp.asarray(theta_std, dtype=jnp.float32).reshape(-1)
        if self.theta_mean.shape != self.theta_std.shape:
            raise ValueError(f"theta_mean {self.theta_mean.shape} and theta_std {self.theta_std.shape} differ")
        self.energy_bin_edges_gev = (
            None if energy_bin_edges_gev is None else check_energy_bin_edges(energy_bin_edges_gev)
        )

    @classmethod
    def fit(cls, theta: Any | None, energy_bin_edges_gev: Any | None = None) -> ConditionEncoder:
        """Encoder for training theta (N, k) (None: energy only); a constant column gets std 1.
        ``energy_bin_edges_gev``: None (continuous ln E) or the one-hot energy bin edges [GeV]."""
        if theta is None:
            return cls(energy_bin_edges_gev=energy_bin_edges_gev)
        t = np.asarray(theta, dtype=np.float64)
        t = t[:, None] if t.ndim == 1 else t
        sd = t.std(0)
        return cls(t.mean(0), np.where(sd > 0, sd, 1.0), energy_bin_edges_gev)

    @property
    def n_theta(self) -> int:
        return int(self.theta_mean.shape[0])

    @property
    def n_energy(self) -> int:
        """Number of energy columns of the encoding: 1 (continuous ln E) or K (one-hot bins)."""
        return 1 if self.energy_bin_edges_gev is None else len(self.energy_bin_edges_gev) - 1

    @property
    def n_columns(self) -> int:
        """Columns of a raw conditions array the encoder needs: 1 (E [GeV]) + n_theta."""
        return 1 + self.n_theta

    @property
    def dim(self) -> int:
        """Width of the encoding: n_energy + n_theta (1 + n_theta for the continuous default)."""
        return self.n_energy + self.n_theta

    def check(self, conditions: Any) -> jax.Array:
        """conditions (N,) or (N, k >= 1 + n_theta) -> float32 (N, k); a clear error otherwise."""
        c = jnp.asarray(conditions, dtype=jnp.float32)
        c = c[:, None] if c.ndim == 1 else c
        if c.ndim != 2 or c.shape[1] < self.n_columns:
            raise ValueError(
                f"conditions must have shape (N,) or (N, k) with k >= {self.n_columns} columns "
                f"(E [GeV] and {self.n_theta} theta), got {tuple(jnp.shape(conditions))}"
            )
        return c

    def energies(self, conditions: Any) -> jax.Array:
        """Incident energies (N,) [GeV] from the conditions."""
        return self.check(conditions)[:, 0]

    def __call__(self, conditions: Any) -> jax.Array:
        """(N, dim) float32 encoding of the conditions."""
        return encode_conditions(
            self.check(conditions), self.n_theta, self.theta_mean, self.theta_std, self.energy_bin_edges_gev
        )

    def join(self, energies: Any, theta: Any | None = None) -> np.ndarray:
        """Raw conditions array (N, 1 + n_theta) from energies (N,) [GeV] and theta (N, n_theta)."""
        e = np.asarray(energies, dtype=np.float32).reshape(-1, 1)
        if self.n_theta == 0:
            return e
        if theta is None:
            raise ValueError(f"theta is required: this surrogate is conditioned on {self.n_theta} theta columns")
        t = np.asarray(theta, dtype=np.float32).reshape(e.shape[0], -1)
        if t.shape[1] != self.n_theta:
            raise ValueError(f"theta must have shape (N, {self.n_theta}), got {t.shape}")
        return np.concatenate([e, t], axis=1)


#: Zero-suppression threshold of the surrogates, relative to the incident energy: voxels below
#: ZERO_SUPPRESSION * E are empty. 1e-6 E carries < 3.1e-4 of E_vis of default-geometry reference showers at
#: 1-500 GeV (measured), and lies 10x above the dequantisation band [0, 1e-7 E) of empty voxels, so a
#: generator's smearing of that band does not create spurious hits.
ZERO_SUPPRESSION = 1e-6


def zero_suppress(showers_gev: Any, energies_gev: Any, relative_threshold: float = ZERO_SUPPRESSION) -> Any:
    """Voxels below ``relative_threshold * E`` set to 0 (showers (N, V) [GeV], energies (N,) [GeV]).

    The surrogates model showers above :data:`ZERO_SUPPRESSION`. Apply it to reference showers before
    comparing them with generated ones, so that sub-threshold deposits (down to 1e-38 GeV in the tails of
    the GFLASH reference) do not count as hits. Works on numpy (returns numpy) and jax arrays."""
    xp = jnp if isinstance(showers_gev, jax.Array) else np
    s = xp.asarray(showers_gev)
    e = xp.asarray(energies_gev, dtype=s.dtype).reshape(-1, 1)
    return xp.where(s < relative_threshold * e, xp.zeros((), s.dtype), s)


#: Generated standardised vectors are clipped to the training range +- this many standard deviations.
SUPPORT_MARGIN = 0.5


class ShowerPreprocessor(eqx.Module):
    """showers (N, V) [GeV, >= 0] <-> standardised bijection space (N, V).

    ``lower`` / ``upper`` (V,) bound the standardised space to the training range widened by
    :data:`SUPPORT_MARGIN` standard deviations: :meth:`inverse` clips generated vectors to it, so that a rare
    far-tail sample of a generator cannot turn into a shower with an unphysical layer energy (the
    preprocessing exponentiates)."""

    bijection: ShowerBijection
    standardize: Standardize
    lower: jax.Array
    upper: jax.Array

    @property
    def dim(self) -> int:
        return self.bijection.n_voxels

    @classmethod
    def fit(cls, bijection: ShowerBijection, showers_gev: Any, energies_gev: Any) -> tuple[ShowerPreprocessor, Any]:
        """Fit the standardisation on training showers; returns (preprocessor, standardised z (N, V))."""
        z, _ = _bijection_forward_jit(bijection, jnp.asarray(showers_gev), jnp.asarray(energies_gev))
        std = Standardize.fit(np.asarray(z))
        zs = std.forward(z)
        lo, hi = jnp.min(zs, axis=0) - SUPPORT_MARGIN, jnp.max(zs, axis=0) + SUPPORT_MARGIN
        return cls(bijection, std, lo, hi), zs

    @classmethod
    def skeleton(cls, bijection_dict: dict) -> ShowerPreprocessor:
        """Shape-correct placeholder for loading (arrays are overwritten by the saved leaves)."""
        bij = ShowerBijection.from_dict(bijection_dict)
        n = bij.n_voxels
        return cls(bij, Standardize(np.zeros(n), np.ones(n)), -jnp.full(n, jnp.inf), jnp.full(n, jnp.inf))

    def forward(self, showers_gev: Any, energies_gev: Any) -> tuple[jax.Array, jax.Array]:
        """(standardised z (N, V), log|dz/de| (N,)) for showers [GeV] at incident energies (N,) [GeV]."""
        z, log_jac = self.bijection.forward(showers_gev, energies_gev)
        return self.standardize.forward(z), log_jac + self.standardize.log_abs_det_jacobian()

    def inverse(self, zs: jax.Array, energies_gev: Any) -> jax.Array:
        """Standardised z (N, V) -> voxel energies (N, V) [GeV, >= 0], zero-suppressed below
        :data:`ZERO_SUPPRESSION` * E (see :func:`zero_suppress`)."""
        e = jnp.asarray(energies_gev, dtype=jnp.float32).reshape(-1)
        zs = jnp.clip(zs, self.lower, self.upper)
        showers = self.bijection.inverse(self.standardize.inverse(zs), e)
        return zero_suppress(showers, e)


class ShowerSurrogate(eqx.Module):
    """Base of the voxel-shower surrogates: subclasses define ``latent_dim`` and ``decode``.

    Subclasses hold the fields ``preprocessor: ShowerPreprocessor`` and ``encoder: ConditionEncoder``.
    """

    def latent_dim(self) -> int:
        """Dimension of the standard-normal noise consumed by :meth:`generate` per shower."""
        raise NotImplementedError

    def decode(self, noise: jax.Array, cond: jax.Array) -> jax.Array:
        """noise (N, latent_dim), encoded conditions (N, C) -> standardised preprocessed showers (N, V)."""
        raise NotImplementedError

    @property
    def geometry(self):
        return self.preprocessor.bijection.geometry

    @property
    def n_theta(self) -> int:
        return self.encoder.n_theta

    def generate(self, noise: Any, conditions: Any) -> jax.Array:
        """Deterministic sampler: noise (N, latent_dim) ~ N(0, I) and conditions -> showers (N, V) [GeV, >= 0]."""
        c = self.encoder.check(conditions)
        noise = jnp.asarray(noise, dtype=jnp.float32)
        if noise.ndim != 2 or noise.shape != (c.shape[0], self.latent_dim()):
            raise ValueError(
                f"noise must have shape (N, latent_dim) = ({c.shape[0]}, {self.latent_dim()}), got {noise.shape}"
            )
        return _generate_jit(self, noise, c)

    def sample(self, key: jax.Array, conditions: Any) -> jax.Array:
        """Voxel energies (N, V) [GeV, >= 0] for conditions (N,) or (N, k) (E [GeV], theta...)."""
        c = self.encoder.check(conditions)
        return self.generate(jax.random.normal(key, (c.shape[0], self.latent_dim())), c)

    def log_prob(self, showers: Any, conditions: Any) -> jax.Array:
        raise NotImplementedError(f"{type(self).__name__} has no tractable log_prob")


def prepare_training_data(
    bijection: ShowerBijection,
    showers_gev: Any,
    energies_gev: Any,
    theta: Any | None = None,
    *,
    key: jax.Array | None = None,
    energy_bin_edges_gev: Any | None = None,
) -> tuple[ShowerPreprocessor, ConditionEncoder, dict[str, np.ndarray]]:
    """Preprocess a training set: showers (N, V) [GeV, >= 0], energies (N,) [GeV], theta (N, k) or None.

    Showers are zero-suppressed at :data:`ZERO_SUPPRESSION` * E (:func:`zero_suppress`) and, when ``key`` is
    given, dequantised: every voxel gets uniform noise in [0, relative_delta * E) (the bijection's offset,
    1e-7 E; CaloFlow-style), so that empty voxels and layers are a narrow continuous band in the
    preprocessed space rather than point masses that a likelihood fit would spike on. Generated voxels below
    the threshold are set to 0 again by :meth:`ShowerPreprocessor.inverse`, so the noise (< 1e-7 E per
    voxel) never reaches an output. Always pass a key when training.

    ``energy_bin_edges_gev``: None (default) conditions on the continuous scaled ln E; K + 1 increasing edges
    [GeV] on a one-hot vector over K energy bins (see :class:`ConditionEncoder`).

    Returns (preprocessor, encoder, data) with data = {"x": standardised z (N, V) float32, "cond": encoded
    conditions (N, encoder.dim) float32 (1 + k columns by default), "energy": incident energy (N,) [GeV]
    float32} for the trainer."""
    energies = np.asarray(energies_gev, dtype=np.float32).reshape(-1)
    showers = np.asarray(showers_gev, dtype=np.float32)
    if showers.ndim != 2 or showers.shape[0] != energies.size or showers.shape[1] != bijection.n_voxels:
        raise ValueError(
            f"showers_gev must have shape (N, {bijection.n_voxels}) matching energies_gev (N={energies.size}), "
            f"got {showers.shape}"
        )
    if not np.all(np.isfinite(energies)) or np.any(energies <= 0):
        raise ValueError("energies_gev must be finite and > 0 [GeV]")
    if not np.all(np.isfinite(showers)) or np.any(showers < 0):
        raise ValueError("showers_gev must be finite and >= 0 [GeV] (set negative noise voxels to 0 before training)")
    if theta is not None:
        theta = np.asarray(theta, dtype=np.float32).reshape(energies.size, -1)
    enc = ConditionEncoder.fit(theta, energy_bin_edges_gev)  # checks the edges before the preprocessing work
    delta = bijection.relative_delta
    showers = zero_suppress(showers, energies)
    if key is not None:
        u = np.asarray(jax.random.uniform(key, showers.shape, dtype=jnp.float32))
        showers = showers + delta * energies[:, None] * u
    pre, zs = ShowerPreprocessor.fit(bijection, showers, energies)
    cond = enc(enc.join(energies, theta))
    data = {"x": np.asarray(zs, dtype=np.float32), "cond": np.asarray(cond), "energy": energies}
    return pre, enc, data


@eqx.filter_jit
def _bijection_forward_jit(bijection: ShowerBijection, showers: jax.Array, energies: jax.Array):
    return bijection.forward(showers, energies)


@eqx.filter_jit
def _generate_jit(model: ShowerSurrogate, noise: jax.Array, conditions: jax.Array) -> jax.Array:
    """Compiled body of :meth:`ShowerSurrogate.generate` (inputs already checked)."""
    return model.preprocessor.inverse(model.decode(noise, model.encoder(conditions)), conditions[:, 0])


@eqx.filter_jit
def _sample_jit(model: ShowerSurrogate, key: jax.Array, conditions: jax.Array) -> jax.Array:
    return model.sample(key, conditions)


def sample_batched(model: ShowerSurrogate, key: jax.Array, conditions: Any, batch_size: int = 4096) -> np.ndarray:
    """Compiled sampling in fixed-size batches: showers (N, V) [GeV] for conditions (N,) or (N, k).

    Batch ``i`` uses ``fold_in(key, i)``; the last batch is padded to ``batch_size`` (one compiled shape), so
    the result depends on ``batch_size`` but is reproducible for a given key and batch size."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    c = np.asarray(model.encoder.check(conditions))
    n = c.shape[0]
    bs = min(int(batch_size), max(n, 1))
    out = []
    for i, start in enumerate(range(0, n, bs)):
        part = c[start : start + bs]
        pad = bs - part.shape[0]
        if pad:
            part = np.concatenate([part, np.repeat(part[-1:], pad, axis=0)])
        out.append(np.asarray(_sample_jit(model, jax.random.fold_in(key, i), jnp.asarray(part)))[: bs - pad])
    return np.concatenate(out) if out else np.zeros((0, model.preprocessor.dim), np.float32)
