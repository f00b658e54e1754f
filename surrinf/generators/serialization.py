"""Saving and loading surrogates and training checkpoints without pickle.

A saved model is a directory with two files:

- ``model.eqx``: the array leaves, written by :func:`equinox.tree_serialise_leaves` as a sequence of
  ``.npy`` records (``allow_pickle=False`` on both sides, so object arrays can neither be written nor read);
- ``model.json``: ``format``, ``format_version``, ``model_type`` (a name in :data:`MODEL_REGISTRY`),
  ``config`` (the JSON hyperparameters the registered builder turns into the module's skeleton),
  ``metadata`` (free JSON), package versions, ``created`` and the SHA-256 and size of ``model.eqx``.

:func:`load` reads the JSON, checks the size and checksum of ``model.eqx`` before parsing it, builds the
skeleton with the registered builder and overwrites every leaf from the file. Loading never executes code
from the files: the only code that runs is the builder registered (imported) by the caller.

Checkpoints (:func:`save_checkpoint` / :func:`load_checkpoint`) use the same scheme for arbitrary pytrees
(model, optax state, PRNG keys) with ``checkpoint.eqx`` / ``checkpoint.json``; the caller supplies a
``like`` pytree of the same structure. Typed PRNG keys (``jax.random.key``) are stored as their raw
``key_data`` and re-wrapped with the implementation of the corresponding ``like`` leaf.

Replacement is all-or-nothing: the new files are written (each atomically) into a temporary sibling
directory, which is then swapped in for the target with two renames (old -> backup, new -> target) and the
backup is removed. A crash or exception before the swap leaves the previous directory untouched; between
the two renames (a few microseconds) the target path does not exist, and a crash exactly there leaves the
old directory as ``.<name>.old-*`` and the complete new one as ``.<name>.new-*`` beside it. A reader never
sees a mixture of old and new files. A target directory that holds anything besides the two managed files
is never replaced (``FileExistsError``), so no foreign file can be deleted. Concurrent writers to the
same path are not coordinated.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import operator
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

import equinox as eqx
import jax
import jax.tree_util as jtu
import numpy as np

from surrinf._atomic import atomic_write_bytes, atomic_write_text

__all__ = [
    "CHECKPOINT_FORMAT",
    "FORMAT_VERSION",
    "MODEL_FORMAT",
    "MODEL_REGISTRY",
    "ModelFileError",
    "load",
    "load_checkpoint",
    "model_type_of",
    "register_model",
    "save",
    "save_checkpoint",
]

MODEL_FORMAT = "surrinf-model"
CHECKPOINT_FORMAT = "surrinf-checkpoint"
#: The format version this code writes and the newest it reads.
FORMAT_VERSION = 1

MODEL_LEAVES = "model.eqx"
MODEL_JSON = "model.json"
CHECKPOINT_LEAVES = "checkpoint.eqx"
CHECKPOINT_JSON = "checkpoint.json"

Builder = Callable[[dict[str, Any], jax.Array], Any]
_B = TypeVar("_B", bound=Callable[..., Any])

#: Model type name -> builder ``build(config, key)`` that returns the module (its skeleton on load).
MODEL_REGISTRY: dict[str, Builder] = {}
#: Model class -> type name, for :func:`save` to find the name of a model (filled by :func:`register_model`).
_CLASS_NAMES: dict[type, list[str]] = {}


class ModelFileError(ValueError):
    """A saved model or checkpoint is corrupt, truncated, of an unknown format or does not match its config."""


# --------------------------------------------------------------------------------------------- registry


def register_model(
    name: str, build: Callable[..., Any] | None = None, *, model_class: type | None = None
) -> Callable[..., Any]:
    """Register a model type ``name``; usable as a decorator or a plain call.

    On a function ``build(config: dict, key) -> eqx.Module`` it registers that builder; pass
    ``model_class`` so that :func:`save` can find the name from the model's class (otherwise pass
    ``model_type=`` to :func:`save`). On a class it registers ``cls.from_config(config, key)`` when the
    class defines it, else ``cls(**config, key=key)``, and the class itself::

        @register_model("toy_flow")
        def build_toy_flow(config, key):
            return ToyFlow(**config, key=key)

        register_model("toy_flow", build_toy_flow, model_class=ToyFlow)

    The builder must be deterministic in ``config``: the loader calls it with ``jax.random.key(0)`` and
    overwrites every array leaf. Registering a different builder under a taken name raises ``ValueError``
    (re-registering the same function, e.g. on module reload, is allowed). Returns its argument.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"model type name must be a non-empty string, got {name!r}")

    def decorate(obj: _B) -> _B:
        if isinstance(obj, type):
            cls = obj
            builder: Builder = _class_builder(cls)
        elif callable(obj):
            cls = model_class
            builder = obj
        else:
            raise TypeError(f"register_model({name!r}) needs a builder function or a class, got {obj!r}")
        old = MODEL_REGISTRY.get(name)
        if old is not None and _qualified(old) != _qualified(builder):
            raise ValueError(f"model type {name!r} is already registered to {_qualified(old)}")
        MODEL_REGISTRY[name] = builder
        if cls is not None:
            names = _CLASS_NAMES.setdefault(cls, [])
            if name not in names:
                names.append(name)
        return obj

    if build is not None:
        return decorate(build)
    return decorate


