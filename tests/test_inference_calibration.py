"""Tempered calibration: prior map, summaries, summary flow, temperature rules, coverage (toy, exact likelihood)."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from surrinf.generators import TrainConfig
from surrinf.inference import (
    BoxPrior,
    CalibrationProblem,
    GaussianToy,
    ReferenceSummaries,
    ScaleBiasedDensity,
    check_tau,
    coverage_tau,
    curvature_tau,
    default_prior,
    divergence_tau,
    fit_summary_flow,
    laplace_importance_posterior,
    load_summary_flow,
    measure_mismatch,
    run_coverage,
    save_summary_flow,
    shower_summary,
)
from surrinf.sim import calorimeter

BEAM = np.repeat([10.0, 20.0, 50.0, 100.0], 50)  # 200 events per pseudo-experiment


def test_prior_unconstrained_map_and_density():
    prior = default_prior()
    theta = np.array([1.02, 0.2, 0.001])
    z = prior.to_unconstrained(jnp.asarray(theta))
    np.testing.assert_allclose(np.asarray(prior.from_unconstrained(z)), theta, rtol=1e-6)
    # log sigmoid(z) + log sigmoid(-z) is the logistic density: it integrates to 1 per parameter.
    grid = jnp.linspace(-40.0, 40.0, 200_001)
    one = jnp.trapezoid(jnp.exp(prior.log_density_unconstrained(grid[:, None])), grid)
    assert abs(float(one) - 1.0) < 1e-4
    with pytest.raises(ValueError, match="prior box"):
        prior.check(np.array([1.5, 0.2, 0.001]))
    with pytest.raises(ValueError, match="low < high"):
        BoxPrior(["a"], [1.0], [0.5])
    with pytest.raises(ValueError, match="tau"):
        check_tau(1.5)


def test_problem_rejects_bad_data():
    toy, prior = GaussianToy(), default_prior()
    with pytest.raises(ValueError, match="energies_gev"):
        CalibrationProblem(toy, np.zeros((4, 2)), np.ones(3), prior)
    with pytest.raises(ValueError, match="x"):
        CalibrationProblem(toy, np.zeros(4), np.ones(4), prior)
    with pytest.raises(ValueError, match="finite"):
        CalibrationProblem(toy, np.full((4, 2), np.nan), np.ones(4), prior)


def test_shower_summary_tracks_theta():
    cal = calorimeter("default")
    ref = ReferenceSummaries(cal)
    e = np.full(512, 50.0)
    with jax.enable_x64(True):  # called from a float64 region, the simulator still runs (and compiles) in float32
        quiet = ref.simulate(jax.random.key(0), e, np.array([1.05, 0.17, 0.0]))
    assert quiet.dtype == np.float32 and not jax.config.jax_enable_x64
    noisy = ref.simulate(jax.random.key(1), e, np.array([1.0, 0.17, 0.002]))
    # response ~ s times the contained fraction (~0.992 at 50 GeV); its sd at 50 GeV is ~2.4 % (quiet) and ~3.4 %
    # (noisy), so the ratio of the means of 512 is known to ~0.2 %: 0.01 is a 5 sd bound around 1.05.
    assert abs(quiet[:, 0].mean() / noisy[:, 0].mean() - 1.05) < 0.01
    assert np.all(quiet[:, 2] == 0.0)  # no noise -> no negative cells
    assert noisy[:, 2].mean() > 0.05  # ~0.17 GeV of summed negative energy at sigma_n = 2 MeV
    with pytest.raises(ValueError, match="showers"):
        shower_summary(np.zeros((3, 5)), np.ones(3), cal)


def test_scale_biased_density_is_normalised():
    toy = GaussianToy()
    biased = ScaleBiasedDensity(toy, 0.01)
    theta = jnp.array([1.0, 0.17, 0.001])
    e = jnp.full((4001,), 20.0)
    grid = jnp.linspace(0.7, 1.3, 4001)
    x = jnp.stack([grid, jnp.full_like(grid, 0.12)], axis=1)
    p0 = jnp.exp(toy.log_prob(x, e, theta))
    p1 = jnp.exp(biased.log_prob(x, e, theta))
    # the x0 marginal integrates to the same value (normalised); its mean moves by +1 %.
    np.testing.assert_allclose(float(jnp.trapezoid(p1, grid)), float(jnp.trapezoid(p0, grid)), rtol=1e-6)
    m0 = float(jnp.trapezoid(p0 * grid, grid) / jnp.trapezoid(p0, grid))
    m1 = float(jnp.trapezoid(p1 * grid, grid) / jnp.trapezoid(p1, grid))
    assert abs(m1 / m0 - 1.01) < 1e-6


def test_summary_flow_fit_save_load(tmp_path):
    prior = default_prior()
    toy = GaussianToy()
    k1, k2 = jax.random.split(jax.random.key(0))
    theta = prior.sample(k1, 3000)
    e = np.exp(np.random.default_rng(0).uniform(np.log(8), np.log(120), 3000))
    data = {"x": toy.simulate(k2, e, theta), "energies_gev": e, "theta": theta}
    cfg = TrainConfig(batch_size=256, max_steps=200, learning_rate=3e-3, eval_every=100)
    flow, _ = fit_summary_flow(jax.random.key(1), data, prior, flow={"n_layers": 2, "hidden": [16]}, train_config=cfg)
    nll_exact = -float(jnp.mean(toy.log_prob(data["x"], e, theta)))
    nll_flow = -float(jnp.mean(flow.log_prob(data["x"], e, theta)))
    # 200 steps of a tiny flow get within ~1 nat per event of the exact density (2-D Gaussian summaries); an
    # untrained flow is many nats off (the noise summary is ~1e-1 with sd ~1e-2).
    assert nll_flow < nll_exact + 1.0
    path = save_summary_flow(flow, tmp_path / "sflow", {"note": "test"})
    loaded, meta = load_summary_flow(path)
    assert meta["metadata"]["note"] == "test" if "metadata" in meta else True
    assert eqx.tree_equal(
        jax.tree.leaves(eqx.filter(loaded, eqx.is_array)), jax.tree.leaves(eqx.filter(flow, eqx.is_array))
    )
    with pytest.raises(ValueError, match="theta"):
        fit_summary_flow(jax.random.key(1), {**data, "theta": theta[:, :2]}, prior)


def test_laplace_importance_matches_exact_one_parameter_posterior():
    # 1-parameter problem: energy scale only, exact Gaussian likelihood; the tempered posterior on a dense grid.
    prior = BoxPrior(["energy_scale"], [0.9], [1.1])

    class OneParam(eqx.Module):
        def log_prob(self, x, e, theta):
            sd = 0.17 / jnp.sqrt(e)
            return -0.5 * ((x[:, 0] - theta[0]) / sd) ** 2 - jnp.log(sd) - 0.5 * math.log(2 * math.pi)

    e = BEAM
    x = 1.004 + 0.17 / np.sqrt(e) * np.random.default_rng(3).standard_normal(e.size)
    problem = CalibrationProblem(OneParam(), x[:, None], e, prior)
    tau = 0.5
    res = laplace_importance_posterior(problem, jax.random.key(0), tau, n_draws=4000)
    with jax.enable_x64(True):
        grid = jnp.linspace(0.9, 1.1, 20001)
        lp = jax.vmap(lambda t: tau * problem.log_likelihood(t[None]))(grid)
        w = jnp.exp(lp - lp.max())
        mean = float(jnp.sum(w * grid) / jnp.sum(w))
        sd = float(jnp.sqrt(jnp.sum(w * (grid - mean) ** 2) / jnp.sum(w)))
    ess = res.info["kish_ess"]
    assert ess > 2000  # a t proposal around a Gaussian posterior keeps most draws
    # MC error of the weighted mean is sd / sqrt(ESS) (~2 % of sd); of the sd ~ sd / sqrt(2 ESS): 5 sigma bounds.
    assert abs(res.mean()[0] - mean) < 5 * sd / math.sqrt(ess)
    assert abs(res.sd()[0] / sd - 1) < 5 / math.sqrt(2 * ess)


def test_rules_give_tau_near_one_and_nominal_coverage_for_the_exact_toy():
    """Acceptance: on a toy whose exact likelihood is known, every rule gives tau close to 1 and nominal coverage."""
    toy, prior = GaussianToy(), default_prior()
    points = prior.sample(jax.random.key(5), 4)
    mm = measure_mismatch(toy, toy, prior, jax.random.key(1), points, np.tile(BEAM, 25))
    # Held-out noise: with n = 5000 events per point the displacement estimate N g'J^-1 g has MC sd ~ N sqrt(2p) / n
    # = 0.1 after the bias correction, so an exact model gives tau > 0.85 with margin.
    tau_div, tau_curv = divergence_tau(mm, BEAM.size).tau, curvature_tau(mm, BEAM.size).tau
    assert tau_div > 0.85 and tau_curv > 0.85
    assert not jax.config.jax_enable_x64  # float64 only inside the rules
    study = run_coverage(
        toy, toy, prior, jax.random.key(3), {"1": 1.0, "0.7": 0.7}, BEAM, n_experiments=200, n_draws=200
    )
    c68, c95 = study.coverage(0.68)[0], study.coverage(0.95)[0]
    # per-parameter binomial sd: 0.033 (68 %), 0.015 (95 %); 3 sd bounds.
    assert np.all(np.abs(c68 - 0.68) < 0.1), c68
    assert np.all(np.abs(c95 - 0.95) < 0.046), c95
    assert abs(study.joint_coverage(0.68)[0] - 0.68) < 0.1
    assert np.median(study.ess) > 100  # importance sampling kept at least half of its 200 draws
    # The coverage rule on the same kind of experiments (fresh key): at tau = 0.7 an exact posterior covers ~0.77,
    # so tau_cov < 0.7 needs a ~3 sd fluctuation of the 68 % coverage (binomial sd 0.033).
    rule = coverage_tau(toy, toy, prior, jax.random.key(2), BEAM, n_experiments=200, n_draws=200, tau_grid=[0.7, 1.0])
    assert rule.tau >= 0.7


def test_imperfect_toy_undercovers_and_the_rules_temper_it():
    """A density with a +0.3 % response-scale error (~1.4 posterior sd of s at 200 events): tau = 1 under-covers
    the energy scale; divergence and curvature rules find tau < 1 and restore its coverage."""
    truth, prior = GaussianToy(), default_prior()
    wrong = GaussianToy(bias_scale=0.003)
    mm = measure_mismatch(wrong, truth, prior, jax.random.key(1), prior.sample(jax.random.key(5), 4), np.tile(BEAM, 25))
    taus = {"1": 1.0, "divergence": divergence_tau(mm, BEAM.size).tau, "curvature": curvature_tau(mm, BEAM.size).tau}
    assert taus["divergence"] < 0.6 and taus["curvature"] < 0.6
    study = run_coverage(wrong, truth, prior, jax.random.key(3), taus, BEAM, n_experiments=200, n_draws=200)
    c68 = study.coverage(0.68)
    # binomial sd 0.033 at 200 experiments: "measurably below" = more than 3 sd under 0.68.
    assert c68[0, 0] < 0.68 - 0.1
    assert np.all(np.abs(c68[1:, 0] - 0.68) < 0.1)
