"""Temperature rules: how far to trust a surrogate likelihood, tau in (0, 1].

The tempered posterior is p_tau(theta | x) ∝ prior(theta) prod_i p_s(x_i | E_i, theta)^tau. Rules:

- :func:`fixed_tau`: a given tau (tau = 1 is the plain posterior).
- :func:`divergence_tau`: from the measured mismatch between surrogate and reference. On held-out reference data at
  several theta_k the surrogate's mean score g_k = E_ref[grad log p_s(x | theta_k)] is non-zero where the surrogate
  is wrong in a way that moves theta; eps_k = g_k^T J_k^-1 g_k / 2 is the log-likelihood gain per event of the
  surrogate's pseudo-true parameter over the truth (the theta-relevant part of KL(p_ref || p_s), to second order).
  Coarsening (Miller and Dunson 2019, "Robust Bayesian inference via coarsening", JASA 114, 1113) turns a divergence
  per event into the power tau = alpha / (alpha + N) for N events. We set alpha = 1 / (2 eps): then the posterior
  variance inflated by 1 / tau = 1 + N 2 eps matches the squared displacement of the surrogate's maximum,
  N g^T J^-1 g = N 2 eps in posterior-sd units, along the displaced direction.
- :func:`curvature_tau`: curvature matching (Lyddon, Holmes and Walker 2019, "General Bayesian updating and the
  loss-likelihood bootstrap", Biometrika 106, 465): match the tempered posterior's covariance (tau N J)^-1 to the
  sandwich covariance J^-1 I J^-1 / N, where J = -E_ref[Hessian] and I = E_ref[score score^T] of the surrogate
  log-likelihood at the true theta of reference data. For a correct model I = J and tau = 1. LHW match traces,
  tau = tr(J I^-1 J) / tr(J); we match the marginal variance of every parameter, R_j = (J^-1 I J^-1)_jj / (J^-1)_jj,
  and take tau = 1 / max_j R_j, so that every marginal interval is at least as wide as the sandwich asks (identical to
  LHW for scalar theta, independent of the units of theta). I is the second moment of the score of an N-event data
  set, per event: I = Cov(score) + N g g^T, so a surrogate whose maximum is displaced from the truth (g != 0) is
  tempered as well as one with the wrong curvature.
- :func:`coverage_tau` (in :mod:`surrinf.inference.coverage`): general posterior calibration (Syring and Martin
  2019, "Calibrating general posterior credible regions", Biometrika 106, 479): choose tau so that credible intervals
  reach nominal frequentist coverage on pseudo-experiments from the reference simulator.

The mismatch measurement (:func:`measure_mismatch`) evaluates scores and Hessians in the unit-box coordinates
u = (theta - low) / (high - low); both formulas are invariant under this affine change. Monte Carlo noise of the
held-out estimates is subtracted (E[g_hat g_hat^T] = g g^T + Cov(score) / n).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .prior import BoxPrior
from .problem import check_tau

__all__ = [
    "REFERENCES",
    "Mismatch",
    "Temperature",
    "curvature_tau",
    "divergence_tau",
    "fixed_tau",
    "measure_mismatch",
]

REFERENCES = {
    "fixed": "tau fixed by the user (tau = 1: the untempered posterior)",
    "divergence": "Miller & Dunson (2019), Robust Bayesian inference via coarsening, JASA 114, 1113",
    "curvature": "Lyddon, Holmes & Walker (2019), General Bayesian updating and the loss-likelihood bootstrap, "
    "Biometrika 106, 465",
    "coverage": "Syring & Martin (2019), Calibrating general posterior credible regions, Biometrika 106, 479",
}


@dataclass(frozen=True)
class Temperature:
    """A likelihood temperature: ``rule`` name, ``tau`` in (0, 1], rule ``details`` and the literature reference."""

    rule: str
    tau: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def reference(self) -> str:
        return REFERENCES.get(self.rule, "")


def fixed_tau(tau: float = 1.0) -> Temperature:
    return Temperature("fixed", check_tau(tau))


@dataclass(frozen=True)
class Mismatch:
    """Surrogate-vs-reference mismatch on held-out reference data at K parameter points (unit-box coordinates).

    theta: (K, P) the true parameters; n: (K,) events per point; score_mean: (K, P) mean score g_k;
    score_cov: (K, P, P) covariance of the per-event score; hessian: (K, P, P) J_k = -mean Hessian."""

    theta: np.ndarray
    n: np.ndarray
    score_mean: np.ndarray
    score_cov: np.ndarray
    hessian: np.ndarray

    @property
    def dim(self) -> int:
        return self.theta.shape[1]

    def displacement(self) -> np.ndarray:
        """(K,) g^T J^-1 g - tr(J^-1 Cov) / n: the squared score displacement per event, MC-noise corrected."""
        out = []
        for g, c, j, n in zip(self.score_mean, self.score_cov, self.hessian, self.n, strict=True):
            jinv = np.linalg.inv(j)
            out.append(float(g @ jinv @ g - np.trace(jinv @ c) / n))
        return np.asarray(out)

    def divergence(self) -> np.ndarray:
        """(K,) eps_k [nats per event]: log-likelihood gain of the pseudo-true parameter over the truth. Unbiased for
        the MC noise of the held-out sample, so single points can be slightly negative; rules floor the mean."""
        return 0.5 * self.displacement()

    def sandwich_ratio(self, n_events: int) -> np.ndarray:
        """(K, P) R_j = (J^-1 I_N J^-1)_jj / (J^-1)_jj: the sandwich variance of each parameter over the model's
        variance, with I_N = Cov(score) + N g g^T. The N g g^T term is corrected for the MC noise of g_hat
        (E[(J^-1 g_hat)_j^2] = (J^-1 g)_j^2 + (J^-1 Cov J^-1)_jj / n), so the mean over points is unbiased and an exact
        model gives about 1."""
        out = []
        for g, c, j, n in zip(self.score_mean, self.score_cov, self.hessian, self.n, strict=True):
            jinv = np.linalg.inv(j)
            v = np.diag(jinv @ c @ jinv)
            shift = (jinv @ g) ** 2 - v / n
            out.append((v + n_events * shift) / np.diag(jinv))
        return np.asarray(out)


def measure_mismatch(
    density: Any,
    reference: Any,
    prior: BoxPrior,
    key: jax.Array,
    thetas: np.ndarray,
    energies_gev: np.ndarray,
    *,
    chunk: int = 4096,
) -> Mismatch:
    """Score and curvature of ``density.log_prob`` on reference summaries ``reference.simulate(key_k, energies_gev,
    theta_k)`` at each row of ``thetas`` (K, P). ``energies_gev`` (n,) [GeV]: the beam energies of the held-out
    sample at every point (use the calibration data's energy mix). Runs in float64 (``jax.enable_x64`` locally)."""
    th = prior.check(np.atleast_2d(thetas), "thetas")
    e = np.asarray(energies_gev, dtype=np.float64).reshape(-1)
    if e.size < 2 * prior.dim or not np.all(e > 0):
        raise ValueError(f"energies_gev must hold at least {2 * prior.dim} energies > 0 [GeV], got {e.size}")
    low, width = prior.low, prior.width
    # Reference data first, outside the float64 region (the simulators run in float32).
    xs = [np.asarray(reference.simulate(jax.random.fold_in(key, k), e, theta)) for k, theta in enumerate(th)]
    means, covs, hess = [], [], []
    with jax.enable_x64(True):

        @jax.jit
        def per_event(x, ee, u):
            def lp(uu):
                return density.log_prob(x, ee, low + width * uu).astype(jnp.float64)

            scores = jax.jacfwd(lp)(u)  # (n, P)
            h = jax.hessian(lambda uu: jnp.sum(lp(uu)))(u)  # (P, P)
            return jnp.sum(scores, axis=0), scores.T @ scores, h

        for x, theta in zip(xs, th, strict=True):
            u = jnp.asarray((theta - low) / width)
            s1 = np.zeros(prior.dim)
            s2 = np.zeros((prior.dim, prior.dim))
            hs = np.zeros((prior.dim, prior.dim))
            for start in range(0, e.size, chunk):
                a, b, h = per_event(jnp.asarray(x[start : start + chunk]), jnp.asarray(e[start : start + chunk]), u)
                s1, s2, hs = s1 + np.asarray(a), s2 + np.asarray(b), hs + np.asarray(h)
            g = s1 / e.size
            means.append(g)
            covs.append(s2 / e.size - np.outer(g, g))
            hess.append(-hs / e.size)
    return Mismatch(th, np.full(len(th), e.size), np.asarray(means), np.asarray(covs), np.asarray(hess))


def divergence_tau(mismatch: Mismatch, n_events: int) -> Temperature:
    """tau = alpha / (alpha + N) with alpha = 1 / (2 eps), eps the mean divergence per event over the points
    (Miller and Dunson 2019 coarsening)."""
    n_events = _check_n(n_events)
    eps = mismatch.divergence()
    m = max(float(eps.mean()), 0.0)
    tau = 1.0 / (1.0 + 2.0 * n_events * m)
    details = {"eps_per_event": eps.tolist(), "n_events": n_events, "alpha": None if m <= 0 else 1.0 / (2.0 * m)}
    return Temperature("divergence", tau, details)


def curvature_tau(mismatch: Mismatch, n_events: int) -> Temperature:
    """tau = 1 / max_j mean_k R_kj, R the sandwich-to-model variance ratio of each parameter
    (:meth:`Mismatch.sandwich_ratio`; Lyddon, Holmes and Walker 2019 curvature matching per marginal), capped at 1."""
    n_events = _check_n(n_events)
    ratio = mismatch.sandwich_ratio(n_events)
    per_param = ratio.mean(axis=0)
    worst = float(per_param.max())
    tau = 1.0 if worst <= 1.0 else 1.0 / worst
    details = {"variance_ratio": ratio.tolist(), "variance_ratio_mean": per_param.tolist(), "n_events": n_events}
    return Temperature("curvature", tau, details)


def _check_n(n_events: Any) -> int:
    if isinstance(n_events, bool) or int(n_events) != n_events or int(n_events) < 1:
        raise ValueError(f"n_events (events in the calibration data) must be an integer >= 1, got {n_events!r}")
    return int(n_events)
