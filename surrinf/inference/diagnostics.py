"""Posterior diagnostics: ArviZ conversion, netCDF I/O, convergence checks in plain language, trace/rank/corner plots.

Convergence criteria (see :func:`diagnose`):

- rank-normalised split R-hat < 1.01 and bulk/tail ESS > 400 (100 per chain for 4 chains): Vehtari, Gelman,
  Simpson, Carpenter, Bürkner (2021), "Rank-normalization, folding, and localization: an improved R-hat for assessing
  convergence of MCMC", Bayesian Analysis 16(2), 667, arXiv:1903.08008;
- E-BFMI < 0.3 is a warning: Betancourt (2016), "Diagnosing suboptimal cotangent disintegrations in Hamiltonian
  Monte Carlo", arXiv:1604.00695;
- any divergent transition is a warning (the draws may be biased near regions of high curvature).

Weighted results (SMC, importance sampling) have no chains to compare: their Kish ESS ``1 / sum w^2`` is checked
instead, and for ArviZ they are first resampled to equal weights (systematic resampling with a fixed seed).

Nothing here runs JAX, so no float64 switch is needed; ArviZ is imported lazily (it pulls in pyplot), so importing
this module stays cheap. Plots are drawn into :func:`surrinf.report.figure.new_figure` figures, never into pyplot's
global state.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from surrinf._atomic import atomic_path
from surrinf.report.figure import hep_style, new_figure
from surrinf.report.table import Table

from .result import PosteriorResult

if TYPE_CHECKING:  # pragma: no cover
    import arviz
    from matplotlib.figure import Figure

__all__ = [
    "Diagnosis",
    "diagnose",
    "load_inference_data",
    "plot_corner",
    "plot_rank",
    "plot_trace",
    "save_inference_data",
    "systematic_resample",
    "to_inference_data",
]

#: sample_stats names of PosteriorResult (and of NumPyro / BlackJAX) -> ArviZ sample_stats names.
STAT_NAMES: dict[str, str] = {
    "diverging": "diverging",
    "energy": "energy",
    "n_steps": "n_steps",
    "acceptance_rate": "acceptance_rate",
    "tree_depth": "tree_depth",
    # aliases as the samplers call them
    "accept_prob": "acceptance_rate",  # NumPyro
    "num_steps": "n_steps",  # NumPyro
    "is_divergent": "diverging",  # BlackJAX
    "num_integration_steps": "n_steps",  # BlackJAX
    "num_trajectory_expansions": "tree_depth",  # BlackJAX
}

#: Posterior-summary quantiles (probabilities) and their column names.
QUANTILES = (0.025, 0.16, 0.84, 0.975)
QUANTILE_COLUMNS = ("2.5 %", "16 %", "84 %", "97.5 %")
SUMMARY_COLUMNS = ("parameter", "mean", "sd", *QUANTILE_COLUMNS, "r_hat", "ess_bulk", "ess_tail", "mcse_mean")


# ---------------------------------------------------------------------- conversion and I/O
def systematic_resample(weights: np.ndarray, seed: int = 0, n: int | None = None) -> np.ndarray:
    """Indices (n,) drawn by systematic resampling of the normalised ``weights`` (M,), in shuffled order.

    Systematic resampling places n evenly spaced points ``(u + i) / n`` (one uniform u) on the weight CDF, so each
    index appears floor or ceil of ``n w_i`` times. The indices are then randomly permuted so that the resampled
    draws can be read as a chain without the CDF order. ``n`` defaults to M. Same seed, same indices.
    """
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
        raise ValueError("weights must be a non-empty array of finite values >= 0 with a positive sum")
    n = w.size if n is None else int(n)
    if n < 1:
        raise ValueError(f"n (number of resampled draws) must be >= 1, got {n}")
    rng = np.random.default_rng(_check_seed(seed))
    cdf = np.cumsum(w / w.sum())
    cdf[-1] = 1.0
    positions = (rng.random() + np.arange(n)) / n
    idx = np.minimum(np.searchsorted(cdf, positions, side="right"), w.size - 1)
    return rng.permutation(idx)


def to_inference_data(result: PosteriorResult, *, seed: int = 0) -> arviz.InferenceData:
    """ArviZ InferenceData of a :class:`PosteriorResult`.

    posterior: one variable per parameter name, dims (chain, draw). sample_stats: the sampler statistics present,
    renamed to ArviZ's names (see :data:`STAT_NAMES`; others keep their name). ``idata.attrs``: ``sampler``,
    ``tau``, ``log_evidence`` (if any) and each JSON-serialisable ``info`` entry as ``info_<key>`` (numbers and
    strings as they are, anything else as a JSON string; skipped keys are listed in ``info_skipped``).
    Weighted results are resampled to equal weights (:func:`systematic_resample` with ``seed``, same shape
    (chains, draws); the statistics follow their draws), recorded in ``attrs["resampled"]``, ``resample_seed`` and
    ``kish_ess``.
    """
    import arviz as az

    _check_result(result)
    seed = _check_seed(seed)
    samples, stats = result.samples, _arviz_stats(result.sample_stats)
    attrs = _attrs(result)
    if result.weights is not None:
        c, d = result.samples.shape[:2]
        idx = systematic_resample(result.weights, seed)
        samples = result.samples.reshape(c * d, -1)[idx].reshape(result.samples.shape)
        stats = {k: v.reshape(c * d)[idx].reshape(c, d) for k, v in stats.items()}
        attrs.update(resampled="systematic", resample_seed=int(seed), kish_ess=float(result.effective_sample_size()))
    posterior = {name: samples[:, :, j] for j, name in enumerate(result.names)}
    return az.from_dict(posterior=posterior, sample_stats=stats or None, attrs=attrs)


def save_inference_data(result_or_idata: PosteriorResult | arviz.InferenceData, path: str | os.PathLike) -> Path:
    """Write a result (converted by :func:`to_inference_data`, seed 0) or an InferenceData to netCDF atomically.

    Uses h5netcdf; the file appears under ``path`` only once complete (temporary file beside it, then
    ``os.replace``). Returns the path.
    """
    import arviz as az

    if isinstance(result_or_idata, PosteriorResult):
        idata = to_inference_data(result_or_idata)
    elif isinstance(result_or_idata, az.InferenceData):
        idata = result_or_idata
    else:
        raise ValueError(
            f"result_or_idata must be a PosteriorResult or an arviz.InferenceData, got {type(result_or_idata).__name__}"
        )
    path = Path(path)
    with atomic_path(path, suffix=path.suffix) as tmp:
        idata.to_netcdf(str(tmp), engine="h5netcdf")
    return path


def load_inference_data(path: str | os.PathLike) -> arviz.InferenceData:
    """Read an InferenceData written by :func:`save_inference_data`, fully into memory (the file is closed after)."""
    import arviz as az

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path must name an existing netCDF file, got {str(path)!r}")
    with az.rc_context({"data.load": "eager"}):
        return az.from_netcdf(str(path), engine="h5netcdf")


# ---------------------------------------------------------------------- diagnosis
@dataclass(frozen=True)
class Diagnosis:
    """Outcome of :func:`diagnose`.

    table: posterior summary (one row per parameter). warnings: plain-language problems (empty when the run passes
    every check; ``ok`` is then True). notes: remarks that are not failures (e.g. R-hat needs >= 2 chains).
    n_divergent / divergent_fraction: divergent transitions (None when the sampler reports none). e_bfmi: E-BFMI per
    chain (None without an energy statistic). kish_ess: Kish ESS of the weights (None for unweighted draws).
    """

    table: Table
    warnings: tuple[str, ...]
    notes: tuple[str, ...] = ()
    n_divergent: int | None = None
    divergent_fraction: float | None = None
    e_bfmi: tuple[float, ...] | None = None
    kish_ess: float | None = None

    @property
    def ok(self) -> bool:
        """True when no check raised a warning."""
        return not self.warnings

    def __str__(self) -> str:
        verdict = "OK: no diagnostic warnings" if self.ok else f"NOT OK: {len(self.warnings)} diagnostic warning(s)"
        parts = [verdict, self.table.to_markdown()]
        if self.warnings:
            parts.append("Warnings:\n" + "\n".join(f"- {w}" for w in self.warnings))
        if self.notes:
            parts.append("Notes:\n" + "\n".join(f"- {n}" for n in self.notes))
        return "\n\n".join(p.rstrip("\n") for p in parts) + "\n"


def diagnose(
    result: PosteriorResult, *, rhat_max: float = 1.01, ess_min: float = 400.0, bfmi_min: float = 0.3
) -> Diagnosis:
    """Summarise a posterior run and flag convergence problems in plain language.

    MCMC (unweighted) results: rank-normalised split R-hat (``az.rhat(method="rank")``, needs >= 2 chains) must be
    <= ``rhat_max``, bulk and tail ESS (``az.ess``) >= ``ess_min``, following Vehtari, Gelman, Simpson, Carpenter,
    Bürkner (2021), "Rank-normalization, folding, and localization: an improved R-hat for assessing convergence of
    MCMC" (R-hat < 1.01, ESS > 400, i.e. 100 per chain for 4 chains). With an ``energy`` statistic the E-BFMI of
    each chain (``az.bfmi``) must be >= ``bfmi_min``, following Betancourt (2016), "Diagnosing suboptimal cotangent
    disintegrations in Hamiltonian Monte Carlo" (E-BFMI < 0.3 is a warning). Any divergent transition is a warning
    (count and fraction). Weighted results (SMC, importance sampling): the Kish ESS of the weights must be
    >= ``ess_min``; R-hat and the chain ESS are not computed (None in the table) and mcse_mean is sd / sqrt(Kish ESS).

    The table has mean, sd, the 2.5/16/84/97.5 % quantiles (weighted where there are weights), r_hat, ess_bulk,
    ess_tail and mcse_mean per parameter. No JAX work is done here.
    """
    _check_result(result)
    rhat_max = _check_threshold("rhat_max", rhat_max, "a number > 1 (e.g. 1.01)", lambda v: v > 1.0)
    ess_min = _check_threshold("ess_min", ess_min, "a number >= 0 (e.g. 400)", lambda v: v >= 0.0)
    bfmi_min = _check_threshold("bfmi_min", bfmi_min, "a number >= 0 (e.g. 0.3)", lambda v: v >= 0.0)
    n_bad = int(np.sum(~np.isfinite(result.samples)))
    if n_bad:
        raise ValueError(f"result.samples contain {n_bad} non-finite values; diagnostics need finite draws")

    problems: list[str] = []
    notes: list[str] = []
    mean, sd = result.mean(), result.sd()
    quantiles = result.quantile(np.array(QUANTILES))  # (4, P)
    p = len(result.names)
    kish = result.effective_sample_size()
    if kish is not None:
        rhat = ess_bulk = ess_tail = [None] * p
        mcse = [float(s / math.sqrt(kish)) for s in sd]
        notes.append(
            f"weighted draws ({result.samples.shape[0] * result.samples.shape[1]} particles): R-hat and chain ESS do "
            f"not apply; the Kish ESS of the weights is {kish:.0f}"
        )
        if kish < ess_min:
            problems.append(
                f"Kish ESS of the weights is {kish:.0f} < {ess_min:g}: a few particles carry most of the weight, so "
                "the weighted posterior is noisy; use more particles or smaller temperature steps"
            )
    else:
        rhat, ess_bulk, ess_tail, mcse = _chain_statistics(result)
        if result.n_chains < 2:
            notes.append(
                "R-hat is not computable from a single chain: convergence across chains was not checked "
                "(run 4 chains from dispersed starting points)"
            )
        problems += _stuck_chain_warnings(result.samples)
        problems += _chain_warnings(result, rhat, ess_bulk, ess_tail, rhat_max, ess_min)

    n_div, frac = _divergences(result.sample_stats)
    if n_div:
        total = result.n_chains * result.n_draws
        problems.append(
            f"{n_div} of {total} transitions ({frac:.2%}) diverged: the step size is too large for the posterior's "
            "curvature somewhere, so the draws may be biased; raise target_accept (smaller steps), run a longer "
            "warm-up or reparametrise"
        )
    e_bfmi = _e_bfmi(result.sample_stats)
    if e_bfmi is not None:
        for c, b in enumerate(e_bfmi):
            if not np.isfinite(b):
                problems.append(
                    f"E-BFMI of chain {c} could not be computed (constant or non-finite energy, or < 2 draws): "
                    "the energy statistic looks broken; check the sampler"
                )
            elif b < bfmi_min:
                problems.append(
                    f"E-BFMI of chain {c} is {b:.2f} < {bfmi_min:g}: momentum resampling explores the energy "
                    "distribution poorly (heavy tails or a badly adapted mass matrix); run a longer warm-up or "
                    "reparametrise"
                )
    elif kish is None:
        notes.append("the sampler reports no energy: E-BFMI was not checked")

    table = Table(
        f"Posterior summary ({result.sampler}, tau = {result.tau:g})",
        list(SUMMARY_COLUMNS),
        column_formats={"r_hat": ".3f", "ess_bulk": ".0f", "ess_tail": ".0f"},
        notes=[
            f"{result.n_chains} chain(s) x {result.n_draws} draws; thresholds: R-hat <= {rhat_max:g}, "
            f"ESS >= {ess_min:g}, E-BFMI >= {bfmi_min:g}"
        ],
    )
    for j, name in enumerate(result.names):
        table.add_row([name, mean[j], sd[j], *quantiles[:, j], rhat[j], ess_bulk[j], ess_tail[j], mcse[j]])
    return Diagnosis(
        table=table,
        warnings=tuple(problems),
        notes=tuple(notes),
        n_divergent=n_div,
        divergent_fraction=frac,
        e_bfmi=e_bfmi,
        kish_ess=kish,
    )


def _chain_statistics(result: PosteriorResult) -> tuple[list, list, list, list]:
    """Per-parameter rank R-hat (None for one chain), bulk/tail ESS and MCSE of the mean, via ArviZ."""
    import arviz as az

    def per_name(ds: Any) -> list[float]:
        return [float(ds[name].values) for name in result.names]

    # Too few draws or constant chains give NaN (reported as warnings by the caller), not numpy/ArviZ noise.
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.filterwarnings("ignore", message="More chains", category=UserWarning)
        posterior = to_inference_data(result).posterior
        rhat = per_name(az.rhat(posterior, method="rank")) if result.n_chains >= 2 else [None] * len(result.names)
        return (
            rhat,
            per_name(az.ess(posterior, method="bulk")),
            per_name(az.ess(posterior, method="tail")),
            per_name(az.mcse(posterior, method="mean")),
        )


def _stuck_chain_warnings(samples: np.ndarray) -> list[str]:
    """A chain whose draws (chains, draws, P) are all identical never moved (ArviZ then reports ESS = draws)."""
    if samples.shape[1] < 2:
        return []
    stuck = np.all(np.ptp(samples, axis=1) == 0, axis=-1)
    return [
        f"chain {c} never moved (all {samples.shape[1]} draws identical): the sampler is stuck (step size collapsed "
        "or started where the density vanishes), so its ESS and R-hat are meaningless; check the initial point "
        "and the warm-up"
        for c in np.flatnonzero(stuck)
    ]


def _chain_warnings(
    result: PosteriorResult, rhat: list, ess_bulk: list, ess_tail: list, rhat_max: float, ess_min: float
) -> list[str]:
    out = []
    c = result.n_chains
    for j, name in enumerate(result.names):
        r = rhat[j]
        if r is not None and not np.isfinite(r):
            out.append(
                f"R-hat of {name} could not be computed (too few draws or a chain that never moved): "
                "convergence cannot be checked; run more draws and check the sampler's step size"
            )
        elif r is not None and r > rhat_max:
            out.append(
                f"R-hat of {name} is {r:.3f} > {rhat_max:g}: the {c} chains disagree (not converged, or a multimodal "
                "posterior); run a longer warm-up or check for several modes"
            )
        for kind, e, meaning in (
            ("bulk", ess_bulk[j], "the mean and the centre of the posterior are"),
            ("tail", ess_tail[j], "the 5 % and 95 % quantiles (interval ends) are"),
        ):
            if not np.isfinite(e):
                out.append(f"{kind} ESS of {name} could not be computed (too few draws): {meaning} unchecked")
            elif e < ess_min:
                out.append(
                    f"{kind} ESS of {name} is {e:.0f} < {ess_min:g}: too few effectively independent draws, so "
                    f"{meaning} unreliable; run more draws or a longer warm-up (strongly autocorrelated chains)"
                )
    return out


def _divergences(stats: Mapping[str, np.ndarray]) -> tuple[int | None, float | None]:
    arviz_stats = _arviz_stats(stats)
    if "diverging" not in arviz_stats:
        return None, None
    d = np.asarray(arviz_stats["diverging"], dtype=bool)
    return int(d.sum()), float(d.mean())


def _e_bfmi(stats: Mapping[str, np.ndarray]) -> tuple[float, ...] | None:
    import arviz as az

    energy = _arviz_stats(stats).get("energy")
    if energy is None:
        return None
    energy = np.asarray(energy, dtype=np.float64)
    if energy.shape[1] < 2 or not np.all(np.isfinite(energy)):
        return tuple(float("nan") for _ in range(energy.shape[0]))
    with np.errstate(invalid="ignore", divide="ignore"):  # constant energy -> NaN, reported by the caller
        return tuple(float(b) for b in az.bfmi(energy))


# ---------------------------------------------------------------------- plots
def plot_trace(result: PosteriorResult) -> Figure:
    """Trace plot: per parameter, the marginal density of each chain (left) and the draws against iteration (right);
    divergent transitions are marked when recorded. Weighted results are resampled first (see to_inference_data)."""
    import arviz as az

    idata = to_inference_data(result)
    p = len(result.names)
    fig, axes = new_figure(nrows=p, ncols=2, figsize=(14.0, 3.5 * p + 1.0))
    axes = np.asarray(axes, dtype=object).reshape(p, 2)
    with hep_style(rc={"font.size": 14}), _quiet_arviz():
        az.plot_trace(idata, var_names=list(result.names), axes=axes, show=False)
    fig.suptitle(f"{result.sampler}, tau = {result.tau:g}: {result.n_chains} chain(s)")
    return fig


def plot_rank(result: PosteriorResult) -> Figure:
    """Rank histograms per chain (``az.plot_rank``): each chain's ranks among all draws should be uniform; a chain
    piling up at low or high ranks has not mixed with the others."""
    import arviz as az

    idata = to_inference_data(result)
    p = len(result.names)
    fig, axes = new_figure(nrows=p, figsize=(8.0, 3.5 * p + 1.0))
    axes = np.asarray(axes, dtype=object).reshape(p)
    with hep_style(rc={"font.size": 14}), _quiet_arviz():
        az.plot_rank(idata, var_names=list(result.names), ax=axes, show=False)
    fig.suptitle(f"{result.sampler}: rank plot, {result.n_chains} chain(s)")
    return fig


def plot_corner(
    result: PosteriorResult, truth: Sequence[float] | Mapping[str, float] | np.ndarray | None = None
) -> Figure:
    """Corner plot: weighted histograms of each marginal on the diagonal; below it pairwise scatter (at most 2000
    points, drawn by weight for weighted results) with smoothed, weighted 2-D histogram contours enclosing about
    68 % and 95 %. ``truth`` ((P,) values or name -> value) is drawn as lines."""
    names = result.names
    p = len(names)
    t = _check_truth(truth, names)
    x, w = result.flat()
    n_show = min(2000, x.shape[0])
    if w is None:
        w = np.full(x.shape[0], 1.0 / x.shape[0])
        thin = np.random.default_rng(0).choice(x.shape[0], size=n_show, replace=False)
    else:  # scatter points drawn in proportion to the weights, so they follow the posterior, not the proposal
        thin = systematic_resample(w, seed=0, n=n_show)
    fig, axes = new_figure(nrows=p, ncols=p, figsize=(3.2 * p + 1.5, 3.2 * p + 1.5))
    axes = np.asarray(axes, dtype=object).reshape(p, p)
    with hep_style(rc={"font.size": 12}):
        for i in range(p):
            for j in range(p):
                ax = axes[i, j]
                if j > i:
                    ax.set_axis_off()
                    continue
                if i == j:
                    ax.hist(x[:, j], bins=40, weights=w, histtype="step", color="C0", density=True)
                    ax.set_yticks([])
                    if t is not None:
                        ax.axvline(t[j], color="tab:red", lw=1.5)
                else:
                    ax.scatter(x[thin, j], x[thin, i], s=2, alpha=0.3, color="C0", rasterized=True)
                    _density_contours(ax, x[:, j], x[:, i], w)
                    if t is not None:
                        ax.axvline(t[j], color="tab:red", lw=1.5)
                        ax.axhline(t[i], color="tab:red", lw=1.5)
                        ax.plot(t[j], t[i], "s", color="tab:red", ms=5)
                    if j == 0:
                        ax.set_ylabel(names[i])
                if i == p - 1:
                    ax.set_xlabel(names[j])
    return fig


def _density_contours(ax: Any, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
    """Contours of a smoothed, weighted 2-D histogram enclosing about 68 % and 95 % of the weight.

    Skipped for a degenerate (constant) coordinate."""
    if np.ptp(x) <= 0 or np.ptp(y) <= 0:
        return
    from scipy.ndimage import gaussian_filter

    h, xe, ye = np.histogram2d(x, y, bins=30, weights=w)
    h = gaussian_filter(h, 1.0)  # smooth the Monte Carlo noise of the bins (one-bin Gaussian kernel)
    flat = np.sort(h.ravel())[::-1]
    cum = np.cumsum(flat) / flat.sum()
    levels = np.unique([flat[min(np.searchsorted(cum, q), flat.size - 1)] for q in (0.95, 0.68)])
    levels = levels[levels > 0]
    if levels.size == 0:
        return
    xc, yc = 0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1])
    ax.contour(xc, yc, h.T, levels=levels, colors="k", linewidths=1.0)


# ---------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _quiet_arviz() -> Iterator[None]:
    """Silence ArviZ 0.23's use of a matplotlib API deprecated in 3.11 (harmless, one warning per artist)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Passing a dict or None as alias_mapping", module="arviz")
        yield


