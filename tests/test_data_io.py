"""CaloChallenge HDF5 reading/writing: round trips, chunked reading, validation messages, atomicity."""

from __future__ import annotations

import tracemalloc

import h5py
import numpy as np
import pytest

from surrinf.data import (
    Geometry,
    ShowerData,
    ShowerFileError,
    ShowerWriter,
    file_info,
    get_geometry,
    iter_showers,
    read_showers,
    validate_file,
    write_showers,
)

GEOM = get_geometry("default")


def make_data(n: int, geometry: Geometry = GEOM, *, theta: bool = True, offset: bool = True, seed: int = 0):
    """Sparse non-negative showers in GeV (about 70 % zero voxels), energies 1-100 GeV."""
    rng = np.random.default_rng(seed)
    v = geometry.n_voxels
    showers = rng.exponential(0.05, (n, v)) * (rng.random((n, v)) < 0.3)
    energies = rng.uniform(1.0, 100.0, n)
    th = np.column_stack([rng.uniform(0.9, 1.1, n), rng.uniform(0.05, 0.2, n), rng.uniform(0, 0.002, n)])
    off = rng.normal(0, 2.0, (n, 2))
    return ShowerData.from_gev(
        energies,
        showers,
        theta=th if theta else None,
        impact_offset_mm=off if offset else None,
        geometry=geometry,
        attrs={"material": "W/Si", "particle": "photon"},
    )


def write_raw(path, attrs=None, **datasets):
    """Write an HDF5 file by hand (as a foreign producer would)."""
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f.create_dataset(k, data=v)
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
    return path


def good_raw(n=4, v=360, dtype=np.float32):
    rng = np.random.default_rng(1)
    return {
        "incident_energies": rng.uniform(1e3, 1e5, (n, 1)).astype(dtype),
        "showers": (rng.exponential(10.0, (n, v)) * (rng.random((n, v)) < 0.5)).astype(dtype),
    }


# ------------------------------------------------------------------------------------ round trips


def test_roundtrip_bitwise(tmp_path):
    data = make_data(257)
    path = write_showers(tmp_path / "s.h5", data)
    back = read_showers(path)
    for name in ("incident_energies_mev", "showers_mev", "theta", "impact_offset_mm"):
        a, b = getattr(data, name), getattr(back, name)
        assert a.dtype == b.dtype == np.float32
        assert np.array_equal(a, b), name
    assert back.geometry == GEOM
    assert back.attrs["material"] == "W/Si" and back.attrs["particle"] == "photon"
    assert isinstance(back.attrs["surrinf_version"], str)
    # what the reader returns is exactly what h5py gives
    with h5py.File(path, "r") as f:
        assert np.array_equal(f["incident_energies"][()], back.incident_energies_mev)
        assert np.array_equal(f["showers"][()], back.showers_mev)
        assert np.array_equal(f["theta"][()], back.theta)
        assert np.array_equal(f["impact_offset_mm"][()], back.impact_offset_mm)
        assert list(f["theta"].attrs["columns"]) == ["energy_scale", "sampling_term", "noise_sigma"]
        assert f["showers"].compression == "gzip"
        assert f["showers"].chunks[1] == GEOM.n_voxels  # chunked by rows
        assert Geometry.from_json(f.attrs["surrinf_geometry"]) == GEOM
    # read -> write again round-trips too (reserved attrs in data.attrs are ignored by the writer)
    back2 = read_showers(write_showers(tmp_path / "s2.h5", back))
    assert np.array_equal(back2.showers_mev, data.showers_mev)


