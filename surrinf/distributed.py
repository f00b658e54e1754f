"""Data-parallel sampling and pseudo-experiments over a 1-D device mesh (``jax.sharding``).

Everything here is row-parallel: the leading axis of the inputs is sharded over a 1-D mesh named ``"batch"``
and every row is computed independently: the random numbers of row ``i`` come from ``jax.random.fold_in(key, i)``,
never from the device layout, so random draws are identical for any device count, and float results agree up to
rounding (XLA CPU vectorises float arithmetic differently for different shard shapes: 1-ulp differences were measured
in reductions and matrix products, none in integer draws).

Data-parallel training
    ``surrinf.generators.train(model, loss_fn, data, key, config, devices=jax.devices())`` shards each batch
    over the devices and replicates the parameters (``config.batch_size`` must be divisible by the device
    count; the gradient all-reduce may change the last bits of float32 sums).

Sharded sampling
    ``sharded_sample(surrogate, key, conditions)`` draws the noise of row ``i`` from ``fold_in(key, i)`` and
    runs ``surrogate.generate`` on the rows sharded over the devices, ``batch_size`` rows at a time.

Sharded pseudo-experiments
    ``sharded_pseudo_experiments(key, n_toys, simulate_and_fit)`` runs ``simulate_and_fit(fold_in(key, i))``
    for ``i = 0 .. n_toys - 1``; ``sharded_map(fn, xs)`` applies a per-row function to any pytree of rows.

Several CPU devices on one machine (testing): set ``XLA_FLAGS=--xla_force_host_platform_device_count=4``
before JAX starts its backend.

Multi-host launch (a recipe, not tested here): on every host, before any other JAX call, run ::

    jax.distributed.initialize(coordinator_address="host0:1234", num_processes=N_HOSTS, process_id=RANK)

then call the functions above identically on all processes (same key, same inputs): ``jax.devices()`` then
lists the devices of all hosts, each process feeds and computes its own shards, and the outputs are gathered
to every process (``process_allgather``) before they are returned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._xla import CPU_COMPILER_OPTIONS

__all__ = ["device_mesh", "sharded_map", "sharded_pseudo_experiments", "sharded_sample"]

AXIS = "batch"
#: Rows per device are padded to a multiple of this: XLA CPU computes the last rows of an array whose length is not a
#: multiple of the SIMD width in a scalar remainder loop, which can differ in the last bit from the vectorised lanes
#: (seen for a batched 3x3 solve + norm: 1-ulp differences on the last rows of 63-row shards, none on 64-row shards).
_ROW_QUANTUM = 16


def device_mesh(devices: Sequence[jax.Device] | None = None, axis: str = AXIS) -> Mesh:
    """1-D mesh over ``devices`` (default: all of ``jax.devices()``) with the single axis name ``axis``."""
    devs = list(jax.devices() if devices is None else devices)
    if not devs:
        raise ValueError("devices must not be empty")
    if len({d.id for d in devs}) != len(devs):
        raise ValueError(f"devices must be distinct, got {devs}")
    if not isinstance(axis, str) or not axis:
        raise ValueError(f"axis must be a non-empty string, got {axis!r}")
    return Mesh(np.array(devs), (axis,))


def _check_batch_size(batch_size: int | None) -> int | None:
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    return int(batch_size)


def _n_rows(xs: Any, name: str) -> int:
    leaves = jax.tree.leaves(xs)
    if not leaves:
        raise ValueError(f"{name} must contain at least one array")
    sizes = set()
    for leaf in leaves:
        shape = np.shape(leaf)
        if len(shape) < 1:
            raise ValueError(f"every leaf of {name} needs a leading row axis, got a scalar")
        sizes.add(shape[0])
    if len(sizes) != 1:
        raise ValueError(f"all leaves of {name} must have the same number of rows, got {sorted(sizes)}")
    return sizes.pop()


def _to_host(x: jax.Array) -> np.ndarray:
    if not x.is_fully_addressable:  # multi-host: every process gets the whole result
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def _sharded_apply(
    batched_fn: Callable[..., Any],
    xs: Any,
    *,
    devices: Sequence[jax.Device] | None,
    batch_size: int | None,
    replicated_args: tuple = (),
    name: str = "xs",
) -> Any:
    """``batched_fn(*replicated_args, rows)`` on the leading axis of ``xs``, rows sharded over a 1-D mesh.

    ``batched_fn`` must be row-wise (row ``i`` of every output depends on row ``i`` of the inputs only). The rows
    are processed ``chunk`` at a time (``batch_size``, or all rows when it is None, rounded up to a multiple of
    ``16 * device count``, see :data:`_ROW_QUANTUM`); the last chunk is padded by repeating its last row and
    the padding is dropped. Returns a pytree of host numpy arrays."""
    batch_size = _check_batch_size(batch_size)
    mesh = device_mesh(devices)
    n_dev = mesh.size
    n = _n_rows(xs, name)
    host = jax.tree.map(np.asarray, xs)
    if n == 0:
        spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct((1, *a.shape[1:]), a.dtype), host)
        out = jax.eval_shape(batched_fn, *replicated_args, spec)
        return jax.tree.map(lambda s: np.zeros((0, *s.shape[1:]), s.dtype), out)
    rows = n if batch_size is None else min(batch_size, n)
    chunk = -(-rows // (n_dev * _ROW_QUANTUM)) * n_dev * _ROW_QUANTUM
    rows_sharding = NamedSharding(mesh, PartitionSpec(AXIS))
    replicated = NamedSharding(mesh, PartitionSpec())
    on_cpu = all(d.platform == "cpu" for d in mesh.devices.flat)
    fn = jax.jit(
        batched_fn,
        in_shardings=(*(replicated,) * len(replicated_args), rows_sharding),
        out_shardings=rows_sharding,
        compiler_options=CPU_COMPILER_OPTIONS if on_cpu else None,
    )
    args = tuple(jax.device_put(a, replicated) for a in replicated_args)
    outs = []
    for start in range(0, n, chunk):
        part = jax.tree.map(lambda a, s=start: a[s : s + chunk], host)
        pad = chunk - min(chunk, n - start)
        if pad:
            part = jax.tree.map(lambda a, p=pad: np.concatenate([a, np.repeat(a[-1:], p, axis=0)]), part)
        placed = jax.tree.map(lambda a: jax.make_array_from_callback(a.shape, rows_sharding, lambda i, a=a: a[i]), part)
        res = fn(*args, placed)
        outs.append(jax.tree.map(lambda r, p=pad: _to_host(r)[: chunk - p], res))
    return outs[0] if len(outs) == 1 else jax.tree.map(lambda *parts: np.concatenate(parts), *outs)


def sharded_map(
    fn: Callable[[Any], Any],
    xs: Any,
    *,
    devices: Sequence[jax.Device] | None = None,
    batch_size: int | None = None,
) -> Any:
    """``jax.vmap(fn)(xs)`` with the rows of ``xs`` sharded over ``devices`` (default: all of ``jax.devices()``).

    ``fn(x_row) -> pytree`` is a pure JAX function of one row (the leading axis of every leaf of the pytree
    ``xs``). Rows are processed ``batch_size`` at a time to bound memory (None: all at once), rounded up to a
    multiple of 16 times the device count; padding rows (copies of the last row) are dropped. The result is a
    pytree of host numpy arrays with the leading axis ``len(xs)``, equal to the single-device compiled
    ``jax.jit(jax.vmap(fn))(xs)`` up to float rounding (shard shapes change XLA's vectorisation; padding shards to
    16-row multiples keeps rows out of the scalar remainder loop, which made a 3x3 solve bitwise equal in the tests,
    but no bitwise promise is made).
    On CPU the computation is compiled with :data:`surrinf._xla.CPU_COMPILER_OPTIONS`.
    Raises ValueError for an empty device list, ragged or scalar leaves, or a bad ``batch_size``."""
    if not callable(fn):
        raise ValueError(f"fn must be callable, got {type(fn).__name__}")
    return _sharded_apply(jax.vmap(fn), xs, devices=devices, batch_size=batch_size)


def sharded_pseudo_experiments(
    key: jax.Array,
    n: int,
    simulate_and_fit: Callable[[jax.Array], Any],
    *,
    devices: Sequence[jax.Device] | None = None,
    batch_size: int | None = None,
) -> Any:
    """Pseudo-experiments ``simulate_and_fit(jax.random.fold_in(key, i))`` for ``i = 0 .. n - 1``, sharded.

    ``simulate_and_fit(key_i) -> pytree`` (one toy: simulate pseudo-data, fit, return estimates) must be pure
    JAX. Toy ``i``'s key depends on ``i`` only, so its pseudo-data are identical whatever the device count or
    ``batch_size`` (toys per compiled chunk, see :func:`sharded_map`), and the stacked results (host numpy arrays,
    leading axis ``n``) equal ``jax.jit(jax.vmap(lambda i: simulate_and_fit(fold_in(key, i))))(jnp.arange(n))`` on
    one device up to float rounding.
    Raises ValueError for a negative ``n`` or a bad ``batch_size``/``devices``."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be a non-negative integer (the number of pseudo-experiments), got {n!r}")
    if n >= 2**32:
        raise ValueError(f"n must be < 2**32 (fold_in takes uint32 indices), got {n}")
    if not callable(simulate_and_fit):
        raise ValueError(f"simulate_and_fit must be callable, got {type(simulate_and_fit).__name__}")

    def batched(k: jax.Array, idx: jax.Array) -> Any:
        return jax.vmap(lambda i: simulate_and_fit(jax.random.fold_in(k, i)))(idx)

    idx = np.arange(int(n), dtype=np.uint32)
    return _sharded_apply(batched, idx, devices=devices, batch_size=batch_size, replicated_args=(key,), name="n")


