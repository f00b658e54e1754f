"""Primary Lund plane (surrinf.validation.lund); jet constituents with a detector response (kinfit.constituents)."""

from __future__ import annotations

import sys

import jax
import numpy as np
import pytest

from surrinf.kinfit.constituents import JetConstituents, apply_constituent_response, generate_pythia_jets
from surrinf.validation.lund import (
    LundPoints,
    _ca_history,
    fastjet_available,
    lund_density,
    lund_kl,
    lund_points,
    plot_lund_density,
    plot_lund_ratio,
)


def massless(pt, y, phi):
    """Massless four-momenta (..., 4) = (px, py, pz, E) from pT [GeV], rapidity, phi."""
    pt, y, phi = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (pt, y, phi)))
    return np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(y), pt * np.cosh(y)], axis=-1)


def random_jets(rng, n_jets, n_max=40):
    """Jets of 1..n_max constituents (massless and pion-mass), some straddling phi = 0 / 2 pi."""
    jets = []
    for k in range(n_jets):
        n = int(rng.integers(1, n_max + 1))
        pt = rng.exponential(5.0, n) + 0.1
        y = rng.normal(0.0, 0.2, n)
        phi = rng.normal(0.0 if k % 2 else np.pi, 0.2, n)
        m = rng.choice([0.0, 0.1396], n)
        mt = np.sqrt(pt**2 + m**2)
        jets.append(np.stack([pt * np.cos(phi), pt * np.sin(phi), mt * np.sinh(y), mt * np.cosh(y)], axis=1))
    return jets


def toy_points(rng, n_jets, shift=0.0, nu=4.0):
    """Independent emissions: Poisson(nu) per jet, ln 1/Delta ~ U(0.5, 3.5), ln kt ~ N(0.5 + shift, 1)."""
    k = rng.poisson(nu, n_jets)
    m = int(k.sum())
    x = rng.uniform(0.5, 3.5, m)
    y = rng.normal(0.5 + shift, 1.0, m)
    return LundPoints(np.exp(-x), np.exp(y), np.full(m, 0.1), np.repeat(np.arange(n_jets), k), n_jets)


TOY_BINS = (np.linspace(0.5, 3.5, 4), np.linspace(-1.5, 2.5, 5))  # 12 bins


# --------------------------------------------------------------------------------------------- declustering


def test_hand_built_jet_gives_its_lund_points():
    # hard core: two 50 GeV massless particles at y = 0, phi = +-0.005 (their sum has y = 0, phi = 0 exactly);
    # one soft emission of 2 GeV at Delta = 0.3 from the core axis, at 30 degrees in the (y, phi) plane
    d, pt_s = 0.3, 2.0
    core = massless(50.0, 0.0, [0.005, -0.005])
    soft = massless(pt_s, d * np.cos(np.pi / 6), d * np.sin(np.pi / 6))
    pts = lund_points([np.vstack([core, soft])], backend="numpy")
    pt_core = 100.0 * np.cos(0.005)
    assert len(pts) == 2 and np.all(pts.jet == 0) and pts.backend == "numpy"
    np.testing.assert_allclose(pts.delta, [d, 0.01], rtol=1e-12)
    np.testing.assert_allclose(pts.kt, [pt_s * d, 50.0 * 0.01], rtol=1e-12)
    np.testing.assert_allclose(pts.z, [pt_s / (pt_core + pt_s), 0.5], rtol=1e-12)
    np.testing.assert_allclose(pts.ln_inv_delta[0], np.log(1 / d), rtol=1e-12)
    np.testing.assert_allclose(pts.ln_kt[0], np.log(pt_s * d), rtol=1e-12)


def test_ca_merges_by_angle_and_declustering_follows_the_harder_branch():
    # A, B hard (100 GeV) 0.02 apart; C, D soft (0.5 GeV) 0.03 apart, ~0.3 away. C/A merges by angle only: AB
    # first (a kt algorithm, min(pT^2) dR^2, would merge the soft pair CD first), then CD, then (AB)(CD).
    p = massless([100.0, 100.0, 0.5, 0.5], [0.0, 0.02, 0.30, 0.33], 0.0)
    mom, parents = _ca_history(p)
    assert [set(parents[k]) for k in (4, 5, 6)] == [{0, 1}, {2, 3}, {4, 5}]
    np.testing.assert_allclose(mom[6], p.sum(0), rtol=1e-14)  # E-scheme
    # primary declustering: (AB)-(CD), then A-B; the C-D split lies on the softer branch and is not recorded
    pts = lund_points([p], backend="numpy")
    assert len(pts) == 2
    np.testing.assert_allclose(pts.delta[1], 0.02, rtol=1e-12)
    assert pts.delta[0] > 0.29 and pts.kt[0] == pytest.approx(1.0 * pts.delta[0], rel=1e-9)


