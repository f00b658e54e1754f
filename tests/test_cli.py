"""Command-line interface: simulate, info, run."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from surrinf.cli import main
from surrinf.data import ShowerData, get_geometry, read_showers, write_showers


def test_simulate_reads_back_identically_through_h5py_and_reader(tmp_path, capsys):
    out = tmp_path / "showers.h5"
    # 1000 showers: the 1024 batch shape of the other CLI tests (one simulator compilation less)
    rc = main(
        ["simulate", "--n", "1000", "--energy", "log-uniform:1,1000", "--seed", "3", "--out", str(out), "--quiet"]
    )
    assert rc == 0
    assert capsys.readouterr().out.strip() == str(out)
    data = read_showers(out, geometry=get_geometry("default"))
    with h5py.File(out, "r") as f:
        assert f["showers"].dtype == np.float32 and f["showers"].shape == (1000, 360)
        assert np.array_equal(f["showers"][:], data.showers_mev)
        assert np.array_equal(f["incident_energies"][:], data.incident_energies_mev)
        assert np.array_equal(f["theta"][:], data.theta)
        assert np.array_equal(f["impact_offset_mm"][:], data.impact_offset_mm)
    e = data.energies_gev()
    assert e.min() >= 1.0 and e.max() <= 1000.0
    # CaloChallenge units: MeV. The visible fraction of W/Si is 2.6 %, so showers carry ~0.025 E_inc.
    ratio = data.showers_mev.sum(1) / data.incident_energies_mev[:, 0]
    assert 0.015 < np.median(ratio) < 0.03
    # same seed -> same bits
    out2 = tmp_path / "again.h5"
    main(["simulate", "--n", "1000", "--seed", "3", "--out", str(out2), "--quiet"])
    assert np.array_equal(read_showers(out2).showers_mev, data.showers_mev)


def test_simulate_ds2_with_theta_and_offset(tmp_path):
    out = tmp_path / "ds2.h5"
    args = ["simulate", "--geometry", "ds2", "--n", "20", "--energy", "fixed:50", "--theta", "1.02,0.2,0.0001"]
    assert main([*args, "--offset", "2,-1", "--out", str(out), "--quiet"]) == 0
    data = read_showers(out, geometry=get_geometry("ds2"))
    assert data.showers_mev.shape == (20, 6480)
    np.testing.assert_allclose(data.theta[0], [1.02, 0.2, 0.0001], rtol=1e-6)
    np.testing.assert_allclose(data.impact_offset_mm[0], [2.0, -1.0])


def test_info(tmp_path, capsys):
    out = tmp_path / "s.h5"
    main(["simulate", "--n", "50", "--out", str(out), "--quiet"])
    capsys.readouterr()
    assert main(["info", str(out), "--validate"]) == 0
    text = capsys.readouterr().out
    assert "n_showers" in text and "50" in text and "validation" in text
    assert main(["info", str(out), "--json"]) == 0
    assert '"n_voxels": 360' in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--energy", "log-uniform:-1,10"], "energies must lie in"),
        (["--energy", "gaussian:5,1"], "unknown form 'gaussian'"),
        (["--n", "0"], "--n must be a positive"),
        (["--theta", "1,2"], "--theta must be 3"),
    ],
)
def test_simulate_bad_input(tmp_path, capsys, args, message):
    rc = main(["simulate", *args, "--out", str(tmp_path / "x.h5"), "--quiet"])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()


def test_simulate_unknown_geometry_is_rejected(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["simulate", "--geometry", "ds9", "--out", str(tmp_path / "x.h5")])
    assert "invalid choice: 'ds9'" in capsys.readouterr().err


def test_simulate_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "keep.h5"
    out.write_bytes(b"user data")
    assert main(["simulate", "--n", "5", "--out", str(out), "--quiet"]) == 2
    assert out.read_bytes() == b"user data"
    assert "--overwrite" in capsys.readouterr().err


def test_info_on_wrong_layout(tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f["showers"] = np.zeros((3, 10), np.float32)
    assert main(["info", str(bad)]) == 2
    assert "incident_energies" in capsys.readouterr().err


def test_validate_writes_report_directory(tmp_path, capsys):
    ref, cand = tmp_path / "ref.h5", tmp_path / "cand.h5"
    main(["simulate", "--n", "1000", "--seed", "1", "--out", str(ref), "--quiet"])
    main(["simulate", "--n", "1000", "--seed", "2", "--theta", "1.05,0.17,0", "--out", str(cand), "--quiet"])
    capsys.readouterr()
    out = tmp_path / "report"
    assert main(["validate", str(ref), str(cand), "--out", str(out), "--no-low-level"]) == 0
    assert capsys.readouterr().out.strip() == str(out / "report.md")
    text = (out / "report.md").read_text()
    for stem in ("summary", "observables", "calibration_error"):
        for ext in ("md", "csv", "tex", "json"):
            assert (out / f"{stem}.{ext}").exists()
    assert (out / "validation.json").exists() and (out / "figures" / "hist_E_ratio.png").exists()
    assert "classifier AUC (high-level)" in text and "depth_of_max" in text  # material read from the file
    # +5 % energy scale: the total-energy response is flagged
    import json

    one_d = {c["name"]: c for c in json.loads((out / "validation.json").read_text())["one_d"]}
    assert one_d["E_ratio"]["verdict"] == "significant"


def test_validate_bad_input(tmp_path, capsys):
    ref = tmp_path / "ref.h5"
    # validate stops when it reads the candidate (another geometry), so the size of the reference does not matter:
    # 50 showers as in test_info (the same compiled simulation batch)
    main(["simulate", "--n", "50", "--out", str(ref), "--quiet"])
    other = tmp_path / "ds2.h5"  # another geometry (6480 voxels); the content does not matter
    ds2 = get_geometry("ds2")
    write_showers(other, ShowerData.from_gev(np.full(10, 10.0), np.zeros((10, ds2.n_voxels)), geometry=ds2))
    capsys.readouterr()
    assert main(["validate", str(ref), str(other), "--out", str(tmp_path / "r")]) == 2
    assert "6480" in capsys.readouterr().err


def test_train_then_generate(tmp_path, capsys):
    data, model = tmp_path / "ref.h5", tmp_path / "flow"
    assert main(["simulate", "--n", "400", "--energy", "log-uniform:5,50", "--out", str(data), "--quiet"]) == 0
    # the CLI plumbing is the point here: a one-layer coupling flow compiles fastest
    flow = '{"type": "coupling", "n_layers": 1, "hidden": [8]}'
    tiny = ["--max-steps", "10", "--batch-size", "64", "--model-config", flow]
    assert main(["train", "--model", "flow", "--data", str(data), "--out", str(model), *tiny, "--quiet"]) == 0
    assert sorted(p.name for p in model.iterdir()) == ["model.eqx", "model.json"]
    assert (tmp_path / "flow-train" / "train_log.jsonl").exists()
    capsys.readouterr()
    out = tmp_path / "gen.h5"
    assert main(["generate", str(model), "--n", "300", "--energy", "fixed:20", "--out", str(out), "--quiet"]) == 0
    gen = read_showers(out, geometry=get_geometry("default"))
    assert gen.n == 300 and np.all(gen.energies_gev() == 20.0) and np.all(gen.showers_mev >= 0)
    assert gen.attrs["generator"] == "flow_surrogate" and gen.attrs["material"] == "W/Si"
    # same seed -> same file content; existing output is not overwritten without --overwrite
    again = tmp_path / "gen2.h5"
    main(["generate", str(model), "--n", "300", "--energy", "fixed:20", "--out", str(again), "--quiet"])
    assert np.array_equal(read_showers(again).showers_mev, gen.showers_mev)
    assert main(["generate", str(model), "--n", "10", "--out", str(out), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["train", "--model", "flow", "--data", str(data), "--out", str(model), "--quiet"]) == 2
    bad = ["--out", str(tmp_path / "x"), "--model-config", "[1]"]
    assert main(["train", "--model", "flow", "--data", str(data), *bad]) == 2
