"""Pile-up: the reference overlay (surrinf.sim.pileup), the hurdle surrogate (surrinf.generators.hurdle) and the
occupancy / per-cell variance validation (surrinf.validation.pileup).

One reference sample (PileupResponse on the 12-cell tiny geometry of conftest, mu = 0, 10, 50, 1000 events each,
whose showers reuse the compiled simulator of the shared tiny_showers fixture) and one trained hurdle model are
shared by the tests (module scope)."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from scipy import stats

from surrinf.generators.hurdle import HurdleSurrogate, hurdle_log_likelihood
from surrinf.generators.serialization import load, save
from surrinf.generators.trainer import TrainConfig
from surrinf.response import ResponseModel
from surrinf.sim import calorimeter
from surrinf.sim.pileup import PileupModel, PileupResponse, draw_pileup, layer_weights, overlay_pileup
from surrinf.validation.pileup import compare_pileup, occupancy_vs_mu

MUS = (0.0, 10.0, 50.0)
THRESHOLD_GEV = 1e-3  # visible energy; a mean soft deposit is 0.27 GeV x f_samp(W/Si) = 7 MeV


@pytest.fixture(scope="module")
def reference(tiny_showers):
    """(calorimeter, energies (3000,), mu (3000,), conditions (3000, 2), showers with pile-up (3000, 12))."""
    geo, _, energies = tiny_showers
    cal = calorimeter(geo, "W/Si")
    mu = np.tile(np.array(MUS), energies.size // len(MUS))
    cond = np.stack([energies, mu], axis=1)
    response = PileupResponse(cal)
    assert isinstance(response, ResponseModel)
    return cal, energies, mu, cond, response.sample(jax.random.key(11), cond)


@pytest.fixture(scope="module")
def hurdle(reference):
    _, _, _, cond, showers = reference
    cfg = TrainConfig(batch_size=256, max_steps=150, learning_rate=1e-2, val_fraction=0.0, log_every=50)
    model, res = HurdleSurrogate.fit(
        jax.random.key(1),
        showers,
        cond,
        hurdle_config={"latent": 4, "hidden": [32], "threshold_gev": THRESHOLD_GEV},
        train_config=cfg,
    )
    return model, res


def test_reference_occupancy_and_cell_variance_rise_with_mu(reference):
    cal, energies, mu, _, showers = reference
    # below 10 GeV the spread of the incident energy does not swamp the pile-up variance (~300 events per mu)
    low = energies < 10.0
    r = occupancy_vs_mu(showers[low], mu[low], THRESHOLD_GEV)
    np.testing.assert_array_equal(r.mu_values, MUS)
    for values, errors in ((r.occupancy, r.occupancy_err), (r.variance, r.variance_err)):
        rise = np.diff(values) / np.hypot(errors[1:], errors[:-1])
        assert np.all(rise > 5.0), rise  # measured 9-20 standard errors per step
    # the pile-up variance adds to every cell: each cell's variance grows from mu = 0 to 50 (> 3 standard errors)
    cell_rise = (r.cell_variance[2] - r.cell_variance[0]) / np.hypot(r.cell_variance_err[2], r.cell_variance_err[0])
    assert np.all(cell_rise > 3.0), cell_rise
    # soft EM deposits favour the front: the two front layers take most of them (GFLASH profile peak ~1 X0)
    w = layer_weights(cal)
    assert w.sum() == pytest.approx(1.0) and w[0] + w[1] > 0.7 and np.all(np.diff(w) <= 0), w


def test_poisson_count_and_mu_zero_leaves_showers_unchanged(reference, tiny_showers):
    cal, _, mu, _, _ = reference
    _, showers, _ = tiny_showers
    key = jax.random.key(5)
    dep = draw_pileup(key, mu, cal)
    over = overlay_pileup(key, showers, mu, cal)
    np.testing.assert_array_equal(over, showers + dep.energy_gev)
    zero = mu == 0
    np.testing.assert_array_equal(over[zero], showers[zero])
    assert not np.any(dep.counts[zero]) and not np.any(dep.energy_gev[zero])
    n = dep.counts.sum(axis=1)
    theta = PileupModel().mean_energy_gev * cal.material.sampling_fraction  # visible mean energy per deposit
    for m in MUS[1:]:
        k = n[mu == m]
        size = k.size
        # Poisson: mean m (sd sqrt(m / n)) and variance m (sd of a sample variance sqrt((m + 2 m^2) / n)); 4 sd
        assert abs(k.mean() - m) < 4.0 * math.sqrt(m / size), (m, k.mean())
        assert abs(k.var(ddof=1) - m) < 4.0 * math.sqrt((m + 2 * m * m) / size), (m, k.var(ddof=1))
        # exponential spectrum: summed energy mean m theta, variance m E[E^2] = 2 m theta^2 per event; 4 sd
        tot = dep.energy_gev[mu == m].sum(axis=1)
        assert abs(tot.mean() - m * theta) < 4.0 * math.sqrt(2.0 * m * theta**2 / size), (m, tot.mean())


def test_hurdle_log_likelihood_matches_hand_computation():
    e = np.array([[0.0, 0.5, 2e-4, 3.0], [1e-3, 0.02, 0.0, 7.0]], np.float64)
    logits = np.array([[0.3, -1.2, 2.0, 0.1], [0.0, 1.5, -0.7, -2.0]])
    m = np.array([[-1.0, -0.5, 0.2, 1.0], [-3.0, -4.0, 0.0, 2.5]])
    log_s = np.array([[0.1, -0.3, 0.5, 0.0], [0.2, 0.4, -0.1, -0.5]])
    pi = 1.0 / (1.0 + np.exp(-logits))
    for t in (1e-3, 0.0):
        hit = e > t
        # delta mass (1 - pi) at 0, or pi times the log-normal density truncated to e > t
        slab = stats.lognorm.pdf(e, np.exp(log_s), scale=np.exp(m)) / stats.lognorm.sf(
            t, np.exp(log_s), scale=np.exp(m)
        )
        hand = np.where(hit, np.log(pi * np.where(hit, slab, 1.0)), np.log(1.0 - pi)).sum(axis=1)
        got = np.asarray(hurdle_log_likelihood(e, logits, m, log_s, t))  # float32
        np.testing.assert_allclose(got, hand, rtol=1e-5)


def test_hurdle_reproduces_occupancy_rise_with_mu(reference, hurdle):
    _, _, mu, cond, showers = reference
    model, res = hurdle
    losses = [h["train_loss"] for h in res.history if h.get("train_loss") is not None]
    assert losses[-1] < losses[0]
    gen = np.asarray(model.sample(jax.random.key(2), cond))
    assert gen.shape == showers.shape and np.all((gen == 0) | (gen > THRESHOLD_GEV))
    r = occupancy_vs_mu(showers, mu, THRESHOLD_GEV)
    g = occupancy_vs_mu(gen, mu, THRESHOLD_GEV)
    rise = (g.occupancy[-1] - g.occupancy[0]) / math.hypot(g.occupancy_err[-1], g.occupancy_err[0])
    assert rise > 20.0, rise  # measured ~60 standard errors (reference: 0.81 -> 1.00)
    # 150 steps of a 4-latent model: within 0.03 of the reference occupancy at every mu (measured <= 0.01, SE 0.003)
    np.testing.assert_allclose(g.occupancy, r.occupancy, atol=0.03)
    table = compare_pileup(r, g)
    assert len(table.rows) == len(MUS) and table.columns[4] == "occ. ratio gen/ref"


def test_hurdle_save_load_round_trip_is_bit_exact(hurdle, reference, tmp_path):
    model, _ = hurdle
    _, _, _, cond, showers = reference
    path = save(model, tmp_path / "hurdle", model.config())
    again, info = load(path)
    assert info["model_type"] == "hurdle" and again.config() == model.config()
    key = jax.random.key(3)
    np.testing.assert_array_equal(np.asarray(model.sample(key, cond)), np.asarray(again.sample(key, cond)))
    lp = np.asarray(model.log_prob(showers, cond, key=key))
    assert np.all(np.isfinite(lp))
    np.testing.assert_array_equal(lp, np.asarray(again.log_prob(showers, cond, key=key)))


def test_bad_inputs_raise(reference, hurdle):
    cal, _, mu, cond, showers = reference
    model, _ = hurdle
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="mu"):
        overlay_pileup(key, showers, -mu - 1.0, cal)
    with pytest.raises(ValueError, match="showers_gev"):
        overlay_pileup(key, showers[:, :5], mu, cal)
    with pytest.raises(ValueError, match="mu"):
        overlay_pileup(key, showers, mu[:7], cal)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        PileupResponse(cal).sample(key, cond[:, :1])
    with pytest.raises(ValueError, match="mu"):
        PileupResponse(cal).sample(key, cond * np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="mean_energy_gev"):
        PileupModel(mean_energy_gev=-0.1)
    with pytest.raises(ValueError, match="mu"):
        model.sample(key, cond * np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        model.sample(key, cond[:, 0])
    with pytest.raises(ValueError, match="showers"):
        model.log_prob(showers[:, :3], cond, key=key)
    with pytest.raises(ValueError, match="mu"):
        occupancy_vs_mu(showers, mu[:10], THRESHOLD_GEV)
    with pytest.raises(ValueError, match="threshold_gev"):
        occupancy_vs_mu(showers, mu, -1.0)
    r = occupancy_vs_mu(showers, mu, THRESHOLD_GEV)
    with pytest.raises(ValueError, match="same mu bins"):
        compare_pileup(r, occupancy_vs_mu(showers, mu, THRESHOLD_GEV, mu_bins=[0.0, 5.0, 100.0]))
