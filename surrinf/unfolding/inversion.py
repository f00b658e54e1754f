"""Unfolding by matrix inversion, as generalised least squares (GLS), with first-order response uncertainties.

With ``s = d - f`` the fake-subtracted data (n_reco,) [events], ``V_s`` its covariance and ``P`` the response
probabilities (n_reco, n_truth), the GLS estimate and its covariance are

    t = (P^T V_s^-1 P)^-1 P^T V_s^-1 s,        Cov(t) = (P^T V_s^-1 P)^-1,

which for a square invertible ``P`` is plain inversion ``t = P^-1 s`` (then ``V_s`` does not change ``t``). The work is
done in whitened form (Cholesky ``V_s = L L^T``, QR of ``L^-1 P``), never with explicit inverses of ``P^T V^-1 P``.

This module also holds the input handling shared by :mod:`binbybin` and :mod:`tikhonov`:

* ``fakes=None`` subtracts ``data * response.fake_fraction`` (fakes proportional to the data, with the fake fraction
  of the simulation), so ``s = (1 - ff) * d`` and ``V_s = diag(1 - ff) V diag(1 - ff)``; explicit ``fakes`` (n_reco,)
  [events] are a fixed expectation, ``s = d - fakes`` and ``V_s = V``.
* ``data_cov=None`` is Poisson, ``V = diag(d)`` from the observed counts; for the least-squares methods a bin with zero
  observed counts gets variance 1 event^2 (its weight would otherwise be infinite). An explicit ``data_cov`` is
  (n_reco,) variances or an (n_reco, n_reco) positive-definite matrix [events^2].

Response uncertainty (``propagate_response=True``): the columns of ``P`` are independent multinomials,
``Sigma_k = (diag(p_k) - p_k p_k^T) / n_eff[k]``. To first order ``dt = -A dP t`` for a linear estimator ``t = A s + b``
(the term ``(P^T V^-1 P)^-1 dP^T V^-1 (s - P t)`` is dropped: it vanishes for square ``P`` and on average for GLS), so

    Cov_resp = sum_k t_k^2 A Sigma_k A^T = A diag(P u) A^T - (A P) diag(u) (A P)^T,   u_k = t_k^2 / n_eff[k],

evaluated in O(n_truth n_reco) memory at the unfolded ``t``; for GLS ``A P = I`` and the second term is ``diag(u)``.
Uncertainties of the fake fraction itself are not propagated.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from surrinf.unfolding.response import ResponseMatrix
from surrinf.unfolding.result import UnfoldingResult, float64

__all__ = ["gls_unfold", "invert"]


# ---------------------------------------------------------------------------------------------- shared input handling
def _concrete(x: Any) -> np.ndarray | None:
    """``x`` as a numpy array, or None when it is a jax tracer (inside jit/vmap: value checks are skipped)."""
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x, dtype=np.float64)


def _check_response(response: Any) -> ResponseMatrix:
    if not isinstance(response, ResponseMatrix):
        raise ValueError(f"response must be a ResponseMatrix, got {type(response).__name__}")
    return response


def _as_data(data: Any, n_reco: int) -> jax.Array:
    """(n_reco,) float64 observed counts; shape always checked, values (finite, >= 0) when concrete."""
    d = jnp.asarray(data, dtype=jnp.float64)
    if d.shape != (n_reco,):
        raise ValueError(
            f"data must have shape ({n_reco},) (observed counts per reco bin), got {d.shape}; vmap over pseudo-data"
        )
    c = _concrete(data)
    if c is not None and (not np.all(np.isfinite(c)) or np.any(c < 0)):
        raise ValueError("data must be finite counts >= 0")
    return d


def _fake_terms(response: ResponseMatrix, fakes: Any) -> tuple[jax.Array, jax.Array]:
    """(scale, offset), both (n_reco,): the signal is ``s = scale * d - offset`` (see the module docstring)."""
    n_r = response.n_reco
    if fakes is None:
        ff = response.fake_fraction
        if np.any(ff >= 1):
            raise ValueError(
                f"response.fake_fraction is 1 in reco bins {np.flatnonzero(ff >= 1).tolist()} (no simulated signal): "
                "pass fakes= explicitly or drop those bins"
            )
        return jnp.asarray(1.0 - ff), jnp.zeros(n_r)
    f = jnp.asarray(fakes, dtype=jnp.float64)
    if f.shape != (n_r,):
        raise ValueError(f"fakes must have shape ({n_r},) (expected fake counts per reco bin), got {f.shape}")
    c = _concrete(fakes)
    if c is not None and not np.all(np.isfinite(c)):
        raise ValueError("fakes must be finite")
    return jnp.ones(n_r), f


def _as_data_cov(data_cov: Any, n_reco: int) -> jax.Array | None:
    """None, (n_reco,) variances or (n_reco, n_reco) covariance [events^2]; positivity checked when concrete."""
    if data_cov is None:
        return None
    v = jnp.asarray(data_cov, dtype=jnp.float64)
    if v.shape not in ((n_reco,), (n_reco, n_reco)):
        raise ValueError(
            f"data_cov must have shape ({n_reco},) (variances) or ({n_reco}, {n_reco}) (covariance), got {v.shape}"
        )
    c = _concrete(data_cov)
    if c is not None:
        if not np.all(np.isfinite(c)):
            raise ValueError("data_cov must be finite")
        if c.ndim == 1 and np.any(c <= 0):
            raise ValueError("data_cov variances must be > 0")
        if c.ndim == 2:
            if not np.allclose(c, c.T, rtol=1e-10, atol=0.0):
                raise ValueError("data_cov must be a symmetric matrix")
            try:
                np.linalg.cholesky(c)
            except np.linalg.LinAlgError:
                raise ValueError("data_cov must be positive definite") from None
    return v


def _signal(
    d: jax.Array, scale: jax.Array, offset: jax.Array, data_cov: jax.Array | None, floor: bool
) -> tuple[jax.Array, jax.Array]:
    """Pure: fake-subtracted signal s (n_reco,) and its covariance V_s (n_reco, n_reco). ``data_cov`` None means
    Poisson diag(d) (zero-count bins at variance 1 when ``floor``)."""
    if data_cov is None:
        var = jnp.where(d > 0, d, 1.0) if floor else d
        v = jnp.diag(var)
    elif data_cov.ndim == 1:
        v = jnp.diag(data_cov)
    else:
        v = data_cov
    return scale * d - offset, scale[:, None] * v * scale[None, :]


def _check_rank(p: np.ndarray, what: str = "response") -> None:
    """Raise when P (n_reco, n_truth) has rank < n_truth (GLS normal matrix P^T V^-1 P singular)."""
    n_t = p.shape[1]
    rank = int(np.linalg.matrix_rank(p))
    if rank < n_t:
        empty = np.flatnonzero(~np.any(p > 0, axis=0)).tolist()
        raise ValueError(
            f"{what}: the response probabilities (n_reco={p.shape[0]}, n_truth={n_t}) have rank {rank} < n_truth, so "
            f"P^T V^-1 P is singular" + (f" (truth bins {empty} have empty columns)" if empty else "")
        )


# ---------------------------------------------------------------------------------------------- pure linear algebra
@jax.jit
def _regularised_gls(
    p: jax.Array, s: jax.Array, v: jax.Array, g_mat: jax.Array, g_vec: jax.Array, strength: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Pure: t = argmin (s - P t)^T V^-1 (s - P t) + strength ||G t - g||^2 with P (n_r, n_t), s (n_r,), V (n_r, n_r),
    G (m, n_t) (m may be 0), g (m,). Returns (t (n_t,), Cov(t) = A V A^T (n_t, n_t), A (n_t, n_r)), t = A s + b.
    Solved by QR of the stacked whitened system [L^-1 P; sqrt(strength) G]."""
    n_r = p.shape[0]
    chol = jnp.linalg.cholesky(v)
    pw = solve_triangular(chol, p, lower=True)
    sw = solve_triangular(chol, s, lower=True)
    root = jnp.sqrt(strength)
    q, r = jnp.linalg.qr(jnp.concatenate([pw, root * g_mat]), mode="reduced")
    t = solve_triangular(r, q.T @ jnp.concatenate([sw, root * g_vec]), lower=False)
    m = solve_triangular(r, q[:n_r].T, lower=False)  # (n_t, n_r) = A L
    a = solve_triangular(chol, m.T, lower=True, trans="T").T
    return t, m @ m.T, a


