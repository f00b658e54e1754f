"""surrinf.sensitivity: workspaces from histograms, discovery significance (asymptotic, toys), pyhf backend switch."""

from __future__ import annotations

import json
import math
import os

import jax
import numpy as np
import pyhf
import pytest
from scipy.stats import norm, poisson

from surrinf.sensitivity.backend import pyhf_backend
from surrinf.sensitivity.significance import DiscoveryResult, asimov_z0, discovery_significance, toy_q0
from surrinf.sensitivity.workspace import (
    Sample,
    build_workspace,
    symmetrise_fidelity,
    workspace_from_json,
    workspace_to_json,
)

SIG = [10.0, 20.0, 8.0]
BKG = [80.0, 100.0, 60.0]


def full_workspace(data=(90.0, 125.0, 70.0)) -> pyhf.Workspace:
    """3 bins, every systematic: lumi, background normsys, staterror on both, jes on both, surrogate fidelity."""
    return build_workspace(
        Sample("signal", SIG, [0.5, 0.6, 0.3]),
        Sample("background", BKG, [2.0, 3.0, 1.0]),
        bin_edges=[0.0, 1.0, 2.0, 3.0],
        jes={"background": ([82.0, 101.0, 58.0], [78.0, 99.0, 62.0]), "signal": ([10.5, 20.0, 8.0], [9.5, 20.0, 8.0])},
        fidelity={"signal": (SIG, [11.0, 19.0, 8.0])},
        data=data,
    )


def counting_workspace(s: float, b: float, data=None) -> pyhf.Workspace:
    """One bin, mu the only parameter."""
    return build_workspace(
        Sample("signal", [s]),
        Sample("background", [b]),
        lumi_uncertainty=None,
        background_norm_uncertainty=None,
        data=data,
    )


