"""One-hot binned energy conditioning (ConditionEncoder / prepare_training_data / VAESurrogate) and the summary of
studies/extrapolation.py: bins and clamping, the unchanged continuous default, a one-hot VAE save/load round trip,
bad edges, and the below / inside / above aggregation of the calibration error."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from surrinf.data import Geometry, ShowerBijection
from surrinf.generators.base import ConditionEncoder, prepare_training_data
from surrinf.generators.conditioning import LN_E_CENTRE, LN_E_HALF_RANGE, encode_conditions, one_hot_energy
from surrinf.generators.serialization import load, save
from surrinf.generators.trainer import TrainConfig
from surrinf.generators.vae import VAESurrogate

EDGES = (10.0, 20.0, 50.0, 100.0)  # 3 bins [GeV]
STUDY = Path(__file__).resolve().parents[1] / "studies" / "extrapolation.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("_study_extrapolation", STUDY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def toy():
    """(bijection, showers (256, 12) [GeV], energies (256,) [GeV] log-uniform 5-50 GeV): 4 layers x 3 radial bins
    with Gamma-distributed voxel energies (the encoding and save/load do not need simulated physics)."""
    r = np.array([0.0, 5.0, 15.0, np.inf])
    geo = Geometry("toy", np.array([0.0, 12.0, 24.0, 36.0, 60.0]), (r,) * 4, (1,) * 4)
    rng = np.random.default_rng(0)
    energies = np.exp(rng.uniform(np.log(5.0), np.log(50.0), 256)).astype(np.float32)
    showers = (rng.gamma(2.0, 1.0, (256, 12)) * energies[:, None] / 24.0).astype(np.float32)
    return ShowerBijection(geo), showers, energies


@pytest.fixture(scope="module")
def onehot_vae(toy, tmp_path_factory):
    """A tiny VAE conditioned on one-hot energy bins (edges 10, 20, 40 GeV) built through ``VAESurrogate.fit``
    (0 steps: the plumbing, not the training, is under test), with random decoder FiLM weights so that the
    decoder depends on the condition (FiLM starts as the identity)."""
    bij, showers, energies = toy
    model, _ = VAESurrogate.fit(
        jax.random.key(3),
        showers,
        energies,
        bij,
        vae_config={"latent": 6, "hidden": [12]},  # few distinct shapes: fewer eager compilations
        energy_bin_edges_gev=[10.0, 20.0, 40.0],
        train_config=TrainConfig(batch_size=64, max_steps=0, val_fraction=0.0, checkpoint_every=0),
        out_dir=tmp_path_factory.mktemp("onehot"),
    )
    films = model.decoder_net.films
    keys = jax.random.split(jax.random.key(4), len(films))
    new = [0.5 * jax.random.normal(k, f.linear.weight.shape) for k, f in zip(keys, films, strict=True)]
    return eqx.tree_at(lambda m: [f.linear.weight for f in m.decoder_net.films], model, new)


@eqx.filter_jit
def _decoder_mean(model: VAESurrogate, z: jax.Array, energies: jax.Array) -> jax.Array:
    return model.decoder_mean(z, model.encoder(energies))


def test_one_hot_bins_clamping_and_width():
    # [edges[k], edges[k + 1]) bins; below the first edge -> bin 0, at or above the last edge -> bin K - 1
    e = np.array([1.0, 10.0, 15.0, 19.999, 20.0, 49.9, 50.0, 99.0, 100.0, 1e4], dtype=np.float32)
    want = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    np.testing.assert_array_equal(np.asarray(one_hot_energy(e, EDGES)), np.eye(3, dtype=np.float32)[want])
    enc = ConditionEncoder([0.5], [2.0], energy_bin_edges_gev=list(EDGES))
    assert (enc.n_energy, enc.dim, enc.n_columns) == (3, 4, 2)
    c = np.stack([e, np.full(e.size, 1.5, np.float32)], axis=1)
    out = np.asarray(enc(c))
    assert out.shape == (e.size, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, :3], np.eye(3, dtype=np.float32)[want])
    np.testing.assert_array_equal(out[:, 3], np.full(e.size, 0.5, np.float32))  # (1.5 - 0.5) / 2
    # the raw conditions still need E + n_theta columns only, not the encoding width
    with pytest.raises(ValueError, match="k >= 2 columns"):
        enc(e)


def test_continuous_default_unchanged():
    enc = ConditionEncoder([0.5], [2.0])
    assert enc.energy_bin_edges_gev is None and (enc.n_energy, enc.dim) == (1, 2)
    c = jnp.asarray(np.stack([np.geomspace(0.5, 2000.0, 40), np.linspace(-1, 3, 40)], 1), dtype=jnp.float32)
    # the encoding as it was before one-hot conditioning existed, bit for bit
    before = jnp.concatenate([(jnp.log(c[:, :1]) - LN_E_CENTRE) / LN_E_HALF_RANGE, (c[:, 1:] - 0.5) / 2.0], axis=1)
    assert np.asarray(enc(c)).tobytes() == np.asarray(before).tobytes()
    assert np.asarray(encode_conditions(c, 1, enc.theta_mean, enc.theta_std)).tobytes() == np.asarray(before).tobytes()


def test_prepare_training_data_one_hot(toy):
    bij, showers, energies = toy
    _, enc, data = prepare_training_data(bij, showers, energies, energy_bin_edges_gev=EDGES)
    assert enc.energy_bin_edges_gev == EDGES and data["cond"].shape == (energies.size, 3)
    np.testing.assert_array_equal(data["cond"], np.asarray(one_hot_energy(energies, EDGES)))
    with pytest.raises(ValueError, match="strictly increasing"):
        prepare_training_data(bij, showers, energies, energy_bin_edges_gev=EDGES[::-1])


@pytest.mark.parametrize(
    "edges, match",
    [
        ([10.0, 20.0], "at least 2 bins"),
        ([10.0, 30.0, 20.0], "strictly increasing"),
        ([10.0, 10.0, 20.0], "strictly increasing"),
        ([0.0, 10.0, 20.0], "> 0"),
        ([1.0, np.nan, 20.0], "finite"),
        ([[1.0, 2.0, 3.0]], "1-d"),
        ("abc", "1-d"),
    ],
)
def test_bad_edges_raise(edges, match):
    with pytest.raises(ValueError, match=match):
        ConditionEncoder(energy_bin_edges_gev=edges)


def test_one_hot_vae_round_trip(onehot_vae, tmp_path):
    model = onehot_vae
    assert model.encoder.energy_bin_edges_gev == (10.0, 20.0, 40.0)
    assert model.config()["energy_bin_edges_gev"] == [10.0, 20.0, 40.0]
    assert model.decoder_net.films[0].linear.weight.shape[1] == 2  # FiLM sees the K = 2 one-hot columns
    save(model, tmp_path / "m", model.config())
    loaded, _ = load(tmp_path / "m")
    assert loaded.encoder.energy_bin_edges_gev == model.encoder.energy_bin_edges_gev
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(model)
    for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(model), strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    # outside the edges the decoder sees the edge bin: standardised outputs at 1 (500) GeV equal those at 10 (40)
    # GeV, while the two bins give different outputs (the condition does reach the decoder)
    z = jnp.tile(jax.random.normal(jax.random.key(0), (1, model.latent)), (4, 1))
    e = np.array([1.0, 500.0, 10.0, 40.0], dtype=np.float32)
    out = np.asarray(_decoder_mean(loaded, z, e))
    assert out[:2].tobytes() == out[2:].tobytes()
    assert np.max(np.abs(out[2] - out[3])) > 1e-3
    # the continuous default keeps its config (no new key): existing saved models are unaffected
    cont = eqx.tree_at(lambda m: m.encoder, model, ConditionEncoder())
    assert "energy_bin_edges_gev" not in cont.config()


def test_region_summary(study):
    edges = np.geomspace(1.0, 1000.0, 13)  # 12 bins, 4 per region for a 10-100 GeV training range
    ce = np.array([0.10, 0.08, 0.06, 0.04, 0.01, 0.02, 0.01, 0.02, 0.03, 0.05, np.nan, 0.07])
    err = np.full(12, 0.002)
    ratio = np.array([2.0] * 4 + [1.0] * 4 + [1.5] * 4)
    s = study.region_summary(edges, ce, err, ratio, np.full(12, 0.1), (10.0, 100.0))
    assert [s[r]["n_bins"] for r in ("below", "inside", "above")] == [4, 4, 3]  # the NaN bin is skipped
    assert s["below"]["rel_ce"] == pytest.approx(0.07) and s["below"]["max_rel_ce"] == pytest.approx(0.10)
    assert s["inside"]["rel_ce"] == pytest.approx(0.015)
    assert s["above"]["rel_ce"] == pytest.approx(0.05) and s["above"]["max_rel_ce"] == pytest.approx(0.07)
    assert s["below"]["rel_ce_err"] == pytest.approx(0.002 / 2)  # sqrt(4) * err / 4
    assert s["above"]["rel_ce_err"] == pytest.approx(0.002 * np.sqrt(3) / 3)
    assert s["below"]["resolution_ratio"] == pytest.approx(2.0) and s["above"]["resolution_ratio"] == pytest.approx(1.5)
    empty = study.region_summary(edges, ce, err, ratio, ratio, (0.5, 2000.0))
    assert empty["below"]["n_bins"] == 0 and np.isnan(empty["below"]["rel_ce"]) and empty["inside"]["n_bins"] == 11
    with pytest.raises(ValueError, match="train_range_gev"):
        study.region_summary(edges, ce, err, ratio, ratio, (100.0, 10.0))
    with pytest.raises(ValueError, match="shape"):
        study.region_summary(edges, ce[:5], err, ratio, ratio, (10.0, 100.0))
