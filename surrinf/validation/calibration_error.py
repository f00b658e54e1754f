"""Calibration error of the energy response: CE(E) = |E[S | E] - f(E)| on a grid of incident energies.

S is the summed observation (visible energy) of a shower, f the target response. f is fitted on a
held-out split of the *reference* only (S/E as a polynomial in ln E, least squares), and never sees the
events it is compared with: the other split of the reference gives the closure (reference vs its own
target) and the candidate gives its calibration error. Per energy bin the mean of S - f(E_i) over the
events in the bin (so the spread of E inside a bin does not matter) is reported with its standard error,
together with the resolution ratio std(S/f(E)) candidate / reference, which separates a scale problem
(CE) from a resolution problem.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class CalibrationErrorResult:
    """Per energy bin (K bins): edges (K+1,) [GeV]; centres (K,) geometric [GeV]; target f at the
    centres; ce_cand / ce_cand_err and ce_ref / ce_ref_err = mean(S - f(E)) and its standard error
    (signed; CE is its absolute value) for the candidate and the held-out reference; relative versions
    divided by f; resolution of S/f(E) for both and their ratio; counts; the fit coefficients."""

    edges: np.ndarray
    centres: np.ndarray
    target: np.ndarray
    ce_cand: np.ndarray
    ce_cand_err: np.ndarray
    ce_ref: np.ndarray
    ce_ref_err: np.ndarray
    resolution_cand: np.ndarray
    resolution_ref: np.ndarray
    resolution_ratio: np.ndarray
    resolution_ratio_err: np.ndarray
    n_cand: np.ndarray
    n_ref: np.ndarray
    coefficients: np.ndarray

    @property
    def rel_ce_cand(self) -> np.ndarray:
        return np.abs(self.ce_cand) / self.target

    @property
    def rel_ce_cand_err(self) -> np.ndarray:
        return self.ce_cand_err / self.target

    def target_response(self, energies_gev: np.ndarray) -> np.ndarray:
        """The fitted f(E) = E * poly(ln E) [units of S]."""
        e = np.asarray(energies_gev, dtype=np.float64)
        return e * np.polynomial.polynomial.polyval(np.log(e), self.coefficients)

    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}


def _check(name: str, e: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(e, dtype=np.float64).reshape(-1)
    s = np.asarray(s, dtype=np.float64).reshape(-1)
    if e.shape != s.shape:
        raise ValueError(f"{name}: energies and responses must have the same length, got {e.size} and {s.size}")
    if e.size < 20:
        raise ValueError(f"{name}: need at least 20 showers, got {e.size}")
    if not (np.all(np.isfinite(e)) and np.all(np.isfinite(s))) or np.any(e <= 0):
        raise ValueError(f"{name}: energies must be positive and finite [GeV], responses finite")
    return e, s


def calibration_error(
    ref_energies_gev: np.ndarray,
    ref_response: np.ndarray,
    cand_energies_gev: np.ndarray,
    cand_response: np.ndarray,
    *,
    n_bins: int = 10,
    degree: int = 3,
    fit_fraction: float = 0.5,
    seed: int = 0,
) -> CalibrationErrorResult:
    """CE(E) of a candidate against a target response fitted on a random ``fit_fraction`` of the
    reference; the rest of the reference gives the closure. Bins are logarithmic over the candidate's
    energy range. ``seed`` drives the split."""
    e_r, s_r = _check("reference", ref_energies_gev, ref_response)
    e_c, s_c = _check("candidate", cand_energies_gev, cand_response)
    if not 0.0 < fit_fraction < 1.0:
        raise ValueError(f"fit_fraction must lie in (0, 1), got {fit_fraction}")
    rng = np.random.default_rng(seed)
    fit = rng.random(e_r.size) < fit_fraction
    if fit.sum() <= degree + 1 or (~fit).sum() < 10:
        raise ValueError("reference too small to split into a fit part and a closure part")
    coef = np.polynomial.polynomial.polyfit(np.log(e_r[fit]), s_r[fit] / e_r[fit], degree)

    def f(e: np.ndarray) -> np.ndarray:
        return e * np.polynomial.polynomial.polyval(np.log(e), coef)

    edges = np.geomspace(e_c.min(), e_c.max() * (1 + 1e-9), n_bins + 1)
    centres = np.sqrt(edges[:-1] * edges[1:])

    def per_bin(e: np.ndarray, s: np.ndarray):
        idx = np.clip(np.searchsorted(edges, e, side="right") - 1, 0, n_bins - 1)
        inside = (e >= edges[0]) & (e <= edges[-1])
        resid = s - f(e)
        ratio = s / f(e)
        out = np.full((5, n_bins), np.nan)
        for k in range(n_bins):
            sel = inside & (idx == k)
            nk = int(sel.sum())
            out[4, k] = nk
            if nk >= 2:
                out[0, k] = resid[sel].mean()
                out[1, k] = resid[sel].std(ddof=1) / np.sqrt(nk)
                out[2, k] = ratio[sel].std(ddof=1)
                out[3, k] = out[2, k] / np.sqrt(2.0 * (nk - 1))
        return out

    cand = per_bin(e_c, s_c)
    ref = per_bin(e_r[~fit], s_r[~fit])
    ratio = cand[2] / ref[2]
    ratio_err = ratio * np.sqrt((cand[3] / cand[2]) ** 2 + (ref[3] / ref[2]) ** 2)
    return CalibrationErrorResult(
        edges=edges,
        centres=centres,
        target=f(centres),
        ce_cand=cand[0],
        ce_cand_err=cand[1],
        ce_ref=ref[0],
        ce_ref_err=ref[1],
        resolution_cand=cand[2],
        resolution_ref=ref[2],
        resolution_ratio=ratio,
        resolution_ratio_err=ratio_err,
        n_cand=cand[4].astype(int),
        n_ref=ref[4].astype(int),
        coefficients=coef,
    )
