"""Dijet events: the container, its HDF5 cache, the parametric generator's physics and the Pythia 8 generator."""

from __future__ import annotations

import dataclasses
import json
import math
import sys

import h5py
import jax
import numpy as np
import pytest
from scipy import stats

from surrinf.kinfit.events import (
    DijetEvents,
    DijetFileError,
    ParametricDijetConfig,
    generate_parametric,
    read_metadata,
)

M0, GAMMA = 91.1876, 2.4952
#: Acceptance as loose as possible: every candidate passes (pT > 0 always, |eta| < 50 always; with rapidity width 1
#: the kinematic limit x <= 1 removes < 2e-4 of the events), so the drawn distributions are the generator's inputs.
LOOSE = ParametricDijetConfig(pt_min_gev=0.0, eta_max=50.0, rapidity_sigma=1.0, massless=True)
N = 10_000


@pytest.fixture(scope="module")
def resonance() -> DijetEvents:
    return generate_parametric(jax.random.key(1), N, process="resonance")


@pytest.fixture(scope="module")
def loose() -> tuple[DijetEvents, DijetEvents]:
    return (
        generate_parametric(jax.random.key(2), N, LOOSE, process="resonance"),
        generate_parametric(jax.random.key(3), N, LOOSE, process="qcd"),
    )


def _bw_cdf(m: np.ndarray) -> np.ndarray:
    """CDF of the truncated relativistic Breit-Wigner in s = m^2 on [M0 - 10 GAMMA, M0 + 10 GAMMA]."""
    s0, mg = M0**2, M0 * GAMMA
    a_lo, a_hi = (np.arctan(((M0 + k * GAMMA) ** 2 - s0) / mg) for k in (-10, 10))
    return (np.arctan((np.asarray(m) ** 2 - s0) / mg) - a_lo) / (a_hi - a_lo)


def _rest_frame_cos(ev: DijetEvents) -> np.ndarray:
    """cos(theta*) of jet 0 in the dijet rest frame reached by a pure boost, w.r.t. the z axis (massless jets)."""
    four = ev.four_momenta()
    tot = four.sum(axis=1)
    mass = np.sqrt(tot[:, 0] ** 2 - np.sum(tot[:, 1:] ** 2, axis=1))
    b, gamma = -tot[:, 1:] / mass[:, None], tot[:, 0] / mass
    e, p = four[:, 0, 0], four[:, 0, 1:]
    bp = np.sum(b * p, axis=1)
    p_star = p + b * (bp / (gamma + 1.0) + e)[:, None]
    return p_star[:, 2] / np.linalg.norm(p_star, axis=1)


# --------------------------------------------------------------------------------------------- parametric generator


def test_resonance_default_acceptance_and_peak(resonance):
    ev = resonance
    assert ev.n_events == N and np.all(ev.process == 1)
    assert np.all(ev.pt > 20.0) and np.all(np.abs(ev.eta) < 2.5)
    assert np.all(ev.pt[:, 0] >= ev.pt[:, 1])  # leading jet first
    assert np.all((ev.phi > -np.pi) & (ev.phi <= np.pi))
    assert np.all(ev.m > 0) and np.all(ev.e > ev.m)
    np.testing.assert_allclose(ev.e**2, ev.p**2 + ev.m**2, rtol=1e-12)
    # Parent masses within the truncation window; quartiles of the truncated BW are M0 - 1.1768 and M0 + 1.1944 GeV
    # (IQR 0.950 GAMMA = 2.371 GeV). Sample IQR sd = 0.5 / (sqrt(N) f(q)) with the density f(q) = 0.1386 / GeV at
    # both quartiles: 0.036 GeV; the median's sd = 0.5 / (sqrt(N) f(M0)) = 0.019 GeV. 5 sd, plus for the median the
    # acceptance's preference for heavier parents (+0.03 GeV, measured with 1e5 events).
    assert np.all(np.abs(ev.m_parent - M0) <= 10 * GAMMA)
    q25, q50, q75 = np.percentile(ev.m_parent, [25, 50, 75])
    assert abs((q75 - q25) - 0.9503 * GAMMA) < 0.18
    assert abs(q50 - (M0 + 0.0087)) < 0.12
    # Jets with mass: mjj above the parton-pair mass by the jet masses (median +0.48 GeV with 1e5 events; the window
    # is 10x the statistical spread of the median shift and excludes both 0 and a 1 % shift).
    shift = ev.mjj() - ev.m_parent
    assert np.all(shift > -1e-9 * ev.m_parent)
    assert 0.25 < np.median(shift) < 0.8


