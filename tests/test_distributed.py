"""surrinf.distributed: sharded map / pseudo-experiments / sampling equal the single-device results (integer draws
bitwise, float results to float32 rounding: XLA CPU vectorises differently for different shard shapes).

JAX fixes its device count when the backend starts, so the 4-device checks run in one subprocess with
``--xla_force_host_platform_device_count=4``. Data-parallel training on several devices is already covered by
tests/test_trainer.py::test_data_parallel_matches_single_device (4 devices)."""

from __future__ import annotations

import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from surrinf.distributed import device_mesh, sharded_map, sharded_pseudo_experiments, sharded_sample

COMMON = textwrap.dedent(
    """
    import equinox as eqx, jax, jax.numpy as jnp, numpy as np

    def solve_row(row):  # a 3x3 solve per row, plus a tuple output
        a, b = row
        x = jnp.linalg.solve(a + 3.0 * jnp.eye(3), b)
        return {"x": x, "r": jnp.linalg.norm(a @ x - b)}

    def rows(n):
        rng = np.random.default_rng(0)
        return (rng.normal(size=(n, 3, 3)).astype(np.float32), rng.normal(size=(n, 3)).astype(np.float32))

    MU = jnp.array([5.0, 20.0, 50.0, 20.0, 5.0])
    SHAPE = MU / MU.sum()

    def poisson_toy(key):  # 5-bin Poisson toy and the closed-form MLE of the total yield and of each bin
        counts = jax.random.poisson(key, MU).astype(jnp.float32)
        total = counts.sum()
        return {"counts": counts, "yield": total, "scale": total / MU.sum(), "nll": -jnp.sum(
            jax.scipy.stats.poisson.logpmf(counts, total * SHAPE))}

    class Gen(eqx.Module):  # tiny noise-driven generator exposing generate / latent_dim
        mlp: eqx.nn.MLP

        def latent_dim(self):
            return 4

        def generate(self, noise, conditions):
            c = jnp.asarray(conditions, jnp.float32).reshape(noise.shape[0], -1)
            return jax.vmap(self.mlp)(jnp.concatenate([noise, jnp.log(c)], axis=1))

    def bitwise(a, b):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            x, y = np.asarray(x), np.asarray(y)
            assert x.shape == y.shape and x.dtype == y.dtype, (x.shape, y.shape, x.dtype, y.dtype)
            np.testing.assert_array_equal(x, y)

    def close(a, b):  # float32 results: a few ulp (1 ulp = 6e-8 relative) from shape-dependent vectorisation
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            x, y = np.asarray(x), np.asarray(y)
            assert x.shape == y.shape and x.dtype == y.dtype, (x.shape, y.shape, x.dtype, y.dtype)
            np.testing.assert_allclose(x, y, rtol=5e-7, atol=1e-7)
    """
)

MULTI_DEVICE_SCRIPT = COMMON + textwrap.dedent(
    """
    import sys
    from surrinf.distributed import device_mesh, sharded_map, sharded_pseudo_experiments, sharded_sample
    from surrinf._xla import CPU_COMPILER_OPTIONS

    assert len(jax.devices()) == 4, jax.devices()
    one = jax.devices()[:1]
    assert device_mesh().shape == {"batch": 4}

    # sharded_map == compiled vmap on one device; 1001 rows (not divisible by 4), with and without batching
    # (the reference is jitted: op-by-op vmap is unfused and differs from any compiled run in the last bits)
    xs = rows(1001)
    ref = sharded_map(solve_row, xs, devices=one)
    close(sharded_map(solve_row, xs), ref)
    close(sharded_map(solve_row, xs, batch_size=250), ref)
    # (single-threaded Eigen like the library's toy loops: a multi-threaded batched solve can deadlock XLA CPU)
    close(ref, jax.jit(jax.vmap(solve_row), compiler_options=CPU_COMPILER_OPTIONS)(jax.device_put(xs, one[0])))

    # 1000 Poisson toys + closed-form MLE: same as the single-device vmap over the same keys
    key = jax.random.key(7)
    idx = jax.device_put(jnp.arange(1000, dtype=jnp.uint32), one[0])
    ref = jax.jit(jax.vmap(lambda i: poisson_toy(jax.random.fold_in(key, i))))(idx)
    four = sharded_pseudo_experiments(key, 1000, poisson_toy)
    # the Poisson draws are bitwise equal (keys depend on the toy index only); XLA CPU picks shape-dependent
    # vectorisation for the float reductions (1-ulp differences seen in the nll between 256- and 1008-row shards)
    other = sharded_pseudo_experiments(key, 1000, poisson_toy, devices=one, batch_size=300)
    bitwise(other["counts"], four["counts"])
    close(other, four)
    bitwise(four["counts"], ref["counts"])  # integer draws: the keys depend on the toy index only
    close(four, ref)
    legacy = [sharded_pseudo_experiments(jax.random.PRNGKey(7), 10, poisson_toy, devices=d) for d in (None, one)]
    bitwise(legacy[0]["counts"], legacy[1]["counts"])  # raw uint32 keys work as well
    close(*legacy)
    np.testing.assert_allclose(four["yield"].mean(), float(MU.sum()), rtol=0.02)

    # sharded sampling: equal to the one-device result and to generate() on the per-row noise
    gen = Gen(eqx.nn.MLP(5, 3, 16, 2, key=jax.random.key(0)))
    cond = np.exp(np.random.default_rng(1).uniform(np.log(5), np.log(50), 999)).astype(np.float32)
    skey = jax.random.key(3)
    s4 = sharded_sample(gen, skey, cond, batch_size=128)
    s1 = sharded_sample(gen, skey, cond, devices=one)
    close(s4, s1)
    close(sharded_sample(gen, skey, cond), s1)
    noise = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(skey, i), (4,)))(jnp.arange(999, dtype=jnp.uint32))
    np.testing.assert_allclose(s4, np.asarray(gen.generate(noise, cond)), rtol=1e-6, atol=1e-6)
    assert s4.shape == (999, 3) and np.isfinite(s4).all()
    print("ok")
    """
)


