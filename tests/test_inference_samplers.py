"""Samplers of the tempered posterior (issue 5): NumPyro NUTS, BlackJAX NUTS and tempered SMC agree.

Tiny problems only (this file must stay under ~30 s on 2 cores): the GaussianToy with 40 events and 3 parameters,
and a 1-parameter Gaussian-mean problem whose evidence and posterior width are known exactly. Tolerances are
5 x the Monte Carlo standard error computed from a *conservative* effective sample size (stated at each use).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import numpy as np
import pytest
import scipy.optimize
from scipy.special import gammaln, logsumexp

from surrinf.inference.prior import BoxPrior, default_prior
from surrinf.inference.problem import CalibrationProblem
from surrinf.inference.samplers import run_blackjax_nuts, run_numpyro_nuts, run_tempered_smc
from surrinf.inference.toy import GaussianToy

TAU = 0.5
TRUTH = np.array([1.0, 0.17, 0.001])
NUTS_SETTINGS = {"num_warmup": 300, "num_samples": 1000, "num_chains": 4}  # BlackJAX
# NumPyro compiles its NUTS loop on every call (~3 s); 2 vectorised chains compile faster than 4
NUMPYRO_SETTINGS = {"num_warmup": 300, "num_samples": 2000, "num_chains": 2}
SMC_PARTICLES = 2000
# Conservative effective sample sizes. NUTS: 4000 draws (4 x 1000 or 2 x 2000) had bulk ESS 2300-3500 per parameter
# (arviz) in development runs -> assume 1000. SMC with 2000 particles: the seed-to-seed spread of the weighted mean
# over 8 seeds implied ESS >= 1200 -> assume 400. Importance-sampling reference: its Kish ESS (independent draws).
ESS_NUTS, ESS_SMC = 1000.0, 400.0
N_SIGMA = 5.0
# 1-parameter Gaussian-mean problem: 20 unit-variance observations, prior U(-5, 5).
N_OBS_1D, SMC_PARTICLES_1D = 20, 4000


# ----------------------------------------------------------------------------------------------- problems


@pytest.fixture(scope="module")
def toy_problem() -> CalibrationProblem:
    energies = np.repeat([10.0, 20.0, 50.0, 100.0], 10)
    x = GaussianToy().simulate(jax.random.key(0), energies, TRUTH)
    return CalibrationProblem(GaussianToy(), x, energies, default_prior())


class _GaussianMean(eqx.Module):
    """x_i ~ N(theta_0, 1): a density with the SummaryDensity interface (energies ignored)."""

    def log_prob(self, x: jax.Array, energies_gev: jax.Array, theta: jax.Array) -> jax.Array:
        return -0.5 * (x[:, 0] - theta[0]) ** 2 - 0.5 * math.log(2 * math.pi)


@pytest.fixture(scope="module")
def gauss_problem() -> CalibrationProblem:
    x = np.random.default_rng(3).normal(0.7, 1.0, N_OBS_1D)[:, None]
    return CalibrationProblem(_GaussianMean(), x, np.ones(N_OBS_1D), BoxPrior(("mu",), [-5.0], [5.0]))


def _grid_log_evidence(problem: CalibrationProblem, tau: float) -> float:
    """log ∫ exp(tau * log L(mu)) / width dmu on a dense grid (numpy, independent of the samplers)."""
    x = np.asarray(problem.x[:, 0], dtype=np.float64)
    grid = np.linspace(-5.0, 5.0, 400_001)
    ll = -0.5 * np.sum((x[None, :] - grid[:, None]) ** 2, axis=1) - 0.5 * x.size * math.log(2 * math.pi)
    return float(logsumexp(tau * ll) + math.log(grid[1] - grid[0]) - math.log(10.0))


# ----------------------------------------------------------------------------------------------- reference + runs


@pytest.fixture(scope="module")
def reference(toy_problem) -> dict[str, np.ndarray | float]:
    """Importance sampling of the tau = 0.5 toy posterior: Student-t (5 dof) proposal at the Laplace mode in z with
    1.5x the Laplace scale; 50k draws. Returns mean, sd (theta units), the Kish ESS and log Z(tau) (the z density
    of the prior is normalised, so mean(p / q) estimates Z)."""
    with jax.enable_x64(True):
        neg = jax.jit(lambda z: -toy_problem.log_posterior_unconstrained(z, TAU))
        grad, hess = jax.jit(jax.grad(neg)), jax.jit(jax.hessian(neg))
        fit = scipy.optimize.minimize(
            lambda z: float(neg(z)),
            np.zeros(3),
            jac=lambda z: np.asarray(grad(z)),
            hess=lambda z: np.asarray(hess(z)),
            method="trust-exact",
        )
        chol = np.linalg.cholesky(np.linalg.inv(np.asarray(hess(fit.x)))) * 1.5
        rng = np.random.default_rng(5)  # multivariate t: a shared chi-square per draw
        t = rng.standard_normal((50_000, 3)) / np.sqrt(rng.chisquare(5.0, (50_000, 1)) / 5.0)
        z = fit.x + t @ chol.T
        log_q = (  # normalised multivariate Student-t density of z (5 dof, 3-D, scale chol)
            gammaln(4.0) - gammaln(2.5) - 1.5 * math.log(5 * math.pi) - np.sum(np.log(np.diag(chol)))
        ) - 4.0 * np.log1p(np.sum(t**2, axis=1) / 5)
        log_p = -np.asarray(jax.vmap(neg)(z))
        theta = np.asarray(toy_problem.prior.from_unconstrained(z))
    log_w = log_p - log_q
    w = np.exp(log_w - np.max(log_w))
    w /= w.sum()
    mean, ess = w @ theta, float(1.0 / np.sum(w**2))
    log_z = float(logsumexp(log_w) - math.log(len(w)))
    return {"mean": mean, "sd": np.sqrt(w @ (theta - mean) ** 2), "ess": ess, "n": len(w), "log_z": log_z}


def _dispersed_init(prior: BoxPrior, n_chains: int = 4) -> np.ndarray:
    """(n_chains <= 4, P) starting points near the corners of the box (theta units)."""
    u = np.array([[0.1, 0.1, 0.1], [0.9, 0.9, 0.9], [0.1, 0.9, 0.5], [0.9, 0.1, 0.5]])[:n_chains]
    return prior.low + prior.width * u


@pytest.fixture(scope="module")
def numpyro_run(toy_problem):
    init = _dispersed_init(toy_problem.prior, NUMPYRO_SETTINGS["num_chains"])
    return run_numpyro_nuts(toy_problem, jax.random.key(1), TAU, init_theta=init, **NUMPYRO_SETTINGS)


@pytest.fixture(scope="module")
def blackjax_run(toy_problem):
    return run_blackjax_nuts(toy_problem, jax.random.key(2), TAU, **NUTS_SETTINGS)


@pytest.fixture(scope="module")
def smc_run(toy_problem):
    return run_tempered_smc(toy_problem, jax.random.key(3), TAU, n_particles=SMC_PARTICLES)


# ----------------------------------------------------------------------------------------------- acceptance item


def test_three_samplers_agree_with_each_other_and_importance_sampling(numpyro_run, blackjax_run, smc_run, reference):
    """Means and sds agree within 5 MC standard errors: se(mean) = sd / sqrt(ESS), se(sd) = sd / sqrt(2 ESS),
    combined in quadrature for each pair (conservative ESS above; the IS reference enters with its Kish ESS)."""
    assert reference["ess"] > 0.2 * reference["n"]  # the near-Gaussian proposal fits: the reference is precise
    sd_ref = reference["sd"]
    runs = {"numpyro": (numpyro_run, ESS_NUTS), "blackjax": (blackjax_run, ESS_NUTS), "smc": (smc_run, ESS_SMC)}
    estimates = {name: (r.mean(), r.sd(), ess) for name, (r, ess) in runs.items()}
    estimates["reference"] = (reference["mean"], reference["sd"], reference["ess"])
    names = list(estimates)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            (ma, sa, ea), (mb, sb, eb) = estimates[a], estimates[b]
            tol_mean = N_SIGMA * sd_ref * np.sqrt(1 / ea + 1 / eb)
            tol_sd = N_SIGMA * sd_ref * np.sqrt(1 / (2 * ea) + 1 / (2 * eb))
            assert np.all(np.abs(ma - mb) < tol_mean), (a, b, (ma - mb) / sd_ref)
            assert np.all(np.abs(sa - sb) < tol_sd), (a, b, sa / sb - 1)


def test_nuts_sample_stats_and_info(numpyro_run, blackjax_run):
    for r, name, settings in (
        (numpyro_run, "numpyro_nuts", NUMPYRO_SETTINGS),
        (blackjax_run, "blackjax_nuts", NUTS_SETTINGS),
    ):
        shape = (settings["num_chains"], settings["num_samples"])
        assert r.sampler == name and r.tau == TAU and r.samples.shape == (*shape, 3)
        assert r.samples.dtype == np.float64 and r.names == default_prior().names
        assert set(r.sample_stats) >= {"diverging", "energy", "n_steps", "acceptance_rate"}
        assert r.sample_stats["diverging"].dtype == bool and not r.sample_stats["diverging"].any()
        assert np.all(np.isfinite(r.sample_stats["energy"])) and np.all(r.sample_stats["n_steps"] >= 1)
        assert np.all((r.sample_stats["tree_depth"] >= 1) & (r.sample_stats["tree_depth"] <= 10))
        # adapted to target_accept = 0.8: the mean acceptance over 4000 draws lands well inside (0.6, 0.97)
        assert 0.6 < r.sample_stats["acceptance_rate"].mean() < 0.97
        assert r.info["n_grad_evals_sampling"] == r.sample_stats["n_steps"].sum()
        # blackjax counts the warm-up leapfrog steps too; numpyro's single MCMC.run gives the sampling steps only
        warm = r.info["n_grad_evals_includes_warmup"]
        assert warm == (name == "blackjax_nuts")
        assert (
            r.info["n_grad_evals"] > r.info["n_grad_evals_sampling"]
            if warm
            else r.info["n_grad_evals"] == r.info["n_grad_evals_sampling"]
        )
        assert r.info["num_warmup"] == 300 and r.info["num_samples"] == settings["num_samples"] and r.info["wall_s"] > 0
        assert np.all(default_prior().contains(r.samples.reshape(-1, 3)))


def test_smc_result_lands_exactly_on_tau(smc_run):
    lam = smc_run.info["lambdas"]
    assert lam[0] == 0.0 and lam[-1] == TAU and np.all(np.diff(lam) > 0)
    assert smc_run.info["n_steps"] == len(lam) - 1 == len(smc_run.info["acceptance_rate"])
    assert smc_run.samples.shape == (1, SMC_PARTICLES, 3) and smc_run.weights.shape == (1, SMC_PARTICLES)
    assert abs(smc_run.weights.sum() - 1.0) < 1e-12 and np.isfinite(smc_run.log_evidence)
    # the random-walk mutation is tuned by the particle covariance: acceptance near the 2.38^2/P optimum (~0.3)
    assert all(0.1 < a < 0.6 for a in smc_run.info["acceptance_rate"])


def test_smc_log_evidence_matches_importance_sampling(smc_run, reference):
    """log Z(0.5) of the toy: SMC vs importance sampling. Tolerance 5 x the SMC delta-method SE
    sqrt(sum_k (1/ESS_k - 1/N)) = 0.042 here (30 seeds in development: spread 0.047, mean error -0.004); the IS SE
    sqrt(1/ESS_IS - 1/n) ~ 0.004 is negligible."""
    se = float(np.sqrt(np.sum(1 / np.asarray(smc_run.info["ess"]) - 1 / SMC_PARTICLES)))
    assert se < 0.1
    assert abs(smc_run.log_evidence - reference["log_z"]) < N_SIGMA * se


# ----------------------------------------------------------------------------------------------- SMC: evidence, tau


@pytest.mark.parametrize("tau", [0.25, 1.0])
def test_smc_log_evidence_and_posterior_width_exact_gaussian(gauss_problem, tau):
    """1-D Gaussian mean: log Z(tau) from a dense grid; posterior N(xbar, 1/(n tau)) (box edges > 9 sd away).

    log Z tolerance: 5 x the delta-method SE sqrt(sum_k (1/ESS_k - 1/N)) of the log mean incremental weights (20 seeds
    in development: spread 0.019, delta method 0.021-0.023). Posterior: conservative ESS = N/5 = 800 (the 20-seed
    spread of the sd implied ESS > 5000)."""
    r = run_tempered_smc(gauss_problem, jax.random.key(11), tau, n_particles=SMC_PARTICLES_1D)
    ess = np.asarray(r.info["ess"])
    se_log_z = float(np.sqrt(np.sum(1 / ess - 1 / SMC_PARTICLES_1D)))
    assert se_log_z < 0.05
    assert abs(r.log_evidence - _grid_log_evidence(gauss_problem, tau)) < N_SIGMA * se_log_z
    sd_exact, ess_cons = 1 / math.sqrt(N_OBS_1D * tau), SMC_PARTICLES_1D / 5
    xbar = float(np.mean(np.asarray(gauss_problem.x, dtype=np.float64)))
    assert abs(r.mean()[0] - xbar) < N_SIGMA * sd_exact / math.sqrt(ess_cons)
    assert abs(r.sd()[0] / sd_exact - 1) < N_SIGMA / math.sqrt(2 * ess_cons)


def test_tempering_quarter_tau_doubles_the_posterior_sd(gauss_problem):
    """sd ∝ tau^-1/2 for a Gaussian likelihood: sd(0.25) / sd(1) = 2. Each sd has relative SE 1/sqrt(2 ESS) with the
    conservative ESS = N/5 = 800; the ratio's relative SE is sqrt(2) times that -> 5 sigma = 0.18 relative."""
    key = jax.random.key(12)
    sd_q = run_tempered_smc(gauss_problem, key, 0.25, n_particles=SMC_PARTICLES_1D).sd()[0]
    sd_1 = run_tempered_smc(gauss_problem, key, 1.0, n_particles=SMC_PARTICLES_1D).sd()[0]
    rel_se = math.sqrt(2) / math.sqrt(2 * SMC_PARTICLES_1D / 5)
    assert abs(sd_q / sd_1 / 2 - 1) < N_SIGMA * rel_se


