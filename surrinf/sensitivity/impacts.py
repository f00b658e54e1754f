"""Maximum-likelihood fits, nuisance-parameter impacts and ranking, pulls and constraints, and pre-/post-fit yields
of any :class:`pyhf.Workspace` (the conventions of cabinetry, which the tests cross-check to 1e-3).

Conventions (cabinetry's, see ``cabinetry.fit.ranking`` and ``cabinetry.model_utils``):

- The model is built with HistFactory interpolation code 4 for normsys and 4p for histosys, from the workspace's
  first measurement (its POI, bounds, inits and fixed parameters).
- Fits run iminuit MIGRAD (tolerance 0.1, strategy 1) through pyhf's minuit optimizer, then HESSE for the symmetric
  uncertainties and the correlation matrix. Parameters held fixed get uncertainty 0.
- Nominal value theta0 of a parameter: its auxiliary measurement (0 for normsys/histosys, 1 for lumi, staterror and
  shapesys; for Poisson constraints the auxdata divided by the scale factor tau), the suggested initial value for
  unconstrained parameters (normfactor, shapefactor) and the fixed value for parameters held fixed (cabinetry uses
  the auxiliary value even then; the two differ only for a constrained parameter fixed away from it). Pre-fit
  uncertainty sigma_pre: the constraint width (``paramset.width()``: sigma for Gaussian constraints, the relative
  uncertainty 1/sqrt(tau) for Poisson-constrained shapesys), 0 for unconstrained or fixed parameters.
- Impact of a nuisance parameter theta on the POI mu: refit with theta fixed and take mu_hat(fixed) - mu_hat. Pre-fit
  impacts fix theta at theta_hat +- sigma_pre, post-fit impacts at theta_hat +- sigma_post (both centred on the best
  fit theta_hat, as cabinetry and the ATLAS ranking plots do, not on theta0). A zero shift skips the refit (impact 0).
  Parameters are ranked by max(|post-fit up|, |post-fit down|), largest first.
- Pull (theta_hat - theta0) / sigma_pre and constraint sigma_post / sigma_pre, for every constrained, floating
  parameter. The same formula is used for Gaussian (staterror, lumi, normsys, histosys) and Poisson (shapesys)
  constraints; for the latter it is the usual approximation (the constraint is not Gaussian). cabinetry's pull plot
  shows the raw theta_hat +- sigma_post and leaves out staterror (centred at 1); :func:`plot_pulls` draws the
  normalised pulls (staterror optional) so lumi and gamma parameters are on the same scale as the others.
- Yield uncertainties (``cabinetry.model_utils.yield_stdev``): each parameter is varied by +- its uncertainty
  (pre-fit: sigma_pre, diagonal correlation; post-fit: the HESSE uncertainty and correlation); with v_i the
  symmetrised variation (up - down) / 2 of a yield, its variance is sum_ij v_i rho_ij v_j. Pre-fit yields are
  evaluated at theta0 (normfactors at their initial value).

Units: yields and data are event counts per bin; parameters are dimensionless.

Precision: all computations use pyhf's numpy backend in float64. Each public function enters it locally (the previous
pyhf backend and optimizer are restored on exit) and never touches JAX, so the caller's pyhf backend and
``jax_enable_x64`` are left as they were.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyhf
from matplotlib.figure import Figure

from surrinf.report import Measurement, Table, hep_style, new_figure, save_figure
from surrinf.sensitivity.backend import pyhf_backend

__all__ = [
    "FitResult",
    "ImpactResult",
    "PullResult",
    "Yields",
    "YieldsResult",
    "fit",
    "impacts",
    "plot_pulls",
    "plot_ranking",
    "yields",
]

#: HistFactory interpolation codes (pyhf's defaults since v0.6, and cabinetry's).
MODIFIER_SETTINGS = {"normsys": {"interpcode": "code4"}, "histosys": {"interpcode": "code4p"}}

WorkspaceLike = pyhf.Workspace | Mapping[str, Any]


# ---------------------------------------------------------------------------------------------- backend and model
@contextlib.contextmanager
def _numpy_minuit() -> Iterator[None]:
    """pyhf's numpy backend (float64) with the minuit optimizer inside the block; :func:`pyhf_backend` restores the
    previous backend and optimizer afterwards (JAX is not touched by the numpy backend)."""
    with pyhf_backend("numpy"):
        pyhf.set_backend(pyhf.tensorlib, pyhf.optimize.minuit_optimizer(verbose=0))
        yield


def _as_workspace(workspace: Any) -> pyhf.Workspace:
    if isinstance(workspace, pyhf.Workspace):
        return workspace
    if isinstance(workspace, Mapping):
        try:
            return pyhf.Workspace(dict(workspace))
        except pyhf.exceptions.InvalidSpecification as err:
            raise ValueError(f"workspace is not a valid pyhf workspace specification: {err}") from err
    raise ValueError(f"workspace must be a pyhf.Workspace or a workspace specification dict, got {type(workspace)}")


def _model(workspace: pyhf.Workspace) -> pyhf.pdf.Model:
    return workspace.model(modifier_settings=MODIFIER_SETTINGS)


@dataclass(frozen=True, eq=False)
class _Parameters:
    """Per-parameter description of a model, in ``model.config.par_names`` order."""

    labels: tuple[str, ...]
    modifier_types: tuple[str, ...]
    constraint_types: tuple[str, ...]  # "normal", "poisson" or "none"
    nominal: np.ndarray
    prefit_uncertainty: np.ndarray
    fixed: np.ndarray


def _parameters(model: pyhf.pdf.Model) -> _Parameters:
    modifier_of = dict(model.config.modifiers)
    mods, cons, nominal, width, fixed = [], [], [], [], []
    for name in model.config.par_order:
        ps = model.config.param_set(name)
        n = ps.n_parameters
        is_fixed = [bool(f) for f in ps.suggested_fixed]
        mods += [modifier_of.get(name, "normfactor")] * n
        fixed += is_fixed
        if ps.constrained:
            aux = np.asarray(ps.auxdata, dtype=float)
            if ps.pdf_type == "poisson":
                aux = aux / np.asarray(ps.factors, dtype=float)
            cons += [str(ps.pdf_type)] * n
            nominal += [float(v) if f else float(a) for v, a, f in zip(ps.suggested_init, aux, is_fixed, strict=True)]
            width += [0.0 if f else float(w) for w, f in zip(ps.width(), is_fixed, strict=True)]
        else:
            cons += ["none"] * n
            nominal += [float(v) for v in ps.suggested_init]
            width += [0.0] * n
    labels = tuple(model.config.par_names)
    if len(labels) != len(nominal):  # pragma: no cover - guards against a pyhf layout change
        raise RuntimeError("parameter bookkeeping does not match model.config.par_names")
    return _Parameters(
        labels, tuple(mods), tuple(cons), _frozen(nominal), _frozen(width), _frozen(np.asarray(fixed, dtype=bool))
    )


def _frozen(x: Any) -> np.ndarray:
    a = np.array(x, dtype=bool if np.asarray(x).dtype == bool else float)
    a.setflags(write=False)
    return a


def _full_data(model: pyhf.pdf.Model, workspace: pyhf.Workspace, data: Any, asimov: bool) -> np.ndarray:
    """Main-bin counts followed by the auxiliary data, as pyhf's likelihood wants them."""
    if asimov:
        if data is not None:
            raise ValueError("pass either data or asimov=True, not both")
        return np.asarray(model.expected_data(_parameters(model).nominal), dtype=float)
    if data is None:
        return np.asarray(workspace.data(model), dtype=float)
    n_main, n_aux = model.config.nmaindata, model.config.nauxdata
    try:
        d = np.asarray(data, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"data must be a 1-d array of event counts, got {data!r}") from err
    if d.ndim != 1 or d.size not in (n_main, n_main + n_aux):
        raise ValueError(
            f"data must be 1-d with {n_main} main-bin counts (optionally followed by the {n_aux} auxiliary data), "
            f"got shape {d.shape}"
        )
    if not np.all(np.isfinite(d)) or np.any(d[:n_main] < 0):
        raise ValueError("data must be finite and its main-bin counts >= 0")
    if d.size == n_main:
        d = np.concatenate([d, np.asarray(model.config.auxdata, dtype=float)])
    return d


