"""Uniform box prior on the detector parameters theta and its unconstrained parametrisation."""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["CALIBRATION_PARAMETERS", "BoxPrior", "default_prior"]

#: theta of the calorimeter calibration: energy scale s [1], sampling term a [GeV^1/2], noise per cell [GeV].
CALIBRATION_PARAMETERS = ("energy_scale", "sampling_term", "noise_sigma_gev")


class BoxPrior(eqx.Module):
    """Independent uniform priors theta_j ~ U(low_j, high_j), with the unconstrained map used by the samplers.

    ``theta = low + (high - low) * sigmoid(z)``; ``log_density_unconstrained(z)`` is the log density of z
    induced by the uniform prior (Jacobian included), so an unconstrained sampler targets the same posterior.
    """

    names: tuple[str, ...] = eqx.field(static=True)
    bounds: tuple[tuple[float, float], ...] = eqx.field(static=True)  # hashable: (low, high) per parameter

    def __init__(self, names: Sequence[str], low: Sequence[float], high: Sequence[float]):
        names = tuple(str(n) for n in names)
        lo, hi = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        if lo.shape != (len(names),) or hi.shape != (len(names),):
            raise ValueError(f"low and high must have shape ({len(names)},) like names, got {lo.shape}, {hi.shape}")
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(hi > lo)):
            raise ValueError(f"prior box needs finite low < high for every parameter, got low={lo}, high={hi}")
        self.names = names
        self.bounds = tuple((float(a), float(b)) for a, b in zip(lo, hi, strict=True))

    @property
    def low(self) -> np.ndarray:
        return np.array([b[0] for b in self.bounds], dtype=np.float64)

    @property
    def high(self) -> np.ndarray:
        return np.array([b[1] for b in self.bounds], dtype=np.float64)

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def width(self) -> np.ndarray:
        return self.high - self.low

    def log_volume(self) -> float:
        return float(np.sum(np.log(self.width)))

    def sample(self, key: jax.Array, n: int) -> np.ndarray:
        """(n, P) draws from the prior (float64 numpy)."""
        u = np.asarray(jax.random.uniform(key, (int(n), self.dim)), dtype=np.float64)
        return self.low + self.width * u

    def contains(self, theta: np.ndarray) -> np.ndarray:
        t = np.asarray(theta, dtype=np.float64)
        return np.all((t >= self.low) & (t <= self.high), axis=-1)

    def check(self, theta: np.ndarray, name: str = "theta") -> np.ndarray:
        """Return theta as float64 (P,) or (M, P); raise a clear error for the wrong shape or values outside the box."""
        t = np.asarray(theta, dtype=np.float64)
        if t.ndim not in (1, 2) or t.shape[-1] != self.dim:
            raise ValueError(f"{name} must have shape ({self.dim},) or (M, {self.dim}) = {self.names}, got {t.shape}")
        if not np.all(self.contains(t)):
            raise ValueError(f"{name} must lie inside the prior box low={self.low.tolist()}, high={self.high.tolist()}")
        return t

    def log_density(self, theta: jax.Array) -> jax.Array:
        """Log prior density of theta (P,) (-inf outside the box)."""
        inside = jnp.all((theta >= self.low) & (theta <= self.high))
        return jnp.where(inside, -self.log_volume(), -jnp.inf)

    def from_unconstrained(self, z: jax.Array) -> jax.Array:
        return self.low + self.width * jax.nn.sigmoid(z)

    def to_unconstrained(self, theta: jax.Array) -> jax.Array:
        u = (jnp.asarray(theta) - self.low) / self.width
        return jnp.log(u) - jnp.log1p(-u)

    def log_density_unconstrained(self, z: jax.Array) -> jax.Array:
        """log p(z) for theta = from_unconstrained(z) with theta uniform in the box: sum log sigmoid(z) sigmoid(-z)."""
        return jnp.sum(jax.nn.log_sigmoid(z) + jax.nn.log_sigmoid(-z), axis=-1)


def default_prior() -> BoxPrior:
    """The calorimeter calibration box: s in [0.9, 1.1], a in [0.08, 0.30] GeV^1/2, sigma_n in [0.5, 3] MeV."""
    return BoxPrior(CALIBRATION_PARAMETERS, [0.9, 0.08, 0.0005], [1.1, 0.30, 0.003])