def _response_covariance(a: jax.Array, p: jax.Array, t: jax.Array, n_eff: jax.Array) -> jax.Array:
    """Pure: (n_t, n_t) sum_k t_k^2 A Sigma_k A^T with the multinomial column covariances Sigma_k (see module doc)."""
    u = jnp.where(n_eff > 0, t**2 / jnp.where(n_eff > 0, n_eff, 1.0), 0.0)
    e = a * jnp.sqrt(p @ u)[None, :]
    f = (a @ p) * jnp.sqrt(u)[None, :]
    c = e @ e.T - f @ f.T
    return 0.5 * (c + c.T)


def gls_unfold(
    p: jax.Array, s: jax.Array, v: jax.Array, n_eff: jax.Array, propagate_response: bool = True
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Pure GLS unfolding of the signal s (n_r,) with covariance V (n_r, n_r) through P (n_r, n_t): (t, Cov(t),
    response covariance (zeros unless ``propagate_response``)). jit/vmap-able over P, s and V."""
    n_t = p.shape[1]
    return _linear_unfold(
        p,
        s,
        None,
        jnp.ones_like(s),
        jnp.zeros_like(s),
        v,
        jnp.zeros((0, n_t)),
        jnp.zeros(0),
        jnp.zeros(()),
        n_eff,
        floor=False,
        propagate=propagate_response,
    )


@functools.partial(jax.jit, static_argnames=("floor", "propagate"))
def _linear_unfold(
    p: jax.Array,
    s_or_none: jax.Array | None,
    d: jax.Array | None,
    scale: jax.Array,
    offset: jax.Array,
    data_cov: jax.Array | None,
    g_mat: jax.Array,
    g_vec: jax.Array,
    strength: jax.Array,
    n_eff: jax.Array,
    *,
    floor: bool,
    propagate: bool,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Pure, one compiled unit: signal (from data d, or the given signal s with covariance ``data_cov``), regularised
    GLS and the response covariance. Returns (t, Cov(t), response covariance)."""
    if s_or_none is None:
        s, v = _signal(d, scale, offset, data_cov, floor)
    else:
        s, v = s_or_none, data_cov
    t, cov, a = _regularised_gls(p, s, v, g_mat, g_vec, strength)
    rcov = _response_covariance(a, p, t, n_eff) if propagate else jnp.zeros_like(cov)
    return t, cov, rcov


# ---------------------------------------------------------------------------------------------- public method
@float64
def invert(
    data: Any,
    response: ResponseMatrix,
    *,
    fakes: Any = None,
    data_cov: Any = None,
    propagate_response: bool = True,
) -> UnfoldingResult:
    """Unfold ``data`` (n_reco,) [events] by generalised least squares through ``response`` (plain inversion when the
    response is square): ``t = (P^T V^-1 P)^-1 P^T V^-1 (d - f)``, covariance ``(P^T V^-1 P)^-1``.

    ``fakes`` (n_reco,) expected fakes [events] (None: ``data * response.fake_fraction``); ``data_cov`` (n_reco,) or
    (n_reco, n_reco) [events^2] (None: Poisson from the observed counts, zero-count bins at 1); with
    ``propagate_response`` the finite-simulation uncertainty of the response goes to ``response_covariance`` (first
    order, see the module docstring). Raises ValueError when the response has rank < n_truth (e.g. an empty truth
    column, or fewer reco than truth bins). vmap-able over ``data`` (method "inversion")."""
    r = _check_response(response)
    d = _as_data(data, r.n_reco)
    scale, offset = _fake_terms(r, fakes)
    cov_in = _as_data_cov(data_cov, r.n_reco)
    p = r.probabilities
    _check_rank(p)
    n_t = r.n_truth
    t, cov, rcov = _linear_unfold(
        jnp.asarray(p),
        None,
        d,
        scale,
        offset,
        cov_in,
        jnp.zeros((0, n_t)),
        jnp.zeros(0),
        jnp.zeros(()),
        jnp.asarray(r.n_eff),
        floor=True,
        propagate=bool(propagate_response),
    )
    return UnfoldingResult(t, cov, rcov, method="inversion")