# ---------------------------------------------------------------------------------------------- fit
@dataclass(frozen=True, eq=False)
class PullResult:
    """Pulls and constraints of the constrained, floating parameters of a fit. Arrays are (n,) in ``labels`` order;
    ``nominal`` theta0, ``prefit_uncertainty`` sigma_pre, ``bestfit`` theta_hat, ``uncertainty`` sigma_post."""

    labels: tuple[str, ...]
    modifier_types: tuple[str, ...]
    constraint_types: tuple[str, ...]
    nominal: np.ndarray
    prefit_uncertainty: np.ndarray
    bestfit: np.ndarray
    uncertainty: np.ndarray

    @property
    def pull(self) -> np.ndarray:
        """(theta_hat - theta0) / sigma_pre."""
        return (self.bestfit - self.nominal) / self.prefit_uncertainty

    @property
    def constraint(self) -> np.ndarray:
        """sigma_post / sigma_pre (< 1: the data constrain the parameter beyond its auxiliary measurement)."""
        return self.uncertainty / self.prefit_uncertainty

    def table(self) -> Table:
        """One row per parameter: modifier, constraint pdf, theta0 +- sigma_pre, theta_hat +- sigma_post, pull,
        constraint."""
        rows = [
            [lab, mod, con, Measurement(n0, s0), Measurement(b, s), float(p), float(c)]
            for lab, mod, con, n0, s0, b, s, p, c in zip(
                self.labels,
                self.modifier_types,
                self.constraint_types,
                self.nominal,
                self.prefit_uncertainty,
                self.bestfit,
                self.uncertainty,
                self.pull,
                self.constraint,
                strict=True,
            )
        ]
        return Table(
            "Nuisance-parameter pulls and constraints",
            ["parameter", "modifier", "constraint pdf", "pre-fit", "post-fit", "pull", "constraint"],
            rows,
            notes=[
                "pull = (theta_hat - theta0) / sigma_pre, constraint = sigma_post / sigma_pre; Poisson (shapesys) "
                "constraints use the same formula with sigma_pre = 1/sqrt(tau)."
            ],
        )


