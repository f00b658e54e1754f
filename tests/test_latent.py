"""Disentanglement (KSG mutual information, interventional sweeps) and latent uncertainty propagation (first-order
Taylor with a forward-mode Jacobian vs Monte Carlo), on closed-form cases and on a small VAE."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from surrinf.data import ShowerBijection
from surrinf.data.geometry import Geometry
from surrinf.generators import ConditionEncoder
from surrinf.generators.base import ShowerPreprocessor
from surrinf.generators.vae import VAESurrogate
from surrinf.validation.disentanglement import ShowerObservables, interventional_sweep, mi_matrix, mutual_information
from surrinf.validation.latent_uncertainty import (
    mc_propagation,
    propagation_table,
    taylor_propagation,
    vae_mean_showers,
    vae_propagation,
)

N_MI = 4000
# KSG (k = 3, normal-score transform) on bivariate Gaussians, measured with 100 replicas at N = 2000: bias <= 0.007
# nats for rho <= 0.9, replica spread <= 0.027 nats; the spread falls as 1/sqrt(N), so <= 0.019 at N = 4000.
# Tolerance: 0.01 (bias) + 4 x 0.019 (a 4-sigma fluctuation) = 0.086 nats.
KSG_TOL = 0.01 + 4 * 0.019


def _gauss_pair(seed: int, rho: float, n: int = N_MI) -> tuple[np.ndarray, np.ndarray]:
    z = np.random.default_rng(seed).standard_normal((n, 2))
    return z[:, 0], rho * z[:, 0] + np.sqrt(1.0 - rho**2) * z[:, 1]


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_ksg_matches_the_gaussian_mutual_information(rho):
    x, y = _gauss_pair(1, rho)
    exact = -0.5 * np.log(1.0 - rho**2)  # 0.144 and 0.830 nats
    assert abs(mutual_information(x, y) - exact) < KSG_TOL


def test_ksg_independent_and_mi_matrix_with_split_errors():
    rng = np.random.default_rng(2)
    x, y = _gauss_pair(3, 0.0)
    assert abs(mutual_information(x, y)) < KSG_TOL  # exact value 0
    # z0 carries factor f0 (rho = 0.9), z1 nothing, z2 carries f1 through a non-linear, monotone map
    f = rng.standard_normal((N_MI, 2))
    z = np.stack([0.9 * f[:, 0] + np.sqrt(1 - 0.81) * rng.standard_normal(N_MI), rng.standard_normal(N_MI)], 1)
    z = np.concatenate([z, np.tanh(f[:, 1:] + 0.6 * rng.standard_normal((N_MI, 1)))], axis=1)
    res = mi_matrix(z, f, ["f0", "f1"])
    assert res.mi.shape == res.stderr.shape == (3, 2)
    assert abs(res.mi[0, 0] - (-0.5 * np.log(1 - 0.81))) < KSG_TOL
    assert np.all(np.abs(res.mi[[1, 2, 0, 1], [0, 0, 1, 1]]) < KSG_TOL)
    assert res.best_latent() == {"f0": "z0", "f1": "z2"}
    # I(z2; f1): f1 + noise with SNR 1 / 0.36 -> rho^2 = 1 / 1.36, I = 0.5 ln 1.36 / 0.36 = 0.665 nats
    assert abs(res.mi[2, 1] - 0.5 * np.log(1.36 / 0.36)) < KSG_TOL
    # the split standard errors estimate the replica spread at N = 4000 (0.012-0.019 nats): within a factor 2.5
    # (5 subsets: the sample std of 5 values is within a factor 2.5 of the truth with probability ~0.99)
    assert np.all((res.stderr > 0.005) & (res.stderr < 0.05))
    t = res.table()
    assert len(t.rows) == 4 and t.columns == ["latent", "I(z; f0)", "I(z; f1)"]
    assert res.figure() is not None


def test_ksg_invariant_under_monotone_maps():
    x, y = _gauss_pair(4, 0.7)
    base = mutual_information(x, y)
    # normal scores depend on ranks only: exactly the same estimate after strictly monotone maps
    assert mutual_information(np.exp(x), y**3) == base
    assert mutual_information(-(x**3), np.arctan(y)) == base
    # the raw (standardised) geometry is not invariant: the transform is what makes it exact
    raw = mutual_information(np.exp(2 * x), y, transform="standardize")
    assert raw != mutual_information(x, y, transform="standardize")


def test_sweep_finds_the_latent_each_observable_responds_to():
    def decode(z):  # A depends on z0 only, B on z1 and z2, nothing on z3
        return jnp.stack([jnp.tanh(z[:, 0]) * 3.0, z[:, 1] - 0.5 * z[:, 2] ** 2], axis=1)

    res = interventional_sweep(decode, np.zeros(4), range(4), np.linspace(-2, 2, 9), lambda y: y, ["A", "B"])
    assert res.responses.shape == (4, 9, 2)
    sens = res.sensitivity
    assert sens[0, 0] == pytest.approx(6 * np.tanh(2.0), rel=1e-6) and np.all(sens[1:, 0] == 0)
    assert sens[0, 1] == 0 and sens[3, 1] == 0 and sens[1, 1] == pytest.approx(4) and sens[2, 1] == pytest.approx(2)
    assert res.responders() == {"A": [0], "B": [1, 2]}
    assert len(res.table().rows) == 4 and res.figure() is not None


# ---------------------------------------------------------------------------------------------------- propagation

A = np.array([[1.5, -0.25, 0.5, 2.0], [0.0, 1.0, -1.0, 0.75], [0.125, 0.0, 3.0, -0.5]], dtype=np.float32)
B_OFF = np.array([1.0, -2.0, 0.5], dtype=np.float32)
MU = np.random.default_rng(5).normal(size=(5, 4)).astype(np.float32)
SIG = np.random.default_rng(6).uniform(0.2, 1.5, size=(5, 4)).astype(np.float32)
N_MC = 4000


def test_linear_decoder_taylor_exact_and_mc_within_sampling_error():
    g = lambda z: jnp.asarray(A) @ z + jnp.asarray(B_OFF)
    a64 = A.astype(np.float64)
    exact = np.einsum("ok,bk,pk->bop", a64, SIG.astype(np.float64) ** 2, a64)
    tay = taylor_propagation(g, MU, SIG)
    np.testing.assert_allclose(tay.cov, exact, rtol=1e-13, atol=0)  # J = A exactly; float64 assembly
    np.testing.assert_allclose(tay.mean, MU.astype(np.float64) @ a64.T + B_OFF, rtol=1e-5, atol=1e-5)  # float32 g
    mc = mc_propagation(g, MU, SIG, jax.random.key(7), N_MC)
    # y is Gaussian: Var(s_ij) = (S_ii S_jj + S_ij^2) / (n - 1) for the sample covariance (s_ii: 2 S_ii^2 / (n - 1));
    # the sample mean has Var S_ii / n. 4 sigma per entry (45 covariance entries: family-wise ~3e-3)
    d = np.sqrt(np.einsum("bii,bjj->bij", exact, exact) + exact**2) / np.sqrt(N_MC - 1)
    assert np.all(np.abs(mc.cov - exact) < 4 * d)
    assert np.all(np.abs(mc.mean - tay.mean) < 4 * np.sqrt(np.diagonal(exact, axis1=1, axis2=2) / N_MC))
    # the reported standard errors of the variances are the Gaussian ones, 2 S^2 / (n - 1), up to their own noise
    np.testing.assert_allclose(mc.var_stderr, np.sqrt(2 / (N_MC - 1)) * tay.var, rtol=0.15)
    # same key, same bits
    assert np.array_equal(mc_propagation(g, MU, SIG, jax.random.key(7), N_MC).cov, mc.cov)


def test_exponential_decoder_taylor_misses_the_lognormal_variance():
    mu = np.array([[0.0, 0.5, -0.3]], dtype=np.float32)
    s = np.array([[0.1, 0.3, 0.5]], dtype=np.float32)
    m64, s2 = mu.astype(np.float64)[0], s.astype(np.float64)[0] ** 2
    tay = taylor_propagation(jnp.exp, mu, s)
    mc = mc_propagation(jnp.exp, mu, s, jax.random.key(8), N_MC)
    taylor_var = np.exp(2 * m64) * s2
    exact_var = (np.exp(s2) - 1) * np.exp(2 * m64 + s2)  # lognormal
    missed = np.exp(2 * m64) * ((np.exp(s2) - 1) * np.exp(s2) - s2)  # exact - Taylor, 0.15 % to 31 % of exact
    np.testing.assert_allclose(tay.var[0], taylor_var, rtol=1e-6)
    np.testing.assert_allclose(np.diag(tay.cov[0]) - tay.var[0], 0)
    assert np.all(tay.cov[0][~np.eye(3, dtype=bool)] == 0)  # independent coordinates, diagonal J
    # MC measures the missed variance: var_MC - var_T = missed within 4 MC standard errors (stderr from m4)
    assert np.all(np.abs((mc.var[0] - tay.var[0]) - missed) < 4 * mc.var_stderr[0])
    assert np.all(np.abs(mc.var[0] - exact_var) < 4 * mc.var_stderr[0])
    assert (mc.var[0, 2] - tay.var[0, 2]) > 5 * mc.var_stderr[0, 2]  # at s = 0.5 the difference is resolved
    t = propagation_table(tay, mc, ["y0", "y1", "y2"])
    assert t.rows[2][3].value < -0.2  # Taylor var / MC var - 1 = -0.31 expected at s = 0.5


def test_vae_propagation_consistent_with_the_decoder_mean():
    r = np.array([0.0, 5.0, 15.0, np.inf])
    geo = Geometry("tiny", np.array([0.0, 12.0, 24.0, 36.0, 60.0]), (r,) * 4, (2,) * 4)
    rng = np.random.default_rng(9)
    energies = np.exp(rng.uniform(np.log(5.0), np.log(50.0), 256)).astype(np.float32)
    showers = (0.9 * energies[:, None] * rng.dirichlet(np.ones(geo.n_voxels), 256)).astype(np.float32)
    pre, _ = ShowerPreprocessor.fit(ShowerBijection(geo), showers, energies)
    # built inside one jit: one compilation instead of one per eager initialisation op
    model = eqx.filter_jit(lambda k: VAESurrogate(k, pre, ConditionEncoder(), latent=3, hidden=[8]))(jax.random.key(10))

    def observables(s, e):  # E_vis / E and the energy in the first layer [GeV] (cheap to compile)
        return jnp.stack([s.sum(1) / e, s[:, :6].sum(1)], axis=1)

    res = vae_propagation(model, showers[:3], energies[:3], observables, jax.random.key(11), n_mc=64)
    assert res.names == ("obs0", "obs1") and res.taylor.mean.shape == (3, 2) and res.mc.cov.shape == (3, 2, 2)
    assert res.mu_z.shape == res.sigma_z.shape == (3, 3) and np.all(res.sigma_z > 0)
    # the Taylor mean is the observables of the decoder-mean shower at the posterior mean
    mean_showers = np.asarray(vae_mean_showers(model, res.mu_z, energies[:3]), dtype=np.float64)
    direct = np.stack([mean_showers.sum(1) / energies[:3], mean_showers[:, :6].sum(1)], axis=1)
    np.testing.assert_allclose(res.taylor.mean, direct, rtol=1e-5)
    ev = np.linalg.eigvalsh(res.taylor.cov)
    assert np.allclose(res.taylor.cov, np.swapaxes(res.taylor.cov, 1, 2)) and np.all(ev > -1e-9 * ev.max())
    assert len(res.table().rows) == 2
    # the shower observables (numpy path): E_vis is the voxel sum; centroids and widths within the geometry
    y = ShowerObservables(geo, x0_mm=3.5)(mean_showers, energies[:3])
    assert y.shape == (3, 5) and np.allclose(y[:, 0], mean_showers.sum(1))
    assert np.all(np.abs(y[:, 2:4]) < 15.0) and np.all(y[:, 4] > 0) and np.all(y[:, 1] > 0)


def test_bad_inputs_raise():
    x = np.arange(10.0)
    with pytest.raises(ValueError, match="1-D"):
        mutual_information(np.ones((10, 2)), x)
    with pytest.raises(ValueError, match="same length"):
        mutual_information(x, x[:5])
    with pytest.raises(ValueError, match="finite"):
        mutual_information(np.r_[x[:-1], np.nan], x)
    with pytest.raises(ValueError, match="k must"):
        mutual_information(x, x, k=0)
    with pytest.raises(ValueError, match="duplicate"):
        mutual_information(np.repeat(x, 4), np.repeat(x, 4), transform="standardize")
    with pytest.raises(ValueError, match="names"):
        mi_matrix(np.ones((50, 2)), np.ones((50, 2)), ["a"])
    with pytest.raises(ValueError, match="dim"):
        interventional_sweep(lambda z: z, np.zeros(3), 3, np.linspace(0, 1, 3), lambda y: y)
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        taylor_propagation(jnp.exp, MU, -SIG)
    with pytest.raises(ValueError, match="shape of mu"):
        taylor_propagation(jnp.exp, MU, SIG[:, :2])
    with pytest.raises(ValueError, match="n must"):
        mc_propagation(jnp.exp, MU, SIG, jax.random.key(0), 1)
    with pytest.raises(ValueError, match="non-finite"):
        taylor_propagation(jnp.log, -np.ones((2, 3), np.float32), np.ones((2, 3), np.float32))
