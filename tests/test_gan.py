"""GANSurrogate (conditional WGAN-GP): gradient penalty, the combined loss and its n_critic optimiser, learning
on a toy conditional target, and the shower surrogate (fit, samples, save/load, no log_prob, bitwise resume)."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from surrinf.data import ShowerBijection
from surrinf.data.geometry import Geometry
from surrinf.generators import load, save, trainer
from surrinf.generators.base import ConditionEncoder, ShowerPreprocessor
from surrinf.generators.gan import (
    GAN_RECORD_FILE,
    GANSurrogate,
    gan_config,
    gan_loss,
    gan_optimizer,
    gradient_penalty,
)
from surrinf.generators.physics import EnergyConsistency
from surrinf.generators.serialization import load_checkpoint
from surrinf.generators.trainer import TrainConfig, train

SMALL = {"latent": 4, "hidden_generator": [32, 32], "hidden_critic": [32, 32]}


def toy_preprocessor(n_voxels: int) -> ShowerPreprocessor:
    """An identity-standardised preprocessor of a one-layer geometry with ``n_voxels`` radial bins (the toy
    tests work in the standardised space directly; the geometry only fixes V)."""
    r = np.concatenate([np.arange(n_voxels, dtype=float) * 5.0, [np.inf]])
    geo = Geometry("toy", np.array([0.0, 10.0]), (r,), (1,))
    return ShowerPreprocessor.skeleton(ShowerBijection(geo).to_dict())


def toy_model(key, config=None, energy_consistency=None, n_voxels: int = 2) -> GANSurrogate:
    return GANSurrogate(
        key, toy_preprocessor(n_voxels), ConditionEncoder(), {**SMALL, **(config or {})}, energy_consistency
    )


def leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(tree, eqx.is_array))]


def assert_bitwise(a, b) -> None:
    la, lb = leaves(a), leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y)


def changed(a, b) -> bool:
    """Whether any array leaf of a differs from the one of b."""
    return any(not np.array_equal(x, y) for x, y in zip(leaves(a), leaves(b), strict=True))


# ------------------------------------------------------------------------------------------- gradient penalty


def test_gradient_penalty_on_critics_with_known_gradients():
    rng = np.random.default_rng(0)
    real, fake = (jnp.asarray(rng.normal(size=(64, 2)), jnp.float32) for _ in range(2))
    cond = jnp.zeros((64, 1))
    key = jax.random.key(0)
    # linear critic D = w.x + b: grad_x D = w at every interpolate, so GP = lambda (|w| - 1)^2 exactly
    # (up to the 1e-12 under the square root: relative 1e-13 here, far below float32 rounding)
    w = jnp.array([3.0, 4.0])
    gp = gradient_penalty(lambda x, c: w @ x + 0.5, real, fake, cond, key, 10.0)
    np.testing.assert_allclose(float(gp), 10.0 * (5.0 - 1.0) ** 2, rtol=1e-6)
    # its derivative in the critic parameters (double backprop): d/dw lambda (|w| - 1)^2 = 2 lambda (|w| - 1) w / |w|
    dw = jax.grad(lambda w: gradient_penalty(lambda x, c: w @ x, real, fake, cond, key, 10.0))(w)
    np.testing.assert_allclose(np.asarray(dw), 2 * 10.0 * 4.0 * np.array([3.0, 4.0]) / 5.0, rtol=1e-5)
    # quadratic critic D = a/2 |x|^2 with real = fake: the interpolate is that row, |grad| = a |x_n| per row,
    # so GP = lambda mean_n (a |x_n| - 1)^2 (a per-sample norm, averaged over the batch)
    gp2 = gradient_penalty(lambda x, c: 0.35 * jnp.sum(x * x), real, real, cond, key, 2.0)
    expect = 2.0 * np.mean((0.7 * np.linalg.norm(np.asarray(real), axis=1) - 1.0) ** 2)
    np.testing.assert_allclose(float(gp2), expect, rtol=1e-5)
    # a critic with unit gradient norm everywhere is not penalised
    assert float(gradient_penalty(lambda x, c: x @ jnp.array([0.6, 0.8]), real, fake, cond, key, 10.0)) < 1e-5


# ------------------------------------------------------------------------------------------- loss and optimiser


def _batch(n: int = 64, seed: int = 0) -> dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    return {
        "x": jnp.asarray(rng.normal(1.0, 0.5, size=(n, 2)), jnp.float32),
        "cond": jnp.asarray(rng.uniform(-1, 1, size=(n, 1)), jnp.float32),
        "energy": jnp.asarray(rng.uniform(5, 50, size=n), jnp.float32),
    }


def test_combined_loss_routes_each_gradient_to_its_network():
    ec = EnergyConsistency([0.1, 0.02], lam=0.5, learnable=True)
    model, batch, key = toy_model(jax.random.key(1), energy_consistency=ec), _batch(), jax.random.key(2)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    value_and_grad = eqx.filter_jit(
        eqx.filter_value_and_grad(lambda p: gan_loss(eqx.combine(p, static), batch, key), has_aux=True)
    )
    (value, aux), grads = value_and_grad(params)
    # the same noise and interpolation draws as gan_loss
    k_z, k_gp = jax.random.split(key)
    z = jax.random.normal(k_z, (64, model.latent))

    def critic_loss(critic):
        fake = model.decode(z, batch["cond"])
        score = lambda x: jax.vmap(critic)(x, batch["cond"])[:, 0]
        gp = gradient_penalty(lambda x, c: critic(x, c)[0], batch["x"], fake, batch["cond"], k_gp, model.lambda_gp)
        return jnp.mean(score(fake)) - jnp.mean(score(batch["x"])) + gp

    def generator_loss(gen_and_ec):
        gen, energy_consistency = gen_and_ec
        fake = jax.vmap(gen)(z, batch["cond"])
        showers = model.preprocessor.inverse(fake, batch["energy"])
        return -jnp.mean(model.score(fake, batch["cond"])) + energy_consistency.penalty(showers, batch["energy"])

    c_val, c_grad = eqx.filter_jit(eqx.filter_value_and_grad(critic_loss))(model.critic)
    g_grad = eqx.filter_jit(eqx.filter_grad(generator_loss))((model.generator, model.energy_consistency))
    for got, want in zip(leaves(grads.critic), leaves(c_grad), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    for got, want in zip(leaves((grads.generator, grads.energy_consistency)), leaves(g_grad), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # the statistics of the preprocessing are not trained
    assert all(np.all(g == 0) for g in leaves((grads.preprocessor, grads.encoder)))
    # value: the critic loss GP - W
    np.testing.assert_allclose(float(value), float(c_val), rtol=1e-6)
    np.testing.assert_allclose(float(value), float(aux["gp"] - aux["wasserstein"]), rtol=1e-5, atol=1e-6)
    assert set(aux) == {"wasserstein", "gp", "d_real", "d_fake", "energy_penalty"}


def test_optimizer_updates_critic_every_step_and_generator_every_n_critic_steps():
    cfg = {**SMALL, "n_critic": 3, "learning_rate_generator": 1e-2, "learning_rate_critic": 1e-2, "betas": [0.5, 0.9]}
    ec = EnergyConsistency([0.1, 0.02], learnable=True)
    model = toy_model(jax.random.key(3), cfg, ec)
    opt = gan_optimizer(model.gan_config())
    params, static = eqx.partition(model, eqx.is_inexact_array)
    state = opt.init(params)

    @eqx.filter_jit
    def step(params, state, batch, key):
        grads = eqx.filter_grad(lambda q: gan_loss(eqx.combine(q, static), batch, key)[0])(params)
        updates, state = opt.update(grads, state, params)
        return eqx.apply_updates(params, updates), state, grads

    gen_grads = []
    for s in range(7):
        new, state, grads = step(params, state, _batch(seed=s), jax.random.key(10 + s))
        gen_grads.append((grads.generator, grads.energy_consistency))
        assert changed(new.critic, params.critic), s  # every step
        gen_step = s % 3 == 2  # steps 2 and 5 (0-based): after every third critic update
        assert changed(new.generator, params.generator) == gen_step, s
        assert changed(new.energy_consistency, params.energy_consistency) == gen_step, s  # trained with G
        assert not changed((new.preprocessor, new.encoder), (params.preprocessor, params.encoder)), s
        if s == 2:
            # the first generator step is Adam on the mean of the three accumulated generator gradients
            mean = jax.tree.map(lambda *g: sum(g) / 3, *gen_grads)
            adam = optax.adam(1e-2, b1=0.5, b2=0.9)
            expect, _ = adam.update(mean, adam.init(mean))
            got = jax.tree.map(
                lambda a, b: a - b,
                (new.generator, new.energy_consistency),
                (params.generator, params.energy_consistency),
            )
            for g, e in zip(leaves(got), leaves(expect), strict=True):
                np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-7)
        params = new


def test_gan_config_validation():
    assert gan_config() == gan_config(gan_config())  # defaults are valid and normalised
    with pytest.raises(ValueError, match="unknown gan_config keys"):
        gan_config({"n_critics": 5})
    with pytest.raises(ValueError, match="n_critic"):
        gan_config({"n_critic": 0})
    with pytest.raises(ValueError, match="betas"):
        gan_config({"betas": [0.5]})
    with pytest.raises(ValueError, match="learning_rate_critic"):
        gan_config({"learning_rate_critic": -1.0})
    with pytest.raises(ValueError, match="hidden_generator"):
        gan_config({"hidden_generator": []})


# ------------------------------------------------------------------------------------------- toy conditional target

TOY_MU0, TOY_SLOPE, TOY_S0, TOY_S1 = np.array([1.0, -1.0]), np.array([0.5, 0.5]), 0.5, 0.2


def toy_target(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x | c ~ N(mu0 + slope c, (s0 + s1 c)^2) per dimension, c in [-1, 1]: mean (N, 2), std (N, 2)."""
    return TOY_MU0 + TOY_SLOPE * c[:, None], np.broadcast_to(TOY_S0 + TOY_S1 * c[:, None], (c.size, 2))


