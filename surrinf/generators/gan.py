"""GANSurrogate: a conditional Wasserstein GAN with gradient penalty (WGAN-GP, Gulrajani et al. 2017).

Generator G(z, c): noise z ~ N(0, I_latent) and encoded conditions c (E, theta) -> a standardised preprocessed
shower in R^V (the space of :class:`~surrinf.generators.base.ShowerPreprocessor`), a
:class:`~surrinf.generators.flow.FiLMMLP`. Critic D(x, c): R^V -> R, also a FiLMMLP (no batch norm, so the
per-sample gradient penalty is well defined). ``sample(key, conditions)`` maps G's output back to voxel
energies [GeV, >= 0]. A GAN has no tractable likelihood: :meth:`GANSurrogate.log_prob` raises.

Training uses the generic one-optimiser trainer (:func:`~surrinf.generators.trainer.train`) with

- ONE combined loss (:func:`gan_loss`): critic loss D(sg(fake)) - D(real) + GP plus generator loss
  -D_sg(fake) (+ an optional energy-consistency penalty on the generated showers), where ``sg`` is
  ``jax.lax.stop_gradient``: the critic part sees the fakes with their generator dependence cut and the
  generator part sees a stop-gradient copy of the critic. The gradient of the sum therefore holds the critic
  gradient in the critic leaves and the generator gradient in the generator leaves.
- an optimiser (:func:`gan_optimizer`) that routes the leaves with ``optax.multi_transform``: Adam on the
  critic every step, Adam on the generator wrapped in ``optax.MultiSteps(every_k_schedule=n_critic)`` and
  zero updates for the preprocessing / condition statistics (constant learning rates, no clipping). This is
  the n_critic schedule of the paper in gradient-accumulation form: the critic takes one step per trainer
  step; the generator takes one step every n_critic trainer steps (at steps n_critic - 1, 2 n_critic - 1,
  ... counted from 0) with the mean of its gradients over those n_critic batches, each computed against the
  critic of its step (the paper uses one fresh batch against the latest critic; the mean has the same
  expected direction with less variance, the price is critic parameters that lag by up to n_critic - 1
  steps in the early terms). In between, the generator update is exactly zero, so its parameters are
  bitwise unchanged.

Validation. Early stopping on a validation loss is meaningless for a GAN (the critic's estimate of the
Wasserstein distance is only as good as the current critic: it is ~0 for an untrained critic and moves with
it), so :meth:`GANSurrogate.fit` trains with ``patience=None`` and returns the *final* parameters (not the
trainer's best-validation ones). The value of :func:`gan_loss` is the critic loss GP - W; the logged
validation loss and ``val_wasserstein`` are informative only. Judge a GAN with the validation metrics of
:mod:`surrinf.validation` (e.g. a classifier test) on its samples.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from surrinf._atomic import atomic_write_text

from ..data.bijection import ShowerBijection
from .base import ConditionEncoder, ShowerPreprocessor, ShowerSurrogate, prepare_training_data
from .flow import FiLMMLP
from .physics import EnergyConsistency
from .serialization import register_model
from .trainer import TrainConfig, TrainResult, train

__all__ = [
    "DEFAULT_GAN_CONFIG",
    "DEFAULT_GAN_TRAIN_CONFIG",
    "GAN_RECORD_FILE",
    "GANSurrogate",
    "gan_config",
    "gan_loss",
    "gan_optimizer",
    "gradient_penalty",
]

#: Default hyperparameters (overridden by ``gan_config``). Architecture: ``latent`` noise dimensions,
#: hidden widths of G and D. Objective: ``lambda_gp``. Optimiser (Gulrajani et al. 2017, Algorithm 1: Adam
#: betas (0, 0.9), n_critic 5, lr 1e-4): learning rates None take ``TrainConfig.learning_rate`` in
#: :meth:`GANSurrogate.fit`; set ``learning_rate_critic`` above ``learning_rate_generator`` for a two
#: time-scale update (steadier on the toy problems of the tests). A starting point for the default geometry
#: (V = 360) and ~100k showers; not tuned.
DEFAULT_GAN_CONFIG: dict[str, Any] = {
    "latent": 64,
    "hidden_generator": [256, 256, 256],
    "hidden_critic": [256, 256, 256],
    "lambda_gp": 10.0,
    "n_critic": 5,
    "learning_rate_generator": None,
    "learning_rate_critic": None,
    "betas": [0.0, 0.9],
}

#: :meth:`GANSurrogate.fit`'s TrainConfig when none is given: constant learning rate 1e-4 (the paper's)
#: for both networks, no gradient clipping (the gradient penalty regularises the critic).
DEFAULT_GAN_TRAIN_CONFIG = TrainConfig(learning_rate=1e-4, schedule="constant", grad_clip=None)

#: File in ``out_dir`` recording the GAN hyperparameters of a run, checked on resume (the trainer's own
#: resume check covers the TrainConfig, not the custom optimiser's settings).
GAN_RECORD_FILE = "gan_config.json"

#: Added to |grad D|^2 before the square root so the penalty is differentiable at a zero gradient.
_NORM_EPS = 1e-12

#: Which optimiser group trains each top-level field of a GANSurrogate.
_GROUPS = {
    "generator": "generator",
    "energy_consistency": "generator",
    "critic": "critic",
    "preprocessor": "frozen",
    "encoder": "frozen",
}


def _positive_int(cfg: Mapping[str, Any], name: str) -> int:
    v = cfg[name]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"gan_config[{name!r}] must be an integer >= 1, got {v!r}")
    return int(v)


def _widths(cfg: Mapping[str, Any], name: str) -> list[int]:
    v = cfg[name]
    if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
        raise ValueError(f"gan_config[{name!r}] must be a list of hidden widths >= 1, got {v!r}")
    out = list(v)
    if not out or any(isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1 for h in out):
        raise ValueError(f"gan_config[{name!r}] must be a non-empty list of integers >= 1, got {v!r}")
    return [int(h) for h in out]


def _real(cfg: Mapping[str, Any], name: str, lo: float, strict: bool, optional: bool = False) -> float | None:
    v = cfg[name]
    if optional and v is None:
        return None
    ok = not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(v)
    if not ok or (v <= lo if strict else v < lo):
        raise ValueError(f"gan_config[{name!r}] must be a finite number {'>' if strict else '>='} {lo}, got {v!r}")
    return float(v)


def gan_config(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:data:`DEFAULT_GAN_CONFIG` updated with ``overrides``, checked and JSON-normalised.

    Raises ValueError naming the key for an unknown key or a bad value."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(DEFAULT_GAN_CONFIG))
    if unknown:
        raise ValueError(f"unknown gan_config keys {unknown}; allowed: {sorted(DEFAULT_GAN_CONFIG)}")
    cfg = {**DEFAULT_GAN_CONFIG, **overrides}
    betas = cfg["betas"]
    if (
        isinstance(betas, (str, bytes))
        or not hasattr(betas, "__len__")
        or len(betas) != 2
        or not all(not isinstance(b, bool) and isinstance(b, (int, float, np.number)) and 0 <= b < 1 for b in betas)
    ):
        raise ValueError(f"gan_config['betas'] must be two numbers in [0, 1) (Adam b1, b2), got {betas!r}")
    return {
        "latent": _positive_int(cfg, "latent"),
        "hidden_generator": _widths(cfg, "hidden_generator"),
        "hidden_critic": _widths(cfg, "hidden_critic"),
        "lambda_gp": _real(cfg, "lambda_gp", 0.0, strict=False),
        "n_critic": _positive_int(cfg, "n_critic"),
        "learning_rate_generator": _real(cfg, "learning_rate_generator", 0.0, strict=True, optional=True),
        "learning_rate_critic": _real(cfg, "learning_rate_critic", 0.0, strict=True, optional=True),
        "betas": [float(b) for b in betas],
    }


# --------------------------------------------------------------------------------------------- objective


def gradient_penalty(
    critic_fn: Callable[[jax.Array, jax.Array], jax.Array],
    real: jax.Array,
    fake: jax.Array,
    cond: jax.Array,
    key: jax.Array,
    lambda_gp: float,
) -> jax.Array:
    """WGAN-GP penalty ``lambda_gp * mean_n (|grad_x D(x_hat_n, c_n)|_2 - 1)^2`` (scalar).

    ``critic_fn(x (V,), c (C,)) -> ()`` is one sample's critic score; real, fake (B, V), cond (B, C).
    x_hat = eps * real + (1 - eps) * fake with eps ~ U[0, 1] per row (from ``key``); the gradient is taken
    with respect to x only, per sample. Pass ``stop_gradient(fake)`` so only the critic is penalised."""
    eps = jax.random.uniform(key, (real.shape[0], 1), dtype=real.dtype)
    x_hat = eps * real + (1.0 - eps) * fake
    grads = jax.vmap(jax.grad(critic_fn))(x_hat, cond)
    norms = jnp.sqrt(jnp.sum(grads * grads, axis=-1) + _NORM_EPS)
    return lambda_gp * jnp.mean((norms - 1.0) ** 2)


def _generator_mlp(key: jax.Array, latent: int, out_dim: int, cond_dim: int, hidden: list[int]) -> FiLMMLP:
    """G as a FiLMMLP with variance-preserving weights: He-normal N(0, 2 / fan_in) hidden layers (SiLU), a
    LeCun-normal N(0, 1 / fan_in) output layer, zero biases.

    The FiLMMLP default (uniform +-1/sqrt(fan_in) weights, output layer scaled by 1e-2 for flows) starts G with
    samples of std ~0.01-0.05 in the unit-variance standardised space, a collapsed start that WGAN-GP widens
    only slowly; this one starts at std ~0.6 (FiLM layers stay at the identity)."""
    k_net, k_w = jax.random.split(key)
    mlp = FiLMMLP(k_net, latent, out_dim, cond_dim, tuple(hidden))
    keys = jax.random.split(k_w, len(mlp.linears))
    gains = [math.sqrt(2.0)] * len(hidden) + [1.0]
    linears = tuple(
        eqx.tree_at(
            lambda lin: (lin.weight, lin.bias),
            lin,
            (g * jax.random.normal(k, lin.weight.shape) / math.sqrt(lin.weight.shape[1]), jnp.zeros_like(lin.bias)),
        )
        for lin, k, g in zip(mlp.linears, keys, gains, strict=True)
    )
    return eqx.tree_at(lambda m: m.linears, mlp, linears)


def _critic_mlp(key: jax.Array, in_dim: int, cond_dim: int, hidden: list[int]) -> FiLMMLP:
    """D as a FiLMMLP (in_dim,) -> (1,) with the default Linear initialisation of its output layer (FiLMMLP
    scales it by 1e-2, which would start D with |grad D| ~ 0, i.e. GP ~ lambda_gp)."""
    k_net, k_out = jax.random.split(key)
    mlp = FiLMMLP(k_net, in_dim, 1, cond_dim, tuple(hidden))
    return eqx.tree_at(lambda m: m.linears[-1], mlp, eqx.nn.Linear(hidden[-1], 1, key=k_out))


def _scores(critic: FiLMMLP, x: jax.Array, cond: jax.Array) -> jax.Array:
    """Critic scores (B,) of x (B, V) at encoded conditions (B, C)."""
    return jax.vmap(critic)(x, cond)[:, 0]


def gan_loss(
    model: GANSurrogate, batch: dict[str, jax.Array], key: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The combined WGAN-GP objective of ``model`` on batch {"x": (B, V) standardised showers, "cond": (B, C)
    encoded conditions, "energy": (B,) [GeV] (used by the energy-consistency term only)}.

    Gradient: that of critic loss + generator loss, with critic loss = mean D(sg(fake)) - mean D(real) + GP
    and generator loss = -mean D_sg(fake) (+ ``energy_consistency.penalty`` of the fakes mapped to GeV),
    where sg is ``jax.lax.stop_gradient`` (of the fakes, resp. of the critic's parameters), so each network
    only receives the gradient of its own loss. Value: the critic loss GP - W (a per-row mean), the quantity
    WGAN-GP papers plot. Aux: ``wasserstein`` (W = mean D(real) - mean D(fake)), ``gp``, ``d_real``,
    ``d_fake`` and, with energy consistency, ``energy_penalty``."""
    x, c = batch["x"], batch["cond"]
    k_z, k_gp = jax.random.split(key)
    fake = model.decode(jax.random.normal(k_z, (x.shape[0], model.latent), dtype=jnp.float32), c)
    fake_sg = jax.lax.stop_gradient(fake)

    d_real = jnp.mean(_scores(model.critic, x, c))
    d_fake = jnp.mean(_scores(model.critic, fake_sg, c))
    gp = gradient_penalty(lambda xi, ci: model.critic(xi, ci)[0], x, fake_sg, c, k_gp, model.lambda_gp)
    critic_loss = d_fake - d_real + gp

    frozen_critic = jax.lax.stop_gradient(model.critic)
    gen_loss = -jnp.mean(_scores(frozen_critic, fake, c))
    aux = {"wasserstein": d_real - d_fake, "gp": gp, "d_real": d_real, "d_fake": d_fake}
    if model.energy_consistency is not None:
        pre = jax.lax.stop_gradient(model.preprocessor)  # fixed preprocessing: no gradient into its statistics
        energy = batch["energy"]
        penalty = model.energy_consistency.penalty(pre.inverse(fake, energy), energy)
        gen_loss = gen_loss + penalty
        aux["energy_penalty"] = penalty

    total = critic_loss + gen_loss
    # value = critic loss (total - sg(total) is exactly 0 in the forward pass), gradient = that of total
    loss = jax.lax.stop_gradient(critic_loss) + (total - jax.lax.stop_gradient(total))
    return loss, aux


