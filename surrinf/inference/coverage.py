"""Frequentist coverage of tempered posteriors, vectorised over pseudo-experiments.

Simulation-based calibration (Talts et al. 2018): for M pseudo-experiments theta*_m is drawn from the prior, data
of N events at the given beam energies come from the reference simulator, and the tempered surrogate posterior is
computed for each tau under study. The posterior CDF at the truth, u_m = P(theta < theta*_m | x_m), is uniform for a
calibrated posterior: its histogram is the SBC rank histogram and the central interval of probability L covers the
truth iff |u_m - 1/2| < L / 2.

The posterior of each experiment is computed by :func:`laplace_importance_posterior`: a trust-region Newton search for
the maximum of the tempered posterior in the unconstrained coordinates, then self-normalised importance sampling
from a multivariate Student-t proposal around it (covariance from the Hessian, inflated), which corrects the
Laplace approximation (exact as the number of draws grows; its Kish ESS is reported and checked). It is vmapped
over a batch of experiments (``jax.lax.map`` with ``batch_size``), which NUTS per experiment would not afford on a
CPU. :func:`coverage_tau` chooses tau on a grid by the coverage of calibration pseudo-experiments (Syring and
Martin 2019).

Runs in float64 (``jax.enable_x64`` locally).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from surrinf.report import Measurement, Table

from .prior import BoxPrior
from .problem import CalibrationProblem, check_tau, log_posterior_unconstrained
from .result import PosteriorResult
from .temperature import Temperature

__all__ = ["CoverageStudy", "coverage_tau", "laplace_importance_posterior", "run_coverage"]

_NEWTON_STEPS = 30
_REFINE_STEPS = 4


def _maximise(logpost, z0: jax.Array, n_steps: int = _NEWTON_STEPS) -> tuple[jax.Array, jax.Array]:
    """Trust-region Newton ascent of logpost from z0 (``n_steps`` steps); returns (z_max, Hessian there)."""

    def body(_, state):
        z, radius, f = state
        g = jax.grad(logpost)(z)
        h = jax.hessian(logpost)(z)
        w, v = jnp.linalg.eigh(-h)
        w = jnp.maximum(jnp.abs(w), 1e-8)  # ascent direction even where the Hessian is not negative definite
        step = v @ ((v.T @ g) / w)
        norm = jnp.linalg.norm(step)
        step = step * jnp.minimum(1.0, radius / jnp.maximum(norm, 1e-300))
        z_new = z + step
        f_new = logpost(z_new)
        ok = jnp.isfinite(f_new) & (f_new >= f)
        return (
            jnp.where(ok, z_new, z),
            jnp.where(ok, jnp.minimum(2.0 * radius, 8.0), 0.25 * radius),
            jnp.where(ok, f_new, f),
        )

    z, _, _ = jax.lax.fori_loop(0, n_steps, body, (z0, jnp.asarray(2.0, z0.dtype), logpost(z0)))
    return z, jax.hessian(logpost)(z)


def _proposal_scale(h: jax.Array, inflation: float) -> jax.Array:
    """Cholesky-like factor L (L L^T = inflation^2 (-H)^-1, eigenvalues clamped positive)."""
    w, v = jnp.linalg.eigh(-h)
    w = jnp.maximum(w, 1e-8 * jnp.max(jnp.abs(w)) + 1e-300)
    return inflation * v / jnp.sqrt(w)[None, :]


def _importance(logpost, key, z_map, h, n_draws: int, df: float, inflation: float, batch: int):
    """Draws z (K, P), normalised weights (K,) and Kish ESS of Student-t importance sampling around z_map."""
    p = z_map.shape[0]
    scale = _proposal_scale(h, inflation)
    k1, k2 = jax.random.split(key)
    eps = jax.random.normal(k1, (n_draws, p), dtype=z_map.dtype)
    chi2 = 2.0 * jax.random.gamma(k2, df / 2.0, (n_draws,), dtype=z_map.dtype)
    t = eps * jnp.sqrt(df / chi2)[:, None]
    z = z_map + t @ scale.T
    # log q up to a constant (the same for every draw): multivariate t in the whitened coordinates.
    log_q = -0.5 * (df + p) * jnp.log1p(jnp.sum(t**2, axis=1) / df)
    log_p = jax.lax.map(logpost, z, batch_size=batch)
    log_w = jnp.where(jnp.isfinite(log_p), log_p - log_q, -jnp.inf)
    w = jnp.exp(log_w - jnp.max(log_w))
    w = w / jnp.sum(w)
    return z, w, 1.0 / jnp.sum(w**2), log_p


def laplace_importance_posterior(
    problem: CalibrationProblem,
    key: jax.Array,
    tau: float = 1.0,
    *,
    n_draws: int = 2000,
    df: float = 5.0,
    inflation: float = 1.2,
) -> PosteriorResult:
    """Tempered posterior of one problem by Laplace-proposal importance sampling (see the module docstring).

    Returns a weighted PosteriorResult (1 chain, ``n_draws`` draws); ``info`` has the Kish ESS and the maximum.
    Runs in float64 (``jax.enable_x64`` locally)."""
    tau = check_tau(tau)
    n_draws = _positive_int(n_draws, "n_draws")
    t0 = time.perf_counter()
    with jax.enable_x64(True):

        def logpost(z):
            return problem.log_posterior_unconstrained(z, tau)

        @jax.jit
        def run(key):
            z_map, h = _maximise(logpost, jnp.zeros(problem.dim))
            z, w, ess, _ = _importance(logpost, key, z_map, h, n_draws, df, inflation, 256)
            return problem.prior.from_unconstrained(z), w, ess, problem.prior.from_unconstrained(z_map)

        theta, w, ess, theta_map = (np.asarray(a, dtype=np.float64) for a in run(key))
    return PosteriorResult(
        theta[None],
        problem.prior.names,
        "laplace_is",
        tau,
        weights=w[None],
        info={
            "kish_ess": float(ess),
            "map_theta": theta_map.tolist(),
            "n_draws": n_draws,
            "df": df,
            "inflation": inflation,
            "wall_s": time.perf_counter() - t0,
        },
    )


@dataclass(frozen=True)
class CoverageStudy:
    """Posterior CDF at the truth for M pseudo-experiments and each tau.

    names: parameter names (P,); taus: {label: tau}; theta_true: (M, P); cdf_at_truth: (T, M, P);
    ess: (T, M) Kish ESS of each posterior; hpd_mass: (T, M) posterior mass denser than the truth (the joint
    highest-density region of probability L covers the truth iff hpd_mass < L);
    n_events: events per pseudo-experiment; info: settings, timing."""

    names: tuple[str, ...]
    taus: dict[str, float]
    theta_true: np.ndarray
    cdf_at_truth: np.ndarray
    ess: np.ndarray
    hpd_mass: np.ndarray
    n_events: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_experiments(self) -> int:
        return self.theta_true.shape[0]

    def coverage(self, level: float) -> np.ndarray:
        """(T, P) fraction of experiments whose central ``level`` interval covers the truth."""
        return np.mean(np.abs(self.cdf_at_truth - 0.5) < 0.5 * level, axis=1)

    def joint_coverage(self, level: float) -> np.ndarray:
        """(T,) fraction of experiments whose joint highest-posterior-density region of probability ``level``
        contains the truth."""
        return np.mean(self.hpd_mass < level, axis=1)

    def coverage_error(self, level: float) -> np.ndarray:
        """(T, P) binomial standard error of :meth:`coverage` (at the nominal rate)."""
        return np.full((len(self.taus), len(self.names)), math.sqrt(level * (1 - level) / self.n_experiments))

    def table(self, levels: Sequence[float] = (0.68, 0.95)) -> Table:
        """Coverage per tau rule and parameter, with binomial errors, and the mean over parameters."""
        rows = []
        for t, (label, tau) in enumerate(self.taus.items()):
            row: list[Any] = [label, tau]
            for level in levels:
                cov = self.coverage(level)[t]
                err = self.coverage_error(level)[t]
                row += [Measurement(float(c), float(e)) for c, e in zip(cov, err, strict=True)]
                row.append(float(cov.mean()))
                row.append(Measurement(float(self.joint_coverage(level)[t]), float(err[0])))
            row.append(float(np.median(self.ess[t])))
            rows.append(row)
        columns = ["rule", "tau"]
        for level in levels:
            columns += [f"{n} {level:.0%}" for n in self.names] + [f"mean {level:.0%}", f"joint {level:.0%}"]
        columns.append("median ESS")
        return Table(f"Coverage over {self.n_experiments} pseudo-experiments of {self.n_events} events", columns, rows)

    def rank_figure(self, n_bins: int = 10):
        """SBC histograms of the posterior CDF at the truth (one panel per parameter, one line per tau)."""
        from surrinf.report.figure import new_figure

        fig, axes = new_figure(ncols=len(self.names), figsize=(5 * len(self.names), 4))
        axes = np.atleast_1d(axes)
        edges = np.linspace(0, 1, n_bins + 1)
        expected = self.n_experiments / n_bins
        for j, (ax, name) in enumerate(zip(axes, self.names, strict=True)):
            for t, label in enumerate(self.taus):
                counts, _ = np.histogram(self.cdf_at_truth[t, :, j], edges)
                ax.stairs(counts, edges, label=label)
            ax.axhline(expected, color="k", ls="--", lw=1)
            ax.axhspan(expected - 2 * math.sqrt(expected), expected + 2 * math.sqrt(expected), color="0.85", zorder=0)
            ax.set_xlabel(f"posterior CDF at truth: {name}")
            ax.set_ylabel("pseudo-experiments")
        axes[0].legend(fontsize="small")
        return fig


@eqx.filter_jit
def _coverage_posteriors(
    density: Any,
    prior: BoxPrior,
    e_j: jax.Array,
    taus_j: jax.Array,
    xs: jax.Array,
    keys: jax.Array,
    th: jax.Array,
    n_draws: int,
    batch_size: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Posterior CDF at the truth (M, T, P), Kish ESS (M, T) and joint credibility of the truth (M, T) of every
    experiment (data xs (M, N, D), keys (M,), truths th (M, P)) at every tau of taus_j (T,). Module-level (the
    density's and prior's arrays are arguments, the rest static), so repeated studies with the same shapes, as
    :func:`coverage_tau` followed by :func:`run_coverage`, compile once."""

    def one(args):
        x, key, th_true = args

        def logpost(z, tau):
            return log_posterior_unconstrained(density, prior, x, e_j, z, tau)

        # One full search at the largest tau, then a few refinement steps per tau (the mode moves little).
        z0, _ = _maximise(lambda z: logpost(z, taus_j.max()), jnp.zeros(prior.dim))
        z_true = prior.to_unconstrained(th_true)

        def per_tau(tau, k):
            z_map, h = _maximise(lambda z: logpost(z, tau), z0, _REFINE_STEPS)
            z, w, ess, log_p = _importance(lambda z: logpost(z, tau), k, z_map, h, n_draws, 5.0, 1.2, 256)
            th = prior.from_unconstrained(z)
            cdf = jnp.sum(w[:, None] * (th < th_true[None, :]), axis=0)
            # Joint credibility of the truth: posterior mass where the theta-space density exceeds the truth's.
            dens = log_p - prior.log_density_unconstrained(z)
            dens_true = logpost(z_true, tau) - prior.log_density_unconstrained(z_true)
            return cdf, ess, jnp.sum(w * (dens > dens_true))

        # Common random numbers: every tau uses the same draws, so differences between rules are not MC noise.
        return jax.vmap(per_tau, in_axes=(0, None))(taus_j, key)

    return jax.lax.map(one, (xs, keys, th), batch_size=batch_size)


