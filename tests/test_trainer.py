"""The generic optax trainer: learning, early stopping, bitwise resume, atomic checkpoints, data parallelism."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from surrinf.generators import serialization, trainer
from surrinf.generators.trainer import TrainConfig, train, train_val_split


class Gaussian(eqx.Module):
    """Diagonal Gaussian density with learnable mean and log-std."""

    mean: jax.Array
    log_std: jax.Array

    def __init__(self, dim: int):
        self.mean = jnp.zeros(dim)
        self.log_std = jnp.zeros(dim)


def gaussian_nll(model: Gaussian, batch, key):
    """Mean negative log-likelihood (with a tiny key-driven jitter so the step keys matter) and an aux metric."""
    x = batch["x"] + 1e-3 * jax.random.normal(key, batch["x"].shape)
    z = (x - model.mean) * jnp.exp(-model.log_std)
    return jnp.mean(jnp.sum(0.5 * z**2 + model.log_std, axis=1)), {"mean0": model.mean[0]}


def mse(model, batch, key):
    return jnp.mean((jax.vmap(model)(batch["x"]) - batch["y"]) ** 2)


def gaussian_data(n: int = 400, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.normal([1.0, -2.0], [0.5, 2.0], size=(n, 2)).astype(np.float32)}


def leaves(tree) -> list[np.ndarray]:
    """The array leaves of ``tree`` as numpy (typed PRNG keys as their key data)."""
    out = []
    for x in jax.tree.leaves(eqx.filter(tree, eqx.is_array)):
        out.append(np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x))
    return out


def assert_bitwise(a, b) -> None:
    la, lb = leaves(a), leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y)


def strip_time(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in records]


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / trainer.LOG_FILE).read_text().splitlines()]


def load_state(out: Path, model, config: TrainConfig, key):
    """The full trainer checkpoint (params, optimiser state, best params, key) of ``out``."""
    params = eqx.filter(model, eqx.is_inexact_array)
    like = trainer._checkpoint_like(params, trainer.make_optimizer(config).init(params), key)
    return serialization.load_checkpoint(out / trainer.CHECKPOINT_DIR, like)


RESUME_CFG = TrainConfig(
    batch_size=32,
    max_steps=60,
    learning_rate=0.05,
    schedule="cosine",
    warmup_steps=5,
    decay_steps=60,
    val_fraction=0.2,
    eval_every=10,
    patience=100,
    checkpoint_every=20,
    log_every=5,
)


def test_learns_gaussian_mean_and_width():
    data = gaussian_data(2000)
    key = jax.random.key(0)
    cfg = TrainConfig(batch_size=128, max_steps=300, learning_rate=0.05, warmup_steps=10, eval_every=50, log_every=25)
    res = train(Gaussian(2), gaussian_nll, data, key, cfg, progress=False)
    logged = [r["train_loss"] for r in res.history if "train_loss" in r]
    assert logged[-1] < logged[0] - 0.5
    assert "train_mean0" in res.history[0] and "val_mean0" in res.history[1] and "lr" in res.history[0]
    x = data["x"][train_val_split(len(data["x"]), key, cfg.val_fraction)[0]]
    se = x.std(0) / np.sqrt(len(x))
    assert np.all(np.abs(np.asarray(res.model.mean) - x.mean(0)) < 4 * se)
    np.testing.assert_allclose(np.exp(np.asarray(res.model.log_std)), x.std(0), rtol=0.05)
    assert res.steps_run == 300 and not res.stopped_early
    assert res.best_val_loss == min(r["val_loss"] for r in res.history if "val_loss" in r)


def overfit_case():
    """Pure-noise targets and an MLP that can only overfit them; early stopping must trigger."""
    rng = np.random.default_rng(1)
    data = {"x": rng.uniform(-1, 1, (64, 1)).astype(np.float32), "y": rng.normal(size=(64, 1)).astype(np.float32)}
    model = eqx.nn.MLP(1, 1, 64, 2, key=jax.random.key(1))
    cfg = TrainConfig(
        batch_size=16,
        max_steps=400,
        learning_rate=1e-2,
        schedule="constant",
        grad_clip=None,
        val_fraction=0.5,
        eval_every=10,
        log_every=10,
        patience=5,
        checkpoint_every=25,
    )
    return model, data, jax.random.key(2), cfg


def test_early_stopping_returns_best_validation_parameters():
    model, data, key, cfg = overfit_case()
    res = train(model, mse, data, key, cfg, progress=False)
    assert res.stopped_early and res.steps_run < cfg.max_steps
    vals = {r["step"]: r["val_loss"] for r in res.history if r.get("event") != "end"}
    assert res.best_step == min(vals, key=vals.get) and res.best_val_loss == vals[res.best_step]
    assert res.steps_run == res.best_step + cfg.patience * cfg.eval_every
    assert vals[res.steps_run] > res.best_val_loss
    _, val_rows = train_val_split(64, key, cfg.val_fraction)
    val_batch = {k: jnp.asarray(v[val_rows]) for k, v in data.items()}
    np.testing.assert_allclose(float(mse(res.model, val_batch, None)), res.best_val_loss, rtol=1e-5)


def test_resume_is_bitwise_identical(tmp_path):
    data, key, cfg = gaussian_data(), jax.random.key(3), RESUME_CFG
    a, b = tmp_path / "a", tmp_path / "b"
    res_a = train(Gaussian(2), gaussian_nll, data, key, cfg, out_dir=a, progress=False)
    # "killed" at step 37 (after the checkpoint at 20; not an eval/checkpoint step), then resumed to 60
    first = train(
        Gaussian(2), gaussian_nll, data, key, dataclasses.replace(cfg, max_steps=37), out_dir=b, progress=False
    )
    assert first.steps_run == 37
    res_b = train(Gaussian(2), gaussian_nll, data, key, cfg, out_dir=b, resume=True, progress=False)

    assert_bitwise(res_a.model, res_b.model)
    state_a, step_a, extra_a = load_state(a, Gaussian(2), cfg, key)
    state_b, step_b, extra_b = load_state(b, Gaussian(2), cfg, key)
    assert step_a == step_b == 60
    assert_bitwise(state_a, state_b)  # parameters, optimiser state, best parameters
    assert {k: v for k, v in extra_a.items() if k != "wall_time"} == {
        k: v for k, v in extra_b.items() if k != "wall_time"
    }
    assert strip_time(read_log(a)) == strip_time(read_log(b))
    assert strip_time(res_a.history) == strip_time(res_b.history) == strip_time(read_log(a))
    assert (res_a.best_step, res_a.best_val_loss, res_a.steps_run) == (res_b.best_step, res_b.best_val_loss, 60)
    # checkpointing does not change the trajectory
    assert_bitwise(res_a.model, train(Gaussian(2), gaussian_nll, data, key, cfg, progress=False).model)


def test_resume_across_early_stopping(tmp_path):
    model, data, key, cfg = overfit_case()
    full = train(model, mse, data, key, cfg, progress=False)
    assert full.stopped_early and full.best_step + 20 < full.steps_run  # killed with a non-zero patience count
    kill = full.best_step + 25
    train(model, mse, data, key, dataclasses.replace(cfg, max_steps=kill), out_dir=tmp_path, progress=False)
    res = train(model, mse, data, key, cfg, out_dir=tmp_path, resume=True, progress=False)
    assert (res.steps_run, res.best_step, res.best_val_loss, res.stopped_early) == (
        full.steps_run,
        full.best_step,
        full.best_val_loss,
        True,
    )
    assert_bitwise(res.model, full.model)
    assert strip_time(res.history) == strip_time(full.history) == strip_time(read_log(tmp_path))
    again = train(model, mse, data, key, cfg, out_dir=tmp_path, resume=True, progress=False)  # already stopped
    assert again.steps_run == full.steps_run and again.stopped_early
    assert_bitwise(again.model, full.model)


def test_resume_errors(tmp_path):
    data, key, cfg = gaussian_data(), jax.random.key(3), dataclasses.replace(RESUME_CFG, max_steps=20)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(Gaussian(2), gaussian_nll, data, key, cfg, out_dir=tmp_path / "empty", resume=True, progress=False)
    with pytest.raises(ValueError, match="out_dir"):
        train(Gaussian(2), gaussian_nll, data, key, cfg, resume=True, progress=False)
    out = tmp_path / "run"
    train(Gaussian(2), gaussian_nll, data, key, cfg, out_dir=out, progress=False)
    with pytest.raises(ValueError, match="learning_rate"):
        train(
            Gaussian(2), gaussian_nll, data, key, dataclasses.replace(cfg, learning_rate=0.1), out_dir=out, resume=True
        )
    cos = dataclasses.replace(cfg, decay_steps=None, max_steps=40)  # the cosine length would change
    with pytest.raises(ValueError, match="decay_steps"):
        train(Gaussian(2), gaussian_nll, data, key, cos, out_dir=out, resume=True, progress=False)
    with pytest.raises(ValueError, match="different key"):
        train(Gaussian(2), gaussian_nll, data, jax.random.key(4), cfg, out_dir=out, resume=True, progress=False)
    with pytest.raises(ValueError, match="data differ"):
        train(Gaussian(2), gaussian_nll, gaussian_data(seed=9), key, cfg, out_dir=out, resume=True, progress=False)
    with pytest.raises(ValueError, match="beyond max_steps"):
        train(Gaussian(2), gaussian_nll, data, key, dataclasses.replace(cfg, max_steps=10), out_dir=out, resume=True)
    # allowed: more steps, another checkpoint interval
    more = dataclasses.replace(cfg, max_steps=30, checkpoint_every=7)
    assert train(Gaussian(2), gaussian_nll, data, key, more, out_dir=out, resume=True, progress=False).steps_run == 30


def test_failed_checkpoint_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    data, key = gaussian_data(), jax.random.key(5)
    cfg = dataclasses.replace(RESUME_CFG, max_steps=30, decay_steps=30, checkpoint_every=10)
    out = tmp_path / "run"
    real_write, calls = serialization.atomic_write_bytes, []

    def broken_write(path, payload):  # the second checkpoint dies half-way through writing its leaves
        calls.append(path)
        if len(calls) == 2:
            Path(path).write_bytes(payload[: len(payload) // 2])
            raise OSError("disk full")
        return real_write(path, payload)

    monkeypatch.setattr(serialization, "atomic_write_bytes", broken_write)
    with pytest.raises(OSError, match="disk full"):
        train(Gaussian(2), gaussian_nll, data, key, cfg, out_dir=out, progress=False)
    monkeypatch.undo()

    files = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    expected = ["checkpoint", "checkpoint/checkpoint.eqx", "checkpoint/checkpoint.json"]
    assert files == sorted([*expected, trainer.CONFIG_FILE, trainer.LOG_FILE])  # no temp files or directories
    _, step, _ = load_state(out, Gaussian(2), cfg, key)
    assert step == 10
    resumed = train(Gaussian(2), gaussian_nll, data, key, cfg, out_dir=out, resume=True, progress=False)
    clean = train(Gaussian(2), gaussian_nll, data, key, cfg, out_dir=tmp_path / "clean", progress=False)
    assert_bitwise(resumed.model, clean.model)
    assert strip_time(read_log(out)) == strip_time(read_log(tmp_path / "clean"))


DATA_PARALLEL_SCRIPT = textwrap.dedent(
    """
    import sys
    assert "jax" not in sys.modules
    import equinox as eqx, jax, jax.numpy as jnp, numpy as np
    from surrinf.generators.trainer import TrainConfig, train

    assert len(jax.devices()) == 4, jax.devices()
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (256, 3)).astype(np.float32)
    data = {"x": x, "y": np.sin(x.sum(1, keepdims=True)).astype(np.float32)}

    def mse(model, batch, key):
        noise = 0.01 * jax.random.normal(key, batch["y"].shape)
        return jnp.mean((jax.vmap(model)(batch["x"]) - batch["y"] - noise) ** 2)

    model = eqx.nn.MLP(3, 1, 16, 2, key=jax.random.PRNGKey(0))
    cfg = TrainConfig(batch_size=32, max_steps=100, learning_rate=3e-3, val_fraction=0.2, eval_every=25,
                      eval_batch_size=16, log_every=25)
    one = train(model, mse, data, jax.random.PRNGKey(1), cfg, progress=False, devices=jax.devices()[:1])
    four = train(model, mse, data, jax.random.PRNGKey(1), cfg, progress=False)
    for a, b in zip(jax.tree.leaves(eqx.filter(one.model, eqx.is_array)),
                    jax.tree.leaves(eqx.filter(four.model, eqx.is_array)), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert one.best_step == four.best_step
    np.testing.assert_allclose(one.best_val_loss, four.best_val_loss, rtol=1e-5)
    try:
        train(model, mse, data, jax.random.PRNGKey(1), TrainConfig(batch_size=15, max_steps=5), progress=False)
    except ValueError as e:
        assert "divisible" in str(e), e
    else:
        raise AssertionError("a batch size not divisible by 4 accepted on 4 devices")
    print("DATA-PARALLEL-OK")
    """
)


def test_data_parallel_matches_single_device(run_with_cpu_devices):
    assert "DATA-PARALLEL-OK" in run_with_cpu_devices(DATA_PARALLEL_SCRIPT, 4)


def test_deterministic_given_key():
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (200, 2)).astype(np.float32)
    data = {"x": x, "y": (x[:, :1] * x[:, 1:]).astype(np.float32)}
    model = eqx.nn.MLP(2, 1, 8, 1, key=jax.random.PRNGKey(0))
    cfg = TrainConfig(batch_size=16, max_steps=40, learning_rate=1e-2, eval_every=10, log_every=10)
    r1 = train(model, mse, data, jax.random.PRNGKey(7), cfg, progress=False)  # raw uint32 keys work too
    r2 = train(model, mse, data, jax.random.PRNGKey(7), cfg, progress=False)
    r3 = train(model, mse, data, jax.random.PRNGKey(8), cfg, progress=False)
    assert_bitwise(r1.model, r2.model)
    assert strip_time(r1.history) == strip_time(r2.history)
    assert not all(np.array_equal(a, b) for a, b in zip(leaves(r1.model), leaves(r3.model), strict=True))


def test_bad_inputs():
    key, cfg = jax.random.key(0), TrainConfig(batch_size=8, max_steps=2)
    x = np.zeros((50, 2), np.float32)
    with pytest.raises(ValueError, match="'cond'"):
        train(Gaussian(2), gaussian_nll, {"x": x, "cond": np.zeros((49, 1))}, key, cfg, progress=False)
    bad = np.zeros((50, 1))
    bad[7, 0] = np.nan
    with pytest.raises(ValueError, match=r"'cond'.*NaN"):
        train(Gaussian(2), gaussian_nll, {"x": x, "cond": bad}, key, cfg, progress=False)
    x_inf = x.copy()
    x_inf[3, 1] = np.inf
    with pytest.raises(ValueError, match="'x'"):
        train(Gaussian(2), gaussian_nll, {"x": x_inf}, key, cfg, progress=False)
    with pytest.raises(ValueError, match="too few rows"):
        train(Gaussian(2), gaussian_nll, {"x": x[:8]}, key, cfg, progress=False)
    with pytest.raises(ValueError, match="non-empty"):
        train(Gaussian(2), gaussian_nll, {}, key, cfg, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="linear")
    with pytest.raises(ValueError, match="val_fraction"):
        TrainConfig(val_fraction=1.0)


def test_config_round_trip_and_schedule():
    cfg = TrainConfig(batch_size=np.int64(64), warmup_steps=10, decay_steps=100, learning_rate=2e-3, patience=3)
    d = cfg.to_dict()
    assert type(d["batch_size"]) is int and json.loads(json.dumps(d)) == d
    assert TrainConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({**d, "momentum": 0.9})
    sched = trainer.make_schedule(cfg)
    assert float(sched(0)) == 0.0 and float(sched(10)) == pytest.approx(2e-3) and float(sched(100)) < 1e-9
    const = trainer.make_schedule(TrainConfig(schedule="constant", learning_rate=1e-3))
    assert float(const(0)) == float(const(10_000)) == pytest.approx(1e-3)
