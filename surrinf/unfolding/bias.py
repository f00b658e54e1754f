"""Surrogate-induced unfolding bias: unfold pseudo-data of the reference detector with the surrogate's response.

Expected data mu = R_ref.fold(truth) + fakes; Poisson toys around mu are unfolded (vmapped, float64) twice with the
same method: with R_sur (the analysis as it would run on a surrogate-built matrix) and with R_ref (the "closure"
baseline, which carries only the method's own bias, e.g. from regularisation). On the same toys (common random
numbers) the difference bias_sur - bias_ref isolates what the surrogate adds, with little toy noise.

Per truth bin: unfolded mean over toys, bias = mean - truth, toy standard deviation, stat sigma = mean over toys of
the reported statistical sigma (sqrt of the covariance diagonal; the response covariance is not used, since the toys
fluctuate the data only), bias / stat sigma, mean pull, and the coverage of the interval t_hat +- z sigma_reported
with z = Phi^-1((1 + level) / 2) (level 0.68 -> z = 0.994). :func:`scan` repeats the study along a regularisation
parameter (iterations, strength) on the same toys.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import jax
import numpy as np

from surrinf.report import Measurement, Table, new_figure

from .response import ResponseMatrix
from .result import CPU_COMPILER_OPTIONS, UnfoldingResult, float64, poisson_toys

__all__ = ["BiasScan", "BiasStudy", "UnfoldedToys", "bias_study", "scan"]

Method = Callable[[jax.Array, ResponseMatrix], UnfoldingResult]


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b, NaN where b is not > 0."""
    return np.divide(a, b, out=np.full(np.broadcast(a, b).shape, np.nan), where=b > 0)


@dataclass(frozen=True)
class UnfoldedToys:
    """One method + response applied to every toy. unfolded: (n_toys, n_truth) [events per truth bin];
    sigma: (n_toys, n_truth) reported statistical sigma per toy [events]; truth: (n_truth,); level: the coverage
    probability of the interval t_hat +- z sigma."""

    unfolded: np.ndarray
    sigma: np.ndarray
    truth: np.ndarray
    level: float

    @property
    def n_toys(self) -> int:
        return self.unfolded.shape[0]

    @property
    def mean(self) -> np.ndarray:
        """(n_truth,) mean unfolded spectrum over toys [events]."""
        return self.unfolded.mean(axis=0)

    @property
    def bias(self) -> np.ndarray:
        """(n_truth,) mean - truth [events]."""
        return self.mean - self.truth

    @property
    def toy_sd(self) -> np.ndarray:
        """(n_truth,) standard deviation of the unfolded values over toys [events]."""
        return self.unfolded.std(axis=0, ddof=1) if self.n_toys > 1 else np.zeros(self.truth.shape)

    @property
    def bias_error(self) -> np.ndarray:
        """(n_truth,) standard error of :attr:`bias` from the finite number of toys [events]."""
        return self.toy_sd / math.sqrt(self.n_toys)

    @property
    def stat_sigma(self) -> np.ndarray:
        """(n_truth,) mean reported statistical sigma [events]."""
        return self.sigma.mean(axis=0)

    @property
    def bias_over_sigma(self) -> np.ndarray:
        """(n_truth,) bias / stat sigma (NaN where sigma is 0)."""
        return _safe_div(self.bias, self.stat_sigma)

    @property
    def pulls(self) -> np.ndarray:
        """(n_toys, n_truth) (t_hat - truth) / sigma_reported of each toy (NaN where sigma is 0)."""
        return _safe_div(self.unfolded - self.truth, self.sigma)

    @property
    def mean_pull(self) -> np.ndarray:
        """(n_truth,) mean pull over toys."""
        return self.pulls.mean(axis=0)

    @property
    def mean_pull_error(self) -> np.ndarray:
        """(n_truth,) standard error of :attr:`mean_pull`."""
        return self.pulls.std(axis=0, ddof=1) / math.sqrt(self.n_toys) if self.n_toys > 1 else np.zeros_like(self.truth)

    @property
    def coverage(self) -> np.ndarray:
        """(n_truth,) fraction of toys with |t_hat - truth| < z sigma_reported, z = Phi^-1((1 + level) / 2)."""
        z = NormalDist().inv_cdf(0.5 + 0.5 * self.level)
        return np.mean(np.abs(self.unfolded - self.truth) < z * self.sigma, axis=0)

    @property
    def coverage_error(self) -> float:
        """Binomial standard error of :attr:`coverage` at the nominal level."""
        return math.sqrt(self.level * (1 - self.level) / self.n_toys)