def sharded_sample(
    model: Any,
    key: jax.Array,
    conditions: Any,
    *,
    devices: Sequence[jax.Device] | None = None,
    batch_size: int | None = 4096,
    latent_dim: int | None = None,
) -> Any:
    """Noise-driven sampling with the rows of ``conditions`` sharded over ``devices``.

    ``model``: an object with ``generate(noise, conditions)`` and ``latent_dim()`` (the surrinf.generators
    surrogates), or a callable ``model(noise, conditions)`` together with ``latent_dim``; either maps noise
    (B, latent_dim) and B rows of conditions to B rows of output, row by row. Row ``i`` gets the standard-normal
    noise ``jax.random.normal(fold_in(key, i), (latent_dim,))``, so the noise does not depend on the device count or
    ``batch_size`` and the result (host numpy arrays, N rows) agrees up to float rounding (it differs from
    ``model.sample(key, conditions)``, which draws one (N, latent_dim) array). ``conditions``: an array (N, ...) or
    a pytree of arrays with N rows.
    Raises ValueError for a model without ``generate``/``latent_dim`` and no ``latent_dim`` argument, or bad
    ``batch_size``/``devices``."""
    if hasattr(model, "generate") and hasattr(model, "latent_dim"):
        generate = model.generate
        dim = model.latent_dim() if latent_dim is None else latent_dim
    elif callable(model):
        if latent_dim is None:
            raise ValueError("latent_dim is required when model is a plain callable model(noise, conditions)")
        generate, dim = model, latent_dim
    else:
        raise ValueError(f"model must have generate() and latent_dim() or be callable, got {type(model).__name__}")
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
        raise ValueError(f"latent_dim must be a positive integer, got {dim!r}")
    dim = int(dim)
    n = _n_rows(conditions, "conditions")
    if n >= 2**32:
        raise ValueError(f"conditions must have < 2**32 rows (fold_in takes uint32 indices), got {n}")

    def batched(k: jax.Array, rows: tuple[jax.Array, Any]) -> Any:
        idx, cond = rows
        noise = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(k, i), (dim,)))(idx)
        return generate(noise, cond)

    rows = (np.arange(n, dtype=np.uint32), conditions)
    return _sharded_apply(
        batched, rows, devices=devices, batch_size=batch_size, replicated_args=(key,), name="conditions"
    )
