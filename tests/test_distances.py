"""Energy distance test, Frechet physics distance and kernel physics distance on samples with known answers."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from surrinf.validation import distances
from surrinf.validation.distances import (
    DistanceResult,
    EnergyDistanceResult,
    energy_distance_test,
    fpd,
    frechet_distance,
    gaussian_frechet_distance,
    kpd,
)


def _normal(key: jax.Array, shape: tuple[int, ...]) -> np.ndarray:
    return np.array(jax.random.normal(key, shape), dtype=np.float64)


def _brute_energy(x: np.ndarray, y: np.ndarray, standardize: bool) -> float:
    """U-statistic energy distance by explicit pair loops (pooled ddof=0 standardisation)."""
    z = np.concatenate([x, y])
    if standardize:
        z = (z - z.mean(axis=0)) / z.std(axis=0)
    x, y = z[: len(x)], z[len(x) :]
    n, m = len(x), len(y)
    dist = lambda a, b: math.sqrt(float(((a - b) ** 2).sum()))
    xy = sum(dist(a, b) for a in x for b in y) / (n * m)
    xx = sum(dist(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(dist(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    return 2 * xy - xx - yy


def _brute_mmd2(x: np.ndarray, y: np.ndarray, degree: int) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b/F + 1)^degree by explicit double loops."""
    f = x.shape[1]
    k = lambda a, b: (float(a @ b) / f + 1.0) ** degree
    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(a, b) for a in x for b in y) / (n * m)
    return xx + yy - 2 * xy


# ---------------------------------------------------------------------------------------------------------------
# energy distance


@pytest.mark.parametrize("standardize", [True, False])
def test_energy_statistic_matches_brute_force(standardize):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 3)) * [1.0, 3.0, 0.5] + 10.0
    y = rng.normal(size=(5, 3)) * [2.0, 1.0, 1.0] + [10.5, 9.0, 10.0]
    res = energy_distance_test(jax.random.key(0), x, y, n_permutations=20, standardize=standardize)
    assert res.statistic == pytest.approx(_brute_energy(x, y, standardize), rel=1e-10, abs=1e-12)
    assert (res.n_x, res.n_y, res.n_permutations) == (7, 5, 20)
    # 1-D input is N samples of one feature
    r1 = energy_distance_test(jax.random.key(0), x[:, 0], y[:, 0], n_permutations=20, standardize=standardize)
    assert r1.statistic == pytest.approx(_brute_energy(x[:, :1], y[:, :1], standardize), rel=1e-10, abs=1e-12)


def test_energy_statistic_symmetric_and_deterministic():
    k1, k2, k3 = jax.random.split(jax.random.key(3), 3)
    x, y = _normal(k1, (60, 4)), 1.5 * _normal(k2, (90, 4)) + 0.3
    a = energy_distance_test(k3, x, y, n_permutations=99)
    b = energy_distance_test(k3, y, x, n_permutations=99)
    assert a.statistic == pytest.approx(b.statistic, rel=1e-10)
    assert a == energy_distance_test(k3, x, y, n_permutations=99)  # same key -> same bits
    other = energy_distance_test(jax.random.key(4), x, y, n_permutations=99)
    assert other.statistic == a.statistic and other.null_mean != a.null_mean  # no subsampling: only the null moves


def test_energy_null_p_values_roughly_uniform():
    # Under H0 a permutation p-value is (super-)uniform: P(p < 0.05) = 9/200 for B = 199. For 20 independent
    # pairs the count of p < 0.05 is Binomial(20, 0.045): P(count >= 5) ~ 0.2 %, so allowing at most 4 is a loose
    # check that still catches a badly anti-conservative test. The mean of 20 uniform p-values has sd 0.065.
    p_values = []
    for i in range(20):
        kx, ky, kp = jax.random.split(jax.random.fold_in(jax.random.key(10), i), 3)
        res = energy_distance_test(kp, _normal(kx, (150, 5)), _normal(ky, (150, 5)), n_permutations=199)
        p_values.append(res.p_value)
        # the permutation mean of the U-statistic is exactly 0 (U-centred matrix): compare to its sampling error
        assert abs(res.null_mean) < 4 * res.null_std / math.sqrt(199)
    p_values = np.array(p_values)
    assert np.count_nonzero(p_values < 0.05) <= 4
    assert 0.3 < p_values.mean() < 0.7
    assert np.all((p_values >= 1 / 200) & (p_values <= 1))