def _param_labels(params: Any) -> Any:
    """'generator' / 'critic' / 'frozen' for every array leaf of a (filtered) GANSurrogate."""

    def label(path: tuple[Any, ...], _leaf: Any) -> str:
        name = getattr(path[0], "name", None) if path else None
        if name not in _GROUPS:
            raise ValueError(f"gan_optimizer expects GANSurrogate parameters; found a leaf under {name!r}")
        return _GROUPS[name]

    return jax.tree_util.tree_map_with_path(label, params)


def gan_optimizer(
    config: Mapping[str, Any] | None = None, learning_rate: float | None = None
) -> optax.GradientTransformation:
    """The WGAN-GP optimiser for :func:`train` (``optimizer=``) of a GANSurrogate's parameters.

    ``config``: gan config overrides (see :func:`gan_config`; ``model.gan_config()`` gives a model's);
    ``learning_rate`` replaces learning rates that are None there. Leaves of ``critic``:
    Adam(learning_rate_critic, betas) every step. Leaves of ``generator`` (and learnable energy-consistency
    coefficients): Adam(learning_rate_generator, betas) inside ``optax.MultiSteps(every_k_schedule=n_critic)``:
    gradients are averaged over n_critic steps and applied once; the other steps' updates are exactly zero
    (the n_critic schedule in gradient-accumulation form, see the module docstring). ``preprocessor`` and
    ``encoder`` leaves: zero updates. Constant learning rates, no clipping, no weight decay."""
    cfg = gan_config(config)
    lrs = {}
    for name in ("learning_rate_generator", "learning_rate_critic"):
        lrs[name] = cfg[name] if cfg[name] is not None else learning_rate
        if lrs[name] is None or not (math.isfinite(lrs[name]) and lrs[name] > 0):
            raise ValueError(f"gan_optimizer needs {name} > 0 in config or a learning_rate > 0, got {lrs[name]!r}")
    b1, b2 = cfg["betas"]
    return _gan_optimizer(lrs["learning_rate_generator"], lrs["learning_rate_critic"], b1, b2, cfg["n_critic"])