def test_loose_acceptance_resonance_physics(loose):
    ev = loose[0]
    # massless jets: mjj is exactly the parent mass (float64 rounding only)
    np.testing.assert_allclose(ev.mjj(), ev.m_parent, rtol=1e-9)
    # the parent-mass sample follows the truncated BW: KS p-value > 1e-3 (fails by chance once in 1000 seeds)
    assert stats.kstest(ev.m_parent, _bw_cdf).pvalue > 1e-3
    # decay angle 1 + c^2: E[c^2] = 0.4 (0.333 for isotropic), sd of c^2 = 0.3117 -> 5 sd = 0.016
    c = _rest_frame_cos(ev)
    assert abs(np.mean(c**2) - 0.4) < 5 * 0.3117 / math.sqrt(N)
    # system pT ~ pT / (pT^2 + p0^2)^2 capped at 250 GeV: median p0 sqrt(F/2 / (1 - F/2)), F = T^2 / (T^2 + p0^2);
    # its sd = 0.5 / (sqrt(N) f(median)) = 0.15 GeV with f(median) = 0.0336 / GeV; 5 sd.
    p0, t = 15.0, 250.0
    half = 0.5 * t**2 / (t**2 + p0**2)
    pt_sys = np.hypot(ev.px.sum(axis=1), ev.py.sum(axis=1))
    assert abs(np.median(pt_sys) - p0 * math.sqrt(half / (1 - half))) < 0.75
    # system rapidity ~ Normal(0, 1): sample sd within 5 / sqrt(2 N) = 0.035
    e, pz = ev.e.sum(axis=1), ev.pz.sum(axis=1)
    y = 0.5 * np.log((e + pz) / (e - pz))
    assert abs(np.std(y) - 1.0) < 5 / math.sqrt(2 * N)


def test_loose_acceptance_qcd_physics(loose):
    ev = loose[1]
    assert np.all(ev.process == 0) and np.all(ev.m_parent == 0.0)
    mjj = ev.mjj()
    assert mjj.min() >= 40.0 - 1e-9 and mjj.max() <= 300.0 + 1e-9
    # the dijet fit function (1 - x)^10 / x^5, x = m / 13 TeV: CDF by trapezoids on a fine grid (error < 1e-8); KS
    grid = np.geomspace(40.0, 300.0, 20001)
    x = grid / 13000.0
    f = (1 - x) ** 10 / x**5
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(grid))])
    cdf /= cdf[-1]
    assert stats.kstest(mjj, lambda m: np.interp(m, grid, cdf)).pvalue > 1e-3
    # |cos theta*| ~ 1 / (1 - a)^2 on [0, 0.8]: E[a] = (4 + ln 0.2) / 4 = 0.5977, E[a^2] = (4.8 + 2 ln 0.2) / 4;
    # 5 sd of the mean
    a = np.abs(_rest_frame_cos(ev))
    assert a.max() < 0.8 + 1e-9
    mean, second = (4 + math.log(0.2)) / 4, (4.8 + 2 * math.log(0.2)) / 4
    assert abs(a.mean() - mean) < 5 * math.sqrt(second - mean**2) / math.sqrt(N)


def test_qcd_default_acceptance():
    ev = generate_parametric(jax.random.key(4), 3000, process="qcd")
    assert np.all(ev.pt > 20.0) and np.all(np.abs(ev.eta) < 2.5) and np.all(ev.pt[:, 0] >= ev.pt[:, 1])
    mjj = ev.mjj()
    # falls steeply above the pT-cut turn-on (1e5 events: 32.8 % in [60, 80) GeV, 1.8 % in [120, 140) GeV, ratio 18;
    # the bare 1/x^5 would give 22): expected counts 984 and 54 +- 7.3, so the ratio lies in [9, 60] by > 5 sd
    n_low = np.sum((mjj >= 60) & (mjj < 80))
    n_high = np.sum((mjj >= 120) & (mjj < 140))
    assert 9 * n_high < n_low < 60 * n_high


