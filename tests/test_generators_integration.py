"""The generator pieces together: simulator -> FlowSurrogate.fit (ShowerBijection, Standardize, coupling
flow, trainer) -> response protocol -> save/load -> identical samples."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from surrinf.data import ShowerBijection
from surrinf.generators import FlowSurrogate, TrainConfig, load, save
from surrinf.response import ResponseModel
from surrinf.sim import calorimeter


def test_flow_surrogate_trains_samples_saves_and_reloads(tmp_path, tiny_showers):
    # a small unbounded-radius geometry (4 layers x 3 radial bins, conftest) keeps the test fast
    geo, showers, energies = tiny_showers
    cal = calorimeter(geo, "W/Si")
    cfg = TrainConfig(batch_size=256, max_steps=300, learning_rate=2e-3, eval_every=150, log_every=100)
    sur, res = FlowSurrogate.fit(
        jax.random.key(1),
        showers,
        energies,
        ShowerBijection(geo),
        flow_config={"n_layers": 3, "hidden": [32]},  # both blocks of the default two-stage flow
        train_config=cfg,
        out_dir=tmp_path / "train",
    )
    assert isinstance(sur, ResponseModel)
    history = [h["train_loss"] for h in res.history if "train_loss" in h]
    assert history[-1] < history[0] - 1.0  # it learns (nats per shower)
    # exact densities in voxel space: finite on reference showers, and higher for them than for showers
    # whose energy is scaled by 3 (far off the learnt response)
    lp = np.asarray(sur.log_prob(showers[:500], energies[:500]))
    lp_off = np.asarray(sur.log_prob(3.0 * showers[:500], energies[:500]))
    assert np.all(np.isfinite(lp)) and np.median(lp) > np.median(lp_off) + 5.0
    path = save(sur, tmp_path / "model", sur.config())
    again, info = load(path)
    assert info["model_type"] == "flow_surrogate"
    cond = jnp.full((64,), 20.0)
    a, b = sur.sample(jax.random.key(3), cond), again.sample(jax.random.key(3), cond)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    gen = np.asarray(b)
    assert gen.shape == (64, geo.n_voxels) and np.all(gen >= 0) and np.all(np.isfinite(gen))
    # the visible energy of generated showers is in the right range (a few per cent of 20 GeV)
    ratio = np.median(gen.sum(1) / 20.0)
    assert 0.5 * cal.material.sampling_fraction < ratio < 2.0 * cal.material.sampling_fraction, ratio


def test_flow_surrogate_conditioned_on_theta(tiny_showers):
    # theta-conditioned path: conditions (N, 1 + k); the encoder standardises theta with the training moments
    geo, showers, energies = tiny_showers
    theta = np.random.default_rng(1).normal([1.0, 0.2], [0.02, 0.05], (energies.size, 2)).astype(np.float32)
    cfg = TrainConfig(batch_size=256, max_steps=20, learning_rate=2e-3, log_every=10, val_fraction=0.0)
    sur, _ = FlowSurrogate.fit(
        jax.random.key(1),
        showers,
        energies,
        ShowerBijection(geo),
        theta=theta,
        flow_config={"type": "coupling", "n_layers": 1, "hidden": [8]},  # the conditioning path is the point
        train_config=cfg,
    )
    assert sur.n_theta == 2
    np.testing.assert_allclose(np.asarray(sur.encoder.theta_mean), theta.mean(0), rtol=1e-5)
    cond = np.concatenate([energies[:32, None], theta[:32]], axis=1)
    gen = np.asarray(sur.sample(jax.random.key(2), cond))
    assert gen.shape == (32, geo.n_voxels) and np.all(gen >= 0) and np.all(np.isfinite(gen))
    assert np.all(np.isfinite(np.asarray(sur.log_prob(showers[:32], cond))))
    # theta changes the density (FiLM sees it); energy-only conditions are rejected with a clear message
    shifted = cond + np.array([0.0, 0.1, 0.2], np.float32)
    assert not np.allclose(
        np.asarray(sur.log_prob(showers[:32], shifted)), np.asarray(sur.log_prob(showers[:32], cond))
    )
    with pytest.raises(ValueError, match="theta"):
        sur.sample(jax.random.key(2), energies[:32])
