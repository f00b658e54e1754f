"""Low-dimensional shower summaries for calibration, and the reference simulator of summaries.

A summary x (3,) of one shower at beam energy E [GeV] (calorimeter sampling fraction f):

- ``response``: E_vis / (f E), the visible energy in units of the nominal visible energy (about s);
- ``front_fraction``: fraction of E_vis in the first third of the layers (longitudinal shape);
- ``noise_gev``: -sum over voxels of min(e, 0) [GeV], the summed negative cell energies, which only noise
  produces (about proportional to sigma_n times the number of empty cells).

Together they constrain theta = (s, a, sigma_n): the mean response gives s, its spread versus E the sampling
term a (sigma/E = a / sqrt(E)) and the noise, and the negative-energy sum the noise alone.
"""

from __future__ import annotations

import jax
import numpy as np

from surrinf.data.features import layer_energies
from surrinf.sim.calorimeter import Calorimeter

from .prior import BoxPrior

__all__ = ["SUMMARY_NAMES", "ReferenceSummaries", "log_uniform_energies", "shower_summary"]

SUMMARY_NAMES = ("response", "front_fraction", "noise_gev")


def shower_summary(showers: np.ndarray, energies_gev: np.ndarray, calorimeter: Calorimeter) -> np.ndarray:
    """(N, 3) float32 summaries (see the module docstring) of voxel showers (N, V) [GeV] at beam energies (N,) [GeV]."""
    s = np.asarray(showers, dtype=np.float64)
    e = np.asarray(energies_gev, dtype=np.float64).reshape(-1)
    if s.ndim != 2 or s.shape[1] != calorimeter.geometry.n_voxels:
        raise ValueError(f"showers must have shape (N, {calorimeter.geometry.n_voxels}) [GeV], got {s.shape}")
    if e.shape != (s.shape[0],) or not np.all(e > 0):
        raise ValueError(f"energies_gev must have shape ({s.shape[0]},) with values > 0 [GeV], got {e.shape}")
    e_vis = s.sum(axis=1)
    layers = np.asarray(layer_energies(s, calorimeter.geometry))
    n_front = max(1, layers.shape[1] // 3)
    front = layers[:, :n_front].sum(axis=1) / np.where(e_vis != 0, e_vis, 1.0)
    noise = -np.minimum(s, 0.0).sum(axis=1)
    response = e_vis / (calorimeter.material.sampling_fraction * e)
    return np.stack([response, front, noise], axis=1).astype(np.float32)


def log_uniform_energies(key: jax.Array, n: int, low_gev: float, high_gev: float) -> np.ndarray:
    """(n,) energies [GeV] log-uniform in [low_gev, high_gev]."""
    if not 0 < low_gev < high_gev:
        raise ValueError(f"need 0 < low_gev < high_gev [GeV], got {low_gev}, {high_gev}")
    u = np.asarray(jax.random.uniform(key, (int(n),)), dtype=np.float64)
    return np.exp(np.log(low_gev) + u * np.log(high_gev / low_gev))


class ReferenceSummaries:
    """The reference simulator seen through :func:`shower_summary`: ``simulate(key, energies, theta) -> x (N, 3)``."""

    names = SUMMARY_NAMES

    def __init__(self, calorimeter: Calorimeter):
        self.calorimeter = calorimeter

    def simulate(self, key: jax.Array, energies_gev: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """x (N, 3) for beam energies (N,) [GeV] and theta (3,) or (N, 3) = (s, a [GeV^1/2], sigma_n [GeV]).

        The calorimeter runs in float32 (the precision policy) even when called inside ``jax.enable_x64(True)``."""
        e = np.asarray(energies_gev, dtype=np.float64).reshape(-1)
        parts = []
        start = 0
        t = np.asarray(theta, dtype=np.float64)
        for batch in self.calorimeter.iter_simulate(key, e, t):
            stop = start + batch.showers.shape[0]
            parts.append(shower_summary(batch.showers, e[start:stop], self.calorimeter))
            start = stop
        return np.concatenate(parts) if parts else np.zeros((0, 3), np.float32)

    def training_set(
        self, key: jax.Array, n: int, prior: BoxPrior, energy_range_gev: tuple[float, float]
    ) -> dict[str, np.ndarray]:
        """n reference summaries with theta ~ prior and E log-uniform in ``energy_range_gev``:
        {"x": (n, 3), "energies_gev": (n,), "theta": (n, P)}."""
        k_t, k_e, k_s = jax.random.split(key, 3)
        theta = prior.sample(k_t, n)
        e = log_uniform_energies(k_e, n, *energy_range_gev)
        return {"x": self.simulate(k_s, e, theta), "energies_gev": e, "theta": theta}