@dataclass(frozen=True, eq=False)
class FitResult:
    """A maximum-likelihood fit: ``bestfit`` and HESSE ``uncertainty`` (0 for fixed parameters), ``corr_mat``
    (n, n), ``best_twice_nll`` (-2 ln L at the minimum), all in ``labels`` (= ``model.config.par_names``) order, plus
    the model's nominal values theta0, pre-fit uncertainties (0 for unconstrained or fixed parameters), modifier and
    constraint types, and the POI index."""

    labels: tuple[str, ...]
    bestfit: np.ndarray
    uncertainty: np.ndarray
    corr_mat: np.ndarray
    best_twice_nll: float
    poi_index: int | None
    nominal: np.ndarray
    prefit_uncertainty: np.ndarray
    fixed: np.ndarray
    modifier_types: tuple[str, ...]
    constraint_types: tuple[str, ...]

    @property
    def covariance(self) -> np.ndarray:
        """(n, n) covariance from the correlation matrix and uncertainties."""
        return self.corr_mat * np.outer(self.uncertainty, self.uncertainty)

    @property
    def poi_name(self) -> str | None:
        return None if self.poi_index is None else self.labels[self.poi_index]

    @property
    def poi(self) -> float:
        """Best-fit POI (mu_hat)."""
        return float(self.bestfit[self._require_poi()])

    @property
    def poi_uncertainty(self) -> float:
        return float(self.uncertainty[self._require_poi()])

    def index(self, label: str) -> int:
        """Position of parameter ``label``."""
        try:
            return self.labels.index(label)
        except ValueError:
            raise ValueError(f"unknown parameter {label!r}; parameters are {list(self.labels)}") from None

    def pulls(self) -> PullResult:
        """Pulls and constraints of the constrained, floating parameters (sigma_pre > 0)."""
        keep = np.flatnonzero(self.prefit_uncertainty > 0)
        return PullResult(
            tuple(self.labels[i] for i in keep),
            tuple(self.modifier_types[i] for i in keep),
            tuple(self.constraint_types[i] for i in keep),
            _frozen(self.nominal[keep]),
            _frozen(self.prefit_uncertainty[keep]),
            _frozen(self.bestfit[keep]),
            _frozen(self.uncertainty[keep]),
        )

    def table(self) -> Table:
        """One row per parameter: modifier, pre-fit theta0 +- sigma_pre (empty if unconstrained or fixed), best fit
        +- sigma_post (the value alone for fixed parameters)."""
        rows = []
        for i, label in enumerate(self.labels):
            pre = Measurement(self.nominal[i], self.prefit_uncertainty[i]) if self.prefit_uncertainty[i] > 0 else None
            post = float(self.bestfit[i]) if self.fixed[i] else Measurement(self.bestfit[i], self.uncertainty[i])
            rows.append([label, self.modifier_types[i], pre, post, "fixed" if self.fixed[i] else ""])
        return Table(
            "Maximum-likelihood fit",
            ["parameter", "modifier", "pre-fit", "best fit", "status"],
            rows,
            notes=[f"-2 ln L = {self.best_twice_nll:.6f} at the minimum; symmetric HESSE uncertainties."],
        )

    def _require_poi(self) -> int:
        if self.poi_index is None:
            raise ValueError("the fitted model has no parameter of interest")
        return self.poi_index


