"""Jet energy response: the reference (fitted to the calorimeter simulator) and its conditional-flow surrogate."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from surrinf.generators import TrainConfig, load, save
from surrinf.kinfit.response import (
    _DEFAULT_ERRORS,
    _DEFAULT_PARAMS,
    JetResponse,
    JetResponseFlow,
    default_jet_response,
    fit_jet_response_flow,
)
from surrinf.response import ResponseModel

ENERGIES = np.array([10.0, 100.0, 1000.0])


@pytest.fixture(scope="module")
def ref() -> JetResponse:
    return default_jet_response()


# --------------------------------------------------------------------------------------------- reference


def test_reference_sampling_mean_and_resolution(ref):
    n = 20_000
    cond = np.stack([np.repeat(ENERGIES, n), np.tile(np.linspace(-2.5, 2.5, n), ENERGIES.size)], axis=1)
    y = np.asarray(ref.sample(jax.random.key(1), cond))
    assert y.shape == (cond.shape[0],) and y.dtype == np.float64
    r = y.reshape(ENERGIES.size, n) / ENERGIES[:, None]
    mu, sig = np.asarray(ref.mean_response(ENERGIES)), np.asarray(ref.relative_resolution(ENERGIES))
    # Gaussian sample of n: the mean has error sig / sqrt(n), the sd has error sig / sqrt(2 n); 4 sigma each
    # (6 comparisons, false alarm ~4e-4).
    np.testing.assert_array_less(np.abs(r.mean(axis=1) - mu), 4 * sig / math.sqrt(n))
    np.testing.assert_array_less(np.abs(r.std(axis=1, ddof=1) - sig), 4 * sig / math.sqrt(2 * n))
    np.testing.assert_allclose(np.asarray(ref.sigma_gev(ENERGIES)), ENERGIES * sig, rtol=1e-15)
    # same key, same bits; E-only conditions (N,) and (N, 1) are eta = 0, and the reference ignores eta
    np.testing.assert_array_equal(np.asarray(ref.sample(jax.random.key(1), cond)), y)
    np.testing.assert_array_equal(np.asarray(ref.sample(jax.random.key(1), cond[:, 0])), y)
    np.testing.assert_array_equal(np.asarray(ref.sample(jax.random.key(1), cond[:, :1])), y)
    assert not np.array_equal(np.asarray(ref.sample(jax.random.key(2), cond)), y)
    assert isinstance(ref, ResponseModel)
    # traced (jit) in a float64 region gives the eager bits
    with jax.enable_x64(True):
        np.testing.assert_array_equal(np.asarray(jax.jit(ref.sample)(jax.random.key(1), cond[:6])), y[:6])


def test_reference_formulas_and_log_prob(ref):
    e = np.geomspace(5.0, 2000.0, 7)
    p = ref.to_dict()
    mu = p["s0"] + p["s1"] * np.log(e / 100.0)
    sig = np.sqrt(p["a"] ** 2 / e + p["b"] ** 2 + (p["c"] / e) ** 2)
    np.testing.assert_allclose(np.asarray(ref.mean_response(e)), mu, rtol=1e-15)
    np.testing.assert_allclose(np.asarray(ref.relative_resolution(e)), sig, rtol=1e-15)
    y = e * (mu + 1.3 * sig * np.cos(np.arange(e.size)))
    lp = np.asarray(ref.log_prob(y, np.stack([e, np.full(e.size, 1.7)], axis=1)))
    np.testing.assert_allclose(lp, stats.norm.logpdf(y, e * mu, e * sig), rtol=1e-12)
    # normalised in E_reco [GeV]: trapezoid over +-10 sigma with 4001 points (discretisation error < 1e-9)
    for energy in (7.0, 500.0):
        m, s = energy * float(ref.mean_response(energy)), float(ref.sigma_gev(energy))
        grid = np.linspace(m - 10 * s, m + 10 * s, 4001)
        dens = np.exp(np.asarray(ref.log_prob(grid, np.full(grid.size, energy))))
        assert np.trapezoid(dens, grid) == pytest.approx(1.0, abs=1e-9)


def test_calibrate_and_with_scale(ref):
    e = np.geomspace(1.0, 5000.0, 41)
    np.testing.assert_allclose(np.asarray(ref.calibrate(e * np.asarray(ref.mean_response(e)))), e, rtol=1e-10)
    steep = JetResponse(0.9, 0.08, 0.5, 0.05, 1.0)  # a strongly energy-dependent scale: Newton still converges
    np.testing.assert_allclose(np.asarray(steep.calibrate(e * np.asarray(steep.mean_response(e)))), e, rtol=1e-10)
    shifted = ref.with_scale(1.03)
    np.testing.assert_allclose(
        np.asarray(shifted.mean_response(e)), 1.03 * np.asarray(ref.mean_response(e)), rtol=1e-14
    )
    np.testing.assert_array_equal(np.asarray(shifted.relative_resolution(e)), np.asarray(ref.relative_resolution(e)))
    y = e * np.asarray(shifted.mean_response(e))
    np.testing.assert_allclose(np.asarray(shifted.calibrate(y)), e, rtol=1e-10)
    assert JetResponse.from_dict(ref.to_dict()) == ref
    assert ref.to_dict() == _DEFAULT_PARAMS


def test_bad_inputs_raise(ref):
    good = np.array([[50.0, 0.1], [80.0, -1.0]])
    with pytest.raises(ValueError, match=r"conditions must have shape \(N,\)"):
        ref.sample(jax.random.key(0), np.ones((2, 3)))
    with pytest.raises(ValueError, match="E_true"):
        ref.sample(jax.random.key(0), np.array([[50.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="E_true"):
        ref.log_prob(np.ones(2), np.array([-5.0, 10.0]))
    with pytest.raises(ValueError, match="eta"):
        ref.sample(jax.random.key(0), np.array([[50.0, np.nan], [60.0, 0.0]]))
    with pytest.raises(ValueError, match=r"e_reco must have shape \(N=2,\)"):
        ref.log_prob(np.ones(3), good)
    with pytest.raises(ValueError, match="e_reco must be finite"):
        ref.log_prob(np.array([1.0, np.inf]), good)
    with pytest.raises(ValueError, match="e_reco must be > 0"):
        ref.calibrate(np.array([10.0, 0.0]))
    with pytest.raises(ValueError, match="e_true_gev must be > 0"):
        ref.sigma_gev(-1.0)
    with pytest.raises(ValueError, match="e_true_gev must be finite"):
        ref.mean_response(np.nan)
    with pytest.raises(ValueError, match="stochastic"):
        JetResponse(1.0, 0.0, -0.1, 0.0, 0.0)
    with pytest.raises(ValueError, match="s0"):
        JetResponse(0.0, 0.0, 0.1, 0.0, 0.0)
    with pytest.raises(ValueError, match="must not vanish"):
        JetResponse(1.0, 0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="factor"):
        ref.with_scale(0.0)
    with pytest.raises(ValueError, match="missing"):
        JetResponse.from_dict({"s0": 1.0})
    with pytest.raises(ValueError, match="energies_gev"):
        JetResponse.from_calorimeter(jax.random.key(0), energies_gev=(5.0, 10.0, 20.0))
    with pytest.raises(ValueError, match="n_per_energy"):
        JetResponse.from_calorimeter(jax.random.key(0), n_per_energy=3)


def test_from_calorimeter_agrees_with_embedded_constants():
    """Re-derive the reference from 200 showers per energy (an independent sample: another key) and compare with
    the embedded fit of 2000 per energy. Both fits use the same energies and (up to noise) the same weights, so the
    misfit of the ln E scale form (chi2 16.8 / 6 in the embedded fit) is common to both and cancels in the
    difference; what remains is statistical, with sigma = sqrt(err_small^2 + err_embedded^2). Tolerance 4 sigma per
    parameter (5 parameters, false alarm ~3e-4)."""
    fitted, report = JetResponse.from_calorimeter(jax.random.key(1), n_per_energy=200)
    assert report.n_per_energy == 200 and len(report.table.rows) == 8 and report.ndf_mean == 6
    assert report.ndf_resolution == 5
    for name, meas in report.parameters.items():
        assert getattr(fitted, name) == meas.value
        sigma = math.hypot(meas.error, _DEFAULT_ERRORS[name])
        assert abs(meas.value - _DEFAULT_PARAMS[name]) < 4 * sigma, (name, meas, _DEFAULT_PARAMS[name])
    # the errors scale like 1 / sqrt(n): ten times fewer showers, ~sqrt(10) larger errors (c, near its bound, aside)
    for name in ("s0", "s1", "a", "b"):
        assert 2.0 < report.parameters[name].error / _DEFAULT_ERRORS[name] < 5.0, name
    # the points scatter about the fits as their errors say: chi2 below the 0.999 quantile
    assert report.chi2_mean < stats.chi2.ppf(0.999, 6) and report.chi2_resolution < stats.chi2.ppf(0.999, 5)


def test_from_showers_equals_from_calorimeter():
    """from_showers on the calorimeter's own showers (same key) is from_calorimeter, bit for bit, and shuffling the
    showers changes nothing but rounding; it rejects too few energies or showers per energy. (200 showers at the 8
    default energies: the simulator kernel compiled for the test above, ~1 s after it.)"""
    from surrinf.sim import calorimeter

    energies, n, key = (5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0), 200, jax.random.key(4)
    ref, ref_report = JetResponse.from_calorimeter(key, energies_gev=energies, n_per_energy=n)
    calo = calorimeter("default")
    e_all = np.repeat(energies, n)
    visible = np.asarray(calo.simulate(key, e_all).showers, dtype=np.float64).sum(axis=1)
    scale = calo.params.energy_scale * calo.material.sampling_fraction
    fitted, report = JetResponse.from_showers(e_all, visible, scale)
    assert fitted == ref and report.parameters == ref_report.parameters and report.n_per_energy == n
    np.testing.assert_array_equal(report.resolution_err, ref_report.resolution_err)
    perm = np.random.default_rng(0).permutation(e_all.size)  # shuffled showers: the same groups, the same fit
    shuffled, rep2 = JetResponse.from_showers(e_all[perm], visible[perm], scale)
    np.testing.assert_array_equal(np.sort(rep2.energies_gev), np.asarray(energies))
    assert shuffled.to_dict() == pytest.approx(ref.to_dict(), rel=1e-6)
    with pytest.raises(ValueError, match=">= 4 beam energies"):
        JetResponse.from_showers(e_all[e_all < 50], visible[e_all < 50], scale)
    with pytest.raises(ValueError, match=">= 10 showers"):
        JetResponse.from_showers(e_all[n - 9 :], visible[n - 9 :], scale)
    with pytest.raises(ValueError, match="same shape"):
        JetResponse.from_showers(e_all, visible[1:], scale)


# --------------------------------------------------------------------------------------------- surrogate


@pytest.fixture(scope="module")
def steep_ref(ref) -> JetResponse:
    """The default resolution with a steep energy scale (mu from 0.94 at 20 GeV to 1.04 at 500 GeV, a change of
    several resolutions) so that a flow that had not learned the E dependence of the mean fails the test."""
    return JetResponse(**{**ref.to_dict(), "s0": 0.99, "s1": 0.03})


@pytest.fixture(scope="module")
def trained_flow(steep_ref):
    rng = np.random.default_rng(0)
    n = 5000
    e = np.exp(rng.uniform(np.log(20.0), np.log(500.0), n))
    eta = rng.uniform(-2.5, 2.5, n)
    # a deliberately tiny flow (one spline layer) and no validation split: the test budget is XLA compilation
    tc = TrainConfig(batch_size=250, max_steps=400, learning_rate=5e-3, val_fraction=0.0, checkpoint_every=0)
    cfg = {"n_layers": 1, "hidden": [16], "n_bins": 8}
    flow, result = fit_jet_response_flow(jax.random.key(0), steep_ref, e, eta, flow_config=cfg, train_config=tc)
    return flow, result


def test_flow_learns_response_mean_and_width(trained_flow, steep_ref):
    flow, result = trained_flow
    assert result.steps_run == 400 and isinstance(flow, JetResponseFlow) and isinstance(flow, ResponseModel)
    n = 4000
    energies = np.array([30.0, 300.0])
    cond = np.stack([np.repeat(energies, n), np.zeros(2 * n)], axis=1)
    y = np.asarray(flow.sample(jax.random.key(5), cond))
    assert y.dtype == np.float32 and y.shape == (2 * n,)
    r = y.reshape(2, n).astype(np.float64) / energies[:, None]
    mu = np.asarray(steep_ref.mean_response(energies))
    sig = np.asarray(steep_ref.relative_resolution(energies))
    # Mean: 4 sampling errors of the 4000-draw check sample (4 sig / sqrt(n) = 0.06 sig) plus a model tolerance of
    # 0.3 sig for a one-layer flow trained for 400 steps on 5000 jets (measured: |bias| <= 0.03 sig; the 5000 training
    # jets alone fix the conditional mean to ~0.05 sig). A flow that had not learned the E dependence would sit near
    # the training mean 0.99: off by 1.1 sig(30) and 3 sig(300), far outside.
    np.testing.assert_array_less(np.abs(r.mean(axis=1) - mu), 4 * sig / math.sqrt(n) + 0.3 * sig)
    # Width: the resolution changes by a factor 3 between 30 and 300 GeV; 10 % = 4 sampling errors of the sd
    # (4 / sqrt(2 n) = 4.5 %) plus 5.5 % model tolerance (measured: within 2.5 %).
    np.testing.assert_allclose(r.std(axis=1), sig, rtol=0.1)


def test_flow_log_prob_normalised(trained_flow):
    flow, _ = trained_flow
    # Integrate over x = (E_reco / E - loc) / scale in [-12, 12]: outside [-bound, bound] every spline is the
    # identity, so the mass beyond |x| = 12 is the Gaussian tail 2e-33. Trapezoid with 8000 points on the C1 spline
    # density (h = 3e-3 in x, error ~h^2 max|p''| / 12 < 1e-5) and float32 log densities: 1 within 1e-4.
    x = np.linspace(-12.0, 12.0, 8000)
    for energy, eta in ((40.0, 0.7), (250.0, -1.9)):
        y = energy * (flow.loc + flow.scale * x)
        lp = np.asarray(flow.log_prob(y, np.stack([np.full(x.size, energy), np.full(x.size, eta)], axis=1)))
        assert lp.dtype == np.float32
        assert np.trapezoid(np.exp(lp.astype(np.float64)), y) == pytest.approx(1.0, abs=1e-4)


def test_flow_save_load_round_trip(trained_flow, tmp_path):
    flow, _ = trained_flow
    path = save(flow, tmp_path / "jet_flow", flow.config())
    loaded, info = load(path)
    assert info["model_type"] == "jet_response_flow" and isinstance(loaded, JetResponseFlow)
    assert loaded.config() == flow.config()
    cond = np.stack([np.geomspace(20.0, 500.0, 8000), np.linspace(-2.0, 2.0, 8000)], axis=1)
    key = jax.random.key(9)
    a, b = np.asarray(flow.sample(key, cond)), np.asarray(loaded.sample(key, cond))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.asarray(flow.log_prob(a, cond)), np.asarray(loaded.log_prob(a, cond)))


def test_flow_bad_inputs(trained_flow, steep_ref):
    flow, _ = trained_flow
    with pytest.raises(ValueError, match="conditions"):
        flow.sample(jax.random.key(0), np.ones((3, 4)))
    with pytest.raises(ValueError, match="E_true"):
        flow.log_prob(np.ones(2), np.array([[10.0, 0.0], [-1.0, 0.0]]))
    with pytest.raises(ValueError, match="eta must have the shape"):
        fit_jet_response_flow(jax.random.key(0), steep_ref, np.ones(10), np.zeros(9))
    with pytest.raises(ValueError, match="e_true_gev must be > 0"):
        fit_jet_response_flow(jax.random.key(0), steep_ref, np.array([10.0, 0.0]), np.zeros(2))
    with pytest.raises(ValueError, match="fixed by the jet response"):
        fit_jet_response_flow(jax.random.key(0), steep_ref, np.ones(10), np.zeros(10), flow_config={"dim": 2})


def test_generate_is_the_deterministic_sampler(trained_flow, steep_ref):
    # sample(key) == generate(the standard normals sample would draw); the flow's map is monotone in the noise, so the
    # same noise couples the flow and the reference by quantiles (common random numbers in surrinf.kinfit.measure_jets).
    flow, _ = trained_flow
    cond = np.stack([np.geomspace(20.0, 500.0, 8000), np.linspace(-2.0, 2.0, 8000)], axis=1)
    key = jax.random.key(11)
    z32 = jax.random.normal(key, (8000, 1), dtype=jnp.float32)[:, 0]
    np.testing.assert_array_equal(np.asarray(flow.generate(z32, cond)), np.asarray(flow.sample(key, cond)))
    with jax.enable_x64(True):
        z64 = jax.random.normal(key, (8000,), dtype=jnp.float64)
    np.testing.assert_array_equal(np.asarray(steep_ref.generate(z64, cond)), np.asarray(steep_ref.sample(key, cond)))
    z = np.linspace(-3.0, 3.0, 8000)
    e_fixed = np.stack([np.full(8000, 100.0), np.zeros(8000)], axis=1)
    assert np.all(np.diff(np.asarray(flow.generate(z, e_fixed), dtype=np.float64)) >= 0)  # monotone in the noise
    with pytest.raises(ValueError, match="noise must have shape"):
        flow.generate(z[:10], e_fixed)
