"""Samplers of the tempered posterior p_tau(theta | x) ∝ prior(theta) exp(tau log L(theta)) of a CalibrationProblem.

- :func:`run_numpyro_nuts`: NumPyro NUTS on :func:`numpyro_model` (vectorised chains),
- :func:`run_blackjax_nuts`: BlackJAX NUTS with Stan-style window adaptation, one adaptation per chain,
- :func:`run_tempered_smc`: BlackJAX adaptive tempered SMC from the prior up to lambda = tau, with the log evidence.

All three return a :class:`~surrinf.inference.result.PosteriorResult` with float64 draws in theta units and run their
JAX work inside ``with jax.enable_x64(True):`` (local; the global ``jax_enable_x64`` flag is never changed). The
gradient-based samplers work on the unconstrained z of the :class:`~surrinf.inference.prior.BoxPrior`
(``theta = low + width * sigmoid(z)``; NumPyro's own transform of ``Uniform(low, high)`` is the same map).
"""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

import blackjax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from blackjax.adaptation.base import get_filter_adapt_info_fn
from blackjax.smc import base as smc_base
from blackjax.smc import ess as smc_ess
from blackjax.smc import resampling as smc_resampling
from blackjax.smc import solver as smc_solver
from blackjax.smc import tempered as smc_tempered
from numpyro.infer import MCMC, NUTS

from surrinf._checks import check_positive_int as _check_positive_int

from .problem import CalibrationProblem, check_tau
from .result import PosteriorResult

__all__ = ["numpyro_model", "run_blackjax_nuts", "run_numpyro_nuts", "run_tempered_smc"]

#: Optimal random-walk scale (Roberts, Gelman & Gilks 1997): proposal covariance = 2.38^2 / P * posterior covariance.
_RW_SCALE2 = 2.38**2
#: Relative jitter added to the diagonal of the particle covariance before its Cholesky factor.
_COV_JITTER = 1e-10


# ----------------------------------------------------------------------------------------------- argument checks


def _check_problem(problem: Any) -> CalibrationProblem:
    if not isinstance(problem, CalibrationProblem):
        raise TypeError(f"problem must be a CalibrationProblem, got {type(problem).__name__}")
    return problem