def _class_builder(cls: type) -> Builder:
    """The builder for a registered class: ``cls.from_config`` if defined, else ``cls(**config, key=key)``."""
    from_config = getattr(cls, "from_config", None)
    if callable(from_config):
        return from_config

    def build(config: dict[str, Any], key: jax.Array) -> Any:
        return cls(**config, key=key)

    build.__qualname__ = f"{cls.__qualname__}.<registered builder>"
    build.__module__ = cls.__module__
    return build


def _qualified(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _known_types() -> str:
    return ", ".join(sorted(MODEL_REGISTRY)) or "(none registered)"


def _builder(model_type: str) -> Builder:
    try:
        return MODEL_REGISTRY[model_type]
    except KeyError:
        raise ModelFileError(
            f"unknown model type {model_type!r}; known types: {_known_types()}. "
            "Import the module that registers it (register_model) before loading."
        ) from None


def model_type_of(model: Any) -> str:
    """The registered type name of ``model`` (by its exact class); ``ValueError`` if none or ambiguous."""
    names = _CLASS_NAMES.get(type(model), [])
    if len(names) == 1:
        return names[0]
    cls = type(model).__qualname__
    if not names:
        raise ValueError(
            f"no model type is registered for class {cls}; use register_model(name, model_class={cls}) or "
            f"pass model_type= (known types: {_known_types()})"
        )
    raise ValueError(f"class {cls} is registered under several names {names}; pass model_type=")


# --------------------------------------------------------------------------------------------- JSON


def _check_json(obj: Any, where: str) -> None:
    """Raise ``TypeError`` / ``ValueError`` naming the key if ``obj`` is not strict JSON.

    Allowed: None, bool, int, float (finite), str, lists/tuples and dicts with string keys. Tuples are
    stored as lists and come back as lists."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"{where} = {obj!r} is not finite; JSON has no NaN/Inf (store None or a string)")
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} has a non-string key {k!r} ({type(k).__name__}); JSON keys are strings")
            _check_json(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_json(v, f"{where}[{i}]")
        return
    text = repr(obj)
    text = text if len(text) <= 60 else text[:57] + "..."
    raise TypeError(
        f"{where} = {text} ({type(obj).__module__}.{type(obj).__qualname__}) is not JSON-serialisable; "
        "convert it to a plain Python value (float(), int(), .tolist(), str())"
    )


def _dumps(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def _versions() -> dict[str, str]:
    try:
        surrinf_version = version("surrinf")
    except PackageNotFoundError:
        surrinf_version = "unknown"
    return {"surrinf_version": surrinf_version, "jax_version": jax.__version__, "equinox_version": eqx.__version__}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------- leaves


def _is_key(x: Any) -> bool:
    return isinstance(x, (jax.Array, jax.ShapeDtypeStruct)) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _save_leaf(f: io.BufferedIOBase, x: Any) -> None:
    """Filter spec for :func:`eqx.tree_serialise_leaves`: arrays and Python/NumPy scalars, no pickle.

    Typed PRNG keys are stored as their ``key_data``; Python scalars keep full precision (float64/int64)."""
    if isinstance(x, jax.Array):
        if _is_key(x):
            x = jax.random.key_data(x)
        np.save(f, np.asarray(x), allow_pickle=False)
    elif isinstance(x, (np.ndarray, np.generic, bool, int, float, complex)):
        np.save(f, np.asarray(x), allow_pickle=False)


def _load_leaf(f: io.BufferedIOBase, like: Any) -> Any:
    """Filter spec for :func:`eqx.tree_deserialise_leaves`, the inverse of :func:`_save_leaf`."""
    if isinstance(like, (jax.Array, jax.ShapeDtypeStruct)):
        arr = np.load(f, allow_pickle=False)
        if _is_key(like):
            if not isinstance(like, jax.Array):
                raise TypeError("a typed PRNG key leaf of `like` must be a concrete key array, not a ShapeDtypeStruct")
            raw = jax.random.key_data(like)
            return jax.random.wrap_key_data(
                jax.numpy.asarray(_checked(arr, raw.shape, raw.dtype)), impl=jax.random.key_impl(like)
            )
        return jax.numpy.asarray(_checked(arr, like.shape, like.dtype))
    if isinstance(like, np.ndarray):
        return _checked(np.load(f, allow_pickle=False), like.shape, like.dtype)
    if isinstance(like, np.generic):
        return _checked(np.load(f, allow_pickle=False), (), like.dtype)[()]
    if isinstance(like, (bool, int, float, complex)):
        arr = np.load(f, allow_pickle=False)
        if arr.shape != ():
            raise ValueError(f"expected a scalar {type(like).__name__} on disk, found an array of shape {arr.shape}")
        return type(like)(arr.item())
    return like


def _checked(arr: np.ndarray, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """``arr`` viewed as ``dtype`` (``.npy`` stores bfloat16 & co. as raw bytes) after a shape/dtype check."""
    dtype = np.dtype(dtype)
    if arr.dtype != dtype and arr.dtype.kind == "V" and arr.dtype.itemsize == dtype.itemsize:
        arr = arr.view(dtype)
    if tuple(arr.shape) != tuple(shape) or arr.dtype != dtype:
        raise ValueError(f"expected {dtype}{list(shape)}, found {arr.dtype}{list(arr.shape)} on disk")
    return arr


def _serialise_leaves(pytree: Any) -> bytes:
    """The ``.eqx`` bytes of the array and scalar leaves of ``pytree``."""
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, pytree, filter_spec=_save_leaf)
    return buf.getvalue()


def _deserialise_leaves(data: bytes, like: Any) -> Any:
    """Inverse of :func:`_serialise_leaves`; raises if the records do not fit ``like`` or bytes are left over."""
    buf = io.BytesIO(data)
    out = eqx.tree_deserialise_leaves(buf, like, filter_spec=_load_leaf)
    if buf.tell() != len(data):
        raise ValueError(f"{len(data) - buf.tell()} bytes are left over after the last leaf (the file has more leaves)")
    return out


def _leaf_signature(tree: Any) -> list[tuple[str, str]]:
    """(path, 'dtype[shape]' or Python type) of every leaf that :func:`_save_leaf` writes."""
    sig = []
    for path, leaf in jtu.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct, np.ndarray, np.generic)):
            sig.append((jtu.keystr(path), f"{leaf.dtype}{list(leaf.shape)}"))
        elif isinstance(leaf, (bool, int, float, complex)):
            sig.append((jtu.keystr(path), type(leaf).__name__))
    return sig


# --------------------------------------------------------------------------------------------- files


_MANAGED_PATTERN = re.compile(r"^\.(model|checkpoint)\.(eqx|json)\..*\.tmp$")  # debris of an atomic write


def _write_directory(path: Path, files: dict[str, bytes | str]) -> Path:
    """Replace directory ``path`` by one holding exactly ``files`` (written in order), all or nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a directory")
    if path.is_dir():
        foreign = sorted(n for n in os.listdir(path) if n not in files and not _MANAGED_PATTERN.match(n))
        if foreign:
            raise FileExistsError(
                f"{path} holds files other than {sorted(files)}: {foreign}; refusing to replace it "
                "(save into a new directory or remove them)"
            )
    parent = path.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.new-", dir=parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; give the directory normal permissions
        for name, content in files.items():
            if isinstance(content, str):
                atomic_write_text(tmp / name, content)
            else:
                atomic_write_bytes(tmp / name, content)
        _swap_in(tmp, path.absolute())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _swap_in(new: Path, target: Path) -> None:
    """Move directory ``new`` to ``target``, replacing an existing ``target`` (removed afterwards)."""
    if not target.exists():
        os.replace(new, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    old.rmdir()  # reserve a unique name; rename needs it absent (portable)
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _resolve_dir(path: str | os.PathLike, json_name: str, leaves_name: str) -> Path:
    path = Path(path)
    if path.is_file() and path.name in (json_name, leaves_name):
        path = path.parent
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if not path.is_dir():
        raise ModelFileError(f"{path} is not a directory holding {json_name} and {leaves_name}")
    return path


def _read_verified(path: Path, json_name: str, leaves_name: str, fmt: str) -> tuple[dict[str, Any], bytes]:
    """Parse and check the JSON, then read the leaves file and check its size and SHA-256."""
    json_path, leaves_path = path / json_name, path / leaves_name
    if not json_path.is_file():
        raise ModelFileError(f"{path} is not a {fmt} directory: {json_name} is missing")
    try:
        info = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{json_path} is not valid JSON: {e}") from e
    if not isinstance(info, dict) or info.get("format") != fmt:
        found = info.get("format") if isinstance(info, dict) else type(info).__name__
        raise ModelFileError(f"{json_path} is not a {fmt} file (format {found!r})")
    fv = info.get("format_version")
    if not isinstance(fv, int) or isinstance(fv, bool) or fv < 1:
        raise ModelFileError(f"{json_path}: invalid format_version {fv!r}")
    if fv > FORMAT_VERSION:
        raise ModelFileError(
            f"{json_path} has format_version {fv}, this surrinf reads up to {FORMAT_VERSION}; upgrade surrinf"
        )
    expected_sha, expected_size = info.get("leaves_sha256"), info.get("leaves_bytes")
    if not isinstance(expected_sha, str) or not isinstance(expected_size, int):
        raise ModelFileError(f"{json_path} lacks leaves_sha256 / leaves_bytes")
    if not leaves_path.is_file():
        raise ModelFileError(f"{leaves_path} is missing")
    data = leaves_path.read_bytes()
    if len(data) != expected_size:
        raise ModelFileError(
            f"{leaves_path} is truncated or altered: {json_name} records {expected_size} bytes, found {len(data)}"
        )
    found_sha = hashlib.sha256(data).hexdigest()
    if found_sha != expected_sha:
        raise ModelFileError(
            f"{leaves_path} is corrupt or altered: SHA-256 checksum mismatch "
            f"(expected {expected_sha} from {json_name}, found {found_sha})"
        )
    return info, data


# --------------------------------------------------------------------------------------------- models


def save(
    model: Any,
    path: str | os.PathLike,
    config: dict[str, Any],
    *,
    metadata: dict[str, Any] | None = None,
    model_type: str | None = None,
    verify: bool = True,
) -> Path:
    """Save ``model`` to directory ``path`` (``model.eqx`` + ``model.json``) and return the path.

    ``config`` are the JSON hyperparameters its registered builder needs; ``metadata`` is free JSON
    (geometry, preprocessing, training summary). ``model_type`` defaults to the name registered for the
    model's class. With ``verify`` the skeleton ``build(config)`` (shape-evaluated, or built if the builder
    cannot be traced) must have the model's leaves, shapes and dtypes, so an unloadable file is never
    written. An existing model directory is replaced all-or-nothing (see the module docstring).
    """
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    _check_json(config, "config")
    _check_json(metadata or {}, "metadata")
    if model_type is None:
        model_type = model_type_of(model)
    builder = _builder(model_type)
    stored_config = json.loads(json.dumps(config))  # exactly what load() will pass to the builder
    if verify:
        _verify_config(model, builder, stored_config, model_type)
    leaves = _serialise_leaves(model)
    doc = {
        "format": MODEL_FORMAT,
        "format_version": FORMAT_VERSION,
        "model_type": model_type,
        "config": stored_config,
        "metadata": json.loads(json.dumps(metadata or {})),
        **_versions(),
        "created": _now(),
        "leaves_sha256": hashlib.sha256(leaves).hexdigest(),
        "leaves_bytes": len(leaves),
    }
    return _write_directory(Path(path), {MODEL_LEAVES: leaves, MODEL_JSON: _dumps(doc)})


def _verify_config(model: Any, builder: Builder, config: dict[str, Any], model_type: str) -> None:
    """Raise ``ValueError`` if ``builder(config)`` does not give a skeleton with the leaves of ``model``."""
    key = jax.random.key(0)
    try:
        skeleton = eqx.filter_eval_shape(builder, copy.deepcopy(config), key)
    except Exception:
        try:  # builders that need concrete values cannot be shape-evaluated; build for real
            skeleton = builder(copy.deepcopy(config), key)
        except Exception as e:
            raise ValueError(f"build(config) for model type {model_type!r} fails, the model would not load: {e}") from e
    want, got = _leaf_signature(model), _leaf_signature(skeleton)
    if want != got:
        raise ValueError(
            f"config does not describe this {model_type!r} model: {_first_difference(want, got)}. "
            "Pass the hyperparameters the model was built with."
        )


def _first_difference(model_sig: list[tuple[str, str]], skel_sig: list[tuple[str, str]]) -> str:
    for (p1, d1), (p2, d2) in zip(model_sig, skel_sig, strict=False):
        if (p1, d1) != (p2, d2):
            return f"model leaf {p1} is {d1}, build(config) gives {p2} {d2}"
    return f"model has {len(model_sig)} array leaves, build(config) gives {len(skel_sig)}"


def load(path: str | os.PathLike, *, expected_type: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Load a model saved by :func:`save`; returns ``(model, info)`` with ``info`` the parsed ``model.json``.

    Raises :class:`ModelFileError` for a wrong format or version, a size or SHA-256 mismatch of
    ``model.eqx`` (checked before parsing it), an unknown or unexpected model type, and leaves that do not
    match the skeleton built from the stored config."""
    path = _resolve_dir(path, MODEL_JSON, MODEL_LEAVES)
    info, data = _read_verified(path, MODEL_JSON, MODEL_LEAVES, MODEL_FORMAT)
    model_type, config = info.get("model_type"), info.get("config")
    if not isinstance(model_type, str) or not isinstance(config, dict):
        raise ModelFileError(f"{path / MODEL_JSON} lacks a model_type string or a config object")
    if expected_type is not None and model_type != expected_type:
        raise ModelFileError(f"{path} holds a {model_type!r} model, expected {expected_type!r}")
    builder = _builder(model_type)
    try:
        skeleton = builder(copy.deepcopy(config), jax.random.key(0))
    except Exception as e:
        raise ModelFileError(f"cannot build a {model_type!r} model from the config in {path / MODEL_JSON}: {e}") from e
    try:
        model = _deserialise_leaves(data, skeleton)
    except Exception as e:
        raise ModelFileError(
            f"{path / MODEL_LEAVES} does not match its config in {MODEL_JSON} (model type {model_type!r}): {e}"
        ) from e
    return model, info


# --------------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: str | os.PathLike, pytree: Any, step: int, extra: dict[str, Any] | None = None) -> Path:
    """Save a training state (any pytree of arrays, scalars, typed or raw PRNG keys) to directory ``path``.

    Writes ``checkpoint.eqx`` and ``checkpoint.json`` (``step``, ``extra`` JSON, versions, checksum),
    replacing an existing checkpoint all-or-nothing. Non-array leaves (functions, static fields) are not
    stored; they come from the ``like`` pytree on load."""
    if isinstance(step, bool) or not hasattr(step, "__index__"):
        raise TypeError(f"step must be an int, got {type(step).__name__}")
    step = operator.index(step)
    extra = {} if extra is None else extra
    if not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict, got {type(extra).__name__}")
    _check_json(extra, "extra")
    leaves = _serialise_leaves(pytree)
    doc = {
        "format": CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "step": step,
        "extra": json.loads(json.dumps(extra)),
        **_versions(),
        "created": _now(),
        "leaves_sha256": hashlib.sha256(leaves).hexdigest(),
        "leaves_bytes": len(leaves),
    }
    return _write_directory(Path(path), {CHECKPOINT_LEAVES: leaves, CHECKPOINT_JSON: _dumps(doc)})


def load_checkpoint(path: str | os.PathLike, like_pytree: Any) -> tuple[Any, int, dict[str, Any]]:
    """Load a checkpoint saved by :func:`save_checkpoint` into the structure of ``like_pytree``.

    ``like_pytree`` must have the saved structure, shapes and dtypes (e.g. a freshly initialised model and
    optimiser state; array leaves may be ``jax.ShapeDtypeStruct``, typed keys must be concrete). Returns
    ``(pytree, step, extra)``; raises :class:`ModelFileError` on a corrupt file or a mismatch."""
    path = _resolve_dir(path, CHECKPOINT_JSON, CHECKPOINT_LEAVES)
    info, data = _read_verified(path, CHECKPOINT_JSON, CHECKPOINT_LEAVES, CHECKPOINT_FORMAT)
    step, extra = info.get("step"), info.get("extra", {})
    if not isinstance(step, int) or isinstance(step, bool) or not isinstance(extra, dict):
        raise ModelFileError(f"{path / CHECKPOINT_JSON} lacks an integer step or an extra object")
    try:
        tree = _deserialise_leaves(data, like_pytree)
    except Exception as e:
        raise ModelFileError(f"{path / CHECKPOINT_LEAVES} does not match the structure of like_pytree: {e}") from e
    return tree, step, extra
