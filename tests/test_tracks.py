"""Track hits: Landau straggling simulator (PDG Delta_p, xi), truncated-mean dE/dx, its minimum and relativistic
rise, the dE/dx validation and the track-hit generator's interface (surrinf.sim.tracks, surrinf.validation.dedx,
surrinf.generators.track_hits)."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from scipy import stats

from surrinf.generators.serialization import load, save
from surrinf.generators.track_hits import TrackHitGenerator, fit_track_hits, prepare_track_data
from surrinf.sim.bethe_bloch import landau_xi, most_probable_loss
from surrinf.sim.tracks import LANDAU_MODE, TrackHitSimulator, expected_truncated_mean, landau_standard
from surrinf.validation.dedx import compare_to_bethe_bloch, dedx_vs_betagamma

SIM = TrackHitSimulator(n_layers=8, thickness_um=300.0)
_GEN = TrackHitGenerator(jax.random.key(0), 8, flow_layers=2, hidden=(16,), n_bins=6)
GRID = np.geomspace(1.0, 1000.0, 13)


@pytest.fixture(scope="module")
def profile_sample():
    """600 tracks at each of 13 beta gamma from 1 to 1000: (beta gamma (N,), truncated-mean dE/dx (N,))."""
    bg = np.repeat(GRID, 600)
    return bg, SIM.dedx(SIM.deposits(jax.random.key(11), bg))


def test_landau_sampler_matches_the_standard_landau():
    lam = np.asarray(landau_standard(jax.random.key(0), (40_000,)))
    # CERNLIB form = (pi/2) x scipy's scale-1 form + ln(pi/2)
    x = (lam - math.log(math.pi / 2)) / (math.pi / 2)
    assert stats.kstest(x, stats.landau.cdf).pvalue > 1e-3
    # the mode constant is the density's maximum (scipy, converted)
    grid = np.linspace(-1.0, 1.0, 20_001)
    mode = grid[np.argmax(stats.landau.pdf((grid - math.log(math.pi / 2)) / (math.pi / 2)))]
    assert mode == pytest.approx(LANDAU_MODE, abs=2e-4)


def test_per_layer_mpv_and_width_match_pdg():
    """Hits at beta gamma = 3.5 in 300 um Si: the MPV inferred from the sample median equals the PDG Delta_p, and
    the interquartile range is the Landau one of scale xi (FWHM ~ 4 xi)."""
    bg = np.full(5000, 3.5)
    hits = SIM.deposits(jax.random.key(1), bg).ravel().astype(np.float64)  # 40 000 hits [keV]
    mpv, xi = 1e3 * most_probable_loss(3.5, 0.03), 1e3 * landau_xi(3.5, 0.03)
    s = 0.5 * math.pi * xi  # scale of scipy's form
    q = stats.landau.ppf([0.25, 0.5, 0.75])
    x_mode = (LANDAU_MODE - math.log(math.pi / 2)) / (math.pi / 2)
    mpv_hat = np.median(hits) - s * (q[1] - x_mode)
    # sampling error of a median: 1 / (2 f(median) sqrt(n)), f the density of the hits; 4 sigma
    sigma = s / (2 * stats.landau.pdf(q[1]) * math.sqrt(hits.size))
    assert abs(mpv_hat - mpv) < 4 * sigma, (mpv_hat, mpv, sigma)
    iqr = np.subtract(*np.percentile(hits, [75, 25]))
    assert iqr == pytest.approx(s * (q[2] - q[0]), rel=0.03)  # IQR sampling error ~1 % at n = 40 000
    # the mode sits on Delta_p: most hits fall in the FWHM window around it
    frac = np.mean(np.abs(hits - mpv) < 2.0 * xi)
    assert frac == pytest.approx(
        stats.landau.cdf((LANDAU_MODE + 2.0 - math.log(math.pi / 2)) / (math.pi / 2))
        - stats.landau.cdf((LANDAU_MODE - 2.0 - math.log(math.pi / 2)) / (math.pi / 2)),
        abs=0.01,
    )


def test_truncated_mean_expectation(profile_sample):
    _bg, dedx = profile_sample
    means = dedx.reshape(GRID.size, -1).mean(axis=1)
    errs = dedx.reshape(GRID.size, -1).std(axis=1, ddof=1) / math.sqrt(600)
    pred = SIM.expected_dedx(GRID)
    # the numerical order-statistic constant reproduces the simulated truncated means (5 sigma per bin)
    assert np.all(np.abs(means - pred) < 5 * errs), (means - pred) / errs


def test_minimum_and_relativistic_rise(profile_sample):
    bg, dedx = profile_sample
    # relativistic rise over the wide grid (1 - 1000): +7 % to the Fermi plateau, reached by the sample
    wide = compare_to_bethe_bloch(dedx, bg, dedx, bg, SIM.expected_dedx, _edges(GRID))
    rise, rise_err = wide.rise["reference"]
    assert rise > 1.04
    assert rise == pytest.approx(wide.rise["prediction"][0], abs=max(4 * rise_err, 0.01))
    # below the minimum dE/dx falls like 1/beta^2
    assert wide.reference.mean[0] > 1.5 * wide.reference.mean[3]
    ratios = wide.table.column("ref / pred")
    assert all(abs(r.value - 1) < 5 * r.error for r in ratios)
    assert wide.summary.rows[0][0] == "reference"
    # the minimum, on a dense grid around it (12 points, 1.5 - 30, 800 tracks each)
    grid = np.geomspace(1.5, 30.0, 12)
    bg_d = np.repeat(grid, 800)
    dedx_d = SIM.dedx(SIM.deposits(jax.random.key(12), bg_d))
    comp = compare_to_bethe_bloch(dedx_d, bg_d, dedx_d, bg_d, SIM.expected_dedx, _edges(grid))
    bg_min, err, _ = comp.minimum["reference"]
    bg_pred = comp.minimum["prediction"][0]
    # The truncated mean (like the MPV) of 300 um Si has its minimum at beta gamma ~ 5-6, above the mean's 3.5:
    # it lacks the ln W_max growth of the mean. The minimum is flat; the parabola's error is ~0.2 (seeds 0-4
    # gave 5.8-6.1 against 5.9 for the prediction): 4 sigma, at least 0.5.
    assert 4.0 < bg_pred < 7.0, bg_pred
    assert abs(bg_min - bg_pred) < max(4 * err, 0.5), (bg_min, err, bg_pred)


def _edges(grid: np.ndarray) -> np.ndarray:
    """Log-bin edges around the points of a geometric grid."""
    mid = np.sqrt(grid[:-1] * grid[1:])
    r = math.sqrt(grid[1] / grid[0])
    return np.concatenate([[grid[0] / r], mid, [grid[-1] * r]])


# --- the generator: trained once per module; the lam = 0 and lam > 0 runs share one compiled training loop ------
# Reference tracks only below the relativistic rise (beta gamma 1.5 - 30); the Bethe-Bloch penalty is evaluated
# at conditions drawn log-uniformly over 1.5 - 1000, where the PDG expectation is known but no tracks exist.
DATA_RANGE, PENALTY_RANGE, N_TRAIN, LAM, STEPS = (1.5, 30.0), (1.5, 1000.0), 2000, 1000.0, 500
EVAL_BG = np.array([2.0, 4.0, 8.0, 16.0, 25.0, 100.0, 300.0, 1000.0])  # 5 inside the data range, 3 on the plateau
N_EVAL = 2000  # generated tracks per point


def _log_uniform(key, n, lo, hi):
    return np.exp(np.asarray(jax.random.uniform(key, (n,), minval=math.log(lo), maxval=math.log(hi))))


@pytest.fixture(scope="module")
def trained():
    """Two tiny flows (2 coupling layers, hidden 16, 6 bins), same init and batches, 500 steps: lam = 0 and 1000."""
    k = jax.random.split(jax.random.key(0), 6)
    bg = _log_uniform(k[0], N_TRAIN, *DATA_RANGE)
    hits = SIM.deposits(k[1], bg)
    pen_bg = _log_uniform(k[2], N_TRAIN, *PENALTY_RANGE)
    out = {"bg": bg, "hits": hits, "pen_bg": pen_bg, "eval_bg": np.repeat(EVAL_BG, N_EVAL)}
    for lam in (0.0, LAM):
        model = TrackHitGenerator(k[3], 8, lam=lam, flow_layers=2, hidden=(16,), n_bins=6, bg_range=PENALTY_RANGE)
        data = prepare_track_data(model, hits, bg, pen_bg)
        model, losses = fit_track_hits(model, data, k[4], steps=STEPS, batch_size=256, learning_rate=2e-2)
        gen = np.asarray(model.sample(jax.random.key(5), out["eval_bg"]))
        out[lam] = {"model": model, "data": data, "losses": losses, "gen": gen}
    return out


def _profile(hits):
    """Per-point mean truncated mean [keV] and its standard error (float64, (len(EVAL_BG),))."""
    t = SIM.dedx(hits, unit="keV/um").reshape(EVAL_BG.size, -1) * SIM.thickness_um
    return t.mean(axis=1), t.std(axis=1, ddof=1) / math.sqrt(t.shape[1])


def test_generator_reproduces_the_dedx_profile_in_the_data_range(trained):
    ref, _ = _profile(SIM.deposits(jax.random.key(6), trained["eval_bg"]))
    inside = EVAL_BG <= DATA_RANGE[1]
    for lam in (0.0, LAM):
        gen, _ = _profile(trained[lam]["gen"])
        assert np.all(np.isfinite(trained[lam]["losses"]))
        # Tolerance 3 %: the per-track resolution of the 8-hit truncated mean is ~8 % (sigma / mean of one track)
        # and the profile falls by 11 % from beta gamma 2 to 8; this 500-step model was measured within 2.0 % at
        # every point (seeds 0-2, both lam; statistical error of a ratio 0.25 %), so 3 % is that with a margin.
        assert np.all(np.abs(gen[inside] / ref[inside] - 1) < 0.03), (lam, gen[inside] / ref[inside] - 1)
        # and it follows the 1/beta^2 fall, not just a level: 0.89 - 1.11 of the reference's drop from 2 to 8
        # measured (seeds 0-2), asserted within 25 %
        assert 0.75 < (gen[0] - gen[2]) / (ref[0] - ref[2]) < 1.25, (lam, gen[:3], ref[:3])


def test_bethe_bloch_penalty_constrains_the_plateau_without_data(trained):
    """No tracks above beta gamma 30: only the penalty knows the relativistic rise. With it the generated plateau
    (beta gamma 100 - 1000) follows the PDG truncated-mean expectation; without it the flow extrapolates freely."""
    plateau = EVAL_BG >= 100.0
    pred = expected_truncated_mean(EVAL_BG[plateau], 8)
    dev = {}
    for lam in (0.0, LAM):
        gen, err = _profile(trained[lam]["gen"])
        dev[lam] = (gen[plateau] / pred - 1, err[plateau] / pred)
    rms = {lam: float(np.sqrt(np.mean(d**2))) for lam, (d, _) in dev.items()}
    # statistical error of the difference, ~0.25 % (2000 tracks per point)
    se = float(np.sqrt(np.mean(dev[LAM][1] ** 2 + dev[0.0][1] ** 2)))
    # Measured over seeds 0-2 (500 steps): penalised RMS 0.47-0.53 %, unpenalised 6.0-24 % (the free extrapolation
    # of ln beta gamma overshoots), i.e. 25-88 standard errors apart. Asserted: the penalised model within 1.5 % of
    # the PDG expectation, and closer than the unpenalised one by more than 10 standard errors.
    assert rms[LAM] < 0.015, rms
    assert rms[0.0] - rms[LAM] > 10 * se, (rms, se)


def test_generator_interface_and_save_load(trained, tmp_path):
    model, data = trained[LAM]["model"], trained[LAM]["data"]
    hits = trained["hits"]
    np.testing.assert_allclose(data["t_ref"], expected_truncated_mean(trained["pen_bg"], 8), rtol=1e-6)
    # the log transform is exact
    np.testing.assert_allclose(np.asarray(model.from_flow_space(data["x"])), hits, rtol=1e-5)
    assert model.lam == LAM and trained[0.0]["model"].lam == 0.0
    save(model, tmp_path / "m", model.config())
    back, _ = load(tmp_path / "m")
    assert back.config() == model.config()
    for a, b in zip(jax.tree_util.tree_leaves(model), jax.tree_util.tree_leaves(back), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # same key -> same bits, also after the round trip (the compiled sampler of the fixture is reused)
    np.testing.assert_array_equal(np.asarray(back.sample(jax.random.key(5), trained["eval_bg"])), trained[LAM]["gen"])


@pytest.mark.parametrize(
    ("call", "arg"),
    [
        (lambda: TrackHitSimulator(n_layers=1), "n_layers"),
        (lambda: TrackHitSimulator(thickness_um=-3.0), "thickness_um"),
        (lambda: TrackHitSimulator(medium="unobtainium"), "medium"),
        (lambda: SIM.sample(jax.random.key(0), np.ones((3, 3))), "conditions"),
        (lambda: SIM.sample(jax.random.key(0), np.array([[1.0, -0.1]])), "conditions"),
        (lambda: SIM.deposits(jax.random.key(0), np.array([0.0, 2.0])), "beta_gamma"),
        (lambda: SIM.dedx(np.ones((2, 8)), fraction=1.0), "fraction"),
        (lambda: SIM.dedx(np.ones((2, 8)), unit="GeV"), "unit"),
        (lambda: most_probable_loss(3.0, 0.0), "thickness_cm"),
        (lambda: dedx_vs_betagamma(np.ones(4), -np.ones(4), 2), "beta_gamma"),
        (lambda: TrackHitGenerator(jax.random.key(0), 8, lam=-1.0), "lam"),
        (lambda: prepare_track_data(_GEN, np.ones((3, 8)), np.ones(3), np.ones(2)), "penalty_beta_gamma"),
    ],
)
def test_bad_input_raises(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()