def test_from_gev_and_units():
    e = np.array([1.5, 20.0, 333.3])
    s = np.random.default_rng(0).random((3, GEOM.n_voxels))
    d1 = ShowerData.from_gev(e, s, geometry=GEOM)
    d2 = ShowerData.from_gev(e[:, None], s, geometry=GEOM)
    assert np.array_equal(d1.incident_energies_mev, d2.incident_energies_mev)
    assert d1.incident_energies_mev.shape == (3, 1) and d1.incident_energies_mev.dtype == np.float32
    assert np.array_equal(d1.showers_mev, (s * 1000.0).astype(np.float32))
    assert d1.energies_gev().shape == (3,) and d1.energies_gev().dtype == np.float32
    np.testing.assert_allclose(d1.energies_gev(), e, rtol=1e-6)
    np.testing.assert_allclose(d1.showers_gev(), s, rtol=1e-6)
    assert d1.n == 3
    with pytest.raises(ValueError, match="showers_mev"):
        ShowerData.from_gev(e, s[:2])
    with pytest.raises(ValueError, match="theta"):
        ShowerData.from_gev(e, s, theta=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="geometry 'ds2'"):
        ShowerData.from_gev(e, s, geometry=get_geometry("ds2"))


def test_getitem_and_concatenate():
    d = make_data(10)
    sub = d[2:5]
    assert sub.n == 3 and np.array_equal(sub.theta, d.theta[2:5]) and sub.geometry is d.geometry
    assert np.array_equal(d[np.array([0, 9])].showers_mev, d.showers_mev[[0, 9]])
    mask = np.zeros(10, bool)
    mask[[1, 3]] = True
    assert np.array_equal(d[mask].impact_offset_mm, d.impact_offset_mm[mask])
    assert d[-1].n == 1 and np.array_equal(d[-1].showers_mev, d.showers_mev[-1:])
    joined = ShowerData.concatenate([d[:4], d[4:]])
    for name in ("incident_energies_mev", "showers_mev", "theta", "impact_offset_mm"):
        assert np.array_equal(getattr(joined, name), getattr(d, name))
    assert joined.attrs == d.attrs
    with pytest.raises(ValueError, match="theta"):
        ShowerData.concatenate([d, make_data(2, theta=False)])


def test_read_slices(tmp_path):
    data = make_data(50)
    path = write_showers(tmp_path / "s.h5", data)
    part = read_showers(path, start=10, stop=20)
    assert np.array_equal(part.showers_mev, data.showers_mev[10:20])
    assert np.array_equal(part.theta, data.theta[10:20])
    assert np.array_equal(read_showers(path, start=-5).showers_mev, data.showers_mev[-5:])
    assert read_showers(path, start=40, stop=30).n == 0


def test_real_calochallenge_layout_reads(tmp_path):
    """A file as published by the CaloChallenge: two datasets, no attributes, no extras."""
    raw = good_raw(6, 368)
    path = write_raw(tmp_path / "cc.h5", **raw)
    d = read_showers(path)
    assert d.geometry is None and d.theta is None and d.impact_offset_mm is None and d.attrs == {}
    assert np.array_equal(d.showers_mev, raw["showers"])
    d = read_showers(path, geometry=get_geometry("ds1-photons"))
    assert d.geometry.name == "ds1-photons"
    info = file_info(path)
    assert info["geometry"] is None and info["geometry_candidates"] == ["ds1-photons"]
    # a float64 file keeps its stored dtype (bitwise what h5py gives)
    raw64 = good_raw(3, 360, np.float64)
    d64 = read_showers(write_raw(tmp_path / "cc64.h5", **raw64))
    assert d64.showers_mev.dtype == np.float64 and np.array_equal(d64.showers_mev, raw64["showers"])


def test_iter_showers_chunks(tmp_path):
    data = make_data(103)
    path = write_showers(tmp_path / "s.h5", data, chunk_rows=16)
    parts = list(iter_showers(path, chunk_size=25))
    assert [p.n for p in parts] == [25, 25, 25, 25, 3]
    joined = ShowerData.concatenate(parts)
    assert np.array_equal(joined.showers_mev, data.showers_mev)
    assert np.array_equal(joined.theta, data.theta)
    assert validate_file(path, chunk_size=30) == 103


