"""Fully Bayesian unfolding (FBU): the posterior of the truth spectrum sampled with NUTS.

Model (one spectrum): truth counts t (n_truth,) >= 0 [events per truth bin, efficiency-corrected], expected reco counts
mu = P t + fakes (n_reco,), data d_j ~ Poisson(mu_j) independently. ``P = response.probabilities`` (columns sum to the
efficiency). Prior on t:

- flat (uniform on t >= 0, improper; proper posterior because every column of P is non-zero), times
- for alpha > 0 the curvature regulariser exp(-alpha/2 ||C (t / t_ref - 1)||^2), where C (n_truth - 2, n_truth) takes
  second differences over the bin index ([1, -2, 1] rows; bin widths are ignored) and ``t_ref`` (n_truth,) > 0 is the
  ``reference`` spectrum [events per truth bin]. It favours truth spectra whose ratio to the reference is linear in the
  bin index; alpha is dimensionless. Without a reference, t_ref is flat at the data-estimated mean bin content
  t_bar = max(sum(d - fakes), 1) / sum(efficiency), so the penalty is alpha/2 ||C t||^2 / t_bar^2 (C kills constants).
  This t_bar is an empirical-Bayes scale: a constant of the data, not of t.

The samplers work on z = log t (NumPyro's transform of the positive support, with its log-Jacobian sum(z)), so the flat
prior on t is exp(sum z) in z. Both sample :func:`log_posterior_z`, minus NumPyro's ``potential_energy`` of
:func:`fbu_model`, so they target the same posterior by construction. Chains start at the posterior mode (Richardson-
Lucy iterations, then Fisher scoring in z) and are scaled by the Laplace covariance there (inverse expected Fisher
information): the initial inverse mass matrix of NumPyro, a whitening z = z_mode + L w for BlackJAX. Everything runs in
float64 (:func:`~surrinf.unfolding.result.float64`).

- :func:`fbu_model`: the NumPyro model (latent site ``truth`` in events, observed site ``data``).
- :func:`fbu`: NumPyro NUTS (vectorised chains) for one spectrum -> :class:`BayesianUnfolding` (draws, statistics,
  arviz export).
- :func:`fbu_toys`: one BlackJAX NUTS chain per pseudo-data spectrum, window adaptation + ``lax.scan``, vmapped over
  toys and jitted once per shape -> :class:`~surrinf.unfolding.result.UnfoldingResult` with a leading toy axis.

Pseudo-data pulls have width ~ 1 - fake fraction with the default fakes (``data * response.fake_fraction``): the
subtracted fakes then scale with the data, which the Poisson likelihood (fakes fixed) does not know about.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, NamedTuple

import blackjax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from blackjax.adaptation.base import get_filter_adapt_info_fn
from numpyro.distributions import constraints
from numpyro.infer import MCMC, NUTS
from numpyro.infer.util import potential_energy

from surrinf._checks import check_positive_int as _check_positive_int

from .response import ResponseMatrix
from .result import UnfoldingResult, float64

__all__ = [
    "BayesianUnfolding",
    "default_reference",
    "fbu",
    "fbu_model",
    "fbu_toys",
    "log_posterior_z",
    "log_regulariser",
]

#: Target acceptance probability of NUTS (both samplers).
_TARGET_ACCEPT = 0.8
#: Tree-depth cap of the BlackJAX NUTS chains (at most 2^6 - 1 = 63 leapfrog steps): the whitened posterior needs
#: 7-31; the cap stops the early step-size search of one toy from stalling the whole vmapped batch.
_MAX_DOUBLINGS = 6
#: Fisher-scoring steps that move the Richardson-Lucy start to the posterior mode (in z).
_START_STEPS = 3
#: Relative ridge added to the Fisher information before inverting it.
_INFO_JITTER = 1e-9
#: Floor of the expected reco counts mu (events): keeps log mu and its gradient finite in reco bins without any
#: probability and without fakes (where mu = 0 exactly).
_MU_FLOOR = 1e-300
#: Multiplicative (Richardson-Lucy / EM) iterations that give the positive starting point of the chains.
_INIT_ITERATIONS = 20
#: NumPyro chains start at z_mode + _CHAIN_SPREAD * L eps, eps ~ N(0, I), L the Laplace Cholesky factor: 3 posterior
#: standard deviations (over-dispersed starts, so that r_hat can detect non-convergence).
_CHAIN_SPREAD = 3.0


# ----------------------------------------------------------------------------------------------- pure functions


def default_reference(data: jax.Array, P: jax.Array, fakes: jax.Array) -> jax.Array:
    """(n_truth,) flat reference t_bar = max(sum(data - fakes), 1) / sum(efficiency) [events per truth bin].

    data, fakes (n_reco,) [events], P (n_reco, n_truth). The mean bin content of a flat truth spectrum that gives the
    observed signal total; the regulariser's scale when no reference is given.
    """
    t_bar = jnp.maximum(jnp.sum(data - fakes), 1.0) / jnp.sum(P)
    return jnp.full(P.shape[1], t_bar)


def log_regulariser(truth: jax.Array, reference: jax.Array, alpha: jax.Array | float) -> jax.Array:
    """-alpha/2 ||C (truth / reference - 1)||^2, C the (n_truth - 2, n_truth) second-difference matrix; truth and
    reference (n_truth,) [events]. Zero for alpha = 0 or n_truth < 3."""
    curvature = jnp.diff(truth / reference - 1.0, n=2)
    return -0.5 * alpha * jnp.sum(curvature**2)


def fbu_model(
    data: jax.Array | None,
    P: jax.Array,
    fakes: jax.Array,
    *,
    alpha: jax.Array | float = 0.0,
    reference: jax.Array | None = None,
) -> None:
    """NumPyro model of FBU: ``truth`` (n_truth,) [events] flat on t >= 0 (``ImproperUniform``; NumPyro samples
    z = log t), factor ``regularisation`` = :func:`log_regulariser` (alpha >= 0; ``reference`` (n_truth,) > 0 or None
    for :func:`default_reference`), observed ``data`` (n_reco,) ~ Poisson(P t + fakes) independently.

    data: observed counts (n_reco,) (None to simulate; without data and reference, t_ref = 1), P (n_reco, n_truth) =
    response.probabilities, fakes (n_reco,) expected fake counts [events]. Traceable in every argument.
    """
    P = jnp.asarray(P)
    truth = numpyro.sample("truth", dist.ImproperUniform(constraints.positive, (), (P.shape[1],)))
    mu, log_reg = _expected_and_regulariser(truth, data, P, fakes, alpha, reference)
    numpyro.factor("regularisation", log_reg)
    numpyro.sample("data", dist.Poisson(mu).to_event(1), obs=data)


@jax.jit
def _expected_and_regulariser(
    truth: jax.Array, data: jax.Array | None, P: jax.Array, fakes: jax.Array, alpha: Any, reference: Any
) -> tuple[jax.Array, jax.Array]:
    """(mu (n_reco,) = max(P t + fakes, floor) [events], :func:`log_regulariser`) as one compiled call: NumPyro runs the
    model eagerly at initialisation, and every eager operation is a separate compilation."""
    if reference is None:
        reference = jnp.ones(P.shape[1]) if data is None else default_reference(data, P, fakes)
    return jnp.maximum(P @ truth + fakes, _MU_FLOOR), log_regulariser(truth, reference, alpha)


def log_posterior_z(
    z: jax.Array, data: jax.Array, P: jax.Array, fakes: jax.Array, alpha: jax.Array, reference: jax.Array
) -> jax.Array:
    """Unnormalised log posterior of z = log t (n_truth,): minus NumPyro's potential energy of :func:`fbu_model`
    (log-Jacobian sum(z) included), i.e. sum_j log Poisson(d_j | mu_j) + sum(z) + :func:`log_regulariser`. The density
    both :func:`fbu` and :func:`fbu_toys` sample; pure and jit/vmap-able (reference None: :func:`default_reference`)."""
    model_kwargs = {"alpha": alpha, "reference": reference}
    return -potential_energy(fbu_model, (data, P, fakes), model_kwargs, {"truth": z})


def _initial_truth(data: jax.Array, P: jax.Array, fakes: jax.Array, n_iter: int = _INIT_ITERATIONS) -> jax.Array:
    """(n_truth,) positive starting point [events]: ``n_iter`` Richardson-Lucy (Poisson EM) iterations from the flat
    :func:`default_reference`; t <- t * P^T (d / mu) / efficiency. Pure, jit/vmap-able over data."""
    efficiency = jnp.sum(P, axis=0)

    def body(t: jax.Array, _: Any) -> tuple[jax.Array, None]:
        mu = P @ t + fakes
        ratio = jnp.where(mu > 0, data / jnp.maximum(mu, _MU_FLOOR), 0.0)
        return t * (P.T @ ratio) / efficiency, None

    t, _ = jax.lax.scan(body, default_reference(data, P, fakes), None, length=n_iter)
    return t


def _initial_z(data: jax.Array, P: jax.Array, fakes: jax.Array) -> jax.Array:
    """(n_truth,) unconstrained start z0 = log(max(t0, 1)) with t0 = :func:`_initial_truth`."""
    return jnp.log(jnp.maximum(_initial_truth(data, P, fakes), 1.0))


def _fisher_information_z(
    z: jax.Array, data: jax.Array, P: jax.Array, fakes: jax.Array, alpha: jax.Array, reference: jax.Array
) -> jax.Array:
    """(n_truth, n_truth) expected Fisher information of z = log t (n_truth,) plus the regulariser's Gauss-Newton
    term: A^T diag(1/mu) A + alpha B^T B with A = P diag(t), mu = P t + fakes, B = C diag(t / reference). Positive
    definite (every column of P is non-zero). ``data`` is unused (expected information); kept for a uniform call."""
    del data
    t = jnp.exp(z)
    a = P * t
    mu = jnp.maximum(jnp.sum(a, axis=1) + fakes, _MU_FLOOR)
    b = jnp.diff(jnp.diag(t / reference), n=2, axis=0)
    info = a.T @ (a / mu[:, None]) + alpha * b.T @ b
    return 0.5 * (info + info.T) + _INFO_JITTER * jnp.trace(info) / t.size * jnp.eye(t.size)


def _laplace_start(
    data: jax.Array, P: jax.Array, fakes: jax.Array, alpha: jax.Array, reference: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Starting point and scale of the chains: z (n_truth,) after ``_START_STEPS`` Fisher-scoring steps from
    :func:`_initial_z` towards the mode of :func:`log_posterior_z` (a step is kept only if it raises the density), and
    the Cholesky factor (n_truth, n_truth) of the inverse Fisher information there (Laplace covariance of z)."""
    logp = functools.partial(log_posterior_z, data=data, P=P, fakes=fakes, alpha=alpha, reference=reference)
    info = functools.partial(_fisher_information_z, data=data, P=P, fakes=fakes, alpha=alpha, reference=reference)

    def step(z: jax.Array, _: Any) -> tuple[jax.Array, None]:
        z_new = z + jnp.linalg.solve(info(z), jax.grad(logp)(z))
        lp_new = logp(z_new)
        better = jnp.all(jnp.isfinite(z_new)) & jnp.isfinite(lp_new) & (lp_new >= logp(z))
        return jnp.where(better, z_new, z), None

    z, _ = jax.lax.scan(step, _initial_z(data, P, fakes), None, length=_START_STEPS)
    return z, jnp.linalg.cholesky(jnp.linalg.inv(info(z)))


