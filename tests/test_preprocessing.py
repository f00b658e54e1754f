"""Invertible preprocessing transforms: inverse accuracy, exact zeros, errors, serialisation."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from surrinf.data import LayerFractionTransform, Standardize, get_geometry, transform_from_dict


def realistic_showers(geometry, n: int = 200, seed: int = 0):
    """Non-negative showers in GeV: a longitudinal profile, ~50 % zero voxels, a few empty layers, energies
    spanning many orders of magnitude (including single-voxel MeV-scale deposits)."""
    rng = np.random.default_rng(seed)
    e = rng.uniform(1.0, 1000.0, n)
    layer = geometry.voxel_coordinates()["layer"]
    depth = np.exp(-0.5 * ((layer - 0.4 * geometry.n_layers) / (0.25 * geometry.n_layers)) ** 2)
    s = rng.gamma(0.5, 1.0, (n, geometry.n_voxels)) * depth * (rng.random((n, geometry.n_voxels)) < 0.5)
    s *= (rng.uniform(0.8, 1.0, n) * e / s.sum(1))[:, None]
    s[s > 0] *= 10.0 ** rng.uniform(-4, 0, np.count_nonzero(s))  # wide dynamic range
    empty = rng.random((n, geometry.n_layers)) < 0.1
    s[empty[np.arange(n)[:, None], layer[None, :]]] = 0.0
    s[0] = 0.0  # an all-empty shower
    return s.astype(np.float32), e.astype(np.float32)


def _layer_sum(s, geometry):
    out = np.zeros((s.shape[0], geometry.n_layers))
    for lay in geometry.active_layers:
        a, b = geometry.layer_offsets[lay], geometry.layer_offsets[lay + 1]
        out[:, lay] = s[:, a:b].sum(1, dtype=np.float64)
    return out


@pytest.mark.parametrize("name", ["default", "ds1-pions"])
def test_layer_fraction_inverse_accuracy(name):
    g = get_geometry(name)
    s, e = realistic_showers(g)
    t = LayerFractionTransform(g)
    z = t.forward(s, e)
    assert z.shape == (s.shape[0], len(g.active_layers) + g.n_voxels) and z.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(z)))
    back = np.asarray(t.inverse(z, e))
    assert back.dtype == np.float32
    layer = g.voxel_coordinates()["layer"]
    E_l = _layer_sum(s, g)[:, layer]  # (N, V) layer energy of each voxel
    rel = np.abs(back.astype(np.float64) - s) / np.where(E_l > 0, E_l, 1.0)
    assert rel.max() < 1e-4, rel.max()
    assert np.all(back[s == 0] == 0.0)  # exact zeros (empty layers, zero voxels, the empty shower)
    assert np.all(back >= 0)
    # jit gives the same result
    zj = jax.jit(t.forward)(s, e)
    np.testing.assert_allclose(np.asarray(zj), np.asarray(z), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(np.asarray(jax.jit(t.inverse)(zj, e)), back, rtol=1e-5, atol=1e-9)


def test_layer_fraction_inverse_of_arbitrary_z():
    """Samples of a generative model: any z maps to non-negative showers with layer sums u * E."""
    g = get_geometry("default")
    t = LayerFractionTransform(g)
    z = jax.random.normal(jax.random.key(0), (16, t.n_features)) * 3.0 - 4.0
    e = jnp.full((16,), 50.0)
    s = np.asarray(t.inverse(z, e))
    assert np.all(np.isfinite(s)) and np.all(s >= 0)
    u = np.maximum(np.exp(np.asarray(z[:, : t.n_layers], np.float64)) - t.eps_layer, 0.0)
    np.testing.assert_allclose(_layer_sum(s, g), u * 50.0, rtol=1e-5)


def test_layer_fraction_rejects_bad_input():
    g = get_geometry("default")
    t = LayerFractionTransform(g)
    s, e = realistic_showers(g, 4)
    neg = s.copy()
    neg[2, 17] = -1e-3
    with pytest.raises(ValueError, match=r"argument showers must be non-negative.*index \(2, 17\)"):
        t.forward(neg, e)
    with pytest.raises(ValueError, match="argument energies must be positive"):
        t.forward(s, np.array([1.0, 0.0, 1.0, 1.0], np.float32))
    with pytest.raises(ValueError, match=r"argument showers must have shape \(N, 360\)"):
        t.forward(s[:, :10], e)
    with pytest.raises(ValueError, match="argument energies must have shape"):
        t.forward(s, e[:3])
    with pytest.raises(ValueError, match="argument z must have shape"):
        t.inverse(np.zeros((4, 360)), e)
    # (N, 1) energies are accepted; single showers too, so vmap works
    np.testing.assert_array_equal(np.asarray(t.forward(s, e[:, None])), np.asarray(t.forward(s, e)))
    z = t.forward(s, e)
    np.testing.assert_allclose(np.asarray(jax.vmap(t.forward)(s, e)), np.asarray(z), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.vmap(t.inverse)(z, e)), np.asarray(t.inverse(z, e)), rtol=1e-6)
    # gradients are finite also at zero voxels and empty layers
    grad = jax.grad(lambda x: t.forward(x, e).sum())(jnp.asarray(s))
    assert bool(jnp.all(jnp.isfinite(grad)))


def test_layer_fraction_serialisation():
    g = get_geometry("ds1-photons")
    t = LayerFractionTransform(g, eps=1e-5, eps_layer=1e-7)
    d = json.loads(json.dumps(t.to_dict()))
    t2 = transform_from_dict(d)
    assert isinstance(t2, LayerFractionTransform) and t2.geometry == g
    assert (t2.eps, t2.eps_layer, t2.layer_sizes) == (t.eps, t.eps_layer, t.layer_sizes)
    s, e = realistic_showers(g, 8)
    np.testing.assert_array_equal(np.asarray(t2.forward(s, e)), np.asarray(t.forward(s, e)))


def test_standardize():
    rng = np.random.default_rng(0)
    z = rng.normal([1.0, -3.0, 0.1, 0.0], [2.0, 0.5, 1e-3, 0.0], (1000, 4)).astype(np.float32)
    st = Standardize.fit(z)
    y = st.forward(z)
    np.testing.assert_allclose(np.asarray(y)[:, :3].mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(y)[:, :3].std(0), 1.0, rtol=1e-3)
    assert float(st.std[3]) == 1.0  # constant feature: only centred
    np.testing.assert_allclose(np.asarray(st.inverse(y)), z, rtol=1e-5, atol=1e-5)
    jac = jax.jacfwd(st.forward)(jnp.asarray(z[0]))
    ladj = float(np.linalg.slogdet(np.asarray(jac, np.float64))[1])
    assert float(st.log_abs_det_jacobian()) == pytest.approx(ladj, rel=1e-5)
    assert st.log_abs_det_jacobian(z).shape == (1000,)
    st2 = transform_from_dict(json.loads(json.dumps(st.to_dict())))
    assert isinstance(st2, Standardize)
    np.testing.assert_array_equal(np.asarray(st2.mean), np.asarray(st.mean))
    np.testing.assert_array_equal(np.asarray(st2.std), np.asarray(st.std))
    np.testing.assert_allclose(np.asarray(jax.jit(lambda m, x: m.forward(x))(st2, z)), np.asarray(y), rtol=1e-6)
    with pytest.raises(ValueError, match="argument std must be positive"):
        Standardize(np.zeros(2), np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="argument z"):
        Standardize.fit(np.zeros(3))
    with pytest.raises(ValueError, match="unknown transform type"):
        transform_from_dict({"type": "Nope"})


def test_chain_with_standardize_roundtrip():
    g = get_geometry("default")
    s, e = realistic_showers(g, 100, seed=3)
    t = LayerFractionTransform(g)
    z = t.forward(s, e)
    st = Standardize.fit(z)
    back = np.asarray(t.inverse(st.inverse(st.forward(z)), e))
    layer = g.voxel_coordinates()["layer"]
    E_l = _layer_sum(s, g)[:, layer]
    assert (np.abs(back - s) / np.where(E_l > 0, E_l, 1.0)).max() < 1e-3
