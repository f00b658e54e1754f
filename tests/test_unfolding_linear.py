"""Linear unfolding: GLS inversion, Tikhonov (with L-curve / global-correlation scans), truncated SVD, bin-by-bin."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import toy_map
from matplotlib.figure import Figure
from scipy.stats import norm

from surrinf.unfolding.binbybin import bin_by_bin
from surrinf.unfolding.inversion import gls_unfold, invert
from surrinf.unfolding.response import ResponseMatrix
from surrinf.unfolding.result import poisson_toys
from surrinf.unfolding.tikhonov import (
    _parametric_curvature,
    curvature_matrix,
    lcurve,
    min_global_correlation,
    plot_lcurve,
    svd_unfold,
    tikhonov,
)

N_TRUTH, N_RECO = 10, 14
TRUTH_EDGES = np.linspace(0.0, 10.0, N_TRUTH + 1)
RECO_EDGES = np.linspace(-1.0, 11.0, N_RECO + 1)
CENTERS = 0.5 * (TRUTH_EDGES[1:] + TRUTH_EDGES[:-1])
EFF = np.linspace(0.5, 0.9, N_TRUTH)
T_TRUE = 8000.0 * np.exp(-CENTERS / 5.0)  # events per truth bin, 4900 .. 1000


def smearing(truth_edges: np.ndarray, reco_edges: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """P[j, i]: Gaussian smearing (sigma [x units] ~ one truth bin) of the bin centre times the efficiency."""
    c = 0.5 * (truth_edges[1:] + truth_edges[:-1])
    eff = np.linspace(0.5, 0.9, c.size)
    return eff * (norm.cdf((reco_edges[1:, None] - c) / sigma) - norm.cdf((reco_edges[:-1, None] - c) / sigma))


P = smearing(TRUTH_EDGES, RECO_EDGES)
FAKES = np.full(N_RECO, 0.05 * (P @ T_TRUE).mean())  # expected fakes per reco bin in the data [events]
EXPECTED = P @ T_TRUE + FAKES
MC_SCALE = 20.0  # simulation 20x the data, same truth shape, so response.fake_fraction = FAKES / EXPECTED exactly
RESPONSE = ResponseMatrix(P * MC_SCALE * T_TRUE, MC_SCALE * T_TRUE, MC_SCALE * FAKES, TRUTH_EDGES, RECO_EDGES)
STRENGTHS = np.logspace(-9.0, 1.0, 41)


def _diag_errors(cov) -> np.ndarray:
    return np.sqrt(np.diagonal(np.asarray(cov), axis1=-2, axis2=-1))


def _sample_cov_close(samples: np.ndarray, cov: np.ndarray) -> float:
    """Max |sample cov - cov| / sqrt(cov_ii cov_jj) over all entries."""
    s = np.sqrt(np.diag(cov))
    return float(np.max(np.abs(np.cov(samples, rowvar=False) - cov) / np.outer(s, s)))


@pytest.fixture(scope="module")
def toys() -> jax.Array:
    return poisson_toys(jax.random.key(0), EXPECTED, 4000)


# ---------------------------------------------------------------------------------------------- 1. inversion closure
def test_inversion_closure_pulls(toys):
    """ACCEPTANCE: 4000 Poisson toys around P t + fakes (10 truth x 14 reco, smearing ~ 1 bin, efficiency 0.5..0.9,
    5 % fakes subtracted with the simulated fake fraction), V from each toy's observed counts."""
    with jax.enable_x64(True):
        res = toy_map(lambda d: invert(d, RESPONSE))(toys)
    pull = (np.asarray(res.unfolded) - T_TRUE) / _diag_errors(res.covariance)
    # expected spread: pull mean 1/sqrt(4000) = 0.016, pull width 1/sqrt(2 * 4000) = 0.011, so the +-0.1 bounds are
    # ~6 sigma (9 sigma for the width) beyond the statistical scatter; the bias from V = observed counts is ~0.03 here
    assert np.all(np.abs(pull.mean(axis=0)) < 0.1), pull.mean(axis=0)
    assert np.all(np.abs(pull.std(axis=0) - 1.0) < 0.1), pull.std(axis=0)
    assert res.method == "inversion"


