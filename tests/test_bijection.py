"""ShowerBijection: voxel energies <-> R^V with an exact log-Jacobian."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from surrinf.data import get_geometry
from surrinf.data.bijection import ShowerBijection
from surrinf.data.geometry import Geometry
from surrinf.sim import calorimeter


def test_roundtrip_on_simulated_showers_keeps_dimension_and_zeros():
    cal = calorimeter("ds1-photons")  # layers of different sizes and empty layers
    e = np.array([1.0, 10.0, 100.0, 1000.0])
    showers = cal.simulate(jax.random.key(0), e).showers
    bij = ShowerBijection(cal.geometry)
    z, _ = bij.forward(showers, e)
    assert z.shape == showers.shape  # a bijection: V numbers per shower
    back = np.asarray(bij.inverse(z, e))
    # float32 logs/exps: relative accuracy ~1e-6 of the layer energy; zeros come back as (clipped) ~0
    layer_scale = np.asarray(showers).max(axis=1, keepdims=True)
    np.testing.assert_allclose(back, showers, atol=2e-5 * layer_scale.max(), rtol=1e-4)
    assert np.all(back[showers == 0] < 1e-5 * e[np.nonzero(showers == 0)[0]])


def test_log_jacobian_matches_autodiff():
    geo = Geometry(
        "tiny",
        np.array([0.0, 1.0, 2.0, 3.0]),
        (np.array([0.0, 1.0, 2.0]), np.array([0.0]), np.array([0.0, 1.0])),
        (2, 1, 3),
    )
    bij = ShowerBijection(geo)
    assert geo.n_voxels == 7
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.exponential(0.1, 7), dtype=jnp.float32)
    energy = jnp.float32(5.0)
    jac = jax.jacfwd(lambda v: bij.forward(v[None], energy[None])[0][0])(x)
    _, logdet = bij.forward(x[None], energy[None])
    sign, ref = np.linalg.slogdet(np.asarray(jac, dtype=np.float64))
    assert sign != 0
    assert float(logdet[0]) == pytest.approx(ref, abs=1e-3)


def test_serialisation_and_bad_input():
    geo = get_geometry("default")
    bij = ShowerBijection(geo)
    again = ShowerBijection.from_dict(bij.to_dict())
    x = np.abs(np.random.default_rng(2).normal(size=(3, 360))).astype(np.float32) * 0.01
    e = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(np.asarray(bij.forward(x, e)[0]), np.asarray(again.forward(x, e)[0]))
    with pytest.raises(ValueError, match="non-negative"):
        bij.forward(-x, e)
    with pytest.raises(ValueError, match="360"):
        bij.forward(x[:, :10], e)
    with pytest.raises(ValueError, match="relative_delta"):
        ShowerBijection(geo, 0.0)
