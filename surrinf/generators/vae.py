"""VAESurrogate: a conditional beta-VAE on preprocessed showers, optionally trained with energy consistency.

showers (N, V) [GeV] --:class:`~surrinf.generators.base.ShowerPreprocessor`--> x (N, V) standardised, and

- inference network q(z | x, c) = N(mu, diag exp(logvar)) over ``latent`` dims (a FiLM-conditioned MLP,
  :class:`~surrinf.generators.flow.FiLMMLP`, x -> (mu, logvar));
- prior p(z) = N(0, I);
- decoder p(x | z, c) = N(m(z, c), diag sigma^2): m is a FiLM-conditioned MLP z -> R^V, sigma a learnable
  per-dimension observation std (log sigma clipped to [:data:`LOG_SIGMA_MIN`, :data:`LOG_SIGMA_MAX`]).

Training (:func:`vae_loss`) minimises the beta-weighted negative ELBO per shower,
``-E_q[log p(x | z, c)] + beta * KL(q(z | x, c) || p(z))`` (one reparameterised z sample, analytic KL), plus,
when the model holds an :class:`~surrinf.generators.physics.EnergyConsistency`, its penalty on the
reconstructed showers mapped back to GeV (:meth:`VAESurrogate.energy_matched_reconstruction`): the decoder
mean m(z, c) itself without ``sample_noise``; with it, m(z, c) with the layer-energy coordinates shifted so
that the visible energy is the mean visible energy of p(x | z, c) (the lognormal correction of the
observation noise). Penalising the bare decoder mean would pull the mean of the decoder towards f(E) while
the noisy samples sit above it by the noise's exp(sigma^2 / 2) factor (in tests it made the samples'
visible energy worse, not better).

Sampling. With ``sample_noise=True`` (default) the noise consumed by :meth:`VAESurrogate.generate` is
(z, eps) with ``latent + V`` components and the shower is ``m(z, c) + sigma * eps``: a draw from the model
whose density :meth:`VAESurrogate.log_prob` bounds, with per-voxel fluctuations. The observation noise is
independent per dimension (correlations come from z only) and, as the bijection exponentiates, it raises the
mean voxel energy by ~exp(sigma^2 / 2) in the log-energy coordinates. With ``sample_noise=False`` the noise
is z alone (``latent`` components) and the shower is the decoder mean m(z, c): smoother, under-dispersed
voxels ("blurry" VAE samples), but its visible energy is exactly what the energy-consistency term
constrains.

Densities. :meth:`VAESurrogate.log_prob` is a stochastic *lower bound* on log p(showers | conditions) in
voxel space (the preprocessor's log-Jacobian added): the ELBO for ``k = 1`` (always with beta = 1, whatever
beta the model was trained with) and the importance-weighted bound of Burda et al. (2016) with ``k``
samples, which tightens towards log p as k grows.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_positive_int, check_widths
from ..data.bijection import ShowerBijection
from .base import ConditionEncoder, ShowerPreprocessor, ShowerSurrogate, prepare_training_data
from .flow import FiLMMLP
from .physics import EnergyConsistency
from .serialization import register_model
from .trainer import TrainConfig, TrainResult, train

__all__ = ["DEFAULT_VAE_CONFIG", "LOG_SIGMA_MAX", "LOG_SIGMA_MIN", "VAESurrogate", "vae_loss"]

#: Default hyperparameters (overridden by ``vae_config``); sized for the default geometry (360 voxels).
DEFAULT_VAE_CONFIG: dict[str, Any] = {"latent": 32, "hidden": [256, 256], "beta": 1.0, "sample_noise": True}

#: Range of the per-dimension log observation std in the standardised space (data std 1): sigma in
#: [6.7e-3, 2.7]; the floor keeps the Gaussian likelihood from diverging on near-deterministic dimensions.
LOG_SIGMA_MIN, LOG_SIGMA_MAX = -5.0, 1.0
#: Clip of the posterior log-variance (std in [5.5e-4, 148]): only guards exp() against overflow.
_LOGVAR_MIN, _LOGVAR_MAX = -15.0, 10.0
_LOG_2PI = math.log(2.0 * math.pi)


def _check_hyper(latent: Any, hidden: Any, beta: Any, sample_noise: Any) -> tuple[int, tuple[int, ...], float, bool]:
    """Validated (latent, hidden, beta, sample_noise); ValueError naming the bad one."""
    latent = check_positive_int(latent, "latent")
    hid = check_widths(hidden, "hidden")
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.integer, np.floating)):
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    if not (math.isfinite(beta) and beta >= 0):
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    if not isinstance(sample_noise, (bool, np.bool_)):
        raise ValueError(f"sample_noise must be True or False, got {sample_noise!r}")
    return int(latent), hid, float(beta), bool(sample_noise)


def _gauss_log_prob(x: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """(..., D) -> (...,) log N(x; mean, diag exp(2 log_std))."""
    r = (x - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * r * r - log_std - 0.5 * _LOG_2PI, axis=-1)


def _frozen(tree: Any) -> Any:
    """``tree`` with a stop_gradient on every array leaf (static fields untouched)."""
    return jax.tree_util.tree_map(lambda a: jax.lax.stop_gradient(a) if eqx.is_array(a) else a, tree)


@register_model("vae_surrogate")
class VAESurrogate(ShowerSurrogate):
    """Conditional beta-VAE on standardised preprocessed showers; see the module docstring.

    ``inference_net``: (x (V,), c (C,)) -> (mu, logvar) (2 * latent,); ``decoder_net``: (z (latent,), c) -> m
    (V,); ``log_sigma`` (V,): raw log observation std (clipped when used)."""

    inference_net: FiLMMLP
    decoder_net: FiLMMLP
    log_sigma: jax.Array
    preprocessor: ShowerPreprocessor
    encoder: ConditionEncoder
    energy_consistency: EnergyConsistency | None
    latent: int = eqx.field(static=True)
    hidden: tuple[int, ...] = eqx.field(static=True)
    beta: float = eqx.field(static=True)
    sample_noise: bool = eqx.field(static=True)

    def __init__(
        self,
        key: jax.Array,
        preprocessor: ShowerPreprocessor,
        encoder: ConditionEncoder,
        *,
        latent: int = DEFAULT_VAE_CONFIG["latent"],
        hidden: Any = tuple(DEFAULT_VAE_CONFIG["hidden"]),
        beta: float = DEFAULT_VAE_CONFIG["beta"],
        sample_noise: bool = DEFAULT_VAE_CONFIG["sample_noise"],
        energy_consistency: EnergyConsistency | None = None,
    ):
        """Fresh networks (from ``key``) around a fitted preprocessor and condition encoder."""
        latent, hidden, beta, sample_noise = _check_hyper(latent, hidden, beta, sample_noise)
        if energy_consistency is not None and not isinstance(energy_consistency, EnergyConsistency):
            raise ValueError(
                f"energy_consistency must be an EnergyConsistency or None, got {type(energy_consistency).__name__}"
            )
        k_q, k_p = jax.random.split(key)
        v, c = preprocessor.dim, encoder.dim
        self.inference_net = FiLMMLP(k_q, v, 2 * latent, c, hidden)
        self.decoder_net = FiLMMLP(k_p, latent, v, c, hidden[::-1])
        self.log_sigma = jnp.zeros((v,), dtype=jnp.float32)
        self.preprocessor = preprocessor
        self.encoder = encoder
        self.energy_consistency = energy_consistency
        self.latent, self.hidden, self.beta, self.sample_noise = latent, hidden, beta, sample_noise

    # ----------------------------------------------------------------------------------- networks

    def obs_log_std(self) -> jax.Array:
        """Clipped log observation std (V,) in the standardised space."""
        return jnp.clip(self.log_sigma, LOG_SIGMA_MIN, LOG_SIGMA_MAX)

    def posterior(self, x: jax.Array, cond: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Standardised showers x (N, V), encoded conditions (N, C) -> q(z | x, c) mean, logvar (N, latent)."""
        out = jax.vmap(self.inference_net)(x, cond)
        return out[:, : self.latent], jnp.clip(out[:, self.latent :], _LOGVAR_MIN, _LOGVAR_MAX)

    def decoder_mean(self, z: jax.Array, cond: jax.Array) -> jax.Array:
        """Latents z (N, latent), encoded conditions (N, C) -> decoder mean m(z, c) (N, V) (standardised)."""
        return jax.vmap(self.decoder_net)(z, cond)

    # ----------------------------------------------------------------------------------- sampler

    def latent_dim(self) -> int:
        """latent + V with ``sample_noise`` (z and the observation noise), else latent."""
        return self.latent + (self.preprocessor.dim if self.sample_noise else 0)

    def decode(self, noise: jax.Array, cond: jax.Array) -> jax.Array:
        """noise (N, latent_dim()) ~ N(0, I), encoded conditions (N, C) -> standardised showers (N, V)."""
        mean = self.decoder_mean(noise[:, : self.latent], cond)
        if not self.sample_noise:
            return mean
        return mean + jnp.exp(self.obs_log_std()) * noise[:, self.latent :]

    def energy_matched_reconstruction(self, mean: jax.Array, energies_gev: jax.Array) -> jax.Array:
        """Showers (N, V) [GeV] whose visible energy is that of p(x | z, c) given the decoder mean (N, V).

        Without ``sample_noise`` this is ``preprocessor.inverse(mean)``. With it, each layer energy is
        lognormal: the bijection's first ``n_layers`` coordinates are u_l = ln(layer energy / E), standardised
        with std s_l, so E[exp(u_l)] = exp(u_l(mean) + s_l^2 sigma_l^2 / 2); those coordinates are shifted by
        s_l sigma_l^2 / 2 (voxel fractions within a layer do not change the layer sum). The preprocessor's
        arrays are not differentiated."""
        pre = _frozen(self.preprocessor)
        if self.sample_noise:
            nl = pre.bijection.n_layers
            shift = 0.5 * pre.standardize.std[:nl] * jnp.exp(2.0 * self.obs_log_std()[:nl])
            mean = mean.at[:, :nl].add(shift)
        return pre.inverse(mean, energies_gev)

    # ----------------------------------------------------------------------------------- densities

    def _inputs(self, showers: Any, conditions: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(standardised x (N, V), log-Jacobian (N,), encoded conditions (N, C)) with shape checks."""
        c = self.encoder.check(conditions)
        s = jnp.asarray(showers, dtype=jnp.float32)
        v = self.preprocessor.dim
        if s.ndim != 2 or s.shape != (c.shape[0], v):
            raise ValueError(
                f"showers must have shape (N, {v}) with N = {c.shape[0]} rows like conditions, got {tuple(s.shape)}"
            )
        x, log_jac = self.preprocessor.forward(s, c[:, 0])
        return x, log_jac, self.encoder(c)

    def log_prob(self, showers: Any, conditions: Any, *, key: jax.Array | None = None, k: int = 1) -> jax.Array:
        """Stochastic lower bound (N,) on log p(showers | conditions) in voxel space (ln GeV^-V).

        showers (N, V) [GeV, >= 0], conditions (N,) or (N, k) [E GeV, theta...]. ``k = 1``: the ELBO
        E_q[log p(x | z)] - KL(q || p) with one z sample and the analytic KL (beta = 1: a true bound);
        ``k > 1``: the importance-weighted bound log (1/k) sum_j p(x, z_j) / q(z_j | x) (Burda et al. 2016),
        non-decreasing in k in expectation. ``key`` (required) draws the z samples; memory is O(N V) per
        sample (the k samples are processed in sequence)."""
        if key is None:
            raise ValueError("log_prob needs key=jax.random.key(...): the VAE bound is estimated with sampled latents")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an integer >= 1 (number of importance samples), got {k!r}")
        x, log_jac, cond = self._inputs(showers, conditions)
        return _log_bound(self, x, cond, key, int(k)) + log_jac

    def kl_per_dim(self, showers: Any, conditions: Any) -> jax.Array:
        """Mean KL(q(z_d | x, c) || N(0, 1)) per latent dimension (latent,) [nats] over the showers (N, V)."""
        x, _, cond = self._inputs(showers, conditions)
        return _kl_per_dim(self, x, cond)

    def collapsed_dims(self, showers: Any, conditions: Any, threshold: float = 0.01) -> np.ndarray:
        """Indices of the latent dimensions whose mean KL (:meth:`kl_per_dim`) is below ``threshold`` [nats]:
        posterior collapse (the decoder ignores them)."""
        if not (isinstance(threshold, (int, float, np.integer, np.floating)) and threshold >= 0):
            raise ValueError(f"threshold must be a number >= 0 [nats], got {threshold!r}")
        return np.flatnonzero(np.asarray(self.kl_per_dim(showers, conditions)) < threshold)

    # ----------------------------------------------------------------------------------- save / load

    def config(self) -> dict:
        return {
            "vae": {
                "latent": self.latent,
                "hidden": list(self.hidden),
                "beta": self.beta,
                "sample_noise": self.sample_noise,
            },
            "energy_consistency": None if self.energy_consistency is None else self.energy_consistency.config(),
            "bijection": self.preprocessor.bijection.to_dict(),
            "n_theta": self.n_theta,
            # one-hot energy conditioning only: continuous (default) models keep the config they always had
            **(
                {}
                if self.encoder.energy_bin_edges_gev is None
                else {"energy_bin_edges_gev": list(self.encoder.energy_bin_edges_gev)}
            ),
        }

    @classmethod
    def from_config(cls, config: dict, key: jax.Array) -> VAESurrogate:
        """Skeleton for :func:`surrinf.generators.load` (every array is overwritten by the saved leaves)."""
        k = int(config["n_theta"])
        ec = config.get("energy_consistency")
        return cls(
            key,
            ShowerPreprocessor.skeleton(config["bijection"]),
            ConditionEncoder(np.zeros(k), np.ones(k), config.get("energy_bin_edges_gev")),
            **config["vae"],
            energy_consistency=None if ec is None else EnergyConsistency.from_config(ec),
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
        vae_config: dict | None = None,
        energy_consistency: EnergyConsistency | None = None,
        energy_bin_edges_gev: Any | None = None,
        train_config: TrainConfig | None = None,
        out_dir: str | Path | None = None,
        progress: bool = False,
        resume: bool = False,
    ) -> tuple[VAESurrogate, TrainResult]:
        """Preprocess showers (N, V) [GeV, >= 0] with incident energies (N,) [GeV] (and theta (N, k)) and train
        a VAE (``vae_config`` overrides :data:`DEFAULT_VAE_CONFIG`) with :func:`vae_loss`; with
        ``energy_consistency`` its penalty is added (learnable coefficients are trained with the networks).
        ``energy_bin_edges_gev`` (K + 1 increasing edges [GeV]) conditions the networks on a one-hot vector over
        K energy bins instead of the continuous scaled ln E (default; see :class:`ConditionEncoder`); it is
        saved with the model.

        ``key`` is split into (network init, trainer, dequantisation of the training showers). Only the
        networks, ``log_sigma`` and learnable energy-consistency coefficients are trained: the preprocessor and
        condition encoder are held outside the optimised pytree. ``resume=True`` continues an interrupted run from its
        checkpoint in ``out_dir``."""
        cfg = {**DEFAULT_VAE_CONFIG, **(vae_config or {})}
        unknown = sorted(set(cfg) - set(DEFAULT_VAE_CONFIG))
        if unknown:
            raise ValueError(f"unknown vae_config keys {unknown}; known: {sorted(DEFAULT_VAE_CONFIG)}")
        k_init, k_train, k_data = jax.random.split(key, 3)
        pre, enc, data = prepare_training_data(
            bijection, showers_gev, energies_gev, theta, key=k_data, energy_bin_edges_gev=energy_bin_edges_gev
        )
        model = cls(k_init, pre, enc, **cfg, energy_consistency=energy_consistency)
        # keep the fitted preprocessing out of the trainer's parameters (no Adam / weight-decay updates)
        is_fixed = eqx.tree_at(
            lambda m: (m.preprocessor, m.encoder),
            jax.tree_util.tree_map(lambda _: False, model),
            replace_fn=lambda sub: jax.tree_util.tree_map(lambda _: True, sub),
        )
        fixed, trainable = eqx.partition(model, is_fixed)

        def loss_fn(params: Any, batch: dict[str, jax.Array], k: jax.Array) -> tuple[jax.Array, dict]:
            return vae_loss(eqx.combine(params, fixed), batch, k)

        result = train(
            trainable,
            loss_fn,
            data,
            k_train,
            train_config or TrainConfig(),
            out_dir=out_dir,
            progress=progress,
            resume=resume,
        )
        return eqx.combine(result.model, fixed), result


def _kl(mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """Elementwise KL(N(mu, exp(logvar)) || N(0, 1)) [nats]."""
    return 0.5 * (mu * mu + jnp.exp(logvar) - 1.0 - logvar)


@eqx.filter_jit
def _kl_per_dim(model: VAESurrogate, x: jax.Array, cond: jax.Array) -> jax.Array:
    return jnp.mean(_kl(*model.posterior(x, cond)), axis=0)


@eqx.filter_jit
def _log_bound(model: VAESurrogate, x: jax.Array, cond: jax.Array, key: jax.Array, k: int) -> jax.Array:
    """ELBO (k = 1, analytic KL) or IWAE bound (k > 1) (N,) on log p(x | c) in the standardised space.

    Sample j uses ``fold_in(key, j)``, so bounds with different k from one key share their first samples."""
    mu, logvar = model.posterior(x, cond)
    log_std = model.obs_log_std()
    if k == 1:
        z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(jax.random.fold_in(key, 0), mu.shape)
        return _gauss_log_prob(x, model.decoder_mean(z, cond), log_std) - jnp.sum(_kl(mu, logvar), axis=-1)

    def log_weight(j: jax.Array) -> jax.Array:
        eps = jax.random.normal(jax.random.fold_in(key, j), mu.shape)
        z = mu + jnp.exp(0.5 * logvar) * eps
        log_px = _gauss_log_prob(x, model.decoder_mean(z, cond), log_std)
        log_pz = _gauss_log_prob(z, 0.0, jnp.zeros(()))
        log_qz = _gauss_log_prob(eps, 0.0, jnp.zeros(())) - 0.5 * jnp.sum(logvar, axis=-1)
        return log_px + log_pz - log_qz

    log_w = jax.lax.map(log_weight, jnp.arange(k, dtype=jnp.uint32))  # (k, N), one sample at a time
    return jax.nn.logsumexp(log_w, axis=0) - math.log(k)


def vae_loss(model: VAESurrogate, batch: dict[str, jax.Array], key: jax.Array) -> tuple[jax.Array, dict]:
    """Per-row mean of the beta-VAE objective for the trainer: batch {"x": standardised showers (B, V),
    "cond": encoded conditions (B, C), "energy": incident energies (B,) [GeV] (needed with energy
    consistency)}. Returns (loss, {"recon": -log p(x | z) , "kl": KL(q || p), "energy": penalty}) (nats,
    per shower); loss = recon + beta * kl + energy. The preprocessor is not differentiated.

    Train with :meth:`VAESurrogate.fit`, which keeps the preprocessor and condition encoder out of the
    optimised pytree. Passing a whole model to :func:`~surrinf.generators.trainer.train` also works with Adam
    (their gradients are zero, so are their updates), but weight decay (AdamW) would shrink them."""
    x, cond = batch["x"], batch["cond"]
    mu, logvar = model.posterior(x, cond)
    z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape)
    mean = model.decoder_mean(z, cond)
    recon = -jnp.mean(_gauss_log_prob(x, mean, model.obs_log_std()))
    kl = jnp.mean(jnp.sum(_kl(mu, logvar), axis=-1))
    loss = recon + model.beta * kl
    energy = jnp.zeros((), dtype=loss.dtype)
    if model.energy_consistency is not None:
        if "energy" not in batch:
            raise ValueError('batch needs "energy" (incident energies (B,) [GeV]) for the energy-consistency term')
        e = batch["energy"]
        showers = model.energy_matched_reconstruction(mean, e)
        energy = model.energy_consistency.penalty(showers, e)
        loss = loss + energy
    return loss, {"recon": recon, "kl": kl, "energy": energy}
