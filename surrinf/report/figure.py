"""Figures in one HEP style (mplhep), drawn on the Agg canvas and saved atomically; no display is ever needed.

Figures from :func:`new_figure` are plain :class:`matplotlib.figure.Figure` objects with an Agg canvas: they are not
registered with pyplot, so no global backend is selected and nothing leaks between figures. The style is applied
through :func:`hep_style`, a context manager that restores the previous rcParams on exit; :func:`new_figure`,
:func:`hist_with_ratio` and :func:`save_figure` use it internally, and custom drawing code can do the same.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.style
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from surrinf._atomic import atomic_path

__all__ = ["HistComparison", "compare_histograms", "hep_style", "hist_with_ratio", "new_figure", "save_figure"]

DEFAULT_STYLE = "ROOT"


@contextlib.contextmanager
def hep_style(style: str | Mapping[str, Any] = DEFAULT_STYLE, rc: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Apply an mplhep style (name such as ``"ROOT"``/``"CMS"``/``"ATLAS"``, or an rcParams dict) plus ``rc`` overrides
    for the duration of the ``with`` block; the previous rcParams are restored afterwards."""
    import mplhep  # imported lazily: it pulls in pyplot, which `import surrinf.report` should not

    if isinstance(style, str):
        base = getattr(mplhep.style, style, None)
        if base is None or not isinstance(base, dict | list):
            raise ValueError(f"unknown mplhep style {style!r}")
    else:
        base = dict(style)
    styles = (list(base) if isinstance(base, list) else [base]) + ([dict(rc)] if rc else [])
    with matplotlib.style.context(styles):
        yield


def new_figure(
    nrows: int = 1,
    ratio: bool = False,
    figsize: tuple[float, float] | None = None,
    *,
    ncols: int = 1,
    style: str | Mapping[str, Any] = DEFAULT_STYLE,
) -> tuple[Figure, Any]:
    """Create a styled figure (constrained layout, Agg canvas) and its axes.

    Without ``ratio`` the axes are returned like ``plt.subplots`` (a single Axes, or an array). With ``ratio`` each
    panel is a main axes above a ratio axes sharing x (heights 3:1): a ``(main, ratio)`` tuple for a single panel,
    otherwise an object array of shape ``(nrows, ncols, 2)`` with length-1 grid dimensions squeezed.
    ``figsize`` defaults to 10 x 10 inches per ratio panel and 10 x 8 per plain panel.
    """
    if nrows < 1 or ncols < 1:
        raise ValueError("nrows and ncols must be >= 1")
    if figsize is None:
        figsize = (10.0 * ncols, (10.0 if ratio else 8.0) * nrows)
    with hep_style(style):
        fig = Figure(figsize=figsize, layout="constrained")
        FigureCanvasAgg(fig)
        if not ratio:
            return fig, fig.subplots(nrows, ncols, squeeze=True)
        fig.get_layout_engine().set(hspace=0.0)
        outer = fig.add_gridspec(nrows, ncols)
        axes = np.empty((nrows, ncols, 2), dtype=object)
        for i in range(nrows):
            for j in range(ncols):
                inner = outer[i, j].subgridspec(2, 1, height_ratios=[3, 1], hspace=0.0)
                ax_main = fig.add_subplot(inner[0])
                ax_ratio = fig.add_subplot(inner[1], sharex=ax_main)
                ax_main.tick_params(labelbottom=False)
                axes[i, j, 0], axes[i, j, 1] = ax_main, ax_ratio
    if nrows == ncols == 1:
        return fig, (axes[0, 0, 0], axes[0, 0, 1])
    keep = tuple(slice(None) if n > 1 else 0 for n in (nrows, ncols))
    return fig, axes[keep]


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120, close: bool = True) -> Path:
    """Save ``fig`` atomically (format from the suffix; ``.png`` added when there is none) and return the path.

    The figure is closed afterwards (released from pyplot if it was made there) unless ``close=False``.
    """
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    fmt = path.suffix[1:].lower()
    try:
        if fmt not in fig.canvas.get_supported_filetypes():
            raise ValueError(f"unsupported figure format {fmt!r} for {path}")
        with hep_style(), atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
    finally:
        if close:
            _close(fig)
    return path


def _close(fig: Figure) -> None:
    if getattr(fig.canvas, "manager", None) is not None:  # only pyplot-managed figures hold global state
        import matplotlib.pyplot as plt

        plt.close(fig)


@dataclass(frozen=True)
class HistComparison:
    """Binned reference and candidate with Poisson (sum of squared weights) errors and their ratio."""

    edges: np.ndarray
    reference: np.ndarray
    reference_err: np.ndarray
    candidate: np.ndarray
    candidate_err: np.ndarray
    ratio: np.ndarray  # candidate / reference; nan where the reference bin is empty
    ratio_err: np.ndarray
    density: bool

    @property
    def centers(self) -> np.ndarray:
        """Bin centres."""
        return 0.5 * (self.edges[1:] + self.edges[:-1])


