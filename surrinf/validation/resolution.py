"""Energy response and resolution of any response model, and the calorimeter resolution fit.

sigma_E / E = a / sqrt(E) (+) b (+) c / E  (stochastic a [GeV^1/2], constant b, noise c [GeV]; (+) is the
quadrature sum), fitted by weighted least squares to the measured relative widths.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np
from scipy.optimize import curve_fit

from ..response import ResponseModel, make_conditions


@dataclass(frozen=True)
class EnergyResponse:
    """Mean and width of the summed observation at each incident energy.

    energies_gev: (K,) incident energies [GeV]; mean, sigma: (K,) of the voxel sum [response units, GeV
    visible for the reference]; mean_err, sigma_err: (K,) their statistical uncertainties; n: showers per
    energy.
    """

    energies_gev: np.ndarray
    mean: np.ndarray
    sigma: np.ndarray
    mean_err: np.ndarray
    sigma_err: np.ndarray
    n: int

    @property
    def relative_resolution(self) -> np.ndarray:
        """sigma / mean, (K,)."""
        return self.sigma / self.mean

    @property
    def relative_resolution_err(self) -> np.ndarray:
        """Uncertainty of sigma / mean from both estimates (Gaussian approximation), (K,)."""
        r = self.relative_resolution
        return r * np.sqrt((self.sigma_err / self.sigma) ** 2 + (self.mean_err / self.mean) ** 2)


def measure_response(
    response: ResponseModel,
    key: jax.Array,
    energies_gev: np.ndarray,
    n_per_energy: int,
    theta: tuple[float, float, float] | None = None,
) -> EnergyResponse:
    """Sample ``n_per_energy`` showers at each incident energy [GeV] and measure the mean and width of the
    summed observation. Energy k uses ``fold_in(key, k)``."""
    energies = np.asarray(energies_gev, dtype=np.float64).reshape(-1)
    if energies.size == 0 or np.any(~np.isfinite(energies)) or np.any(energies <= 0):
        raise ValueError("energies_gev must be a non-empty array of positive incident energies [GeV]")
    if int(n_per_energy) < 2:
        raise ValueError(f"n_per_energy must be >= 2, got {n_per_energy}")
    n = int(n_per_energy)
    mean, sigma = [], []
    for k, e in enumerate(energies):
        cond = make_conditions(np.full(n, e), theta=theta)
        total = np.asarray(response.sample(jax.random.fold_in(key, k), cond), dtype=np.float64).sum(axis=1)
        mean.append(total.mean())
        sigma.append(total.std(ddof=1))
    mean, sigma = np.array(mean), np.array(sigma)
    return EnergyResponse(energies, mean, sigma, sigma / np.sqrt(n), sigma / np.sqrt(2.0 * (n - 1)), n)


@dataclass(frozen=True)
class ResolutionFit:
    """Fitted sigma/E = a/sqrt(E) (+) b (+) c/E with 1-sigma errors; terms not fitted are 0 with error 0."""

    a: float
    b: float
    c: float
    a_err: float
    b_err: float
    c_err: float
    chi2: float
    ndf: int

    def __call__(self, energies_gev: np.ndarray) -> np.ndarray:
        """The fitted relative resolution at the given energies [GeV]."""
        return resolution_model(np.asarray(energies_gev, dtype=np.float64), self.a, self.b, self.c)


def resolution_model(e: np.ndarray, a: float, b: float = 0.0, c: float = 0.0) -> np.ndarray:
    """sigma/E = sqrt(a^2/E + b^2 + c^2/E^2) with E in GeV."""
    return np.sqrt(a**2 / e + b**2 + c**2 / e**2)


def fit_resolution(
    energies_gev: np.ndarray,
    rel_resolution: np.ndarray,
    rel_resolution_err: np.ndarray,
    terms: tuple[str, ...] = ("a", "b", "c"),
) -> ResolutionFit:
    """Weighted least-squares fit of the relative resolution; ``terms`` picks which of a, b, c float."""
    e = np.asarray(energies_gev, dtype=np.float64)
    y = np.asarray(rel_resolution, dtype=np.float64)
    dy = np.asarray(rel_resolution_err, dtype=np.float64)
    if not (e.shape == y.shape == dy.shape) or e.ndim != 1:
        raise ValueError("energies_gev, rel_resolution and rel_resolution_err must be 1-D arrays of equal length")
    if not set(terms) <= {"a", "b", "c"} or not terms:
        raise ValueError(f"terms must be a non-empty subset of ('a', 'b', 'c'), got {terms}")
    if e.size <= len(terms):
        raise ValueError(f"need more than {len(terms)} energy points to fit {terms}, got {e.size}")
    if np.any(dy <= 0) or np.any(~np.isfinite(y)):
        raise ValueError("rel_resolution must be finite and rel_resolution_err > 0")
    names = [t for t in ("a", "b", "c") if t in terms]

    def model(x, *p):
        vals = dict(zip(names, p, strict=True))
        return resolution_model(x, vals.get("a", 0.0), vals.get("b", 0.0), vals.get("c", 0.0))

    # Starting values: the stochastic term from the lowest-energy point, small b and c.
    p0 = [{"a": y[0] * np.sqrt(e[0]), "b": 0.01, "c": 0.01}[n] for n in names]
    popt, pcov = curve_fit(model, e, y, p0=p0, sigma=dy, absolute_sigma=True, bounds=(0.0, np.inf))
    perr = np.sqrt(np.diag(pcov))
    chi2 = float(np.sum(((model(e, *popt) - y) / dy) ** 2))
    vals = dict(zip(names, popt, strict=True))
    errs = dict(zip(names, perr, strict=True))
    return ResolutionFit(
        float(vals.get("a", 0.0)),
        float(vals.get("b", 0.0)),
        float(vals.get("c", 0.0)),
        float(errs.get("a", 0.0)),
        float(errs.get("b", 0.0)),
        float(errs.get("c", 0.0)),
        chi2,
        int(e.size - len(names)),
    )
