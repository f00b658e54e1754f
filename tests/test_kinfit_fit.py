"""Dijet kinematic fit: agreement with iminuit, chi2 and pull distributions, implicit derivatives, hard constraint."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from iminuit import Minuit
from scipy import stats

from surrinf.kinfit import (
    BreitWignerMass,
    FixedMass,
    GaussianMass,
    dijet_mass,
    fit_event,
    kinfit,
    kinfit_jacobian,
    opening_cosine,
)

M0 = 91.1876  # GeV
# Every fit below runs in chunks of 1024 events (1000 events pad to 1024), so each (constraint, jet-mass) variant is
# compiled once for the whole file: compilation, not fitting, is what costs here.
CHUNK = 1024


def _truth(seed: int, n: int, mass: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Massless jet pairs with random directions and the given dijet mass [GeV]: (E_true (n, 2), cos alpha (n,))."""
    rng = np.random.default_rng(seed)
    m = np.broadcast_to(mass, (n,))
    eta = rng.uniform(-2.0, 2.0, (n, 2))
    phi = rng.uniform(-np.pi, np.pi, (n, 2))
    cos = opening_cosine(eta, phi)
    e1 = rng.uniform(40.0, 150.0, n)
    e2 = m**2 / (2.0 * e1 * (1.0 - cos))
    keep = (e2 > 20.0) & (e2 < 400.0)  # about 82 % of the pairs
    return np.stack([e1, e2], axis=1)[keep], cos[keep]


