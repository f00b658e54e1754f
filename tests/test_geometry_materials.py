"""Geometries (CaloChallenge binnings), materials and energy spectra."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from surrinf.data import GEOMETRY_NAMES, Geometry, get_geometry
from surrinf.sim import get_material
from surrinf.sim.spectrum import parse_energy_spec


@pytest.mark.parametrize(
    ("name", "n_voxels"), [("default", 360), ("ds1-photons", 368), ("ds1-pions", 533), ("ds2", 6480), ("ds3", 40500)]
)
def test_calochallenge_voxel_counts(name, n_voxels):
    geo = get_geometry(name)
    assert geo.n_voxels == n_voxels
    assert Geometry.from_json(geo.to_json()) == geo
    assert geo.same_binning(get_geometry(name))


def test_voxel_order_radial_fastest_then_angular_then_layer():
    geo = get_geometry("ds2")  # 45 layers x 16 angular x 9 radial
    c = geo.voxel_coordinates()
    layer, a, r = 7, 5, 3
    idx = geo.layer_offsets[layer] + a * 9 + r
    assert (c["layer"][idx], c["alpha_bin"][idx], c["r_bin"][idx]) == (layer, a, r)
    assert geo.layer_offsets[1] == 16 * 9


def test_ds1_layers_without_voxels_have_no_depth():
    geo = get_geometry("ds1-photons")
    assert list(geo.active_layers) == [0, 1, 2, 3, 12]
    thick = np.diff(geo.layer_edges_mm)
    assert np.all(thick[geo.voxels_per_layer == 0] == 0) and np.all(thick[geo.active_layers] > 0)


def test_geometry_rejects_bad_layouts():
    with pytest.raises(ValueError, match="r_edges_mm\\[0\\] must start at 0"):
        Geometry("x", np.array([0.0, 1.0]), (np.array([1.0, 2.0]),), (1,))
    with pytest.raises(ValueError, match="one entry per layer"):
        Geometry("x", np.array([0.0, 1.0, 2.0]), (np.array([0.0, 2.0]),), (1,))
    with pytest.raises(ValueError, match="non-decreasing"):
        Geometry("x", np.array([0.0, 2.0, 1.0]), (np.array([0.0, 1.0]),) * 2, (1, 1))
    with pytest.raises(ValueError, match="unknown geometry"):
        get_geometry("ds4")
    assert set(GEOMETRY_NAMES) == {"default", "ds1-photons", "ds1-pions", "ds2", "ds3"}


def test_effective_material_quantities():
    """Hand calculation for 1.4 mm W + 0.3 mm Si: w_W = 2.702/2.772 = 0.9748, X0 = 6.880 g/cm^2 at
    16.31 g/cm^3 = 4.22 mm, R_M = 21.2 MeV / (1.1955 MeV cm^2/g) / 16.31 = 10.9 mm, e_hat = 1/(1+0.42)."""
    m = get_material("W/Si")
    assert m.X0_mm == pytest.approx(4.221, rel=1e-3)
    assert m.RM_mm == pytest.approx(10.88, rel=1e-3)
    assert m.e_hat == pytest.approx(1 / 1.42)
    assert m.F_s == pytest.approx(4.221 / 1.7, rel=1e-3)
    assert m.sampling_fraction == pytest.approx(0.7042 * 0.03622, rel=1e-3)
    h = get_material("PbWO4")
    assert h.homogeneous and h.sampling_fraction == 1.0
    assert h.RM_mm == pytest.approx(19.59, rel=1e-3)  # PDG 1.959 cm
    # every sampling structure is between its constituents
    lar = get_material("Pb/LAr")
    assert 5.612 < lar.X0_mm < 140.0 and 0.0 < lar.sampling_fraction < 1.0


@pytest.mark.parametrize(
    ("spec", "lo", "hi"),
    [
        ("log-uniform:1,1000", 1.0, 1000.0),
        ("uniform:10,20", 10.0, 20.0),
        ("50", 50.0, 50.0),
        ("power-law:1,100,2", 1, 100),
    ],
)
def test_energy_spectra(spec, lo, hi):
    e = parse_energy_spec(spec).sample(jax.random.key(0), 20_000)
    assert e.dtype == np.float32 and e.min() >= lo and e.max() <= hi
    if spec.startswith("log-uniform"):
        # ln E uniform: mean ln E = ln(1000)/2 with standard error 2.0/sqrt(20000) = 0.014
        assert abs(np.log(e).mean() - np.log(1000.0) / 2) < 0.06
    if spec.startswith("power-law"):
        # E^-2 on [1, 100]: median = 2/(1 + 1/100) = 1.980
        assert abs(np.median(e) - 1.980) < 0.05


def test_discrete_spectrum_and_errors():
    e = parse_energy_spec("discrete:1,2,4").sample(jax.random.key(1), 3000)
    assert set(np.unique(e)) == {1.0, 2.0, 4.0}
    for bad, msg in [
        ("gauss:1", "unknown form"),
        ("uniform:5", "takes 2"),
        ("uniform:5,1", "LO must be"),
        ("fixed:0", "must lie in"),
        ("log-uniform:a,b", "numbers expected"),
    ]:
        with pytest.raises(ValueError, match=msg):
            parse_energy_spec(bad)