def toy_w2(model: GANSurrogate, c_value: float) -> float:
    """2-Wasserstein distance between the Gaussians with the generated and the target mean / std at c
    (diagonal: sqrt(|d mean|^2 + |d std|^2)), from 4000 generated samples."""
    g = np.asarray(
        model.decode(jax.random.normal(jax.random.key(5), (4000, model.latent)), jnp.full((4000, 1), c_value))
    )
    mu, sd = toy_target(np.array([c_value]))
    return float(np.sqrt(np.sum((g.mean(0) - mu[0]) ** 2) + np.sum((g.std(0) - sd[0]) ** 2)))


def test_training_moves_a_toy_conditional_gan_toward_the_target():
    rng = np.random.default_rng(0)
    c = rng.uniform(-1, 1, 4096).astype(np.float32)
    mu, sd = toy_target(c)
    data = {"x": (mu + sd * rng.standard_normal((4096, 2))).astype(np.float32), "cond": c[:, None]}
    # a faster critic than generator (two time-scale rule) keeps the toy dynamics smooth
    cfg = {
        "latent": 2,
        "n_critic": 5,
        "learning_rate_generator": 3e-4,
        "learning_rate_critic": 2e-3,
        "betas": [0.0, 0.9],
    }
    model = toy_model(jax.random.key(0), cfg)
    res = train(
        model,
        gan_loss,
        data,
        jax.random.key(100),
        TrainConfig(batch_size=256, max_steps=1000, val_fraction=0.0, log_every=100, checkpoint_every=0),
        optimizer=gan_optimizer(model.gan_config()),
        progress=False,
    )
    # The fresh generator is off by W2 ~ 1.5 at c = -0.75 and +0.75 (mean offset ~1.4, std ~0.6 vs 0.35 / 0.65).
    # With this config, 1000 steps (200 generator updates) left 0.12-0.51 of the initial distance in 12 runs
    # (6 seeds x Adam b1 in {0, 0.5}); GAN training oscillates, so we require < 0.65 (a clear move toward the
    # target, not convergence). The 4000-sample noise on the estimated mean / std is ~0.01.
    for c_value in (-0.75, 0.75):
        before, after = toy_w2(model, c_value), toy_w2(res.model, c_value)
        assert before > 1.0 and after < 0.65 * before, (c_value, before, after)
    assert {"train_wasserstein", "train_gp", "train_d_real", "train_d_fake"} <= set(res.history[0])