@dataclass(frozen=True)
class BiasStudy:
    """Result of :func:`bias_study`. label: free text; method: the method's name; truth: (n_truth,) [events];
    expected: (n_reco,) mu the toys fluctuate around [events]; truth_edges: (n_truth + 1,); toys: (n_toys, n_reco);
    surrogate: unfolded with R_sur; closure: the same toys unfolded with R_ref; level: coverage probability."""

    label: str
    method: str
    truth: np.ndarray
    expected: np.ndarray
    truth_edges: np.ndarray
    toys: np.ndarray
    surrogate: UnfoldedToys
    closure: UnfoldedToys
    level: float

    @property
    def n_toys(self) -> int:
        return self.toys.shape[0]

    @property
    def bias(self) -> np.ndarray:
        """(n_truth,) bias with R_sur [events]."""
        return self.surrogate.bias

    @property
    def closure_bias(self) -> np.ndarray:
        """(n_truth,) bias with R_ref: the method's own bias [events]."""
        return self.closure.bias

    @property
    def surrogate_bias(self) -> np.ndarray:
        """(n_truth,) bias_sur - bias_ref = mean over toys of (t_hat_sur - t_hat_ref) [events]."""
        return (self.surrogate.unfolded - self.closure.unfolded).mean(axis=0)

    @property
    def surrogate_bias_error(self) -> np.ndarray:
        """(n_truth,) toy standard error of :attr:`surrogate_bias` (paired over the common toys) [events]."""
        if self.n_toys < 2:
            return np.zeros_like(self.truth)
        return (self.surrogate.unfolded - self.closure.unfolded).std(axis=0, ddof=1) / math.sqrt(self.n_toys)

    def systematic(self) -> np.ndarray:
        """(n_truth,) |bias_sur - bias_ref| [events]: the surrogate-induced bias quoted as a (symmetric) systematic
        uncertainty of the unfolded spectrum. It includes the toy noise :attr:`surrogate_bias_error`, so it errs on
        the conservative side when that is not small."""
        return np.abs(self.surrogate_bias)

    def table(self) -> Table:
        """One row per truth bin: truth, unfolded mean, bias, stat sigma, toy sd, bias/sigma, coverage (with R_sur),
        closure bias, closure bias/sigma, closure coverage, surrogate bias (sur - ref) and the systematic."""
        s, c = self.surrogate, self.closure
        columns = [
            "bin",
            "low",
            "high",
            "truth",
            "unfolded mean",
            "bias",
            "stat sigma",
            "toy sd",
            "bias/sigma",
            f"coverage {self.level:.0%}",
            "closure bias",
            "closure bias/sigma",
            f"closure coverage {self.level:.0%}",
            "surrogate bias",
            "systematic",
        ]
        rows = []
        for i in range(self.truth.size):
            rows.append(
                [
                    i,
                    float(self.truth_edges[i]),
                    float(self.truth_edges[i + 1]),
                    float(self.truth[i]),
                    float(s.mean[i]),
                    Measurement(s.bias[i], s.bias_error[i]),
                    float(s.stat_sigma[i]),
                    float(s.toy_sd[i]),
                    float(s.bias_over_sigma[i]),
                    Measurement(s.coverage[i], s.coverage_error),
                    Measurement(c.bias[i], c.bias_error[i]),
                    float(c.bias_over_sigma[i]),
                    Measurement(c.coverage[i], c.coverage_error),
                    Measurement(self.surrogate_bias[i], self.surrogate_bias_error[i]),
                    float(self.systematic()[i]),
                ]
            )
        title = f"Surrogate bias of {self.method or 'unfolding'}" + (f" ({self.label})" if self.label else "")
        caption = (
            f"{self.n_toys} Poisson toys of the reference-detector expectation, unfolded with the surrogate response "
            "(bias) and with the reference response (closure). Errors are toy standard errors."
        )
        notes = ["systematic = |bias - closure bias| (surrogate-induced bias; same toys for both)."]
        return Table(title, columns, rows, caption=caption, notes=notes)

    def figure(self, xlabel: str = "x"):
        """Two panels: truth vs mean unfolded with R_ref and with R_sur (error bars: mean reported stat sigma);
        bias/sigma per bin for both (error bars: toy standard error)."""
        fig, (top, bottom) = new_figure(nrows=2, figsize=(10, 10))
        edges = self.truth_edges
        centres, widths = 0.5 * (edges[1:] + edges[:-1]), np.diff(edges)
        top.stairs(self.truth, edges, color="black", label="truth", linewidth=2)
        for toys, dx, color, name in ((self.closure, -0.15, "C0", "R_ref"), (self.surrogate, 0.15, "C1", "R_sur")):
            top.errorbar(centres + dx * widths, toys.mean, yerr=toys.stat_sigma, fmt="o", ms=4, color=color, label=name)
            bottom.errorbar(
                centres + dx * widths,
                toys.bias_over_sigma,
                yerr=_safe_div(toys.bias_error, toys.stat_sigma),
                fmt="o",
                ms=4,
                color=color,
                label=name,
            )
        top.set_ylabel("events per bin")
        top.set_title(self.label or self.method)
        top.legend(fontsize="small")
        bottom.axhline(0.0, color="gray", linestyle="--", linewidth=1)
        bottom.set_ylabel("bias / stat sigma")
        bottom.set_xlabel(xlabel)
        for ax in (top, bottom):
            ax.set_xlim(edges[0], edges[-1])
        return fig