def run_coverage(
    density: Any,
    reference: Any,
    prior: BoxPrior,
    key: jax.Array,
    taus: Mapping[str, float] | Sequence[float],
    energies_gev: np.ndarray,
    *,
    n_experiments: int = 200,
    n_draws: int = 1000,
    batch_size: int = 4,
    theta_true: np.ndarray | None = None,
) -> CoverageStudy:
    """Coverage of the tempered posteriors of ``density`` on pseudo-data from ``reference`` (``simulate(key, energies,
    theta) -> x``): each experiment has the beam energies ``energies_gev`` (N,) [GeV] and theta* from the prior (or
    the rows of ``theta_true`` (M, P)). ``taus``: {label: tau} or a sequence of tau. Vectorised over experiments in
    batches of ``batch_size``. Runs in float64 (``jax.enable_x64`` locally)."""
    tau_map = dict(taus) if isinstance(taus, Mapping) else {f"{float(t):.4g}": float(t) for t in taus}
    if not tau_map:
        raise ValueError("taus must name at least one temperature")
    tau_map = {str(k): check_tau(v) for k, v in tau_map.items()}
    n_experiments = _positive_int(n_experiments, "n_experiments")
    n_draws = _positive_int(n_draws, "n_draws")
    batch_size = _positive_int(batch_size, "batch_size")
    e = np.asarray(energies_gev, dtype=np.float64).reshape(-1)
    k_theta, k_data, k_post = jax.random.split(key, 3)
    if theta_true is None:
        theta = prior.sample(k_theta, n_experiments)
    else:
        theta = prior.check(np.atleast_2d(theta_true), "theta_true")
        n_experiments = theta.shape[0]
    t0 = time.perf_counter()
    # Pseudo-data: experiment m simulated with fold_in(k_data, m) (independent of the batch size).
    xs = np.stack([reference.simulate(jax.random.fold_in(k_data, m), e, theta[m]) for m in range(n_experiments)])
    t_sim = time.perf_counter() - t0
    with jax.enable_x64(True):
        e_j = jnp.asarray(e, jnp.float32)
        taus_j = jnp.asarray(list(tau_map.values()))
        keys = jax.vmap(lambda m: jax.random.fold_in(k_post, m))(jnp.arange(n_experiments))
        cdf, ess, hpd = _coverage_posteriors(
            density, prior, e_j, taus_j, jnp.asarray(xs, jnp.float32), keys, jnp.asarray(theta), n_draws, batch_size
        )
        # (M, T, ...) -> (T, M, ...)
        cdfs, esss, hpds = (np.moveaxis(np.asarray(a), 1, 0) for a in (cdf, ess, hpd))
    return CoverageStudy(
        prior.names,
        tau_map,
        theta,
        cdfs,
        esss,
        hpds,
        e.size,
        {"n_draws": n_draws, "simulate_s": t_sim, "posterior_s": time.perf_counter() - t0 - t_sim},
    )


