"""Posterior diagnostics: pathological NUTS runs are flagged in plain language, healthy ones pass; ArviZ conversion,
atomic netCDF round trip, weighted (SMC-like) results and plots."""

from __future__ import annotations

import os

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib.figure import Figure
from numpyro.infer import MCMC, NUTS

from surrinf.inference.diagnostics import (
    Diagnosis,
    diagnose,
    load_inference_data,
    plot_corner,
    plot_rank,
    plot_trace,
    save_inference_data,
    systematic_resample,
    to_inference_data,
)
from surrinf.inference.result import PosteriorResult
from surrinf.report.figure import save_figure

#: numpyro extra fields -> PosteriorResult.sample_stats names
EXTRA = {"diverging": "diverging", "energy": "energy", "num_steps": "n_steps", "accept_prob": "acceptance_rate"}
GAUSS_SD = np.array([1.0, 100.0])  # badly scaled 2-D Gaussian: identity metric is 100x off in b


def nuts_result(potential, init: np.ndarray, names: tuple[str, ...], warmup: int, draws: int, seed: int):
    """4 NUTS chains (vectorised) of a potential on x (d,), chain c started at init[c]; as a PosteriorResult."""
    with jax.enable_x64(True):
        mcmc = MCMC(
            NUTS(potential_fn=lambda p: potential(p["x"])),
            num_warmup=warmup,
            num_samples=draws,
            num_chains=init.shape[0],
            chain_method="vectorized",
            progress_bar=False,
        )
        mcmc.run(
            jax.random.key(seed), init_params={"x": jnp.asarray(init, dtype=jnp.float64)}, extra_fields=tuple(EXTRA)
        )
        samples = np.asarray(mcmc.get_samples(group_by_chain=True)["x"])
        extra = mcmc.get_extra_fields(group_by_chain=True)
    stats = {EXTRA[k]: np.asarray(v) for k, v in extra.items()}
    info = {"num_warmup": warmup, "num_samples": draws, "metric": {"kind": "diagonal"}, "fn": potential}
    return PosteriorResult(samples, names, "numpyro_nuts", 1.0, stats, info=info)


def gaussian_potential(x):
    return 0.5 * jnp.sum((x / GAUSS_SD) ** 2)


def bimodal_potential(x):
    """-log of 0.5 N(-4, 0.5^2) + 0.5 N(4, 0.5^2): 16 sd apart, a barrier of ~32 nats NUTS never crosses."""
    z = (x[0] - jnp.array([-4.0, 4.0])) / 0.5
    return -jax.scipy.special.logsumexp(-0.5 * z**2)


@pytest.fixture(scope="module")
def healthy():
    # Enough warm-up (300) to adapt step size and diagonal metric. Over seeds 0-7 of this exact set-up: max R-hat
    # 1.006 (threshold 1.01), min bulk/tail ESS 856 (threshold 400, > 2x margin), no divergences, E-BFMI >= 0.87.
    return nuts_result(gaussian_potential, np.zeros((4, 2)), ("a", "b"), warmup=300, draws=500, seed=0)


# ---------------------------------------------------------------------- acceptance: pathological runs are flagged
def test_bimodal_run_gets_rhat_warning_naming_the_parameter():
    init = np.array([[-4.0], [-4.0], [4.0], [4.0]])  # two chains in each mode
    result = nuts_result(bimodal_potential, init, ("sampling_term",), warmup=100, draws=200, seed=0)
    assert np.all(np.abs(result.samples.mean(axis=(1, 2)) - init[:, 0]) < 1.0)  # the chains stayed in their modes
    d = diagnose(result)
    assert not d.ok
    # Rank normalisation bounds R-hat: two chains wholly below the other two turn into half-normal scores, chain
    # means +-0.80 and within-chain variance 1 - 2/pi = 0.36, so R-hat ~ sqrt(1 / 0.36) = 1.66 (this run: 1.77),
    # far above 1.01 + noise (~0.005 for 800 draws).
    assert d.table.column("r_hat")[0] > 1.5
    rhat_warnings = [w for w in d.warnings if w.startswith("R-hat of sampling_term")]
    assert len(rhat_warnings) == 1
    assert "> 1.01" in rhat_warnings[0] and "4 chains disagree" in rhat_warnings[0] and "modes" in rhat_warnings[0]
    assert rhat_warnings[0] in str(d) and "NOT OK" in str(d)


