"""A calibration toy whose exact likelihood is known: Gaussian summaries of a sampling calorimeter.

Per event at beam energy E [GeV] and theta = (s, a [GeV^1/2], sigma_n [GeV]):

- x0 = response E_vis / (f E) ~ N(s, s^2 a^2 / E + (sqrt(n_cells) sigma_n / (f E))^2)  (stochastic + noise terms),
- x1 = noise summary [GeV] ~ N(k sigma_n, (0.1 k sigma_n)^2)  (like the summed negative cell energies).

It has the interface of both a reference simulator (``simulate``) and a summary density (``log_prob``), so the
temperature rules and coverage studies can be checked against a problem with the exact likelihood (tau = 1).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["GaussianToy"]


class GaussianToy(eqx.Module):
    """Exact Gaussian summary model. ``bias_scale`` != 0 shifts the response mean of ``log_prob`` by that fraction
    (a deliberately wrong density); ``simulate`` always draws from the exact model."""

    sampling_fraction: float = eqx.field(static=True, default=0.0255)
    n_cells: int = eqx.field(static=True, default=360)
    noise_gain: float = eqx.field(static=True, default=120.0)
    bias_scale: float = eqx.field(static=True, default=0.0)

    def _moments(self, energies_gev: jax.Array, theta: jax.Array, bias: float) -> tuple[jax.Array, jax.Array]:
        e = jnp.asarray(energies_gev)
        th = jnp.broadcast_to(jnp.asarray(theta), (*e.shape, 3))
        s, a, sn = th[..., 0], th[..., 1], th[..., 2]
        var0 = (s * a) ** 2 / e + (math.sqrt(self.n_cells) * sn / (self.sampling_fraction * e)) ** 2
        mean = jnp.stack([s * (1.0 + bias), self.noise_gain * sn], axis=-1)
        sd = jnp.stack([jnp.sqrt(var0), 0.1 * self.noise_gain * sn], axis=-1)
        return mean, sd

    def log_prob(self, x: jax.Array, energies_gev: jax.Array, theta: jax.Array) -> jax.Array:
        """Exact log density (N,) of x (N, 2) at energies (N,) [GeV] and theta (3,) or (N, 3)."""
        mean, sd = self._moments(energies_gev, theta, self.bias_scale)
        r = (jnp.asarray(x) - mean) / sd
        return jnp.sum(-0.5 * r**2 - jnp.log(sd) - 0.5 * math.log(2 * math.pi), axis=-1)

    def simulate(self, key: jax.Array, energies_gev: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """Draw x (N, 2) at energies (N,) [GeV] and theta (3,) or (N, 3)."""
        e = jnp.asarray(np.asarray(energies_gev, dtype=np.float64).reshape(-1), dtype=jnp.float32)
        mean, sd = self._moments(e, jnp.asarray(theta, dtype=jnp.float32), 0.0)
        return np.asarray(mean + sd * jax.random.normal(key, mean.shape))
