"""Vectorised dijet kinematic fit with a soft (prior) or hard (Lagrange multiplier) dijet-mass constraint.

Per event the fit varies the two jet energies E = (E_1, E_2) [GeV] with the jet directions (and, for massive jets, the
jet masses) fixed, and minimises

    chi2(E) = sum_j ((E_j - E_j_meas) / sigma_j)^2 + r(m_jj(E))^2          (soft constraint)
    chi2(E) = sum_j ((E_j - E_j_meas) / sigma_j)^2  subject to m_jj(E) = m0  (hard constraint, Lagrange multiplier)

with r from :mod:`surrinf.kinfit.constraints`. The dijet mass for fixed directions (opening angle alpha) is
m_jj^2 = m_1^2 + m_2^2 + 2 (E_1 E_2 - p_1 p_2 cos alpha) with p_j = sqrt(E_j^2 - m_j^2) (massive jets, m_j fixed) or
m_jj^2 = 2 E_1 E_2 (1 - cos alpha) (massless jets).

Returned per event (:class:`KinFitResult`): fitted energies and their covariance C (Gauss-Newton (J^T J)^-1 for the soft
constraint, V - V D^T (D V D^T)^-1 D V for the hard one, V = diag(sigma^2), D = dm_jj/dE), m_jj before and after,
chi2 with ``ndf = 1`` (2 measurements + 1 constraint - 2 parameters), fit probability P(chi2_ndf > chi2), pulls
(E_fit - E_meas) / sqrt(sigma^2 - C_jj) (unit width when the resolutions and the prior are right), the Lagrange
multiplier of the hard constraint and a convergence flag.

Solvers are optimistix's (soft: Gauss-Newton, or BFGS polished by Newton for a Breit-Wigner prior; hard: BFGS and
Newton along the one-dimensional constraint surface, see :func:`fit_event`);
derivatives of every fitted quantity with respect to the inputs come from optimistix's implicit differentiation
(:func:`fit_event` is a pure function of arrays: ``jax.jacfwd`` it; :func:`kinfit_jacobian` does it for the measured
energies). Precision: float64 (entered locally, see :mod:`surrinf._precision`).
"""

from __future__ import annotations

import functools
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from surrinf._precision import float64
from surrinf._xla import CPU_COMPILER_OPTIONS

from .constraints import MassConstraint

__all__ = [
    "SOLVERS",
    "KinFitJacobian",
    "KinFitResult",
    "dijet_mass",
    "fit_event",
    "kinfit",
    "kinfit_jacobian",
    "opening_cosine",
]

#: Solvers of the soft-constraint fit ("auto": Gauss-Newton for a Gaussian prior, BFGS for a Breit-Wigner prior, whose
#: Gauss-Newton steps converge slowly where the prior is concave); the hard constraint always minimises along the
#: constraint surface (BFGS, then Newton).
SOLVERS = ("auto", "gauss_newton", "levenberg_marquardt", "bfgs")
#: Degrees of freedom of a two-jet fit with one mass constraint: 2 measurements + 1 constraint - 2 parameters.
NDF = 1
_TINY = 1e-300
#: Newton steps that put massive jets on the constraint surface (from the massless solution; quadratic convergence).
_SURFACE_NEWTON_STEPS = 12


class KinFitResult(eqx.Module):
    """Per-event results of :func:`kinfit` (numpy float64, leading axis N events; energies and masses in GeV)."""

    energies: np.ndarray  #: (N, 2) fitted jet energies [GeV]
    covariance: np.ndarray  #: (N, 2, 2) covariance of the fitted energies [GeV^2]
    mjj: np.ndarray  #: (N,) dijet mass of the fitted jets [GeV]
    mjj_measured: np.ndarray  #: (N,) dijet mass of the measured jets [GeV]
    chi2: np.ndarray  #: (N,) chi2 at the minimum (for a Breit-Wigner prior: -2 ln L)
    prob: np.ndarray  #: (N,) fit probability P(chi2_ndf > chi2)
    pulls: np.ndarray  #: (N, 2) (E_fit - E_meas) / sqrt(sigma^2 - C_jj)
    lagrange: np.ndarray  #: (N,) Lagrange multiplier of the hard constraint [1/GeV] (0 for soft constraints)
    converged: np.ndarray  #: (N,) bool, the solver met its tolerance within max_steps
    n_steps: np.ndarray  #: (N,) solver steps
    ndf: int = eqx.field(static=True, default=NDF)

    @property
    def n_events(self) -> int:
        return int(self.mjj.shape[0])