def _check_result(result: Any) -> None:
    if not isinstance(result, PosteriorResult):
        raise ValueError(f"result must be a PosteriorResult, got {type(result).__name__}")


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def _check_threshold(name: str, value: Any, expected: str, ok: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {expected}, got {value!r}") from None
    if not (np.isfinite(v) and ok(v)):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return v


def _check_truth(truth: Any, names: tuple[str, ...]) -> np.ndarray | None:
    if truth is None:
        return None
    if isinstance(truth, Mapping):
        missing = set(names) - set(truth)
        if missing:
            raise ValueError(f"truth must give a value for every parameter {names}, missing {sorted(missing)}")
        truth = [truth[n] for n in names]
    t = np.asarray(truth, dtype=np.float64)
    if t.shape != (len(names),) or not np.all(np.isfinite(t)):
        raise ValueError(f"truth must be {len(names)} finite values for {names}, got shape {t.shape}")
    return t


def _arviz_stats(stats: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """sample_stats renamed to ArviZ's names; diverging as bool. Two names for one statistic is an error."""
    out: dict[str, np.ndarray] = {}
    for key, value in stats.items():
        name = STAT_NAMES.get(key, key)
        if name in out:
            raise ValueError(f"result.sample_stats has two entries for the statistic {name!r} (one is {key!r})")
        arr = np.asarray(value)
        out[name] = arr.astype(bool) if name == "diverging" else arr
    return out


def _attrs(result: PosteriorResult) -> dict[str, Any]:
    attrs: dict[str, Any] = {"sampler": str(result.sampler), "tau": float(result.tau)}
    if result.log_evidence is not None:
        attrs["log_evidence"] = float(result.log_evidence)
    skipped = []
    for key, value in result.info.items():
        v = value.item() if isinstance(value, np.generic) else value
        if isinstance(v, str) or (isinstance(v, numbers.Real) and not isinstance(v, bool)):
            attrs[f"info_{key}"] = v
            continue
        try:
            attrs[f"info_{key}"] = json.dumps(v)
        except (TypeError, ValueError):
            skipped.append(str(key))
    if skipped:
        attrs["info_skipped"] = ", ".join(skipped)
    return attrs
