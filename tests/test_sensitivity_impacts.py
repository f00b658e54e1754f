"""Impacts, ranking, pulls and yields of surrinf.sensitivity.impacts, cross-checked against cabinetry on the same
workspaces (cabinetry runs the same MIGRAD + HESSE procedure through pyhf, so agreement is to optimizer precision;
the acceptance tolerance 1e-3 is far above that and far below the quantities compared)."""

from __future__ import annotations

import copy
import json
import logging

import cabinetry
import jax
import numpy as np
import pyhf
import pytest

from surrinf.report import Measurement
from surrinf.sensitivity.impacts import (
    FitResult,
    ImpactResult,
    fit,
    impacts,
    plot_pulls,
    plot_ranking,
    yields,
)

logging.getLogger("cabinetry").setLevel(logging.WARNING)

TOL = 1e-3  # acceptance tolerance vs cabinetry: absolute on parameters and impacts, relative on yields


def sr_spec() -> dict:
    """3-bin signal region: signal (normfactor mu) and background with lumi, staterror, a normsys, a 'jes' histosys on
    both samples and a 'surrogate_fidelity' histosys on the signal (counts in events)."""
    return {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "signal",
                        "data": [4.0, 10.0, 6.0],
                        "modifiers": [
                            {"name": "mu", "type": "normfactor", "data": None},
                            {"name": "lumi", "type": "lumi", "data": None},
                            {"name": "staterror_SR", "type": "staterror", "data": [0.5, 1.0, 0.8]},
                            {
                                "name": "jes",
                                "type": "histosys",
                                "data": {"hi_data": [4.4, 10.5, 6.1], "lo_data": [3.7, 9.4, 5.8]},
                            },
                            {
                                "name": "surrogate_fidelity",
                                "type": "histosys",
                                "data": {"hi_data": [4.3, 11.4, 5.6], "lo_data": [3.8, 8.9, 6.3]},
                            },
                        ],
                    },
                    {
                        "name": "background",
                        "data": [50.0, 40.0, 30.0],
                        "modifiers": [
                            {"name": "lumi", "type": "lumi", "data": None},
                            {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.08, "lo": 0.93}},
                            {"name": "staterror_SR", "type": "staterror", "data": [2.0, 1.8, 1.5]},
                            {
                                "name": "jes",
                                "type": "histosys",
                                "data": {"hi_data": [52.0, 41.5, 30.5], "lo_data": [48.5, 38.8, 29.2]},
                            },
                        ],
                    },
                ],
            }
        ],
        "observations": [{"name": "SR", "data": [58.0, 55.0, 33.0]}],
        "measurements": [
            {
                "name": "meas",
                "config": {
                    "poi": "mu",
                    "parameters": [
                        {"name": "lumi", "auxdata": [1.0], "sigmas": [0.02], "bounds": [[0.5, 1.5]], "inits": [1.0]}
                    ],
                },
            }
        ],
        "version": "1.0.0",
    }