def _check_inputs(
    method: Any, response_ref: Any, response_sur: Any, truth: Any, fakes_ref: Any, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """Validated (truth (n_truth,), fakes (n_reco,)) as float64."""
    if not callable(method):
        raise ValueError(f"method must be callable as method(data, response) -> UnfoldingResult, got {method!r}")
    for name, r in (("response_ref", response_ref), ("response_sur", response_sur)):
        if not isinstance(r, ResponseMatrix):
            raise ValueError(f"{name} must be a ResponseMatrix, got {type(r).__name__}")
    if response_sur.migrations.shape != response_ref.migrations.shape:
        raise ValueError(
            f"response_sur has shape {response_sur.migrations.shape} (n_reco, n_truth) but response_ref has "
            f"{response_ref.migrations.shape}: both must use the same binning"
        )
    if not (
        np.allclose(response_sur.truth_edges, response_ref.truth_edges)
        and np.allclose(response_sur.reco_edges, response_ref.reco_edges)
    ):
        raise ValueError("response_sur and response_ref must have the same truth_edges and reco_edges")
    t = np.asarray(truth, dtype=np.float64)
    if t.shape != (response_ref.n_truth,) or not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ValueError(f"truth must have shape ({response_ref.n_truth},) with finite counts >= 0, got {t.shape}")
    f = np.zeros(response_ref.n_reco) if fakes_ref is None else np.asarray(fakes_ref, dtype=np.float64)
    if f.shape != (response_ref.n_reco,) or not np.all(np.isfinite(f)) or np.any(f < 0):
        raise ValueError(f"fakes_ref must have shape ({response_ref.n_reco},) with finite counts >= 0, got {f.shape}")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be a probability in (0, 1), got {level}")
    return t, f


@float64
def _unfold_toys(
    method: Method, toys: jax.Array, response: ResponseMatrix, batched: bool = False
) -> tuple[np.ndarray, np.ndarray, str]:
    """method vmapped (and jitted, the response a compile-time constant: one compilation per call) over toys
    (n_toys, n_reco) -> (unfolded (n_toys, n_t), sigma (n_toys, n_t), method name). ``batched``: the method takes all
    toys at once (e.g. :func:`~surrinf.unfolding.fbu_toys`) and is called as it is."""
    result = (
        method(toys, response)
        if batched
        else jax.jit(jax.vmap(lambda d: method(d, response)), compiler_options=CPU_COMPILER_OPTIONS)(toys)
    )
    if not isinstance(result, UnfoldingResult):
        raise ValueError(f"method must return an UnfoldingResult, got {type(result).__name__}")
    n, n_t = toys.shape[0], response.n_truth
    if result.unfolded.shape != (n, n_t) or result.covariance.shape != (n, n_t, n_t):
        raise ValueError(
            f"method returned unfolded {result.unfolded.shape} and covariance {result.covariance.shape} for "
            f"{n} toys; expected ({n}, {n_t}) and ({n}, {n_t}, {n_t})"
        )
    unfolded = np.asarray(result.unfolded, dtype=np.float64)
    sigma = np.sqrt(np.clip(np.diagonal(np.asarray(result.covariance, dtype=np.float64), axis1=-2, axis2=-1), 0, None))
    return unfolded, sigma, result.method


def _study(
    toys: jax.Array,
    method: Method,
    response_ref: ResponseMatrix,
    response_sur: ResponseMatrix,
    truth: np.ndarray,
    expected: np.ndarray,
    label: str,
    level: float,
    batched: bool = False,
) -> BiasStudy:
    t_sur, s_sur, name = _unfold_toys(method, toys, response_sur, batched)
    if response_sur is response_ref:  # nothing to compare: the closure is the same computation
        t_ref, s_ref = t_sur, s_sur
    else:
        t_ref, s_ref, _ = _unfold_toys(method, toys, response_ref, batched)
    return BiasStudy(
        label=str(label),
        method=name,
        truth=truth,
        expected=expected,
        truth_edges=np.asarray(response_ref.truth_edges, dtype=np.float64),
        toys=np.asarray(toys, dtype=np.float64),
        surrogate=UnfoldedToys(t_sur, s_sur, truth, float(level)),
        closure=UnfoldedToys(t_ref, s_ref, truth, float(level)),
        level=float(level),
    )


def bias_study(
    key: jax.Array,
    method: Method,
    response_ref: ResponseMatrix,
    response_sur: ResponseMatrix,
    truth: Any,
    *,
    n_toys: int = 1000,
    fakes_ref: Any = None,
    label: str = "",
    level: float = 0.68,
    batched: bool = False,
) -> BiasStudy:
    """Unfold ``n_toys`` Poisson toys of mu = ``response_ref.fold(truth)`` + ``fakes_ref`` with
    ``method(toy, response_sur)`` and, as closure baseline, ``method(toy, response_ref)``.

    truth: (n_truth,) [events per truth bin]; fakes_ref: (n_reco,) expected fake counts in the data [events], default
    none. A method subtracts its own fake estimate (``fakes=None``: data * response.fake_fraction), so when the
    responses contain fakes pass a consistent ``fakes_ref`` (e.g. fake_fraction / (1 - fake_fraction) *
    response_ref.fold(truth)) or bind ``fakes`` with functools.partial, as for any other method option;
    level: probability of the coverage interval. ``method`` must be jit- and vmap-able over the data, or, with
    ``batched=True``, take all toys (n_toys, n_reco) at once and return results with a leading toy axis (e.g. a
    closure over :func:`~surrinf.unfolding.fbu_toys`). Same key, same toys."""
    t, f = _check_inputs(method, response_ref, response_sur, truth, fakes_ref, level)
    expected = response_ref.fold(t) + f
    toys = poisson_toys(key, expected, n_toys)
    return _study(toys, method, response_ref, response_sur, t, expected, label, level, batched)


@dataclass(frozen=True)
class BiasScan:
    """Result of :func:`scan`: ``studies[k]`` is the :class:`BiasStudy` at ``values[k]`` of the regularisation
    parameter named ``parameter``, all on the same toys. Per-value summaries average over truth bins (NaN bins, e.g.
    with zero sigma, are skipped)."""

    parameter: str
    values: tuple[Any, ...]
    studies: tuple[BiasStudy, ...]
    label: str = ""

    def _per_value(self, fn: Callable[[BiasStudy], np.ndarray]) -> np.ndarray:
        return np.array([float(np.nanmean(fn(s))) for s in self.studies])

    @property
    def mean_abs_bias_over_sigma(self) -> np.ndarray:
        """(V,) mean over bins of |bias| / stat sigma with R_sur."""
        return self._per_value(lambda s: np.abs(s.surrogate.bias_over_sigma))

    @property
    def closure_mean_abs_bias_over_sigma(self) -> np.ndarray:
        """(V,) mean over bins of |bias| / stat sigma with R_ref (the method's own bias)."""
        return self._per_value(lambda s: np.abs(s.closure.bias_over_sigma))

    @property
    def mean_abs_surrogate_bias_over_sigma(self) -> np.ndarray:
        """(V,) mean over bins of |bias_sur - bias_ref| / stat sigma (R_sur)."""
        return self._per_value(lambda s: _safe_div(s.systematic(), s.surrogate.stat_sigma))

    @property
    def mean_variance(self) -> np.ndarray:
        """(V,) mean over bins and toys of the reported statistical variance with R_sur [events^2]."""
        return self._per_value(lambda s: np.mean(s.surrogate.sigma**2, axis=0))

    @property
    def toy_variance(self) -> np.ndarray:
        """(V,) mean over bins of the toy variance of the unfolded values with R_sur [events^2]."""
        return self._per_value(lambda s: s.surrogate.toy_sd**2)

    @property
    def coverage(self) -> np.ndarray:
        """(V,) mean over bins of the coverage with R_sur."""
        return self._per_value(lambda s: s.surrogate.coverage)

    @property
    def closure_coverage(self) -> np.ndarray:
        """(V,) mean over bins of the coverage with R_ref."""
        return self._per_value(lambda s: s.closure.coverage)

    def table(self) -> Table:
        """One row per scanned value: mean |bias|/sigma (R_sur, R_ref), mean |surrogate bias|/sigma, mean reported
        and toy variance, mean coverage (R_sur, R_ref)."""
        level = self.studies[0].level if self.studies else 0.68
        columns = [
            self.parameter,
            "mean |bias|/sigma",
            "closure mean |bias|/sigma",
            "mean |surrogate bias|/sigma",
            "mean variance",
            "toy variance",
            f"coverage {level:.0%}",
            f"closure coverage {level:.0%}",
        ]
        cols = (
            self.mean_abs_bias_over_sigma,
            self.closure_mean_abs_bias_over_sigma,
            self.mean_abs_surrogate_bias_over_sigma,
            self.mean_variance,
            self.toy_variance,
            self.coverage,
            self.closure_coverage,
        )
        rows = [[_cell(v), *(float(c[k]) for c in cols)] for k, v in enumerate(self.values)]
        n_toys = self.studies[0].n_toys if self.studies else 0
        title = f"Surrogate bias vs {self.parameter}" + (f" ({self.label})" if self.label else "")
        caption = f"Means over truth bins; {n_toys} common Poisson toys for every {self.parameter}."
        return Table(title, columns, rows, caption=caption)

    def figure(self, xscale: str = "linear"):
        """Three panels vs the scanned value: mean |bias|/sigma (R_sur, R_ref, surrogate-induced), mean variance
        (reported and toys), mean coverage (R_sur, R_ref, nominal). ``xscale``: matplotlib scale of the value axis
        ("linear", "log", "symlog" for strengths spanning decades from 0)."""
        fig, axes = new_figure(ncols=3, figsize=(18, 5))
        x = np.asarray([float(v) for v in self.values])
        a, b, c = axes
        a.plot(x, self.mean_abs_bias_over_sigma, "o-", label="R_sur")
        a.plot(x, self.closure_mean_abs_bias_over_sigma, "s--", label="R_ref (closure)")
        a.plot(x, self.mean_abs_surrogate_bias_over_sigma, "^:", label="sur - ref")
        a.set_ylabel("mean |bias| / stat sigma")
        b.plot(x, self.mean_variance, "o-", label="reported")
        b.plot(x, self.toy_variance, "s--", label="toys")
        b.set_ylabel("mean variance [events$^2$]")
        b.set_yscale("log")
        level = self.studies[0].level if self.studies else 0.68
        c.plot(x, self.coverage, "o-", label="R_sur")
        c.plot(x, self.closure_coverage, "s--", label="R_ref (closure)")
        c.axhline(level, color="gray", linestyle="--", linewidth=1, label="nominal")
        c.set_ylabel("mean coverage")
        for ax in axes:
            ax.set_xscale(xscale)
            ax.set_xlabel(self.parameter)
            ax.legend(fontsize="small")
        return fig


def _cell(value: Any) -> Any:
    """A scanned value as a table cell (numbers stay numbers)."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def scan(
    key: jax.Array,
    make_method: Callable[[Any], Method],
    values: Sequence[Any],
    response_ref: ResponseMatrix,
    response_sur: ResponseMatrix,
    truth: Any,
    *,
    n_toys: int = 1000,
    fakes_ref: Any = None,
    label: str = "",
    level: float = 0.68,
    parameter: str = "value",
) -> BiasScan:
    """Bias versus regularisation: :func:`bias_study` of ``make_method(v)`` for every v in ``values`` (e.g. IBU
    iterations or a Tikhonov strength; ``parameter`` names it), on the same Poisson toys (common random numbers, the
    toys of ``bias_study(key, ...)``), so differences between values are not toy noise."""
    values = tuple(values)
    if not values:
        raise ValueError("values must hold at least one regularisation value")
    if not callable(make_method):
        raise ValueError(f"make_method must be callable as make_method(value) -> method, got {make_method!r}")
    methods = [make_method(v) for v in values]
    t, f = _check_inputs(methods[0], response_ref, response_sur, truth, fakes_ref, level)
    for v, m in zip(values, methods, strict=True):
        if not callable(m):
            raise ValueError(f"make_method({v!r}) must return a callable method(data, response), got {m!r}")
    expected = response_ref.fold(t) + f
    toys = poisson_toys(key, expected, n_toys)
    studies = tuple(_study(toys, m, response_ref, response_sur, t, expected, label, level) for m in methods)
    return BiasScan(str(parameter), values, studies, str(label))