def ccgv_spec(s: float, b: float, sigma_b: float) -> dict:
    """One bin with a Poisson-constrained background: pyhf shapesys has tau = (b / sigma_b)^2 as auxiliary datum and
    rate gamma * tau, i.e. CCGV's auxiliary count m ~ Poisson(tau' * gamma b) with tau' = b / sigma_b^2."""
    return {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {"name": "signal", "data": [s], "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
                    {
                        "name": "background",
                        "data": [b],
                        "modifiers": [{"name": "b_unc", "type": "shapesys", "data": [sigma_b]}],
                    },
                ],
            }
        ],
        "observations": [{"name": "SR", "data": [b]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }


def state():
    return pyhf.tensorlib.name, pyhf.tensorlib.precision, bool(jax.config.jax_enable_x64)


# ---------------------------------------------------------------------------------------------------------- backend


def test_pyhf_backend_contains_the_jax_switch():
    before = state()
    assert before[0] == "numpy" and not before[2]  # the project's default: pyhf numpy, JAX float32
    with pyhf_backend("jax"):
        assert state() == ("jax", "64b", True)
        assert pyhf.tensorlib.astensor([1.0]).dtype == np.float64
    assert state() == before
    with jax.enable_x64(False), pyhf_backend("jax"):  # a caller's float32 region cannot make pyhf float32
        assert pyhf.tensorlib.astensor([1.0]).dtype == np.float64
    assert state() == before
    with pytest.raises(RuntimeError, match="inside"), pyhf_backend("jax"):
        raise RuntimeError("inside")
    assert state() == before
    with pyhf_backend("numpy"):
        assert state() == ("numpy", "64b", False)
    with pytest.raises(ValueError, match="backend must be one of"), pyhf_backend("torch"):
        pass


# -------------------------------------------------------------------------------------------------------- workspace


def test_build_workspace_spec_validates_and_has_every_modifier():
    ws = full_workspace()
    pyhf.schema.validate(dict(ws), "workspace.json")
    samples = {s["name"]: s for s in ws["channels"][0]["samples"]}
    mods = {name: {m["name"]: m for m in s["modifiers"]} for name, s in samples.items()}
    assert set(mods["signal"]) == {"mu", "lumi", "staterror_SR", "jes", "surrogate_fidelity"}
    assert set(mods["background"]) == {"lumi", "background_norm", "staterror_SR", "jes"}
    assert mods["background"]["background_norm"]["data"] == {"hi": 1.1, "lo": 0.9}
    fid = mods["signal"]["surrogate_fidelity"]["data"]  # delta = (1, -1, 0): symmetric two-sided around nominal
    assert fid == {"hi_data": [11.0, 19.0, 8.0], "lo_data": [9.0, 21.0, 8.0]}
    params = {p["name"]: p for p in ws["measurements"][0]["config"]["parameters"]}
    assert params["lumi"]["auxdata"] == [1.0] and params["lumi"]["sigmas"] == [0.017]
    assert params["mu"]["bounds"] == [[0.0, 10.0]]
    model = ws.model()
    assert model.config.poi_name == "mu"
    assert ws.data(model, include_auxdata=False) == [90.0, 125.0, 70.0]
    # default observations: the Asimov background-only expectation, exactly the background counts
    ws_asimov = build_workspace(Sample("signal", SIG), Sample("background", BKG))
    m = ws_asimov.model()
    pars = m.config.suggested_init()
    pars[m.config.poi_index] = 0.0
    assert ws_asimov.data(m, include_auxdata=False) == BKG
    np.testing.assert_allclose(m.expected_actualdata(pars), BKG, rtol=1e-12)
    assert set(m.config.par_order) == {"lumi", "mu", "background_norm"}


def test_fidelity_symmetrisations():
    nominal, ref, sur = np.array([10.0, 5.0, 1.0]), np.array([10.0, 5.0, 1.0]), np.array([12.0, 4.0, 3.0])
    up, down = symmetrise_fidelity(nominal, ref, sur)  # delta = (2, -1, 2)
    np.testing.assert_array_equal(up, [12.0, 4.0, 3.0])
    np.testing.assert_array_equal(down, [8.0, 6.0, 0.0])  # 1 - 2 < 0 is clipped to 0 events
    up, down = symmetrise_fidelity(nominal, ref, sur, "envelope")
    np.testing.assert_array_equal(up, [12.0, 6.0, 3.0])
    np.testing.assert_array_equal(down, [8.0, 4.0, 0.0])
    with pytest.raises(ValueError, match="fidelity_symmetrisation"):
        symmetrise_fidelity(nominal, ref, sur, "max")


def test_workspace_json_round_trip(tmp_path):
    ws = full_workspace()
    path = workspace_to_json(ws, tmp_path / "ws.json")
    assert os.listdir(tmp_path) == ["ws.json"]  # atomic write: no temporary file left
    loaded = workspace_from_json(path)
    assert json.dumps(dict(loaded), sort_keys=True) == json.dumps(dict(ws), sort_keys=True)
    m1, m2 = ws.model(), loaded.model()
    pars = np.asarray(m1.config.suggested_init()) + 0.05  # away from nominal: every modifier contributes
    np.testing.assert_array_equal(m1.expected_data(pars), m2.expected_data(pars))
    (tmp_path / "bad.json").write_text('{"channels": []}')
    with pytest.raises(ValueError, match="not a valid pyhf workspace"):
        workspace_from_json(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="not a JSON file"):
        workspace_from_json(tmp_path / "broken.json")


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Sample("s", [1.0, -1.0]), r"counts must be >= 0"),
        (lambda: Sample("s", [1.0, np.nan]), r"counts must be finite"),
        (lambda: Sample("s", [[1.0]]), r"must have shape \(n_bins,\)"),
        (lambda: Sample("s", [1.0, 2.0], [0.1]), r"stat_uncertainty must have shape \(2,\)"),
        (lambda: Sample("", [1.0]), r"Sample name must be a non-empty string"),
        (lambda: build_workspace(Sample("s", [1.0, 2.0]), Sample("b", [1.0])), r"background has 1 bins"),
        (lambda: build_workspace(Sample("s", [1.0]), Sample("s", [1.0])), r"different names"),
        (lambda: build_workspace(Sample("s", [1.0]), Sample("b", [1.0]), data=[1.0, 2.0]), r"data must have shape"),
        (lambda: build_workspace(Sample("s", [1.0]), Sample("b", [1.0]), data=[-1.0]), r"data must be >= 0"),
        (lambda: build_workspace(Sample("s", [1.0]), Sample("b", [1.0]), lumi_uncertainty=1.5), r"lumi_uncertainty"),
        (
            lambda: build_workspace(Sample("s", [1.0]), Sample("b", [1.0]), background_norm_uncertainty=-0.1),
            r"background_norm_uncertainty",
        ),
        (lambda: build_workspace(Sample("s", [1.0]), Sample("b", [1.0]), bin_edges=[0.0, 0.0]), r"bin_edges"),
        (lambda: build_workspace(Sample("s", [1.0]), Sample("b", [1.0]), jes={"x": ([1.0], [1.0])}), r"unknown sample"),
        (lambda: build_workspace(Sample("s", [1.0]), Sample("b", [1.0]), jes={"b": ([1.0],)}), r"must be a pair"),
        (
            lambda: build_workspace(Sample("s", [1.0]), Sample("b", [1.0]), fidelity={"s": ([1.0], [1.0, 2.0])}),
            r"counts_surrogate must have shape \(1,\)",
        ),
        (
            lambda: build_workspace(Sample("s", [1.0]), Sample("b", [1.0]), fidelity_symmetrisation="max"),
            r"fidelity_symmetrisation must be one of",
        ),
        (lambda: build_workspace(Sample("s", [1.0]), Sample("b", [1.0]), poi="lumi"), r"poi must not be"),
    ],
)
def test_bad_workspace_inputs_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ------------------------------------------------------------------------------------------------ asymptotic Z0