def test_energy_detects_small_mean_shift():
    kx, ky, kp = jax.random.split(jax.random.key(20), 3)
    x, y = _normal(kx, (2000, 5)), _normal(ky, (2000, 5))
    y[:, 0] += 0.2
    res = energy_distance_test(kp, x, y, n_permutations=199)
    assert res.p_value < 0.01
    assert res.statistic > 4 * res.null_std


def test_energy_subsampling_and_float32_permutations():
    kx, ky, kp = jax.random.split(jax.random.key(30), 3)
    x, y = 10 * _normal(kx, (700, 20)) + 100.0, 10 * _normal(ky, (500, 20)) + 100.0
    res = energy_distance_test(kp, x, y, n_permutations=50, max_samples=400)
    assert (res.n_x, res.n_y) == (400, 400)
    # the float32 permutation kernel agrees with a float64 evaluation of the same relabellings
    z = np.concatenate([x[:300], y[:300]])
    c = distances._u_center_inplace(distances._pairwise_distances(z))
    keys = jax.random.split(jax.random.key(31), 40)
    q32 = np.asarray(distances._permuted_quadratic_forms(jnp.asarray(c, jnp.float32), keys, 300, 16))
    labels = np.stack([np.asarray(jax.random.permutation(k, 600) < 300, dtype=np.float64) for k in keys])
    q64 = np.einsum("bi,ij,bj->b", labels, c, labels)
    assert np.max(np.abs(q32 - q64)) < 1e-4 * np.std(q64)


# ---------------------------------------------------------------------------------------------------------------
# Frechet distance


def test_trace_sqrt_matches_2x2_closed_form_and_sqrtm():
    # for 2x2 A with positive eigenvalues, Tr sqrt(A) = sqrt(Tr A + 2 sqrt(det A))
    s1 = np.array([[2.0, 0.6], [0.6, 1.0]])
    s2 = np.array([[0.5, -0.3], [-0.3, 1.5]])  # does not commute with s1
    p = s1 @ s2
    tr_sqrt = math.sqrt(np.trace(p) + 2 * math.sqrt(np.linalg.det(p)))
    assert distances._trace_sqrt_product(s1, s2) == pytest.approx(tr_sqrt, rel=1e-12)
    assert tr_sqrt == pytest.approx(np.trace(scipy.linalg.sqrtm(p)).real, rel=1e-10)
    mu1, mu2 = np.array([0.0, 1.0]), np.array([0.5, -1.0])
    expected = 0.25 + 4.0 + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert gaussian_frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-12)
    assert gaussian_frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-12)
    # singular (PSD) covariances are fine; 1-D: (mu1 - mu2)^2 + (sigma1 - sigma2)^2
    assert gaussian_frechet_distance(mu1, np.diag([1.0, 0.0]), mu1, np.diag([4.0, 0.0])) == pytest.approx(1.0)
    assert gaussian_frechet_distance(1.0, 4.0, 0.0, 1.0) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="shapes"):
        gaussian_frechet_distance(mu1, s1, mu2, np.eye(3))


def test_fpd_matches_closed_form_for_gaussians():
    mu1, mu2 = np.array([0.0, 0.0, 0.0]), np.array([0.3, -0.2, 0.1])
    s1 = np.array([[1.0, 0.3, 0.0], [0.3, 2.0, 0.4], [0.0, 0.4, 0.5]])
    s2 = np.array([[1.5, -0.2, 0.1], [-0.2, 1.0, 0.0], [0.1, 0.0, 0.8]])
    kx, ky, kb = jax.random.split(jax.random.key(40), 3)
    x = mu1 + _normal(kx, (100_000, 3)) @ np.linalg.cholesky(s1).T
    y = mu2 + _normal(ky, (100_000, 3)) @ np.linalg.cholesky(s2).T
    truth = gaussian_frechet_distance(mu1, s1, mu2, s2)
    res = fpd(kb, x, y, n_bootstrap=30, standardize=False)
    assert res.value == pytest.approx(frechet_distance(x, y))
    assert abs(res.value - truth) < 4 * res.error  # bias ~ F^2/N ~ 1e-4 is far below the sampling error
    assert res.error < 0.05 * truth