def test_same_key_same_events_and_mixture():
    key = jax.random.key(5)
    a = generate_parametric(key, 400, process="both", signal_fraction=0.25)
    b = generate_parametric(key, 400, process="both", signal_fraction=0.25)
    for f in dataclasses.fields(DijetEvents):
        np.testing.assert_array_equal(getattr(a, f.name), getattr(b, f.name))
    assert np.sum(a.process == 1) == 100
    assert not np.all(a.process[:100] == 1)  # shuffled
    c = generate_parametric(jax.random.key(6), 400, process="both", signal_fraction=0.25)
    assert not np.array_equal(a.e, c.e)
    # "resonance" with the same key gives the resonance events of "both" (same sub-key)
    res = generate_parametric(key, 100, process="resonance")
    np.testing.assert_array_equal(np.sort(a.e[a.process == 1, 0]), np.sort(res.e[:, 0]))


def test_generate_bad_inputs():
    key = jax.random.key(0)
    for n in (0, -3, 1.5, True):
        with pytest.raises(ValueError, match="n_events"):
            generate_parametric(key, n)
    with pytest.raises(ValueError, match="process"):
        generate_parametric(key, 10, process="Z")
    for fraction in (1.5, -0.1, float("nan"), "half"):
        with pytest.raises(ValueError, match="signal_fraction"):
            generate_parametric(key, 10, signal_fraction=fraction)
    with pytest.raises(ValueError, match=r"jax\.random\.key"):
        generate_parametric(0, 10)
    with pytest.raises(ValueError, match="ParametricDijetConfig"):
        generate_parametric(key, 10, config={"m0_gev": 80.0})
    with pytest.raises(ValueError, match="acceptance"):  # no Z decay jet reaches 1 TeV
        generate_parametric(key, 10, ParametricDijetConfig(pt_min_gev=1000.0), process="resonance")


def test_config_json_round_trip_and_validation():
    cfg = ParametricDijetConfig(m0_gev=80.4, width_gev=2.1, massless=True)
    assert ParametricDijetConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert ParametricDijetConfig(m0_gev=80).m0_gev == 80.0 and isinstance(
        ParametricDijetConfig(m0_gev=80).m0_gev, float
    )
    with pytest.raises(ValueError, match="unknown"):
        ParametricDijetConfig.from_dict({"mass": 90.0})
    bad = [
        ({"width_gev": -1.0}, "width_gev"),
        ({"qcd_p2": 1.0}, "qcd_p2"),
        ({"qcd_cos_theta_max": 1.0}, "qcd_cos_theta_max"),
        ({"qcd_m_min_gev": 300.0}, "qcd_m_min_gev"),
        ({"massless": "yes"}, "massless"),
        ({"sqrt_s_gev": True}, "sqrt_s_gev"),
        ({"eta_max": float("nan")}, "eta_max"),
        ({"bw_window_widths": 40.0}, "window"),
        ({"pt_min_gev": -1.0}, "pt_min_gev"),
    ]
    for kwargs, match in bad:
        with pytest.raises(ValueError, match=match):
            ParametricDijetConfig(**kwargs)


# --------------------------------------------------------------------------------------------- container


def _two_events() -> DijetEvents:
    """Event 0: back-to-back massless 45 GeV jets at eta 0 (mjj = 90 GeV); event 1: massive jets, resonance."""
    return DijetEvents.from_pt_eta_phi_m(
        pt=[[45.0, 45.0], [60.0, 30.0]],
        eta=[[0.0, 0.0], [0.5, -1.2]],
        phi=[[0.0, np.pi], [1.0, -2.0]],
        m=[[0.0, 0.0], [6.0, 3.0]],
        process=[0, 1],
        m_parent=[0.0, 91.0],
    )


def test_kinematics_of_known_events():
    ev = _two_events()
    assert ev.n_events == 2
    assert ev.mjj()[0] == pytest.approx(90.0, rel=1e-14)
    assert ev.cos_opening()[0] == pytest.approx(-1.0, abs=1e-14)
    four = ev.four_momenta()
    assert four.shape == (2, 2, 4)
    np.testing.assert_allclose(four[..., 0] ** 2 - np.sum(four[..., 1:] ** 2, axis=-1), ev.m**2, atol=1e-9)
    tot = four.sum(axis=1)
    np.testing.assert_allclose(ev.mjj(), np.sqrt(tot[:, 0] ** 2 - np.sum(tot[:, 1:] ** 2, axis=1)), rtol=1e-12)
    p = four[:, :, 1:]
    cos = np.sum(p[:, 0] * p[:, 1], axis=1) / np.linalg.norm(p[:, 0], axis=1) / np.linalg.norm(p[:, 1], axis=1)
    np.testing.assert_allclose(ev.cos_opening(), cos, rtol=1e-12)
    with pytest.raises(ValueError):
        ev.e[0, 0] = 1.0  # read-only fields