@pytest.mark.skipif(not fastjet_available(), reason="fastjet back end needs the 'pythia' extra (fastjet)")
def test_numpy_and_fastjet_back_ends_agree():
    jets = random_jets(np.random.default_rng(7), 12)
    a = lund_points(jets, backend="numpy")
    b = lund_points(jets, backend="fastjet")
    assert b.backend == "fastjet" and len(a) == len(b) > 50
    np.testing.assert_array_equal(a.jet, b.jet)
    for name in ("delta", "kt", "z"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-9)
    # the padded input form gives the same points
    padded = JetConstituents.from_list(jets)
    c = lund_points(padded.p4, padded.counts, backend="numpy")
    np.testing.assert_array_equal(c.kt, a.kt)


def test_fastjet_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "fastjet._swig", None)  # importing it now raises ImportError
    monkeypatch.setitem(sys.modules, "pythia8mc", None)
    assert not fastjet_available()
    with pytest.raises(ImportError, match=r"pip install 'surrinf\[pythia\]'"):
        lund_points([massless([1.0, 2.0], [0.0, 0.1], 0.0)], backend="fastjet")
    assert lund_points([massless([1.0, 2.0], [0.0, 0.1], 0.0)]).backend == "numpy"  # auto falls back
    with pytest.raises(ImportError, match=r"pip install 'surrinf\[pythia\]'"):
        generate_pythia_jets(5)


# --------------------------------------------------------------------------------------------- density and KL


def test_density_integral_is_mean_primary_emissions_per_jet():
    pts = toy_points(np.random.default_rng(1), 500)
    d = lund_density(pts, (np.linspace(0.0, 4.0, 9), np.linspace(-6.0, 8.0, 15)))  # contains every point
    assert d.n_outside == 0 and d.counts.sum() == len(pts)
    assert d.integral() == pytest.approx(len(pts) / 500, rel=1e-12)
    assert d.integral() == pytest.approx(pts.multiplicity().mean(), rel=1e-12)
    np.testing.assert_allclose(d.density_err, np.sqrt(d.counts) / (500 * d.area))
    # a smaller plane: the integral counts only the emissions inside it
    small = lund_density(pts, TOY_BINS)
    assert small.counts.sum() + small.n_outside == len(pts)
    assert small.integral() == pytest.approx(small.counts.sum() / 500, rel=1e-12)


def test_kl_zero_for_identical_and_rising_with_kt_shift():
    rng = np.random.default_rng(2)
    ref = toy_points(rng, 2000)
    d_ref = lund_density(ref, TOY_BINS)
    same = lund_kl(jax.random.key(0), d_ref, lund_density(ref, TOY_BINS), n_bootstrap=0)
    assert same.value == 0.0
    values = []
    for shift in (0.1, 0.3, 0.6):  # the same emissions with kt scaled by e^shift: no sampling noise between them
        moved = LundPoints(ref.delta, ref.kt * np.exp(shift), ref.z, ref.jet, ref.n_jets)
        values.append(lund_kl(jax.random.key(0), d_ref, lund_density(moved, TOY_BINS), n_bootstrap=0).value)
    assert 0.0 < values[0] < values[1] < values[2]


def test_kl_of_two_samples_of_one_distribution_matches_its_expectation():
    # R independent pairs of 1000 toy jets (~4000 emissions each, 12 bins). For independent multinomial emissions
    # 2 n_eff D -> chi2(K - 1), so E[D] = (K - 1)/2 (1/N_P + 1/N_Q), sd = sqrt(2 (K - 1))/2 (1/N_P + 1/N_Q).
    # The mean of R = 100 values has a standard error sd / 10; we allow 4 of them. The spread itself: its relative
    # standard error is 1/sqrt(2 R) = 7 %, allowed +-25 %.
    rng = np.random.default_rng(3)
    vals, nulls, sds = [], [], []
    for _ in range(100):
        r = lund_kl(
            jax.random.key(0),
            lund_density(toy_points(rng, 1000), TOY_BINS),
            lund_density(toy_points(rng, 1000), TOY_BINS),
            n_bootstrap=0,
        )
        vals.append(r.value)
        nulls.append(r.null_mean)
        sds.append(r.null_sd)
    vals = np.asarray(vals)
    assert abs(vals.mean() - np.mean(nulls)) < 4 * np.mean(sds) / 10
    assert 0.75 < vals.std(ddof=1) / np.mean(sds) < 1.25


