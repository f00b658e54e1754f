"""Physics tests of the GFLASH reference simulator.

Each test fails when the physics is wrong: statistical tolerances are derived from the expected spread
(stated next to each assertion) with fixed seeds. Breaking a parameter (for example the 0.812 offset or
the ln y coefficient of T, the radial k1, the Gamma variance of the sampling fluctuation, or the sampling
fraction) makes the corresponding test fail.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from surrinf.data.features import depth_of_maximum
from surrinf.data.geometry import Geometry
from surrinf.sim import DetectorParams, calorimeter, get_material
from surrinf.validation import fit_resolution, measure_response

W_SI = get_material("W/Si")


def unbounded_geometry(layer_x0: float = 0.5, depth_x0: float = 40.0, r_edges_rm=(1.0, 2.0)) -> Geometry:
    """Fine layers of ``layer_x0`` X0 down to ``depth_x0``, then one unbounded layer; radial edges at the
    given multiples of R_M and an unbounded outer bin; one angular bin."""
    x0, rm = W_SI.X0_mm, W_SI.RM_mm
    edges = np.concatenate([np.arange(0.0, depth_x0 + 1e-9, layer_x0) * x0, [np.inf]])
    r = np.concatenate([[0.0], np.asarray(r_edges_rm) * rm, [np.inf]])
    n = edges.size - 1
    return Geometry("unbounded", edges, tuple(r for _ in range(n)), tuple(1 for _ in range(n)))


@pytest.fixture(scope="module")
def unbounded():
    return calorimeter(unbounded_geometry(), "W/Si")


def test_energy_accounting_exact_in_unbounded_geometry(unbounded):
    # 1050 showers: every unbounded-geometry test here simulates batches of more than 1024 showers, so they share
    # one compiled batch shape (2048; a compilation costs ~7 s of CPU, 2048 showers of this geometry ~0.1 s)
    energies = np.array([1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0] * 150)
    r = unbounded.simulate(jax.random.key(1), energies)
    total = r.showers.astype(np.float64).sum(axis=1)
    # float32 summation of a few hundred voxels: relative rounding well below 1e-5
    np.testing.assert_allclose(total, r.deposited, rtol=1e-5)
    # nothing can leak out of an unbounded geometry (up to float32 rounding of the cell probabilities)
    assert np.all(r.leaked_longitudinal == 0)
    assert np.all(np.abs(r.leaked_lateral) <= 1e-6 * r.deposited)


def test_energy_accounting_with_leakage_and_offset():
    cal = calorimeter("default")
    energies = np.geomspace(1.0, 1000.0, 64)
    for offset in (None, (4.0, -2.0)):
        r = cal.simulate(jax.random.key(2), energies, offset_mm=offset)
        total = r.showers.astype(np.float64).sum(axis=1) + r.leaked_lateral + r.leaked_longitudinal
        np.testing.assert_allclose(total, r.deposited, rtol=1e-5)
        assert np.all(r.leaked_longitudinal[energies > 100] > 0)  # 30 X0 deep: high energies leak
        assert np.all(r.leaked_lateral > 0)  # 50 mm = 4.6 R_M radius: the radial tail leaks


def test_depth_of_maximum_grows_like_log_energy(unbounded):
    energies = np.geomspace(5.0, 500.0, 7)
    means = []
    for i, e in enumerate(energies):
        r = unbounded.simulate(jax.random.key(10 + i), np.full(1100, e))  # the 2048 batch shape of this module
        means.append(depth_of_maximum(r.showers, unbounded.geometry, unbounded.x0_mm).mean())
    slope, _ = np.polyfit(np.log(energies), means, 1)
    # sigma(T) ~ 2 X0 per shower -> 0.06 X0 per point; slope uncertainty ~0.02, tolerance 0.15 from the issue
    assert abs(slope - 1.0) < 0.15, (slope, means)
    # and the level: mean T within 1 X0 of the GFLASH sampling mean at 50 GeV
    assert 6.0 < means[3] < 9.0


def test_radial_containment_at_50_gev(unbounded):
    r = unbounded.simulate(jax.random.key(3), np.full(1100, 50.0))  # the 2048 batch shape of this module
    e = r.showers.reshape(1100, unbounded.geometry.n_layers, 3).sum(axis=1)
    frac = e / e.sum(axis=1, keepdims=True)
    within1, within2 = frac[:, 0].mean(), frac[:, :2].sum(axis=1).mean()
    # per-shower spread of the fraction is ~1%, so the means are known to ~0.1%
    assert within1 >= 0.88, within1
    assert within2 >= 0.94, within2
    assert within1 < 0.99 and within2 < 0.999  # a real tail, not a point-like shower


@pytest.mark.parametrize("a_true", [0.17, 0.30])
def test_resolution_fit_recovers_sampling_term(unbounded, a_true):
    energies = np.array([2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0])
    resp = measure_response(unbounded, jax.random.key(4), energies, 1500, theta=(1.0, a_true, 0.0))
    fit = fit_resolution(energies, resp.relative_resolution, resp.relative_resolution_err, terms=("a", "b"))
    # sigma of each sigma/E is 1/sqrt(2 N) = 1.8 % relative, so a is fitted to ~1 %; the issue asks 10 %
    assert abs(fit.a / a_true - 1.0) < 0.10, fit
    assert fit.a_err < 0.02 * a_true
    assert fit.b < 0.005  # no constant term without leakage
    assert fit.chi2 / fit.ndf < 3.0


def test_resolution_fit_sees_the_noise_term():
    cal = calorimeter("default")
    sigma_n = 0.002  # GeV per cell, visible scale
    energies = np.array([1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0])
    resp = measure_response(cal, jax.random.key(6), energies, 1500, theta=(1.0, 0.17, sigma_n))
    fit = fit_resolution(energies, resp.relative_resolution, resp.relative_resolution_err)
    c_expected = np.sqrt(cal.geometry.n_voxels) * sigma_n / cal.material.sampling_fraction
    # c is fitted to a few per cent at these statistics; allow 15 %
    assert abs(fit.c / c_expected - 1.0) < 0.15, (fit, c_expected)
    assert abs(fit.a / 0.17 - 1.0) < 0.15


def test_mean_visible_energy_equals_scale_times_sampling_fraction(unbounded):
    s = 1.05
    for i, e in enumerate((5.0, 50.0, 500.0)):
        r = unbounded.simulate(jax.random.key(20 + i), np.full(2000, e), theta=(s, 0.17, 0.0))
        ratio = r.showers.sum(axis=1).mean() / (s * W_SI.sampling_fraction * e)
        # standard error 0.17/sqrt(E)/sqrt(2000) <= 0.17 %; the issue asks 0.5 %
        assert abs(ratio - 1.0) < 0.005, (e, ratio)


def test_noise_term_appears_when_sigma_n_positive():
    cal = calorimeter("default")
    n_vox = cal.geometry.n_voxels
    key = jax.random.key(5)
    energies = np.full(2000, 10.0)
    clean = cal.simulate(key, energies, theta=(1.0, 0.17, 0.0)).showers.sum(axis=1)
    sigma_n = 0.002
    noisy = cal.simulate(key, energies, theta=(1.0, 0.17, sigma_n)).showers.sum(axis=1)
    noise = noisy - clean  # same key: identical shower, only the noise differs
    # std of a sample std with N = 2000 is 1.6 %; allow 5 %
    assert abs(noise.std(ddof=1) / (np.sqrt(n_vox) * sigma_n) - 1.0) < 0.05
    assert abs(noise.mean()) < 4 * np.sqrt(n_vox) * sigma_n / np.sqrt(2000)
    assert noisy.std() > clean.std() * 1.5  # the noise term dominates at 10 GeV with 360 cells


def test_offset_moves_the_shower_and_matches_monte_carlo():
    cal = calorimeter("default")
    # chunks of 64: the axial and displaced batch shapes of test_energy_accounting_with_leakage_and_offset (the
    # showers do not depend on the chunking)
    r0 = cal.simulate(jax.random.key(6), np.full(300, 50.0), chunk_size=64)
    r1 = cal.simulate(jax.random.key(6), np.full(300, 50.0), offset_mm=(6.0, 0.0), chunk_size=64)
    coords = cal.geometry.voxel_coordinates()
    x0 = (r0.showers * coords["x_mm"]).sum(1) / r0.showers.sum(1)
    x1 = (r1.showers * coords["x_mm"]).sum(1) / r1.showers.sum(1)
    y1 = (r1.showers * coords["y_mm"]).sum(1) / r1.showers.sum(1)
    # 4 angular bins make the centroid coarse, but it moves clearly towards +x and stays centred in y
    assert abs(x0.mean()) < 0.3 and x1.mean() > 2.0 and abs(y1.mean()) < 0.3


def test_offset_cell_probabilities_match_sampled_spots():
    """The ray-integrated cell probabilities equal a direct Monte Carlo of spot positions."""
    import jax.numpy as jnp

    from surrinf.sim import gflash

    cal = calorimeter("default")
    e, t_max, alpha, layer, off = jnp.float32(50.0), jnp.float32(7.5), jnp.float32(4.9), 4, (3.0, 1.0)
    prob = np.asarray(cal._cell_probabilities_offset(e, t_max, alpha, jnp.array(off)))[layer]
    w = np.asarray(cal._depth_weights(t_max, alpha))[layer]
    rng = np.random.default_rng(0)
    n = 1_000_000
    q = rng.choice(w.size, n, p=w / w.sum())
    rp = gflash.radial_params(jnp.asarray(cal._tables["t_nodes"][layer]) / t_max, e, cal.material)
    rc, rt, pc = (np.asarray(x)[q] for x in rp)
    radius = np.where(rng.random(n) < pc, rc, rt) * cal.rm_mm
    u = rng.random(n)
    r = radius * np.sqrt(u / (1 - u))
    phi = rng.random(n) * 2 * np.pi
    x, y = r * np.cos(phi) + off[0], r * np.sin(phi) + off[1]
    edges = cal.geometry.r_edges_mm[layer]
    rb = np.searchsorted(edges, np.hypot(x, y), side="right") - 1
    ab = np.minimum(np.floor((np.arctan2(y, x) + np.pi) / (2 * np.pi) * 4).astype(int), 3)
    mc = np.zeros_like(prob)
    inside = rb < edges.size - 1
    np.add.at(mc, (ab[inside], rb[inside]), 1.0)
    mc[0, -1] = (~inside).sum()
    # MC standard error <= sqrt(0.25/1e6) = 5e-4; azimuthal quadrature error ~1e-3 near the core
    np.testing.assert_allclose(prob, mc / n, atol=3e-3)


def test_deterministic_and_independent_of_chunking():
    cal = calorimeter("default", params=DetectorParams(noise_sigma_gev=0.001))
    # batch shapes 1024 (a, d: one batch padded from 1000) and 256 (b: 4 chunks, the last one padded; c: 200 padded),
    # which other tests compile too. (Not every pair of batch shapes gives the same bits: XLA may vectorise a batch of
    # 64 differently from one of 1024, which moved 0.2 % of the voxels by <= 2.3e-10 GeV in one measurement.)
    energies = np.geomspace(1.0, 1000.0, 1000)
    a = cal.simulate(jax.random.key(7), energies).showers
    b = cal.simulate(jax.random.key(7), energies, chunk_size=256).showers
    c = cal.simulate(jax.random.key(7), energies[:200]).showers
    d = cal.simulate(jax.random.key(8), energies).showers
    assert np.array_equal(a, b) and np.array_equal(a[:200], c)
    assert not np.array_equal(a, d)


def test_other_materials_and_geometries_run():
    for geo, mat in (("ds1-photons", None), ("default", "PbWO4"), ("default", "Pb/LAr")):
        cal = calorimeter(geo, mat)
        r = cal.simulate(jax.random.key(9), np.array([1.0, 100.0]))
        assert r.showers.shape == (2, cal.geometry.n_voxels)
        assert np.all(np.isfinite(r.showers)) and np.all(r.showers >= 0)
        total = r.showers.astype(np.float64).sum(1) + r.leaked_lateral + r.leaked_longitudinal
        np.testing.assert_allclose(total, r.deposited, rtol=1e-5)
        assert np.all(r.deposited > 0.5 * cal.material.sampling_fraction * np.array([1.0, 100.0]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"energies_gev": np.array([-1.0])}, "energies_gev"),
        ({"energies_gev": np.array([np.nan])}, "energies_gev"),
        ({"energies_gev": np.ones((2, 3))}, "energies_gev"),
        ({"energies_gev": np.ones(2), "theta": np.ones(2)}, "theta"),
        ({"energies_gev": np.ones(2), "theta": (0.0, 0.1, 0.0)}, "energy scale"),
        ({"energies_gev": np.ones(2), "offset_mm": (np.inf, 0.0)}, "offset_mm"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, match):
    cal = calorimeter("default")
    with pytest.raises(ValueError, match=match):
        cal.simulate(jax.random.key(0), **kwargs)


def test_unknown_geometry_and_material():
    with pytest.raises(ValueError, match="unknown geometry 'ds9'"):
        calorimeter("ds9")
    with pytest.raises(ValueError, match="unknown material"):
        calorimeter("default", "Fe/Sci")


def test_sample_follows_response_protocol():
    from surrinf.response import ResponseModel, make_conditions

    cal = calorimeter("default")
    assert isinstance(cal, ResponseModel)
    cond = make_conditions(np.array([10.0, 20.0]), theta=(1.0, 0.17, 0.0))
    out = cal.sample(jax.random.key(0), cond)
    assert out.shape == (2, 360)
    with pytest.raises(ValueError, match="conditions"):
        cal.sample(jax.random.key(0), np.ones((2, 2)))


def test_simulated_mean_equals_gflash_expectation():
    """Spot and sampling fluctuations are unbiased: the mean simulated voxel energies equal the analytic
    GFLASH expectation averaged over the (T, alpha) fluctuation."""
    from surrinf.data import layer_energies

    cal = calorimeter("default")
    n = 3000
    # chunks of 1024: a batch shape other tests compile too (the showers do not depend on the chunking)
    sim = cal.simulate(jax.random.key(30), np.full(n, 20.0), chunk_size=1024).showers.astype(np.float64)
    expected = cal.expected_showers(jax.random.key(31), 20.0, n_draws=20_000).astype(np.float64)
    lay = layer_energies(sim, cal.geometry)
    mean, err = lay.mean(0), lay.std(0, ddof=1) / np.sqrt(n)
    exp_lay = layer_energies(expected[None], cal.geometry)[0]
    # the expectation's own Monte Carlo error over 20000 (T, alpha) draws is ~sqrt(n/20000) = 0.4 of err
    pulls = (mean - exp_lay) / (err * np.sqrt(1 + n / 20_000))
    assert np.all(np.abs(pulls) < 4.5), pulls
    # mean squared pull has expectation 1; layers are correlated through T, so allow 2.5 (chi2_15 99 %: 2.04)
    assert np.mean(pulls**2) < 2.5