def test_asimov_z0_closed_forms():
    # CCGV values quoted in the brief (and in the literature): (10, 100, 5) -> 0.877, (5, 1, 0.5) -> 2.764
    assert round(asimov_z0(10.0, 100.0, 5.0), 3) == 0.877
    assert round(asimov_z0(5.0, 1.0, 0.5), 3) == 2.764
    np.testing.assert_allclose(asimov_z0(10.0, 100.0, 1e-4), asimov_z0(10.0, 100.0), rtol=1e-6)  # sigma_b -> 0
    np.testing.assert_allclose(asimov_z0(1.0, 1e6), 1e-3, rtol=1e-5)  # s << b: s / sqrt(b)
    np.testing.assert_allclose(asimov_z0([0.0, 10.0], [100.0, 100.0]), [0.0, asimov_z0(10.0, 100.0)], rtol=1e-15)
    with pytest.raises(ValueError, match="b must be"):
        asimov_z0(1.0, 0.0)
    with pytest.raises(ValueError, match="sigma_b must be"):
        asimov_z0(1.0, 1.0, np.nan)


@pytest.mark.parametrize(("s", "b"), [(10.0, 100.0), (5.0, 1.0), (17.0, 100.0)])
def test_asymptotic_expected_z0_equals_asimov_formula(s, b):
    n_obs = b + 1.5 * s
    result = discovery_significance(counting_workspace(s, b, data=[n_obs]))
    assert isinstance(result, DiscoveryResult) and result.method == "asymptotic"
    z_a = asimov_z0(s, b)
    assert abs(result.z0_expected_median / z_a - 1.0) < 1e-6
    for n, z in result.z0_expected_bands.items():  # asymptotically Z0 = sqrt(q0_A) + n, reported >= 0
        assert abs(z - max(z_a + n, 0.0)) < 1e-6 * z_a
    # observed: q0 = 2 (n ln(n / b) - (n - b)) for n > b
    z_obs = math.sqrt(2.0 * (n_obs * math.log(n_obs / b) - (n_obs - b)))
    assert abs(result.z0_observed / z_obs - 1.0) < 1e-6
    assert abs(result.p0_observed / norm.sf(z_obs) - 1.0) < 1e-5
    assert result.z0_toy_error is None and result.n_toys is None


@pytest.mark.parametrize(("s", "b", "sigma_b"), [(10.0, 100.0, 5.0), (5.0, 1.0, 0.5)])
def test_asymptotic_z0_with_background_uncertainty_equals_ccgv(s, b, sigma_b):
    model = pyhf.Workspace(ccgv_spec(s, b, sigma_b)).model()
    result = discovery_significance(model)  # a model without data: expected only
    assert result.z0_observed is None and result.p0_observed is None
    assert abs(result.z0_expected_median / asimov_z0(s, b, sigma_b) - 1.0) < 1e-4


def test_asymptotic_jax_backend_matches_numpy_and_restores_state():
    ws = counting_workspace(10.0, 100.0, data=[118.0])
    before = state()
    num = discovery_significance(ws)
    jx = discovery_significance(ws, backend="jax")
    assert state() == before
    assert abs(jx.z0_observed - num.z0_observed) < 1e-6 and abs(jx.z0_expected_median - num.z0_expected_median) < 1e-6


def test_discovery_significance_data_forms_and_errors():
    ws = full_workspace()
    model = ws.model()
    full = np.asarray(ws.data(model))
    a = discovery_significance(model, full)
    b = discovery_significance(model, full[: model.config.nmaindata])  # main counts only: nominal aux appended
    assert a == b
    assert a.table().rows[0][0] == "observed" and len(a.table().rows) == 6
    for kwargs, match in [
        ({"method": "cls"}, "method must be one of"),
        ({"backend": "torch"}, "backend must be one of"),
        ({"method": "toys"}, "seed is required"),
        ({"method": "toys", "seed": -1}, "seed must be"),
        ({"method": "toys", "seed": 0, "n_toys": 5}, "n_toys must be an integer >= 10"),
    ]:
        with pytest.raises(ValueError, match=match):
            discovery_significance(ws, **kwargs)
    for data, match in [([1.0, 2.0], "data must have shape"), ([1.0, np.nan, 2.0], "finite"), ([1, -2, 3], ">= 0")]:
        with pytest.raises(ValueError, match=match):
            discovery_significance(model, data)
    with pytest.raises(ValueError, match=r"pyhf\.Workspace or pyhf\.pdf\.Model"):
        discovery_significance(dict(ws))
    spec = dict(counting_workspace(1.0, 10.0))
    spec["measurements"][0]["config"]["parameters"][0]["bounds"] = [[0.5, 10.0]]
    with pytest.raises(ValueError, match="POI bounds must contain mu = 0"):
        discovery_significance(pyhf.Workspace(spec))