def test_four_devices_match_single_device(run_with_cpu_devices):
    out = run_with_cpu_devices(MULTI_DEVICE_SCRIPT, 4)
    assert out.strip().splitlines()[-1] == "ok", out[-2000:]


# --- in-process: this process has whatever devices JAX started with (1 CPU device in the test suite)

namespace: dict = {}
exec(COMMON, namespace)


def test_single_device_paths_match_vmap():
    xs = namespace["rows"](37)
    ref = jax.jit(jax.vmap(namespace["solve_row"]))(xs)
    got = sharded_map(namespace["solve_row"], xs, devices=jax.devices()[:1], batch_size=10)
    namespace["close"](got, sharded_map(namespace["solve_row"], xs, devices=jax.devices()[:1]))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(a, np.asarray(b), rtol=3e-7, atol=0)
    key = jax.random.key(1)
    toy = namespace["poisson_toy"]
    ref = jax.jit(jax.vmap(lambda i: toy(jax.random.fold_in(key, i))))(jnp.arange(50, dtype=jnp.uint32))
    got = sharded_pseudo_experiments(key, 50, toy, devices=jax.devices()[:1], batch_size=7)
    namespace["bitwise"](got["counts"], ref["counts"])
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(a, np.asarray(b), rtol=3e-7, atol=0)
    gen = namespace["Gen"](eqx.nn.MLP(5, 2, 8, 1, key=jax.random.key(0)))
    cond = np.linspace(5, 50, 21, dtype=np.float32)
    a = sharded_sample(gen, key, cond, batch_size=8)
    namespace["bitwise"](a, sharded_sample(gen.generate, key, cond, latent_dim=4, batch_size=8))
    assert a.shape == (21, 2)


def test_empty_inputs_keep_shapes():
    out = sharded_map(lambda r: {"s": r.sum(), "v": r * 2}, np.zeros((0, 3), np.float32))
    assert out["s"].shape == (0,) and out["v"].shape == (0, 3)
    toys = sharded_pseudo_experiments(jax.random.key(0), 0, lambda k: jax.random.normal(k, (2,)))
    assert toys.shape == (0, 2)


@pytest.mark.parametrize(
    ("call", "word"),
    [
        (lambda: device_mesh([]), "devices"),
        (lambda: device_mesh(axis=""), "axis"),
        (lambda: sharded_map(lambda r: r, np.ones((4, 2)), batch_size=0), "batch_size"),
        (lambda: sharded_map(lambda r: r, np.ones((4, 2)), batch_size=2.5), "batch_size"),
        (lambda: sharded_map(lambda r: r, (np.ones((4, 2)), np.ones(3))), "xs"),
        (lambda: sharded_map(lambda r: r, np.float32(1.0)), "xs"),
        (lambda: sharded_map(lambda r: r, {}), "xs"),
        (lambda: sharded_map("not a function", np.ones(3)), "fn"),
        (lambda: sharded_pseudo_experiments(jax.random.key(0), -1, lambda k: k), "n"),
        (lambda: sharded_pseudo_experiments(jax.random.key(0), 2.0, lambda k: k), "n"),
        (lambda: sharded_pseudo_experiments(jax.random.key(0), 3, None), "simulate_and_fit"),
        (lambda: sharded_sample(lambda z, c: z, jax.random.key(0), np.ones(3)), "latent_dim"),
        (lambda: sharded_sample(lambda z, c: z, jax.random.key(0), np.ones(3), latent_dim=0), "latent_dim"),
        (lambda: sharded_sample(object(), jax.random.key(0), np.ones(3)), "model"),
        (lambda: sharded_sample(lambda z, c: z, jax.random.key(0), np.ones(()), latent_dim=2), "conditions"),
    ],
)
def test_bad_inputs_raise_value_error_naming_argument(call, word):
    with pytest.raises(ValueError, match=word):
        call()
