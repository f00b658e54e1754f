"""The common interface of the scripts in studies/ (surrinf.report.study): options, config files, provenance.

No study computes anything here: only their parsers (``build_parser``) and ``main(["--help"])`` are exercised.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from surrinf.report.study import StudyRun, load_config, parse_study_args, study_parser

STUDIES_DIR = Path(__file__).resolve().parents[1] / "studies"

# study -> (option dest, a valid config value, its parsed value, a command line overriding it, the value it gives,
#           a value of the wrong type)
CASES = {
    "calibration": ("m_cal", 17, 17, ["--m-cal", "5"], 5, "many"),
    "dijet_kinfit": ("surrogate_steps", [10, 20], [10, 20], ["--surrogate-steps", "3"], [3], 10),
    "discovery_sensitivity": ("window", [60, 120], [60.0, 120.0], ["--window", "1", "2"], [1.0, 2.0], [60, "x"]),
    "extrapolation": ("n_bins", 6, 6, ["--n-bins", "4"], 4, "few"),
    "generator_quality": ("models", "flow", "flow", ["--models", "vae"], "vae", 3),
    "latent_structure": ("latent", 4, 4, ["--latent", "2"], 2, "many"),
    "lund_plane": ("n_jets", 500, 500, ["--n-jets", "7"], 7, 2.5),
    "pythia_dijets": ("process", "resonance", "resonance", ["--process", "qcd"], "qcd", 3),
    "unfolding_bias": ("n_data", 1000, 1000.0, ["--n-data", "5"], 5.0, "lots"),
    "validation_closure": ("n", 50, 50, ["--n", "7"], 7, 2.5),
}

_modules: dict[str, ModuleType] = {}


def study(name: str) -> ModuleType:
    """The module studies/<name>.py, imported by path (once per session)."""
    if name not in _modules:
        spec = importlib.util.spec_from_file_location(f"_study_{name}", STUDIES_DIR / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _modules[name] = module
    return _modules[name]


def write_toml(path: Path, values: dict) -> Path:
    lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]  # JSON scalars and arrays are valid TOML here
    path.write_text("\n".join(lines) + "\n")
    return path


def test_every_study_is_covered():
    assert sorted(p.stem for p in STUDIES_DIR.glob("*.py")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_help_exits_zero(name, capsys):
    with pytest.raises(SystemExit) as exc:
        study(name).main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--seed", "--config", "--out", "--" + CASES[name][0].replace("_", "-")):
        assert option in out


@pytest.mark.parametrize("name", sorted(CASES))
def test_unknown_config_key(name, tmp_path, capsys):
    cfg = write_toml(tmp_path / "bad.toml", {"no_such_option": 1})
    with pytest.raises(SystemExit) as exc:
        parse_study_args(study(name).build_parser(), ["--config", str(cfg)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "no_such_option" in err and str(cfg) in err and CASES[name][0] in err


@pytest.mark.parametrize("name", sorted(CASES))
def test_wrong_type_in_config(name, tmp_path, capsys):
    dest, *_, wrong = CASES[name]
    cfg = write_toml(tmp_path / "wrong.toml", {dest: wrong})
    with pytest.raises(SystemExit):
        parse_study_args(study(name).build_parser(), ["--config", str(cfg)])
    err = capsys.readouterr().err
    assert repr(dest) in err and "expects" in err


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_sets_and_command_line_wins(name, tmp_path):
    dest, value, parsed, cli, cli_value, _ = CASES[name]
    parser = study(name).build_parser()
    default = parse_study_args(parser, []).__dict__[dest]
    cfg = write_toml(tmp_path / "ok.toml", {dest.replace("_", "-"): value, "seed": 5})
    args = parse_study_args(parser, ["--config", str(cfg)])
    assert getattr(args, dest) == parsed != default
    assert args.seed == 5
    args = parse_study_args(parser, ["--config", str(cfg), *cli, "--seed", "3"])
    assert getattr(args, dest) == cli_value
    assert args.seed == 3


def test_study_defaults_kept():
    """A few defaults the studies had before the common parser (outputs must not move)."""
    assert parse_study_args(study("pythia_dijets").build_parser(), []).seed == 1
    assert parse_study_args(study("pythia_dijets").build_parser(), []).out is None
    for name in ("calibration", "dijet_kinfit", "discovery_sensitivity", "unfolding_bias", "validation_closure"):
        args = parse_study_args(study(name).build_parser(), [])
        assert args.seed == 0 and args.out == "docs/results" and args.config is None
    gq = parse_study_args(study("generator_quality").build_parser(), ["--overrides", "x.json"])
    assert gq.overrides == "x.json" and gq.config is None and gq.name == "generator_quality"


# --- surrinf.report.study directly ---


def toy_parser() -> argparse.ArgumentParser:
    p = study_parser("Toy study.\n\nMore text.")
    p.add_argument("--n-train", type=int, default=10)
    p.add_argument("--rate", type=float, default=0.5)
    p.add_argument("--lumi", type=float, nargs="+", default=[1.0])
    p.add_argument("--window", type=float, nargs=2, default=(70.0, 110.0))
    p.add_argument("--massive", action="store_true")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--kind", choices=("a", "b"), default="a")
    p.add_argument("--work", default="runs/x")
    return p


def test_parser_common_options():
    p = toy_parser()
    assert p.description == "Toy study."
    args = parse_study_args(p, [])
    assert (args.seed, args.config, args.out) == (0, None, "docs/results")
    p2 = study_parser(None, seed=1, out=None)
    assert vars(parse_study_args(p2, [])) == {"seed": 1, "config": None, "out": None}


@pytest.mark.parametrize("fmt", ["toml", "json"])
def test_config_json_and_toml(fmt, tmp_path):
    values = {"n-train": 20, "rate": 1, "lumi": [2, 3.5], "window": [1, 2], "massive": True, "steps": 7, "kind": "b"}
    path = tmp_path / f"c.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(values))
    else:
        write_toml(path, values)
    args = parse_study_args(toy_parser(), ["--config", str(path)])
    assert args.n_train == 20 and args.steps == 7 and args.massive is True and args.kind == "b"
    assert args.rate == 1.0 and isinstance(args.rate, float)
    assert args.lumi == [2.0, 3.5] and args.window == [1.0, 2.0]
    assert args.work == "runs/x" and args.config == str(path)
    assert list(vars(args)) == list(vars(parse_study_args(toy_parser(), [])))  # option order kept


def test_dashes_and_underscores(tmp_path):
    for key in ("n-train", "n_train"):
        path = tmp_path / "c.json"
        path.write_text(json.dumps({key: 3}))
        assert parse_study_args(toy_parser(), ["--config", str(path)]).n_train == 3


def test_command_line_wins(tmp_path):
    path = write_toml(tmp_path / "c.toml", {"n_train": 3, "lumi": [4.0], "massive": True, "out": "elsewhere"})
    args = parse_study_args(toy_parser(), ["--n-train", "9", "--config", str(path), "--lumi", "1", "2"])
    assert args.n_train == 9 and args.lumi == [1.0, 2.0]
    assert args.massive is True and args.out == "elsewhere"  # from the file: not given on the command line


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"n_train": "x"}, ["'n_train'", "an integer"]),
        ({"n_train": 1.5}, ["'n_train'", "an integer"]),
        ({"n_train": True}, ["'n_train'", "an integer"]),
        ({"rate": "fast"}, ["'rate'", "a number"]),
        ({"lumi": 1.0}, ["'lumi'", "a list of one or more numbers"]),
        ({"lumi": []}, ["'lumi'", "a list"]),
        ({"window": [1.0]}, ["'window'", "a list of 2 numbers"]),
        ({"window": [1.0, "x"]}, ["'window'", "a list of 2 numbers"]),
        ({"massive": 1}, ["'massive'", "true or false"]),
        ({"kind": "c"}, ["'kind'", "one of ['a', 'b']"]),
        ({"work": None}, ["'work'", "a string"]),
        ({"work": 3}, ["'work'", "a string"]),
    ],
)
def test_wrong_types(values, words, tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(values))
    with pytest.raises(SystemExit) as exc:
        parse_study_args(toy_parser(), ["--config", str(path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err


def test_null_for_an_option_without_default(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"steps": None}))
    assert load_config(toy_parser(), path) == {"steps": None}


@pytest.mark.parametrize(
    ("name", "text", "words"),
    [
        ("missing.toml", None, ["missing.toml", "cannot read"]),
        ("c.yaml", "a: 1", ["c.yaml", ".toml or .json"]),
        ("c.toml", "n_train = ", ["c.toml", "not valid TOML"]),
        ("c.json", "{", ["c.json", "not valid JSON"]),
        ("c.json", "[1, 2]", ["c.json", "table"]),
        ("c.toml", "config = 'other.toml'", ["unknown option 'config'"]),
        ("c.toml", "bogus = 1", ["unknown option 'bogus'", "known options:", "n_train", "window"]),
    ],
)
def test_bad_files(name, text, words, tmp_path, capsys):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(SystemExit):
        parse_study_args(toy_parser(), ["--config", str(path)])
    err = capsys.readouterr().err
    for word in words:
        assert word in err


def test_finish_writes_provenance(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["studies/toy.py", "--seed", "4"])
    args = parse_study_args(toy_parser(), ["--seed", "4"])
    run = StudyRun()
    assert run.elapsed() >= 0.0
    path = run.finish(tmp_path / "out", "toy", args, surrogate="flow", numbers=[1, 2])
    assert path == tmp_path / "out" / "toy_provenance.json"
    info = json.loads(path.read_text())
    assert info["seed"] == 4
    assert info["command"] == ["studies/toy.py", "--seed", "4"]
    assert info["config"]["n_train"] == 10 and info["config"]["window"] == [70.0, 110.0]
    assert info["config"]["seed"] == 4 and info["config"]["out"] == "docs/results"
    assert isinstance(info["wall_s"], float) and info["wall_s"] >= 0.0
    assert info["surrogate"] == "flow" and info["numbers"] == [1, 2]
    for key in ("timestamp", "versions", "git"):
        assert key in info
    with pytest.raises(ValueError, match="wall_s"):
        run.finish(tmp_path, "toy", args, wall_s=1.0)
