"""Tests for surrinf.generators.serialization: pickle-free model files and checkpoints."""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import surrinf.generators.serialization as ser
from surrinf.generators.serialization import ModelFileError, load, load_checkpoint, save, save_checkpoint


class ToyModel(eqx.Module):
    """A tiny conditional surrogate: an MLP, a non-static float leaf and static config fields."""

    mlp: eqx.nn.MLP
    scale: float
    n_in: int = eqx.field(static=True)
    activation: str = eqx.field(static=True)

    def __init__(self, n_in: int, width: int, depth: int, activation: str = "tanh", scale: float = 0.1, *, key):
        act = {"tanh": jnp.tanh, "relu": jax.nn.relu}[activation]
        self.mlp = eqx.nn.MLP(n_in, 2, width, depth, activation=act, key=key)
        self.scale = scale
        self.n_in = n_in
        self.activation = activation

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.scale * self.mlp(x)

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        return jax.vmap(self)(jax.random.normal(key, (n, self.n_in)))


@ser.register_model("test_toy", model_class=ToyModel)
def build_toy(config: dict, key: jax.Array) -> ToyModel:
    return ToyModel(**config, key=key)


@ser.register_model("test_linear")
class ToyLinear(eqx.Module):
    """Registered as a class: built by ``ToyLinear(**config, key=key)``."""

    linear: eqx.nn.Linear

    def __init__(self, n_in: int, n_out: int, *, key):
        self.linear = eqx.nn.Linear(n_in, n_out, key=key)


CONFIG = {"n_in": 3, "width": 8, "depth": 2, "activation": "tanh", "scale": 0.1}


def _model(seed: int = 1, **overrides) -> tuple[ToyModel, dict]:
    config = {**CONFIG, **overrides}
    return ToyModel(**config, key=jax.random.key(seed)), config


def _arrays(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_array))]


def _assert_bitwise_equal(a, b) -> None:
    la, lb = _arrays(a), _arrays(b)
    assert len(la) == len(lb) > 0
    for x, y in zip(la, lb, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def _edit_json(path: Path, **changes) -> None:
    info = json.loads(path.read_text())
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(info.get(k), dict):
            info[k].update(v)
        else:
            info[k] = v
    path.write_text(json.dumps(info))


def test_roundtrip_is_bitwise_and_outputs_match(tmp_path):
    model, config = _model()
    out = save(model, tmp_path / "toy", config, metadata={"geometry": {"n_voxels": 368}})
    assert out == tmp_path / "toy"
    assert sorted(os.listdir(out)) == ["model.eqx", "model.json"]
    loaded, info = load(out, expected_type="test_toy")
    assert isinstance(loaded, ToyModel)
    _assert_bitwise_equal(model, loaded)
    assert type(loaded.scale) is float and loaded.scale == 0.1  # Python float leaf kept at full precision
    assert loaded.activation == "tanh" and loaded.n_in == 3
    x = jax.random.normal(jax.random.key(5), (3,))
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(loaded(x)))
    key = jax.random.key(11)
    np.testing.assert_array_equal(np.asarray(model.sample(key, 16)), np.asarray(loaded.sample(key, 16)))
    assert info["metadata"] == {"geometry": {"n_voxels": 368}}
    # the files can also be given directly, and a class-registered type works
    lin = ToyLinear(2, 4, key=jax.random.key(0))
    save(lin, tmp_path / "lin", {"n_in": 2, "n_out": 4})
    lin2, info2 = load(tmp_path / "lin" / "model.json")
    assert info2["model_type"] == "test_linear"
    _assert_bitwise_equal(lin, lin2)


def test_json_fields(tmp_path):
    model, config = _model()
    path = save(model, tmp_path / "toy", config, metadata={"note": "x", "pre": [1, 2.5, None]})
    info = json.loads((path / "model.json").read_text())
    assert set(info) == {
        "format", "format_version", "model_type", "config", "metadata", "surrinf_version", "jax_version",
        "equinox_version", "created", "leaves_sha256", "leaves_bytes",
    }  # fmt: skip
    assert info["format"] == "surrinf-model" and info["format_version"] == 1
    assert info["model_type"] == "test_toy" and info["config"] == config
    assert info["metadata"] == {"note": "x", "pre": [1, 2.5, None]}
    assert info["jax_version"] == jax.__version__ and info["equinox_version"] == eqx.__version__
    assert isinstance(info["surrinf_version"], str) and info["surrinf_version"]
    created = datetime.fromisoformat(info["created"])
    assert created.utcoffset() is not None and created.utcoffset().total_seconds() == 0
    assert abs((datetime.now(UTC) - created).total_seconds()) < 600
    data = (path / "model.eqx").read_bytes()
    assert info["leaves_bytes"] == len(data)
    assert info["leaves_sha256"] == hashlib.sha256(data).hexdigest()


