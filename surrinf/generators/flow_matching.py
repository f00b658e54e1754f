"""Conditional flow matching: a diffusion-family shower surrogate with ODE / SDE samplers and an ODE density.

Probability path (conditional optimal transport / rectified flow; Lipman et al. 2023, Liu et al. 2023): noise
x0 ~ N(0, I) at t = 0, data x1 at t = 1, x_t = (1 - t) x0 + t x1, conditional velocity x1 - x0. A network
v(x, t, c) is regressed onto it (:func:`flow_matching_loss`); its minimiser is the marginal velocity
v(x, t) = E[x1 - x0 | x_t = x], whose ODE dx/dt = v carries N(0, I) at t = 0 to the data at t = 1.

Score of the path. From x_t = x0 + t (x1 - x0): E[x0 | x_t = x] = x - t v(x, t). Given x1, x_t ~ N(t x1,
(1 - t)^2 I) has score -(x - t x1) / (1 - t)^2 = -x0 / (1 - t), so the marginal score is

    score(x, t) = -E[x0 | x_t = x] / (1 - t) = (t v(x, t) - x) / (1 - t).

Samplers (all integrated with diffrax on a fixed grid of ``n_steps`` steps, :class:`diffrax.StepTo`):

- ODE (deterministic, :func:`integrate_ode`): dx/dt = v from t = 0 to 1 with "euler", "heun", "midpoint",
  "ralston" or "tsit5". This is :meth:`FlowMatchingSurrogate.decode`, so ``generate(noise, conditions)`` is
  deterministic in the noise and ``latent_dim() = V``.
- SDE (stochastic, :func:`integrate_sde`): for any diffusion g(t), dx = [v + g^2/2 score] dt + g dW has the
  marginals of the ODE (the extra drift and the diffusion cancel in the Fokker-Planck equation). We take
  g(t)^2 = noise_scale * (1 - t) (the choice w_t = sigma_t of Ma et al. 2024, SiT), which vanishes at the data
  end and turns the drift into v + noise_scale / 2 (t v - x): the 1 / (1 - t) singularity of the score
  cancels. Euler-Maruyama runs from t = 0 to 1 - eps (the score itself is singular at t = 1 and the network's
  errors are amplified there); a last deterministic step x + eps v(x, 1 - eps) = E[x1 | x_{1-eps}] (Tweedie)
  lands on t = 1. ``noise_scale = 0`` gives the Euler ODE sampler.
- Density (:func:`probability_flow_log_prob`): log p_1(x1) = log N(x0; 0, I) - int_0^1 div v(x_t, t) dt along
  the ODE trajectory integrated backwards from the data (t = 1) to the noise (t = 0) (instantaneous change
  of variables, Chen et al. 2018). The divergence is exact (one JVP per dimension, for small V) or Hutchinson's
  estimate with Rademacher probes fixed along the trajectory (FFJORD, Grathwohl et al. 2019), which is unbiased
  for the discretised exact value. The result is the density of the discretised ODE map, not of the model's
  exact flow: the error is the ODE discretisation (O(1/n_steps^order)) plus the mismatch between the learnt
  velocity and the true one.

Everything works in the standardised preprocessed space R^V of :class:`~surrinf.generators.base.ShowerPreprocessor`;
:class:`FlowMatchingSurrogate` adds the preprocessing so that samples are voxel energies [GeV] and densities
are in voxel space.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax
import numpy as np

from ..data.bijection import ShowerBijection
from .base import ConditionEncoder, ShowerPreprocessor, ShowerSurrogate, prepare_training_data
from .flow import FiLMMLP
from .serialization import register_model
from .trainer import TrainConfig, TrainResult, train

__all__ = [
    "DEFAULT_FM_CONFIG",
    "SOLVERS",
    "TIME_SAMPLINGS",
    "FlowMatchingSurrogate",
    "VelocityNet",
    "flow_matching_loss",
    "integrate_ode",
    "integrate_sde",
    "probability_flow_log_prob",
    "sample_times",
]

#: ODE solvers by name (fixed steps; "euler" is first order, "heun" / "midpoint" / "ralston" second, "tsit5" fifth).
SOLVERS: dict[str, type[diffrax.AbstractSolver]] = {
    "euler": diffrax.Euler,
    "heun": diffrax.Heun,
    "midpoint": diffrax.Midpoint,
    "ralston": diffrax.Ralston,
    "tsit5": diffrax.Tsit5,
}
#: Training-time distributions: "uniform" t ~ U(0, 1); "logit_normal" t = sigmoid(n), n ~ N(0, 1) (Esser et al.
#: 2024), which puts more weight on intermediate t.
TIME_SAMPLINGS = ("uniform", "logit_normal")

#: Default hyperparameters (overridden by ``fm_config``): velocity MLP widths, number of Fourier frequencies of
#: the time embedding, training time distribution, default sampler steps and ODE solver. For the default
#: geometry (V = 360): 0.34 M parameters, ~16 ms per training step of batch 256 on 2 (busy) CPU cores, i.e.
#: ~5 * 10^4 steps in 15 minutes; sampling costs 2 * n_steps = 64 network passes ("midpoint"), ~1 s per 1000
#: showers.
DEFAULT_FM_CONFIG: dict[str, Any] = {
    "hidden": [256, 256, 256],
    "n_freq": 4,
    "time_sampling": "uniform",
    "n_steps": 32,
    "solver": "midpoint",
}

#: ``exact_divergence=None`` uses the exact divergence up to this dimension (cost: V Jacobian-vector products).
EXACT_DIVERGENCE_MAX_DIM = 64
_LOG_2PI = math.log(2.0 * math.pi)


# --------------------------------------------------------------------------------------------- checks


def _check_int(value: Any, name: str, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def _as_float(value: Any) -> float:
    """float(value) for a real scalar, NaN otherwise (so that range checks fail)."""
    try:
        return float(value) if np.ndim(value) == 0 and not isinstance(value, (bool, str)) else math.nan
    except (TypeError, ValueError):
        return math.nan


def _check_solver(solver: Any) -> str:
    if not isinstance(solver, str) or solver not in SOLVERS:
        raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {solver!r}")
    return str(solver)


def _check_x_cond(velocity: Any, x: Any, cond: Any, name: str = "x") -> tuple[jax.Array, jax.Array]:
    """float32 x (N, D) and cond (N, C) with matching rows (and D, C of ``velocity`` when it states them)."""
    x = jnp.asarray(x, dtype=jnp.float32)
    cond = jnp.asarray(cond, dtype=jnp.float32)
    d, c = getattr(velocity, "dim", None), getattr(velocity, "cond_dim", None)
    if x.ndim != 2 or (d is not None and x.shape[1] != d):
        raise ValueError(f"{name} must have shape (N, D={d if d is not None else 'D'}), got {x.shape}")
    if cond.ndim != 2 or cond.shape[0] != x.shape[0] or (c is not None and cond.shape[1] != c):
        raise ValueError(f"cond must have shape (N={x.shape[0]}, C={c if c is not None else 'C'}), got {cond.shape}")
    return x, cond


# --------------------------------------------------------------------------------------------- network


class VelocityNet(eqx.Module):
    """Velocity field v(x, t, c): x (D,), t () in [0, 1], c (C,) -> (D,).

    A :class:`~surrinf.generators.flow.FiLMMLP` on [x, e(t)] whose hidden layers are FiLM-modulated by
    [c, e(t)], with the time embedding e(t) = [t, sin(pi 2^j t), cos(pi 2^j t)] for j < ``n_freq``. The output
    layer starts small, so a fresh network has v ~ 0."""

    mlp: FiLMMLP
    dim: int = eqx.field(static=True)
    cond_dim: int = eqx.field(static=True)
    hidden: tuple[int, ...] = eqx.field(static=True)
    n_freq: int = eqx.field(static=True)

    def __init__(self, key: jax.Array, dim: int, cond_dim: int, hidden: Any = (256, 256, 256), n_freq: int = 4) -> None:
        hidden = tuple(hidden)
        if not hidden or any(isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1 for h in hidden):
            raise ValueError(f"hidden must be a non-empty list of positive integers, got {list(hidden)!r}")
        self.dim = _check_int(dim, "dim")
        self.cond_dim = _check_int(cond_dim, "cond_dim", 0)
        self.n_freq = _check_int(n_freq, "n_freq", 0)
        self.hidden = tuple(int(h) for h in hidden)
        t_dim = 1 + 2 * self.n_freq
        self.mlp = FiLMMLP(key, self.dim + t_dim, self.dim, self.cond_dim + t_dim, self.hidden)

    def time_embedding(self, t: jax.Array) -> jax.Array:
        """t () -> (1 + 2 n_freq,) features."""
        t = jnp.asarray(t, dtype=jnp.float32)
        arg = t * (math.pi * 2.0 ** jnp.arange(self.n_freq, dtype=jnp.float32))
        return jnp.concatenate([t[None], jnp.sin(arg), jnp.cos(arg)])

    def __call__(self, x: jax.Array, t: jax.Array, c: jax.Array) -> jax.Array:
        """x (D,), t (), c (C,) -> velocity (D,)."""
        e = self.time_embedding(t)
        return self.mlp(jnp.concatenate([x, e]), jnp.concatenate([c, e]))

    def config(self) -> dict[str, Any]:
        """JSON-safe hyperparameters: ``VelocityNet(key, **config)`` rebuilds the architecture."""
        return {"dim": self.dim, "cond_dim": self.cond_dim, "hidden": list(self.hidden), "n_freq": self.n_freq}


# --------------------------------------------------------------------------------------------- loss


def sample_times(key: jax.Array, n: int, time_sampling: str = "uniform") -> jax.Array:
    """(n,) float32 training times in [0, 1] from ``time_sampling`` (see :data:`TIME_SAMPLINGS`)."""
    if time_sampling == "uniform":
        return jax.random.uniform(key, (n,), dtype=jnp.float32)
    if time_sampling == "logit_normal":
        return jax.nn.sigmoid(jax.random.normal(key, (n,), dtype=jnp.float32))
    raise ValueError(f"time_sampling must be one of {list(TIME_SAMPLINGS)}, got {time_sampling!r}")


def flow_matching_loss(
    model: Any, batch: dict[str, jax.Array], key: jax.Array, *, time_sampling: str = "uniform"
) -> jax.Array:
    """Conditional flow-matching loss of the velocity field ``model(x (D,), t (), c (C,)) -> (D,)`` on
    batch {"x": data x1 (B, D), "cond": (B, C)}: mean over rows of the per-row mean squared error
    mean_d (v(x_t, t, c) - (x1 - x0))^2 with x0 ~ N(0, I), t ~ ``time_sampling``, x_t = (1 - t) x0 + t x1."""
    x1, cond = batch["x"], batch["cond"]
    k_t, k_0 = jax.random.split(key)
    t = sample_times(k_t, x1.shape[0], time_sampling)
    x0 = jax.random.normal(k_0, x1.shape, dtype=x1.dtype)
    xt = (1.0 - t)[:, None] * x0 + t[:, None] * x1
    v = jax.vmap(model)(xt, t, cond)
    return jnp.mean(jnp.mean((v - (x1 - x0)) ** 2, axis=1))


# --------------------------------------------------------------------------------------------- samplers


def _batched(velocity: Any, cond: jax.Array):
    """(t, x (N, D)) -> v (N, D) for a per-sample velocity field and fixed conditions (N, C)."""
    return lambda t, x: jax.vmap(velocity, in_axes=(0, None, 0))(x, t, cond)


@eqx.filter_jit
def _ode_solve(velocity: Any, x0: jax.Array, cond: jax.Array, n_steps: int, solver: str) -> jax.Array:
    ts = jnp.linspace(0.0, 1.0, n_steps + 1, dtype=jnp.float32)
    vel = _batched(velocity, cond)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, args: vel(t, y)),
        SOLVERS[solver](),
        t0=ts[0],
        t1=ts[-1],
        dt0=None,
        y0=x0,
        stepsize_controller=diffrax.StepTo(ts),
        saveat=diffrax.SaveAt(t1=True),
        max_steps=n_steps,
    )
    return sol.ys[0]


def integrate_ode(velocity: Any, x0: Any, cond: Any, *, n_steps: int = 32, solver: str = "midpoint") -> jax.Array:
    """Deterministic sampler: integrate dx/dt = velocity(x, t, c) from noise x0 (N, D) at t = 0 to t = 1 on
    ``n_steps`` equal steps of ``solver``; cond (N, C). Returns x1 (N, D) float32."""
    x0, cond = _check_x_cond(velocity, x0, cond, "x0")
    return _ode_solve(velocity, x0, cond, _check_int(n_steps, "n_steps"), _check_solver(solver))


@eqx.filter_jit
def _sde_solve(
    velocity: Any, key: jax.Array, x0: jax.Array, cond: jax.Array, n_steps: int, noise_scale: Any, eps: Any
) -> jax.Array:
    n, d = x0.shape
    t_end = 1.0 - jnp.asarray(eps, jnp.float32)
    ts = jnp.linspace(0.0, 1.0, n_steps + 1, dtype=jnp.float32) * t_end
    vel = _batched(velocity, cond)
    w = jnp.asarray(noise_scale, jnp.float32)

    def drift(t, y, args):
        x = y.reshape(n, d)
        v = vel(t, x)
        # v + g^2 / 2 * score with g^2 = w (1 - t) and score = (t v - x) / (1 - t)
        return (v + 0.5 * w * (t * v - x)).reshape(-1)

    def diffusion(t, y, args):
        return lineax.DiagonalLinearOperator(jnp.full(y.shape, jnp.sqrt(w * (1.0 - t)), y.dtype))

    brownian = diffrax.UnsafeBrownianPath(shape=(n * d,), key=key)  # deterministic in key on a fixed grid
    sol = diffrax.diffeqsolve(
        diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, brownian)),
        diffrax.Euler(),
        t0=ts[0],
        t1=ts[-1],
        dt0=None,
        y0=x0.reshape(-1),
        stepsize_controller=diffrax.StepTo(ts),
        saveat=diffrax.SaveAt(t1=True),
        max_steps=n_steps,
        adjoint=diffrax.ForwardMode(),  # sampling only; the unsafe path cannot be checkpointed for reverse mode
    )
    x = sol.ys[0].reshape(n, d)
    return x + (1.0 - t_end) * vel(t_end, x)  # E[x1 | x_t] = x_t + (1 - t) v(x_t, t)


def integrate_sde(
    velocity: Any,
    key: jax.Array,
    x0: Any,
    cond: Any,
    *,
    n_steps: int = 32,
    noise_scale: float = 1.0,
    eps: float = 1e-3,
) -> jax.Array:
    """Stochastic sampler with the marginals of the ODE: Euler-Maruyama for dx = [v + noise_scale / 2 (t v - x)] dt
    + sqrt(noise_scale (1 - t)) dW from x0 (N, D) at t = 0 to t = 1 - eps on ``n_steps`` equal steps (Brownian
    increments from ``key``), then the deterministic step x + eps v to t = 1 (see the module docstring)."""
    x0, cond = _check_x_cond(velocity, x0, cond, "x0")
    n_steps = _check_int(n_steps, "n_steps")
    if not (_as_float(noise_scale) >= 0 and math.isfinite(_as_float(noise_scale))):
        raise ValueError(f"noise_scale must be a finite number >= 0, got {noise_scale!r}")
    if not (0 < _as_float(eps) < 1):
        raise ValueError(f"eps must be a number in (0, 1), got {eps!r}")
    # noise_scale and eps are traced: changing them does not recompile
    return _sde_solve(velocity, key, x0, cond, n_steps, jnp.float32(noise_scale), jnp.float32(eps))


# --------------------------------------------------------------------------------------------- density


@eqx.filter_jit
def _pf_log_prob(
    velocity: Any, x1: jax.Array, cond: jax.Array, probes: jax.Array, n_steps: int, solver: str
) -> jax.Array:
    """probes: (P, D) shared by every row (the exact divergence uses the unit vectors, weight 1) or (N, P, D)
    Rademacher vectors per row (Hutchinson, weight 1 / P)."""
    shared = probes.ndim == 2
    weight = 1.0 if shared else 1.0 / probes.shape[1]

    def v_div(x, t, c, e):
        v, jvp = jax.linearize(lambda xx: velocity(xx, t, c), x)
        return v, weight * jnp.sum(e * jax.vmap(jvp)(e))

    def vf(t, y, args):
        return jax.vmap(v_div, in_axes=(0, None, 0, None if shared else 0))(y[0], t, cond, probes)

    ts = jnp.linspace(1.0, 0.0, n_steps + 1, dtype=jnp.float32)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vf),
        SOLVERS[solver](),
        t0=ts[0],
        t1=ts[-1],
        dt0=None,
        y0=(x1, jnp.zeros(x1.shape[0], jnp.float32)),
        stepsize_controller=diffrax.StepTo(ts),
        saveat=diffrax.SaveAt(t1=True),
        max_steps=n_steps,
    )
    x0, int_div = sol.ys[0][0], sol.ys[1][0]  # int_div = int_1^0 div dt = -int_0^1 div dt
    return -0.5 * jnp.sum(x0 * x0, axis=1) - 0.5 * x0.shape[1] * _LOG_2PI + int_div


def _use_exact_divergence(d: int, exact_divergence: bool | None, key: jax.Array | None) -> bool:
    """Resolve ``exact_divergence`` for dimension ``d``; Hutchinson needs a key."""
    exact = d <= EXACT_DIVERGENCE_MAX_DIM if exact_divergence is None else bool(exact_divergence)
    if not exact and key is None:
        raise ValueError(
            f"key is required for Hutchinson's divergence estimate (D={d} > {EXACT_DIVERGENCE_MAX_DIM} or "
            "exact_divergence=False); pass key=jax.random.key(...) or exact_divergence=True"
        )
    return exact


def probability_flow_log_prob(
    velocity: Any,
    x1: Any,
    cond: Any,
    *,
    key: jax.Array | None = None,
    n_steps: int = 32,
    solver: str = "midpoint",
    exact_divergence: bool | None = None,
    n_probes: int = 1,
) -> jax.Array:
    """log density (N,) of x1 (N, D) under the probability-flow ODE of ``velocity`` from N(0, I), cond (N, C).

    Integrates (x, int div v) from t = 1 to t = 0 on ``n_steps`` steps of ``solver``. ``exact_divergence``:
    True: trace of the Jacobian (D JVPs per evaluation); False: Hutchinson with ``n_probes`` Rademacher probes
    per row drawn from ``key`` (unbiased for the exact result of the same discretisation); None: exact for
    D <= :data:`EXACT_DIVERGENCE_MAX_DIM`. Approximate: exact only up to the ODE discretisation error."""
    x1, cond = _check_x_cond(velocity, x1, cond, "x1")
    n_steps = _check_int(n_steps, "n_steps")
    solver = _check_solver(solver)
    n, d = x1.shape
    if _use_exact_divergence(d, exact_divergence, key):
        probes = jnp.eye(d, dtype=jnp.float32)
    else:
        n_probes = _check_int(n_probes, "n_probes")
        probes = jax.random.rademacher(key, (n, n_probes, d), dtype=jnp.float32)
    return _pf_log_prob(velocity, x1, cond, probes, n_steps, solver)


# --------------------------------------------------------------------------------------------- surrogate


def _check_fm_config(config: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(config) - set(DEFAULT_FM_CONFIG))
    if unknown:
        raise ValueError(f"unknown fm_config keys {unknown}; known: {sorted(DEFAULT_FM_CONFIG)}")
    if config["time_sampling"] not in TIME_SAMPLINGS:
        raise ValueError(f"fm_config['time_sampling'] must be one of {list(TIME_SAMPLINGS)}")
    _check_int(config["n_steps"], "fm_config['n_steps']")
    _check_solver(config["solver"])
    return config


@register_model("flow_matching_surrogate")
class FlowMatchingSurrogate(ShowerSurrogate):
    """A trained flow-matching velocity field on preprocessed showers.

    ``generate`` / ``sample`` integrate the ODE from noise (``n_steps`` steps of ``solver`` by default);
    ``sample(..., sampler="sde")`` uses the SDE with the same marginals; ``log_prob`` is the probability-flow
    density in voxel space (approximate, see :meth:`log_prob`)."""

    velocity: VelocityNet
    preprocessor: ShowerPreprocessor
    encoder: ConditionEncoder
    n_steps: int = eqx.field(static=True, default=32)
    solver: str = eqx.field(static=True, default="midpoint")

    def __check_init__(self) -> None:
        _check_int(self.n_steps, "n_steps")
        _check_solver(self.solver)

    def latent_dim(self) -> int:
        return self.preprocessor.dim

    def decode(self, noise: jax.Array, cond: jax.Array) -> jax.Array:
        """noise (N, V), encoded conditions (N, C) -> standardised showers (N, V) by the ODE sampler."""
        return integrate_ode(self.velocity, noise, cond, n_steps=self.n_steps, solver=self.solver)

    def sample(
        self,
        key: jax.Array,
        conditions: Any,
        *,
        sampler: str = "ode",
        n_steps: int | None = None,
        solver: str | None = None,
        noise_scale: float = 1.0,
        eps: float = 1e-3,
    ) -> jax.Array:
        """Voxel energies (N, V) [GeV, >= 0] for conditions (N,) or (N, k) (E [GeV], theta...).

        ``sampler="ode"``: ``generate(normal(key, (N, V)), conditions)`` with ``n_steps`` / ``solver``
        overriding the model's defaults. ``sampler="sde"``: Euler-Maruyama on ``n_steps`` steps with diffusion
        g(t)^2 = ``noise_scale`` (1 - t), stopped at 1 - ``eps`` (see :func:`integrate_sde`)."""
        if sampler not in ("ode", "sde"):
            raise ValueError(f"sampler must be 'ode' or 'sde', got {sampler!r}")
        c = self.encoder.check(conditions)
        n_steps = self.n_steps if n_steps is None else n_steps
        if sampler == "ode":
            noise = jax.random.normal(key, (c.shape[0], self.latent_dim()), dtype=jnp.float32)
            if n_steps == self.n_steps and solver in (None, self.solver):
                return self.generate(noise, c)  # the compiled deterministic sampler (same bits as generate)
            z = integrate_ode(self.velocity, noise, self.encoder(c), n_steps=n_steps, solver=solver or self.solver)
        else:
            if solver is not None:
                raise ValueError("solver applies to sampler='ode' only (the SDE uses Euler-Maruyama)")
            k_noise, k_bm = jax.random.split(key)
            noise = jax.random.normal(k_noise, (c.shape[0], self.latent_dim()), dtype=jnp.float32)
            z = integrate_sde(
                self.velocity, k_bm, noise, self.encoder(c), n_steps=n_steps, noise_scale=noise_scale, eps=eps
            )
        return self.preprocessor.inverse(z, c[:, 0])

    def log_prob(
        self,
        showers: Any,
        conditions: Any,
        *,
        key: jax.Array | None = None,
        n_steps: int | None = None,
        solver: str | None = None,
        exact_divergence: bool | None = None,
        n_probes: int = 1,
    ) -> jax.Array:
        """Log density (N,) of voxel showers (N, V) [GeV, >= 0] given the conditions (units: ln GeV^-V).

        Probability-flow ODE density of the standardised showers (:func:`probability_flow_log_prob`; exact
        divergence for V <= :data:`EXACT_DIVERGENCE_MAX_DIM`, else Hutchinson with ``key``) plus the
        log-Jacobian of the preprocessing. Approximate: it is the density of the ``n_steps``-step discretised
        ODE map (discretisation error O(n_steps^-order)), and a Hutchinson estimate is noisy (unbiased)."""
        c = self.encoder.check(conditions)
        _use_exact_divergence(self.latent_dim(), exact_divergence, key)  # fail before the preprocessing
        zs, log_jac = self.preprocessor.forward(showers, c[:, 0])
        lp = probability_flow_log_prob(
            self.velocity,
            zs,
            self.encoder(c),
            key=key,
            n_steps=self.n_steps if n_steps is None else n_steps,
            solver=solver or self.solver,
            exact_divergence=exact_divergence,
            n_probes=n_probes,
        )
        return lp + log_jac

    def config(self) -> dict:
        return {
            "velocity": self.velocity.config(),
            "n_steps": self.n_steps,
            "solver": self.solver,
            "bijection": self.preprocessor.bijection.to_dict(),
            "n_theta": self.n_theta,
        }

    @classmethod
    def from_config(cls, config: dict, key: jax.Array) -> FlowMatchingSurrogate:
        """Skeleton for :func:`surrinf.generators.load` (every array is overwritten by the saved leaves)."""
        k = int(config["n_theta"])
        return cls(
            VelocityNet(key, **config["velocity"]),
            ShowerPreprocessor.skeleton(config["bijection"]),
            ConditionEncoder(np.zeros(k), np.ones(k)),
            n_steps=int(config["n_steps"]),
            solver=str(config["solver"]),
        )

    @classmethod
    def fit(
        cls,
        key: jax.Array,
        showers_gev: np.ndarray,
        energies_gev: np.ndarray,
        bijection: ShowerBijection,
        *,
        theta: np.ndarray | None = None,
        fm_config: dict | None = None,
        train_config: TrainConfig | None = None,
        out_dir: str | Path | None = None,
        progress: bool = False,
        resume: bool = False,
    ) -> tuple[FlowMatchingSurrogate, TrainResult]:
        """Preprocess showers (N, V) [GeV, >= 0] with incident energies (N,) [GeV] (and theta (N, k)), train
        the velocity field with :func:`flow_matching_loss` (``fm_config`` overrides :data:`DEFAULT_FM_CONFIG`)
        and wrap it. ``resume=True`` continues an interrupted run from its
        checkpoint in ``out_dir``."""
        cfg = _check_fm_config({**DEFAULT_FM_CONFIG, **(fm_config or {})})
        k_init, k_train, k_data = jax.random.split(key, 3)
        pre, enc, data = prepare_training_data(bijection, showers_gev, energies_gev, theta, key=k_data)
        net = VelocityNet(k_init, pre.dim, enc.dim, cfg["hidden"], cfg["n_freq"])
        loss = functools.partial(flow_matching_loss, time_sampling=cfg["time_sampling"])
        data = {"x": data["x"], "cond": data["cond"]}
        result = train(
            net, loss, data, k_train, train_config or TrainConfig(), out_dir=out_dir, progress=progress, resume=resume
        )
        return cls(result.model, pre, enc, n_steps=int(cfg["n_steps"]), solver=cfg["solver"]), result