def opening_cosine(eta: Any, phi: Any) -> np.ndarray:
    """Cosine of the opening angle of two jets from eta (N, 2) and phi (N, 2) [rad]: (N,) float64,
    cos alpha = (cos(phi_1 - phi_2) + sinh eta_1 sinh eta_2) / (cosh eta_1 cosh eta_2)."""
    eta = _pairs("eta", eta)
    phi = _pairs("phi", phi, n=eta.shape[0])
    c = (np.cos(phi[:, 0] - phi[:, 1]) + np.sinh(eta[:, 0]) * np.sinh(eta[:, 1])) / (
        np.cosh(eta[:, 0]) * np.cosh(eta[:, 1])
    )
    return np.clip(c, -1.0, 1.0)


def dijet_mass(energies, cos_opening, masses=None):
    """m_jj [GeV] of two jets with energies (..., 2) [GeV], opening-angle cosine (...,) and masses (..., 2) [GeV]
    (None: massless) at fixed directions; a pure jnp function (differentiable, usable under jit/vmap)."""
    e1, e2 = energies[..., 0], energies[..., 1]
    if masses is None:
        m2 = 2.0 * e1 * e2 * (1.0 - cos_opening)
    else:
        ma, mb = masses[..., 0], masses[..., 1]
        p1 = jnp.sqrt(jnp.maximum(e1 * e1 - ma * ma, _TINY))
        p2 = jnp.sqrt(jnp.maximum(e2 * e2 - mb * mb, _TINY))
        m2 = ma * ma + mb * mb + 2.0 * (e1 * e2 - p1 * p2 * cos_opening)
    return jnp.sqrt(jnp.maximum(m2, _TINY))


def _resolve_sigma(sigma, e_meas):
    """sigma (2,) [GeV] from an array or from a resolution model with ``sigma_gev(e)`` evaluated at e_meas."""
    return sigma.sigma_gev(e_meas) if hasattr(sigma, "sigma_gev") else sigma