def _minimize(
    model: pyhf.pdf.Model, data: np.ndarray, init_pars: Sequence[float], fixed: Sequence[bool], par: _Parameters
) -> FitResult:
    """One MIGRAD + HESSE fit (inside :func:`_numpy_minuit`)."""
    try:
        values, corr, twice_nll, obj = pyhf.infer.mle.fit(
            data,
            model,
            init_pars=list(init_pars),
            fixed_params=list(fixed),
            par_bounds=model.config.suggested_bounds(),
            return_uncertainties=True,
            return_correlations=True,
            return_fitted_val=True,
            return_result_obj=True,
        )
    except pyhf.exceptions.FailedMinimization as err:
        raise RuntimeError(f"the maximum-likelihood fit did not converge: {err}") from err
    values = np.asarray(values, dtype=float)
    is_fixed = np.asarray(obj.minuit.fixed, dtype=bool)
    return FitResult(
        labels=par.labels,
        bestfit=_frozen(values[:, 0]),
        uncertainty=_frozen(np.where(is_fixed, 0.0, values[:, 1])),
        corr_mat=_frozen(np.asarray(corr, dtype=float)),
        best_twice_nll=float(twice_nll),
        poi_index=model.config.poi_index,
        nominal=par.nominal,
        prefit_uncertainty=par.prefit_uncertainty,
        fixed=_frozen(is_fixed),
        modifier_types=par.modifier_types,
        constraint_types=par.constraint_types,
    )


def fit(workspace: WorkspaceLike, data: Any = None, *, asimov: bool = False) -> FitResult:
    """Maximum-likelihood fit of the workspace's model (first measurement) to ``data``.

    ``data``: main-bin event counts in channel order (``model.config.nmaindata`` values), optionally followed by the
    auxiliary data; default the workspace's observations. ``asimov=True`` fits the pre-fit Asimov data set (all
    parameters at theta0) instead. ``workspace`` is a :class:`pyhf.Workspace` or its specification dict.
    """
    ws = _as_workspace(workspace)
    with _numpy_minuit():
        model = _model(ws)
        d = _full_data(model, ws, data, asimov)
        return _minimize(model, d, model.config.suggested_init(), model.config.suggested_fixed(), _parameters(model))


def _check_fit_result(fit_result: Any, labels: tuple[str, ...]) -> FitResult:
    if not isinstance(fit_result, FitResult):
        raise ValueError(f"fit_result must be a FitResult from surrinf.sensitivity.fit, got {type(fit_result)}")
    if fit_result.labels != labels:
        raise ValueError(
            f"fit_result parameters {list(fit_result.labels)} do not match the workspace model's {list(labels)}"
        )
    return fit_result


