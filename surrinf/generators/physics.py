"""Physics-informed loss terms for surrogates trained through generated (or reconstructed) showers.

Energy consistency: the visible energy sum_i e_i of a generated shower should follow the detector response
f(E) at incident energy E. The penalty is

    lambda * mean_n ((sum_i e_ni - f(E_n)) / E_n)^2,

i.e. the squared residual of the issue's lambda (sum e - f(E))^2 measured relative to E, so that one lambda
weighs 1 GeV and 1 TeV showers alike (the absolute form is dominated by the highest energies). f is a
polynomial in E [GeV] of degree 1 or 2 with coefficients (c0 [GeV], c1, c2 [1/GeV]):

- fixed: coefficients given (for example :meth:`EnergyConsistency.fit_reference` on reference showers) and
  not trained (stored as a static tuple, so the trainer does not touch them);
- learnable: coefficients are an array leaf of the model and are fitted jointly with it ("linear" or
  "quadratic"); initialise them from the data or from a guess.

``EnergyConsistency`` is an ``eqx.Module``: put it inside a surrogate (a field) so that learnable
coefficients are trained and saved with the model, and call :meth:`penalty` in the model's loss.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["EnergyConsistency"]


class EnergyConsistency(eqx.Module):
    """Energy-consistency penalty ``lam * mean(((sum e - f(E)) / E)^2)`` with f a polynomial in E [GeV]."""

    lam: float = eqx.field(static=True)
    learnable: bool = eqx.field(static=True)
    fixed_coeffs: tuple[float, ...] = eqx.field(static=True)
    coeffs: jax.Array | None  # trainable (degree + 1,) when learnable

    def __init__(self, coeffs: Any, lam: float = 1.0, learnable: bool = False):
        c = np.asarray(coeffs, dtype=np.float64).reshape(-1)
        if c.size not in (2, 3) or not np.all(np.isfinite(c)):
            raise ValueError(
                f"coeffs must be 2 (linear: c0 [GeV], c1) or 3 (quadratic: + c2 [1/GeV]) finite numbers, got {coeffs!r}"
            )
        if not (np.isfinite(lam) and lam >= 0):
            raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
        self.lam = float(lam)
        self.learnable = bool(learnable)
        self.fixed_coeffs = () if learnable else tuple(float(x) for x in c)
        self.coeffs = jnp.asarray(c, dtype=jnp.float32) if learnable else None

    @classmethod
    def fit_reference(
        cls, energies_gev: Any, visible_gev: Any, degree: int = 1, lam: float = 1.0, learnable: bool = False
    ) -> EnergyConsistency:
        """Least-squares polynomial f(E) of ``degree`` (1 or 2) through (E [GeV], sum e [GeV]) of reference
        showers, weighted by 1/E^2 (the relative residual the penalty uses)."""
        if degree not in (1, 2):
            raise ValueError(f"degree must be 1 (linear) or 2 (quadratic), got {degree!r}")
        e = np.asarray(energies_gev, dtype=np.float64).reshape(-1)
        v = np.asarray(visible_gev, dtype=np.float64).reshape(-1)
        if e.shape != v.shape or e.size <= degree or np.any(e <= 0):
            raise ValueError("energies_gev (N,) > 0 and visible_gev (N,) must match, with N > degree")
        design = np.stack([e**k for k in range(degree + 1)], axis=1) / e[:, None]
        coeffs, *_ = np.linalg.lstsq(design, v / e, rcond=None)
        return cls(coeffs, lam=lam, learnable=learnable)

    @property
    def degree(self) -> int:
        return (int(self.coeffs.shape[0]) if self.learnable else len(self.fixed_coeffs)) - 1

    def response(self, energies_gev: jax.Array) -> jax.Array:
        """f(E) [GeV] for E (N,) [GeV]."""
        c = self.coeffs if self.learnable else jnp.asarray(self.fixed_coeffs, dtype=jnp.float32)
        e = jnp.asarray(energies_gev, dtype=jnp.float32)
        return sum(c[k] * e**k for k in range(c.shape[0]))

    def residual(self, showers_gev: jax.Array, energies_gev: jax.Array) -> jax.Array:
        """(sum e - f(E)) / E per shower (N,) for showers (N, V) [GeV] at energies (N,) [GeV]."""
        e = jnp.asarray(energies_gev, dtype=jnp.float32).reshape(-1)
        return (jnp.sum(showers_gev, axis=-1) - self.response(e)) / e

    def penalty(self, showers_gev: jax.Array, energies_gev: jax.Array) -> jax.Array:
        """Scalar lam * mean(residual^2) (a per-row mean, as the trainer expects)."""
        r = self.residual(showers_gev, energies_gev)
        return self.lam * jnp.mean(r * r)

    def config(self) -> dict[str, Any]:
        """JSON-safe description; learnable coefficients are saved as leaves (this holds their initial count)."""
        coeffs = [0.0] * (self.degree + 1) if self.learnable else list(self.fixed_coeffs)
        return {"coeffs": coeffs, "lam": self.lam, "learnable": self.learnable}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> EnergyConsistency:
        return cls(config["coeffs"], lam=config["lam"], learnable=config["learnable"])