def test_kl_bootstrap_error_matches_the_spread_between_samples():
    # at a real distortion (kt shift 0.3) the bootstrap sd over jets should match the sd of D over 60 independent
    # pairs (relative standard error 1/sqrt(120) = 9 %; the bootstrap's own ~10 %): allowed ratio 0.7-1.4
    rng = np.random.default_rng(4)
    vals = [
        lund_kl(
            jax.random.key(0),
            lund_density(toy_points(rng, 1000), TOY_BINS),
            lund_density(toy_points(rng, 1000, shift=0.3), TOY_BINS),
            n_bootstrap=0,
        ).value
        for _ in range(60)
    ]
    dp, dq = lund_density(toy_points(rng, 1000), TOY_BINS), lund_density(toy_points(rng, 1000, shift=0.3), TOY_BINS)
    r = lund_kl(jax.random.key(5), dp, dq, n_bootstrap=300)
    assert 0.7 < r.error / np.std(vals, ddof=1) < 1.4
    assert r.significance > 3  # a 0.3 shift in ln kt is far beyond the finite-sample floor
    again = lund_kl(jax.random.key(5), dp, dq, n_bootstrap=300)
    assert again.error == r.error  # same key, same bits


def smeared(points, rng, shift=0.3, sigma=0.3):
    """The same emissions with kt scaled by e^shift and smeared by a log-normal factor of width sigma (a paired
    'detector' sample)."""
    kt = points.kt * np.exp(shift + rng.normal(0.0, sigma, len(points)))
    return LundPoints(points.delta, kt, points.z, points.jet, points.n_jets)


def test_paired_kl_error_matches_the_spread_over_jet_samples():
    # the same 1000 jets before and after a kt shift + smearing: the paired bootstrap (same jet weights in both)
    # should match the sd of D over 60 independent jet samples (sd of that sd ~ 9 %, the bootstrap's own ~10 %:
    # 0.7-1.4; seeds 8, 11-13 give 0.89-1.27), while resampling the two sides independently ignores their
    # correlation and overstates it (x 1.7-2.2 for those seeds)
    rng = np.random.default_rng(8)
    vals = []
    for _ in range(60):
        pts = toy_points(rng, 1000)
        vals.append(
            lund_kl(
                jax.random.key(0),
                lund_density(pts, TOY_BINS),
                lund_density(smeared(pts, rng), TOY_BINS),
                n_bootstrap=0,
                paired=True,
            ).value
        )
    pts = toy_points(rng, 1000)
    dp, dq = lund_density(pts, TOY_BINS), lund_density(smeared(pts, rng), TOY_BINS)
    r = lund_kl(jax.random.key(9), dp, dq, n_bootstrap=300, paired=True)
    unpaired = lund_kl(jax.random.key(9), dp, dq, n_bootstrap=300)
    assert 0.7 < r.error / np.std(vals, ddof=1) < 1.4
    assert unpaired.error > 1.5 * r.error
    assert r.excess == r.value and r.significance == pytest.approx(r.value / r.error)
    with pytest.raises(ValueError, match="paired"):
        lund_kl(jax.random.key(0), dp, lund_density(toy_points(rng, 999), TOY_BINS), paired=True)


def test_figures_draw(tmp_path):
    rng = np.random.default_rng(6)
    d1, d2 = lund_density(toy_points(rng, 200), TOY_BINS), lund_density(toy_points(rng, 200, shift=0.2), TOY_BINS)
    fig = plot_lund_density([d1, d2], ["reference", "shifted"])
    assert len(fig.axes) == 3  # two panels + colour bar
    fig = plot_lund_ratio(d2, d1, "shifted")
    assert len(fig.axes) == 2


