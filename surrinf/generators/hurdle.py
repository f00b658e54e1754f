"""HurdleSurrogate: a conditional VAE with a spike-and-slab (hurdle) likelihood per cell, for showers with pile-up.

Pile-up changes *which* cells are hit as much as *how much* energy they hold, so the per-cell likelihood separates
the two (a hurdle model): for cell i with decoder outputs (logit_i, m_i, s_i) at latent h and conditions c,

    p(e_i | h, c) = (1 - pi_i) delta(e_i)                                    if e_i <= t  (not hit)
                  = pi_i LogNormal(e_i; m_i, s_i) / S(t; m_i, s_i)           if e_i > t   (hit)

with pi_i = sigmoid(logit_i), t the threshold ``threshold_gev`` (a config value) and S(t) = 1 - Phi((ln t - m)/s)
the probability of the log-normal above t: the slab is the log-normal truncated to (t, inf), so "hit" means
exactly e > t in the data and in samples (at t = 0 it is the plain log-normal). Cells at or below the threshold,
negative noise included, are set to 0 (not hit). The cells are independent given (h, c); correlations between
cells, shower to shower, come from the latent h.

- encoder q(h | x, c) = N(mu, diag exp(logvar)) (:class:`~surrinf.generators.flow.FiLMMLP`), input
  x = log1p(e / ``input_scale_gev``) of the thresholded energies;
- decoder (h, c) -> (logit, m, ln s) per cell: a FiLMMLP, plus a linear map of the encoded conditions (zero at
  initialisation: the smooth trends in ln E and mu, such as the rise of the hit probability with mu, are learnt
  directly instead of through the FiLM modulation of the hidden layers only), plus per-cell offsets (initialised
  from the data: the logit of each cell's hit fraction, the mean and log std of ln e over its hits), so training
  starts at the factorised marginal model;
- conditions [E [GeV], mu] (columns of :class:`~surrinf.sim.pileup.PileupResponse`), encoded as the scaled ln E
  of :func:`~surrinf.generators.conditioning.encode_conditions`, mu / ``mu_scale`` and ln(1 + mu) /
  ln(1 + ``mu_scale``) (FiLM conditioning). The saturating second mu feature helps: a cell's hit probability
  rises fast at small mu and saturates (an empty cell stays empty with probability ~exp(-mu p_cell)).

Training minimises the negative ELBO per event, -E_q[sum_i log p(e_i | h, c)] + beta KL(q || N(0, I)), with the
exact hurdle log-likelihood (:func:`hurdle_log_likelihood`: Bernoulli hit / not hit plus the truncated
log-normal density of the hit cells). :meth:`HurdleSurrogate.log_prob` is the ELBO (beta = 1), a stochastic
*lower bound* on log p(e | c) with respect to the mixed measure (a point mass at 0 plus Lebesgue measure in
GeV above t per cell): each empty cell contributes a log probability, each hit cell a log density [ln GeV^-1].

Why not a :class:`~surrinf.generators.base.ShowerSurrogate`: that base maps standard-normal noise through a
bijective preprocessing (:class:`~surrinf.generators.base.ShowerPreprocessor`), which has no room for the
point mass at zero that this model represents exactly, and its sampler is a deterministic function of Gaussian
noise (for ONNX export), while a hurdle sample needs Bernoulli draws. The model implements the response-model
protocol (``sample(key, conditions)``) and save/load (:func:`surrinf.generators.save` / ``load``, type
``"hurdle"``) directly.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr, ndtr, ndtri

from .._checks import check_positive_int, check_widths
from .conditioning import LN_E_CENTRE, LN_E_HALF_RANGE
from .flow import FiLMMLP
from .serialization import register_model
from .trainer import TrainConfig, TrainResult, train

__all__ = ["DEFAULT_HURDLE_CONFIG", "HurdleSurrogate", "hurdle_log_likelihood", "hurdle_loss"]

#: Default hyperparameters (overridden by ``hurdle_config`` in :meth:`HurdleSurrogate.fit`). ``threshold_gev``:
#: cells at or below it are not hit [GeV]; ``input_scale_gev`` / ``mu_scale``: None = from the training data
#: (median hit energy, largest mu).
DEFAULT_HURDLE_CONFIG: dict[str, Any] = {
    "latent": 8,
    "hidden": [64, 64],
    "beta": 1.0,
    "threshold_gev": 1e-3,
    "input_scale_gev": None,
    "mu_scale": None,
}

#: Range of ln s (log-normal width of ln e): s in [0.018, 7.4].
LOG_S_MIN, LOG_S_MAX = -4.0, 2.0
_LOGVAR_MIN, _LOGVAR_MAX = -15.0, 10.0
_LOG_2PI = math.log(2.0 * math.pi)
#: Width of the condition encoding (scaled ln E, mu / mu_scale, ln(1 + mu) / ln(1 + mu_scale)).
_COND_DIM = 3


def _number(v: Any, name: str, lo: float, strict: bool) -> float:
    ok = not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating))
    if not (ok and math.isfinite(v) and (v > lo if strict else v >= lo)):
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {lo}, got {v!r}")
    return float(v)


def _check_hyper(latent, hidden, beta, threshold_gev, input_scale_gev, mu_scale):
    latent = check_positive_int(latent, "latent")
    hid = check_widths(hidden, "hidden")
    return (
        int(latent),
        hid,
        _number(beta, "beta", 0.0, False),
        _number(threshold_gev, "threshold_gev [GeV]", 0.0, False),
        _number(input_scale_gev, "input_scale_gev [GeV]", 0.0, True),
        _number(mu_scale, "mu_scale", 0.0, True),
    )


@partial(jax.jit, static_argnames="threshold_gev")
def hurdle_log_likelihood(
    energies_gev: jax.Array, logits: jax.Array, m: jax.Array, log_s: jax.Array, threshold_gev: float
) -> jax.Array:
    """Hurdle log-likelihood summed over the last axis: energies (..., V) [GeV] and per-cell hit logits, means
    m and log widths ln s of ln(e / GeV) (..., V) -> (...,).

    Cells with e <= threshold_gev contribute log(1 - pi), hit cells log pi + log LogNormal(e; m, s) - log S(t)
    with S(t) = P(LogNormal > t) (no truncation term at t = 0)."""
    e = jnp.asarray(energies_gev)
    hit = e > threshold_gev
    ln_e = jnp.log(jnp.where(hit, e, 1.0))
    r = (ln_e - m) * jnp.exp(-log_s)
    log_slab = -0.5 * r * r - log_s - 0.5 * _LOG_2PI - ln_e
    if threshold_gev > 0:
        log_slab = log_slab - log_ndtr((m - math.log(threshold_gev)) * jnp.exp(-log_s))
    cell = jnp.where(hit, jax.nn.log_sigmoid(logits) + log_slab, jax.nn.log_sigmoid(-logits))
    return jnp.sum(cell, axis=-1)


def _check_conditions(conditions: Any) -> np.ndarray:
    c = np.asarray(conditions, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 2:
        raise ValueError(f"conditions must have shape (N, 2) with columns [E [GeV], mu], got {c.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError("conditions must be finite")
    if np.any(c[:, 0] <= 0):
        raise ValueError("conditions[:, 0] (incident energy E [GeV]) must be > 0")
    if np.any(c[:, 1] < 0):
        raise ValueError("conditions[:, 1] (pile-up mean mu) must be >= 0")
    return c.astype(np.float32)


def _check_showers(showers: Any, n: int, n_voxels: int | None) -> np.ndarray:
    s = np.asarray(showers, dtype=np.float32)
    if s.ndim != 2 or s.shape[0] != n or (n_voxels is not None and s.shape[1] != n_voxels):
        v = "V" if n_voxels is None else n_voxels
        raise ValueError(f"showers must have shape (N, {v}) [GeV] with N = {n} rows like conditions, got {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("showers must be finite [GeV]")
    return s


def _kl(mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """Elementwise KL(N(mu, exp(logvar)) || N(0, 1)) [nats]."""
    return 0.5 * (mu * mu + jnp.exp(logvar) - 1.0 - logvar)


@register_model("hurdle")
class HurdleSurrogate(eqx.Module):
    """Conditional VAE with a hurdle likelihood per cell; see the module docstring. Conditions (N, 2) [E GeV, mu].

    ``inference_net``: (x (V,), c (3,)) -> (mu, logvar) (2 latent,); ``decoder_net``: (h (latent,), c) -> (3 V,)
    = (logit, m, ln s) residuals, added to ``cond_linear`` (c -> (3 V,), linear, zero at initialisation) and to the
    per-cell offsets ``logit0``, ``m0``, ``log_s0`` (V,)."""

    inference_net: FiLMMLP
    decoder_net: FiLMMLP
    cond_linear: eqx.nn.Linear
    logit0: jax.Array
    m0: jax.Array
    log_s0: jax.Array
    n_voxels: int = eqx.field(static=True)
    latent: int = eqx.field(static=True)
    hidden: tuple[int, ...] = eqx.field(static=True)
    beta: float = eqx.field(static=True)
    threshold_gev: float = eqx.field(static=True)
    input_scale_gev: float = eqx.field(static=True)
    mu_scale: float = eqx.field(static=True)

    def __init__(
        self,
        key: jax.Array,
        n_voxels: int,
        *,
        latent: int = DEFAULT_HURDLE_CONFIG["latent"],
        hidden: Any = tuple(DEFAULT_HURDLE_CONFIG["hidden"]),
        beta: float = DEFAULT_HURDLE_CONFIG["beta"],
        threshold_gev: float = DEFAULT_HURDLE_CONFIG["threshold_gev"],
        input_scale_gev: float = 1e-2,
        mu_scale: float = 1.0,
        logit0: Any = None,
        m0: Any = None,
        log_s0: Any = None,
    ):
        """Fresh networks (from ``key``) for ``n_voxels`` cells; offsets (V,) default to 0."""
        if isinstance(n_voxels, bool) or not isinstance(n_voxels, (int, np.integer)) or n_voxels < 1:
            raise ValueError(f"n_voxels must be an integer >= 1, got {n_voxels!r}")
        latent, hidden, beta, threshold_gev, input_scale_gev, mu_scale = _check_hyper(
            latent, hidden, beta, threshold_gev, input_scale_gev, mu_scale
        )
        v = int(n_voxels)
        k_q, k_p = jax.random.split(key)
        self.inference_net = FiLMMLP(k_q, v, 2 * latent, _COND_DIM, hidden)
        self.decoder_net = FiLMMLP(k_p, latent, 3 * v, _COND_DIM, hidden[::-1])
        lin = eqx.nn.Linear(_COND_DIM, 3 * v, key=k_p)
        self.cond_linear = eqx.tree_at(
            lambda m: (m.weight, m.bias), lin, (jnp.zeros_like(lin.weight), jnp.zeros_like(lin.bias))
        )

        def offset(a: Any, name: str) -> jax.Array:
            out = jnp.zeros((v,), jnp.float32) if a is None else jnp.asarray(a, dtype=jnp.float32)
            if out.shape != (v,):
                raise ValueError(f"{name} must have shape ({v},), got {out.shape}")
            return out

        self.logit0, self.m0, self.log_s0 = offset(logit0, "logit0"), offset(m0, "m0"), offset(log_s0, "log_s0")
        self.n_voxels, self.latent, self.hidden, self.beta = v, latent, hidden, beta
        self.threshold_gev, self.input_scale_gev, self.mu_scale = threshold_gev, input_scale_gev, mu_scale

    # ----------------------------------------------------------------------------------- inputs

    def check_conditions(self, conditions: Any) -> np.ndarray:
        """conditions (N, 2) [E GeV > 0, mu >= 0] as float32 numpy; ValueError naming the problem otherwise."""
        return _check_conditions(conditions)

    def encode(self, conditions: jax.Array) -> jax.Array:
        """Checked conditions (N, 2) -> encoding (N, 3): scaled ln E (as every surrogate), mu / mu_scale and
        ln(1 + mu) / ln(1 + mu_scale)."""
        c = jnp.asarray(conditions, dtype=jnp.float32)
        ln_e = (jnp.log(c[:, :1]) - LN_E_CENTRE) / LN_E_HALF_RANGE
        mu = c[:, 1:2]
        return jnp.concatenate([ln_e, mu / self.mu_scale, jnp.log1p(mu) / math.log1p(self.mu_scale)], axis=1)

    def thresholded(self, showers_gev: jax.Array) -> jax.Array:
        """Cell energies (N, V) [GeV] with cells at or below ``threshold_gev`` set to 0."""
        s = jnp.asarray(showers_gev, dtype=jnp.float32)
        return jnp.where(s > self.threshold_gev, s, 0.0)

    def _check_showers(self, showers: Any, n: int) -> np.ndarray:
        return _check_showers(showers, n, self.n_voxels)

    # ----------------------------------------------------------------------------------- networks

    def posterior(self, energies_gev: jax.Array, cond: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Thresholded energies (N, V) [GeV], encoded conditions (N, 3) -> q(h | x, c) mean, logvar (N, latent)."""
        x = jnp.log1p(energies_gev / self.input_scale_gev)
        out = jax.vmap(self.inference_net)(x, cond)
        return out[:, : self.latent], jnp.clip(out[:, self.latent :], _LOGVAR_MIN, _LOGVAR_MAX)

    def decoder_params(self, h: jax.Array, cond: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Latents (N, latent), encoded conditions (N, 3) -> hit logits, m, ln s (N, V) each (ln s clipped)."""
        out = jax.vmap(self.decoder_net)(h, cond) + jax.vmap(self.cond_linear)(cond)
        v = self.n_voxels
        logits = out[:, :v] + self.logit0
        m = out[:, v : 2 * v] + self.m0
        log_s = jnp.clip(out[:, 2 * v :] + self.log_s0, LOG_S_MIN, LOG_S_MAX)
        return logits, m, log_s

    # ----------------------------------------------------------------------------------- sampling, densities

    def sample(self, key: jax.Array, conditions: Any) -> jax.Array:
        """Cell energies (N, V) [GeV, 0 or > threshold] for conditions (N, 2) [E GeV, mu]: h ~ N(0, I), hits ~
        Bernoulli(pi), ln e of the hit cells from the normal N(m, s^2) truncated to ln e > ln t (exact inversion
        in the upper tail)."""
        c = self.check_conditions(conditions)
        return _sample(self, key, jnp.asarray(c))

    def hit_probability(self, key: jax.Array, conditions: Any) -> jax.Array:
        """Per-cell hit probabilities pi (N, V) at one prior draw of h per row (conditions (N, 2))."""
        c = jnp.asarray(self.check_conditions(conditions))
        cond = self.encode(c)
        h = jax.random.normal(key, (c.shape[0], self.latent))
        return jax.nn.sigmoid(self.decoder_params(h, cond)[0])

    def log_prob(self, showers: Any, conditions: Any, *, key: jax.Array | None = None) -> jax.Array:
        """ELBO (N,): a stochastic lower bound on log p(showers | conditions) (one posterior sample, analytic KL,
        beta = 1) with respect to the mixed measure of the module docstring; showers (N, V) [GeV], conditions
        (N, 2). ``key`` (required) draws the latent sample."""
        if key is None:
            raise ValueError("log_prob needs key=jax.random.key(...): the bound is estimated with a sampled latent")
        c = self.check_conditions(conditions)
        s = self._check_showers(showers, c.shape[0])
        return _elbo(self, jnp.asarray(s), jnp.asarray(c), key)

    # ----------------------------------------------------------------------------------- save / load

    def config(self) -> dict:
        return {
            "n_voxels": self.n_voxels,
            "latent": self.latent,
            "hidden": list(self.hidden),
            "beta": self.beta,
            "threshold_gev": self.threshold_gev,
            "input_scale_gev": self.input_scale_gev,
            "mu_scale": self.mu_scale,
        }

    @classmethod
    def from_config(cls, config: dict, key: jax.Array) -> HurdleSurrogate:
        """Skeleton for :func:`surrinf.generators.load` (every array is overwritten by the saved leaves)."""
        cfg = dict(config)
        return cls(key, cfg.pop("n_voxels"), **cfg)

    @classmethod
    def fit(
        cls,
        key: jax.Array,
        showers_gev: Any,
        conditions: Any,
        *,
        hurdle_config: dict | None = None,
        train_config: TrainConfig | None = None,
        out_dir: str | Path | None = None,
        progress: bool = False,
        resume: bool = False,
    ) -> tuple[HurdleSurrogate, TrainResult]:
        """Train on showers (N, V) [GeV] (pile-up included) with conditions (N, 2) [E GeV, mu]; ``hurdle_config``
        overrides :data:`DEFAULT_HURDLE_CONFIG`. ``key`` is split into (network init, trainer). The per-cell
        offsets start at the training marginals (hit fraction clipped to [1e-3, 1 - 1e-3]; mean and log std of
        ln e over the hits, 0 and 0 for a cell with fewer than 2 hits); everything is trained with
        :func:`hurdle_loss` by :func:`~surrinf.generators.trainer.train`."""
        cfg = {**DEFAULT_HURDLE_CONFIG, **(hurdle_config or {})}
        unknown = sorted(set(cfg) - set(DEFAULT_HURDLE_CONFIG))
        if unknown:
            raise ValueError(f"unknown hurdle_config keys {unknown}; known: {sorted(DEFAULT_HURDLE_CONFIG)}")
        c = _check_conditions(conditions)
        s = _check_showers(showers_gev, c.shape[0], None)
        t = _number(cfg["threshold_gev"], "threshold_gev [GeV]", 0.0, False)
        e = np.where(s > t, s, 0.0).astype(np.float32)
        hit = e > 0
        if not hit.any():
            raise ValueError(f"no cell of showers_gev is above threshold_gev = {t} GeV: nothing to learn")
        if cfg["input_scale_gev"] is None:
            cfg["input_scale_gev"] = float(np.median(e[hit]))
        if cfg["mu_scale"] is None:
            cfg["mu_scale"] = float(c[:, 1].max()) if c[:, 1].max() > 0 else 1.0
        frac = np.clip(hit.mean(axis=0), 1e-3, 1.0 - 1e-3)
        ln_e = np.log(np.where(hit, e, 1.0)).astype(np.float64)
        n_hit = hit.sum(axis=0)
        mean = np.where(n_hit > 0, (ln_e * hit).sum(0) / np.maximum(n_hit, 1), 0.0)
        var = np.where(n_hit > 1, (np.square(ln_e - mean) * hit).sum(0) / np.maximum(n_hit - 1, 1), 1.0)
        log_s0 = np.clip(0.5 * np.log(np.maximum(var, 1e-12)), LOG_S_MIN, LOG_S_MAX)
        k_init, k_train = jax.random.split(key)
        model = cls(
            k_init,
            s.shape[1],
            **cfg,
            logit0=np.log(frac / (1.0 - frac)),
            m0=mean,
            log_s0=np.where(n_hit > 1, log_s0, 0.0),
        )
        data = {"e": e, "cond": np.asarray(model.encode(jnp.asarray(c)))}
        cfg_train = train_config or TrainConfig()
        result = train(model, hurdle_loss, data, k_train, cfg_train, out_dir=out_dir, progress=progress, resume=resume)
        # the trainer's arrays are committed to its device; uncommitted copies (as a loaded model has) let a trained
        # model and its reloaded copy share the compiled sampler and bound
        trained = jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a)) if eqx.is_array(a) else a, result.model)
        return trained, dataclasses.replace(result, model=trained)


def hurdle_loss(model: HurdleSurrogate, batch: dict[str, jax.Array], key: jax.Array) -> tuple[jax.Array, dict]:
    """Per-row mean of the beta-weighted negative ELBO for the trainer: batch {"e": thresholded energies (B, V)
    [GeV], "cond": encoded conditions (B, 3)}. Returns (loss, {"nll": -log p(e | h, c), "kl": KL(q || p)})."""
    e, cond = batch["e"], batch["cond"]
    mu, logvar = model.posterior(e, cond)
    h = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape)
    nll = -jnp.mean(hurdle_log_likelihood(e, *model.decoder_params(h, cond), model.threshold_gev))
    kl = jnp.mean(jnp.sum(_kl(mu, logvar), axis=-1))
    return nll + model.beta * kl, {"nll": nll, "kl": kl}


@eqx.filter_jit
def _elbo(model: HurdleSurrogate, showers: jax.Array, conditions: jax.Array, key: jax.Array) -> jax.Array:
    e = model.thresholded(showers)
    cond = model.encode(conditions)
    mu, logvar = model.posterior(e, cond)
    h = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape)
    log_lik = hurdle_log_likelihood(e, *model.decoder_params(h, cond), model.threshold_gev)
    return log_lik - jnp.sum(_kl(mu, logvar), axis=-1)


@eqx.filter_jit
def _sample(model: HurdleSurrogate, key: jax.Array, conditions: jax.Array) -> jax.Array:
    n, v = conditions.shape[0], model.n_voxels
    k_h, k_hit, k_e = jax.random.split(key, 3)
    cond = model.encode(conditions)
    logits, m, log_s = model.decoder_params(jax.random.normal(k_h, (n, model.latent)), cond)
    hit = jax.random.uniform(k_hit, (n, v)) < jax.nn.sigmoid(logits)
    s = jnp.exp(log_s)
    # ln e = m + s z with z > a = (ln t - m) / s: z = -Phi^-1(u Phi(-a)), u in (0, 1] (exact in the upper tail)
    tail = 1.0 if model.threshold_gev == 0 else ndtr((m - math.log(model.threshold_gev)) / s)
    u = 1.0 - jax.random.uniform(k_e, (n, v))
    z = -ndtri(jnp.clip(u * tail, 1e-37, 1.0 - 1e-7))
    e = jnp.exp(m + s * z)
    if model.threshold_gev > 0:
        e = jnp.maximum(e, jnp.nextafter(jnp.float32(model.threshold_gev), jnp.float32(jnp.inf)))
    return jnp.where(hit, e, 0.0)