def fit_event(
    e_meas,
    sigma,
    cos_opening,
    constraint: MassConstraint,
    masses=None,
    *,
    solver: str = "auto",
    rtol: float = 1e-10,
    atol: float = 1e-10,
    max_steps: int = 256,
) -> dict[str, jax.Array]:
    """Fit one event: e_meas (2,) [GeV], sigma (2,) [GeV] or a resolution model (``sigma_gev(e)``, evaluated at
    e_meas), cos_opening (), masses (2,) [GeV] or None (massless). Pure and differentiable (optimistix implicit
    differentiation); call it under ``jax.enable_x64(True)``. Returns a dict of the :class:`KinFitResult` fields."""
    sig = _resolve_sigma(sigma, e_meas)
    args = (e_meas, sig, cos_opening, masses, constraint)

    def mjj_of(e, a):
        return dijet_mass(e, a[2], a[3])

    if not constraint.hard:

        def residuals(e, a):
            return jnp.concatenate([(e - a[0]) / a[1], jnp.atleast_1d(a[4].residual(mjj_of(e, a)))])

        name = solver if solver != "auto" else ("bfgs" if constraint.multimodal else "gauss_newton")

        def solve(y0):
            if name == "bfgs":
                sol = optx.minimise(
                    lambda e, a: jnp.sum(residuals(e, a) ** 2),
                    optx.BFGS(rtol=rtol, atol=atol),
                    y0,
                    args,
                    max_steps=max_steps,
                    throw=False,
                )
                # Polish with Newton on the gradient (quadratic convergence from inside the basin): BFGS stops at
                # ~1e-8 relative, too coarse for derivatives by finite differences of the fit.
                polished = optx.root_find(
                    jax.grad(lambda e, a: 0.5 * jnp.sum(residuals(e, a) ** 2)),
                    optx.Newton(rtol=rtol, atol=atol),
                    sol.value,
                    args,
                    max_steps=max_steps,
                    throw=False,
                )
                steps = sol.stats["num_steps"] + polished.stats["num_steps"]
                return polished.value, polished.result == optx.RESULTS.successful, steps
            else:
                opt = (optx.GaussNewton if name == "gauss_newton" else optx.LevenbergMarquardt)(rtol=rtol, atol=atol)
                sol = optx.least_squares(residuals, opt, y0, args, max_steps=max_steps, throw=False)
            return sol.value, sol.result == optx.RESULTS.successful, sol.stats["num_steps"]

        e, ok, steps = solve(e_meas)
        if constraint.multimodal:
            # A Breit-Wigner prior can give two local minima (near m0 and near the measured m_jj): start a second
            # solve on the pole (energies scaled so that a massless m_jj = m0) and keep the lower chi2.
            e2, ok2, steps2 = solve(e_meas * (constraint.m0 / mjj_of(e_meas, args)))
            better = jnp.sum(residuals(e2, args) ** 2) < jnp.sum(residuals(e, args) ** 2)
            e = jnp.where(better, e2, e)
            ok = jnp.where(better, ok2, ok)
            steps = steps + steps2
        jac = jax.jacfwd(residuals)(e, args)  # (3, 2) whitened
        cov = jnp.linalg.inv(jac.T @ jac)
        chi2 = jnp.sum(residuals(e, args) ** 2)
        lam = jnp.zeros_like(chi2)
    else:
        # The constraint surface m_jj(E) = m0 has one dimension: parametrise it by the log energy ratio
        # t = ln(E_1 / E_2), with s = ln(E_1 E_2) fixed by the constraint (exactly s = ln(m0^2 / (2 (1 - cos))) for
        # massless jets; for massive jets a few Newton steps in s from there). The fit is then a one-dimensional
        # minimisation of chi2(t): BFGS (line search, robust also for m_jj,meas far from m0, where a Newton iteration
        # on the Lagrange (KKT) system diverges because the Lagrangian's Hessian is indefinite), polished by Newton on
        # d chi2 / dt = 0 (whose implicit derivative gives the fit's derivatives). The Lagrange multiplier of
        # g = m_jj - m0 follows from stationarity: lambda = -(grad_E chi2 / 2) . D / (D . D), D = dm_jj / dE.
        def on_surface(t, a):
            c, m = a[2], a[3]
            s0 = jnp.log(a[4].m0 ** 2 / (2.0 * (1.0 - c)))

            def energies(s_):
                return jnp.exp(0.5 * jnp.stack([s_ + t, s_ - t]))

            if m is None:
                return energies(s0)

            def newton(_, s_):
                val, der = jax.value_and_grad(lambda v: jnp.log(mjj_of(energies(v), a) / a[4].m0))(s_)
                return s_ - val / der

            return energies(jax.lax.fori_loop(0, _SURFACE_NEWTON_STEPS, newton, s0))

        def chi2_t(t, a):
            return jnp.sum(((on_surface(t, a) - a[0]) / a[1]) ** 2)

        t0 = jnp.log(e_meas[0] / e_meas[1])
        sol = optx.minimise(chi2_t, optx.BFGS(rtol=rtol, atol=atol), t0, args, max_steps=max_steps, throw=False)
        polished = optx.root_find(
            jax.grad(lambda t, a: 0.5 * chi2_t(t, a)),
            optx.Newton(rtol=rtol, atol=atol),
            sol.value,
            args,
            max_steps=max_steps,
            throw=False,
        )
        e = on_surface(polished.value, args)
        ok = polished.result == optx.RESULTS.successful
        steps = sol.stats["num_steps"] + polished.stats["num_steps"]
        d = jax.grad(lambda x: mjj_of(x, args))(e)  # D = dm_jj / dE at the solution
        lam = -jnp.dot((e - e_meas) / sig**2, d) / jnp.dot(d, d)
        v = sig**2
        vd = v * d
        cov = jnp.diag(v) - jnp.outer(vd, vd) / jnp.dot(d, vd)
        chi2 = jnp.sum(((e - e_meas) / sig) ** 2)
    denom = jnp.sqrt(jnp.maximum(sig**2 - jnp.diag(cov), _TINY))
    return {
        "energies": e,
        "covariance": cov,
        "mjj": mjj_of(e, args),
        "mjj_measured": mjj_of(e_meas, args),
        "chi2": chi2,
        "prob": jax.scipy.special.gammaincc(0.5 * NDF, 0.5 * chi2),
        "pulls": (e - e_meas) / denom,
        "lagrange": lam,
        "converged": ok,
        "n_steps": steps,
    }


