"""The sagitta as a validation tool: its 1/pT scaling and the momentum resolution of a muon spectrometer.

A track of transverse momentum pT [GeV] in a field B [T] has the sagitta s = c B L^2 / (8 pT) over a chord of
length L [m] (:func:`surrinf.sim.muon.sagitta_m`, c = 0.299792458). For hits (N, 3) at three stations (from the
reference :class:`~surrinf.sim.muon.MuonSpectrometer` or a generated-hit model) :func:`sagitta_scaling` measures

- the charge-folded sagitta q * s_meas (:func:`~surrinf.sim.muon.measure_sagitta` times the true charge, positive
  on average) per pT bin: mean, spread, standard error of the mean, against the bin's mean 1/pT (the mean sagitta
  is linear in 1/pT, so the mean of 1/pT is the exact abscissa even for wide bins);
- a weighted least-squares line s = a + b / pT through the bin means (weights 1 / SE^2), with chi2/ndf, the
  intercept's pull a / sigma_a (0 for an unbiased detector) and the slope's pull (b - c B L^2 / 8) / sigma_b;
- the momentum resolution sigma(pT)/pT per bin, equal to first order to the relative sagitta resolution: the
  standard deviation of the per-track relative residual (q s_meas - (a + b / pT)) / (b / pT) (per track, so the
  spread of 1/pT inside a wide bin does not enter), and a fit sigma(pT)/pT = sqrt((r pT)^2 + m^2): r [1/GeV] the
  station-resolution term (sigma_s / b with sigma_s the sagitta resolution), m the multiple-scattering term
  (constant: both the scattering angle and the sagitta fall as 1/p).

The line is the small-angle law: the exact circle's sagitta exceeds it by the factor 1 + (L / 4R)^2, R = pT / (c B),
and a middle-station incidence angle phi0 by 1 / cos^2(phi0); choose pT bins (and phi0 = 0) where these are below
the statistical precision of the bin means (e.g. pT >= 50 GeV for B = 0.5 T, L = 5 m: (L / 4R)^2 < 1.5e-5).
Everything is computed in float64 numpy.

:func:`compare_sagitta` puts a reference and a generated measurement side by side: a Table of the fitted
quantities with the pulls between the two samples, the chi2 of the bin-by-bin differences of the mean sagitta
and of the resolution, and a figure (s vs 1/pT with the lines; sigma(pT)/pT vs pT).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from scipy.optimize import curve_fit

from ..report.figure import new_figure, save_figure
from ..report.measurement import Measurement
from ..report.table import Table
from ..sim.muon import C_GEV_PER_T_M, measure_sagitta

__all__ = ["SagittaComparison", "SagittaScaling", "compare_sagitta", "sagitta_scaling"]

#: pT values are used as bins by themselves when there are at most this many distinct values.
_MAX_DISCRETE = 64
#: Number of quantile bins of pT otherwise.
_N_QUANTILE_BINS = 8


@dataclass(frozen=True)
class SagittaScaling:
    """Sagitta vs 1/pT and momentum resolution of one sample (see the module docstring). Per bin (K,): ``pt_gev``
    = 1 / mean(1/pT), ``inv_pt`` = mean(1/pT) [1/GeV], ``n`` tracks, ``mean_m``, ``sigma_m``, ``mean_err_m`` of the
    charge-folded sagitta [m], ``resolution`` and ``resolution_err`` (sigma(pT)/pT). Line s = a + b / pT:
    ``intercept_m`` a [m], ``slope_gev_m`` b [GeV m], their errors and covariance, ``chi2``, ``ndf``;
    ``expected_slope_gev_m`` = c B L^2 / 8. Resolution fit: ``res_term_per_gev`` r, ``ms_term`` m, errors,
    ``res_chi2``, ``res_ndf``."""

    pt_gev: np.ndarray
    inv_pt: np.ndarray
    n: np.ndarray
    mean_m: np.ndarray
    sigma_m: np.ndarray
    mean_err_m: np.ndarray
    resolution: np.ndarray
    resolution_err: np.ndarray
    intercept_m: float
    intercept_err_m: float
    slope_gev_m: float
    slope_err_gev_m: float
    slope_intercept_cov: float
    chi2: float
    ndf: int
    expected_slope_gev_m: float
    res_term_per_gev: float
    res_term_err: float
    ms_term: float
    ms_term_err: float
    res_chi2: float
    res_ndf: int

    @property
    def slope_pull(self) -> float:
        """(b - c B L^2 / 8) / sigma_b."""
        return (self.slope_gev_m - self.expected_slope_gev_m) / self.slope_err_gev_m

    @property
    def intercept_pull(self) -> float:
        """a / sigma_a (0 for an unbiased sagitta)."""
        return self.intercept_m / self.intercept_err_m

    @property
    def chi2_pvalue(self) -> float:
        return float(stats.chi2.sf(self.chi2, self.ndf)) if self.ndf > 0 else float("nan")

    def line(self, inv_pt: Any) -> np.ndarray:
        """Fitted a + b / pT [m] at ``inv_pt`` [1/GeV]."""
        return self.intercept_m + self.slope_gev_m * np.asarray(inv_pt, dtype=np.float64)

    def resolution_curve(self, pt_gev: Any) -> np.ndarray:
        """Fitted sigma(pT)/pT = sqrt((r pT)^2 + m^2) at ``pt_gev`` [GeV]."""
        pt = np.asarray(pt_gev, dtype=np.float64)
        return np.hypot(self.res_term_per_gev * pt, self.ms_term)


def _check_inputs(hits_m: Any, pt_gev: Any, charge: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h = np.asarray(hits_m, dtype=np.float64)
    if h.ndim != 2 or h.shape[1] != 3:
        raise ValueError(f"hits_m must have shape (N, 3) [m], got {h.shape}")
    n = h.shape[0]
    pt = np.asarray(pt_gev, dtype=np.float64)
    if pt.shape != (n,) or not np.all(np.isfinite(pt)) or np.any(pt <= 0):
        raise ValueError(f"pt_gev must be finite, > 0 [GeV] and of shape ({n},) like hits_m, got shape {pt.shape}")
    q = np.asarray(charge, dtype=np.float64)
    if q.ndim == 0:
        q = np.full(n, float(q))
    if q.shape != (n,) or not np.all(np.abs(q) == 1.0):
        raise ValueError(f"charge must be +1 or -1, a scalar or of shape ({n},), got shape {q.shape}")
    return h, pt, q


def _bin_index(pt: np.ndarray, pt_bins: Any) -> tuple[np.ndarray, int]:
    """Bin index per track and the number of bins: distinct values, quantile bins, or the given edges."""
    if pt_bins is None:
        values = np.unique(pt)
        if values.size <= _MAX_DISCRETE:
            return np.searchsorted(values, pt), values.size
        edges = np.quantile(pt, np.linspace(0.0, 1.0, _N_QUANTILE_BINS + 1))
    else:
        edges = np.asarray(pt_bins, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) > 0) or edges[0] <= 0:
            raise ValueError(f"pt_bins must be increasing positive bin edges [GeV] (K + 1,), got {pt_bins!r}")
    idx = np.clip(np.searchsorted(edges, pt, side="right") - 1, 0, edges.size - 2)
    outside = (pt < edges[0]) | (pt > edges[-1])
    idx = np.where(outside, -1, idx)
    return idx, edges.size - 1


def _line_fit(x: np.ndarray, y: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Weighted least squares y = p0 + p1 x: parameters (2,), covariance (2, 2), chi2."""
    w = 1.0 / dy**2
    design = np.stack([np.ones_like(x), x], axis=1)
    cov = np.linalg.inv(design.T @ (design * w[:, None]))
    p = cov @ (design.T @ (w * y))
    chi2 = float(np.sum(w * (y - design @ p) ** 2))
    return p, cov, chi2


