"""RooUnfold standard example and the surrogate-bias study (bias_study, scan), with a local GLS reference method."""

from __future__ import annotations

import functools
import itertools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from surrinf.report import save_figure
from surrinf.unfolding.bias import BiasScan, BiasStudy, bias_study, scan
from surrinf.unfolding.examples import roounfold_example, smear
from surrinf.unfolding.response import ResponseMatrix
from surrinf.unfolding.result import UnfoldingResult, float64, poisson_toys

N_TOYS = 1000
TOY_KEY = jax.random.key(11)
COARSE = np.linspace(0.0, 10.0, 6)  # 5 truth bins (width 2) ...
FINE = np.linspace(0.0, 10.0, 11)  # ... and 10 reco bins (width 1): overdetermined, well conditioned


@float64
def gls(data, response: ResponseMatrix, *, data_cov=None, strength: float = 0.0) -> UnfoldingResult:
    """Local reference method: t = A d with A = (P^T W P + strength I)^-1 P^T W, W = diag(1 / V), V = ``data_cov``
    (n_reco,) variances or diag(data) floored at 1; statistical covariance A diag(V) A^T. Linear in the data when
    ``data_cov`` is given. No fakes (the test responses have none)."""
    p = jnp.asarray(response.probabilities)
    var = jnp.maximum(data, 1.0) if data_cov is None else jnp.asarray(data_cov)
    pw = p.T / var
    a = jnp.linalg.solve(pw @ p + strength * jnp.eye(p.shape[1]), pw)
    cov = (a * var) @ a.T
    return UnfoldingResult(a @ data, cov, jnp.zeros_like(cov), "gls")


def gls_matrix(response: ResponseMatrix, var: np.ndarray) -> np.ndarray:
    """(n_truth, n_reco) the GLS unfolding matrix A (numpy, for the analytic prediction)."""
    p = response.probabilities
    pw = p.T / var
    return np.linalg.solve(pw @ p, pw)


@pytest.fixture(scope="module")
def example():
    return roounfold_example(jax.random.key(7))


@pytest.fixture(scope="module")
def problem(example):
    """(R_ref, R_sur, truth, mu) on 5 truth x 10 reco bins. R_ref: the example's training sample; R_sur: the same
    training truth through smear() with the shift -0.7 instead of -1 (0.3 reco bins); truth: the test histogram."""
    truth_values = example.train_truth_values
    r_ref = ResponseMatrix.from_events(truth_values, example.train_reco_values, COARSE, FINE)
    reco_sur = smear(jax.random.key(8), truth_values, shift=-0.7)
    r_sur = ResponseMatrix.from_events(truth_values, reco_sur, COARSE, FINE)
    truth = np.histogram(example.test_truth_values, COARSE)[0].astype(float)
    return r_ref, r_sur, truth, r_ref.fold(truth)


@pytest.fixture(scope="module")
def perturbed(problem) -> BiasStudy:
    r_ref, r_sur, truth, mu = problem
    method = functools.partial(gls, data_cov=mu)
    return bias_study(TOY_KEY, method, r_ref, r_sur, truth, n_toys=N_TOYS, label="shift -0.7")


def expected_efficiency(edges: np.ndarray) -> np.ndarray:
    """Bin-averaged eps(x) P(0 <= x - 1 + N(0, 0.5) < 10), eps = 0.5 + 0.04 x (midpoint rule, 400 points a bin)."""
    out = []
    for lo, hi in itertools.pairwise(edges):
        x = lo + (np.arange(400) + 0.5) * (hi - lo) / 400
        accept = norm.cdf((10.0 - (x - 1.0)) / 0.5) - norm.cdf((0.0 - (x - 1.0)) / 0.5)
        out.append(np.mean((0.5 + 0.04 * x) * accept))
    return np.array(out)