def compare_histograms(
    reference: Any,
    candidate: Any,
    bins: int | Sequence[float] | np.ndarray = 50,
    density: bool = True,
    *,
    hist_range: tuple[float, float] | None = None,
    reference_weights: Any = None,
    candidate_weights: Any = None,
) -> HistComparison:
    """Histogram two samples on common bins and form candidate/reference with propagated uncertainties.

    ``bins`` is a count (edges spanning ``hist_range`` or the finite range of both samples) or explicit edges.
    Non-finite values are dropped. With ``density`` each histogram is normalised to unit area over the bins, the
    normalisation itself being treated as exact. The ratio error adds both relative errors in quadrature.
    """
    ref, ref_w = _finite_sample(reference, reference_weights)
    cand, cand_w = _finite_sample(candidate, candidate_weights)
    if np.ndim(bins) == 0:
        if hist_range is None:
            both = np.concatenate([ref, cand])
            lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
            if lo == hi:
                lo, hi = lo - 0.5, hi + 0.5
            hist_range = (lo, hi)
        edges = np.linspace(hist_range[0], hist_range[1], int(bins) + 1)
    else:
        edges = np.asarray(bins, dtype=float)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError("bin edges must be a strictly increasing 1-d sequence of at least two values")
    widths = np.diff(edges)

    def histogram(x: np.ndarray, w: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        counts, _ = np.histogram(x, bins=edges, weights=w)
        sumw2, _ = np.histogram(x, bins=edges, weights=None if w is None else w**2)
        counts, errors = counts.astype(float), np.sqrt(sumw2.astype(float))
        if density:
            total = counts.sum()
            norm = total * widths if total > 0 else np.ones_like(widths)
            counts, errors = counts / norm, errors / norm
        return counts, errors

    r, r_err = histogram(ref, ref_w)
    c, c_err = histogram(cand, cand_w)
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = r > 0
        ratio = np.where(ok, c / np.where(ok, r, 1.0), np.nan)
        ratio_err = np.where(ok, np.hypot(c_err / np.where(ok, r, 1.0), ratio * r_err / np.where(ok, r, 1.0)), np.nan)
    return HistComparison(edges, r, r_err, c, c_err, ratio, ratio_err, density)


def hist_with_ratio(
    ax_main: Axes,
    ax_ratio: Axes | None,
    reference: Any,
    candidate: Any,
    bins: int | Sequence[float] | np.ndarray = 50,
    labels: tuple[str, str] = ("reference", "candidate"),
    density: bool = True,
    xlabel: str | None = None,
    *,
    hist_range: tuple[float, float] | None = None,
    reference_weights: Any = None,
    candidate_weights: Any = None,
    ylabel: str | None = None,
    ratio_label: str = "Ratio",
    ratio_ylim: tuple[float, float] | None = (0.5, 1.5),
    logy: bool = False,
    colors: tuple[str, str] = ("black", "C1"),
    legend: bool = True,
) -> HistComparison:
    """Draw reference and candidate as step histograms with ±1σ Poisson bands on ``ax_main`` and, on ``ax_ratio``
    (may be None), candidate/reference with its propagated uncertainty band; return the binned numbers."""
    comp = compare_histograms(
        reference,
        candidate,
        bins,
        density,
        hist_range=hist_range,
        reference_weights=reference_weights,
        candidate_weights=candidate_weights,
    )
    edges = comp.edges
    with hep_style():
        for values, errors, color, label in (
            (comp.reference, comp.reference_err, colors[0], labels[0]),
            (comp.candidate, comp.candidate_err, colors[1], labels[1]),
        ):
            ax_main.stairs(values, edges, color=color, label=label, linewidth=2)
            _band(ax_main, edges, values - errors, values + errors, color)
        ax_main.set_xlim(edges[0], edges[-1])
        ax_main.set_ylabel(ylabel if ylabel is not None else ("Density" if density else "Entries"))
        if logy:
            ax_main.set_yscale("log")
        elif ax_main.get_ylim()[0] < 0:
            ax_main.set_ylim(bottom=0)
        if legend:
            ax_main.legend()
        if ax_ratio is None:
            if xlabel is not None:
                ax_main.set_xlabel(xlabel)
            return comp
        ax_ratio.axhline(1.0, color="gray", linestyle="--", linewidth=1)
        _band(ax_ratio, edges, comp.ratio - comp.ratio_err, comp.ratio + comp.ratio_err, colors[1])
        ax_ratio.stairs(comp.ratio, edges, color=colors[1], linewidth=2)
        ax_ratio.set_xlim(edges[0], edges[-1])
        if ratio_ylim is not None:
            ax_ratio.set_ylim(*ratio_ylim)
        ax_ratio.set_ylabel(ratio_label)
        if xlabel is not None:
            ax_ratio.set_xlabel(xlabel)
        ax_main.tick_params(labelbottom=False)
    return comp


def _band(ax: Axes, edges: np.ndarray, lo: np.ndarray, hi: np.ndarray, color: str) -> None:
    """Stepped ±1σ band; NaN bins leave gaps."""
    ax.fill_between(edges, np.append(lo, lo[-1]), np.append(hi, hi[-1]), step="post", color=color, alpha=0.3, lw=0)


def _finite_sample(x: Any, w: Any) -> tuple[np.ndarray, np.ndarray | None]:
    x = np.asarray(x, dtype=float).ravel()
    if w is None:
        return x[np.isfinite(x)], None
    w = np.asarray(w, dtype=float).ravel()
    if w.shape != x.shape:
        raise ValueError(f"weights shape {w.shape} does not match sample shape {x.shape}")
    keep = np.isfinite(x) & np.isfinite(w)
    return x[keep], w[keep]