def sagitta_scaling(
    hits_m: Any,
    pt_gev: Any,
    charge: Any,
    stations_m: Any,
    b_tesla: float,
    *,
    pt_bins: Any = None,
    min_per_bin: int = 10,
) -> SagittaScaling:
    """Measure the sagitta scaling of hits (N, 3) [m] at ``stations_m`` (3,) [m] (centred middle station) for true
    ``pt_gev`` (N,) [GeV] and ``charge`` (N,) or scalar (+-1) in the field ``b_tesla`` [T]; see the module
    docstring. ``pt_bins``: bin edges [GeV] (default: each distinct pT value if there are at most 64, else 8
    quantile bins); bins with fewer than ``min_per_bin`` tracks are dropped and at least 3 must remain."""
    h, pt, q = _check_inputs(hits_m, pt_gev, charge)
    st = np.asarray(stations_m, dtype=np.float64)
    if st.shape != (3,) or not (st[0] < st[1] < st[2]):
        raise ValueError(f"stations_m must be 3 increasing positions [m], got {stations_m!r}")
    if not np.isclose(st[1] - st[0], st[2] - st[1], rtol=1e-9, atol=0.0):
        raise ValueError(f"stations_m: the middle station must be at the centre for s = c B L^2 / 8, got {st}")
    if isinstance(b_tesla, bool) or not (isinstance(b_tesla, (int, float, np.integer, np.floating)) and b_tesla > 0):
        raise ValueError(f"b_tesla must be a number > 0 [T], got {b_tesla!r}")
    if isinstance(min_per_bin, bool) or not isinstance(min_per_bin, (int, np.integer)) or min_per_bin < 3:
        raise ValueError(f"min_per_bin must be an integer >= 3, got {min_per_bin!r}")
    s = measure_sagitta(h, st, q)
    idx, k = _bin_index(pt, pt_bins)
    inv = 1.0 / pt
    keep = [j for j in range(k) if np.count_nonzero(idx == j) >= min_per_bin]
    if len(keep) < 3:
        raise ValueError(f"need at least 3 pT bins with >= {min_per_bin} tracks for the line fit, got {len(keep)}")
    members = [idx == j for j in keep]
    n = np.array([m.sum() for m in members])
    inv_pt = np.array([inv[m].mean() for m in members])
    mean = np.array([s[m].mean() for m in members])
    sigma = np.array([s[m].std(ddof=1) for m in members])
    mean_err = sigma / np.sqrt(n)
    if np.any(mean_err <= 0):
        raise ValueError("hits_m: the sagitta has zero spread in a pT bin (noise-free hits); the fit needs errors")
    p, cov, chi2 = _line_fit(inv_pt, mean, mean_err)
    # relative residual per track: (q s - (a + b / pT)) / (b / pT) ~ sigma(pT)/pT to first order
    rel = (s - (p[0] + p[1] * inv)) / (p[1] * inv)
    res = np.array([rel[m].std(ddof=1) for m in members])
    res_err = res / np.sqrt(2.0 * (n - 1))
    r, r_err, m_term, m_err, res_chi2 = _resolution_fit(1.0 / inv_pt, res, res_err)
    return SagittaScaling(
        pt_gev=1.0 / inv_pt,
        inv_pt=inv_pt,
        n=n,
        mean_m=mean,
        sigma_m=sigma,
        mean_err_m=mean_err,
        resolution=res,
        resolution_err=res_err,
        intercept_m=float(p[0]),
        intercept_err_m=float(math.sqrt(cov[0, 0])),
        slope_gev_m=float(p[1]),
        slope_err_gev_m=float(math.sqrt(cov[1, 1])),
        slope_intercept_cov=float(cov[0, 1]),
        chi2=chi2,
        ndf=len(keep) - 2,
        expected_slope_gev_m=C_GEV_PER_T_M * float(b_tesla) * float(st[2] - st[0]) ** 2 / 8.0,
        res_term_per_gev=r,
        res_term_err=r_err,
        ms_term=m_term,
        ms_term_err=m_err,
        res_chi2=res_chi2,
        res_ndf=len(keep) - 2,
    )