# ---------------------------------------------------------------------------------------------- impacts
@dataclass(frozen=True, eq=False)
class ImpactResult:
    """Impacts on the POI of every other parameter (model order, POI removed). Impacts are mu_hat(theta fixed) -
    mu_hat for theta fixed at theta_hat + sigma_pre (``prefit_up``), theta_hat - sigma_pre (``prefit_down``), theta_hat
    + sigma_post (``postfit_up``), theta_hat - sigma_post (``postfit_down``); ``fit`` is the nominal fit."""

    poi_name: str
    labels: tuple[str, ...]
    prefit_up: np.ndarray
    prefit_down: np.ndarray
    postfit_up: np.ndarray
    postfit_down: np.ndarray
    fit: FitResult

    @property
    def poi(self) -> float:
        """Nominal best-fit POI mu_hat."""
        return float(self.fit.bestfit[self.fit.index(self.poi_name)])

    @property
    def poi_uncertainty(self) -> float:
        return float(self.fit.uncertainty[self.fit.index(self.poi_name)])

    @property
    def max_postfit_impact(self) -> np.ndarray:
        """(n,) max(|post-fit up|, |post-fit down|), the ranking key."""
        return np.maximum(np.abs(self.postfit_up), np.abs(self.postfit_down))

    @property
    def order(self) -> np.ndarray:
        """Indices into ``labels`` by decreasing :attr:`max_postfit_impact` (ties keep model order)."""
        return np.argsort(-self.max_postfit_impact, kind="stable")

    @property
    def ranked_labels(self) -> tuple[str, ...]:
        return tuple(self.labels[i] for i in self.order)

    def table(self, max_pars: int | None = None) -> Table:
        """Ranking table (largest post-fit impact first, at most ``max_pars`` rows): impacts on the POI, pull and
        constraint (empty for unconstrained parameters)."""
        pulls = self.fit.pulls()
        pull_of = dict(zip(pulls.labels, zip(pulls.pull, pulls.constraint, strict=True), strict=True))
        rows = []
        for i in self.order[: _max_pars(max_pars, len(self.labels))]:
            pull, constraint = pull_of.get(self.labels[i], (None, None))
            rows.append(
                [
                    self.labels[i],
                    float(self.prefit_up[i]),
                    float(self.prefit_down[i]),
                    float(self.postfit_up[i]),
                    float(self.postfit_down[i]),
                    None if pull is None else float(pull),
                    None if constraint is None else float(constraint),
                ]
            )
        return Table(
            f"Impacts on {self.poi_name} (mu_hat = {Measurement(self.poi, self.poi_uncertainty)})",
            ["parameter", "pre-fit up", "pre-fit down", "post-fit up", "post-fit down", "pull", "constraint"],
            rows,
            notes=[
                f"impact = {self.poi_name}_hat(theta fixed) - {self.poi_name}_hat with theta fixed at theta_hat +- "
                "sigma_pre (pre-fit) or theta_hat +- sigma_post (post-fit); ranked by the largest post-fit impact.",
                "pull = (theta_hat - theta0) / sigma_pre, constraint = sigma_post / sigma_pre.",
            ],
        )

    def tables(self, max_pars: int | None = None) -> dict[str, Table]:
        """``{"ranking": ..., "pulls": ..., "fit": ...}``."""
        return {"ranking": self.table(max_pars), "pulls": self.fit.pulls().table(), "fit": self.fit.table()}


def _max_pars(max_pars: int | None, n: int) -> int:
    if max_pars is None:
        return n
    if isinstance(max_pars, bool) or not isinstance(max_pars, int | np.integer) or max_pars < 1:
        raise ValueError(f"max_pars must be None or an integer >= 1, got {max_pars!r}")
    return int(max_pars)


def impacts(
    workspace: WorkspaceLike,
    data: Any = None,
    *,
    asimov: bool = False,
    fit_result: FitResult | None = None,
    poi_name: str | None = None,
) -> ImpactResult:
    """Pre- and post-fit impacts of every parameter on the POI (``poi_name``, default the measurement's POI), by
    refits with the parameter fixed (up to 4 refits per parameter; cabinetry's ``fit.ranking``). ``data``/``asimov``
    as for :func:`fit`; ``fit_result`` reuses a nominal fit of the same model and data (else it is refitted).
    A ValueError names any parameter whose shifted value would leave its bounds (e.g. a normfactor bounded at 0)."""
    ws = _as_workspace(workspace)
    with _numpy_minuit():
        model = _model(ws)
        par = _parameters(model)
        d = _full_data(model, ws, data, asimov)
        if poi_name is None:
            poi_index = model.config.poi_index
            if poi_index is None:
                raise ValueError("the workspace has no POI; pass poi_name")
        elif poi_name in par.labels:
            poi_index = par.labels.index(poi_name)
        else:
            raise ValueError(f"poi_name {poi_name!r} is not a model parameter; parameters are {list(par.labels)}")
        init, fixed = model.config.suggested_init(), model.config.suggested_fixed()
        bounds = model.config.suggested_bounds()
        nominal = (
            _minimize(model, d, init, fixed, par) if fit_result is None else _check_fit_result(fit_result, par.labels)
        )
        mu_hat = nominal.bestfit[poi_index]
        shifts = []
        for i in range(len(par.labels)):
            if i == poi_index:
                continue
            theta = nominal.bestfit[i]
            row = []
            for kind, value in (
                ("pre-fit up", theta + par.prefit_uncertainty[i]),
                ("pre-fit down", theta - par.prefit_uncertainty[i]),
                ("post-fit up", theta + nominal.uncertainty[i]),
                ("post-fit down", theta - nominal.uncertainty[i]),
            ):
                if value == theta:  # unconstrained (pre-fit) or fixed parameter: no refit
                    row.append(0.0)
                    continue
                lo, hi = bounds[i]
                if not lo <= value <= hi:
                    raise ValueError(
                        f"the {kind} impact of {par.labels[i]} fixes it at {value:.6g}, outside its bounds "
                        f"[{lo}, {hi}]; widen the bounds in the workspace's measurement config"
                    )
                init_i, fixed_i = list(init), list(fixed)
                init_i[i], fixed_i[i] = float(value), True
                row.append(float(_minimize(model, d, init_i, fixed_i, par).bestfit[poi_index] - mu_hat))
            shifts.append(row)
    s = np.asarray(shifts, dtype=float).reshape(-1, 4)
    return ImpactResult(
        poi_name=par.labels[poi_index],
        labels=tuple(lab for j, lab in enumerate(par.labels) if j != poi_index),
        prefit_up=_frozen(s[:, 0]),
        prefit_down=_frozen(s[:, 1]),
        postfit_up=_frozen(s[:, 2]),
        postfit_down=_frozen(s[:, 3]),
        fit=nominal,
    )


