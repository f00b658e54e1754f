"""Fully Bayesian unfolding (issue 6): closure over Poisson toys, NumPyro vs BlackJAX, regularisation, arviz export.

One small problem (6 truth bins, 8 reco bins, Gaussian smearing of 0.5 truth-bin widths, efficiency 0.85-0.65, 3 %
fakes, an exact response matrix from 1e7 simulated events per truth bin) and two sampler runs shared by all tests
(compilation dominates the cost): one vmapped :func:`fbu_toys` call over 1000 closure toys plus 3 x 16 copies of one
spectrum (alpha = 0, and alpha > 0 with two references: per-toy alpha and reference cost no recompilation), and one
NumPyro :func:`fbu` run on that spectrum.
"""

from __future__ import annotations

import warnings

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import gammaln
from scipy.stats import norm

from surrinf.unfolding.bayesian import BayesianUnfolding, fbu, fbu_toys, log_posterior_z
from surrinf.unfolding.response import ResponseMatrix
from surrinf.unfolding.result import UnfoldingResult, poisson_toys, pulls

N_TRUTH, N_RECO = 6, 8
T_TRUE = 10000.0 * np.exp(-0.3 * np.arange(N_TRUTH))  # events per truth bin: 10000 ... 2231
FAKE_FRACTION = 0.03
N_CLOSURE = 1000
N_COPIES = 16  # independent chains on the one spectrum per setting (alpha = 0, flat and zig-zag reference)
# Regularisation strengths: the penalty alpha/2 ||C (t/ref - 1)||^2 competes with the data's chi^2/2 (1.5-3 %
# precision per bin). Zig-zag reference (curvature 2.1 at the truth): 1e3 is strong. Flat reference (the truth's own
# curvature is only 0.16): 3e4 (a Gaussian approximation predicts the curvature of the mean 0.16 -> ~0.04).
ALPHA_ZIGZAG, ALPHA_FLAT = 1e3, 3e4
ZIGZAG = 1.0 + 0.25 * (-1.0) ** np.arange(N_TRUTH)
TOY_SETTINGS = {"num_warmup": 150, "num_samples": 150}
NUMPYRO_SETTINGS = {"num_warmup": 300, "num_samples": 1000, "num_chains": 4}
N_SIGMA = 5.0


def _response() -> ResponseMatrix:
    truth_edges, reco_edges = np.arange(N_TRUTH + 1.0), np.linspace(-0.5, N_TRUTH + 0.5, N_RECO + 1)
    centres = 0.5 * (truth_edges[1:] + truth_edges[:-1])
    cdf = norm.cdf((reco_edges[:, None] - centres) / 0.5)
    probabilities = np.linspace(0.85, 0.65, N_TRUTH) * np.diff(cdf, axis=0)
    n_mc = 1e7
    migrations = probabilities * n_mc
    fakes = FAKE_FRACTION / (1 - FAKE_FRACTION) * migrations.sum(axis=1)  # 3 % of every simulated reco bin
    return ResponseMatrix(migrations, np.full(N_TRUTH, n_mc), fakes, truth_edges, reco_edges)