def _resolution_fit(pt: np.ndarray, y: np.ndarray, dy: np.ndarray) -> tuple[float, float, float, float, float]:
    """Weighted fit of sigma(pT)/pT = sqrt((r pT)^2 + m^2), r, m >= 0: (r, r_err, m, m_err, chi2)."""

    def model(x: np.ndarray, r: float, m: float) -> np.ndarray:
        return np.hypot(r * x, m)

    # start: the resolution term from the highest-pT bin, the MS term from the lowest
    p0 = [max(y[-1] / pt[-1], 1e-12), max(y[0] * 0.5, 1e-12)] if pt[-1] > pt[0] else [y.mean() / pt.mean(), 1e-6]
    popt, pcov = curve_fit(model, pt, y, p0=p0, sigma=dy, absolute_sigma=True, bounds=(0.0, np.inf))
    err = np.sqrt(np.diag(pcov))
    chi2 = float(np.sum(((model(pt, *popt) - y) / dy) ** 2))
    return float(popt[0]), float(err[0]), float(popt[1]), float(err[1]), chi2


@dataclass(frozen=True)
class SagittaComparison:
    """Reference vs generated sagitta scaling: ``table`` (a :class:`~surrinf.report.table.Table`), ``figure_path``
    (None unless a path was given; the figure is then saved and closed) and the consistency numbers:
    ``slope_pull`` (generated - reference slope over the combined error), ``mean_chi2`` / ``resolution_chi2``
    with ``ndf`` (bin-by-bin differences of the mean sagitta and of the resolution, on common bins)."""

    table: Table
    figure_path: Path | None
    slope_pull: float
    mean_chi2: float
    resolution_chi2: float
    ndf: int
    figure: Any = None


def _pull(a: float, da: float, b: float, db: float) -> float:
    e = math.hypot(da, db)
    return (b - a) / e if e > 0 else float("nan")