# ---------------------------------------------------------------------------------------------- yields
@dataclass(frozen=True, eq=False)
class Yields:
    """Model yields with uncertainties [events]. ``yields`` (n_samples, n_bins) with the bins of all channels
    concatenated (``channel_nbins`` per channel); ``stdev`` (n_samples + 1, n_bins), last row the total;
    ``channel_yields``/``channel_stdev`` (n_samples + 1, n_channels): sums over each channel's bins, last row the
    total. ``label``: "pre-fit" or "post-fit"."""

    label: str
    samples: tuple[str, ...]
    channels: tuple[str, ...]
    channel_nbins: tuple[int, ...]
    yields: np.ndarray
    stdev: np.ndarray
    channel_yields: np.ndarray
    channel_stdev: np.ndarray

    @property
    def total(self) -> np.ndarray:
        """(n_bins,) sum over samples [events]."""
        return self.yields.sum(axis=0)


def _yields(model: pyhf.pdf.Model, label: str, values: np.ndarray, sigma: np.ndarray, corr: np.ndarray) -> Yields:
    """Yields at ``values`` and their linearly propagated (symmetrised) uncertainties."""
    channels = tuple(model.config.channels)
    slices = [model.config.channel_slices[ch] for ch in channels]

    def expanded(pars: np.ndarray) -> np.ndarray:
        """(n_samples + 1, n_bins + n_channels): per-sample yields and total, per bin then per channel."""
        by_sample = np.asarray(model.main_model.expected_data(pars, return_by_sample=True), dtype=float)
        by_sample = np.vstack([by_sample, by_sample.sum(axis=0)])
        return np.hstack([by_sample, np.stack([by_sample[:, s].sum(axis=1) for s in slices], axis=1)])

    variations = []
    for i in range(values.size):
        up, down = values.copy(), values.copy()
        up[i] += sigma[i]
        down[i] -= sigma[i]
        variations.append((expanded(up) - expanded(down)) / 2.0)
    v = np.asarray(variations)  # (n_pars, n_samples + 1, n_bins + n_channels)
    variance = np.einsum("i...,ij,j...->...", v, corr, v)
    stdev = np.sqrt(np.clip(variance, 0.0, None))
    central = expanded(values)
    n_bins = model.config.nmaindata
    return Yields(
        label=label,
        samples=tuple(model.config.samples),
        channels=channels,
        channel_nbins=tuple(int(model.config.channel_nbins[ch]) for ch in channels),
        yields=_frozen(central[:-1, :n_bins]),
        stdev=_frozen(stdev[:, :n_bins]),
        channel_yields=_frozen(central[:, n_bins:]),
        channel_stdev=_frozen(stdev[:, n_bins:]),
    )