# --------------------------------------------------------------------------------------------- detector response


class _Scale:
    """A response model multiplying every energy by 1.1 (any object with sample(key, conditions) works)."""

    def sample(self, key, conditions):
        return 1.1 * np.asarray(conditions)[:, 0]


def test_constituent_response_towers_and_energy():
    # jet 0: two particles in one 0.1 x 0.1 cell and one in another; jet 1: one particle
    jets = JetConstituents.from_list(
        [massless([10.0, 5.0, 1.0], [0.01, 0.04, 0.31], [0.02, 0.07, 0.02]), massless([3.0], [-0.5], [1.0])]
    )
    e_true = jets.jet_p4()[:, 3]
    key = jax.random.key(0)
    towers = apply_constituent_response(key, jets, None, cell_size=(0.1, 2 * np.pi / 63))
    assert towers.counts.tolist() == [2, 1]
    np.testing.assert_allclose(towers.jet_p4()[:, 3], e_true, rtol=1e-12)  # energy conserved without smearing
    e0 = np.sort(towers.p4[0, :2, 3])
    np.testing.assert_allclose(
        e0, np.sort([massless(10.0, 0.01, 0)[3] + massless(5.0, 0.04, 0)[3], 1.0 * np.cosh(0.31)])
    )
    eta = np.arcsinh(towers.p4[0, :2, 2] / np.hypot(towers.p4[0, :2, 0], towers.p4[0, :2, 1]))
    np.testing.assert_allclose(np.sort(eta), [0.05, 0.35], rtol=1e-12)  # cell centres
    m2 = towers.p4[..., 3] ** 2 - (towers.p4[..., :3] ** 2).sum(-1)
    np.testing.assert_allclose(m2, 0.0, atol=1e-9)  # massless towers
    scaled = apply_constituent_response(key, jets, _Scale())
    np.testing.assert_allclose(scaled.jet_p4()[:, 3], 1.1 * e_true, rtol=1e-12)
    cut = apply_constituent_response(key, jets, None, e_min_gev=2.0)  # drops the 1 GeV particle
    assert cut.counts.tolist() == [2, 1]


def test_bad_input_raises():
    ok = massless([10.0, 1.0], [0.0, 0.1], 0.0)
    with pytest.raises(ValueError, match="counts"):
        lund_points(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"\(n_i, 4\)"):
        lund_points([np.zeros((3, 3))])
    with pytest.raises(ValueError, match="finite"):
        lund_points([np.where(np.arange(4) == 0, np.nan, ok)])
    with pytest.raises(ValueError, match="E > 0"):
        lund_points([ok * np.array([1, 1, 1, -1])])
    with pytest.raises(ValueError, match="backend"):
        lund_points([ok], backend="root")
    with pytest.raises(ValueError, match="at least one jet"):
        lund_points([])
    pts = lund_points([ok])
    d = lund_density(pts)
    with pytest.raises(ValueError, match="same bins"):
        lund_kl(jax.random.key(0), d, lund_density(pts, TOY_BINS))
    with pytest.raises(ValueError, match="pseudo_count"):
        lund_kl(jax.random.key(0), d, d, pseudo_count=0.0)
    with pytest.raises(ValueError, match="increasing"):
        lund_density(pts, ([0.0, 0.0, 1.0], [0.0, 1.0]))
    with pytest.raises(ValueError, match="z must lie"):
        LundPoints([0.1], [1.0], [0.7], [0], 1)
    jets = JetConstituents.from_list([ok])
    with pytest.raises(ValueError, match="cell_size"):
        apply_constituent_response(jax.random.key(0), jets, None, cell_size=(0.1, -1.0))
    with pytest.raises(ValueError, match=r"response\.sample must return"):
        apply_constituent_response(jax.random.key(0), jets, _BadShape())
    with pytest.raises(ValueError, match="e_min_gev"):
        apply_constituent_response(jax.random.key(0), jets, None, e_min_gev=-1.0)


class _BadShape:
    def sample(self, key, conditions):
        return np.ones(1)


def test_pythia_extra_hint_matches_kinfit():
    from surrinf.kinfit.pythia import PYTHIA_EXTRA_HINT as kinfit_hint
    from surrinf.validation.lund import PYTHIA_EXTRA_HINT

    assert PYTHIA_EXTRA_HINT == kinfit_hint