def _check_open_unit(value: Any, name: str) -> float:
    """value as a float in (0, 1)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}") from None
    if not (0.0 < v < 1.0):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    return v


def _check_init_theta(problem: CalibrationProblem, init_theta: Any, num_chains: int) -> np.ndarray | None:
    """init_theta as float64 (num_chains, P) strictly inside the prior box (None passes through)."""
    if init_theta is None:
        return None
    prior = problem.prior
    t = np.asarray(init_theta, dtype=np.float64)
    if t.shape != (num_chains, prior.dim):
        raise ValueError(
            f"init_theta must have shape (num_chains, P) = ({num_chains}, {prior.dim}) in theta units "
            f"{prior.names}, got {t.shape}"
        )
    if not (np.all(np.isfinite(t)) and np.all(t > prior.low) and np.all(t < prior.high)):
        raise ValueError(
            f"init_theta must lie strictly inside the prior box low={prior.low.tolist()}, high={prior.high.tolist()}"
        )
    return t


def _to_unconstrained(problem: CalibrationProblem, theta: np.ndarray) -> jax.Array:
    """z (..., P) float64 of theta (..., P) strictly inside the box."""
    return problem.prior.to_unconstrained(jnp.asarray(theta, dtype=jnp.float64))


def _prior_z(problem: CalibrationProblem, key: jax.Array, n: int) -> jax.Array:
    """(n, P) prior draws in z: the logistic distribution (u uniform in [tiny, 1), so z is finite)."""
    u = jax.random.uniform(key, (n, problem.dim), dtype=jnp.float64, minval=np.finfo(np.float64).tiny, maxval=1.0)
    return jnp.log(u) - jnp.log1p(-u)


def _finite_or_raise(arrays: dict[str, np.ndarray], sampler: str) -> None:
    for name, a in arrays.items():
        if not np.all(np.isfinite(a)):
            raise FloatingPointError(
                f"{sampler}: non-finite {name}; the log likelihood is probably NaN/inf somewhere in the prior box"
            )


def _tree_depth(n_steps: np.ndarray) -> np.ndarray:
    """NUTS tree depth from the number of leapfrog steps (floor(log2 n) + 1)."""
    return np.floor(np.log2(np.maximum(n_steps, 1))).astype(np.int64) + 1


# ----------------------------------------------------------------------------------------------- NumPyro NUTS


@eqx.filter_jit
def _log_likelihood(problem: CalibrationProblem, theta: jax.Array) -> jax.Array:
    """problem.log_likelihood(theta) as one compiled call (NumPyro evaluates the model eagerly at initialisation)."""
    return problem.log_likelihood(theta)


def numpyro_model(problem: CalibrationProblem, tau: float | jax.Array) -> None:
    """NumPyro model of the tempered posterior: theta (P,) ~ Uniform(low, high), factor tau * log L(theta).

    The site ``theta`` is in theta units (see ``problem.prior.names``); NumPyro samples its unconstrained image
    (sigmoid + affine, the same map as :meth:`BoxPrior.from_unconstrained`).
    """
    prior = problem.prior
    theta = numpyro.sample("theta", dist.Uniform(jnp.asarray(prior.low), jnp.asarray(prior.high)).to_event(1))
    numpyro.factor("tempered_log_likelihood", tau * _log_likelihood(problem, theta))


def run_numpyro_nuts(
    problem: CalibrationProblem,
    key: jax.Array,
    tau: float = 1.0,
    *,
    num_warmup: int = 500,
    num_samples: int = 1000,
    num_chains: int = 4,
    target_accept: float = 0.8,
    init_theta: np.ndarray | None = None,
    progress: bool = False,
) -> PosteriorResult:
    """NumPyro NUTS (diagonal mass matrix) on :func:`numpyro_model`; chains vectorised on one device.

    Runs in float64 (``with jax.enable_x64(True)``, local). Warm-up and sampling run in one ``MCMC.run`` (one
    compilation; a separate warm-up phase would compile the NUTS loop twice), so ``info["n_grad_evals"]`` counts
    the sampling leapfrog steps only (``n_grad_evals_includes_warmup`` is False). ``init_theta``: optional
    (num_chains, P) starting points in theta units, strictly inside the box (default: NumPyro's uniform init
    in z in [-2, 2]). Returns samples (num_chains, num_samples, P) in theta units; sample_stats ``diverging``,
    ``energy`` (Hamiltonian, unconstrained space), ``n_steps`` (leapfrog steps), ``tree_depth``,
    ``acceptance_rate``.
    """
    problem = _check_problem(problem)
    tau = check_tau(tau)
    num_warmup = _check_positive_int(num_warmup, "num_warmup")
    num_samples = _check_positive_int(num_samples, "num_samples")
    num_chains = _check_positive_int(num_chains, "num_chains")
    target_accept = _check_open_unit(target_accept, "target_accept")
    theta0 = _check_init_theta(problem, init_theta, num_chains)

    t0 = time.perf_counter()
    with jax.enable_x64(True):
        init_params = None
        if theta0 is not None:
            z0 = _to_unconstrained(problem, theta0)
            init_params = {"theta": z0 if num_chains > 1 else z0[0]}
        mcmc = MCMC(
            NUTS(numpyro_model, target_accept_prob=target_accept),
            num_warmup=num_warmup,
            num_samples=num_samples,
            num_chains=num_chains,
            chain_method="vectorized",
            progress_bar=bool(progress),
        )
        mcmc.run(
            key, problem, tau, extra_fields=("diverging", "energy", "num_steps", "accept_prob"), init_params=init_params
        )
        theta = np.asarray(mcmc.get_samples(group_by_chain=True)["theta"], dtype=np.float64)
        extra = {k: np.asarray(v) for k, v in mcmc.get_extra_fields(group_by_chain=True).items()}
    wall = time.perf_counter() - t0

    n_steps = extra["num_steps"].astype(np.int64)
    stats = {
        "diverging": extra["diverging"].astype(bool),
        "energy": extra["energy"].astype(np.float64),
        "n_steps": n_steps,
        "tree_depth": _tree_depth(n_steps),
        "acceptance_rate": extra["accept_prob"].astype(np.float64),
    }
    _finite_or_raise({"samples": theta, "energy": stats["energy"]}, "run_numpyro_nuts")
    info = {
        "num_warmup": num_warmup,
        "num_samples": num_samples,
        "num_chains": num_chains,
        "target_accept": target_accept,
        "wall_s": wall,
        "n_grad_evals": int(n_steps.sum()),
        "n_grad_evals_includes_warmup": False,
        "n_grad_evals_sampling": int(n_steps.sum()),
        "n_divergent": int(stats["diverging"].sum()),
    }
    return PosteriorResult(theta, problem.prior.names, "numpyro_nuts", tau, stats, info=info)


# ----------------------------------------------------------------------------------------------- BlackJAX NUTS


class _NutsTrace(NamedTuple):
    theta: jax.Array  # (..., P) draws in theta units
    diverging: jax.Array
    energy: jax.Array
    n_steps: jax.Array
    tree_depth: jax.Array
    acceptance_rate: jax.Array


@eqx.filter_jit
def _blackjax_nuts_chains(
    problem: CalibrationProblem,
    tau: jax.Array,
    keys: jax.Array,
    z0: jax.Array,
    num_warmup: int,
    num_samples: int,
    target_accept: float,
) -> tuple[_NutsTrace, jax.Array, jax.Array]:
    """Adapt and sample every chain: keys (C,), z0 (C, P) -> (trace (C, S, ...), warm-up leapfrog steps (C,),
    step sizes (C,)). Compiled once per problem structure, shapes and settings; tau is traced."""

    def logdensity(z: jax.Array) -> jax.Array:
        return problem.log_posterior_unconstrained(z, tau)

    def one_chain(key: jax.Array, z_init: jax.Array) -> tuple[_NutsTrace, jax.Array, jax.Array]:
        key_warm, key_sample = jax.random.split(key)
        warmup = blackjax.window_adaptation(
            blackjax.nuts,
            logdensity,
            target_acceptance_rate=target_accept,
            adaptation_info_fn=get_filter_adapt_info_fn(info_keys={"num_integration_steps"}),
        )
        (state, params), warm_info = warmup.run(key_warm, z_init, num_steps=num_warmup)
        step = blackjax.nuts(logdensity, **params).step

        def body(state: Any, k: jax.Array) -> tuple[Any, _NutsTrace]:
            state, info = step(k, state)
            trace = _NutsTrace(
                problem.prior.from_unconstrained(state.position),
                info.is_divergent,
                info.energy,
                info.num_integration_steps,
                info.num_trajectory_expansions,
                info.acceptance_rate,
            )
            return state, trace

        _, trace = jax.lax.scan(body, state, jax.random.split(key_sample, num_samples))
        return trace, jnp.sum(warm_info.info.num_integration_steps), params["step_size"]

    return jax.vmap(one_chain)(keys, z0)


def run_blackjax_nuts(
    problem: CalibrationProblem,
    key: jax.Array,
    tau: float = 1.0,
    *,
    num_warmup: int = 500,
    num_samples: int = 1000,
    num_chains: int = 4,
    target_accept: float = 0.8,
    init_theta: np.ndarray | None = None,
) -> PosteriorResult:
    """BlackJAX NUTS on ``problem.log_posterior_unconstrained(z, tau)`` with ``blackjax.window_adaptation``.

    Runs in float64 (``with jax.enable_x64(True)``, local). Each chain adapts its own step size and diagonal
    inverse mass matrix over ``num_warmup`` steps (vmap over chains), then samples with ``lax.scan``; all jitted.
    ``init_theta``: optional (num_chains, P) starting points in theta units strictly inside the box (default: prior
    draws from ``key``). Returns samples (num_chains, num_samples, P) in theta units; sample_stats ``diverging``,
    ``energy`` (Hamiltonian, unconstrained space), ``n_steps`` (leapfrog steps), ``tree_depth``,
    ``acceptance_rate``; ``info["n_grad_evals"]`` includes warm-up.
    """
    problem = _check_problem(problem)
    tau = check_tau(tau)
    num_warmup = _check_positive_int(num_warmup, "num_warmup")
    num_samples = _check_positive_int(num_samples, "num_samples")
    num_chains = _check_positive_int(num_chains, "num_chains")
    target_accept = _check_open_unit(target_accept, "target_accept")
    theta0 = _check_init_theta(problem, init_theta, num_chains)

    t0 = time.perf_counter()
    with jax.enable_x64(True):
        key_init, key_chains = jax.random.split(key)
        z0 = _prior_z(problem, key_init, num_chains) if theta0 is None else _to_unconstrained(problem, theta0)
        trace, warm_steps, step_size = _blackjax_nuts_chains(
            problem,
            jnp.asarray(tau, dtype=jnp.float64),
            jax.random.split(key_chains, num_chains),
            z0,
            num_warmup,
            num_samples,
            target_accept,
        )
        trace = jax.tree.map(np.asarray, trace)
        theta = trace.theta.astype(np.float64)
        warm_steps, step_size = np.asarray(warm_steps), np.asarray(step_size, dtype=np.float64)
    wall = time.perf_counter() - t0

    n_steps = trace.n_steps.astype(np.int64)
    stats = {
        "diverging": trace.diverging.astype(bool),
        "energy": trace.energy.astype(np.float64),
        "n_steps": n_steps,
        "tree_depth": trace.tree_depth.astype(np.int64),
        "acceptance_rate": trace.acceptance_rate.astype(np.float64),
    }
    _finite_or_raise({"samples": theta, "energy": stats["energy"]}, "run_blackjax_nuts")
    info = {
        "num_warmup": num_warmup,
        "num_samples": num_samples,
        "num_chains": num_chains,
        "target_accept": target_accept,
        "wall_s": wall,
        "n_grad_evals": int(warm_steps.astype(np.int64).sum() + n_steps.sum()),
        "n_grad_evals_includes_warmup": True,
        "n_grad_evals_sampling": int(n_steps.sum()),
        "n_divergent": int(stats["diverging"].sum()),
        "step_size": step_size.tolist(),
    }
    return PosteriorResult(theta, problem.prior.names, "blackjax_nuts", tau, stats, info=info)


# ----------------------------------------------------------------------------------------------- tempered SMC


class _SmcStepStats(NamedTuple):
    log_increment: jax.Array  # log mean incremental weight of this step
    acceptance_rate: jax.Array  # mean RWM acceptance over particles and mutation steps
    ess: jax.Array  # Kish ESS of the new weights


def _weighted_cov(z: jax.Array, w: jax.Array) -> jax.Array:
    """Weighted covariance (P, P) of particles z (N, P) with normalised weights w (N,)."""
    m = w @ z
    d = z - m
    return (d * w[:, None]).T @ d


def _rw_chain(
    key: jax.Array, z: jax.Array, logdensity_fn: Any, chol: jax.Array, n_steps: int
) -> tuple[jax.Array, jax.Array]:
    """``n_steps`` Gaussian random-walk Metropolis steps from z (P,), proposal z + chol @ eps, eps ~ N(0, I).

    All noise comes from one normal draw (n_steps, P + 1); the last column gives log u = log Phi(n) of the uniform
    of the accept test (one RNG call keeps the compiled step small). Returns (z, acceptance probabilities (n_steps,)).
    """
    noise = jax.random.normal(key, (n_steps, z.shape[0] + 1), z.dtype)

    def body(carry: tuple[jax.Array, jax.Array], n: jax.Array) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
        z, lp = carry
        prop = z + chol @ n[:-1]
        lp_prop = logdensity_fn(prop)
        log_ratio = lp_prop - lp
        log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)  # NaN proposal (or -inf - -inf): reject
        accept = jax.scipy.special.log_ndtr(n[-1]) < log_ratio
        return (jnp.where(accept, prop, z), jnp.where(accept, lp_prop, lp)), jnp.exp(jnp.minimum(log_ratio, 0.0))

    (z, _), acceptance = jax.lax.scan(body, (z, logdensity_fn(z)), noise)
    return z, acceptance


def _rw_update_particles(
    key: jax.Array,
    state: smc_tempered.TemperedSMCState,
    num_mcmc_steps: int,
    mcmc_parameters: dict[str, jax.Array],
    logposterior_fn: Any,
    log_weights_fn: Any,
) -> tuple[smc_base.SMCState, smc_base.SMCInfo]:
    """blackjax ``update_particles_fn``: resample (systematic), mutate every particle by :func:`_rw_chain` at the
    current lambda, reweight; ``info.update_info`` holds the acceptance probabilities (N, num_mcmc_steps)."""

    def update_fn(keys: jax.Array, particles: jax.Array, _: Any) -> tuple[jax.Array, jax.Array]:
        chain = lambda k, z: _rw_chain(k, z, logposterior_fn, mcmc_parameters["chol"], num_mcmc_steps)
        return jax.vmap(chain)(keys, particles)

    smc_state = smc_base.SMCState(state.particles, state.weights, {})
    return smc_base.step(key, smc_state, update_fn, jax.vmap(log_weights_fn), smc_resampling.systematic)


@eqx.filter_jit
def _smc_step(
    problem: CalibrationProblem,
    tau: jax.Array,
    target_ess: jax.Array,
    n_mcmc_steps: int,
    key: jax.Array,
    state: smc_tempered.TemperedSMCState,
) -> tuple[smc_tempered.TemperedSMCState, _SmcStepStats]:
    """One adaptive tempering step lambda -> min(lambda + delta, tau), delta from the ESS bisection of blackjax.

    The mutation is ``n_mcmc_steps`` random-walk Metropolis steps at the current lambda (blackjax resamples, moves,
    then reweights) with covariance 2.38^2 / P times the weighted particle covariance. The new lambda is set to
    tau exactly when the bisection hits the cap.
    """
    prior = problem.prior

    def loglik(z: jax.Array) -> jax.Array:
        return problem.log_likelihood(prior.from_unconstrained(z))

    lam = jnp.asarray(state.tempering_param, dtype=jnp.float64)
    max_delta = tau - lam
    delta = smc_ess.ess_solver(jax.vmap(loglik), state.particles, target_ess, max_delta, smc_solver.dichotomy)
    delta = jnp.clip(delta, 0.0, max_delta)  # NaN (no root) stays NaN and is caught by the caller
    new_lam = jnp.where(delta >= max_delta, tau, jnp.minimum(lam + delta, tau))

    p = state.particles.shape[1]
    cov = _weighted_cov(state.particles, state.weights)
    cov = cov + _COV_JITTER * jnp.trace(cov) / p * jnp.eye(p)
    chol = jnp.linalg.cholesky(_RW_SCALE2 / p * cov)

    # the mutation is the custom update_particles_fn: blackjax's mcmc_step_fn / mcmc_init_fn / resampling_fn slots
    # are then unused (None)
    kernel = smc_tempered.build_kernel(
        prior.log_density_unconstrained, loglik, None, None, None, update_particles_fn=_rw_update_particles
    )
    new_state, info = kernel(key, state, n_mcmc_steps, new_lam, {"chol": chol})
    new_state = new_state._replace(tempering_param=new_lam)
    w = new_state.weights
    stats = _SmcStepStats(info.log_likelihood_increment, jnp.mean(info.update_info), 1.0 / jnp.sum(w**2))
    return new_state, stats


def run_tempered_smc(
    problem: CalibrationProblem,
    key: jax.Array,
    tau: float = 1.0,
    *,
    n_particles: int = 1000,
    target_ess: float = 0.5,
    n_mcmc_steps: int = 10,
    max_steps: int = 200,
) -> PosteriorResult:
    """Adaptive tempered SMC (BlackJAX) from the prior to the tempered posterior at lambda = tau.

    Runs in float64 (``with jax.enable_x64(True)``, local). Particles start as ``n_particles`` prior draws in z; the
    SMC inverse temperature lambda multiplies the untempered ``problem.log_likelihood`` and plays tau. Each step
    picks the next lambda by blackjax's ESS bisection (ESS of the incremental weights = ``target_ess`` *
    n_particles), capped so that the last step lands exactly on tau; then resamples (systematic), mutates with
    ``n_mcmc_steps`` random-walk Metropolis steps (Gaussian proposal, covariance 2.38^2/P x weighted particle
    covariance, re-estimated every step) and reweights. One compiled step, looped in Python (few steps).

    Returns samples (1, n_particles, P) in theta units with ``weights`` = the final normalised particle weights
    (not resampled), ``log_evidence`` = log Z(tau) = log ∫ L(theta)^tau prior(theta) dtheta = sum of the log mean
    incremental weights, and info: ``lambdas`` (0 first, tau last), ``n_steps``, ``acceptance_rate`` and ``ess``
    (Kish ESS after reweighting) per step, ``log_increments``, ``wall_s``. Raises RuntimeError if tau is not
    reached within ``max_steps``.
    """
    problem = _check_problem(problem)
    tau = check_tau(tau)
    n_particles = _check_positive_int(n_particles, "n_particles", minimum=2)
    target_ess = _check_open_unit(target_ess, "target_ess")
    n_mcmc_steps = _check_positive_int(n_mcmc_steps, "n_mcmc_steps")
    max_steps = _check_positive_int(max_steps, "max_steps")

    t0 = time.perf_counter()
    with jax.enable_x64(True):
        key_init, key_steps = jax.random.split(key)
        state = smc_tempered.init(_prior_z(problem, key_init, n_particles))
        state = state._replace(tempering_param=jnp.asarray(0.0, dtype=jnp.float64))
        tau_arr, ess_arr = jnp.asarray(tau, dtype=jnp.float64), jnp.asarray(target_ess, dtype=jnp.float64)
        lambdas, incs, accs, esss = [0.0], [], [], []
        while lambdas[-1] < tau:
            if len(incs) == max_steps:
                raise RuntimeError(
                    f"run_tempered_smc: lambda reached only {lambdas[-1]:.4g} < tau={tau} after max_steps={max_steps}"
                    "; increase max_steps or lower target_ess"
                )
            step_key = jax.random.fold_in(key_steps, len(incs))
            state, stats = _smc_step(problem, tau_arr, ess_arr, n_mcmc_steps, step_key, state)
            lam = float(state.tempering_param)
            if not math.isfinite(lam) or lam <= lambdas[-1]:
                raise FloatingPointError(
                    f"run_tempered_smc: tempering stalled at lambda={lambdas[-1]:.4g} (next {lam}); the log "
                    "likelihood is probably NaN/inf or degenerate on the particles"
                )
            lambdas.append(lam)
            incs.append(float(stats.log_increment))
            accs.append(float(stats.acceptance_rate))
            esss.append(float(stats.ess))
        theta = np.asarray(problem.prior.from_unconstrained(state.particles), dtype=np.float64)
        weights = np.asarray(state.weights, dtype=np.float64)
    wall = time.perf_counter() - t0

    log_z = float(np.sum(incs))
    _finite_or_raise({"samples": theta, "weights": weights, "log evidence": np.array(log_z)}, "run_tempered_smc")
    info = {
        "lambdas": lambdas,
        "n_steps": len(incs),
        "acceptance_rate": accs,
        "ess": esss,
        "log_increments": incs,
        "n_particles": n_particles,
        "target_ess": target_ess,
        "n_mcmc_steps": n_mcmc_steps,
        # per step: ESS bisection + mutation start + n_mcmc_steps proposals + reweighting, for every particle
        "n_likelihood_evals": len(incs) * n_particles * (n_mcmc_steps + 3),
        "mutation": "random-walk Metropolis, covariance 2.38^2/P x weighted particle covariance (z space)",
        "weights": "final normalised particle weights (not resampled)",
        "wall_s": wall,
    }
    return PosteriorResult(
        theta[None], problem.prior.names, "tempered_smc", tau, weights=weights[None], log_evidence=log_z, info=info
    )