def test_writer_streaming_and_file_info(tmp_path):
    data = make_data(30)
    path = tmp_path / "w.h5"
    with ShowerWriter(path, GEOM, with_theta=True, with_offset=True, attrs=data.attrs, chunk_rows=8) as w:
        for i in range(0, 30, 7):
            w.append(data[i : i + 7])
        assert not path.exists()  # only renamed onto path at the end
    assert w.n_written == 30
    back = read_showers(path)
    assert np.array_equal(back.showers_mev, data.showers_mev)
    assert np.array_equal(back.impact_offset_mm, data.impact_offset_mm)
    info = file_info(path)
    assert info["n_showers"] == 30 and info["n_voxels"] == 360 and info["geometry"] == "default"
    assert info["extra_datasets"] == ["impact_offset_mm", "theta"]
    assert info["attrs"]["material"] == "W/Si" and "surrinf_version" in info["attrs"]
    e = data.energies_gev()
    assert info["energy_min_gev"] == pytest.approx(e.min(), rel=1e-6)
    assert info["energy_max_gev"] == pytest.approx(e.max(), rel=1e-6)
    assert info["file_size_bytes"] == path.stat().st_size
    # no geometry: the voxel count comes from the first batch
    with ShowerWriter(tmp_path / "nogeo.h5", None) as w:
        w.append(make_data(3, theta=False, offset=False))
    assert read_showers(tmp_path / "nogeo.h5").geometry is None
    # nothing appended and no geometry: the voxel count is unknown -> error, no file
    with pytest.raises(ShowerFileError, match="nothing was appended"), ShowerWriter(tmp_path / "empty.h5", None):
        pass
    assert not (tmp_path / "empty.h5").exists()
    # with a geometry an empty file is valid
    with ShowerWriter(tmp_path / "empty.h5", GEOM):
        pass
    assert read_showers(tmp_path / "empty.h5").showers_mev.shape == (0, 360)
    assert file_info(tmp_path / "empty.h5")["energy_min_gev"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.h5", "nogeo.h5", "w.h5"]


def test_iteration_memory_is_bounded(tmp_path):
    """50k x 360 float32 showers (72 MB): chunk-wise iteration stays far below the full size."""
    n, chunk = 50_000, 5_000
    path = tmp_path / "big.h5"
    with ShowerWriter(path, GEOM, compression_opts=1) as w:
        for i in range(0, n, chunk):
            w.append(make_data(chunk, theta=False, offset=False, seed=i))
    full_bytes = n * GEOM.n_voxels * 4

    tracemalloc.start()
    try:
        total, rows = 0.0, 0
        for d in iter_showers(path, chunk_size=1000):
            total += float(d.showers_mev.sum(dtype=np.float64))
            rows += d.n
        _, peak_iter = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        full = read_showers(path)
        _, peak_full = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == n
    assert peak_iter < full_bytes / 10, (peak_iter, full_bytes)
    assert peak_full > full_bytes  # the measurement does see a full read
    assert total == pytest.approx(float(full.showers_mev.sum(dtype=np.float64)), rel=1e-12)


# ------------------------------------------------------------------------------------ validation


def _other_binning() -> Geometry:
    """Same voxel count as the default geometry (360) but different layer depths."""
    g = GEOM
    return Geometry("other", g.layer_edges_mm * 2.0, g.r_edges_mm, g.n_alpha)


def _bad_files():
    raw = good_raw()
    n = raw["incident_energies"].shape[0]
    nan = raw["showers"].copy()
    nan[2, 7] = np.nan
    inf_e = raw["incident_energies"].copy()
    inf_e[3, 0] = np.inf
    zero_e = raw["incident_energies"].copy()
    zero_e[1, 0] = 0.0
    neg = raw["showers"].copy()
    neg[3, 5] = -0.25
    geo = {"surrinf_geometry": GEOM.to_json()}
    return {
        "missing energies": ({"showers": raw["showers"]}, {}, "missing dataset 'incident_energies'"),
        "missing showers": ({"incident_energies": raw["incident_energies"]}, {}, "missing dataset 'showers'"),
        "energies 1-D": (
            {**raw, "incident_energies": raw["incident_energies"][:, 0]},
            {},
            r"'incident_energies' has shape \(4,\), expected \(N, 1\)",
        ),
        "showers 1-D": (
            {**raw, "showers": raw["showers"][0]},
            {},
            r"'showers' has shape \(360,\), expected \(N, n_vox",
        ),
        "N mismatch": (
            {**raw, "showers": raw["showers"][:3]},
            {},
            "'showers' and 'incident_energies' disagree.*3 vs 4",
        ),
        "theta shape": (
            {**raw, "theta": np.zeros((n, 2), np.float32)},
            {},
            r"'theta' has shape \(4, 2\), expected \(4, 3\)",
        ),
        "offset shape": ({**raw, "impact_offset_mm": np.zeros((n, 3), np.float32)}, {}, "'impact_offset_mm' has shape"),
        "int dtype": ({**raw, "showers": raw["showers"].astype(np.int32)}, {}, "'showers' has dtype int32"),
        "stored geometry voxels": (
            {**raw, "showers": raw["showers"][:, :100]},
            geo,
            "'showers' has 100 voxels per shower but the stored geometry 'default' has 360",
        ),
        "bad geometry json": (raw, {"surrinf_geometry": "{not json"}, "'surrinf_geometry' is not a valid geometry"),
        "nan shower": ({**raw, "showers": nan}, {}, "'showers' has a NaN/inf value in row 2"),
        "inf energy": ({**raw, "incident_energies": inf_e}, {}, "'incident_energies' has a NaN/inf value in row 3"),
        "zero energy": ({**raw, "incident_energies": zero_e}, {}, "'incident_energies' must hold positive.*row 1"),
        "negative voxel": ({**raw, "showers": neg}, {}, r"negative voxel energy in row 3, voxel 5: -0.25 MeV"),
    }


@pytest.mark.parametrize("case", list(_bad_files()))
def test_invalid_files(tmp_path, case):
    datasets, attrs, message = _bad_files()[case]
    path = write_raw(tmp_path / "bad.h5", attrs, **datasets)
    with pytest.raises(ShowerFileError, match=message) as err:
        read_showers(path)
    assert str(path) in str(err.value)
    with pytest.raises(ShowerFileError, match=message):
        list(iter_showers(path, chunk_size=2))


def test_missing_and_non_hdf5(tmp_path):
    with pytest.raises(ShowerFileError, match="file not found"):
        read_showers(tmp_path / "nope.h5")
    txt = tmp_path / "x.h5"
    txt.write_text("hello")
    with pytest.raises(ShowerFileError, match="not an HDF5 file"):
        read_showers(txt)
    with pytest.raises(ShowerFileError, match="not an HDF5 file"):
        file_info(txt)


def test_geometry_mismatch_messages(tmp_path):
    path = write_showers(tmp_path / "s.h5", make_data(3))
    with pytest.raises(ShowerFileError, match="different binning from the argument geometry 'other'"):
        read_showers(path, geometry=_other_binning())
    with pytest.raises(ShowerFileError, match=r"stored geometry 'default' .360 voxels.*argument geometry 'ds2' .6480"):
        read_showers(path, geometry=get_geometry("ds2"))
    raw = write_raw(tmp_path / "raw.h5", **good_raw())
    with pytest.raises(ShowerFileError, match="360 voxels per shower but the argument geometry 'ds2' has 6480"):
        read_showers(raw, geometry=get_geometry("ds2"))
    # same binning under another name is accepted; the argument geometry is returned
    renamed = Geometry("renamed", GEOM.layer_edges_mm, GEOM.r_edges_mm, GEOM.n_alpha)
    assert read_showers(path, geometry=renamed).geometry.name == "renamed"


def test_negative_tolerance(tmp_path):
    raw = good_raw()
    raw["showers"][1, 3] = -4.0  # MeV
    theta = np.tile(np.array([1.0, 0.1, 0.001], np.float32), (4, 1))  # noise 1 MeV -> tolerance 5 MeV
    ok = write_raw(tmp_path / "ok.h5", **raw, theta=theta)
    assert read_showers(ok).n == 4
    with pytest.raises(ShowerFileError, match=r"row 1, voxel 3: -4.0 MeV, below the tolerance -3 MeV"):
        read_showers(ok, negative_tolerance_mev=3.0)
    theta[:, 2] = 0.0005  # tolerance 2.5 MeV
    bad = write_raw(tmp_path / "bad.h5", **raw, theta=theta)
    with pytest.raises(ShowerFileError, match="row 1, voxel 3"):
        read_showers(bad)
    assert read_showers(bad, validate=False).n == 4
    with pytest.raises(ShowerFileError, match="negative_tolerance_mev"):
        read_showers(bad, negative_tolerance_mev=-1.0)


def test_chunked_validation_finds_late_error(tmp_path):
    data = make_data(100, theta=False, offset=False)
    path = write_showers(tmp_path / "s.h5", data)
    with h5py.File(path, "a") as f:
        f["showers"][87, 11] = np.nan
    seen = []
    with pytest.raises(ShowerFileError, match="'showers' has a NaN/inf value in row 87"):
        for d in iter_showers(path, chunk_size=20):
            seen.append(d.n)
    assert seen == [20, 20, 20, 20]  # earlier chunks were yielded before the error
    with pytest.raises(ShowerFileError, match="row 87"):
        validate_file(path, chunk_size=20)
    assert read_showers(path, stop=80).n == 80  # rows before the bad one are fine


def test_writer_validation(tmp_path):
    path = tmp_path / "w.h5"
    good = make_data(5)
    cases = [
        (make_data(2, get_geometry("ds1-photons")), "'data.showers_mev' has 368 voxels.*'default' has 360"),
        (make_data(2, theta=False), "'data.theta' is missing but the writer was opened with with_theta=True"),
        (ShowerData.from_gev(np.ones(2), np.full((2, 360), np.nan), np.zeros((2, 3)), np.zeros((2, 2))), "NaN/inf"),
        (ShowerData.from_gev(-np.ones(2), np.zeros((2, 360)), np.zeros((2, 3)), np.zeros((2, 2))), "positive"),
        (ShowerData.from_gev(np.ones(2), -np.ones((2, 360)), np.zeros((2, 3)), np.zeros((2, 2))), "negative voxel"),
    ]
    for bad, message in cases:
        with (
            pytest.raises(ShowerFileError, match=message),
            ShowerWriter(path, GEOM, with_theta=True, with_offset=True) as w,
        ):
            w.append(good)
            w.append(bad)
        assert not path.exists()
        assert list(tmp_path.iterdir()) == []
    with pytest.raises(ShowerFileError, match=r"'data.impact_offset_mm' is present"), ShowerWriter(path, GEOM) as w:
        w.append(make_data(2, theta=False))


# ------------------------------------------------------------------------------------ atomicity


def test_writer_exception_leaves_existing_file_untouched(tmp_path):
    path = write_showers(tmp_path / "s.h5", make_data(20))
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="boom"), ShowerWriter(path, GEOM, with_theta=True, with_offset=True) as w:
        w.append(make_data(50, seed=3))
        raise RuntimeError("boom")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]  # no temporary file left behind
    # a failing write_showers (validation error) does not touch it either
    bad = ShowerData.from_gev(np.ones(2), np.full((2, 360), np.inf))
    with pytest.raises(ShowerFileError):
        write_showers(path, bad)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]
    # and a successful write replaces it
    write_showers(path, make_data(7))
    assert read_showers(path).n == 7
