"""UnfoldingResult (what every unfolding method returns) and Poisson pseudo-data toys.

Precision: unfolding is statistics and runs in float64. The public methods enter ``jax.enable_x64(True)`` themselves
(see :func:`float64`); to ``jax.vmap``/``jax.jit`` them over toys yourself, do it inside ``with jax.enable_x64(True):``
so the traced inputs are float64 as well. Importing this package changes nothing globally.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from surrinf._precision import float64
from surrinf._xla import CPU_COMPILER_OPTIONS

__all__ = ["CPU_COMPILER_OPTIONS", "UnfoldingResult", "float64", "key_rng", "poisson_toys", "pulls"]

# CPU_COMPILER_OPTIONS and float64 are shared with the other statistics modules (surrinf._xla, surrinf._precision) and
# re-exported here, where the unfolding toy loops made them necessary.


class UnfoldingResult(eqx.Module):
    """An unfolded truth spectrum.

    unfolded: (..., n_truth) events per truth bin (efficiency-corrected); covariance: (..., n_truth, n_truth) from the
    statistical fluctuations of the data; response_covariance: (..., n_truth, n_truth) from the finite simulation
    behind the response matrix (zeros when not propagated); method: the method's name. Leading axes appear when a
    method is vmapped over pseudo-data."""

    unfolded: jax.Array
    covariance: jax.Array
    response_covariance: jax.Array
    method: str = eqx.field(static=True, default="")

    @property
    def total_covariance(self) -> jax.Array:
        return self.covariance + self.response_covariance

    @property
    @float64
    def errors(self) -> jax.Array:
        """(..., n_truth) statistical standard deviation of each bin (data only)."""
        return jnp.sqrt(jnp.diagonal(self.covariance, axis1=-2, axis2=-1))

    @property
    @float64
    def total_errors(self) -> jax.Array:
        return jnp.sqrt(jnp.diagonal(self.total_covariance, axis1=-2, axis2=-1))

    @property
    @float64
    def correlation(self) -> jax.Array:
        s = self.errors
        return self.covariance / (s[..., :, None] * s[..., None, :])

    @property
    @float64
    def global_correlation(self) -> jax.Array:
        """(..., n_truth) rho_i = sqrt(1 - 1 / (V_ii (V^-1)_ii)) of the statistical covariance."""
        v = self.covariance
        vinv = jnp.linalg.inv(v)
        x = jnp.diagonal(v, axis1=-2, axis2=-1) * jnp.diagonal(vinv, axis1=-2, axis2=-1)
        return jnp.sqrt(jnp.clip(1.0 - 1.0 / x, 0.0, 1.0))


def key_rng(key: jax.Array) -> np.random.Generator:
    """A numpy Generator seeded from the bits of a JAX PRNG key: same key, same stream, no XLA compilation."""
    data = np.asarray(jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(data.astype(np.uint32).ravel().tolist())))


def poisson_toys(key: jax.Array, expected: Any, n_toys: int) -> np.ndarray:
    """(n_toys, n) Poisson pseudo-data around ``expected`` (n,) counts [events], float64 numpy. Exact Poisson
    variates from numpy's generator seeded by ``key`` (:func:`key_rng`); jax.random.poisson gives the same
    distribution but takes seconds to compile for each toy shape."""
    mu = np.asarray(expected, dtype=np.float64)
    if mu.ndim != 1 or not np.all(np.isfinite(mu)) or np.any(mu < 0):
        raise ValueError(f"expected must be a 1-D array of finite counts >= 0, got shape {mu.shape}")
    if isinstance(n_toys, bool) or int(n_toys) != n_toys or int(n_toys) < 1:
        raise ValueError(f"n_toys must be an integer >= 1, got {n_toys!r}")
    return key_rng(key).poisson(mu, (int(n_toys), mu.size)).astype(np.float64)


def pulls(result: UnfoldingResult, truth: Any, total: bool = False) -> np.ndarray:
    """(..., n_truth) (unfolded - truth) / sigma per bin, sigma from the statistical (or ``total``) covariance."""
    t = np.asarray(truth, dtype=np.float64)
    sigma = np.asarray(result.total_errors if total else result.errors)
    return (np.asarray(result.unfolded) - t) / sigma
