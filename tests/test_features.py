"""High-level features on hand-built showers with known answers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import gammainc

from surrinf.data import (
    PER_LAYER_FEATURES,
    Geometry,
    centroids,
    depth_of_maximum,
    energy_ratio,
    flatten_features,
    get_geometry,
    high_level_features,
    layer_energies,
    sparsity,
    total_energy,
    widths,
)

GEOM = get_geometry("default")  # 15 layers x 4 angular x 6 radial bins
COORDS = GEOM.voxel_coordinates()


def voxel(layer: int, alpha_bin: int, r_bin: int, geometry: Geometry = GEOM) -> int:
    c = geometry.voxel_coordinates()
    hit = (c["layer"] == layer) & (c["alpha_bin"] == alpha_bin) & (c["r_bin"] == r_bin)
    (i,) = np.nonzero(hit)[0]
    return int(i)


def test_voxel_order_is_radial_fastest():
    assert voxel(0, 0, 1) == 1 and voxel(0, 1, 0) == 6 and voxel(1, 0, 0) == 24


def test_single_voxel_hit():
    i = voxel(3, 1, 2)
    s = np.zeros((2, GEOM.n_voxels))
    s[0, i] = 5.0
    cx, cy = centroids(s, GEOM)
    wx, wy = widths(s, GEOM)
    assert cx[0, 3] == pytest.approx(COORDS["x_mm"][i]) and cy[0, 3] == pytest.approx(COORDS["y_mm"][i])
    assert abs(COORDS["x_mm"][i]) > 1  # a non-trivial position
    assert np.all(wx == 0) and np.all(wy == 0)
    assert np.count_nonzero(cx) == 1 and np.count_nonzero(cy) == 1  # other layers / empty shower: 0
    E = layer_energies(s, GEOM)
    assert E.shape == (2, 15) and E[0, 3] == 5.0 and E.sum() == 5.0
    sp = sparsity(s, GEOM)
    assert sp[0, 3] == pytest.approx(23 / 24) and np.all(np.delete(sp[0], 3) == 1.0) and np.all(sp[1] == 1.0)
    assert sparsity(s, GEOM, threshold=10.0)[0, 3] == 1.0
    np.testing.assert_array_equal(total_energy(s), [5.0, 0.0])
    np.testing.assert_allclose(energy_ratio(s, np.array([[10.0], [10.0]])), [0.5, 0.0])


def test_two_opposite_voxels_width():
    # angular bin centres are -3pi/4, -pi/4, pi/4, 3pi/4: bins 0 and 2 are opposite
    i, j = voxel(5, 0, 4), voxel(5, 2, 4)
    s = np.zeros((1, GEOM.n_voxels))
    s[0, [i, j]] = 2.0
    r = COORDS["r_mm"][i]
    cx, cy = centroids(s, GEOM)
    wx, wy = widths(s, GEOM)
    assert abs(cx[0, 5]) < 1e-12 and abs(cy[0, 5]) < 1e-12
    assert wx[0, 5] == pytest.approx(r / np.sqrt(2)) and wy[0, 5] == pytest.approx(r / np.sqrt(2))
    # unequal weights 3:1 at x = +-a: mean a/2, spread sqrt(3)/2 a
    s[0, i] = 6.0
    a = r / np.sqrt(2)
    cx, _ = centroids(s, GEOM)
    wx, _ = widths(s, GEOM)
    assert cx[0, 5] == pytest.approx(-a / 2) and wx[0, 5] == pytest.approx(np.sqrt(3) / 2 * a)


def test_negative_voxels_are_clipped_for_weights_only():
    i, k = voxel(2, 3, 1), voxel(2, 0, 5)
    s = np.zeros((1, GEOM.n_voxels))
    s[0, i] = 4.0
    s[0, k] = -0.5  # noise
    cx, cy = centroids(s, GEOM)
    wx, _ = widths(s, GEOM)
    assert cx[0, 2] == pytest.approx(COORDS["x_mm"][i]) and cy[0, 2] == pytest.approx(COORDS["y_mm"][i])
    assert wx[0, 2] == 0.0
    assert layer_energies(s, GEOM)[0, 2] == pytest.approx(3.5)  # sums stay signed
    assert total_energy(s)[0] == pytest.approx(3.5)
    # a layer with only negative energy: centroid and width 0, sparsity counts it as empty
    s2 = np.zeros((1, GEOM.n_voxels))
    s2[0, k] = -0.5
    assert centroids(s2, GEOM)[0][0, 2] == 0.0 and widths(s2, GEOM)[0][0, 2] == 0.0
    assert np.isnan(depth_of_maximum(s2, GEOM, 3.5)[0])


def _fine_geometry(n_layers: int = 120, dt_mm: float = 0.875) -> Geometry:
    """One voxel per layer, ``dt_mm`` thick layers."""
    return Geometry(
        "fine", np.arange(n_layers + 1) * dt_mm, tuple(np.array([0.0, 10.0]) for _ in range(n_layers)), (1,) * n_layers
    )


@pytest.mark.parametrize(("alpha", "beta"), [(4.0, 0.5), (2.5, 0.6), (6.0, 0.8)])
def test_depth_of_maximum_recovers_gamma_peak(alpha, beta):
    x0_mm = 3.5
    g = _fine_geometry()  # 120 layers of 0.25 X0 = 30 X0
    edges_x0 = g.layer_edges_mm / x0_mm
    profile = np.diff(gammainc(alpha, beta * edges_x0))  # Gamma(alpha, rate beta) integrated per layer
    showers = 50.0 * profile[None, :]
    t_max = (alpha - 1) / beta
    assert depth_of_maximum(showers, g, x0_mm)[0] == pytest.approx(t_max, abs=0.05)
    # also on coarse 2 X0 layers (the default geometry: 8.5 mm layers with X0 = 4.25 mm)
    coarse = np.diff(gammainc(alpha, beta * GEOM.layer_edges_mm / 4.25))
    s = np.zeros((1, GEOM.n_voxels))
    s[0, GEOM.layer_offsets[:-1]] = coarse  # one voxel per layer carries the layer energy
    assert depth_of_maximum(s, GEOM, 4.25)[0] == pytest.approx(t_max, abs=0.25)


def test_depth_of_maximum_clips_negative_layers():
    g = _fine_geometry()
    prof = np.diff(gammainc(4.0, 0.5 * g.layer_edges_mm / 3.5))
    noisy = prof.copy()
    noisy[-10:] = -1e-3  # negative layer sums far behind the shower are ignored
    assert depth_of_maximum(noisy[None], g, 3.5)[0] == pytest.approx(depth_of_maximum(prof[None], g, 3.5)[0], abs=0.02)
    with pytest.raises(ValueError, match="x0_mm"):
        depth_of_maximum(prof[None], g, 0.0)


def test_high_level_features_numpy_jax_and_flatten():
    rng = np.random.default_rng(0)
    g = get_geometry("ds1-photons")  # 24 layers, only 5 with voxels
    n = 64
    s = (rng.exponential(1.0, (n, g.n_voxels)) * (rng.random((n, g.n_voxels)) < 0.4)).astype(np.float32)
    e = rng.uniform(50, 100, n).astype(np.float32)
    f = high_level_features(s, e, g, x0_mm=18.6)
    assert set(f) == {"E_inc", "E_total", "E_ratio", *PER_LAYER_FEATURES, "depth_of_max"}
    assert f["E_layer"].shape == (n, 24) and f["E_ratio"].shape == (n,) and f["E_layer"].dtype == np.float64
    np.testing.assert_allclose(f["E_ratio"], s.sum(1, dtype=np.float64) / e, rtol=1e-6)
    np.testing.assert_allclose(f["E_layer"].sum(1), f["E_total"], rtol=1e-9)
    # the individual functions agree with the combined pass
    np.testing.assert_array_equal(f["x_width"], widths(s, g)[0])
    np.testing.assert_array_equal(f["depth_of_max"], depth_of_maximum(s, g, 18.6))
    # JAX path (jit-compiled) agrees to float32 precision
    fj = jax.jit(lambda s, e: high_level_features(s, e, g, x0_mm=18.6))(jnp.asarray(s), jnp.asarray(e))
    for k in f:
        np.testing.assert_allclose(np.asarray(fj[k]), f[k], rtol=2e-4, atol=2e-4, err_msg=k)
    # flattening drops the layers without voxels
    m, names = flatten_features(f, g)
    active = list(g.active_layers)  # [0, 1, 2, 3, 12]
    assert m.shape == (n, 4 + 6 * len(active)) and len(names) == m.shape[1]
    assert names[:4] == ["E_inc", "E_total", "E_ratio", "E_layer[0]"] and "E_layer[12]" in names
    assert "E_layer[4]" not in names
    np.testing.assert_array_equal(m[:, names.index("sparsity[12]")], f["sparsity"][:, 12])
    m2, names2 = flatten_features(f, g, keys=["E_ratio", "x_width"])
    assert names2 == ["E_ratio"] + [f"x_width[{i}]" for i in active] and m2.shape == (n, 6)


def test_blocked_numpy_path_matches_single_block(monkeypatch):
    import surrinf.data.features as feat

    rng = np.random.default_rng(1)
    s = rng.exponential(1.0, (50, GEOM.n_voxels))
    e = np.full(50, 100.0)
    ref = high_level_features(s, e, GEOM, x0_mm=4.25)
    monkeypatch.setattr(feat, "_BLOCK_ELEMENTS", 7 * GEOM.n_voxels)  # 7 rows per block
    blocked = high_level_features(s, e, GEOM, x0_mm=4.25)
    for k in ref:
        np.testing.assert_array_equal(ref[k], blocked[k], err_msg=k)


def test_feature_argument_errors():
    s = np.zeros((3, GEOM.n_voxels))
    with pytest.raises(ValueError, match="geometry 'ds2' has 6480"):
        layer_energies(s, get_geometry("ds2"))
    with pytest.raises(ValueError, match="energies must have shape"):
        energy_ratio(s, np.ones(4))
    with pytest.raises(ValueError, match=r"showers must have shape \(N, n_voxels\)"):
        centroids(np.zeros(GEOM.n_voxels), GEOM)