def compare_sagitta(
    reference: SagittaScaling, generated: SagittaScaling, path: str | Path | None = None
) -> SagittaComparison:
    """Table and figure of reference vs generated sagitta scaling (both measured on the same pT bins, e.g. the
    same conditions). With ``path`` the figure (left: mean charge-folded sagitta vs 1/pT with the fitted and the
    expected lines; right: sigma(pT)/pT vs pT with the resolution fits) is saved there and closed; otherwise it is
    returned in ``figure``."""
    if reference.inv_pt.shape != generated.inv_pt.shape or not np.allclose(
        reference.inv_pt, generated.inv_pt, rtol=1e-6
    ):
        raise ValueError("reference and generated must be measured on the same pT bins (same conditions and pt_bins)")
    ref, gen = reference, generated
    d_mean = (gen.mean_m - ref.mean_m) / np.hypot(gen.mean_err_m, ref.mean_err_m)
    d_res = (gen.resolution - ref.resolution) / np.hypot(gen.resolution_err, ref.resolution_err)
    slope_pull = _pull(ref.slope_gev_m, ref.slope_err_gev_m, gen.slope_gev_m, gen.slope_err_gev_m)
    rows: list[list[Any]] = [
        [
            "slope b [GeV mm]",
            Measurement(ref.slope_gev_m * 1e3, ref.slope_err_gev_m * 1e3),
            Measurement(gen.slope_gev_m * 1e3, gen.slope_err_gev_m * 1e3),
            ref.expected_slope_gev_m * 1e3,
            slope_pull,
        ],
        ["slope pull vs c B L^2 / 8", ref.slope_pull, gen.slope_pull, 0.0, None],
        [
            "intercept a [um]",
            Measurement(ref.intercept_m * 1e6, ref.intercept_err_m * 1e6),
            Measurement(gen.intercept_m * 1e6, gen.intercept_err_m * 1e6),
            0.0,
            _pull(ref.intercept_m, ref.intercept_err_m, gen.intercept_m, gen.intercept_err_m),
        ],
        ["line chi2 / ndf", f"{ref.chi2:.1f} / {ref.ndf}", f"{gen.chi2:.1f} / {gen.ndf}", None, None],
        [
            "resolution term r [1/TeV]",
            Measurement(ref.res_term_per_gev * 1e3, ref.res_term_err * 1e3),
            Measurement(gen.res_term_per_gev * 1e3, gen.res_term_err * 1e3),
            None,
            _pull(ref.res_term_per_gev, ref.res_term_err, gen.res_term_per_gev, gen.res_term_err),
        ],
        [
            "multiple-scattering term m",
            Measurement(ref.ms_term, ref.ms_term_err),
            Measurement(gen.ms_term, gen.ms_term_err),
            None,
            _pull(ref.ms_term, ref.ms_term_err, gen.ms_term, gen.ms_term_err),
        ],
        ["bin-by-bin mean sagitta chi2 / ndf", None, f"{float(np.sum(d_mean**2)):.1f} / {d_mean.size}", None, None],
        ["bin-by-bin resolution chi2 / ndf", None, f"{float(np.sum(d_res**2)):.1f} / {d_res.size}", None, None],
    ]
    table = Table(
        "Sagitta scaling: reference vs generated",
        ["quantity", "reference", "generated", "expected", "pull (gen - ref)"],
        rows,
        caption="Charge-folded sagitta s = a + b / pT per pT bin and sigma(pT)/pT = sqrt((r pT)^2 + m^2).",
    )
    fig, axes = new_figure(ncols=2, figsize=(16.0, 7.0))
    ax = axes[0]
    x = np.linspace(0.0, ref.inv_pt.max() * 1.05, 50)
    for res_, label, colour, marker in ((ref, "reference", "k", "o"), (gen, "generated", "tab:red", "s")):
        ax.errorbar(res_.inv_pt, res_.mean_m * 1e3, yerr=res_.mean_err_m * 1e3, fmt=marker, color=colour, label=label)
        ax.plot(x, res_.line(x) * 1e3, color=colour, lw=1)
    ax.plot(x, ref.expected_slope_gev_m * x * 1e3, "--", color="tab:blue", lw=1, label="c B L$^2$ / (8 $p_T$)")
    ax.set_xlabel("1 / $p_T$ [1/GeV]")
    ax.set_ylabel("q $\\times$ sagitta [mm]")
    ax.legend()
    ax = axes[1]
    xp = np.geomspace(ref.pt_gev.min() * 0.9, ref.pt_gev.max() * 1.1, 100)
    for res_, label, colour, marker in ((ref, "reference", "k", "o"), (gen, "generated", "tab:red", "s")):
        ax.errorbar(res_.pt_gev, res_.resolution, yerr=res_.resolution_err, fmt=marker, color=colour, label=label)
        ax.plot(xp, res_.resolution_curve(xp), color=colour, lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("$p_T$ [GeV]")
    ax.set_ylabel("$\\sigma(p_T) / p_T$")
    ax.legend()
    saved = save_figure(fig, path) if path is not None else None
    return SagittaComparison(
        table=table,
        figure_path=saved,
        slope_pull=slope_pull,
        mean_chi2=float(np.sum(d_mean**2)),
        resolution_chi2=float(np.sum(d_res**2)),
        ndf=int(d_mean.size),
        figure=None if saved is not None else fig,
    )