def test_too_little_warmup_is_flagged():
    # 3 warm-up steps leave the identity metric 100x off in b: over seeds 0-7 every run got >= 2 warnings about b
    # (R-hat up to 1.7, bulk ESS 7-324 < 400, and for seeds 1, 5-7 hundreds of divergences).
    result = nuts_result(gaussian_potential, np.zeros((4, 2)), ("a", "b"), warmup=3, draws=500, seed=1)
    d = diagnose(result)
    assert not d.ok
    assert any(" of b " in w for w in d.warnings)
    assert d.n_divergent is not None and d.n_divergent > 0  # seed 1: 515 divergent transitions
    div = [w for w in d.warnings if "diverged" in w]
    assert len(div) == 1 and div[0].startswith(f"{d.n_divergent} of 2000 transitions")


def test_healthy_run_is_ok(healthy):
    d = diagnose(healthy)
    assert isinstance(d, Diagnosis)
    assert d.ok and d.warnings == (), d.warnings
    assert d.n_divergent == 0 and d.divergent_fraction == 0.0
    assert d.e_bfmi is not None and len(d.e_bfmi) == 4 and min(d.e_bfmi) > 0.3
    assert d.table.columns == [
        "parameter", "mean", "sd", "2.5 %", "16 %", "84 %", "97.5 %", "r_hat", "ess_bulk", "ess_tail", "mcse_mean"
    ]  # fmt: skip
    assert d.table.column("parameter") == ["a", "b"]
    # sd of b is 100: with ESS > 400 its estimate is within ~4 % (1 sigma ~ 1/sqrt(2 ESS)); 15 % is > 3.5 sigma.
    assert d.table.column("sd")[1] == pytest.approx(100.0, rel=0.15)
    # mcse_mean ~ sd / sqrt(ESS_bulk), ArviZ's estimate of the same quantity; 30 % covers the difference of methods.
    mcse, ess = np.array(d.table.column("mcse_mean")), np.array(d.table.column("ess_bulk"))
    np.testing.assert_allclose(mcse, healthy.sd() / np.sqrt(ess), rtol=0.3)
    assert "OK: no diagnostic warnings" in str(d) and "| a " in str(d)


# ---------------------------------------------------------------------- synthetic checks of each rule
def iid_result(chains: int, draws: int, stats=None, seed=0) -> PosteriorResult:
    x = np.random.default_rng(seed).normal(size=(chains, draws, 1))
    return PosteriorResult(x, ("s",), "synthetic", 0.5, stats or {})


def test_single_chain_says_rhat_not_computable():
    d = diagnose(iid_result(1, 1000))  # iid draws: ESS ~ 1000 >> 400
    assert d.ok
    assert d.table.column("r_hat") == [None]
    assert any("single chain" in n for n in d.notes)
    assert any("E-BFMI was not checked" in n for n in d.notes)


def test_divergence_and_bfmi_warnings():
    rng = np.random.default_rng(1)
    diverging = np.zeros((4, 250), dtype=bool)
    diverging[2, :5] = True
    # E-BFMI = sum(dE^2) / sum((E - mean E)^2): ~2 for iid energies (sd of the estimate ~0.2 for 250 draws); for
    # the slow drift of chain 3 (trend 0 -> 10 plus noise 0.01) ~ 250 * 0.04^2 / (250 * 8.4) ~ 2e-4.
    energy = rng.normal(size=(4, 250))
    energy[3] = np.linspace(0.0, 10.0, 250) + rng.normal(scale=0.01, size=250)
    d = diagnose(iid_result(4, 250, {"diverging": diverging, "energy": energy}), ess_min=100)
    assert d.n_divergent == 5 and d.divergent_fraction == pytest.approx(0.005)
    assert sum("diverged" in w for w in d.warnings) == 1
    assert any(w.startswith("5 of 1000 transitions (0.50%) diverged") for w in d.warnings)
    assert d.e_bfmi[3] < 0.01 and min(d.e_bfmi[:3]) > 1.0
    bfmi = [w for w in d.warnings if "E-BFMI" in w]
    assert len(bfmi) == 1 and bfmi[0].startswith("E-BFMI of chain 3 is") and "< 0.3" in bfmi[0]