# ------------------------------------------------------------------------------------------- shower surrogate


@pytest.fixture(scope="module")
def showers(tiny_showers):
    """The 12-voxel geometry and 3000 simulated W/Si showers of 5-50 GeV (conftest)."""
    return tiny_showers


def test_shower_gan_fits_samples_saves_and_has_no_log_prob(showers, tmp_path):
    geo, sh, energies = showers
    # patience and the default cosine schedule / clipping do not apply to the GAN: fit warns and ignores them
    cfg = TrainConfig(batch_size=128, max_steps=200, learning_rate=1e-3, eval_every=50, log_every=50, patience=1)
    gcfg = {**SMALL, "learning_rate_generator": 3e-4}  # the critic takes TrainConfig.learning_rate
    with pytest.warns(UserWarning) as warned:
        sur, res = GANSurrogate.fit(
            jax.random.key(1),
            sh,
            energies,
            ShowerBijection(geo),
            gan_config=gcfg,
            train_config=cfg,
            out_dir=tmp_path / "run",
        )
    messages = " ".join(str(w.message) for w in warned)
    assert "patience" in messages and "['schedule', 'grad_clip'] do not apply" in messages
    assert (sur.learning_rate_generator, sur.learning_rate_critic) == (3e-4, 1e-3)
    # no early stopping, and the model is the final one (the trainer's last checkpoint), not the best-validation one
    assert res.steps_run == 200 and not res.stopped_early and res.model is sur
    params = eqx.filter(sur, eqx.is_inexact_array)
    like = trainer._checkpoint_like(params, gan_optimizer(sur.gan_config()).init(params), jax.random.key(0))
    # (the stored key is not compared: only the params leaf matters here)
    tree, step, _ = load_checkpoint(tmp_path / "run" / trainer.CHECKPOINT_DIR, like)
    assert step == 200
    assert_bitwise(eqx.filter(sur, eqx.is_inexact_array), tree["params"])
    assert {"val_loss", "val_wasserstein", "val_gp"} <= set(res.history[0])

    cond = jnp.exp(jnp.linspace(jnp.log(5.0), jnp.log(50.0), 64))
    gen = np.asarray(sur.sample(jax.random.key(3), cond))
    assert gen.shape == (64, geo.n_voxels) and np.all(np.isfinite(gen)) and np.all(gen >= 0)
    path = save(sur, tmp_path / "model", sur.config())
    again, info = load(path)
    assert info["model_type"] == "gan_surrogate"
    assert np.array_equal(np.asarray(again.sample(jax.random.key(3), cond)), gen)
    with pytest.raises(NotImplementedError, match="no tractable likelihood"):
        sur.log_prob(gen, cond)