# ---------------------------------------------------------------------- the RooUnfold example
def test_example_sizes_efficiency_shift_and_shape(example):
    ex, r = example, example.response
    assert ex.train_truth_values.shape == ex.train_reco_values.shape == (100_000,)
    assert ex.test_truth_values.shape == ex.test_reco_values.shape == (10_000,)
    assert r.migrations.shape == (40, 40) and np.array_equal(ex.edges, np.linspace(0, 10, 41))
    assert r.truth_counts.sum() == 100_000 and ex.test_truth.sum() == 10_000  # every event generated inside [0, 10]
    finite = np.isfinite(ex.test_reco_values)
    assert np.all((ex.test_reco_values[finite] >= 0) & (ex.test_reco_values[finite] < 10))  # lost -> NaN
    assert np.array_equal(ex.test_data, np.histogram(ex.test_reco_values[finite], ex.edges)[0])
    assert np.array_equal(r.migrations.sum(axis=0) > 0, np.ones(40, bool))

    # efficiency 0.5 -> 0.9 (times the acceptance of reco in [0, 10), which matters below x ~ 2.5 only), every bin
    # within 4 binomial standard deviations sqrt(eps (1 - eps) / n) (n ~ 2500 per bin: sd ~ 0.01)
    want = expected_efficiency(ex.edges)
    sd = np.sqrt(want * (1 - want) / r.truth_counts)
    assert np.all(np.abs(r.efficiency - want) < 4 * sd), np.max(np.abs(r.efficiency - want) / sd)
    interior = (ex.edges[:-1] >= 2.5) & (ex.edges[1:] <= 8.5)
    assert np.allclose(want[interior], 0.5 + 0.04 * r.truth_centers[interior], atol=2e-3)  # acceptance ~ 1 there
    assert r.efficiency[-1] > 0.85 and r.efficiency[10] < 0.65  # rising

    # migration: reco - truth ~ N(-1, 0.5) for reconstructed training events with truth in [2.5, 8.5), where the
    # acceptance cut is >= 3 sigma away (truncation shift < 1e-4); mean within 3 standard errors (~0.0024),
    # sd within 3 standard errors sd / sqrt(2 n)
    t, reco = ex.train_truth_values, ex.train_reco_values
    sel = np.isfinite(reco) & (t >= 2.5) & (t < 8.5)
    d = reco[sel] - t[sel]
    assert abs(d.mean() + 1.0) < 3 * d.std() / math.sqrt(d.size)
    assert abs(d.std() - 0.5) < 3 * 0.5 / math.sqrt(2 * d.size)

    # double-peaked truth: the maxima of each half sit in the two bins next to 3.0 and 7.0 (expected ~800 and ~1000
    # events there, ~550 one bin further out; Poisson sd < 35) and the valley at 5 is far lower
    h = ex.test_truth
    assert int(np.argmax(h[:20])) in (11, 12) and 20 + int(np.argmax(h[20:])) in (27, 28)
    assert h[19:21].max() < 0.25 * min(h[11:13].max(), h[27:29].max())
    assert np.all(np.isfinite(ex.test_truth_values))


def test_example_same_key_same_bits_and_one_smearing(example):
    again = roounfold_example(jax.random.key(7))
    for name in ("train_truth_values", "train_reco_values", "test_truth_values", "test_reco_values"):
        assert np.array_equal(getattr(again, name), getattr(example, name), equal_nan=True), name
    assert np.array_equal(again.response.migrations, example.response.migrations)
    other = roounfold_example(jax.random.key(6))
    assert not np.array_equal(other.test_truth_values, example.test_truth_values)
    # the public smear() is the function behind the training sample (same sub-key -> same draws, to rounding)
    reco = smear(jax.random.split(jax.random.key(7), 4)[1], example.train_truth_values)
    assert np.array_equal(np.isnan(reco), np.isnan(example.train_reco_values))
    assert np.allclose(reco, example.train_reco_values, rtol=0, atol=1e-12, equal_nan=True)


def test_example_validation():
    with pytest.raises(ValueError, match="n_train"):
        roounfold_example(jax.random.key(0), n_train=0)
    with pytest.raises(ValueError, match="low and high"):
        roounfold_example(jax.random.key(0), low=1.0, high=1.0)
    with pytest.raises(ValueError, match="sigma"):
        smear(jax.random.key(0), [1.0], sigma=-1.0)


# ---------------------------------------------------------------------- bias study
def test_bias_study_closure_is_unbiased_and_covers(problem):
    r_ref, _, truth, mu = problem
    study = bias_study(TOY_KEY, functools.partial(gls, data_cov=mu), r_ref, r_ref, truth, n_toys=N_TOYS)
    s = study.surrogate
    assert study.method == "gls" and study.toys.shape == (N_TOYS, 10) and np.allclose(study.expected, mu)
    assert np.array_equal(s.unfolded, study.closure.unfolded)  # R_sur == R_ref: same toys, same answers
    # a linear unbiased estimator: mean pull 0 within 4 standard errors (~0.03 each) in every bin
    assert np.all(np.abs(s.mean_pull) < 4 * s.mean_pull_error), s.mean_pull / s.mean_pull_error
    assert np.all(np.abs(s.bias) < 4 * s.bias_error)
    # the reported sigma is exact here (A diag(mu) A^T) and matches the toy spread: sd of a sample sd ~ sd/sqrt(2n)
    assert np.allclose(s.toy_sd, s.stat_sigma, rtol=4 / math.sqrt(2 * N_TOYS))
    # coverage of +-z sigma at 68%: binomial error sqrt(0.68 * 0.32 / 1000) = 0.015, 4 of them
    assert np.all(np.abs(s.coverage - 0.68) < 4 * s.coverage_error), s.coverage
    assert np.allclose(study.systematic(), 0.0)


