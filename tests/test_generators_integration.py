"""The generator pieces together: simulator -> ShowerBijection -> conditional coupling flow trained with
the trainer -> save/load -> identical samples -> showers in GeV."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from surrinf.data import ShowerBijection, Standardize
from surrinf.data.geometry import Geometry
from surrinf.generators import CouplingFlow, TrainConfig, encode_conditions, flow_loss, load, save, train
from surrinf.sim import calorimeter


def test_flow_on_showers_trains_saves_and_reloads(tmp_path):
    # a small unbounded-radius geometry (4 layers x 3 radial bins) keeps the test fast
    r = np.array([0.0, 5.0, 15.0, np.inf])
    geo = Geometry("tiny", np.array([0.0, 12.0, 24.0, 36.0, 60.0]), (r,) * 4, (1,) * 4)
    cal = calorimeter(geo, "W/Si")
    energies = np.exp(np.random.default_rng(0).uniform(np.log(5.0), np.log(50.0), 3000)).astype(np.float32)
    showers = cal.simulate(jax.random.key(0), energies).showers
    bij = ShowerBijection(geo)
    z_raw, _ = bij.forward(showers, energies)
    std = Standardize.fit(z_raw)  # the spline acts on [-5, 5]: standardise first
    z = std.forward(z_raw)
    cond = encode_conditions(energies)
    data = {"x": np.asarray(z), "cond": np.asarray(cond)}
    flow = CouplingFlow(jax.random.key(1), dim=geo.n_voxels, cond_dim=1, n_layers=4, hidden=(32, 32))
    nll0 = float(flow_loss(flow, {"x": jnp.asarray(z), "cond": cond}))
    cfg = TrainConfig(batch_size=256, max_steps=300, learning_rate=2e-3, eval_every=100, log_every=100)
    res = train(flow, flow_loss, data, jax.random.key(2), cfg, out_dir=tmp_path / "train", progress=False)
    nll1 = float(flow_loss(res.model, {"x": jnp.asarray(z), "cond": cond}))
    assert nll1 < nll0 - 1.0  # it learns (nats per shower)
    meta = {"preprocessing": bij.to_dict(), "standardize": std.to_dict()}
    path = save(res.model, tmp_path / "model", res.model.config(), metadata=meta)
    again, info = load(path)
    assert info["model_type"] == "coupling_flow" and info["metadata"]["preprocessing"]["type"] == "ShowerBijection"
    c_new = encode_conditions(jnp.full((64,), 20.0))
    a = res.model.sample(jax.random.key(3), c_new)
    b = again.sample(jax.random.key(3), c_new)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    z_gen = Standardize.from_dict(info["metadata"]["standardize"]).inverse(b)
    gen = np.asarray(ShowerBijection.from_dict(info["metadata"]["preprocessing"]).inverse(z_gen, jnp.full((64,), 20.0)))
    assert gen.shape == (64, geo.n_voxels) and np.all(gen >= 0) and np.all(np.isfinite(gen))
    # the visible energy of generated showers is in the right range (a few per cent of 20 GeV)
    ratio = gen.sum(1) / 20.0
    assert 0.3 * cal.material.sampling_fraction < np.median(ratio) < 3 * cal.material.sampling_fraction