def _pairs(name: str, x: Any, n: int | None = None) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 2 or (n is not None and a.shape[0] != n):
        want = f"({n}, 2)" if n is not None else "(N, 2)"
        raise ValueError(f"{name} must have shape {want} (one value per jet), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite")
    return a


def _check_inputs(e_meas, sigma, cos_opening, masses) -> tuple[np.ndarray, Any, np.ndarray, np.ndarray | None]:
    e = _pairs("e_meas", e_meas)
    n = e.shape[0]
    if n == 0:
        raise ValueError("e_meas must hold at least one event")
    if np.any(e <= 0):
        raise ValueError("e_meas must be positive jet energies [GeV]")
    if not hasattr(sigma, "sigma_gev"):
        sigma = _pairs("sigma", sigma, n)
        if np.any(sigma <= 0):
            raise ValueError("sigma must be positive jet-energy resolutions [GeV]")
    c = np.asarray(cos_opening, dtype=np.float64)
    if c.shape != (n,):
        raise ValueError(f"cos_opening must have shape ({n},), got {c.shape}")
    if not np.all(np.isfinite(c)) or np.any(np.abs(c) > 1):
        raise ValueError("cos_opening must be finite cosines in [-1, 1] (see opening_cosine)")
    if masses is not None:
        masses = _pairs("masses", masses, n)
        if np.any(masses < 0) or np.any(masses >= e):
            raise ValueError("masses must be jet masses [GeV] with 0 <= m < e_meas")
    return e, sigma, c, masses


def _check_options(constraint: Any, solver: str, chunk_size: int) -> None:
    if not isinstance(constraint, MassConstraint):
        raise TypeError(
            f"constraint must be a GaussianMass, BreitWignerMass or FixedMass, got {type(constraint).__name__}"
        )
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")


@functools.lru_cache(maxsize=32)
def _batched(
    what: str, kind: type, massive: bool, sigma_model: bool, solver: str, rtol: float, atol: float, max_steps: int
):
    """One compiled vmapped fit (what="fit") or fit Jacobian (what="jacobian") per static configuration; the arrays
    and the constraint's numbers are traced, the constraint class is part of the key (it changes the graph)."""
    del kind

    def one(e, s, c, m, constraint):
        return fit_event(
            e, s, c, constraint, m if massive else None, solver=solver, rtol=rtol, atol=atol, max_steps=max_steps
        )

    def jac(e, s, c, m, constraint):
        def outputs(x):
            r = one(x, s, c, m, constraint)
            return {"energies": r["energies"], "mjj": r["mjj"], "mjj_measured": r["mjj_measured"]}

        return jax.jacfwd(outputs)(e)

    in_axes = (0, None, 0, 0, None) if sigma_model else (0, 0, 0, 0, None)
    return jax.jit(jax.vmap(one if what == "fit" else jac, in_axes=in_axes), compiler_options=CPU_COMPILER_OPTIONS)