def test_bias_study_detects_a_shifted_surrogate(problem, perturbed):
    _, r_sur, truth, mu = problem
    s, c = perturbed.surrogate, perturbed.closure
    # a 0.3-bin shift of the smearing biases the unfolded spectrum by many sigma
    assert np.max(np.abs(s.bias_over_sigma)) > 5, s.bias_over_sigma
    # GLS with fixed weights is linear: E[t_hat] = A_sur mu, so the bias is A_sur mu - truth exactly; the measured
    # bias agrees within 4 toy standard errors per bin
    predicted = gls_matrix(r_sur, mu) @ mu - truth
    assert np.all(np.abs(s.bias - predicted) < 4 * s.bias_error), (s.bias - predicted) / s.bias_error
    # the closure (R_ref) is unbiased; the surrogate-induced systematic is the predicted bias, within its paired error
    assert np.all(np.abs(c.bias) < 4 * c.bias_error)
    assert np.all(np.abs(perturbed.systematic() - np.abs(predicted)) < 4 * perturbed.surrogate_bias_error)
    # coverage collapses in the bins with |bias| >> sigma
    far = np.abs(predicted) > 3 * s.stat_sigma
    assert far.sum() >= 2 and np.all(s.coverage[far] < 0.2)


def test_bias_study_table_and_figure(perturbed, tmp_path):
    table = perturbed.table()
    expected = ["bin", "low", "high", "truth", "unfolded mean", "bias", "stat sigma", "toy sd", "bias/sigma"]
    assert table.columns[: len(expected)] == expected
    for name in ("coverage 68%", "closure bias", "closure bias/sigma", "closure coverage 68%", "systematic"):
        assert name in table.columns
    assert len(table.rows) == 5 and table.column("truth") == [float(x) for x in perturbed.truth]
    assert table.column("bias/sigma") == [float(x) for x in perturbed.surrogate.bias_over_sigma]
    paths = table.save(tmp_path, "bias")
    md, csv, tex = (paths[f].read_text() for f in ("md", "csv", "tex"))
    assert "| bin |" in md and "shift -0.7" in md
    assert csv.splitlines()[0].startswith("bin,low,high,truth,unfolded mean,bias,bias_err,stat sigma")
    assert len(csv.splitlines()) == 6
    assert r"\begin{tabular}" in tex and r"\toprule" in tex
    assert json.loads(paths["json"].read_text())["columns"] == table.columns
    png = save_figure(perturbed.figure(), tmp_path / "bias.png")
    assert png.exists() and png.stat().st_size > 10_000


def test_bias_study_validation(problem):
    r_ref, _, truth, _ = problem
    other = ResponseMatrix(np.eye(3), np.ones(3))
    with pytest.raises(ValueError, match="truth must have shape"):
        bias_study(TOY_KEY, gls, r_ref, r_ref, truth[:-1])
    with pytest.raises(ValueError, match="same binning"):
        bias_study(TOY_KEY, gls, r_ref, other, truth)
    with pytest.raises(ValueError, match="level"):
        bias_study(TOY_KEY, gls, r_ref, r_ref, truth, level=1.0)
    with pytest.raises(ValueError, match="fakes_ref"):
        bias_study(TOY_KEY, gls, r_ref, r_ref, truth, fakes_ref=np.ones(3))


# ---------------------------------------------------------------------- scan
def test_scan_common_random_numbers(problem, perturbed, tmp_path):
    r_ref, r_sur, truth, mu = problem
    values = [0.0, 3e-4]  # ridge strength, in units of P^T W P (entries ~ 1e-4 .. 1e-3)
    result = scan(
        TOY_KEY,
        lambda v: functools.partial(gls, data_cov=mu, strength=v),
        values,
        r_ref,
        r_sur,
        truth,
        n_toys=N_TOYS,
        parameter="strength",
    )
    assert isinstance(result, BiasScan) and result.values == tuple(values) and len(result.studies) == 2
    toys = np.asarray(poisson_toys(TOY_KEY, mu, N_TOYS))
    for study in result.studies:  # common random numbers: the toys of bias_study(TOY_KEY, ...) for every value
        assert np.array_equal(study.toys, toys)
    assert np.array_equal(perturbed.toys, toys)
    # strength 0 is the unregularised GLS of the perturbed study, bit for bit
    assert np.array_equal(result.studies[0].surrogate.unfolded, perturbed.surrogate.unfolded)
    assert np.array_equal(result.studies[0].closure.unfolded, perturbed.closure.unfolded)
    # regularisation lowers the variance (ridge: (M + l)^-1 M (M + l)^-1 < M^-1) and adds a closure bias
    assert result.mean_variance[1] < result.mean_variance[0]
    assert result.closure_mean_abs_bias_over_sigma[1] > result.closure_mean_abs_bias_over_sigma[0]
    table = result.table()
    assert table.columns[0] == "strength" and len(table.rows) == 2
    assert table.column("strength") == values
    assert table.column("mean variance") == [float(v) for v in result.mean_variance]
    paths = table.save(tmp_path, "scan", formats=("md", "csv"))
    assert len(paths["csv"].read_text().splitlines()) == 3
    png = save_figure(result.figure(), tmp_path / "scan.png")
    assert png.exists() and png.stat().st_size > 10_000