# ---------------------------------------------------------------------------------------------------------- toys


@pytest.fixture(scope="module")
def counting_model():
    """s = 55, b = 1000 in one bin: Z0 ~ 1.7 (p0 ~ 0.04, measurable with 2000 toys); large counts, so asymptotics
    hold and the Poisson steps in Z0 (1/sqrt(b) ~ 0.03) are small. One model object: its toy kernel compiles once."""
    return counting_workspace(55.0, 1000.0).model()


def test_toy_z0_agrees_with_exact_poisson_and_asymptotics(counting_model):
    n_obs, b, n_toys = 1060.0, 1000.0, 2000
    before = state()
    toys = discovery_significance(counting_model, [n_obs], method="toys", n_toys=n_toys, seed=7)
    asym = discovery_significance(counting_model, [n_obs])
    assert state() == before  # the toys' JAX backend was contained
    assert toys.method == "toys" and toys.n_toys == n_toys and toys.n_unconverged == 0
    # the toy fitter's q0 equals pyhf's on the data and on the Asimov dataset (pyhf's SLSQP tolerance ~1e-7)
    assert abs(toys.q0_observed - asym.q0_observed) < 1e-6 and abs(toys.q0_asimov - asym.q0_asimov) < 1e-6
    # one bin, no nuisance: the null toy p0 estimates the exact Poisson tail P(n >= n_obs | b); binomial 3 sigma
    p_exact = poisson.sf(n_obs - 1, b)
    assert abs(toys.p0_observed - p_exact) < 3.0 * math.sqrt(p_exact * (1 - p_exact) / n_toys)
    # toy Z0 vs the asymptotic Z0 within 3 Monte Carlo sigma (the Poisson/asymptotic difference, ~0.01 here, is
    # small against the toy error ~0.055)
    assert 0.03 < toys.z0_toy_error < 0.1
    assert abs(toys.z0_observed - asym.z0_observed) < 3.0 * toys.z0_toy_error
    assert abs(toys.z0_expected_median - asym.z0_expected_median) < 3.0 * toys.z0_expected_toy_error
    for n in (-1, 1):  # the +-1 sigma bands: Poisson-discrete quantiles, compared within 3 toy sigma of the median
        assert abs(toys.z0_expected_bands[n] - asym.z0_expected_bands[n]) < 3.0 * toys.z0_expected_toy_error


def test_toys_are_reproducible(counting_model):
    run = lambda seed: discovery_significance(counting_model, [1060.0], method="toys", n_toys=150, seed=seed)
    first, again, other = run(3), run(3), run(4)
    assert first == again
    assert first != other
    assert run(jax.random.key(3)) == run(jax.random.key(3))


def test_toy_fitter_matches_pyhf_with_all_systematics():
    ws = full_workspace()
    model = ws.model()
    toys = discovery_significance(model, ws.data(model), method="toys", n_toys=400, seed=11)
    asym = discovery_significance(model, ws.data(model))
    assert toys.n_unconverged == 0
    assert abs(toys.q0_observed - asym.q0_observed) < 1e-5 and abs(toys.q0_asimov - asym.q0_asimov) < 1e-5
    # 400 toys: p0 ~ 0.05 +- 0.011, i.e. Z0 +- ~0.1; the toys and the asymptotic formula agree within 3 toy sigma
    assert abs(toys.z0_observed - asym.z0_observed) < 3.0 * toys.z0_toy_error
    assert abs(toys.z0_expected_median - asym.z0_expected_median) < 3.0 * toys.z0_expected_toy_error
    # the vectorised fitter on a few pseudo-datasets (including a deficit) against pyhf's q0 fits
    rng = np.random.default_rng(5)
    main = rng.poisson(np.asarray(BKG) + np.asarray(SIG) * np.array([[0.0], [1.0], [2.0], [-0.5]]))
    data = np.concatenate([main, np.tile(model.config.auxdata, (4, 1))], axis=1)
    q, _, decrement = toy_q0(model, data)
    args = (model.config.suggested_init(), model.config.suggested_bounds(), model.config.suggested_fixed())
    expected = [float(pyhf.infer.test_statistics.q0(0.0, d, model, *args)) for d in data]
    np.testing.assert_allclose(q, expected, atol=2e-6)  # pyhf's SLSQP stops at ~1e-7 in 2 ln L
    assert np.all(decrement < 1e-10)