# ---------------------------------------------------------------------------------------------- 2. Tikhonov
def _analytic_tikhonov(strength: float, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Independent numpy reference with V = expected counts: (A P t_true - t_true, A V_s A^T)."""
    scale = 1.0 - FAKES / EXPECTED
    w = np.diag(1.0 / (scale**2 * EXPECTED))
    a = np.linalg.solve(P.T @ w @ P + strength * c.T @ c, P.T @ w)
    return a @ P @ T_TRUE - T_TRUE, a @ np.diag(scale**2 * EXPECTED) @ a.T


def test_tikhonov_zero_strength_is_inversion(toys):
    d = toys[1]
    inv = invert(d, RESPONSE)
    tk = tikhonov(d, RESPONSE, strength=0.0, reference=T_TRUE)
    np.testing.assert_allclose(tk.unfolded, inv.unfolded, rtol=1e-9)
    np.testing.assert_allclose(tk.covariance, inv.covariance, rtol=1e-8)
    np.testing.assert_allclose(tk.response_covariance, inv.response_covariance, rtol=1e-6, atol=1e-6)
    # a strength far below the scale of P^T V^-1 P / ||C||^2 (~1e-7 here) changes t by < 1e-3 sigma
    tiny = tikhonov(d, RESPONSE, strength=1e-13, reference=T_TRUE)
    assert np.all(np.abs(np.asarray(tiny.unfolded - inv.unfolded)) < 1e-3 * _diag_errors(inv.covariance))


def test_tikhonov_bias_and_covariance_match_toys(toys):
    strengths = jnp.array([1e-5, 1e-4])
    c = curvature_matrix(N_TRUTH, "second")
    with jax.enable_x64(True):
        res = toy_map(
            lambda d: jax.vmap(
                lambda s: tikhonov(d, RESPONSE, strength=s, data_cov=EXPECTED, propagate_response=False)
            )(strengths)
        )(toys)
    t = np.asarray(res.unfolded)  # (4000, 2, 10)
    for k, s in enumerate(np.asarray(strengths)):
        bias, cov = _analytic_tikhonov(float(s), c)
        np.testing.assert_allclose(np.asarray(res.covariance[0, k]), cov, rtol=1e-8)
        # the toy-mean bias scatters by sigma_i / sqrt(4000) around A P t - t: 4.5 sigma bound
        err = _diag_errors(cov) / np.sqrt(t.shape[0])
        assert np.all(np.abs(t[:, k].mean(axis=0) - T_TRUE - bias) < 4.5 * err), (t[:, k].mean(0) - T_TRUE - bias) / err
        # sample covariance: std of a normalised entry <= sqrt(2 / 4000) = 0.022, bound 0.1
        assert _sample_cov_close(t[:, k], cov) < 0.1
    # the bias at 1e-4 is large against the toy-mean error, so the comparison above has something to fail on
    err = _diag_errors(_analytic_tikhonov(1e-4, c)[1]) / np.sqrt(t.shape[0])
    assert np.max(np.abs(t[:, 1].mean(axis=0) - T_TRUE) / err) > 10.0
    # bias grows with the strength (Asimov unfolding = analytic bias, as the estimator is linear for fixed V)
    scan = [1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2]
    norms = []
    for s in scan:
        asimov = tikhonov(EXPECTED, RESPONSE, strength=s)  # Poisson V = diag(EXPECTED) for these data
        bias, cov = _analytic_tikhonov(s, c)
        np.testing.assert_allclose(np.asarray(asimov.unfolded) - T_TRUE, bias, atol=1e-6 * T_TRUE.max())
        norms.append(np.linalg.norm(bias / _diag_errors(cov)))
    assert np.all(np.diff(norms) > 0), norms


def test_strength_choice_is_inside_the_scan(toys):
    d = toys[2]
    lc = lcurve(d, RESPONSE, STRENGTHS)
    assert lc.strengths[1] < lc.best < lc.strengths[-2]
    assert lc.curvature[lc.best_index] == np.nanmax(lc.curvature) > 0
    # residual chi2 rises and the penalty falls with the strength
    assert np.all(np.diff(lc.residual) > -1e-9 * lc.residual[1:]) and lc.residual[-1] > 10 * lc.residual[0]
    assert np.all(np.diff(lc.regularisation) < 0)
    best, rho = min_global_correlation(d, RESPONSE, STRENGTHS)
    i = int(np.flatnonzero(STRENGTHS == best)[0])
    assert 0 < i < STRENGTHS.size - 1
    assert rho[i] < rho[0] - 0.05 and rho[i] < rho[-1] - 0.05, rho
    # sign convention of the curvature: a smooth L (x, y) = (log(1 + e^u), log(1 + e^-u)) turns at u = 0 with +1/sqrt(2)
    u = np.linspace(-6.0, 6.0, 41)
    k = _parametric_curvature(np.log1p(np.exp(u)), np.log1p(np.exp(-u)), u)
    assert np.nanargmax(k) == 20 and abs(k[20] - 2**-0.5) < 0.02  # finite differences, step 0.3: error ~1.5 %
    fig = plot_lcurve(lc)
    assert isinstance(fig, Figure) and len(fig.axes) == 2


# ---------------------------------------------------------------------------------------------- 3. bin-by-bin
def test_bin_by_bin_exact_for_diagonal_response_biased_otherwise():
    edges = np.linspace(0.0, 10.0, N_TRUTH + 1)
    mc_truth = np.full(N_TRUTH, 50_000.0)  # flat simulation, a different shape from T_TRUE
    fakes_mc = np.full(N_TRUTH, 1000.0)
    fake_data = fakes_mc / 20.0
    diagonal = ResponseMatrix(np.diag(EFF * mc_truth), mc_truth, fakes_mc, edges, edges)
    d = EFF * T_TRUE + fake_data
    res = bin_by_bin(d, diagonal, fakes=fake_data)
    np.testing.assert_allclose(res.unfolded, T_TRUE, rtol=1e-12)
    np.testing.assert_allclose(res.covariance, np.diag(d / EFF**2), rtol=1e-12)  # diag(c^2 var(d))
    assert res.method == "bin_by_bin" and not np.any(np.asarray(res.response_covariance))
    # default fakes: factors truth / (signal + fakes) of the simulation; exact when the fake fraction matches
    d_match = EFF * mc_truth / 10 + fakes_mc / 10
    np.testing.assert_allclose(bin_by_bin(d_match, diagonal).unfolded, mc_truth / 10, rtol=1e-12)

    p = smearing(edges, edges)
    smeared = ResponseMatrix(p * mc_truth, mc_truth, None, edges, edges)
    biased = bin_by_bin(p @ T_TRUE, smeared)
    # with migrations and a simulated shape unlike the data, the Asimov result is off by many statistical errors
    assert np.max(np.abs(np.asarray(biased.unfolded) - T_TRUE) / _diag_errors(biased.covariance)) > 5.0
    # ...and exact again when the simulation has the data's truth shape
    same_shape = ResponseMatrix(p * 10 * T_TRUE, 10 * T_TRUE, None, edges, edges)
    np.testing.assert_allclose(bin_by_bin(p @ T_TRUE, same_shape).unfolded, T_TRUE, rtol=1e-12)


# ---------------------------------------------------------------------------------------------- 4. SVD
def test_svd_full_rank_is_inversion_and_filter_factors():
    edges = np.linspace(0.0, 10.0, N_TRUTH + 1)
    p = smearing(edges, edges)
    square = ResponseMatrix(p * 20 * T_TRUE, 20 * T_TRUE, None, edges, edges)
    d = np.round(p @ T_TRUE) + np.arange(N_TRUTH) % 3  # integer counts off the Asimov point
    inv = invert(d, square)
    full = svd_unfold(d, square, k=N_TRUTH)
    np.testing.assert_allclose(full.unfolded, inv.unfolded, rtol=1e-8)
    np.testing.assert_allclose(full.covariance, inv.covariance, rtol=1e-8)
    np.testing.assert_allclose(full.response_covariance, inv.response_covariance, rtol=1e-6)
    np.testing.assert_allclose(inv.unfolded, np.linalg.solve(p, d), rtol=1e-9)  # square GLS = plain inversion
    assert full.method == "svd"
    # truncation trades variance for bias: the total variance falls with k
    traces = [float(np.trace(np.asarray(svd_unfold(d, square, k=k).covariance))) for k in (10, 7, 4)]
    assert traces[0] > traces[1] > traces[2]
    # dropped modes taken from the reference: an Asimov spectrum equal to the reference is returned exactly
    np.testing.assert_allclose(svd_unfold(p @ T_TRUE, square, k=3, reference=T_TRUE).unfolded, T_TRUE, rtol=1e-9)
    # Tikhonov with C = 1 is the SVD expansion with filter factors s_i^2 / (s_i^2 + strength)
    w = 1.0 / np.sqrt(d)
    u, sv, vt = np.linalg.svd(w[:, None] * p)
    strength = 0.3 * sv[3] ** 2
    expected = vt.T @ (sv**2 / (sv**2 + strength) * (u.T @ (w * d)) / sv)
    tk = tikhonov(d, square, strength=strength, curvature=np.eye(N_TRUTH))
    np.testing.assert_allclose(tk.unfolded, expected, rtol=1e-9)


# ---------------------------------------------------------------------------------------------- 5. response errors
@pytest.mark.parametrize("sigma", [1.0, 0.3])
def test_response_propagation_matches_resampled_matrices(toys, sigma):
    """Resample the simulation behind the response: per truth column Poisson counts in the reco bins and in "lost",
    normalised by their realised total N, which given N is exactly one multinomial column of N events (the model of
    ResponseMatrix, N ~ n_eff to 1 / sqrt(n_eff)). Fixed data are unfolded with each resampled matrix. The draws reuse
    the (4000, 14) Poisson sampler of the data toys (compiling another shape costs seconds). sigma: smearing [bins];
    at 0.3 the matrix is nearly diagonal and the efficiency (binomial, the -p p^T term) dominates."""
    p = smearing(TRUTH_EDGES, RECO_EDGES, sigma)
    data = p @ T_TRUE + FAKES
    n_mc = 10.0 * T_TRUE  # simulation 10x the data
    response = ResponseMatrix(p * n_mc, n_mc, 10.0 * FAKES, TRUTH_EDGES, RECO_EDGES)
    nominal = invert(data, response, fakes=FAKES)  # Poisson V = diag(data) for these data
    n_toys = toys.shape[0]
    keys = jax.random.split(jax.random.key(1), N_TRUTH + 1)
    reco = np.stack([np.asarray(poisson_toys(keys[i], p[:, i] * n_mc[i], n_toys)) for i in range(N_TRUTH)], -1)
    lost_mean = np.concatenate([(1.0 - p.sum(axis=0)) * n_mc, np.ones(N_RECO - N_TRUTH)])  # padded to (14,)
    lost = np.asarray(poisson_toys(keys[-1], lost_mean, n_toys))[:, :N_TRUTH]
    p_toys = reco / (reco.sum(axis=1) + lost)[:, None, :]  # (n_toys, n_reco, n_truth)
    with jax.enable_x64(True):
        t = toy_map(lambda pt: gls_unfold(pt, data - FAKES, jnp.diag(data), jnp.asarray(n_mc), False)[0])(
            jnp.asarray(p_toys)
        )
    t = np.asarray(t)
    rcov = np.asarray(nominal.response_covariance)
    np.testing.assert_allclose(nominal.unfolded, T_TRUE, rtol=1e-9)
    # first-order propagation vs the toy spread: normalised entry std <= sqrt(2 / 4000) = 0.022; the bound 0.1 also
    # covers the second-order terms, which grow as the simulation shrinks (sigma = 1: measured max deviation 0.04 /
    # 0.06 / 0.10 / 0.14 for simulations 20 / 10 / 5 / 2x the data, where the unfolded response errors are 5-25 % of t)
    assert _sample_cov_close(t, rcov) < 0.1
    # the toy mean is unbiased to first order: within 4.5 toy-mean errors
    assert np.all(np.abs(t.mean(axis=0) - T_TRUE) < 4.5 * np.sqrt(np.diag(rcov) / n_toys))
    if sigma < 0.5:  # here the test resolves the multinomial anti-correlation (GLS: it is -diag(t^2 / n_eff))
        assert _sample_cov_close(t, rcov + np.diag(T_TRUE**2 / n_mc)) > 0.3


# ---------------------------------------------------------------------------------------------- 6. bad inputs
def test_bad_inputs_name_the_argument():
    d = EXPECTED
    with pytest.raises(ValueError, match="data must have shape"):
        invert(d[:-1], RESPONSE)
    with pytest.raises(ValueError, match="data must be finite"):
        tikhonov(-d, RESPONSE, strength=1.0)
    with pytest.raises(ValueError, match="fakes must have shape"):
        invert(d, RESPONSE, fakes=np.ones(3))
    with pytest.raises(ValueError, match="data_cov must have shape"):
        invert(d, RESPONSE, data_cov=np.ones((3, 3)))
    with pytest.raises(ValueError, match="data_cov variances must be > 0"):
        svd_unfold(d, RESPONSE, k=3, data_cov=np.zeros(N_RECO))
    with pytest.raises(ValueError, match="strength must be finite and >= 0"):
        tikhonov(d, RESPONSE, strength=-1.0)
    with pytest.raises(ValueError, match="curvature must be"):
        tikhonov(d, RESPONSE, strength=1.0, curvature="third")
    with pytest.raises(ValueError, match="curvature array must have shape"):
        tikhonov(d, RESPONSE, strength=1.0, curvature=np.eye(3))
    with pytest.raises(ValueError, match="reference must be finite and > 0"):
        tikhonov(d, RESPONSE, strength=1.0, reference=np.zeros(N_TRUTH))
    with pytest.raises(ValueError, match="k must be an integer"):
        svd_unfold(d, RESPONSE, k=N_TRUTH + 1)
    with pytest.raises(ValueError, match="strengths must be"):
        lcurve(d, RESPONSE, [1.0, 0.1, 0.01])
    with pytest.raises(ValueError, match="response must be square"):
        bin_by_bin(d, RESPONSE)
    with pytest.raises(ValueError, match="response must be a ResponseMatrix"):
        invert(d, P)
    m = P * 1000.0
    m[:, 4] = 0.0  # truth bin 4 never reconstructed: singular response
    singular = ResponseMatrix(m, np.full(N_TRUTH, 1000.0), None, TRUTH_EDGES, RECO_EDGES)
    with pytest.raises(ValueError, match=r"rank 9 < n_truth.*truth bins \[4\]"):
        invert(d, singular)
    with pytest.raises(ValueError, match="rank 9 < n_truth"):
        tikhonov(d, singular, strength=0.0)
    tikhonov(d, singular, strength=1.0)  # the curvature constrains the empty bin: no error