def test_stuck_chain_is_flagged():
    result = iid_result(4, 200)
    samples = result.samples.copy()
    samples[2] = 0.3  # chain 2 never moves (ArviZ alone would still report a finite ESS)
    stuck = PosteriorResult(samples, ("s",), "synthetic", 1.0)
    d = diagnose(stuck, ess_min=50)
    assert [w for w in d.warnings if "never moved" in w] == [
        "chain 2 never moved (all 200 draws identical): the sampler is stuck (step size collapsed or started where "
        "the density vanishes), so its ESS and R-hat are meaningless; check the initial point and the warm-up"
    ]
    assert diagnose(result, ess_min=50).ok  # the same run with a moving chain 2 passes (ESS ~ 800 iid draws)


def test_ess_threshold_applies():
    # 4 x 50 iid draws: ESS ~ 200 (sd of the estimate ~ 20 %), so 400 fails and 50 passes with a wide margin.
    result = iid_result(4, 50)
    assert any(w.startswith("bulk ESS of s is") for w in diagnose(result).warnings)
    assert diagnose(result, ess_min=50).ok


def test_weighted_result_uses_kish_ess():
    # Importance sampling of N(0.5, 1) from a N(0, 2^2) proposal, 2000 draws in one chain.
    rng = np.random.default_rng(2)
    x = rng.normal(0.0, 2.0, size=(1, 2000, 1))
    logw = -0.5 * (x[..., 0] - 0.5) ** 2 + 0.5 * (x[..., 0] / 2.0) ** 2
    w = np.exp(logw - logw.max())
    result = PosteriorResult(x, ("mu",), "importance", 1.0, weights=w, log_evidence=-1.5)
    kish = result.effective_sample_size()
    d = diagnose(result)
    assert d.ok and d.kish_ess == pytest.approx(kish) and kish > 400
    assert d.table.column("r_hat") == [None] and d.table.column("ess_bulk") == [None]
    assert d.table.column("mcse_mean")[0] == pytest.approx(result.sd()[0] / np.sqrt(kish))
    assert any("Kish ESS" in n for n in d.notes)
    d_bad = diagnose(result, ess_min=10 * kish)
    assert not d_bad.ok and d_bad.warnings[0].startswith(f"Kish ESS of the weights is {kish:.0f} <")

    idata = to_inference_data(result, seed=3)
    assert idata.attrs["resampled"] == "systematic" and idata.attrs["resample_seed"] == 3
    assert idata.attrs["kish_ess"] == pytest.approx(kish) and idata.attrs["log_evidence"] == -1.5
    resampled = idata.posterior["mu"].values
    assert resampled.shape == (1, 2000)
    # Systematic resampling: the resampled mean differs from the weighted one by far less than sd / sqrt(Kish ESS).
    assert abs(resampled.mean() - result.mean()[0]) < result.sd()[0] / np.sqrt(kish)
    np.testing.assert_array_equal(to_inference_data(result, seed=3).posterior["mu"].values, resampled)


def test_systematic_resample_counts_are_floor_or_ceil():
    w = np.random.default_rng(4).exponential(size=50)
    n = 1000
    idx = systematic_resample(w, seed=5, n=n)
    counts = np.bincount(idx, minlength=50)
    expected = n * w / w.sum()
    assert counts.sum() == n and np.all(counts >= np.floor(expected)) and np.all(counts <= np.ceil(expected))
    np.testing.assert_array_equal(idx, systematic_resample(w, seed=5, n=n))
    assert not np.array_equal(idx, np.sort(idx))  # shuffled, not in CDF order
    with pytest.raises(ValueError, match="weights"):
        systematic_resample(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="seed"):
        systematic_resample(w, seed=-1)