def cr_spec() -> dict:
    """3-bin region with a Poisson-constrained shapesys, a free background normfactor and a normsys held fixed."""
    return {
        "channels": [
            {
                "name": "CR",
                "samples": [
                    {
                        "name": "signal",
                        "data": [8.0, 24.0, 4.0],
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {
                        "name": "background",
                        "data": [80.0, 60.0, 40.0],
                        "modifiers": [
                            {"name": "bkg_shape", "type": "shapesys", "data": [6.0, 5.0, 4.0]},
                            {"name": "frozen_sys", "type": "normsys", "data": {"hi": 1.05, "lo": 0.95}},
                            {"name": "k_bkg", "type": "normfactor", "data": None},
                        ],
                    },
                ],
            }
        ],
        "observations": [{"name": "CR", "data": [96.0, 86.0, 38.0]}],
        "measurements": [
            {
                "name": "m",
                "config": {"poi": "mu", "parameters": [{"name": "frozen_sys", "fixed": True, "inits": [0.5]}]},
            }
        ],
        "version": "1.0.0",
    }


def _cabinetry_reference(spec: dict) -> dict:
    model, data = cabinetry.model_utils.model_and_data(spec)
    fr = cabinetry.fit.fit(model, data)
    return {
        "model": model,
        "fit": fr,
        "ranking": cabinetry.fit.ranking(model, data, fit_results=fr),
        "prefit": cabinetry.model_utils.prediction(model),
        "postfit": cabinetry.model_utils.prediction(model, fit_results=fr),
    }


@pytest.fixture(scope="module")
def sr():
    spec = sr_spec()
    ours = impacts(spec)
    return {"spec": spec, "impacts": ours, "ref": _cabinetry_reference(spec)}


@pytest.fixture(scope="module")
def cr():
    spec = cr_spec()
    return {"spec": spec, "impacts": impacts(spec), "ref": _cabinetry_reference(spec)}


def _cabinetry_order(rr) -> list[str]:
    """cabinetry.visualize.ranking's order: decreasing max(|post-fit up|, |post-fit down|)."""
    key = np.maximum(np.abs(rr.postfit_up), np.abs(rr.postfit_down))
    return [rr.labels[i] for i in np.argsort(key)[::-1]]


# ---------------------------------------------------------------------------------------------- cabinetry agreement
@pytest.mark.parametrize("name", ["sr", "cr"])
def test_fit_matches_cabinetry(name, request):
    case = request.getfixturevalue(name)
    ours, ref = case["impacts"].fit, case["ref"]["fit"]
    assert ours.labels == tuple(ref.labels)
    np.testing.assert_allclose(ours.bestfit, ref.bestfit, rtol=0, atol=TOL)
    np.testing.assert_allclose(ours.uncertainty, ref.uncertainty, rtol=0, atol=TOL)
    np.testing.assert_allclose(ours.corr_mat, ref.corr_mat, rtol=0, atol=TOL)
    assert ours.best_twice_nll == pytest.approx(ref.best_twice_nll, abs=TOL)
    # the fit is a real optimum: -2 ln L at the best fit equals pyhf's own evaluation there
    model = case["ref"]["model"]
    data = pyhf.Workspace(case["spec"]).data(model)
    assert float(-2 * model.logpdf(ours.bestfit, data)[0]) == pytest.approx(ours.best_twice_nll, abs=1e-9)


@pytest.mark.parametrize("name", ["sr", "cr"])
def test_impacts_and_ranking_match_cabinetry(name, request):
    case = request.getfixturevalue(name)
    ours, rr = case["impacts"], case["ref"]["ranking"]
    assert ours.labels == tuple(rr.labels)
    for attr in ("prefit_up", "prefit_down", "postfit_up", "postfit_down"):
        np.testing.assert_allclose(getattr(ours, attr), getattr(rr, attr), rtol=0, atol=TOL, err_msg=attr)
    # the ranking order is well defined (adjacent keys differ by more than the tolerance) and the same
    key = np.sort(ours.max_postfit_impact)[::-1]
    assert np.all(np.diff(key)[key[1:] > 0] < -2 * TOL)
    n_nonzero = int(np.count_nonzero(key))
    assert list(ours.ranked_labels)[:n_nonzero] == _cabinetry_order(rr)[:n_nonzero]


def test_sr_impacts_are_physical(sr):
    ours = sr["impacts"]
    # every nuisance parameter of this workspace moves mu_hat: up and down impacts of opposite sign
    assert np.all(ours.prefit_up * ours.prefit_down < 0)
    assert np.all(ours.postfit_up * ours.postfit_down < 0)
    assert ours.ranked_labels[0] == "bkg_norm"  # 8 % background normalisation dominates a S/B ~ 0.2 measurement
    # the data barely constrain lumi beyond its 2 % auxiliary measurement: post- and pre-fit impacts agree to 5 %
    i = ours.labels.index("lumi")
    assert ours.postfit_up[i] == pytest.approx(ours.prefit_up[i], rel=0.05)


def test_fixed_and_unconstrained_parameters(cr):
    ours = cr["impacts"]
    f = ours.fit
    i_frozen = f.index("frozen_sys")
    assert f.fixed[i_frozen] and f.uncertainty[i_frozen] == 0.0 and f.bestfit[i_frozen] == 0.5
    j = ours.labels.index("frozen_sys")
    assert ours.prefit_up[j] == ours.prefit_down[j] == ours.postfit_up[j] == ours.postfit_down[j] == 0.0
    k = ours.labels.index("k_bkg")  # free normfactor: no pre-fit impact, a post-fit one
    assert ours.prefit_up[k] == ours.prefit_down[k] == 0.0
    assert abs(ours.postfit_up[k]) > 0.1
    assert "frozen_sys" not in f.pulls().labels and "k_bkg" not in f.pulls().labels


# ---------------------------------------------------------------------------------------------- pulls
@pytest.mark.parametrize("name", ["sr", "cr"])
def test_pulls_follow_cabinetry_conventions(name, request):
    case = request.getfixturevalue(name)
    model, ref = case["ref"]["model"], case["ref"]["fit"]
    pre_sigma = cabinetry.model_utils.prefit_uncertainties(model)
    theta0 = cabinetry.model_utils.asimov_parameters(model)
    pulls = case["impacts"].fit.pulls()
    expected = [lab for lab, s in zip(ref.labels, pre_sigma, strict=True) if s > 0]
    assert list(pulls.labels) == expected
    idx = [ref.labels.index(lab) for lab in pulls.labels]
    np.testing.assert_allclose(pulls.prefit_uncertainty, pre_sigma[idx], rtol=1e-12)
    np.testing.assert_allclose(pulls.nominal, theta0[idx], rtol=1e-12)
    np.testing.assert_allclose(pulls.pull, (ref.bestfit[idx] - theta0[idx]) / pre_sigma[idx], rtol=0, atol=TOL)
    np.testing.assert_allclose(pulls.constraint, ref.uncertainty[idx] / pre_sigma[idx], rtol=0, atol=TOL)


def test_poisson_constraint_convention(cr):
    pulls = cr["impacts"].fit.pulls()
    assert pulls.modifier_types == ("shapesys",) * 3
    assert pulls.constraint_types == ("poisson",) * 3
    # shapesys: gamma0 = 1 and sigma_pre = 1/sqrt(tau) = relative uncertainty, tau = (nominal / uncertainty)^2
    np.testing.assert_allclose(pulls.nominal, [1.0, 1.0, 1.0], rtol=1e-12)
    np.testing.assert_allclose(pulls.prefit_uncertainty, [6.0 / 80.0, 5.0 / 60.0, 4.0 / 40.0], rtol=1e-12)
    # two free normalisations cannot follow the 3-bin data: bin 2 (38 observed, ~44 expected from the other bins'
    # normalisation) pulls its gamma down and bin 0 up, each by more than 0.2 sigma_pre
    assert pulls.pull[2] < -0.2 and pulls.pull[0] > 0.2
    # the data add information: post-fit widths at most ~ the pre-fit ones (1/sqrt(tau) is only the Gaussian
    # approximation of the Poisson constraint width, so allow 5 %); the most pulled gamma is clearly constrained
    assert np.all((pulls.constraint > 0) & (pulls.constraint < 1.05))
    assert pulls.constraint[2] < 0.95


def test_asimov_fit_recovers_nominal(sr):
    spec = sr["spec"]
    ours = fit(spec, asimov=True)
    model, data = cabinetry.model_utils.model_and_data(spec, asimov=True)
    ref = cabinetry.fit.fit(model, data)
    np.testing.assert_allclose(ours.bestfit, ref.bestfit, rtol=0, atol=TOL)
    np.testing.assert_allclose(ours.uncertainty, ref.uncertainty, rtol=0, atol=TOL)
    # MIGRAD stops at EDM < 2e-4 (tolerance 0.1), so |theta_hat - theta0| <= sqrt(2 EDM) sigma_post ~ 0.02 sigma
    pulls = ours.pulls()
    assert np.max(np.abs(pulls.pull)) < 0.03
    assert ours.poi == pytest.approx(1.0, abs=0.03 * ours.poi_uncertainty)


# ---------------------------------------------------------------------------------------------- yields
@pytest.mark.parametrize("name", ["sr", "cr"])
def test_yields_match_cabinetry(name, request):
    case = request.getfixturevalue(name)
    y = yields(case["spec"], case["impacts"].fit)
    for ours, ref in ((y.postfit, case["ref"]["postfit"]), (y.prefit, case["ref"]["prefit"])):
        if name == "cr" and ours.label == "pre-fit":
            continue  # cabinetry evaluates the fixed frozen_sys at its aux value 0 pre-fit, we at its fixed 0.5
        np.testing.assert_allclose(ours.yields, np.asarray(ref.model_yields[0]), rtol=TOL)
        np.testing.assert_allclose(ours.stdev, np.asarray(ref.total_stdev_model_bins[0]), rtol=TOL)
        np.testing.assert_allclose(ours.channel_stdev[:, 0], np.asarray(ref.total_stdev_model_channels[0]), rtol=TOL)
        np.testing.assert_allclose(ours.channel_yields[-1, 0], np.sum(ref.model_yields[0]), rtol=TOL)
    assert ours.samples == tuple(case["ref"]["model"].config.samples)


def test_yields_default_fit_and_fixed_prefit_value(cr):
    spec = cr["spec"]
    y = yields(spec)  # fits the observations itself
    np.testing.assert_allclose(y.postfit.yields, yields(spec, cr["impacts"].fit).postfit.yields, rtol=1e-12)
    np.testing.assert_array_equal(y.data, [96.0, 86.0, 38.0])
    model = pyhf.Workspace(spec).model()
    pars = model.config.suggested_init()  # frozen_sys at its fixed 0.5, the rest at theta0
    expected = np.asarray(model.main_model.expected_data(pars, return_by_sample=True))
    np.testing.assert_allclose(y.prefit.yields, expected, rtol=1e-12)
    # pre-fit uncertainty of the background: the shapesys only (frozen_sys fixed, k_bkg free): 6, 5, 4 events scaled
    # by the frozen_sys factor
    b = y.prefit.samples.index("background")
    np.testing.assert_allclose(y.prefit.stdev[b], np.array([6.0, 5.0, 4.0]) * expected[b] / [80.0, 60.0, 40.0])


# ---------------------------------------------------------------------------------------------- tables and plots
def test_tables(sr, tmp_path):
    ours = sr["impacts"]
    tables = ours.tables()
    ranking = tables["ranking"]
    assert ranking.column("parameter") == list(ours.ranked_labels)
    i = ours.order[0]
    assert ranking.rows[0][1:5] == pytest.approx(
        [ours.prefit_up[i], ours.prefit_down[i], ours.postfit_up[i], ours.postfit_down[i]]
    )
    assert len(ours.table(max_pars=3).rows) == 3
    pulls = tables["pulls"]
    assert pulls.column("parameter") == list(ours.fit.pulls().labels)
    assert tables["fit"].column("parameter") == list(ours.fit.labels)
    paths = ranking.save(tmp_path, "ranking")
    assert json.loads(paths["json"].read_text())["columns"][0] == "parameter"

    y = yields(sr["spec"], ours.fit).tables()
    post = y["postfit"]
    assert post.columns == ["sample", "SR bin 0", "SR bin 1", "SR bin 2", "SR total"]
    assert post.column("sample") == ["background", "signal", "total", "data"]
    assert post.rows[-1][1:] == [58.0, 55.0, 33.0, 146.0]
    assert isinstance(post.rows[2][4], Measurement)
    assert post.rows[2][4].value == pytest.approx(sum(np.sum(s) for s in sr["ref"]["postfit"].model_yields[0]))


def test_plots(sr, tmp_path):
    ours = sr["impacts"]
    fig = plot_ranking(ours, tmp_path / "ranking.png", max_pars=5)
    assert (tmp_path / "ranking.png").stat().st_size > 1000
    ax_pulls = fig.axes[0]
    assert [t.get_text() for t in ax_pulls.get_yticklabels()] == list(ours.ranked_labels[:5])
    fig = plot_pulls(ours.fit, tmp_path / "pulls.png")
    assert (tmp_path / "pulls.png").stat().st_size > 1000
    shown = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert shown == ["jes", "surrogate_fidelity", "lumi", "bkg_norm"]  # staterror left out by default
    fig = plot_pulls(ours.fit.pulls(), include_staterror=True, exclude="lumi")
    assert len(fig.axes[0].get_yticklabels()) == 6
    with pytest.raises(ValueError, match="no parameter left"):
        plot_pulls(ours.fit, exclude=["jes", "surrogate_fidelity", "lumi", "bkg_norm"])


# ---------------------------------------------------------------------------------------------- inputs and backend
def test_data_argument_forms(sr):
    spec = sr["spec"]
    nominal = sr["impacts"].fit
    main_only = fit(pyhf.Workspace(spec), [58.0, 55.0, 33.0])
    np.testing.assert_array_equal(main_only.bestfit, nominal.bestfit)
    model = pyhf.Workspace(spec).model()
    aux = np.array(model.config.auxdata, dtype=float)
    aux[model.config.auxdata_order.index("jes")] = 0.5  # auxiliary measurement of jes moved by +0.5 sigma
    shifted = fit(spec, np.concatenate([[58.0, 55.0, 33.0], aux]))
    assert shifted.bestfit[shifted.index("jes")] > nominal.bestfit[nominal.index("jes")] + 0.2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"data": [1.0, 2.0]}, "data must be 1-d with 3 main-bin counts"),
        ({"data": [[58.0, 55.0, 33.0]]}, "data must be 1-d"),
        ({"data": [58.0, -1.0, 33.0]}, "main-bin counts >= 0"),
        ({"data": [58.0, np.nan, 33.0]}, "finite"),
        ({"data": [58.0, 55.0, 33.0], "asimov": True}, "either data or asimov"),
    ],
)
def test_bad_data(sr, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit(sr["spec"], **kwargs)


def test_bad_arguments(sr, cr):
    with pytest.raises(ValueError, match=r"workspace must be a pyhf\.Workspace"):
        fit([1, 2, 3])
    with pytest.raises(ValueError, match="not a valid pyhf workspace"):
        fit({"channels": []})
    with pytest.raises(ValueError, match="poi_name 'nope'"):
        impacts(sr["spec"], poi_name="nope")
    with pytest.raises(ValueError, match="do not match"):
        impacts(sr["spec"], fit_result=cr["impacts"].fit)
    with pytest.raises(ValueError, match="fit_result must be a FitResult"):
        yields(sr["spec"], fit_result={"bestfit": [1.0]})
    with pytest.raises(ValueError, match="max_pars"):
        sr["impacts"].table(max_pars=0)
    with pytest.raises(ValueError, match="label must be"):
        yields(cr["spec"], cr["impacts"].fit).table("fitted")


def test_impacts_with_other_poi_and_bounds(cr):
    spec = copy.deepcopy(cr["spec"])
    mu_config = {"name": "mu", "bounds": [[0.5, 10.0]]}
    spec["measurements"][0]["config"]["parameters"].append(mu_config)
    # mu_hat - sigma_mu = 1.04 - 0.69 < 0.5: the post-fit down impact of mu on k_bkg cannot be evaluated
    with pytest.raises(ValueError, match=r"post-fit down impact of mu fixes it at 0\.3\d+, outside its bounds"):
        impacts(spec, poi_name="k_bkg")
    mu_config["bounds"] = [[-10.0, 10.0]]
    ours = impacts(spec, poi_name="k_bkg")
    assert isinstance(ours, ImpactResult) and ours.poi_name == "k_bkg" and "mu" in ours.labels
    assert ours.poi == pytest.approx(cr["impacts"].fit.bestfit[cr["impacts"].fit.index("k_bkg")], abs=TOL)
    # mu and k_bkg are anti-correlated (both add counts): fixing mu higher lowers k_bkg_hat
    i = ours.labels.index("mu")
    assert ours.postfit_up[i] < 0 < ours.postfit_down[i]


def test_backend_is_contained(sr):
    """The numpy float64 backend is entered locally: a caller's backend, optimizer and jax_enable_x64 survive."""
    before = pyhf.get_backend()
    x64 = jax.config.jax_enable_x64
    try:
        pyhf.set_backend("numpy", precision="32b")
        caller = pyhf.get_backend()
        result = fit(sr["spec"])
        assert pyhf.get_backend() == caller and pyhf.tensorlib.precision == "32b"
        assert isinstance(result, FitResult) and result.bestfit.dtype == np.float64
        np.testing.assert_array_equal(result.bestfit, sr["impacts"].fit.bestfit)  # same float64 fit as before
    finally:
        pyhf.set_backend(*before)
    assert pyhf.get_backend() == before
    assert jax.config.jax_enable_x64 == x64
