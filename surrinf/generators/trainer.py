"""One optax trainer for every surrogate; each model only supplies its loss.

``loss_fn(model, batch, key)`` returns a scalar loss, or ``(loss, aux)`` with ``aux`` a dict of scalar
metrics that are logged (train window means and validation means). ``batch`` is a dict of arrays with the
keys of the training data (``{"x": (B, D), "cond": (B, C)}``). The loss is taken to be a mean over the
rows of the batch: the validation loss is the row-weighted mean of the batch losses.

Determinism. Every random number derives from ``key``: the train/validation split from
``fold_in(key, 0)``, the row permutation of epoch ``e`` from ``fold_in(fold_in(key, 1), e)``, the key of
optimiser step ``s`` (0-based) from ``fold_in(fold_in(key, 2), s)`` and the validation keys (the same at
every evaluation) from ``fold_in(key, 3)``. The minibatch of step ``s`` is therefore a pure function of
``s``; the checkpoint holds the parameters, the optimiser state, the best parameters with their validation
loss, step and patience counter, the log window and the key, so a run resumed from a checkpoint at step
``k`` reaches bitwise the parameters and the log of an uninterrupted run (same program, same device).

Schedule of a run: a record is logged every ``log_every`` steps (train loss = mean over those steps),
the validation loss is evaluated every ``eval_every`` steps (early stopping counts these evaluations) and a
checkpoint is written every ``checkpoint_every`` steps and at the end of the run. When the last step is not
an evaluation step the final parameters are evaluated once more ("end" record) so the returned best model
considers them; that extra evaluation is not part of the checkpointed state, and a resume drops the
"end" record and any record past the checkpoint from ``train_log.jsonl`` before continuing.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding
from tqdm import tqdm

from surrinf._atomic import atomic_write_text
from surrinf.generators import serialization
from surrinf.generators.serialization import load_checkpoint, save_checkpoint

__all__ = [
    "CHECKPOINT_DIR",
    "LOG_FILE",
    "LossFn",
    "TrainConfig",
    "TrainResult",
    "make_optimizer",
    "make_schedule",
    "train",
    "train_val_split",
]

LOG_FILE = "train_log.jsonl"
CONFIG_FILE = "train_config.json"
CHECKPOINT_DIR = "checkpoint"
_STATE_FORMAT = "surrinf-trainer-state"

# fold_in tags of the independent random streams derived from the user's key
_TAG_SPLIT, _TAG_PERM, _TAG_STEP, _TAG_VAL = 0, 1, 2, 3

#: loss_fn(model, batch, key) -> loss or (loss, {name: scalar})
LossFn = Callable[[Any, dict[str, jax.Array], jax.Array], Any]

#: Config fields that may differ between a checkpoint and the resuming run (they do not change the
#: trajectory). ``max_steps`` may only differ if the schedule does not depend on it (see ``_resume_view``).
_RESUME_FREE = ("max_steps", "checkpoint_every")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of :func:`train`.

    ``schedule``: "cosine" (linear warmup over ``warmup_steps`` from 0, then cosine decay to 0 at
    ``decay_steps``, default ``max_steps``) or "constant" (after the same warmup). ``grad_clip``: global-norm
    clip (None or 0: off). ``weight_decay`` > 0 uses AdamW, else Adam. ``patience``: stop after this many
    evaluations without a new best validation loss (None: never). ``checkpoint_every`` = 0: only at the end.
    ``eval_batch_size``: batch size of the validation pass (default ``batch_size``)."""

    batch_size: int = 256
    max_steps: int = 10_000
    learning_rate: float = 1e-3
    schedule: str = "cosine"
    warmup_steps: int = 0
    decay_steps: int | None = None
    grad_clip: float | None = 1.0
    weight_decay: float = 0.0
    val_fraction: float = 0.1
    eval_every: int = 500
    eval_batch_size: int | None = None
    patience: int | None = None
    checkpoint_every: int = 1000
    log_every: int = 100

    def __post_init__(self) -> None:
        def _int(name: str, lo: int, optional: bool = False) -> None:
            v = getattr(self, name)
            if optional and v is None:
                return
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"TrainConfig.{name} must be an integer >= {lo}, got {v!r}")
            object.__setattr__(self, name, int(v))  # plain int for JSON

        _int("batch_size", 1)
        _int("max_steps", 0)
        _int("warmup_steps", 0)
        _int("decay_steps", 1, optional=True)
        _int("eval_every", 1)
        _int("eval_batch_size", 1, optional=True)
        _int("patience", 1, optional=True)
        _int("checkpoint_every", 0)
        _int("log_every", 1)
        for name in ("learning_rate", "grad_clip", "weight_decay", "val_fraction"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating)):
                object.__setattr__(self, name, float(v))
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"TrainConfig.schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"TrainConfig.learning_rate must be > 0, got {self.learning_rate!r}")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise ValueError(f"TrainConfig.grad_clip must be >= 0 or None, got {self.grad_clip!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if not (0.0 <= self.val_fraction < 1.0):
            raise ValueError(f"TrainConfig.val_fraction must be in [0, 1), got {self.val_fraction!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; missing fields take their defaults, unknown fields raise ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}")
        return cls(**dict(d))


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`. ``model`` holds the best-validation parameters (the final ones without a
    validation split); ``best_val_loss`` is None without a validation split; ``steps_run`` is the total number
    of optimiser steps the parameters have seen (including those before a resume); ``history`` the log records
    (as in ``train_log.jsonl``, without the "end" records of earlier, resumed segments)."""

    model: Any
    history: list[dict[str, Any]]
    best_step: int
    best_val_loss: float | None
    steps_run: int
    stopped_early: bool


# --------------------------------------------------------------------------------------------- optimiser


def make_schedule(config: TrainConfig) -> optax.Schedule:
    """Learning-rate schedule of ``config`` (step count -> lr)."""
    lr, warm = config.learning_rate, config.warmup_steps
    if config.schedule == "cosine":
        total = config.decay_steps if config.decay_steps is not None else config.max_steps
        return optax.warmup_cosine_decay_schedule(0.0, lr, warm, max(total, warm + 1), end_value=0.0)
    if warm == 0:
        return optax.constant_schedule(lr)
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), optax.constant_schedule(lr)], [warm])


@functools.lru_cache(maxsize=64)
def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """``chain(clip_by_global_norm, adam/adamw(schedule))`` of ``config``. Equal configs give the same (stateless)
    object, so that :func:`train` runs with equal configs reuse the compiled training step."""
    parts = []
    if config.grad_clip:
        parts.append(optax.clip_by_global_norm(config.grad_clip))
    sched = make_schedule(config)
    parts.append(optax.adamw(sched, weight_decay=config.weight_decay) if config.weight_decay > 0 else optax.adam(sched))
    return optax.chain(*parts)


# --------------------------------------------------------------------------------------------- data


def _check_data(data: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Numpy views of ``data``; ValueError naming the key for unequal lengths, scalars or NaN/inf."""
    if not isinstance(data, Mapping) or not data:
        raise ValueError("data must be a non-empty dict of arrays with equal first dimensions")
    out: dict[str, np.ndarray] = {}
    first: str | None = None
    for k, v in data.items():
        if not isinstance(k, str):
            raise ValueError(f"data keys must be strings, got {k!r}")
        a = np.asarray(v)
        if a.dtype == object or a.dtype.kind not in "biuf":
            raise ValueError(f"data[{k!r}] has unsupported dtype {a.dtype} (need bool, integer or float)")
        if a.ndim == 0:
            raise ValueError(f"data[{k!r}] is a scalar; every entry needs a leading row axis")
        if first is None:
            first = k
        elif len(a) != len(out[first]):
            raise ValueError(f"data[{k!r}] has {len(a)} rows but data[{first!r}] has {len(out[first])}")
        if a.dtype.kind == "f":
            finite = np.isfinite(a).reshape(len(a), -1).all(axis=1)
            if not finite.all():
                bad = np.flatnonzero(~finite)
                raise ValueError(f"data[{k!r}] contains NaN or inf in {bad.size} rows (first: row {bad[0]})")
        out[k] = a
    return out


def _fingerprint(data: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the keys, dtypes, shapes and bytes of ``data``."""
    h = hashlib.sha256()
    for k in sorted(data):
        a = np.ascontiguousarray(data[k])
        h.update(json.dumps([k, a.dtype.str, list(a.shape)]).encode())
        h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()


def train_val_split(n: int, key: jax.Array, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) row indices (sorted) of :func:`train` for ``n`` rows and its ``key``.

    The validation split has ``round(val_fraction * n)`` rows (at least one if ``val_fraction`` > 0)."""
    if val_fraction <= 0:
        return np.arange(n), np.arange(0)
    n_val = min(n, max(1, round(val_fraction * n)))
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, _TAG_SPLIT), n))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# --------------------------------------------------------------------------------------------- helpers


def _split_loss(out: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(loss, aux) from a loss_fn output; checks that both are scalars (at trace time)."""
    if isinstance(out, tuple):
        if len(out) != 2:
            raise TypeError(f"loss_fn must return a scalar or (loss, aux_dict), got a tuple of length {len(out)}")
        loss, aux = out
        aux = {} if aux is None else dict(aux)
    else:
        loss, aux = out, {}
    loss = jnp.asarray(loss)
    if loss.shape != ():
        raise ValueError(f"loss_fn must return a scalar loss, got shape {loss.shape}")
    for name, v in aux.items():
        if not isinstance(name, str) or jnp.shape(v) != ():
            raise ValueError(f"aux metrics must be a dict of scalars with string names; {name!r} has {jnp.shape(v)}")
    return loss, {k: jnp.asarray(v, jnp.float32) for k, v in aux.items()}


def _window_mean(values: Sequence[Any]) -> float:
    """Mean of float32 values in float64 (identical for device values and their JSON round trip)."""
    return float(np.mean(np.asarray(values, dtype=np.float32), dtype=np.float64))


def _json_float(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _key_info(key: jax.Array) -> tuple[bool, np.ndarray]:
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    return typed, np.asarray(jax.random.key_data(key) if typed else key)


def _resume_view(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The config fields that must agree for a resumed run to be bitwise an uninterrupted one."""
    view = {k: v for k, v in cfg.items() if k not in _RESUME_FREE}
    if view.get("schedule") == "cosine":  # the cosine length defaults to max_steps
        view["decay_steps"] = cfg.get("decay_steps") if cfg.get("decay_steps") is not None else cfg.get("max_steps")
    return view


def _read_log(path: Path, upto: int) -> list[dict[str, Any]]:
    """Records of ``path`` with step <= ``upto`` that are not "end" records (unparsable lines are dropped)."""
    if not path.is_file():
        return []
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
        if isinstance(rec, dict) and rec.get("event") != "end" and isinstance(rec.get("step"), int):
            if rec["step"] <= upto:
                kept.append(rec)
    return kept


def _checkpoint_like(params: Any, opt_state: Any, key: jax.Array) -> dict[str, Any]:
    """The pytree stored in a trainer checkpoint."""
    return {"params": params, "opt_state": opt_state, "best_params": params, "key": key}


def _peek_checkpoint(ckpt: Path) -> dict[str, Any]:
    """The ``extra`` dict of the checkpoint in ``ckpt`` (read before loading the leaves, for clear errors)."""
    info_path = ckpt / serialization.CHECKPOINT_JSON
    if not info_path.is_file():
        raise FileNotFoundError(f"resume=True but there is no checkpoint in {ckpt} (missing {info_path.name})")
    try:
        extra = json.loads(info_path.read_text(encoding="utf-8"))["extra"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise serialization.ModelFileError(f"{info_path} is not a readable checkpoint: {e}") from e
    if not isinstance(extra, dict) or extra.get("format") != _STATE_FORMAT:
        raise serialization.ModelFileError(f"{ckpt} is not a surrinf trainer checkpoint")
    return extra


# --------------------------------------------------------------------------------------------- train


# The compiled steps are module-level with the loss function and the optimiser as static arguments (a jitted closure
# inside train() would be compiled anew by every call): runs with the same model structure, loss function, optimiser
# object (make_optimizer returns the same one for equal configs) and batch shapes share one compilation.


@eqx.filter_jit
def _train_step(params, static, opt_state, batch, root, step, loss_fn: LossFn, opt: optax.GradientTransformation):
    step_key = jax.random.fold_in(root, step)

    def objective(p):
        return _split_loss(loss_fn(eqx.combine(p, static), batch, step_key))

    (loss, aux), grads = eqx.filter_value_and_grad(objective, has_aux=True)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return eqx.apply_updates(params, updates), opt_state, loss, aux


@eqx.filter_jit
def _eval_step(params, static, batch, root, j, loss_fn: LossFn):
    return _split_loss(loss_fn(eqx.combine(params, static), batch, jax.random.fold_in(root, j)))


def train(
    model: Any,
    loss_fn: LossFn,
    data: Mapping[str, Any],
    key: jax.Array,
    config: TrainConfig,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    optimizer: optax.GradientTransformation | None = None,
    devices: Sequence[jax.Device] | None = None,
    keep: str = "best",
) -> TrainResult:
    """Train the inexact-array leaves of ``model`` (an Equinox module) to minimise ``loss_fn`` on ``data``.

    ``data``: dict of equal-length arrays (row axis first), split into train/validation by ``key``.
    ``out_dir``: write ``train_log.jsonl``, ``train_config.json`` and ``checkpoint/`` there (a fresh run
    replaces an existing log and checkpoint); ``resume=True`` continues from ``out_dir/checkpoint``.
    ``optimizer`` replaces the optax chain built from ``config`` (then no lr is logged). ``devices``: data
    parallel over these devices (default: all of ``jax.devices()``); the batch axis is sharded over a 1-D
    mesh and the parameters are replicated, so ``batch_size`` must be divisible by the device count.
    ``keep``: "best" returns the parameters with the best validation loss (the final ones without a
    validation split); "last" returns the final parameters (for adversarial training, where the validation
    loss does not rank models).
    Raises ValueError for bad data or config, FileNotFoundError when resuming without a checkpoint.
    """
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', got {keep!r}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    arrays = _check_data(data)
    n_rows = len(next(iter(arrays.values())))
    bs = config.batch_size
    train_idx, val_idx = train_val_split(n_rows, key, config.val_fraction)
    n_train, n_val = len(train_idx), len(val_idx)
    if n_train < bs:
        raise ValueError(
            f"too few rows for one batch: {n_train} training rows (of {n_rows}, val_fraction="
            f"{config.val_fraction}) < batch_size={bs} (data keys: {sorted(arrays)})"
        )
    steps_per_epoch = n_train // bs
    ebs = config.eval_batch_size or bs

    # --- devices: 1-D mesh over the batch axis, replicated parameters
    devs = list(jax.devices() if devices is None else devices)
    if not devs:
        raise ValueError("devices must not be empty")
    n_dev = len(devs)
    if n_dev > 1:
        if bs % n_dev:
            raise ValueError(
                f"batch_size={bs} is not divisible by the number of devices ({n_dev}) for data parallelism"
            )
        mesh = Mesh(np.array(devs), ("batch",))
        batch_sharding: jax.sharding.Sharding = NamedSharding(mesh, PartitionSpec("batch"))
        replicated: jax.sharding.Sharding = NamedSharding(mesh, PartitionSpec())
    else:
        batch_sharding = replicated = SingleDeviceSharding(devs[0])

    def put_rows(idx: np.ndarray) -> dict[str, jax.Array]:
        sharding = batch_sharding if len(idx) % n_dev == 0 else replicated
        return jax.device_put({k: v[idx] for k, v in arrays.items()}, sharding)

    # --- model partition and optimiser
    params, static = eqx.partition(model, eqx.is_inexact_array)
    static_arrays, static_rest = eqx.partition(static, eqx.is_array)
    static_dev = eqx.combine(jax.device_put(static_arrays, replicated), static_rest)
    params = jax.device_put(params, replicated)
    custom_opt = optimizer is not None
    opt = optimizer if optimizer is not None else make_optimizer(config)
    schedule = None if custom_opt else make_schedule(config)
    opt_state = jax.device_put(opt.init(params), replicated)
    key = jax.device_put(key, replicated)
    step_root = jax.random.fold_in(key, _TAG_STEP)
    perm_root = jax.random.fold_in(key, _TAG_PERM)
    val_root = jax.random.fold_in(key, _TAG_VAL)

    def evaluate(p: Any) -> tuple[float, dict[str, float]]:
        outs = []
        for j, start in enumerate(range(0, n_val, ebs)):
            rows = val_idx[start : start + ebs]
            outs.append((len(rows), _eval_step(p, static_dev, put_rows(rows), val_root, np.uint32(j), loss_fn)))
        host = jax.device_get([o for _, o in outs])
        weights = np.array([n for n, _ in outs], dtype=np.float64) / n_val
        loss = float(np.sum(weights * np.array([float(lo) for lo, _ in host])))
        aux = {k: float(np.sum(weights * np.array([float(a[k]) for _, a in host]))) for k in host[0][1]}
        return loss, aux

    perm_cache: dict[int, np.ndarray] = {}

    def batch_rows(step: int) -> np.ndarray:
        epoch, i = divmod(step, steps_per_epoch)
        if epoch not in perm_cache:
            perm_cache.clear()
            perm_cache[epoch] = np.asarray(jax.random.permutation(jax.random.fold_in(perm_root, epoch), n_train))
        return train_idx[perm_cache[epoch][i * bs : (i + 1) * bs]]

    # --- state (fresh or from the checkpoint)
    step = 0
    best_params, best_val, best_step, evals_since_best, stopped = params, math.inf, 0, 0, False
    window: list[tuple[Any, dict[str, Any]]] = []  # (loss, aux) of the steps since the last log step
    wall_offset = 0.0
    history: list[dict[str, Any]] = []
    out = Path(out_dir) if out_dir is not None else None
    ckpt_dir = out / CHECKPOINT_DIR if out is not None else None
    log_path = out / LOG_FILE if out is not None else None
    fingerprint = _fingerprint(arrays) if out is not None else ""
    key_typed, key_data = _key_info(key)

    if resume:
        if out is None or ckpt_dir is None or log_path is None:
            raise ValueError("resume=True needs out_dir")
        extra = _peek_checkpoint(ckpt_dir)
        want, have = _resume_view(config.to_dict()), _resume_view(extra["config"])
        diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        if diff:
            detail = ", ".join(f"{k}: checkpoint {have.get(k)!r} vs now {want.get(k)!r}" for k in diff)
            raise ValueError(f"cannot resume {ckpt_dir} deterministically, the config differs: {detail}")
        if extra["data_sha256"] != fingerprint:
            raise ValueError(f"cannot resume {ckpt_dir}: the training data differ from the checkpoint's")
        if extra["custom_optimizer"] != custom_opt:
            used = "a custom" if extra["custom_optimizer"] else "the default"
            raise ValueError(f"cannot resume {ckpt_dir}: the checkpoint used {used} optimizer, this run does not")
        like = _checkpoint_like(params, opt_state, key)
        tree, step, extra = load_checkpoint(ckpt_dir, like)
        _, saved_data = _key_info(tree["key"])
        if extra["key_typed"] != key_typed or not np.array_equal(saved_data, key_data):
            raise ValueError(f"cannot resume {ckpt_dir}: the checkpoint was trained with a different key")
        if extra.get("n_devices", n_dev) != n_dev:
            warnings.warn(
                f"resuming a run checkpointed on {extra['n_devices']} devices on {n_dev}: the result equals an "
                "uninterrupted run only up to float reduction order, not bitwise",
                stacklevel=2,
            )
        if step > config.max_steps:
            raise ValueError(f"checkpoint {ckpt_dir} is at step {step}, beyond max_steps={config.max_steps}")
        params = jax.device_put(tree["params"], replicated)
        opt_state = jax.device_put(tree["opt_state"], replicated)
        best_params = jax.device_put(tree["best_params"], replicated)
        best_val = math.inf if extra["best_val_loss"] is None else extra["best_val_loss"]
        best_step, evals_since_best, stopped = extra["best_step"], extra["evals_since_best"], extra["stopped"]
        window = [(lo, aux) for lo, aux in zip(extra["window"]["loss"], extra["window"]["aux"], strict=True)]
        wall_offset = extra["wall_time"]
        history = _read_log(log_path, step)
        atomic_write_text(log_path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in history))
    elif out is not None and ckpt_dir is not None and log_path is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(log_path, "")
        if (ckpt_dir / serialization.CHECKPOINT_JSON).is_file():
            (ckpt_dir / serialization.CHECKPOINT_JSON).unlink()  # a stale checkpoint must not be resumed from
            (ckpt_dir / serialization.CHECKPOINT_LEAVES).unlink(missing_ok=True)
        atomic_write_text(out / CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")

    has_val = n_val > 0
    t0 = time.perf_counter()
    last_saved = step if resume else -1

    def wall() -> float:
        return round(wall_offset + time.perf_counter() - t0, 3)

    def emit(rec: dict[str, Any]) -> None:
        history.append(rec)
        if log_path is not None:
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec, allow_nan=False) + "\n")

    def save(at: int) -> None:
        nonlocal last_saved
        if ckpt_dir is None or last_saved == at:
            return
        host_window = jax.device_get(window)
        extra = {
            "format": _STATE_FORMAT,
            "config": config.to_dict(),
            "best_val_loss": _json_float(best_val),
            "best_step": best_step,
            "evals_since_best": evals_since_best,
            "stopped": stopped,
            "window": {
                "loss": [float(lo) for lo, _ in host_window],
                "aux": [{k: float(v) for k, v in a.items()} for _, a in host_window],
            },
            "wall_time": wall(),
            "data_sha256": fingerprint,
            "n_rows": n_rows,
            "key_typed": key_typed,
            "custom_optimizer": custom_opt,
            "n_devices": n_dev,
        }
        save_checkpoint(ckpt_dir, _checkpoint_like(params, opt_state, key) | {"best_params": best_params}, at, extra)
        last_saved = at

    bar = tqdm(total=config.max_steps, initial=step, file=sys.stderr, disable=not progress, desc="train")
    try:
        while step < config.max_steps and not stopped:
            s = step
            params, opt_state, loss, aux = _train_step(
                params, static_dev, opt_state, put_rows(batch_rows(s)), step_root, np.uint32(s), loss_fn, opt
            )
            step = s + 1
            window.append((loss, aux))
            rec: dict[str, Any] = {}
            if step % config.log_every == 0:
                host = jax.device_get(window)
                train_loss = _window_mean([lo for lo, _ in host])
                if not math.isfinite(train_loss):
                    raise FloatingPointError(f"non-finite training loss {train_loss} at step {step}")
                rec["train_loss"] = train_loss
                for name in host[-1][1]:
                    rec[f"train_{name}"] = _window_mean([a[name] for _, a in host])
                window = []
            if has_val and step % config.eval_every == 0:
                val_loss, val_aux = evaluate(params)
                rec["val_loss"] = _json_float(val_loss)
                rec.update({f"val_{k}": _json_float(v) for k, v in val_aux.items()})
                if val_loss < best_val:
                    best_params, best_val, best_step, evals_since_best = params, val_loss, step, 0
                else:
                    evals_since_best += 1
                    if config.patience is not None and evals_since_best >= config.patience:
                        stopped = True
            if rec:
                if schedule is not None:
                    rec["lr"] = float(schedule(s))
                rec = {"step": step, "epoch": s // steps_per_epoch, **rec, "wall_time": wall()}
                emit(rec)
                bar.set_postfix({k: f"{rec[k]:.4g}" for k in ("train_loss", "val_loss") if rec.get(k) is not None})
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                save(step)
            bar.update(1)
        save(step)
    finally:
        bar.close()

    # --- the returned model: best evaluated parameters, or the final ones if better / no validation
    end: dict[str, Any] = {"step": step, "event": "end"}
    if not has_val:
        best_params, best_step, best_val_out = params, step, None
    else:
        if step == 0 or step % config.eval_every != 0:
            final_val, final_aux = evaluate(params)
            end["val_loss"] = _json_float(final_val)
            end.update({f"val_{k}": _json_float(v) for k, v in final_aux.items()})
            if final_val < best_val:
                best_params, best_val, best_step = params, final_val, step
        best_val_out = best_val if math.isfinite(best_val) else None
    end.update(
        {
            "best_step": best_step,
            "best_val_loss": _json_float(best_val_out),
            "stopped_early": stopped,
            "wall_time": wall(),
        }
    )
    emit(end)
    if keep == "last":
        best_params = params
    if n_dev > 1:
        best_params = jax.device_put(best_params, devs[0])
    best_model = eqx.combine(best_params, static)
    return TrainResult(best_model, history, best_step, best_val_out, step, stopped)
