"""A calibration problem: observed summaries, their beam energies, a summary density and a prior box.

The tempered log posterior of theta is ``tau * sum_i log p(x_i | E_i, theta) + log prior(theta)``. Every sampler
in :mod:`surrinf.inference` works on the unconstrained z of :class:`~surrinf.inference.prior.BoxPrior`.

Precision: the density may run in float32 (a generator); the per-event log densities are summed in float64.
Samplers enable float64 locally (``with jax.enable_x64(True)``), as the precision policy of surrinf requires.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .prior import BoxPrior

__all__ = ["CalibrationProblem", "SummaryDensity", "check_tau", "log_posterior_unconstrained"]


@runtime_checkable
class SummaryDensity(Protocol):
    """A conditional density of shower summaries: ``log_prob(x (N, D), energies_gev (N,), theta (P,)) -> (N,)``."""

    def log_prob(self, x: jax.Array, energies_gev: jax.Array, theta: jax.Array) -> jax.Array:  # pragma: no cover
        ...


def check_tau(tau: Any) -> float:
    """tau as a float in (0, 1]; a clear error otherwise."""
    t = float(tau)
    if not (0.0 < t <= 1.0) or not np.isfinite(t):
        raise ValueError(f"tau (likelihood temperature) must lie in (0, 1], got {tau!r}")
    return t


def _sum64(terms: jax.Array) -> jax.Array:
    """Sum per-event log densities in the widest float dtype enabled (float64 under x64)."""
    return jnp.sum(terms.astype(jnp.result_type(float)))


def log_posterior_unconstrained(
    density: Any, prior: BoxPrior, x: jax.Array, energies_gev: jax.Array, z: jax.Array, tau: float | jax.Array
) -> jax.Array:
    """Tempered log posterior density of the unconstrained z (P,) for data x (N, D) at energies (N,) [GeV]:
    tau * sum_i log p(x_i | E_i, theta(z)) + log prior(z) (Jacobian of the box map included). Pure; jit/vmap-able."""
    theta = prior.from_unconstrained(z)
    return prior.log_density_unconstrained(z) + tau * _sum64(density.log_prob(x, energies_gev, theta))


class CalibrationProblem(eqx.Module):
    """Data x (N, D) at beam energies (N,) [GeV], a :class:`SummaryDensity` and a :class:`BoxPrior`."""

    density: Any
    x: jax.Array
    energies_gev: jax.Array
    prior: BoxPrior

    def __init__(self, density: Any, x: Any, energies_gev: Any, prior: BoxPrior):
        if not hasattr(density, "log_prob"):
            raise TypeError(f"density must have log_prob(x, energies_gev, theta), got {type(density).__name__}")
        x = np.asarray(x)
        e = np.asarray(energies_gev, dtype=np.float64).reshape(-1)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"x (observed summaries) must have shape (N, D) with N >= 1, got {x.shape}")
        if e.shape != (x.shape[0],):
            raise ValueError(f"energies_gev must have shape ({x.shape[0]},) [GeV] like x, got {e.shape}")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(e)) and np.all(e > 0)):
            raise ValueError("x must be finite and energies_gev finite and > 0 [GeV]")
        self.density, self.prior = density, prior
        self.x, self.energies_gev = jnp.asarray(x, dtype=jnp.float32), jnp.asarray(e, dtype=jnp.float32)

    @property
    def n_events(self) -> int:
        return int(self.x.shape[0])

    @property
    def dim(self) -> int:
        return self.prior.dim

    def log_likelihood_terms(self, theta: jax.Array) -> jax.Array:
        """Per-event log densities (N,) at theta (P,)."""
        return self.density.log_prob(self.x, self.energies_gev, theta)

    def log_likelihood(self, theta: jax.Array) -> jax.Array:
        """sum_i log p(x_i | E_i, theta), accumulated in the widest float dtype enabled (float64 under x64)."""
        return _sum64(self.log_likelihood_terms(theta))

    def log_posterior(self, theta: jax.Array, tau: float | jax.Array) -> jax.Array:
        """Unnormalised tempered log posterior at theta (P,) (-inf outside the box)."""
        lp = self.prior.log_density(theta)
        return jnp.where(jnp.isfinite(lp), lp + tau * self.log_likelihood(theta), -jnp.inf)

    def log_posterior_unconstrained(self, z: jax.Array, tau: float | jax.Array) -> jax.Array:
        """Tempered log posterior density of the unconstrained z (P,) (prior Jacobian included)."""
        return log_posterior_unconstrained(self.density, self.prior, self.x, self.energies_gev, z, tau)
