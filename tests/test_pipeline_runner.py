"""The main job's configuration schema and its stage cache: errors naming the key, content-hash caching, resume."""

from __future__ import annotations

import tomllib

import jax
import numpy as np
import pytest

from surrinf.cli import main
from surrinf.pipeline import ConfigError, PipelineConfig, default_toml, load_config
from surrinf.pipeline.config import from_dict, to_toml
from surrinf.pipeline.runner import Stage, run_directory, run_stages
from surrinf.pipeline.shower import SIMULATE, TRAIN, load_surrogate


# ------------------------------------------------------------------------------------------------ configuration
def test_default_toml_round_trips_to_the_defaults():
    assert from_dict(tomllib.loads(default_toml())) == PipelineConfig()
    cfg = PipelineConfig().replace(train={"max_steps": 7}, sensitivity={"lumi_fb": [2, 3]})
    assert load_config_text(to_toml(cfg, comments=False)) == cfg
    assert cfg.sensitivity.lumi_fb == (2.0, 3.0)


def load_config_text(text: str) -> PipelineConfig:
    return from_dict(tomllib.loads(text))


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[train]\nmax_steps = "many"', "'train.max_steps': expected an integer >= 1, got 'many'"),
        ("[train]\nmax_steps = 1.5", "'train.max_steps': expected an integer"),
        ("[train]\nmax_step = 10", "'train.max_step' is unknown; keys of [train]: model, kind, max_steps"),
        ("[trian]\nmax_steps = 10", "config table [trian] is unknown"),
        ('[train]\nkind = "nf"', "'train.kind': expected one of ['flow', 'vae', 'diffusion', 'gan'], got 'nf'"),
        ("[calibration]\ntheta_star = [1.0, 0.17]", "'calibration.theta_star': expected a list of 3 positive numbers"),
        ("[calibration]\nenabled = 1", "'calibration.enabled': expected true or false"),
        ("[validate]\nn_showers = 9000", "'validate.n_showers': expected an integer <= simulate.n_test"),
        ('[simulate]\nenergy_spectrum = "log:1"', "'simulate.energy_spectrum'"),
        ('[simulate]\ndata = "/no/such/file.h5"', "'simulate.data': expected an existing HDF5 file"),
        ('[train]\nmodel = "/no/such/model"', "'train.model': expected a saved-model directory"),
        ("[unfolding]\nenergy_range_gev = [500.0, 5.0]", "'unfolding.energy_range_gev': expected [lo, hi]"),
        ("train = 3", "config key 'train': expected a table [train]"),
    ],
)
def test_invalid_config_names_the_key(tmp_path, capsys, toml, message):
    path = tmp_path / "bad.toml"
    path.write_text(toml + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in str(err.value)
    # the CLI reports it without a traceback, before any stage runs
    assert main(["run", "--config", str(path), "--quiet"]) == 2
    assert message in capsys.readouterr().err


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "syntax.toml"
    bad.write_text("[train\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(bad)


def test_config_show_and_check(tmp_path, capsys):
    assert main(["config", "show"]) == 0
    assert capsys.readouterr().out == default_toml()
    user = tmp_path / "user.toml"
    user.write_text("[train]\nmax_steps = 12\n")
    assert main(["config", "show", str(user)]) == 0
    assert load_config_text(capsys.readouterr().out).train.max_steps == 12
    assert main(["config", "check", str(user)]) == 0


# ------------------------------------------------------------------------------------------------------ caching
def _counting_stage(name: str, calls: list[str], needs=(), fail: bool = False) -> Stage:
    def run(ctx):
        calls.append(name)
        (ctx.work_dir / "out.txt").write_text(f"{name} {ctx.config.train.max_steps}")
        if fail:
            raise RuntimeError("killed")
        return {"value": float(jax.random.uniform(ctx.key)), "inputs": sorted(ctx.inputs)}

    return Stage(name, name, run, needs=needs, table="train" if name == "b" else None)


def test_stage_cache_skips_finished_stages_and_rehashes_on_change(tmp_path):
    calls: list[str] = []
    a, b = _counting_stage("a", calls), _counting_stage("b", calls, needs=("a",))
    cfg = PipelineConfig().replace(run={"out_dir": str(tmp_path)})
    first = run_stages([a, b], cfg, progress=False)
    assert calls == ["a", "b"] and not first.outputs["a"].cached
    again = run_stages([a, b], cfg, progress=False)
    assert calls == ["a", "b"] and again.outputs["b"].cached  # nothing recomputed
    assert again.outputs["b"].summary == first.outputs["b"].summary and again.run_dir == first.run_dir
    # a change in b's table reruns b only; a new seed reruns both (and draws other numbers)
    changed = run_stages([a, b], cfg.replace(train={"max_steps": 3}), progress=False)
    assert calls == ["a", "b", "b"] and changed.outputs["a"].cached
    assert changed.run_dir != first.run_dir == run_directory(cfg).resolve()
    reseeded = run_stages([a, b], cfg.replace(run={"seed": 1}), progress=False)
    assert calls[-2:] == ["a", "b"]
    assert reseeded.outputs["a"].summary["value"] != first.outputs["a"].summary["value"]


def test_a_failed_stage_leaves_no_finished_entry(tmp_path):
    calls: list[str] = []
    cfg = PipelineConfig().replace(run={"out_dir": str(tmp_path)})
    with pytest.raises(RuntimeError, match="killed"):
        run_stages([_counting_stage("a", calls), _counting_stage("c", calls, fail=True)], cfg, progress=False)
    cache = tmp_path / "cache"
    finished = [p.name.split("-")[0] for p in cache.iterdir() if not p.name.endswith(".partial")]
    assert finished == ["a"] and len(list(cache.glob("c-*.partial"))) == 1
    ok = run_stages([_counting_stage("a", calls), _counting_stage("c", calls)], cfg, progress=False)
    assert ok.outputs["a"].cached and not ok.outputs["c"].cached and calls == ["a", "c", "c"]
    assert not list(cache.glob("*.partial"))


# ------------------------------------------------------------------------------------------------------- resume
def test_training_killed_midway_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """A KeyboardInterrupt at step 13 of 20 (checkpoints every 5): the rerun resumes at step 10 and ends with the
    same parameters as an uninterrupted run (the trainer's resume is bitwise deterministic). Then the same stages on
    the user's own files (simulate.data, train.model)."""
    import surrinf.generators.trainer as trainer

    cfg = PipelineConfig().replace(
        run={"out_dir": str(tmp_path / "runs")},
        simulate={"n_train": 1000, "n_test": 1000, "energy_spectrum": "log-uniform:10,100"},
        train={"max_steps": 20, "checkpoint_every": 5, "batch_size": 64, "hidden": 8, "n_layers": 1},
        validate={"n_showers": 500},
    )
    step = trainer._train_step
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 13:
            raise KeyboardInterrupt
        return step(*args, **kwargs)

    monkeypatch.setattr(trainer, "_train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_stages([SIMULATE, TRAIN], cfg, progress=False)
    monkeypatch.setattr(trainer, "_train_step", step)
    resumed = run_stages([SIMULATE, TRAIN], cfg, progress=False)
    assert resumed.outputs["simulate"].cached
    assert resumed.outputs["train"].summary["resumed"] and resumed.outputs["train"].summary["steps"] == 20
    fresh = run_stages([SIMULATE, TRAIN], cfg.replace(run={"cache_dir": str(tmp_path / "other")}), progress=False)
    assert not fresh.outputs["train"].summary["resumed"]
    a, b = (jax.tree.leaves(load_surrogate(r.outputs["train"])) for r in (resumed, fresh))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

    # the user's own files: a CaloChallenge file instead of simulating, a saved model instead of training
    from surrinf.data import ShowerData, read_showers, write_showers

    sim_dir = resumed.outputs["simulate"].path
    parts = [read_showers(sim_dir / f"reference_{w}.h5") for w in ("train", "test")]
    data_file = write_showers(tmp_path / "mine.h5", ShowerData.concatenate(parts))
    mine = cfg.replace(simulate={"data": str(data_file)}, train={"model": str(resumed.outputs["train"].path / "model")})
    own = run_stages([SIMULATE, TRAIN], mine, progress=False)
    assert own.outputs["simulate"].summary["source"] == str(data_file)
    assert own.outputs["train"].summary["source"] == mine.train.model
    np.testing.assert_array_equal(
        read_showers(own.outputs["simulate"].path / "reference_test.h5").showers_mev, parts[1].showers_mev
    )
    c, d = (jax.tree.leaves(load_surrogate(r.outputs["train"])) for r in (own, resumed))
    for x, y in zip(c, d, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # the file's content is part of the simulate stage's hash: other showers, another cache entry
    write_showers(data_file, ShowerData.concatenate(parts[::-1]))
    assert run_stages([SIMULATE], mine, progress=False).outputs["simulate"].hash != own.outputs["simulate"].hash