@dataclass(frozen=True, eq=False)
class YieldsResult:
    """Pre- and post-fit :class:`Yields` and the workspace's observed ``data`` (n_bins,) [events]."""

    prefit: Yields
    postfit: Yields
    data: np.ndarray

    def table(self, label: str = "post-fit") -> Table:
        """Yields table for ``label`` ("pre-fit" or "post-fit"): one row per sample, the total and the data; one
        column per bin ("<channel> bin <i>") and per channel total."""
        if label not in ("pre-fit", "post-fit"):
            raise ValueError(f"label must be 'pre-fit' or 'post-fit', got {label!r}")
        y = self.prefit if label == "pre-fit" else self.postfit
        columns, data_cells, bins = ["sample"], [], []
        start = 0
        for ch, nb in zip(y.channels, y.channel_nbins, strict=True):
            columns += [f"{ch} bin {i}" for i in range(nb)]
            bins.append(list(range(start, start + nb)))
            start += nb
        columns += [f"{ch} total" for ch in y.channels]
        full = np.vstack([y.yields, y.total])
        names = [*y.samples, "total"]
        rows = []
        for k, name in enumerate(names):
            cells: list[Any] = [name]
            cells += [Measurement(full[k, b], y.stdev[k, b]) for b in range(full.shape[1])]
            cells += [Measurement(y.channel_yields[k, c], y.channel_stdev[k, c]) for c in range(len(y.channels))]
            rows.append(cells)
        data_cells = [float(x) for x in self.data]
        data_cells += [float(self.data[idx].sum()) for idx in bins]
        rows.append(["data", *data_cells])
        return Table(
            f"{label.capitalize()} yields [events]",
            columns,
            rows,
            notes=[
                "uncertainties: linear propagation of the symmetrised +-1 sigma parameter variations"
                + (" with the fit correlation matrix" if label == "post-fit" else " (uncorrelated pre-fit)")
            ],
        )

    def tables(self) -> dict[str, Table]:
        """``{"prefit": ..., "postfit": ...}``."""
        return {"prefit": self.table("pre-fit"), "postfit": self.table("post-fit")}


def yields(workspace: WorkspaceLike, fit_result: FitResult | None = None) -> YieldsResult:
    """Pre-fit yields (parameters at theta0, uncorrelated pre-fit uncertainties) and post-fit yields (at the best fit,
    HESSE uncertainties and correlations) per sample and bin [events]. ``fit_result`` defaults to :func:`fit` of the
    workspace's observations."""
    ws = _as_workspace(workspace)
    with _numpy_minuit():
        model = _model(ws)
        par = _parameters(model)
        if fit_result is None:
            d = _full_data(model, ws, None, False)
            fit_result = _minimize(model, d, model.config.suggested_init(), model.config.suggested_fixed(), par)
        fr = _check_fit_result(fit_result, par.labels)
        n = len(par.labels)
        prefit = _yields(model, "pre-fit", np.array(par.nominal), np.array(par.prefit_uncertainty), np.eye(n))
        postfit = _yields(model, "post-fit", np.array(fr.bestfit), np.array(fr.uncertainty), np.array(fr.corr_mat))
        observed = np.asarray(ws.data(model, include_auxdata=False), dtype=float)
    return YieldsResult(prefit, postfit, _frozen(observed))


# ---------------------------------------------------------------------------------------------- plots
def _save(fig: Figure, path: str | os.PathLike | None) -> None:
    if path is not None:
        save_figure(fig, Path(path), close=False)