def _measure(seed: int, e_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian smearing with sigma = 0.5 sqrt(E) [GeV] (fixed per jet, from the true energy)."""
    sigma = 0.5 * np.sqrt(e_true)
    return e_true + sigma * np.random.default_rng(seed).normal(size=e_true.shape), sigma


def _mjj_py(e1: float, e2: float, c: float, m1: float, m2: float) -> float:
    p1 = math.sqrt(max(e1 * e1 - m1 * m1, 1e-300))
    p2 = math.sqrt(max(e2 * e2 - m2 * m2, 1e-300))
    return math.sqrt(max(m1 * m1 + m2 * m2 + 2.0 * (e1 * e2 - p1 * p2 * c), 1e-300))


def _soft_chi2(em1, em2, s1, s2, c, m1, m2, prior, m0, width):
    """chi2(e1, e2) of one event in plain Python (iminuit reads the parameter names from the signature)."""

    def chi2(e1, e2):
        mjj = _mjj_py(e1, e2, c, m1, m2)
        if prior == "gauss":
            term = ((mjj - m0) / width) ** 2
        else:
            term = 2.0 * math.log1p(((mjj * mjj - m0 * m0) / (m0 * width)) ** 2)
        return ((e1 - em1) / s1) ** 2 + ((e2 - em2) / s2) ** 2 + term

    return chi2


def _minuit_soft(e, s, c, m, prior: str, m0: float, width: float) -> np.ndarray:
    """The same chi2 minimised by iminuit's MIGRAD (plain Python, no JAX), event by event."""
    out = np.empty_like(e)
    for i in range(len(e)):
        (em1, em2), (s1, s2), ci, (m1, m2) = e[i], s[i], c[i], m[i]

        chi2 = _soft_chi2(em1, em2, s1, s2, ci, m1, m2, prior, m0, width)
        # Starts: the measurement and, for the Breit-Wigner prior (two local minima possible), the energies scaled
        # onto the pole, as the fit does; the lower minimum wins.
        starts = [(em1, em2)]
        if prior == "bw":
            k = m0 / _mjj_py(em1, em2, ci, m1, m2)
            starts.append((em1 * k, em2 * k))
        best = None
        for a, b in starts:
            mi = Minuit(chi2, e1=a, e2=b)
            mi.errordef = Minuit.LEAST_SQUARES
            mi.strategy = 2
            mi.tol = 1e-8
            mi.migrad()
            mi.migrad()  # a second pass from the minimum tightens the EDM where the first stopped at its call limit
            if best is None or mi.fval < best.fval:
                best = mi
        out[i] = best.values["e1"], best.values["e2"]
    return out


@pytest.mark.parametrize(
    ("prior", "massive"), [("gauss", False), ("bw", True)], ids=["gaussian-massless", "breit-wigner-massive"]
)
def test_soft_constraint_agrees_with_iminuit(prior, massive):
    # 1000 events with measured energies off the resonance; fixed jet masses (8 % of E) for the massive case.
    e_true, cos = _truth(1, 1300, M0)
    e, s = _measure(2, e_true[:1000])
    cos = cos[:1000]
    assert len(e) == 1000
    masses = 0.08 * e if massive else np.zeros_like(e)
    width = 3.0 if prior == "gauss" else 2.4952
    constraint = GaussianMass(M0, width) if prior == "gauss" else BreitWignerMass(M0, width)
    fit = kinfit(e, s, cos, constraint, masses if massive else None, chunk_size=CHUNK)
    assert fit.converged.all()
    ref = _minuit_soft(e, s, cos, masses, prior, M0, width)
    # Acceptance: fitted energies agree with iminuit to 1e-6 relative (both solvers run to ~1e-9 relative).
    np.testing.assert_allclose(fit.energies, ref, rtol=1e-6, atol=0)


def _surface_chi2(em1, em2, s1, s2, k):
    def chi2(e1):
        return ((e1 - em1) / s1) ** 2 + ((k / e1 - em2) / s2) ** 2

    return chi2


def test_hard_constraint_agrees_with_iminuit_on_the_constraint_surface():
    # Massless jets: on m_jj = m0, E_2 = m0^2 / (2 E_1 (1 - cos)); iminuit minimises chi2(E_1) in one dimension.
    e_true, cos = _truth(3, 1300, M0)
    e, s = _measure(4, e_true[:1000])
    cos = cos[:1000].copy()
    # The last events have m_jj,meas far above m0 (wrong jet pairings in Pythia Z events look like this): a Newton
    # iteration on the Lagrange system diverged on them (the fitted energies are below half the measured ones, where
    # the Lagrangian's Hessian is indefinite); the fit along the constraint surface converges.
    e[-3:] = [[226.94, 132.63], [216.62, 52.30], [123.13, 74.84]]
    s[-3:] = 0.5 * np.sqrt(e[-3:])
    cos[-3:] = [-0.9597, -0.5857, -0.9858]
    fit = kinfit(e, s, cos, FixedMass(M0), chunk_size=CHUNK)
    assert fit.converged.all()
    np.testing.assert_allclose(fit.mjj, M0, rtol=1e-10)
    idx = [*range(300), 997, 998, 999]  # one-dimensional MIGRAD fits on a subset and the extreme events
    n = len(idx)
    ref = np.empty((n, 2))
    for k, i in enumerate(idx):
        (em1, em2), (s1, s2), ci = e[i], s[i], cos[i]
        kk = M0**2 / (2.0 * (1.0 - ci))
        mi = Minuit(_surface_chi2(em1, em2, s1, s2, kk), e1=fit.energies[i, 0] * 1.01)
        mi.errordef = Minuit.LEAST_SQUARES
        mi.strategy = 2
        mi.tol = 1e-8
        mi.limits["e1"] = (1e-3, None)
        mi.migrad()
        ref[k] = mi.values["e1"], kk / mi.values["e1"]
    np.testing.assert_allclose(fit.energies[idx], ref, rtol=1e-6, atol=0)
    assert np.all(np.isfinite(kinfit_jacobian(e, s, cos, FixedMass(M0), chunk_size=CHUNK).energies))


@pytest.mark.parametrize("hard", [False, True], ids=["gaussian-prior", "hard-constraint"])
def test_chi2_distribution_and_pull_widths(hard):
    # True m_jj drawn from the Gaussian prior (soft) or equal to m0 (hard), Gaussian resolutions: chi2 ~ chi2(ndf=1)
    # up to the nonlinearity of m_jj(E) (small at sigma_E / E ~ 5 %). 5000 events: the pull width's standard error is
    # 1 / sqrt(2 * 5000) = 0.01, so the acceptance window 1 +- 0.05 is five standard errors wide.
    n = 6500
    mass = np.random.default_rng(5).normal(M0, 3.0, n) if not hard else M0
    e_true, cos = _truth(6, n, mass)
    e_true, cos = e_true[:5000], cos[:5000]
    assert len(e_true) == 5000
    e, s = _measure(7, e_true)
    fit = kinfit(e, s, cos, FixedMass(M0) if hard else GaussianMass(M0, 3.0), chunk_size=CHUNK)
    assert fit.converged.all() and fit.ndf == 1
    assert stats.kstest(fit.chi2, "chi2", args=(fit.ndf,)).pvalue > 0.01
    width = np.std(fit.pulls, axis=0)
    assert np.all(np.abs(width - 1.0) < 0.05), width
    # Pull means: 1 / sqrt(5000) = 0.014 standard error, 0.05 = 3.5 of them (measured 0.008 soft, 0.039 hard: the
    # nonlinearity of m_jj(E) shifts the hard-constraint pulls slightly).
    assert np.all(np.abs(np.mean(fit.pulls, axis=0)) < 0.05)
    # The fit probability is flat for a correct chi2: its mean is 1/2 with standard error 1 / sqrt(12 n) = 0.004.
    assert abs(np.mean(fit.prob) - 0.5) < 0.02


def test_breit_wigner_fit_improves_mass_resolution_and_converges():
    # Resonance events (true mass from the Breit-Wigner) measured with 0.5 sqrt(E) resolution: the fit with the
    # Breit-Wigner prior pulls m_jj to the pole; the spread of m_fit - m_true is smaller than before the fit.
    rng = np.random.default_rng(8)
    gamma = 2.4952
    mass = M0 + 0.5 * gamma * np.tan(np.pi * (rng.uniform(size=2500) - 0.5))
    mass = np.clip(mass, M0 - 10 * gamma, M0 + 10 * gamma)
    e_true, cos = _truth(9, 2500, mass)
    e_true, cos = e_true[:2048], cos[:2048]
    e, s = _measure(10, e_true)
    with jax.enable_x64(True):
        m_true, m_meas = np.asarray(dijet_mass(e_true, cos)), np.asarray(dijet_mass(e, cos))
    # Zero jet masses go through the massive-jet code path (the variant compiled for the iminuit test).
    fit = kinfit(e, s, cos, BreitWignerMass(M0, gamma), np.zeros_like(e), chunk_size=CHUNK)
    assert fit.converged.all()

    def iqr(x):
        return np.subtract(*np.percentile(x, [75, 25]))

    assert iqr(fit.mjj - m_true) < 0.8 * iqr(fit.mjj_measured - m_true)
    np.testing.assert_allclose(fit.mjj_measured, m_meas, rtol=1e-12)


def test_implicit_derivatives_match_finite_differences():
    e_true, cos = _truth(11, 1300, M0)
    e, s = _measure(12, e_true[:1000])
    cos = cos[:1000]
    for constraint, masses in (
        (GaussianMass(M0, 3.0), None),
        (BreitWignerMass(M0, 2.4952), np.zeros_like(e)),
        (FixedMass(M0), None),
    ):
        jac = kinfit_jacobian(e, s, cos, constraint, masses, chunk_size=CHUNK)
        # Central differences with h = 1e-4 GeV: truncation ~ h^2 |f'''| < 1e-8, rounding ~ 1e-10 (fit tolerance) / h.
        h = 1e-4
        for j in range(2):
            step = np.zeros(2)
            step[j] = h
            up = kinfit(e + step, s, cos, constraint, masses, chunk_size=CHUNK)
            down = kinfit(e - step, s, cos, constraint, masses, chunk_size=CHUNK)
            np.testing.assert_allclose(jac.energies[:, :, j], (up.energies - down.energies) / (2 * h), atol=1e-5)
            np.testing.assert_allclose(jac.mjj[:, j], (up.mjj - down.mjj) / (2 * h), atol=1e-5)
            np.testing.assert_allclose(jac.mjj_measured[:, j], (up.mjj_measured - down.mjj_measured) / (2 * h))
    # The hard constraint fixes m_jj: its derivative vanishes.
    np.testing.assert_allclose(jac.mjj, 0.0, atol=1e-9)


def test_fit_event_is_differentiable_in_any_input():
    # fit_event is a pure function: the derivative with respect to the prior mass comes from implicit differentiation.
    e, s, c = np.array([60.0, 45.0]), np.array([4.0, 3.5]), -0.4
    with jax.enable_x64(True):

        @jax.jit
        def m_fit(m0):
            return fit_event(e, s, c, GaussianMass(m0, 3.0))["mjj"]

        d = float(jax.jit(jax.grad(m_fit))(91.0))
        num = float(m_fit(91.0 + 1e-5) - m_fit(91.0 - 1e-5)) / 2e-5
    assert abs(d - num) < 1e-6
    assert 0.0 < d < 1.0  # a shift of the prior moves the fitted mass by a fraction of the shift


def test_massive_dijet_mass_matches_four_vectors():
    rng = np.random.default_rng(13)
    eta, phi = rng.uniform(-2, 2, (50, 2)), rng.uniform(-np.pi, np.pi, (50, 2))
    m = rng.uniform(1, 15, (50, 2))
    e = m + rng.uniform(20, 200, (50, 2))
    p = np.sqrt(e**2 - m**2)
    pt = p / np.cosh(eta)
    four = np.stack([e, pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], axis=-1).sum(axis=1)
    expected = np.sqrt(four[:, 0] ** 2 - (four[:, 1:] ** 2).sum(axis=1))
    with jax.enable_x64(True):
        got = np.asarray(dijet_mass(e, opening_cosine(eta, phi), m))
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_bad_inputs_are_rejected():
    e = np.array([[50.0, 40.0]])
    s = np.array([[3.0, 3.0]])
    c = np.array([0.1])
    g = GaussianMass(M0, 3.0)
    with pytest.raises(ValueError, match="e_meas must have shape"):
        kinfit(e[0], s, c, g)
    with pytest.raises(ValueError, match="e_meas must be positive"):
        kinfit(-e, s, c, g)
    with pytest.raises(ValueError, match="sigma must be positive"):
        kinfit(e, 0 * s, c, g)
    with pytest.raises(ValueError, match="cos_opening"):
        kinfit(e, s, np.array([1.5]), g)
    with pytest.raises(ValueError, match="masses"):
        kinfit(e, s, c, g, masses=np.array([[60.0, 1.0]]))
    with pytest.raises(ValueError, match="e_meas must be finite"):
        kinfit(np.array([[np.nan, 40.0]]), s, c, g)
    with pytest.raises(ValueError, match="solver"):
        kinfit(e, s, c, g, solver="simplex")
    with pytest.raises(TypeError, match="constraint"):
        kinfit(e, s, c, 91.0)
    with pytest.raises(ValueError, match="m0"):
        GaussianMass(-1.0, 3.0)
    with pytest.raises(ValueError, match="gamma"):
        BreitWignerMass(91.0, 0.0)