# ----------------------------------------------------------------------------------------------- reproducibility


def test_same_key_same_bits_blackjax_and_smc(toy_problem, blackjax_run, smc_run):
    again = run_blackjax_nuts(toy_problem, jax.random.key(2), TAU, **NUTS_SETTINGS)
    assert np.array_equal(again.samples, blackjax_run.samples)
    assert np.array_equal(again.sample_stats["energy"], blackjax_run.sample_stats["energy"])
    other = run_blackjax_nuts(toy_problem, jax.random.key(20), TAU, **NUTS_SETTINGS)
    assert not np.array_equal(other.samples, blackjax_run.samples)
    smc_again = run_tempered_smc(toy_problem, jax.random.key(3), TAU, n_particles=SMC_PARTICLES)
    assert np.array_equal(smc_again.samples, smc_run.samples) and np.array_equal(smc_again.weights, smc_run.weights)
    assert smc_again.log_evidence == smc_run.log_evidence and smc_again.info["lambdas"] == smc_run.info["lambdas"]
    assert not jax.config.jax_enable_x64  # float64 was enabled only locally


def test_same_key_same_bits_numpyro(toy_problem, numpyro_run):
    init = _dispersed_init(toy_problem.prior, NUMPYRO_SETTINGS["num_chains"])
    again = run_numpyro_nuts(toy_problem, jax.random.key(1), TAU, init_theta=init, **NUMPYRO_SETTINGS)
    assert np.array_equal(again.samples, numpyro_run.samples)
    assert np.array_equal(again.sample_stats["n_steps"], numpyro_run.sample_stats["n_steps"])
    assert again.info["n_grad_evals"] == numpyro_run.info["n_grad_evals"]
    assert not jax.config.jax_enable_x64