def _curvature(t: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(..., ) ||C (t / reference - 1)|| with C the second-difference matrix (what the prior penalises)."""
    return np.linalg.norm(np.diff(t / reference - 1.0, n=2, axis=-1), axis=-1)


@pytest.fixture(scope="module")
def setup() -> dict:
    response = _response()
    expected = response.fold(T_TRUE) / (1 - FAKE_FRACTION)  # fakes = 3 % of the expected reco counts
    toys = np.asarray(poisson_toys(jax.random.key(0), expected, N_CLOSURE))
    return {"response": response, "toys": toys, "spectrum": toys[0]}


@pytest.fixture(scope="module")
def toy_run(setup: dict) -> dict:
    """One fbu_toys call: the closure toys, then N_COPIES copies of the spectrum at alpha = 0, at ALPHA_FLAT with a
    flat reference and at ALPHA_ZIGZAG with the zig-zag reference T_TRUE * ZIGZAG."""
    response, toys, spectrum = setup["response"], setup["toys"], setup["spectrum"]
    flat = np.full(N_TRUTH, T_TRUE.mean())
    batch = np.concatenate([toys, np.tile(spectrum, (3 * N_COPIES, 1))])
    alpha = np.concatenate(
        [np.zeros(N_CLOSURE + N_COPIES), np.full(N_COPIES, ALPHA_FLAT), np.full(N_COPIES, ALPHA_ZIGZAG)]
    )
    reference = np.concatenate([np.tile(flat, (N_CLOSURE + 2 * N_COPIES, 1)), np.tile(T_TRUE * ZIGZAG, (N_COPIES, 1))])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fbu_toys(jax.random.key(1), batch, response, alpha=alpha, reference=reference, **TOY_SETTINGS)
    groups = {}
    for i, name in enumerate(("alpha0", "flat", "zigzag")):
        sl = slice(N_CLOSURE + i * N_COPIES, N_CLOSURE + (i + 1) * N_COPIES)
        groups[name] = (np.asarray(result.unfolded[sl]), np.asarray(result.errors[sl]))
    return {"result": result, "groups": groups, "flat": flat, "warnings": [str(w.message) for w in caught]}


@pytest.fixture(scope="module")
def numpyro_run(setup: dict) -> BayesianUnfolding:
    return fbu(jax.random.key(2), setup["spectrum"], setup["response"], **NUMPYRO_SETTINGS)


# ----------------------------------------------------------------------------------------------- closure


def test_closure_pulls(toy_run: dict) -> None:
    """ACCEPTANCE. Pulls (posterior mean - t_true) / posterior sd over 1000 toys: mean within 0.1 of 0 and sd within
    0.1 of 1 in every bin. Expected spread: mean 1/sqrt(1000) = 0.032, sd 1/sqrt(2000) = 0.022 (>= 3 sigma margins).
    Finite draws (150 per toy; two chains on the same toy differed by 0.08 sd rms in development, i.e. ESS ~ 300)
    add ~1/300 to the pull variance (+0.2 % width) and ~4 % noise to each toy's sd (+~0.3 % width): negligible.
    Expected offsets, also within the margins: the flat-prior shift of the posterior mean (~0.05 sd, see the GLS
    test) and a width of ~0.97 = 1 - fake fraction, because the default fakes (data x fake fraction) scale with the
    data while the likelihood treats them as fixed (6 seeds in development: |mean| <= 0.05, sd 0.94-1.04)."""
    result = toy_run["result"]
    assert isinstance(result, UnfoldingResult) and result.method == "fbu"
    assert result.unfolded.shape == (N_CLOSURE + 3 * N_COPIES, N_TRUTH)
    assert result.covariance.shape == (N_CLOSURE + 3 * N_COPIES, N_TRUTH, N_TRUTH)
    assert result.response_covariance.shape == result.covariance.shape
    assert not np.any(np.asarray(result.response_covariance))
    assert toy_run["warnings"] == []  # no divergent transitions in any toy
    p = pulls(
        UnfoldingResult(
            result.unfolded[:N_CLOSURE], result.covariance[:N_CLOSURE], result.response_covariance[:N_CLOSURE]
        ),
        T_TRUE,
    )
    assert np.all(np.isfinite(p))
    assert np.all(np.abs(p.mean(axis=0)) < 0.1), p.mean(axis=0)
    assert np.all(np.abs(p.std(axis=0, ddof=1) - 1.0) < 0.1), p.std(axis=0, ddof=1)


# ----------------------------------------------------------------------------------------------- NumPyro vs BlackJAX


def test_numpyro_and_blackjax_agree(toy_run: dict, numpyro_run: BayesianUnfolding) -> None:
    """Posterior mean and sd of the same spectrum from NumPyro (4 x 1000 draws) and from 16 independent BlackJAX
    chains (200 draws each) agree within 5 x the combined Monte Carlo standard error: arviz mcse for NumPyro, the
    spread of the 16 chain summaries / sqrt(16) for BlackJAX."""
    idata = numpyro_run.to_inference_data()
    mcse_mean = az.mcse(idata, var_names=["truth"]).truth.values
    mcse_sd = az.mcse(idata, var_names=["truth"], method="sd").truth.values
    means, sds = toy_run["groups"]["alpha0"]
    se_mean = np.sqrt(mcse_mean**2 + means.var(axis=0, ddof=1) / N_COPIES)
    se_sd = np.sqrt(mcse_sd**2 + sds.var(axis=0, ddof=1) / N_COPIES)
    np.testing.assert_array_less(np.abs(np.asarray(numpyro_run.unfolded) - means.mean(axis=0)), N_SIGMA * se_mean)
    np.testing.assert_array_less(np.abs(np.asarray(numpyro_run.errors) - sds.mean(axis=0)), N_SIGMA * se_sd)
    # the MC errors are small: the comparison resolves 0.2 posterior sd (measured 5 x se ~ 0.12 sd)
    assert np.all(N_SIGMA * se_mean < 0.2 * np.asarray(numpyro_run.errors))


# ----------------------------------------------------------------------------------------------- regularisation


def test_alpha_zero_matches_gls(setup: dict, numpyro_run: BayesianUnfolding) -> None:
    """With alpha = 0 and ~1e3-1e4 counts the posterior mean is the GLS (matrix inversion) solution up to the
    flat-prior / Poisson-skew shift (measured <= 0.05 sd) and MC error: allow 0.15 sd + 5 mcse. Posterior sd within
    10 % of the GLS errors (the Gaussian approximation is good to O(1/sqrt(counts)) ~ 2 %)."""
    response, d = setup["response"], setup["spectrum"]
    P, v = response.probabilities, d  # Poisson variance of the observed counts
    a = P.T @ (P / v[:, None])
    cov_gls = np.linalg.inv(a)
    t_gls = cov_gls @ (P.T @ ((d - d * response.fake_fraction) / v))
    sd_gls = np.sqrt(np.diag(cov_gls))
    mcse = az.mcse(numpyro_run.to_inference_data(), var_names=["truth"]).truth.values
    np.testing.assert_array_less(np.abs(np.asarray(numpyro_run.unfolded) - t_gls), 0.15 * sd_gls + N_SIGMA * mcse)
    np.testing.assert_allclose(np.asarray(numpyro_run.errors), sd_gls, rtol=0.1)


def test_alpha_smooths_towards_reference(toy_run: dict) -> None:
    """alpha > 0 on the same spectrum: the penalised curvature ||C (t / reference - 1)|| of the posterior mean drops
    well below its alpha = 0 value for both references (flat: smoother spectrum; zig-zag: the ratio to the reference
    straightens, so the mean moves towards the zig-zag shape), and the posterior sd shrinks (the prior adds
    information). The 16-chain averages have MC errors ~ 0.02 sd, far below these effects."""
    mean0, sd0 = (x.mean(axis=0) for x in toy_run["groups"]["alpha0"])
    for name, reference in (("flat", toy_run["flat"]), ("zigzag", T_TRUE * ZIGZAG)):
        mean_a, sd_a = (x.mean(axis=0) for x in toy_run["groups"][name])
        assert _curvature(mean_a, reference) < 0.5 * _curvature(mean0, reference), name
        assert np.all(sd_a < sd0), name
    # towards the zig-zag: alternating component of log t moves towards the reference's (+0.25 / -0.25)
    sign = (-1.0) ** np.arange(N_TRUTH)
    zz = lambda t: sign @ np.log(t) / N_TRUTH
    mean_zz = toy_run["groups"]["zigzag"][0].mean(axis=0)
    assert zz(mean0) < zz(mean_zz) < zz(T_TRUE * ZIGZAG)
    assert zz(mean_zz) - zz(mean0) > 0.25 * (zz(T_TRUE * ZIGZAG) - zz(mean0))


# ----------------------------------------------------------------------------------------------- arviz, density, errors


def test_inference_data_round_trip(numpyro_run: BayesianUnfolding) -> None:
    """A healthy NumPyro run: r_hat < 1.01 (4 over-dispersed chains), bulk ESS > 1000 of 4000 draws, no divergences;
    the posterior in InferenceData equals the stored draws, with a truth_bin dimension."""
    idata = numpyro_run.to_inference_data()
    truth = idata.posterior["truth"]
    assert truth.dims == ("chain", "draw", "truth_bin")
    assert truth.shape == (4, 1000, N_TRUTH)
    np.testing.assert_array_equal(truth.values, numpyro_run.draws)
    np.testing.assert_array_equal(idata.observed_data["data"].values, numpyro_run.data)
    summary = az.summary(idata, var_names=["truth"])
    assert np.all(summary["r_hat"] < 1.01), summary
    assert np.all(summary["ess_bulk"] > 1000), summary
    assert numpyro_run.n_divergent == 0 and int(idata.sample_stats["diverging"].sum()) == 0
    assert 0.6 < numpyro_run.mean_accept_prob < 0.99
    np.testing.assert_allclose(np.asarray(numpyro_run.unfolded), numpyro_run.draws.mean(axis=(0, 1)), rtol=1e-12)


def test_log_density_is_poisson_plus_jacobian_plus_prior(setup: dict) -> None:
    """log_posterior_z (what BlackJAX samples; NumPyro's potential of fbu_model) = sum Poisson log pmf + sum z
    (Jacobian of t = exp z) - alpha/2 ||C (t / reference - 1)||^2, computed here with numpy."""
    response, d = setup["response"], setup["spectrum"]
    P, f = response.probabilities, d * response.fake_fraction
    z = np.log(T_TRUE * np.linspace(0.9, 1.1, N_TRUTH))
    reference, alpha = T_TRUE * ZIGZAG, 3.0
    mu = P @ np.exp(z) + f
    expected = (
        np.sum(d * np.log(mu) - mu - gammaln(d + 1))
        + z.sum()
        - 0.5 * alpha * np.sum(np.diff(np.exp(z) / reference - 1, n=2) ** 2)
    )
    with jax.enable_x64(True):
        args = (jnp.asarray(z), jnp.asarray(d), jnp.asarray(P), jnp.asarray(f), alpha, jnp.asarray(reference))
        got = float(jax.jit(log_posterior_z)(*args))
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"data": np.ones(N_RECO - 1)}, "data must have shape"),
        ({"data": -np.ones(N_RECO)}, "data must be finite and >= 0"),
        ({"response": "R"}, "response must be a ResponseMatrix"),
        ({"alpha": -1.0}, "alpha must be"),
        ({"alpha": np.ones(3)}, "alpha must be"),
        ({"reference": np.ones(N_TRUTH - 1)}, "reference must have shape"),
        ({"reference": np.zeros(N_TRUTH)}, "reference must be finite and > 0"),
        ({"fakes": np.ones(3)}, "fakes must have shape"),
        ({"fakes": -np.ones(N_RECO)}, "fakes must be finite and >= 0"),
        ({"num_warmup": 0}, "num_warmup must be an integer"),
        ({"num_samples": 1}, "num_samples must be an integer"),
        ({"num_chains": 1.5}, "num_chains must be an integer"),
    ],
)
def test_fbu_bad_inputs(setup: dict, kwargs: dict, match: str) -> None:
    args = {"data": setup["spectrum"], "response": setup["response"]} | kwargs
    exc = TypeError if "response" in kwargs else ValueError
    with pytest.raises(exc, match=match):
        fbu(jax.random.key(0), args.pop("data"), args.pop("response"), **args)


def test_fbu_toys_bad_inputs(setup: dict) -> None:
    response, toys = setup["response"], setup["toys"][:3]
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="toys must have shape"):
        fbu_toys(key, toys[0], response)
    with pytest.raises(ValueError, match="toys must have shape"):
        fbu_toys(key, toys[:, :-1], response)
    with pytest.raises(ValueError, match="alpha must be"):
        fbu_toys(key, toys, response, alpha=np.ones(4))
    with pytest.raises(ValueError, match="reference must have shape"):
        fbu_toys(key, toys, response, reference=np.ones((4, N_TRUTH)))
    with pytest.raises(ValueError, match="fakes must have shape"):
        fbu_toys(key, toys, response, fakes=np.ones((4, N_RECO)))
    dead = ResponseMatrix(np.c_[response.migrations[:, :-1], np.zeros(N_RECO)], response.truth_counts)
    with pytest.raises(ValueError, match=r"zero efficiency in truth bins \[5\]"):
        fbu_toys(key, toys, dead)
    two_bins = ResponseMatrix(response.migrations[:, :2], response.truth_counts[:2])
    with pytest.raises(ValueError, match="alpha > 0 needs n_truth >= 3"):
        fbu_toys(key, toys, two_bins, alpha=1.0)