def test_shower_gan_resume_is_bitwise_identical(showers, tmp_path):
    geo, sh, energies = showers
    sh, energies = sh[:600], energies[:600]
    ec = EnergyConsistency.fit_reference(energies, sh.sum(1), lam=0.1, learnable=True)
    # n_critic = 3: the checkpoint at step 10 is in the middle of a generator accumulation (MultiSteps state)
    gcfg = {**SMALL, "n_critic": 3, "learning_rate_generator": 1e-3, "learning_rate_critic": 1e-3}
    cfg = TrainConfig(
        batch_size=64,
        max_steps=20,
        schedule="constant",
        grad_clip=None,
        val_fraction=0.0,  # (the validation pass and its resume are covered in test_trainer.py; saves a compile)
        log_every=5,
        checkpoint_every=10,
    )

    def fit(out, train_config, resume=False, gan_cfg=gcfg):
        return GANSurrogate.fit(  # every fit call compiles its train step anew (~4 s)
            jax.random.key(4),
            sh,
            energies,
            ShowerBijection(geo),
            gan_config=gan_cfg,
            energy_consistency=ec,
            train_config=train_config,
            out_dir=out,
            resume=resume,
        )

    full, res_full = fit(None, cfg)  # (in a temporary directory)
    fit(tmp_path / "split", dataclasses.replace(cfg, max_steps=10))  # "interrupted" after the checkpoint at 10
    with pytest.raises(ValueError, match="n_critic"):  # not covered by the trainer's own resume check
        fit(tmp_path / "split", cfg, resume=True, gan_cfg={**gcfg, "n_critic": 2})
    resumed, res_resumed = fit(tmp_path / "split", cfg, resume=True)
    assert res_resumed.steps_run == 20
    assert_bitwise(resumed, full)
    strip = lambda h: [{k: v for k, v in r.items() if k != "wall_time"} for r in h]
    assert strip(res_resumed.history) == strip(res_full.history)
    assert "train_energy_penalty" in res_full.history[0]
    assert (tmp_path / "split" / GAN_RECORD_FILE).is_file()