def test_blackjax_init_theta_is_used(toy_problem, blackjax_run):
    """Same key, chains started in the box corners instead of prior draws: different bits, same posterior."""
    r = run_blackjax_nuts(
        toy_problem, jax.random.key(2), TAU, init_theta=_dispersed_init(toy_problem.prior), **NUTS_SETTINGS
    )
    assert not np.array_equal(r.samples, blackjax_run.samples)
    # both runs: conservative ESS 1000 each -> 5 sigma of the difference of means = 5 sqrt(2/1000) sd = 0.22 sd
    assert np.all(np.abs(r.mean() - blackjax_run.mean()) < N_SIGMA * blackjax_run.sd() * math.sqrt(2 / ESS_NUTS))


# ----------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("tau", [0.0, -0.5, 1.5, float("nan")])
@pytest.mark.parametrize("sampler", [run_numpyro_nuts, run_blackjax_nuts, run_tempered_smc])
def test_bad_tau_is_rejected(toy_problem, sampler, tau):
    with pytest.raises(ValueError, match="tau"):
        sampler(toy_problem, jax.random.key(0), tau)


@pytest.mark.parametrize(
    ("init_theta", "match"),
    [
        (np.full((3, 3), 0.5), r"init_theta must have shape \(num_chains, P\) = \(4, 3\)"),  # wrong number of chains
        (np.full((4, 2), 0.5), r"init_theta must have shape"),  # wrong P
        (np.tile([1.0, 0.17, 0.01], (4, 1)), "init_theta must lie strictly inside the prior box"),  # sigma_n > 3 MeV
        (np.tile([0.9, 0.17, 0.001], (4, 1)), "init_theta must lie strictly inside"),  # on the boundary: z = -inf
    ],
)
@pytest.mark.parametrize("sampler", [run_numpyro_nuts, run_blackjax_nuts])
def test_bad_init_theta_is_rejected(toy_problem, sampler, init_theta, match):
    with pytest.raises(ValueError, match=match):
        sampler(toy_problem, jax.random.key(0), 0.5, num_chains=4, init_theta=init_theta)