def _run_chunked(what: str, e_meas, sigma, cos_opening, constraint, masses, solver, rtol, atol, max_steps, chunk_size):
    """Validate, pad to whole chunks of a power-of-two length (few compiled shapes), run, concatenate, unpad."""
    _check_options(constraint, solver, chunk_size)
    e, sig, c, m = _check_inputs(e_meas, sigma, cos_opening, masses)
    sigma_model = hasattr(sig, "sigma_gev")
    n = e.shape[0]
    size = min(chunk_size, 1 << max(0, (n - 1).bit_length()))
    n_chunks = -(-n // size)
    pad = size * n_chunks - n
    fn = _batched(what, type(constraint), m is not None, sigma_model, solver, float(rtol), float(atol), int(max_steps))

    def padded(a: np.ndarray) -> np.ndarray:
        return np.concatenate([a, np.repeat(a[:1], pad, axis=0)]) if pad else a

    e_p, c_p = padded(e), padded(c)
    m_p = padded(m) if m is not None else np.zeros_like(e_p)
    s_p = sig if sigma_model else padded(sig)
    parts = []
    for k in range(n_chunks):
        sl = slice(k * size, (k + 1) * size)
        parts.append(jax.device_get(fn(e_p[sl], s_p if sigma_model else s_p[sl], c_p[sl], m_p[sl], constraint)))
    return {key: np.concatenate([p[key] for p in parts])[:n] for key in parts[0]}


@float64
def kinfit(
    e_meas: Any,
    sigma: Any,
    cos_opening: Any,
    constraint: MassConstraint,
    masses: Any = None,
    *,
    solver: str = "auto",
    rtol: float = 1e-10,
    atol: float = 1e-10,
    max_steps: int = 256,
    chunk_size: int = 1 << 16,
) -> KinFitResult:
    """Fit N dijet events (see the module docstring).

    e_meas: (N, 2) measured jet energies [GeV]; sigma: (N, 2) their resolutions [GeV], or a resolution model with a
    jnp method ``sigma_gev(e)`` (for example :class:`surrinf.kinfit.JetResponse`) evaluated at the measured energies;
    cos_opening: (N,) cosine of the jet opening angle (:func:`opening_cosine`); constraint: :class:`GaussianMass`,
    :class:`BreitWignerMass` or :class:`FixedMass`; masses: (N, 2) fixed jet masses [GeV] or None (massless jets).
    ``rtol``/``atol`` [GeV]: solver tolerances on the energies. The events are fitted in chunks of ``chunk_size``
    (one compiled vmapped solve; float64). Events whose solve did not converge are flagged in ``converged``."""
    out = _run_chunked("fit", e_meas, sigma, cos_opening, constraint, masses, solver, rtol, atol, max_steps, chunk_size)
    f64 = {k: v.astype(np.float64) for k, v in out.items() if k not in ("converged", "n_steps")}
    return KinFitResult(**f64, converged=out["converged"].astype(bool), n_steps=out["n_steps"].astype(np.int64))


class KinFitJacobian(eqx.Module):
    """Derivatives of the fit outputs with respect to the measured energies (numpy float64)."""

    energies: np.ndarray  #: (N, 2, 2) dE_fit_i / dE_meas_j
    mjj: np.ndarray  #: (N, 2) dm_jj(fit) / dE_meas_j
    mjj_measured: np.ndarray  #: (N, 2) dm_jj(measured) / dE_meas_j


@float64
def kinfit_jacobian(
    e_meas: Any,
    sigma: Any,
    cos_opening: Any,
    constraint: MassConstraint,
    masses: Any = None,
    *,
    solver: str = "auto",
    rtol: float = 1e-10,
    atol: float = 1e-10,
    max_steps: int = 256,
    chunk_size: int = 1 << 14,
) -> KinFitJacobian:
    """Jacobian of the fitted energies and m_jj with respect to the measured energies, by implicit differentiation
    of the fit's optimality conditions (optimistix); same arguments as :func:`kinfit`. With a resolution model as
    ``sigma`` the derivative includes the dependence of sigma on the measured energies. First-order propagation of
    a shift dE of the measured energies: dm_jj(fit) = jacobian.mjj @ dE."""
    out = _run_chunked(
        "jacobian", e_meas, sigma, cos_opening, constraint, masses, solver, rtol, atol, max_steps, chunk_size
    )
    return KinFitJacobian(**{k: v.astype(np.float64) for k, v in out.items()})