def coverage_tau(
    density: Any,
    reference: Any,
    prior: BoxPrior,
    key: jax.Array,
    energies_gev: np.ndarray,
    *,
    level: float = 0.68,
    tau_grid: Sequence[float] | None = None,
    aggregate: str = "mean",
    n_experiments: int = 200,
    n_draws: int = 1000,
    batch_size: int = 4,
) -> Temperature:
    """Coverage-calibrated tau (Syring and Martin 2019): the largest tau on ``tau_grid`` (log-linear interpolation)
    whose ``level`` credible intervals cover the truth in a fraction ``level`` of calibration pseudo-experiments
    (``aggregate``: "mean" over parameters, or "min": every parameter). Use a key independent of the one of the
    coverage study that evaluates the result."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if aggregate not in ("mean", "min"):
        raise ValueError(f"aggregate must be 'mean' or 'min', got {aggregate!r}")
    grid = np.sort(np.asarray(tau_grid if tau_grid is not None else np.geomspace(0.02, 1.0, 12), dtype=np.float64))
    study = run_coverage(
        density,
        reference,
        prior,
        key,
        list(grid),
        energies_gev,
        n_experiments=n_experiments,
        n_draws=n_draws,
        batch_size=batch_size,
    )
    cov = study.coverage(level)
    c = cov.mean(axis=1) if aggregate == "mean" else cov.min(axis=1)
    ok = np.nonzero(c >= level)[0]
    if ok.size == 0:
        tau = float(grid[0])
    elif ok[-1] == grid.size - 1:
        tau = 1.0 if c[-1] >= level else float(grid[-1])
    else:
        i = ok[-1]  # c[i] >= level > c[i + 1]: interpolate in log tau
        f = (c[i] - level) / (c[i] - c[i + 1])
        tau = float(np.exp(np.log(grid[i]) + f * (np.log(grid[i + 1]) - np.log(grid[i]))))
    return Temperature(
        "coverage",
        tau,
        {
            "level": level,
            "aggregate": aggregate,
            "tau_grid": grid.tolist(),
            "coverage": c.tolist(),
            "coverage_per_parameter": cov.tolist(),
            "n_experiments": study.n_experiments,
        },
    )


def _positive_int(v: Any, name: str) -> int:
    if isinstance(v, bool) or int(v) != v or int(v) < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    return int(v)
