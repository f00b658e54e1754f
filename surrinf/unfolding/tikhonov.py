"""Tikhonov-regularised and truncated-SVD unfolding, and the choice of the regularisation strength.

Tikhonov (:func:`tikhonov`): with ``s = d - f`` the fake-subtracted data and ``V`` its covariance (conventions of
:mod:`surrinf.unfolding.inversion`),

    t = argmin (s - P t)^T V^-1 (s - P t) + strength * || C (t / t_ref - 1) ||^2

(``reference`` t_ref given, Hoecker-Kartvelishvili style: regularise the deviation from a reference shape) or
``+ strength * || C t ||^2`` (no reference). ``C`` is the discrete second- or first-derivative matrix, or a user (m,
n_truth) array. Writing ``G = C diag(1 / t_ref)`` and ``g = C 1`` (zero for the derivative matrices) the estimator is
linear, ``t = A s + b`` with ``A = (P^T V^-1 P + strength G^T G)^-1 P^T V^-1``, so its covariance ``A V A^T`` is exact.
Regularisation biases the result: ``E[t] - t_true = (A P - 1) t_true + b``, growing with the strength; strength 0 is
the GLS inversion. The strength is a float that may be traced (jit/vmap over strengths).

Truncated SVD (:func:`svd_unfold`): whiten ``P_w = L^-1 P`` (``V = L L^T``), ``P_w = sum_i s_i u_i v_i^T``; then

    t = sum_i phi_i (u_i^T L^-1 s / s_i) v_i

with filter factors ``phi_i = 1`` for the k largest singular values and 0 otherwise. Tikhonov with ``C = 1`` (identity
curvature, no reference) is the same expansion with the smooth filter ``phi_i = s_i^2 / (s_i^2 + strength)``; the
truncation is its sharp-cut-off version (k ~ number of s_i^2 above the strength), and all k (square P) is inversion.

Strength choice: :func:`lcurve` (corner of log residual chi2 vs log ||C t||^2, the point of maximum curvature of the
parametric curve, from finite differences in log strength) and :func:`min_global_correlation` (minimum of the mean
global correlation coefficient rho_i = sqrt(1 - 1 / (U_ii (U^-1)_ii)) of the unfolded covariance U). Both evaluate
all strengths in one vmapped call.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular
from matplotlib.figure import Figure

from surrinf.report.figure import new_figure
from surrinf.unfolding.inversion import (
    _as_data,
    _as_data_cov,
    _check_rank,
    _check_response,
    _concrete,
    _fake_terms,
    _linear_unfold,
    _regularised_gls,
    _response_covariance,
    _signal,
)
from surrinf.unfolding.response import ResponseMatrix
from surrinf.unfolding.result import CPU_COMPILER_OPTIONS, UnfoldingResult, float64

__all__ = [
    "LCurve",
    "curvature_matrix",
    "lcurve",
    "min_global_correlation",
    "plot_lcurve",
    "svd_unfold",
    "tikhonov",
]


# ---------------------------------------------------------------------------------------------- regularisation
def curvature_matrix(n: int, kind: str = "second") -> np.ndarray:
    """Discrete derivative matrix on n bins: "second" (n - 2, n) rows (1, -2, 1); "first" (n - 1, n) rows (-1, 1)."""
    if kind == "second":
        if n < 3:
            raise ValueError(f"curvature='second' needs n_truth >= 3, got {n}")
        return np.diff(np.eye(n), n=2, axis=0)
    if kind == "first":
        if n < 2:
            raise ValueError(f"curvature='first' needs n_truth >= 2, got {n}")
        return np.diff(np.eye(n), n=1, axis=0)
    raise ValueError(f"curvature must be 'second', 'first' or an (m, n_truth) array, got {kind!r}")


def _regulariser(curvature: Any, reference: Any, n_t: int) -> tuple[jax.Array, jax.Array]:
    """(G (m, n_t), g (m,)) so that the penalty is ||G t - g||^2 (see the module docstring)."""
    if isinstance(curvature, str):
        c = jnp.asarray(curvature_matrix(n_t, curvature))
    else:
        c = jnp.asarray(curvature, dtype=jnp.float64)
        if c.ndim != 2 or c.shape[1] != n_t or c.shape[0] < 1:
            raise ValueError(f"curvature array must have shape (m, {n_t}) with m >= 1, got {c.shape}")
        cc = _concrete(curvature)
        if cc is not None and not np.all(np.isfinite(cc)):
            raise ValueError("curvature array must be finite")
    if reference is None:
        return c, jnp.zeros(c.shape[0])
    ref = jnp.asarray(reference, dtype=jnp.float64)
    if ref.shape != (n_t,):
        raise ValueError(f"reference must have shape ({n_t},) (reference truth spectrum), got {ref.shape}")
    rc = _concrete(reference)
    if rc is not None and (not np.all(np.isfinite(rc)) or np.any(rc <= 0)):
        raise ValueError("reference must be finite and > 0 in every truth bin")
    return c / ref[None, :], c @ jnp.ones(n_t)


def _check_strength(strength: Any) -> jax.Array:
    s = jnp.asarray(strength, dtype=jnp.float64)
    if s.shape != ():
        raise ValueError(f"strength must be a scalar, got shape {s.shape}; vmap over strengths")
    c = _concrete(strength)
    if c is not None and (not np.isfinite(c) or c < 0):
        raise ValueError(f"strength must be finite and >= 0, got {float(c)}")
    return s


def _check_regularised_rank(p: np.ndarray, g_mat: jax.Array, strength: Any) -> None:
    """Singular unless [P; G] has full column rank, and P itself when the strength is (concretely) 0."""
    c = _concrete(g_mat)
    if c is not None and np.linalg.matrix_rank(np.vstack([p, c])) < p.shape[1]:
        raise ValueError("curvature: the response and the regularisation together leave directions unconstrained")
    s = _concrete(strength)
    if s is not None and float(s) == 0.0:
        _check_rank(p)


# ---------------------------------------------------------------------------------------------- Tikhonov
@float64
def tikhonov(
    data: Any,
    response: ResponseMatrix,
    *,
    strength: Any,
    curvature: Any = "second",
    reference: Any = None,
    fakes: Any = None,
    data_cov: Any = None,
    propagate_response: bool = True,
) -> UnfoldingResult:
    """Tikhonov-regularised unfolding of ``data`` (n_reco,) [events] (method "tikhonov"; see the module docstring).

    ``strength`` >= 0 (scalar, may be traced) in units of chi2 per unit penalty; ``curvature`` "second", "first" or an
    (m, n_truth) array; ``reference`` (n_truth,) > 0 [events] regularises ``t / reference - 1`` instead of ``t``;
    ``fakes``, ``data_cov`` and ``propagate_response`` as for :func:`surrinf.unfolding.inversion.invert`. Covariance
    ``A V A^T`` (exact: the estimator is linear in the data for a given V). The response covariance is the first-order
    ``-A dP t`` term of :mod:`surrinf.unfolding.inversion` (the residual term, no longer zero on average once the
    regularisation biases t, is neglected). vmap-able over ``data`` and ``strength``.
    """
    r = _check_response(response)
    d = _as_data(data, r.n_reco)
    scale, offset = _fake_terms(r, fakes)
    cov_in = _as_data_cov(data_cov, r.n_reco)
    tau = _check_strength(strength)
    g_mat, g_vec = _regulariser(curvature, reference, r.n_truth)
    p = r.probabilities
    _check_regularised_rank(p, g_mat, strength)
    t, cov, rcov = _linear_unfold(
        jnp.asarray(p),
        None,
        d,
        scale,
        offset,
        cov_in,
        g_mat,
        g_vec,
        tau,
        jnp.asarray(r.n_eff),
        floor=True,
        propagate=bool(propagate_response),
    )
    return UnfoldingResult(t, cov, rcov, method="tikhonov")


# ---------------------------------------------------------------------------------------------- strength scans
@functools.partial(jax.jit, compiler_options=CPU_COMPILER_OPTIONS)
def _scan(
    p: jax.Array, s: jax.Array, v: jax.Array, g_mat: jax.Array, g_vec: jax.Array, strengths: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Pure, vmapped over strengths (n_s,): residual chi2 (n_s,), penalty ||G t - g||^2 (n_s,) and the mean global
    correlation (n_s,) of the unfolded covariance."""

    def one(tau: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        t, cov, _ = _regularised_gls(p, s, v, g_mat, g_vec, tau)
        res = s - p @ t
        chi2 = res @ jnp.linalg.solve(v, res)
        reg = jnp.sum((g_mat @ t - g_vec) ** 2)
        x = jnp.diagonal(cov) * jnp.diagonal(jnp.linalg.inv(cov))
        rho = jnp.sqrt(jnp.clip(1.0 - 1.0 / x, 0.0, 1.0))
        return chi2, reg, jnp.mean(rho)

    return jax.vmap(one)(strengths)


def _scan_inputs(
    data: Any, response: ResponseMatrix, strengths: Any, curvature: Any, reference: Any, fakes: Any, data_cov: Any
) -> tuple[np.ndarray, tuple[jax.Array, ...]]:
    r = _check_response(response)
    taus = np.asarray(strengths, dtype=np.float64)
    if taus.ndim != 1 or taus.size < 5 or not np.all(np.isfinite(taus)) or np.any(taus <= 0):
        raise ValueError("strengths must be a 1-D array of >= 5 finite strengths > 0")
    if np.any(np.diff(taus) <= 0):
        raise ValueError("strengths must be strictly increasing")
    d = _as_data(data, r.n_reco)
    scale, offset = _fake_terms(r, fakes)
    cov_in = _as_data_cov(data_cov, r.n_reco)
    g_mat, g_vec = _regulariser(curvature, reference, r.n_truth)
    _check_regularised_rank(r.probabilities, g_mat, taus[0])
    s, v = _signal(d, scale, offset, cov_in, floor=True)
    return taus, (jnp.asarray(r.probabilities), s, v, g_mat, g_vec, jnp.asarray(taus))


@dataclass(frozen=True)
class LCurve:
    """L-curve of a strength scan: ``strengths`` (n_s,), ``residual`` chi2 (s - P t)^T V^-1 (s - P t) (n_s,),
    ``regularisation`` penalty ||C (t / t_ref - 1)||^2 or ||C t||^2 (n_s,), ``curvature`` (n_s,) of the curve
    (log residual, log regularisation) parametrised by log strength (NaN at the two ends of the scan), ``best`` the
    strength of maximum curvature (the corner)."""

    strengths: np.ndarray
    residual: np.ndarray
    regularisation: np.ndarray
    curvature: np.ndarray
    best: float

    @property
    def best_index(self) -> int:
        return int(np.flatnonzero(self.strengths == self.best)[0])


def _parametric_curvature(x: np.ndarray, y: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Signed curvature (x' y'' - y' x'') / (x'^2 + y'^2)^1.5 of (x(u), y(u)) by finite differences; NaN at the ends."""
    dx, dy = np.gradient(x, u), np.gradient(y, u)
    ddx, ddy = np.gradient(dx, u), np.gradient(dy, u)
    k = (dx * ddy - dy * ddx) / np.power(dx**2 + dy**2, 1.5)
    k[[0, -1]] = np.nan
    return k


@float64
def lcurve(
    data: Any,
    response: ResponseMatrix,
    strengths: Any,
    *,
    curvature: Any = "second",
    reference: Any = None,
    fakes: Any = None,
    data_cov: Any = None,
) -> LCurve:
    """L-curve scan of :func:`tikhonov` over ``strengths`` (>= 5, increasing, > 0; log-spaced recommended): the corner
    is the maximum of the curvature of (log residual chi2, log penalty) as a function of log strength (the turn from
    the steep, noise-dominated branch to the flat, bias-dominated one). Other keywords as for :func:`tikhonov`."""
    taus, args = _scan_inputs(data, response, strengths, curvature, reference, fakes, data_cov)
    chi2, reg, _ = (np.asarray(a) for a in _scan(*args))
    k = _parametric_curvature(np.log(chi2), np.log(reg), np.log(taus))
    if np.all(np.isnan(k)):
        raise ValueError("the L-curve has no finite curvature (zero residual or penalty): widen the strength scan")
    return LCurve(taus, chi2, reg, k, float(taus[int(np.nanargmax(k))]))


@float64
def min_global_correlation(
    data: Any,
    response: ResponseMatrix,
    strengths: Any,
    *,
    curvature: Any = "second",
    reference: Any = None,
    fakes: Any = None,
    data_cov: Any = None,
) -> tuple[float, np.ndarray]:
    """(best strength, mean global correlation (n_s,)) of :func:`tikhonov` over ``strengths``: the strength that
    minimises the mean over truth bins of rho_i = sqrt(1 - 1 / (U_ii (U^-1)_ii)), U the unfolded data covariance."""
    taus, args = _scan_inputs(data, response, strengths, curvature, reference, fakes, data_cov)
    rho = np.asarray(_scan(*args)[2])
    return float(taus[int(np.nanargmin(rho))]), rho


def plot_lcurve(lc: LCurve) -> Figure:
    """Two panels: the L-curve log10 residual chi2 vs log10 penalty with the corner marked, and its curvature vs
    strength. Returns the Figure (save it with :func:`surrinf.report.figure.save_figure`)."""
    fig, (ax, axk) = new_figure(ncols=2)
    x, y = np.log10(lc.residual), np.log10(lc.regularisation)
    i = lc.best_index
    ax.plot(x, y, "o-", ms=3, color="C0")
    ax.plot(x[i], y[i], "*", ms=16, color="C3", label=f"corner, strength = {lc.best:.3g}")
    ax.set_xlabel(r"$\log_{10}\,\chi^2_{\mathrm{residual}}$")
    ax.set_ylabel(r"$\log_{10}\,\|C\,t\|^2$")
    ax.legend()
    axk.semilogx(lc.strengths, lc.curvature, "o-", ms=3, color="C0")
    axk.axvline(lc.best, color="C3", ls="--")
    axk.set_xlabel("regularisation strength")
    axk.set_ylabel("L-curve curvature")
    return fig


# ---------------------------------------------------------------------------------------------- truncated SVD
def _truncated_svd(
    p: jax.Array, s: jax.Array, v: jax.Array, ref: jax.Array, k: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Pure: keep the k largest singular values of the whitened P; t = ref + truncated solution of s - P ref.
    Returns (t (n_t,), Cov(t) (n_t, n_t), A (n_t, n_r)). k may be traced (mask, no recompilation)."""
    chol = jnp.linalg.cholesky(v)
    pw = solve_triangular(chol, p, lower=True)
    sw = solve_triangular(chol, s - p @ ref, lower=True)
    u, sv, vt = jnp.linalg.svd(pw, full_matrices=False)
    keep = jnp.arange(sv.shape[0]) < k
    inv_sv = jnp.where(keep, 1.0 / jnp.where(keep, sv, 1.0), 0.0)
    m = (vt.T * inv_sv[None, :]) @ u.T  # (n_t, n_r) = A L
    t = ref + m @ sw
    a = solve_triangular(chol, m.T, lower=True, trans="T").T
    return t, m @ m.T, a


@functools.partial(jax.jit, static_argnames=("propagate",))
def _svd_unfold(
    p: jax.Array,
    d: jax.Array,
    scale: jax.Array,
    offset: jax.Array,
    data_cov: jax.Array | None,
    ref: jax.Array,
    k: jax.Array,
    n_eff: jax.Array,
    *,
    propagate: bool,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Pure, one compiled unit: signal, truncated SVD and response covariance."""
    s, v = _signal(d, scale, offset, data_cov, True)
    t, cov, a = _truncated_svd(p, s, v, ref, k)
    rcov = _response_covariance(a, p, t, n_eff) if propagate else jnp.zeros_like(cov)
    return t, cov, rcov


@float64
def svd_unfold(
    data: Any,
    response: ResponseMatrix,
    *,
    k: int,
    reference: Any = None,
    fakes: Any = None,
    data_cov: Any = None,
    propagate_response: bool = True,
) -> UnfoldingResult:
    """Truncated-SVD unfolding (method "svd"): keep the ``k`` (1 <= k <= rank P) largest singular values of the
    ``V^-1/2``-whitened response; the dropped directions are set to zero, or taken from ``reference`` (n_truth,)
    [events] when given (``t = ref + truncated solution of (s - P ref)``). ``k = n_truth`` is the GLS inversion; see
    the module docstring for the filter-factor relation to :func:`tikhonov`. Covariance ``A V A^T``; ``fakes``,
    ``data_cov``, ``propagate_response`` as for :func:`surrinf.unfolding.inversion.invert`."""
    r = _check_response(response)
    d = _as_data(data, r.n_reco)
    scale, offset = _fake_terms(r, fakes)
    cov_in = _as_data_cov(data_cov, r.n_reco)
    p = r.probabilities
    rank = int(np.linalg.matrix_rank(p))
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= int(k) <= rank:
        raise ValueError(
            f"k must be an integer in [1, rank of the response = {rank}] (n_truth = {r.n_truth}), got {k!r}"
        )
    if reference is None:
        ref = jnp.zeros(r.n_truth)
    else:
        ref = jnp.asarray(reference, dtype=jnp.float64)
        if ref.shape != (r.n_truth,):
            raise ValueError(f"reference must have shape ({r.n_truth},) (reference truth spectrum), got {ref.shape}")
        rc = _concrete(reference)
        if rc is not None and not np.all(np.isfinite(rc)):
            raise ValueError("reference must be finite")
    t, cov, rcov = _svd_unfold(
        jnp.asarray(p),
        d,
        scale,
        offset,
        cov_in,
        ref,
        jnp.asarray(int(k)),
        jnp.asarray(r.n_eff),
        propagate=bool(propagate_response),
    )
    return UnfoldingResult(t, cov, rcov, method="svd")
