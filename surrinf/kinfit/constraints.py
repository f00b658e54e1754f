"""Dijet-mass terms of the kinematic fit: soft constraints (a prior on m_jj) and the hard constraint.

A soft constraint adds one residual r(m_jj) to the fit, with r^2 = -2 ln(prior(m_jj) / prior_max), so the fit
minimises chi2 = sum_j ((E_j - E_j_meas) / sigma_j)^2 + r(m_jj)^2 by (Gauss-)Newton steps on the residual vector:

- :class:`GaussianMass`: r = (m - m0) / sigma [m0, sigma in GeV]; with Gaussian jet resolutions the fit chi2 follows
  a chi2 distribution with ``ndf = 1`` (linear approximation).
- :class:`BreitWignerMass`: relativistic Breit-Wigner prior(m) ~ 1 / ((m^2 - m0^2)^2 + m0^2 Gamma^2), so
  r^2 = 2 ln(1 + u^2) with u = (m^2 - m0^2) / (m0 Gamma) [m0, Gamma in GeV]. r = sqrt(2) u sqrt(ln(1 + u^2) / u^2)
  keeps the sign of u and is smooth at u = 0. The "chi2" is then a -2 ln likelihood, not chi2 distributed.

:class:`FixedMass` is the hard constraint m_jj = m0 [GeV], solved with a Lagrange multiplier.

The parameters are traced leaves (changing m0 or a width does not recompile); the class is static.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

__all__ = ["BreitWignerMass", "FixedMass", "GaussianMass", "MassConstraint"]


def _check_positive(name: str, value: float) -> float:
    if isinstance(value, jax.core.Tracer):  # built inside a traced function (derivatives w.r.t. m0): check later
        return value
    v = float(value)
    if not (v > 0 and v < float("inf")):
        raise ValueError(f"{name} must be a positive finite mass [GeV], got {value!r}")
    return v


class MassConstraint(eqx.Module):
    """Base class of the dijet-mass terms; ``m0`` is the resonance mass [GeV]."""

    m0: float

    @property
    def hard(self) -> bool:
        """True for a hard constraint (Lagrange multiplier), False for a prior term (soft constraint)."""
        return False

    @property
    def multimodal(self) -> bool:
        """True when the fit chi2 can have two local minima (the fit then starts a second solve on the pole)."""
        return False

    def residual(self, mjj):  # pragma: no cover - abstract
        """Signed residual r(m_jj) with r^2 = -2 ln(prior / prior_max); m_jj [GeV]."""
        raise NotImplementedError


class GaussianMass(MassConstraint):
    """Soft constraint: Gaussian prior of mean ``m0`` and width ``sigma`` [GeV] on m_jj."""

    sigma: float

    def __init__(self, m0: float, sigma: float):
        self.m0 = _check_positive("m0", m0)
        self.sigma = _check_positive("sigma", sigma)

    def residual(self, mjj):
        return (mjj - self.m0) / self.sigma


class BreitWignerMass(MassConstraint):
    """Soft constraint: relativistic Breit-Wigner prior of pole mass ``m0`` and width ``gamma`` [GeV] on m_jj."""

    gamma: float

    def __init__(self, m0: float, gamma: float):
        self.m0 = _check_positive("m0", m0)
        self.gamma = _check_positive("gamma", gamma)

    @property
    def multimodal(self) -> bool:
        return True

    def residual(self, mjj):
        u = (mjj * mjj - self.m0 * self.m0) / (self.m0 * self.gamma)
        x = u * u
        small = x < 1e-8
        safe = jnp.where(small, 1.0, x)
        ratio = jnp.where(small, 1.0 - 0.5 * x, jnp.log1p(safe) / safe)  # ln(1 + x) / x, smooth at 0
        return jnp.sqrt(2.0) * u * jnp.sqrt(ratio)


class FixedMass(MassConstraint):
    """Hard constraint m_jj = ``m0`` [GeV] (Lagrange multiplier)."""

    def __init__(self, m0: float):
        self.m0 = _check_positive("m0", m0)

    @property
    def hard(self) -> bool:
        return True

    def residual(self, mjj):
        """The constraint function g(m_jj) = m_jj - m0 [GeV] (zero at the solution)."""
        return mjj - self.m0