@functools.lru_cache(maxsize=64)
def _gan_optimizer(
    lr_generator: float, lr_critic: float, b1: float, b2: float, n_critic: int
) -> optax.GradientTransformation:
    """:func:`gan_optimizer` of checked settings; equal settings give the same (stateless) object, so that fits with
    equal settings reuse the trainer's compiled step."""
    generator = optax.MultiSteps(
        optax.adam(lr_generator, b1=b1, b2=b2), every_k_schedule=n_critic
    ).gradient_transformation()
    critic = optax.adam(lr_critic, b1=b1, b2=b2)
    return optax.multi_transform(
        {"generator": generator, "critic": critic, "frozen": optax.set_to_zero()}, _param_labels
    )


# --------------------------------------------------------------------------------------------- model


@register_model("gan_surrogate")
class GANSurrogate(ShowerSurrogate):
    """Conditional WGAN-GP on preprocessed showers: ``sample`` / ``generate``; no ``log_prob``."""

    generator: FiLMMLP  # (latent,) x (C,) -> (V,)
    critic: FiLMMLP  # (V,) x (C,) -> (1,)
    preprocessor: ShowerPreprocessor
    encoder: ConditionEncoder
    energy_consistency: EnergyConsistency | None
    latent: int = eqx.field(static=True)
    hidden_generator: tuple[int, ...] = eqx.field(static=True)
    hidden_critic: tuple[int, ...] = eqx.field(static=True)
    lambda_gp: float = eqx.field(static=True)
    n_critic: int = eqx.field(static=True)
    learning_rate_generator: float | None = eqx.field(static=True)  # None: TrainConfig.learning_rate
    learning_rate_critic: float | None = eqx.field(static=True)
    betas: tuple[float, float] = eqx.field(static=True)

    def __init__(
        self,
        key: jax.Array,
        preprocessor: ShowerPreprocessor,
        encoder: ConditionEncoder,
        config: Mapping[str, Any] | None = None,
        energy_consistency: EnergyConsistency | None = None,
    ):
        """Fresh networks from ``key`` for ``preprocessor`` (V voxels) and ``encoder`` (C = 1 + n_theta);
        ``config`` (gan config) overrides :data:`DEFAULT_GAN_CONFIG`."""
        if energy_consistency is not None and not isinstance(energy_consistency, EnergyConsistency):
            raise ValueError(
                f"energy_consistency must be an EnergyConsistency or None, got {type(energy_consistency).__name__}"
            )
        cfg = gan_config(config)
        k_g, k_d = jax.random.split(key)
        v, c = preprocessor.dim, encoder.dim
        self.generator = _generator_mlp(k_g, cfg["latent"], v, c, cfg["hidden_generator"])
        self.critic = _critic_mlp(k_d, v, c, cfg["hidden_critic"])
        self.preprocessor = preprocessor
        self.encoder = encoder
        self.energy_consistency = energy_consistency
        self.latent = cfg["latent"]
        self.hidden_generator = tuple(cfg["hidden_generator"])
        self.hidden_critic = tuple(cfg["hidden_critic"])
        self.lambda_gp = cfg["lambda_gp"]
        self.n_critic = cfg["n_critic"]
        self.learning_rate_generator = cfg["learning_rate_generator"]
        self.learning_rate_critic = cfg["learning_rate_critic"]
        self.betas = (cfg["betas"][0], cfg["betas"][1])

    def latent_dim(self) -> int:
        return self.latent

    def decode(self, noise: jax.Array, cond: jax.Array) -> jax.Array:
        """G: noise (N, latent), encoded conditions (N, C) -> standardised preprocessed showers (N, V)."""
        return jax.vmap(self.generator)(noise, cond)

    def score(self, x: jax.Array, cond: jax.Array) -> jax.Array:
        """Critic D: standardised showers (N, V), encoded conditions (N, C) -> scores (N,)."""
        return _scores(self.critic, jnp.asarray(x, jnp.float32), jnp.asarray(cond, jnp.float32))

    def log_prob(self, showers: Any, conditions: Any) -> jax.Array:
        raise NotImplementedError(
            "GANSurrogate has no tractable likelihood: a GAN defines its density only implicitly through the "
            "generator. Compare its samples with the validation metrics instead (surrinf.validation, e.g. a "
            "classifier test), or use a FlowSurrogate (exact log_prob) or a VAE (ELBO bound) when densities "
            "are needed."
        )

    def gan_config(self) -> dict[str, Any]:
        """The JSON gan config of this model (input of :func:`gan_optimizer`)."""
        return {
            "latent": self.latent,
            "hidden_generator": list(self.hidden_generator),
            "hidden_critic": list(self.hidden_critic),
            "lambda_gp": self.lambda_gp,
            "n_critic": self.n_critic,
            "learning_rate_generator": self.learning_rate_generator,
            "learning_rate_critic": self.learning_rate_critic,
            "betas": list(self.betas),
        }

    def config(self) -> dict:
        ec = self.energy_consistency
        return {
            "gan": self.gan_config(),
            "bijection": self.preprocessor.bijection.to_dict(),
            "n_theta": self.n_theta,
            "energy_consistency": None if ec is None else ec.config(),
        }

    @classmethod
    def from_config(cls, config: dict, key: jax.Array) -> GANSurrogate:
        """Skeleton for :func:`surrinf.generators.load` (every array is overwritten by the saved leaves)."""
        k = int(config["n_theta"])
        ec = config.get("energy_consistency")
        return cls(
            key,
            ShowerPreprocessor.skeleton(config["bijection"]),
            ConditionEncoder(np.zeros(k), np.ones(k)),
            config["gan"],
            None if ec is None else EnergyConsistency.from_config(ec),
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
        gan_config: dict | None = None,
        energy_consistency: EnergyConsistency | None = None,
        train_config: TrainConfig | None = None,
        out_dir: str | Path | None = None,
        resume: bool = False,
        progress: bool = False,
    ) -> tuple[GANSurrogate, TrainResult]:
        """Preprocess showers (N, V) [GeV, >= 0] with incident energies (N,) [GeV] (and theta (N, k)) and
        train a WGAN-GP (``gan_config`` overrides :data:`DEFAULT_GAN_CONFIG`) with :func:`gan_loss` and
        :func:`gan_optimizer` through :func:`~surrinf.generators.trainer.train`.

        ``key`` is split into (network init, trainer, dequantisation of the training showers).
        ``train_config`` (default :data:`DEFAULT_GAN_TRAIN_CONFIG`): batch size, steps, validation / log /
        checkpoint intervals, and ``learning_rate`` for the networks whose rate ``gan_config`` leaves None.
        Its schedule, warmup, clipping and weight decay do not apply (a warning when set; recorded as
        constant / off) and ``patience`` is forced to None (no early stopping for a GAN; a warning when set).
        ``resume=True`` continues the run in ``out_dir`` (the GAN hyperparameters must equal those recorded in
        ``out_dir/gan_config.json``). Returns the model with the *final* parameters and the TrainResult with
        ``model`` replaced by it (``best_step`` / ``best_val_loss`` are the trainer's, informative only).
        """
        cfg = train_config if train_config is not None else DEFAULT_GAN_TRAIN_CONFIG
        used = {"schedule": "constant", "warmup_steps": 0, "grad_clip": None, "weight_decay": 0.0}
        ignored = [name for name, value in used.items() if (getattr(cfg, name) or None) != (value or None)]
        if ignored:
            warnings.warn(
                f"GANSurrogate.fit: TrainConfig fields {ignored} do not apply; the GAN optimiser uses constant "
                "learning rates without clipping or weight decay (see gan_optimizer)",
                UserWarning,
                stacklevel=2,
            )
        if cfg.patience is not None:
            warnings.warn(
                "GANSurrogate.fit ignores TrainConfig.patience: early stopping on the validation loss is "
                "meaningless for a GAN (the critic's Wasserstein estimate moves with the critic)",
                UserWarning,
                stacklevel=2,
            )
        # record what is used (so the trainer's resume check does not pin a cosine length to max_steps)
        cfg = dataclasses.replace(
            cfg, schedule="constant", warmup_steps=0, decay_steps=None, grad_clip=None, weight_decay=0.0, patience=None
        )
        if resume and out_dir is None:
            raise ValueError("resume=True needs out_dir (the directory of the interrupted run)")
        overrides = dict(gan_config or {})
        for name in ("learning_rate_generator", "learning_rate_critic"):
            if overrides.get(name) is None:
                overrides[name] = cfg.learning_rate
        k_init, k_train, k_data = jax.random.split(key, 3)
        pre, enc, data = prepare_training_data(bijection, showers_gev, energies_gev, theta, key=k_data)
        model = cls(k_init, pre, enc, overrides, energy_consistency)
        opt = gan_optimizer(model.gan_config())
        if out_dir is not None:
            _record_or_check(Path(out_dir), model, resume)
        result = train(
            model,
            gan_loss,
            data,
            k_train,
            cfg,
            out_dir=out_dir,
            resume=resume,
            progress=progress,
            optimizer=opt,
            keep="last",
        )
        return result.model, result


def _record_or_check(run_dir: Path, model: GANSurrogate, resume: bool) -> None:
    """Write the GAN hyperparameters to ``run_dir`` (fresh run) or check them against the record (resume)."""
    record = {"gan": model.gan_config(), "energy_consistency": model.config()["energy_consistency"]}
    path = run_dir / GAN_RECORD_FILE
    if not resume:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(record, indent=2) + "\n")
        return
    if not path.is_file():
        raise FileNotFoundError(f"resume=True but {path} is missing (not a GANSurrogate.fit run directory)")
    have = json.loads(path.read_text(encoding="utf-8"))
    want = json.loads(json.dumps(record))
    diff = [f"{k}: run {have.get(k)!r} vs now {want[k]!r}" for k in want if have.get(k) != want[k]]
    if diff:
        raise ValueError(
            f"cannot resume {run_dir} deterministically, the GAN hyperparameters differ: {'; '.join(diff)}"
        )