def test_with_energies_select_concatenate(resonance):
    ev = resonance.select(slice(0, 500))
    massless = dataclasses.replace(ev, e=ev.p, m=np.zeros_like(ev.m))
    scaled = massless.with_energies(1.1 * massless.e)
    np.testing.assert_allclose(scaled.mjj(), 1.1 * massless.mjj(), rtol=1e-12)
    np.testing.assert_array_equal(scaled.eta, ev.eta)
    np.testing.assert_array_equal(scaled.phi, ev.phi)
    np.testing.assert_allclose(scaled.pt, 1.1 * ev.pt, rtol=1e-12)
    new = ev.with_energies(ev.e * np.array([0.9, 1.2]))  # massive: |p| = sqrt(E^2 - m^2), masses kept
    np.testing.assert_allclose(new.p**2 + new.m**2, new.e**2, rtol=1e-12)
    np.testing.assert_array_equal(new.m, ev.m)
    with pytest.raises(ValueError, match="exceed the jet mass"):
        ev.with_energies(np.where(np.arange(500)[:, None] == 7, ev.m * 0.5, ev.e))
    with pytest.raises(ValueError, match="shape"):
        ev.with_energies(ev.e[:, 0])
    with pytest.raises(ValueError, match="finite"):
        ev.with_energies(np.full_like(ev.e, np.nan))

    mask = ev.pt[:, 0] > 40.0
    parts = [ev.select(mask), ev.select(~mask)]
    both = DijetEvents.concatenate(parts)
    assert both.n_events == ev.n_events
    np.testing.assert_array_equal(np.sort(both.e[:, 0]), np.sort(ev.e[:, 0]))
    idx = np.array([3, 1, 3])
    np.testing.assert_array_equal(ev.select(idx).pt, ev.pt[idx])
    assert ev.select(np.int64(4)).n_events == 1
    with pytest.raises(ValueError, match="mask"):
        ev.select(mask[:10])
    with pytest.raises(ValueError, match="mask_or_index"):
        ev.select(np.array([0.5]))
    with pytest.raises(ValueError, match="out of range"):
        ev.select(np.array([500]))
    with pytest.raises(ValueError, match="non-empty"):
        DijetEvents.concatenate([])


def test_container_rejects_bad_values():
    good = {f.name: getattr(_two_events(), f.name) for f in dataclasses.fields(DijetEvents)}

    def make(**changes):
        return DijetEvents(**{**good, **changes})

    cases = [
        ({"e": good["e"][:, 0]}, r"shape \(N, 2\)"),
        ({"pt": good["pt"][:1]}, "pt must have shape"),
        ({"eta": np.where(np.eye(2, dtype=bool), np.nan, good["eta"])}, "eta must be finite"),
        ({"pt": -good["pt"]}, "pt"),
        ({"m": good["m"] + 1e3}, "e must be >= m"),
        ({"e": good["e"] * 1.01}, "inconsistent"),
        ({"phi": good["phi"] + 4.0}, "phi"),
        ({"process": [0, 2]}, "process"),
        ({"process": [0.5, 1.0]}, "process"),
        ({"m_parent": [1.0, 91.0]}, "0.0"),
        ({"m_parent": [0.0, 0.0]}, "> 0"),
        ({"m_parent": [0.0, np.nan]}, "m_parent"),
        ({"process": [0, 1, 1]}, "process must have shape"),
    ]
    for changes, match in cases:
        with pytest.raises(ValueError, match=match):
            make(**changes)


# --------------------------------------------------------------------------------------------- HDF5 cache


