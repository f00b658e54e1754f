"""The four surrogate families by name, with one ``fit_surrogate`` entry point (used by the CLI and studies).

========== ============================================ =====================================
kind       class                                        log_prob
========== ============================================ =====================================
flow       :class:`~.surrogate.FlowSurrogate`           exact
vae        :class:`~.vae.VAESurrogate`                  ELBO / importance-weighted bound
diffusion  :class:`~.flow_matching.FlowMatchingSurrogate` probability-flow ODE (optional)
gan        :class:`~.gan.GANSurrogate`                  none (clear error)
========== ============================================ =====================================

:data:`DEFAULT_TRAIN_CONFIGS` holds the training budget of each family for the default geometry
(360 voxels, ~100k showers): sized to finish within ~15 minutes on 2 CPU cores (see
``studies/generator_quality.py`` and ``docs/results/generator_quality.md`` for what it reaches).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ..data.bijection import ShowerBijection
from .trainer import TrainConfig, TrainResult

__all__ = ["DEFAULT_TRAIN_CONFIGS", "SURROGATE_KINDS", "fit_surrogate", "surrogate_class"]

#: kind -> (module, class name, name of the fit() keyword taking the model hyperparameters)
_FAMILIES: dict[str, tuple[str, str, str]] = {
    "flow": ("surrogate", "FlowSurrogate", "flow_config"),
    "vae": ("vae", "VAESurrogate", "vae_config"),
    "diffusion": ("flow_matching", "FlowMatchingSurrogate", "fm_config"),
    "gan": ("gan", "GANSurrogate", "gan_config"),
}
SURROGATE_KINDS: tuple[str, ...] = tuple(_FAMILIES)

#: Training budget per family for ~100k default-geometry showers within ~15 CPU-minutes on 2 cores.
DEFAULT_TRAIN_CONFIGS: dict[str, TrainConfig] = {
    "flow": TrainConfig(batch_size=256, max_steps=6000, learning_rate=1e-3, warmup_steps=200, eval_every=1000),
    "vae": TrainConfig(batch_size=256, max_steps=30000, learning_rate=1e-3, warmup_steps=200, eval_every=2000),
    "diffusion": TrainConfig(batch_size=256, max_steps=30000, learning_rate=1e-3, warmup_steps=200, eval_every=2000),
    "gan": TrainConfig(
        batch_size=256, max_steps=20000, learning_rate=2e-4, schedule="constant", grad_clip=None, eval_every=1000
    ),
}


def surrogate_class(kind: str) -> type:
    """The surrogate class of a family name ("flow", "vae", "diffusion", "gan")."""
    try:
        module, name, _ = _FAMILIES[kind]
    except KeyError:
        raise ValueError(f"unknown surrogate kind {kind!r}; expected one of {SURROGATE_KINDS}") from None
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


def fit_surrogate(
    kind: str,
    key: jax.Array,
    showers_gev: np.ndarray,
    energies_gev: np.ndarray,
    bijection: ShowerBijection,
    *,
    theta: np.ndarray | None = None,
    model_config: dict[str, Any] | None = None,
    train_config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    progress: bool = False,
    **kwargs: Any,
) -> tuple[Any, TrainResult]:
    """Train a surrogate of family ``kind`` on showers (N, V) [GeV, >= 0] at energies (N,) [GeV].

    ``model_config`` overrides the family's default hyperparameters, ``train_config`` defaults to
    :data:`DEFAULT_TRAIN_CONFIGS` [kind]; extra keywords (e.g. ``energy_consistency``) go to the family's
    ``fit``. Returns (surrogate, TrainResult)."""
    cls = surrogate_class(kind)
    config_kw = _FAMILIES[kind][2]
    return cls.fit(
        key,
        showers_gev,
        energies_gev,
        bijection,
        theta=theta,
        train_config=train_config or DEFAULT_TRAIN_CONFIGS[kind],
        out_dir=out_dir,
        progress=progress,
        **{config_kw: model_config},
        **kwargs,
    )