@pytest.mark.parametrize(
    ("sampler", "kwargs", "name"),
    [
        (run_numpyro_nuts, {"num_warmup": 0}, "num_warmup"),
        (run_numpyro_nuts, {"num_samples": 2.5}, "num_samples"),
        (run_blackjax_nuts, {"num_chains": True}, "num_chains"),
        (run_blackjax_nuts, {"target_accept": 1.0}, "target_accept"),
        (run_tempered_smc, {"n_particles": 1}, "n_particles"),
        (run_tempered_smc, {"target_ess": 0.0}, "target_ess"),
        (run_tempered_smc, {"n_mcmc_steps": -1}, "n_mcmc_steps"),
        (run_tempered_smc, {"max_steps": "10"}, "max_steps"),
    ],
)
def test_bad_settings_are_rejected(toy_problem, sampler, kwargs, name):
    with pytest.raises(ValueError, match=name):
        sampler(toy_problem, jax.random.key(0), 0.5, **kwargs)


def test_smc_max_steps_too_small_raises(gauss_problem):
    # the Gaussian-mean problem needs 4-5 tempering steps to reach tau = 1 at target_ess = 0.5; 1 step cannot
    with pytest.raises(RuntimeError, match="max_steps=1"):
        run_tempered_smc(gauss_problem, jax.random.key(0), 1.0, n_particles=SMC_PARTICLES_1D, max_steps=1)


def test_problem_type_is_checked():
    with pytest.raises(TypeError, match="CalibrationProblem"):
        run_tempered_smc(object(), jax.random.key(0), 0.5)