def test_tampered_byte_is_a_checksum_error(tmp_path):
    model, config = _model()
    path = save(model, tmp_path / "toy", config)
    data = bytearray((path / "model.eqx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (path / "model.eqx").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"model\.eqx.*checksum") as err:
        load(path)
    assert json.loads((path / "model.json").read_text())["leaves_sha256"] in str(err.value)


def test_truncated_file_is_rejected(tmp_path):
    model, config = _model()
    path = save(model, tmp_path / "toy", config)
    data = (path / "model.eqx").read_bytes()
    (path / "model.eqx").write_bytes(data[:-7])
    with pytest.raises(ModelFileError, match="truncated"):
        load(path)
    (path / "model.eqx").write_bytes(b"")
    with pytest.raises(ModelFileError, match="truncated"):
        load(path)


@pytest.mark.parametrize("change", [{"width": 16}, {"depth": 3}, {"depth": 1}, {"n_in": 4}])
def test_config_that_does_not_match_the_leaves(tmp_path, change):
    model, config = _model()
    path = save(model, tmp_path / "toy", config)
    _edit_json(path / "model.json", config=change)
    with pytest.raises(ModelFileError, match="does not match its config"):
        load(path)


def test_unknown_and_unexpected_model_types(tmp_path):
    model, config = _model()
    path = save(model, tmp_path / "toy", config)
    with pytest.raises(ModelFileError, match="expected 'test_linear'"):
        load(path, expected_type="test_linear")
    _edit_json(path / "model.json", model_type="no_such_model")
    with pytest.raises(ModelFileError, match=r"unknown model type 'no_such_model'.*test_linear, .*test_toy"):
        load(path)

    class Unregistered(eqx.Module):
        w: jax.Array

    with pytest.raises(ValueError, match=r"no model type is registered.*test_toy"):
        save(Unregistered(jnp.ones(2)), tmp_path / "u", {})
    with pytest.raises(ModelFileError, match="known types"):
        save(Unregistered(jnp.ones(2)), tmp_path / "u", {}, model_type="nope")
    assert not (tmp_path / "u").exists()


def test_registry_rejects_a_second_builder_under_a_taken_name():
    assert ser.MODEL_REGISTRY["test_toy"] is build_toy
    ser.register_model("test_toy", build_toy, model_class=ToyModel)  # same function again: fine
    with pytest.raises(ValueError, match="already registered"):
        ser.register_model("test_toy", lambda config, key: None)


def test_format_checks(tmp_path):
    model, config = _model()
    path = save(model, tmp_path / "toy", config)
    original = (path / "model.json").read_text()
    _edit_json(path / "model.json", format_version=2)
    with pytest.raises(ModelFileError, match="format_version 2"):
        load(path)
    _edit_json(path / "model.json", format_version=1, format="something-else")
    with pytest.raises(ModelFileError, match="not a surrinf-model file"):
        load(path)
    (path / "model.json").write_text(original[:-20])
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load(path)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing")


@pytest.mark.parametrize(
    ("config_change", "metadata", "exc", "where"),
    [
        ({"scale": np.float32(0.1)}, None, TypeError, "config['scale']"),
        ({"activation": {1: "tanh"}}, None, TypeError, "config['activation'] has a non-string key 1"),
        ({}, {"geometry": {"radii": np.arange(3.0)}}, TypeError, "metadata['geometry']['radii']"),
        ({}, {"summary": {"losses": [1.0, float("nan")]}}, ValueError, "metadata['summary']['losses'][1]"),
    ],
)
def test_non_json_values_are_named(tmp_path, config_change, metadata, exc, where):
    model, config = _model()
    with pytest.raises(exc, match=re.escape(where)):
        save(model, tmp_path / "toy", {**config, **config_change}, metadata=metadata)
    assert not (tmp_path / "toy").exists()


def test_wrong_config_is_refused_at_save_time(tmp_path):
    model, config = _model()
    with pytest.raises(ValueError, match=r"config does not describe this 'test_toy' model.*\[8, 3\]"):
        save(model, tmp_path / "toy", {**config, "width": 16})
    assert not (tmp_path / "toy").exists()


def _snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


@pytest.mark.parametrize("failure", ["leaves", "json", "swap"])
def test_failed_save_leaves_the_previous_model_untouched(tmp_path, monkeypatch, failure):
    old, config = _model(seed=1)
    path = save(old, tmp_path / "toy", config)
    before = _snapshot(path)
    new, _ = _model(seed=2)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    if failure == "leaves":
        monkeypatch.setattr(ser, "_serialise_leaves", boom)
    elif failure == "json":  # fails after model.eqx was written into the new directory
        monkeypatch.setattr(ser, "atomic_write_text", boom)
    else:  # the rename of the new directory onto the target fails: the old one is moved back
        real_replace, calls = os.replace, []

        def flaky_replace(src, dst):
            calls.append((Path(src).name, Path(dst).name))
            if Path(src).name.startswith(".toy.new-") and Path(dst).name == "toy":
                raise OSError("rename failed")
            return real_replace(src, dst)

        monkeypatch.setattr(ser.os, "replace", flaky_replace)
    with pytest.raises(OSError, match=r"disk full|rename failed"):
        save(new, path, config)
    monkeypatch.undo()
    if failure == "swap":  # old -> backup, new -> target (fails), backup -> target
        (a, b), (c, d), (e, f) = calls[-3:]
        assert a == "toy" and b.startswith(".toy.old-") and c.startswith(".toy.new-") and d == "toy"
        assert (e, f) == (b, "toy")
    assert _snapshot(path) == before
    assert os.listdir(tmp_path) == ["toy"]  # no temporary siblings left behind
    loaded, _ = load(path)
    _assert_bitwise_equal(old, loaded)


def test_overwrite_and_foreign_files(tmp_path):
    old, config = _model(seed=1)
    new, _ = _model(seed=2)
    path = save(old, tmp_path / "toy", config)
    save(new, path, config)
    _assert_bitwise_equal(new, load(path)[0])
    assert os.listdir(tmp_path) == ["toy"]
    (path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"notes\.txt"):
        save(old, path, config)
    assert (path / "notes.txt").read_text() == "mine"
    _assert_bitwise_equal(new, load(path)[0])
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        save(old, tmp_path / "file", config)


def _train_state(seed: int):
    model, _ = _model(seed=seed)
    params = eqx.filter(model, eqx.is_array)
    opt = optax.adam(1e-2)
    opt_state = opt.init(params)
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    updates, opt_state = opt.update(grads, opt_state, params)
    model = eqx.apply_updates(model, updates)
    extras = {
        "half": jnp.arange(4, dtype=jnp.bfloat16) / 3,
        "np": np.arange(3, dtype=np.int16),
        "count": 7,
        "lr": 0.1,
    }
    return {"model": model, "opt_state": opt_state, "key": jax.random.key(seed), "raw_key": jax.random.PRNGKey(seed)}, (
        extras
    )


def test_checkpoint_roundtrip_with_adam_state_and_typed_key(tmp_path):
    state, extras = _train_state(seed=3)
    tree = {**state, **extras}
    path = save_checkpoint(tmp_path / "ckpt", tree, step=120, extra={"best_loss": 0.25, "epoch": 4})
    assert sorted(os.listdir(path)) == ["checkpoint.eqx", "checkpoint.json"]
    like_state, like_extras = _train_state(seed=9)
    like_extras = {**like_extras, "count": 0, "lr": 0.0}
    loaded, step, extra = load_checkpoint(path, {**like_state, **like_extras})
    assert step == 120 and extra == {"best_loss": 0.25, "epoch": 4}
    _assert_bitwise_equal(tree["model"], loaded["model"])
    _assert_bitwise_equal(tree["opt_state"], loaded["opt_state"])
    assert int(loaded["opt_state"][0].count) == 1
    assert jax.dtypes.issubdtype(loaded["key"].dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(jax.random.key_data(loaded["key"]), jax.random.key_data(tree["key"]))
    np.testing.assert_array_equal(jax.random.normal(loaded["key"], (4,)), jax.random.normal(tree["key"], (4,)))
    np.testing.assert_array_equal(loaded["raw_key"], tree["raw_key"])
    assert loaded["half"].dtype == jnp.bfloat16
    assert np.asarray(loaded["half"]).tobytes() == np.asarray(tree["half"]).tobytes()
    assert isinstance(loaded["np"], np.ndarray) and loaded["np"].dtype == np.int16
    assert loaded["count"] == 7 and loaded["lr"] == 0.1 and type(loaded["lr"]) is float
    info = json.loads((path / "checkpoint.json").read_text())
    assert info["format"] == "surrinf-checkpoint" and info["step"] == 120
    assert info["leaves_sha256"] == hashlib.sha256((path / "checkpoint.eqx").read_bytes()).hexdigest()
    # overwriting the checkpoint in place (as a trainer does) works
    save_checkpoint(path, tree, step=121, extra={})
    assert load_checkpoint(path, {**like_state, **like_extras})[1] == 121
    assert os.listdir(tmp_path) == ["ckpt"]


def test_checkpoint_errors(tmp_path):
    state, _ = _train_state(seed=3)
    path = save_checkpoint(tmp_path / "ckpt", state, step=np.int64(5))
    other_like, _ = _train_state(seed=4)
    other_like["model"] = _model(seed=4, width=16)[0]
    with pytest.raises(ModelFileError, match="does not match the structure of like_pytree"):
        load_checkpoint(path, other_like)
    with pytest.raises(TypeError, match="extra\\['x'\\]"):
        save_checkpoint(tmp_path / "c2", state, step=1, extra={"x": object()})
    with pytest.raises(TypeError, match="step"):
        save_checkpoint(tmp_path / "c2", state, step=1.5)
    with pytest.raises(ModelFileError, match="not a surrinf-model directory"):
        load(path)
    data = bytearray((path / "checkpoint.eqx").read_bytes())
    data[-1] ^= 0xFF
    (path / "checkpoint.eqx").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum"):
        load_checkpoint(path, state)


def test_module_does_not_use_pickle():
    source = Path(ser.__file__).read_text(encoding="utf-8")
    assert not re.search(r"^\s*(import|from)\s+(c?pickle|_pickle|dill|cloudpickle|joblib|shelve)\b", source, re.M)
    assert "allow_pickle=True" not in source
    assert "allow_pickle=False" in source
