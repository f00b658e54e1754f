"""Pile-up validation: cell occupancy and per-cell energy variance as functions of the pile-up mean mu.

Pile-up adds soft deposits to otherwise empty cells and energy fluctuations to every cell, so a generator
conditioned on mu must reproduce how the occupancy (the fraction of cells above a threshold) and the per-cell
energy variance grow with mu. :func:`occupancy_vs_mu` measures both per mu bin with standard errors,
:func:`compare_pileup` tabulates a candidate against the reference (ratio and pull per bin) and
:func:`plot_occupancy_vs_mu` draws them.

Estimators (float64), per mu bin with n events and V cells:

- occupancy: o_n = (1/V) #{i : e_ni > threshold} per event; the mean over events, standard error
  std(o_n) / sqrt(n) (events are independent; correlations between cells are inside o_n);
- per-cell variance: v_i = sample variance (ddof 1) of e_ni over the events; the mean over cells
  vbar = (1/V) sum_i v_i. Its standard error is the delta-method (influence-function) one of a sample
  variance, std(d_n) / sqrt(n) with d_n = (1/V) sum_i (e_ni - mean_i)^2: exact to O(1/n) and it accounts for
  correlated cells. The per-cell errors are std((e_ni - mean_i)^2) / sqrt(n).

The occupancy also depends on the incident energy: compare samples with the same energy distribution in
each mu bin (generate with the reference's conditions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..report import Measurement, Table, new_figure

__all__ = ["OccupancyVsMu", "compare_pileup", "occupancy_vs_mu", "plot_occupancy_vs_mu"]

#: Most distinct mu values accepted when ``mu_bins`` is None (one bin per value).
MAX_DISTINCT_MU = 50


@dataclass(frozen=True)
class OccupancyVsMu:
    """Occupancy and per-cell variance per mu bin (K bins, V cells); energies in GeV.

    edges: (K + 1,) bin edges of mu, or None when each bin is one distinct mu value (``mu_values``).
    mu_values: (K,) the distinct mu of each bin (edges None) or the bin centres.
    mu_mean: (K,) mean mu of the events in each bin; n_events: (K,).
    occupancy, occupancy_err: (K,) mean fraction of cells above ``threshold_gev`` and its standard error.
    cell_occupancy: (K, V) fraction of events with each cell above threshold.
    variance, variance_err: (K,) mean over cells of the per-cell variance [GeV^2] and its standard error.
    cell_variance, cell_variance_err: (K, V) per-cell variance [GeV^2] and standard errors.
    """

    threshold_gev: float
    edges: np.ndarray | None
    mu_values: np.ndarray
    mu_mean: np.ndarray
    n_events: np.ndarray
    occupancy: np.ndarray
    occupancy_err: np.ndarray
    cell_occupancy: np.ndarray
    variance: np.ndarray
    variance_err: np.ndarray
    cell_variance: np.ndarray
    cell_variance_err: np.ndarray

    @property
    def n_bins(self) -> int:
        return int(self.mu_values.size)

    def bin_labels(self) -> list[str]:
        """Text label of each mu bin ("mu = 10" or "[5, 30)")."""
        if self.edges is None:
            return [f"mu = {m:.4g}" for m in self.mu_values]
        e = self.edges
        last = len(e) - 2
        return [f"[{e[k]:.4g}, {e[k + 1]:.4g}{']' if k == last else ')'}" for k in range(len(e) - 1)]


def _check_showers(showers_gev: Any, name: str) -> np.ndarray:
    s = np.asarray(showers_gev, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] < 2 or s.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, V) [GeV] with N >= 2 events, got {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} must be finite [GeV] (found NaN or inf)")
    return s


def occupancy_vs_mu(showers_gev: Any, mu: Any, threshold_gev: float, mu_bins: Any | None = None) -> OccupancyVsMu:
    """Occupancy and per-cell energy variance per mu bin (see the module docstring for the estimators).

    Args:
        showers_gev: (N, V) cell energies [GeV] (pile-up included).
        mu: (N,) pile-up mean of each event (>= 0).
        threshold_gev: a cell is occupied when its energy is > threshold_gev [GeV] (>= 0).
        mu_bins: None (one bin per distinct mu, at most :data:`MAX_DISTINCT_MU`) or increasing edges (K + 1,);
            bins are [e_k, e_k+1), the last one closed; events outside the edges are ignored.
    Raises ValueError for bad shapes or values and for a bin with fewer than 2 events.
    """
    s = _check_showers(showers_gev, "showers_gev")
    m = np.asarray(mu, dtype=np.float64)
    if m.shape != (s.shape[0],):
        raise ValueError(f"mu must have shape ({s.shape[0]},) (one pile-up mean per event), got {m.shape}")
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise ValueError("mu must be finite and >= 0")
    t = threshold_gev
    if (
        isinstance(t, bool)
        or not isinstance(t, (int, float, np.integer, np.floating))
        or not (math.isfinite(t) and t >= 0)
    ):
        raise ValueError(f"threshold_gev must be a finite number >= 0 [GeV], got {threshold_gev!r}")
    if mu_bins is None:
        values = np.unique(m)
        if values.size > MAX_DISTINCT_MU:
            raise ValueError(
                f"mu has {values.size} distinct values (> {MAX_DISTINCT_MU}); pass mu_bins (increasing edges)"
            )
        edges = None
        index = np.searchsorted(values, m)
        centres = values
    else:
        edges = np.asarray(mu_bins, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
            raise ValueError(f"mu_bins must be strictly increasing finite edges (K + 1,) with K >= 1, got {mu_bins!r}")
        index = np.searchsorted(edges, m, side="right") - 1
        index[m == edges[-1]] = edges.size - 2
        index[(m < edges[0]) | (m > edges[-1])] = -1
        centres = 0.5 * (edges[:-1] + edges[1:])
    k_bins, v = centres.size, s.shape[1]
    out = {
        name: np.zeros(k_bins)
        for name in ("mu_mean", "occupancy", "occupancy_err", "variance", "variance_err", "n_events")
    }
    cell_occ, cell_var, cell_var_err = (np.zeros((k_bins, v)) for _ in range(3))
    for k in range(k_bins):
        sel = index == k
        n = int(sel.sum())
        if n < 2:
            raise ValueError(f"mu bin {k} ({centres[k]:.4g}) holds {n} events; every bin needs at least 2")
        e = s[sel]
        hit = e > t
        occ = hit.mean(axis=1)
        dev2 = np.square(e - e.mean(axis=0))
        per_event = dev2.mean(axis=1)
        out["mu_mean"][k] = m[sel].mean()
        out["n_events"][k] = n
        out["occupancy"][k] = occ.mean()
        out["occupancy_err"][k] = occ.std(ddof=1) / math.sqrt(n)
        cell_occ[k] = hit.mean(axis=0)
        cell_var[k] = dev2.sum(axis=0) / (n - 1)
        cell_var_err[k] = dev2.std(axis=0, ddof=1) / math.sqrt(n)
        out["variance"][k] = cell_var[k].mean()
        out["variance_err"][k] = per_event.std(ddof=1) / math.sqrt(n)
    return OccupancyVsMu(
        threshold_gev=float(t),
        edges=edges,
        mu_values=centres,
        mu_mean=out["mu_mean"],
        n_events=out["n_events"].astype(np.int64),
        occupancy=out["occupancy"],
        occupancy_err=out["occupancy_err"],
        cell_occupancy=cell_occ,
        variance=out["variance"],
        variance_err=out["variance_err"],
        cell_variance=cell_var,
        cell_variance_err=cell_var_err,
    )


def _check_pair(reference: OccupancyVsMu, generated: OccupancyVsMu) -> None:
    for name, r in (("reference", reference), ("generated", generated)):
        if not isinstance(r, OccupancyVsMu):
            raise ValueError(f"{name} must be an OccupancyVsMu from occupancy_vs_mu, got {type(r).__name__}")
    same_edges = (reference.edges is None) == (generated.edges is None) and (
        reference.edges is None or np.array_equal(reference.edges, generated.edges)
    )
    if not same_edges or not np.array_equal(reference.mu_values, generated.mu_values):
        raise ValueError("reference and generated must use the same mu bins (same mu_bins, or the same mu values)")
    if reference.threshold_gev != generated.threshold_gev:
        raise ValueError(
            f"reference and generated use different thresholds ({reference.threshold_gev} vs "
            f"{generated.threshold_gev} GeV)"
        )
    if reference.cell_variance.shape[1] != generated.cell_variance.shape[1]:
        raise ValueError("reference and generated have different numbers of cells")


def _ratio_pull(ref: float, ref_err: float, gen: float, gen_err: float) -> tuple[Measurement | None, float | None]:
    """gen / ref with its propagated error (None if ref is 0) and the pull (gen - ref) / sqrt(sum of err^2)."""
    ratio = None
    if ref != 0:
        r = gen / ref
        ratio = Measurement(r, abs(r) * math.hypot(gen_err / gen if gen else 0.0, ref_err / ref))
    err = math.hypot(ref_err, gen_err)
    pull = (gen - ref) / err if err > 0 else (0.0 if gen == ref else None)
    return ratio, pull


def compare_pileup(reference: OccupancyVsMu, generated: OccupancyVsMu) -> Table:
    """Table of occupancy and mean per-cell variance, reference vs generated, per mu bin, with the ratio
    generated / reference and the pull (generated - reference) / sqrt(err_ref^2 + err_gen^2).

    Both from :func:`occupancy_vs_mu` with the same mu bins and threshold (ValueError otherwise)."""
    _check_pair(reference, generated)
    rows = []
    for k, label in enumerate(reference.bin_labels()):
        occ_ratio, occ_pull = _ratio_pull(
            reference.occupancy[k], reference.occupancy_err[k], generated.occupancy[k], generated.occupancy_err[k]
        )
        var_ratio, var_pull = _ratio_pull(
            reference.variance[k], reference.variance_err[k], generated.variance[k], generated.variance_err[k]
        )
        rows.append(
            [
                label,
                float(reference.mu_mean[k]),
                Measurement(float(reference.occupancy[k]), float(reference.occupancy_err[k])),
                Measurement(float(generated.occupancy[k]), float(generated.occupancy_err[k])),
                occ_ratio,
                occ_pull,
                Measurement(float(reference.variance[k]), float(reference.variance_err[k])),
                Measurement(float(generated.variance[k]), float(generated.variance_err[k])),
                var_ratio,
                var_pull,
                f"{int(reference.n_events[k])} / {int(generated.n_events[k])}",
            ]
        )
    return Table(
        f"Pile-up: occupancy (cells > {reference.threshold_gev:.3g} GeV) and per-cell variance vs mu",
        [
            "mu bin",
            "<mu> ref.",
            "occupancy ref.",
            "occupancy gen.",
            "occ. ratio gen/ref",
            "occ. pull",
            "var. ref. [GeV^2]",
            "var. gen. [GeV^2]",
            "var. ratio gen/ref",
            "var. pull",
            "n ref / gen",
        ],
        rows,
        notes=[
            "occupancy: mean fraction of cells above threshold; var.: mean over cells of the per-cell energy "
            "variance. Errors: standard errors over events (delta method for the variance); pull = difference / "
            "combined error."
        ],
    )


def plot_occupancy_vs_mu(
    reference: OccupancyVsMu,
    generated: OccupancyVsMu | None = None,
    labels: tuple[str, str] = ("reference", "generated"),
) -> Any:
    """Figure with two panels (occupancy, mean per-cell variance vs mu) with error bars, and ratio panels
    generated / reference when ``generated`` is given. Returns the matplotlib Figure (save it with
    :func:`surrinf.report.save_figure`)."""
    if generated is not None:
        _check_pair(reference, generated)
    fig, axes = new_figure(ncols=2, ratio=True, figsize=(16.0, 8.0))
    panels = (
        ("occupancy", "occupancy_err", "occupancy"),
        ("variance", "variance_err", r"mean cell variance [GeV$^2$]"),
    )
    for j, (attr, err_attr, ylabel) in enumerate(panels):
        ax, ax_r = axes[j, 0], axes[j, 1]
        ref, ref_err = getattr(reference, attr), getattr(reference, err_attr)
        ax.errorbar(reference.mu_mean, ref, ref_err, fmt="o-", color="black", label=labels[0])
        if generated is not None:
            gen, gen_err = getattr(generated, attr), getattr(generated, err_attr)
            ax.errorbar(generated.mu_mean, gen, gen_err, fmt="s--", color="tab:red", label=labels[1])
            safe = np.where(ref != 0, ref, np.nan)
            r = gen / safe
            r_err = np.abs(r) * np.hypot(
                np.divide(gen_err, gen, out=np.zeros_like(gen), where=gen != 0), ref_err / safe
            )
            ax_r.errorbar(reference.mu_mean, r, r_err, fmt="s", color="tab:red")
        ax_r.axhline(1.0, color="black", lw=1)
        ax.set_ylabel(ylabel)
        ax.legend()
        ax_r.set_xlabel(r"pile-up $\mu$")
        ax_r.set_ylabel("gen. / ref.")
    return fig
