"""The fast Poisson sampler used for spot counts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from surrinf.sim.poisson import SMALL_RATE, poisson

N = 200_000


def _sample(lam: float, seed: int = 0) -> np.ndarray:
    return np.asarray(jax.jit(poisson)(jax.random.key(seed), jnp.full((N,), lam)))


@pytest.mark.parametrize("lam", [0.02, 0.7, 3.0, 8.0, 14.9])
def test_small_rates_are_exact(lam):
    x = _sample(lam)
    ks = np.arange(0, x.max() + 1)
    obs = np.bincount(x.astype(int), minlength=ks.size)
    exp = stats.poisson.pmf(ks, lam) * N
    good = exp >= 5
    # pool the rest into one bin; chi2 with ndf = bins - 1; p > 1e-3 for a correct sampler at this seed
    o = np.append(obs[good], obs[~good].sum())
    e = np.append(exp[good], N - exp[good].sum())
    keep = e > 0
    chi2 = ((o[keep] - e[keep]) ** 2 / e[keep]).sum()
    assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-3, chi2


@pytest.mark.parametrize("lam", [SMALL_RATE, 40.0, 500.0, 2.0e4])
def test_large_rates_match_poisson(lam):
    x = _sample(lam, seed=1)
    ks = np.arange(x.min(), x.max() + 1)
    emp = np.searchsorted(np.sort(x), ks, side="right") / N
    d_max = np.abs(emp - stats.poisson.cdf(ks, lam)).max()
    # Kolmogorov statistic of a correct sampler: ~0.87/sqrt(N) = 2e-3 at 50 %, 1.63/sqrt(N) = 3.6e-3 at 99 %
    assert d_max < 4e-3
    # moments: standard errors of mean/lam and var/lam are sqrt(1/(lam N)) and sqrt(2/N) = 0.3 %
    assert abs(x.mean() / lam - 1) < 5 * np.sqrt(1 / (lam * N))
    assert abs(x.var() / lam - 1) < 0.015


def test_zero_rate_shapes_and_determinism():
    lam = jnp.array([[0.0, 1.0], [100.0, 0.0]])
    a = poisson(jax.random.key(3), lam)
    b = poisson(jax.random.key(3), lam)
    assert a.shape == (2, 2) and a.dtype == jnp.float32
    assert a[0, 0] == 0 and a[1, 1] == 0
    assert np.array_equal(np.asarray(a), np.asarray(b))