def plot_ranking(result: ImpactResult, path: str | os.PathLike | None = None, *, max_pars: int | None = None) -> Figure:
    """cabinetry-style ranking plot: horizontal bars of the pre-fit (open) and post-fit (filled) impacts on the POI
    (top axis), largest post-fit impact at the top, with the pulls and constraints (points with error bars
    sigma_post / sigma_pre, bottom axis). Saved to ``path`` (PNG unless the suffix says otherwise) if given."""
    if not isinstance(result, ImpactResult):
        raise ValueError(f"result must be an ImpactResult, got {type(result)}")
    order = result.order[: _max_pars(max_pars, len(result.labels))]
    n = len(order)
    pulls = result.fit.pulls()
    pull_of = dict(zip(pulls.labels, zip(pulls.pull, pulls.constraint, strict=True), strict=True))
    fig, ax_pulls = new_figure(figsize=(10.0, 3.0 + 0.6 * n))
    with hep_style():
        ax_impact = ax_pulls.twiny()
        ax_pulls.set_zorder(1)
        ax_pulls.patch.set_visible(False)
        y = np.arange(n)[::-1].astype(float)
        handles = [
            ax_impact.barh(y, result.prefit_up[order], fill=False, linewidth=1.5, edgecolor="C0"),
            ax_impact.barh(y, result.prefit_down[order], fill=False, linewidth=1.5, edgecolor="C5"),
            ax_impact.barh(y, result.postfit_up[order], color="C0", alpha=0.8),
            ax_impact.barh(y, result.postfit_down[order], color="C5", alpha=0.8),
        ]
        names = [
            r"pre-fit: $\theta = \hat{\theta} + \Delta\theta$",
            r"pre-fit: $\theta = \hat{\theta} - \Delta\theta$",
            r"post-fit: $\theta = \hat{\theta} + \Delta\hat{\theta}$",
            r"post-fit: $\theta = \hat{\theta} - \Delta\hat{\theta}$",
        ]
        labels = [result.labels[i] for i in order]
        has = [k for k, lab in enumerate(labels) if lab in pull_of]
        if has:
            px = np.array([pull_of[labels[k]][0] for k in has])
            pe = np.array([pull_of[labels[k]][1] for k in has])
            handles.append(ax_pulls.errorbar(px, y[has], xerr=pe, fmt="o", color="k"))
            names.append("pull")
        for x in (-1.0, 0.0, 1.0):
            ax_pulls.axvline(x, color="black", linestyle="--", linewidth=0.75)
        ax_pulls.set_xlim(-2.0, 2.0)
        ax_pulls.set_ylim(-1.0, n)
        ax_pulls.set_yticks(y)
        ax_pulls.set_yticklabels(labels)
        ax_pulls.set_xlabel(r"$(\hat{\theta} - \theta_0) / \Delta\theta$")
        ax_impact.set_xlabel(rf"$\Delta\hat{{{_latex_name(result.poi_name)}}}$")
        widest = float(
            np.max(np.abs(np.concatenate([result.prefit_up[order], result.prefit_down[order], [0.0]])), initial=0.0)
        )
        widest = max(widest, float(np.max(result.max_postfit_impact[order], initial=0.0)))
        if widest > 0:
            ax_impact.set_xlim(-1.1 * widest, 1.1 * widest)
        fig.legend(handles, names, loc="outside upper center", ncol=3, frameon=False, fontsize="small")
    _save(fig, path)
    return fig


def plot_pulls(
    result: PullResult | FitResult,
    path: str | os.PathLike | None = None,
    *,
    exclude: Iterable[str] = (),
    include_staterror: bool = False,
) -> Figure:
    """Pull plot: (theta_hat - theta0) / sigma_pre with error bars sigma_post / sigma_pre, on +-1 (green) and +-2
    (yellow) bands. Parameters in ``exclude`` and, unless ``include_staterror``, staterror gammas are left out (as in
    cabinetry). Saved to ``path`` if given."""
    if isinstance(result, FitResult):
        result = result.pulls()
    if not isinstance(result, PullResult):
        raise ValueError(f"result must be a PullResult or FitResult, got {type(result)}")
    if isinstance(exclude, str):
        exclude = (exclude,)
    skip = set(exclude)
    keep = [
        k
        for k, (lab, mod) in enumerate(zip(result.labels, result.modifier_types, strict=True))
        if lab not in skip and (include_staterror or mod != "staterror")
    ]
    if not keep:
        raise ValueError("no parameter left to draw in the pull plot (check exclude / include_staterror)")
    n = len(keep)
    fig, ax = new_figure(figsize=(8.0, 2.0 + 0.5 * n))
    with hep_style():
        y = np.arange(n)[::-1].astype(float)
        ax.fill_betweenx([-0.5, n - 0.5], -2.0, 2.0, color="yellow", label=r"$\pm 2\sigma$")
        ax.fill_betweenx([-0.5, n - 0.5], -1.0, 1.0, color="limegreen", label=r"$\pm 1\sigma$")
        ax.axvline(0.0, color="black", linestyle=":")
        ax.errorbar(result.pull[keep], y, xerr=result.constraint[keep], fmt="o", color="black", label="pull")
        ax.set_xlim(-3.0, 3.0)
        ax.set_ylim(-0.5, n - 0.5)
        ax.set_yticks(y)
        ax.set_yticklabels([result.labels[k] for k in keep])
        ax.set_xlabel(r"$(\hat{\theta} - \theta_0) / \Delta\theta$")
    _save(fig, path)
    return fig


def _latex_name(name: str) -> str:
    """A parameter name for math text: Greek letter names become their symbol, other names upright text."""
    greek = {"mu": r"\mu", "sigma": r"\sigma", "theta": r"\theta"}
    return greek.get(name, r"\mathrm{" + name.replace("_", r"\_") + "}")
