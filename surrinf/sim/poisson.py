"""Fast vectorised Poisson variates for spot counts (one uniform per variate, float32).

``jax.random.poisson`` evaluates both of its algorithms (Knuth's method and transformed rejection) on
every element and draws fresh uniforms in each loop iteration; in the calorimeter simulator this was
95 % of the run time for the CaloChallenge dataset-2 geometry. Here each variate uses one uniform u:

- rates below ``SMALL_RATE`` = 15 (where the discreteness matters: empty cells, sparsity) are sampled
  *exactly* by inversion, k = min{k : F(k) >= u}, with the pmf recurrence p(k+1) = p(k) lam/(k+1);
- larger rates use the Cornish-Fisher expansion of the Poisson quantile with continuity correction,
  k = floor(lam + z sqrt(lam) + (z^2 - 1)/6 + (z - z^3)/(72 sqrt(lam)) + 1/2), z the normal quantile
  of u. It reproduces the Poisson mean, variance and skewness; tests/test_poisson.py checks that its CDF
  is within 4e-3 (the Kolmogorov 99 % band for 2x10^5 variates) of the Poisson CDF for rates from 15 to
  2x10^4. Either way the count is a function of u alone, so it is reproducible.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtri

#: Rates below this are sampled exactly by inversion.
SMALL_RATE = 15.0
# Poisson(15) exceeds 52 with probability ~1e-13, below the float32 resolution of u: the loop ends by then.
_MAX_SMALL_COUNT = 56


def poisson(key: jax.Array, lam: jnp.ndarray) -> jnp.ndarray:
    """Poisson variates (float32 counts, the shape of ``lam``) for rates ``lam >= 0``."""
    lam = jnp.asarray(lam, dtype=jnp.float32)
    # Drawn flat and reshaped: the same bits as uniform(key, lam.shape) (the counters are the row-major indices),
    # but XLA CPU (jaxlib 0.10.2) compiles the threefry of a >= 3-d shape about 8x slower (3 s vs 0.4 s of CPU for
    # the simulator's (batch, layers, alpha, r) rates); the simulator compiles this for every batch shape.
    u = jax.random.uniform(key, (lam.size,), dtype=jnp.float32).reshape(lam.shape)
    small = lam < SMALL_RATE
    lam_s = jnp.where(small, lam, 0.0)

    def cond(state):
        k, cdf, pmf = state
        return jnp.any(small & (cdf < u) & (pmf > 0)) & (jnp.max(k) < _MAX_SMALL_COUNT)

    def body(state):
        k, cdf, pmf = state
        move = small & (cdf < u) & (pmf > 0)  # pmf underflow: float32 cannot resolve further
        new_pmf = pmf * lam_s / (k + 1.0)
        return jnp.where(move, k + 1.0, k), jnp.where(move, cdf + new_pmf, cdf), jnp.where(move, new_pmf, pmf)

    p0 = jnp.exp(-lam_s)
    k_small = jax.lax.while_loop(cond, body, (jnp.zeros_like(lam), p0, p0))[0]
    z = ndtri(jnp.clip(u, 1e-7, 1.0 - 1e-7))
    lam_l = jnp.where(small, SMALL_RATE, lam)
    sq = jnp.sqrt(lam_l)
    quantile = lam_l + sq * z + (z * z - 1.0) / 6.0 + (z - z * z * z) / (72.0 * sq)
    k_large = jnp.maximum(jnp.floor(quantile + 0.5), 0.0)
    return jnp.where(small, k_small, k_large)