def test_bad_input_raises_clear_errors(healthy):
    with pytest.raises(ValueError, match="result must be a PosteriorResult"):
        diagnose(healthy.samples)
    with pytest.raises(ValueError, match="rhat_max must be a number > 1"):
        diagnose(healthy, rhat_max=1.0)
    with pytest.raises(ValueError, match="ess_min"):
        diagnose(healthy, ess_min=float("nan"))
    bad = PosteriorResult(np.where(np.arange(10)[None, :, None] == 3, np.nan, 1.0), ("s",), "x", 1.0)
    with pytest.raises(ValueError, match="1 non-finite"):
        diagnose(bad)
    with pytest.raises(ValueError, match="truth must"):
        plot_corner(healthy, truth=[0.0])
    clash = iid_result(2, 10, {"accept_prob": np.ones((2, 10)), "acceptance_rate": np.ones((2, 10))})
    with pytest.raises(ValueError, match="acceptance_rate"):
        to_inference_data(clash)


# ---------------------------------------------------------------------- conversion and I/O
def test_inference_data_round_trip_is_atomic(healthy, tmp_path, monkeypatch):
    idata = to_inference_data(healthy)
    assert list(idata.posterior.data_vars) == ["a", "b"]
    assert set(idata.sample_stats.data_vars) == {"diverging", "energy", "n_steps", "acceptance_rate"}
    assert idata.sample_stats["diverging"].dtype == bool
    assert idata.attrs["sampler"] == "numpyro_nuts" and idata.attrs["tau"] == 1.0
    assert idata.attrs["info_num_warmup"] == 300 and idata.attrs["info_metric"] == '{"kind": "diagonal"}'
    assert idata.attrs["info_skipped"] == "fn" and "log_evidence" not in idata.attrs

    path = save_inference_data(healthy, tmp_path / "post.nc")
    assert sorted(os.listdir(tmp_path)) == ["post.nc"]  # no temporary file left behind
    loaded = load_inference_data(path)
    for name in ("a", "b"):
        np.testing.assert_array_equal(loaded.posterior[name].values, healthy.samples[:, :, "ab".index(name)])
    for name in idata.sample_stats.data_vars:
        np.testing.assert_array_equal(loaded.sample_stats[name].values, idata.sample_stats[name].values)
    for key, value in idata.attrs.items():
        if key != "created_at":
            assert loaded.attrs[key] == value, key
    assert diagnose(healthy).table.column("r_hat") == pytest.approx(
        [float(az.rhat(loaded, method="rank")[n]) for n in ("a", "b")]
    )

    # A writer that fails half-way leaves the old file untouched and no temporary file behind.
    before = path.read_bytes()

    def broken(self, filename, **kwargs):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(az.InferenceData, "to_netcdf", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        save_inference_data(idata, path)
    assert sorted(os.listdir(tmp_path)) == ["post.nc"] and path.read_bytes() == before
    with pytest.raises(ValueError, match="result_or_idata"):
        save_inference_data({"a": 1}, tmp_path / "x.nc")
    with pytest.raises(ValueError, match="existing netCDF file"):
        load_inference_data(tmp_path / "missing.nc")


# ---------------------------------------------------------------------- plots
def test_plots_make_figures_and_save_png(healthy, tmp_path):
    weighted = PosteriorResult(healthy.samples[:1], ("a", "b"), "smc", 0.5, weights=np.ones((1, 500)))
    single = iid_result(1, 300)
    cases = {
        "trace": (plot_trace(healthy), 4),
        "rank": (plot_rank(healthy), 2),
        "corner": (plot_corner(healthy, truth={"a": 0.0, "b": 0.0}), 4),
        "corner_weighted": (plot_corner(weighted, truth=[0.0, 0.0]), 4),
        "corner_1d": (plot_corner(single), 1),
        "trace_1d": (plot_trace(single), 2),
    }
    for stem, (fig, n_axes) in cases.items():
        assert isinstance(fig, Figure)
        assert len(fig.axes) >= n_axes, stem
        assert all(ax.has_data() for ax in fig.axes if ax.axison), stem
        path = save_figure(fig, tmp_path / f"{stem}.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path)) == sorted(f"{s}.png" for s in cases)