def test_fpd_identical_distributions_near_zero_and_shift_detected():
    kx, ky, kb = jax.random.split(jax.random.key(50), 3)
    x, y = 3.0 * _normal(kx, (20_000, 5)) + 7.0, 3.0 * _normal(ky, (20_000, 5)) + 7.0
    same = fpd(kb, x, y)
    # the estimator is positive with a finite-sample bias of order F^2/(2N) ~ 1e-3, about 2 bootstrap errors here
    assert 0 <= same.value < 4 * same.error and same.value < 5e-3
    shifted = fpd(kb, x, y + 0.3 * 3.0)  # 0.3 sigma in each of 5 features: FPD ~ 5 * 0.09 = 0.45
    assert shifted.value == pytest.approx(0.45, rel=0.1) and shifted.value > 20 * shifted.error
    assert fpd(kb, x, y) == same


# ---------------------------------------------------------------------------------------------------------------
# kernel physics distance


@pytest.mark.parametrize(("degree", "standardize"), [(3, True), (2, False), (4, True)])
def test_kpd_batch_estimator_matches_double_loop(degree, standardize):
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(6, 3)) * [1.0, 2.0, 0.5], rng.normal(size=(6, 3)) + 0.4
    # batch_size = N = M: the single batch is a permutation of the full samples, and MMD^2 is order-free
    res = kpd(jax.random.key(0), x, y, batch_size=100, n_batches=1, degree=degree, standardize=standardize)
    if standardize:
        mean, std = x.mean(axis=0), x.std(axis=0)
        x, y = (x - mean) / std, (y - mean) / std
    assert res.value == pytest.approx(_brute_mmd2(x, y, degree), rel=1e-5, abs=1e-6)
    assert res.error == 0.0


def test_kpd_same_distribution_near_zero_and_shift_clearly_positive():
    kx, ky, kb = jax.random.split(jax.random.key(60), 3)
    x, y = _normal(kx, (6000, 10)), _normal(ky, (6000, 10))
    same = kpd(kb, x, y, batch_size=2000, n_batches=10)
    assert abs(same.value) < 3 * same.error
    shifted = kpd(kb, x, y + 0.2, batch_size=2000, n_batches=10)
    assert shifted.value > 10 * shifted.error and shifted.value > 20 * same.error
    assert kpd(kb, x, y, batch_size=2000, n_batches=10) == same


# ---------------------------------------------------------------------------------------------------------------
# results and bad inputs


def test_result_dicts():
    e = EnergyDistanceResult(0.1, 0.02, 10, 12, 99, 0.0, 0.05)
    assert e.to_dict() == {
        "statistic": 0.1,
        "p_value": 0.02,
        "n_x": 10,
        "n_y": 12,
        "n_permutations": 99,
        "null_mean": 0.0,
        "null_std": 0.05,
    }
    d = DistanceResult(np.float32(0.5), 0.25)
    assert d.to_dict() == {"value": 0.5, "error": 0.25} and type(d.value) is float
    assert str(d.to_measurement()) == "0.50 ± 0.25"
    with pytest.raises(AttributeError):
        d.value = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, y: energy_distance_test(jax.random.key(0), x, y, n_permutations=10),
        lambda x, y: fpd(jax.random.key(0), x, y, n_bootstrap=5),
        lambda x, y: kpd(jax.random.key(0), x, y, batch_size=10, n_batches=2),
        frechet_distance,
    ],
)
def test_bad_inputs_raise(fn):
    good = np.ones((20, 3)) + np.arange(60).reshape(20, 3) % 7
    with pytest.raises(ValueError, match="x and y"):
        fn(good, good[:, :2])
    bad = good.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"^y contains non-finite"):
        fn(good, bad)
    with pytest.raises(ValueError, match=r"^x must have at least 2 rows"):
        fn(good[:1], good)
    with pytest.raises(ValueError, match=r"^x must have shape"):
        fn(good[None], good)
    with pytest.raises(ValueError, match=r"^y must be a real numeric array"):
        fn(good, np.array([["a", "b", "c"]] * 20))


def test_bad_parameters_raise():
    x = np.arange(40.0).reshape(20, 2)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="n_permutations"):
        energy_distance_test(key, x, x, n_permutations=1)
    with pytest.raises(ValueError, match="max_samples"):
        energy_distance_test(key, x, x, max_samples=1)
    with pytest.raises(ValueError, match="n_bootstrap"):
        fpd(key, x, x, n_bootstrap=1)
    with pytest.raises(ValueError, match="batch_size"):
        kpd(key, x, x, batch_size=1)
    with pytest.raises(ValueError, match="degree"):
        kpd(key, x, x, degree=2.5)