def test_hdf5_round_trip_exact_and_corruption_rejected(tmp_path, resonance):
    ev = DijetEvents.concatenate([resonance.select(slice(0, 300)), _two_events()])
    path = ev.to_hdf5(tmp_path / "sub" / "z.h5", metadata={"generator": "parametric", "seed": 1})
    assert sorted(p.name for p in path.parent.iterdir()) == ["z.h5"]  # atomic: no temporary file left behind
    back = DijetEvents.from_hdf5(path)
    for f in dataclasses.fields(DijetEvents):
        a, b = getattr(ev, f.name), getattr(back, f.name)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    meta = read_metadata(path)
    assert meta["generator"] == "parametric" and meta["seed"] == 1 and "numpy" in meta["package_versions"]
    with h5py.File(path) as f:
        assert f.attrs["format"] == "surrinf-dijets" and f.attrs["format_version"] == 1 and f.attrs["units"] == "GeV"
        assert f["jets/E"].dtype == np.float64 and f["process"].dtype == np.int8

    # one flipped bit in the stored m_parent bytes -> checksum mismatch
    raw = path.read_bytes()
    at = raw.find(np.ascontiguousarray(ev.m_parent, "<f8").tobytes())
    assert at > 0
    flipped = tmp_path / "flipped.h5"
    flipped.write_bytes(raw[: at + 3] + bytes([raw[at + 3] ^ 1]) + raw[at + 4 :])
    with pytest.raises(DijetFileError, match="checksum"):
        DijetEvents.from_hdf5(flipped)
    # a consistent-looking edit through h5py (a changed energy) -> checksum mismatch
    edited = tmp_path / "edited.h5"
    edited.write_bytes(raw)
    with h5py.File(edited, "r+") as f:
        f["jets/E"][0, 0] *= 1.0001
    with pytest.raises(DijetFileError, match="checksum"):
        DijetEvents.from_hdf5(edited)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DijetFileError):
        DijetEvents.from_hdf5(truncated)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["format"] = "something-else"
    with pytest.raises(DijetFileError, match="not a surrinf-dijets file"):
        DijetEvents.from_hdf5(other)
    with pytest.raises(FileNotFoundError):
        DijetEvents.from_hdf5(tmp_path / "missing.h5")
    with pytest.raises(ValueError, match="JSON"):
        ev.to_hdf5(tmp_path / "bad.h5", metadata={"x": float("nan")})
    assert not (tmp_path / "bad.h5").exists()


# --------------------------------------------------------------------------------------------- Pythia 8


def test_pythia_missing_extra_gives_install_hint(monkeypatch):
    from surrinf.kinfit import pythia

    monkeypatch.setitem(sys.modules, "pythia8mc", None)  # import pythia8mc now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'surrinf\[pythia\]'"):
        pythia.generate_pythia(5, "resonance", seed=1)
    with pytest.raises(ValueError, match="seed"):
        pythia.pythia_settings("qcd", seed=0)
    with pytest.raises(ValueError, match="process"):
        pythia.pythia_settings("ttbar", seed=1)


def test_pythia_z_dijets():
    pytest.importorskip("pythia8mc", reason="Pythia test needs the 'pythia' extra (pythia8mc)")
    pytest.importorskip("fastjet", reason="Pythia test needs the 'pythia' extra (fastjet)")
    from surrinf.kinfit.pythia import generate_pythia

    ev = generate_pythia(50, "resonance", seed=11)
    assert ev.n_events == 50 and np.all(ev.process == 1)
    assert np.all(ev.pt > 20.0) and np.all(np.abs(ev.eta) < 2.5) and np.all(ev.pt[:, 0] >= ev.pt[:, 1])
    # generated Z masses inside the requested window; median 91.12 GeV (2000 events), sd of a 50-event median
    # 0.27 GeV (bootstrap) -> 1.5 GeV is 5.5 sd
    assert np.all(np.abs(ev.m_parent - M0) <= 10 * GAMMA + 1e-9)
    assert abs(np.median(ev.m_parent) - M0) < 1.5
    # anti-kt R = 0.4 jets lose FSR and hadrons out of the cone: median mjj 83.0 GeV with 2000 events (mjj/mZ 0.91);
    # the sd of a 50-event median is 2.44 GeV (bootstrap), so [70, 96] GeV is 5 sd around 83 GeV
    assert 70.0 < np.median(ev.mjj()) < 96.0
    # same seed -> the same events (Pythia's stream is sequential: the first 5 stored events coincide)
    again = generate_pythia(5, "resonance", seed=11)
    np.testing.assert_array_equal(again.e, ev.e[:5])
    np.testing.assert_array_equal(again.m_parent, ev.m_parent[:5])