# ----------------------------------------------------------------------------------------------- BlackJAX, vmapped


class _ToySummary(NamedTuple):
    mean: jax.Array  # (T, n_truth) posterior mean [events]
    covariance: jax.Array  # (T, n_truth, n_truth) posterior covariance [events^2]
    n_divergent: jax.Array  # (T,) divergent transitions after warm-up


@functools.partial(jax.jit, static_argnames=("num_warmup", "num_samples"))
def _fbu_toy_chains(
    keys: jax.Array,
    toys: jax.Array,
    P: jax.Array,
    fakes: jax.Array,
    alpha: jax.Array,
    reference: jax.Array,
    num_warmup: int,
    num_samples: int,
) -> _ToySummary:
    """One NUTS chain per toy: keys (T,), toys (T, n_reco), P (n_reco, n_truth), fakes (T, n_reco), alpha (T,),
    reference (T, n_truth) -> posterior summaries per toy. Compiled once per shapes and (num_warmup, num_samples)."""

    def one_toy(
        key: jax.Array, data: jax.Array, f: jax.Array, a: jax.Array, ref: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        z_mode, chol = _laplace_start(data, P, f, a, ref)

        def logdensity(w: jax.Array) -> jax.Array:  # whitened z = z_mode + chol @ w: a constant Jacobian
            return log_posterior_z(z_mode + chol @ w, data, P, f, a, ref)

        key_warm, key_sample = jax.random.split(key)
        warmup = blackjax.window_adaptation(
            blackjax.nuts,
            logdensity,
            is_mass_matrix_diagonal=True,  # whitened coordinates: the Laplace covariance is the identity
            target_acceptance_rate=_TARGET_ACCEPT,
            adaptation_info_fn=get_filter_adapt_info_fn(),
            max_num_doublings=_MAX_DOUBLINGS,
        )
        (state, params), _ = warmup.run(key_warm, jnp.zeros_like(z_mode), num_steps=num_warmup)
        step = blackjax.nuts(logdensity, **params).step

        def body(state: Any, k: jax.Array) -> tuple[Any, tuple[jax.Array, jax.Array]]:
            state, info = step(k, state)
            return state, (jnp.exp(z_mode + chol @ state.position), info.is_divergent)

        _, (truth, divergent) = jax.lax.scan(body, state, jax.random.split(key_sample, num_samples))
        mean = jnp.mean(truth, axis=0)
        dev = truth - mean
        return mean, dev.T @ dev / (num_samples - 1), jnp.sum(divergent)

    return _ToySummary(*jax.vmap(one_toy)(keys, toys, fakes, alpha, reference))


#: (n_toys, n_truth) :func:`default_reference` of every toy (n_toys, n_reco), as one compiled call.
_default_references = jax.jit(jax.vmap(default_reference, (0, None, 0)))


@functools.partial(jax.jit, static_argnames=("num_chains",))
def _numpyro_start(
    key: jax.Array,
    data: jax.Array,
    P: jax.Array,
    fakes: jax.Array,
    alpha: jax.Array,
    reference: jax.Array | None,
    num_chains: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(reference (n_truth,) with the default filled in, chain starts z0 (num_chains, n_truth) = z_mode + 3 L eps,
    Laplace covariance L L^T (n_truth, n_truth) as the initial inverse mass matrix), in one compiled call."""
    if reference is None:
        reference = default_reference(data, P, fakes)
    z_mode, chol = _laplace_start(data, P, fakes, alpha, reference)
    eps = jax.random.normal(key, (num_chains, z_mode.size), dtype=z_mode.dtype)
    return reference, z_mode + _CHAIN_SPREAD * eps @ chol.T, chol @ chol.T


# ----------------------------------------------------------------------------------------------- checks


def _check_response(response: Any) -> np.ndarray:
    """response.probabilities (n_reco, n_truth); every truth bin must have a non-zero efficiency."""
    if not isinstance(response, ResponseMatrix):
        raise TypeError(f"response must be a ResponseMatrix, got {type(response).__name__}")
    P = response.probabilities
    empty = np.flatnonzero(P.sum(axis=0) <= 0)
    if empty.size:
        raise ValueError(
            f"response has zero efficiency in truth bins {empty.tolist()}: the data do not constrain them and the "
            "flat-prior posterior is improper; merge or drop those bins"
        )
    return P


def _check_counts(values: Any, name: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape} ({what}), got {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"{name} must be finite and >= 0 ({what})")
    return a


def _check_fakes(fakes: Any, data: np.ndarray, response: ResponseMatrix) -> np.ndarray:
    """Expected fakes in data units, shaped like data: None -> data * response.fake_fraction; an explicit (n_reco,)
    array is broadcast over the toys, or (n_toys, n_reco) per toy."""
    if fakes is None:
        return data * response.fake_fraction
    f = np.asarray(fakes, dtype=np.float64)
    if f.shape not in ((response.n_reco,), data.shape):
        raise ValueError(
            f"fakes must have shape ({response.n_reco},) or {data.shape} (expected fake counts), got {f.shape}"
        )
    return _check_counts(np.broadcast_to(f, data.shape), "fakes", data.shape, "expected fake counts [events]")


def _check_alpha(alpha: Any, n_truth: int, n_toys: int | None = None) -> np.ndarray:
    """alpha as float64: a scalar >= 0, or (n_toys,) when n_toys is given (broadcast from a scalar)."""
    a = np.asarray(alpha, dtype=np.float64)
    ok_shape = a.shape == () or (n_toys is not None and a.shape == (n_toys,))
    if not ok_shape or not np.all(np.isfinite(a)) or np.any(a < 0):
        shapes = "a number" if n_toys is None else f"a number or shape ({n_toys},)"
        raise ValueError(f"alpha must be {shapes}, finite and >= 0 (regularisation strength), got {alpha!r}")
    if np.any(a > 0) and n_truth < 3:
        raise ValueError(f"alpha > 0 needs n_truth >= 3 (second differences), got n_truth = {n_truth}")
    return a if n_toys is None else np.broadcast_to(a, (n_toys,))


def _check_reference(reference: Any, n_truth: int, n_toys: int | None = None) -> np.ndarray | None:
    """reference as float64 (n_truth,) > 0, or (n_toys, n_truth) per toy when n_toys is given; None passes."""
    if reference is None:
        return None
    r = np.asarray(reference, dtype=np.float64)
    shapes = [(n_truth,)] + ([] if n_toys is None else [(n_toys, n_truth)])
    if r.shape not in shapes:
        raise ValueError(
            f"reference must have shape {' or '.join(map(str, shapes))} (events per truth bin), got {r.shape}"
        )
    if not np.all(np.isfinite(r)) or np.any(r <= 0):
        raise ValueError("reference must be finite and > 0 (events per truth bin)")
    return r if n_toys is None else np.broadcast_to(r, (n_toys, n_truth))


# ----------------------------------------------------------------------------------------------- public API


class BayesianUnfolding(eqx.Module):
    """FBU posterior of one spectrum (from :func:`fbu`).

    result: summary (posterior mean ``unfolded`` (n_truth,) [events], posterior ``covariance`` (n_truth, n_truth),
    ``response_covariance`` zeros, method "fbu"); draws: (chains, draws, n_truth) posterior draws of t [events];
    diverging, accept_prob, num_steps, energy: (chains, draws) NUTS statistics after warm-up; data (n_reco,) the
    observed counts; truth_edges (n_truth + 1,) for labels.
    """

    result: UnfoldingResult
    draws: np.ndarray
    diverging: np.ndarray
    accept_prob: np.ndarray
    num_steps: np.ndarray
    energy: np.ndarray
    data: np.ndarray
    truth_edges: np.ndarray

    @property
    def unfolded(self) -> jax.Array:
        return self.result.unfolded

    @property
    def covariance(self) -> jax.Array:
        return self.result.covariance

    @property
    def errors(self) -> jax.Array:
        return self.result.errors

    @property
    def n_divergent(self) -> int:
        return int(np.sum(self.diverging))

    @property
    def mean_accept_prob(self) -> float:
        return float(np.mean(self.accept_prob))

    def to_inference_data(self) -> Any:
        """arviz InferenceData: posterior ``truth`` (chain, draw, truth_bin) [events], sample_stats ``diverging``,
        ``acceptance_rate``, ``n_steps``, ``energy``; observed_data ``data`` (reco_bin). Coordinates are bin indices;
        the truth-bin edges are in ``attrs["truth_edges"]``."""
        import arviz as az

        n_truth, n_reco = self.draws.shape[-1], self.data.shape[0]
        return az.from_dict(
            posterior={"truth": np.asarray(self.draws)},
            sample_stats={
                "diverging": np.asarray(self.diverging, dtype=bool),
                "acceptance_rate": np.asarray(self.accept_prob),
                "n_steps": np.asarray(self.num_steps),
                "energy": np.asarray(self.energy),
            },
            observed_data={"data": np.asarray(self.data)},
            coords={"truth_bin": np.arange(n_truth), "reco_bin": np.arange(n_reco)},
            dims={"truth": ["truth_bin"], "data": ["reco_bin"]},
            attrs={"method": "fbu", "truth_edges": np.asarray(self.truth_edges).tolist()},
        )


@float64
def fbu(
    key: jax.Array,
    data: Any,
    response: ResponseMatrix,
    *,
    num_warmup: int = 500,
    num_samples: int = 1000,
    num_chains: int = 4,
    alpha: float = 0.0,
    reference: Any = None,
    fakes: Any = None,
) -> BayesianUnfolding:
    """Fully Bayesian unfolding of one spectrum with NumPyro NUTS (``numpyro.infer.MCMC``, dense mass matrix, target
    acceptance 0.8, ``chain_method="vectorized"``, float64).

    data: (n_reco,) observed counts [events]; response: the ResponseMatrix (P = response.probabilities); alpha >= 0
    and reference (n_truth,) > 0 or None: the curvature prior of :func:`fbu_model`; fakes: (n_reco,) expected fake
    counts [events], None for ``data * response.fake_fraction``. NUTS runs on the potential of :func:`fbu_model`
    (passed as one jitted ``potential_fn`` in z = log t). The chains start over-dispersed at z_mode + 3 L eps
    (eps ~ N(0, I) from ``key``, L L^T the Laplace covariance of z, also the initial inverse mass matrix); warm-up
    and sampling run in one ``MCMC.run``. The posterior mean and covariance of the pooled draws form the
    UnfoldingResult; :meth:`BayesianUnfolding.to_inference_data` gives arviz diagnostics.
    """
    P = _check_response(response)
    d = _check_counts(data, "data", (response.n_reco,), "observed counts per reco bin [events]")
    f = _check_fakes(fakes, d, response)
    num_warmup = _check_positive_int(num_warmup, "num_warmup")
    num_samples = _check_positive_int(num_samples, "num_samples", minimum=2)
    num_chains = _check_positive_int(num_chains, "num_chains")
    a = float(_check_alpha(alpha, response.n_truth))
    ref = _check_reference(reference, response.n_truth)

    key_init, key_run = jax.random.split(key)
    P_j, d_j, f_j = (jnp.asarray(x, dtype=jnp.float64) for x in (P, d, f))
    ref_j = None if ref is None else jnp.asarray(ref)
    ref_j, z0, inverse_mass = _numpyro_start(key_init, d_j, P_j, f_j, jnp.asarray(a), ref_j, num_chains)
    # NumPyro NUTS on the potential of fbu_model (the same density as fbu_toys); passing it as one jitted potential_fn
    # instead of the model avoids NumPyro's eager, op-by-op model evaluations at initialisation (seconds of compiling)
    potential = jax.jit(lambda params: -log_posterior_z(params["truth"], d_j, P_j, f_j, a, ref_j))
    mcmc = MCMC(
        NUTS(
            potential_fn=potential,
            target_accept_prob=_TARGET_ACCEPT,
            dense_mass=True,
            inverse_mass_matrix=inverse_mass,
        ),
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(
        key_run,
        init_params={"truth": z0 if num_chains > 1 else z0[0]},
        extra_fields=("diverging", "accept_prob", "num_steps", "energy"),
    )
    z = np.asarray(mcmc.get_samples(group_by_chain=True)["truth"], dtype=np.float64)
    draws = np.exp(z.reshape(num_chains, num_samples, -1))
    extra = {k: np.asarray(v) for k, v in mcmc.get_extra_fields(group_by_chain=True).items()}
    if not np.all(np.isfinite(draws)):
        raise FloatingPointError("fbu: non-finite posterior draws")
    pooled = draws.reshape(-1, draws.shape[-1])
    n_truth = pooled.shape[1]
    result = UnfoldingResult(
        jnp.asarray(pooled.mean(axis=0)),
        jnp.asarray(np.cov(pooled, rowvar=False).reshape(n_truth, n_truth)),
        jnp.zeros((n_truth, n_truth), dtype=jnp.float64),
        method="fbu",
    )
    return BayesianUnfolding(
        result,
        draws,
        extra["diverging"].astype(bool),
        extra["accept_prob"].astype(np.float64),
        extra["num_steps"].astype(np.int64),
        extra["energy"].astype(np.float64),
        d,
        np.asarray(response.truth_edges, dtype=np.float64),
    )


@float64
def fbu_toys(
    key: jax.Array,
    toys: Any,
    response: ResponseMatrix,
    *,
    num_warmup: int = 300,
    num_samples: int = 300,
    alpha: Any = 0.0,
    reference: Any = None,
    fakes: Any = None,
) -> UnfoldingResult:
    """FBU of many pseudo-data spectra: one BlackJAX NUTS chain per toy, vmapped over toys and jitted once per
    (shapes, num_warmup, num_samples); float64.

    Each chain samples the whitened w, z = z_mode + L w (z_mode: posterior mode of its toy, L L^T: Laplace covariance),
    of :func:`log_posterior_z`, starting at w = 0: ``blackjax.window_adaptation`` (diagonal inverse mass matrix,
    target acceptance 0.8) over ``num_warmup`` steps, then ``num_samples`` NUTS draws in ``lax.scan``; trees are capped
    at 2^6 - 1 leapfrog steps so that no single toy stalls the vmapped batch. Chain i uses ``split(key, n_toys)[i]``.

    toys: (n_toys, n_reco) counts [events]; alpha: a number >= 0 or (n_toys,) per toy; reference: None (the flat
    :func:`default_reference` of each toy), (n_truth,) or (n_toys, n_truth) > 0 [events]; fakes: None
    (``toys * response.fake_fraction``), (n_reco,) or (n_toys, n_reco) [events]. alpha and reference are traced:
    changing them does not recompile.

    Returns an UnfoldingResult with a leading toy axis: posterior mean (n_toys, n_truth), posterior covariance
    (n_toys, n_truth, n_truth), zero response_covariance, method "fbu". Warns (RuntimeWarning) if any toy had
    divergent transitions.
    """
    P = _check_response(response)
    d = np.asarray(toys, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] != response.n_reco or d.shape[0] < 1:
        raise ValueError(f"toys must have shape (n_toys, {response.n_reco}) (counts per reco bin), got {d.shape}")
    d = _check_counts(d, "toys", d.shape, "counts per reco bin [events]")
    n_toys, n_truth = d.shape[0], response.n_truth
    f = _check_fakes(fakes, d, response)
    num_warmup = _check_positive_int(num_warmup, "num_warmup")
    num_samples = _check_positive_int(num_samples, "num_samples", minimum=2)
    a = _check_alpha(alpha, n_truth, n_toys)
    ref = _check_reference(reference, n_truth, n_toys)

    P_j, d_j, f_j = (jnp.asarray(x, dtype=jnp.float64) for x in (P, d, f))
    ref_j = _default_references(d_j, P_j, f_j) if ref is None else jnp.asarray(ref)
    summary = _fbu_toy_chains(
        jax.random.split(key, n_toys), d_j, P_j, f_j, jnp.asarray(a), ref_j, num_warmup, num_samples
    )
    n_div = np.asarray(summary.n_divergent)
    if np.any(n_div > 0):
        warnings.warn(
            f"fbu_toys: {int(np.sum(n_div > 0))} of {n_toys} toys had divergent transitions "
            f"({int(n_div.sum())} in total); their posterior summaries may be biased",
            RuntimeWarning,
            stacklevel=2,
        )
    if not (np.all(np.isfinite(np.asarray(summary.mean))) and np.all(np.isfinite(np.asarray(summary.covariance)))):
        raise FloatingPointError("fbu_toys: non-finite posterior summaries")
    return UnfoldingResult(
        summary.mean, summary.covariance, jnp.zeros((n_toys, n_truth, n_truth), dtype=jnp.float64), method="fbu"
    )
