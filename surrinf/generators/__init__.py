"""Conditional generative surrogates (flow, VAE, flow-matching diffusion, WGAN-GP), their training, saving
and export.

Every surrogate is an ``eqx.Module`` implementing the response-model protocol on voxel showers [GeV]:
``sample(key, conditions)`` and, where defined, ``log_prob(showers, conditions)``; ``generate(noise,
conditions)`` is the deterministic sampler exported to ONNX. :func:`fit_surrogate` trains a family by name
("flow", "vae", "diffusion", "gan"); :func:`save` / :func:`load` store models without pickle (SHA-256
verified).
"""

from .base import (
    ConditionEncoder,
    ShowerPreprocessor,
    ShowerSurrogate,
    prepare_training_data,
    sample_batched,
    zero_suppress,
)
from .conditioning import FiLM, encode_conditions
from .flow import AutoregressiveFlow, CouplingFlow, build_flow, flow_loss
from .flow_matching import FlowMatchingSurrogate, flow_matching_loss
from .gan import GANSurrogate, gan_loss
from .models import DEFAULT_TRAIN_CONFIGS, SURROGATE_KINDS, fit_surrogate, surrogate_class
from .physics import EnergyConsistency
from .serialization import MODEL_REGISTRY, ModelFileError, load, load_checkpoint, register_model, save, save_checkpoint
from .surrogate import FlowSurrogate
from .trainer import TrainConfig, TrainResult, train
from .vae import VAESurrogate, vae_loss

__all__ = [
    "DEFAULT_TRAIN_CONFIGS",
    "MODEL_REGISTRY",
    "SURROGATE_KINDS",
    "AutoregressiveFlow",
    "ConditionEncoder",
    "CouplingFlow",
    "EnergyConsistency",
    "FiLM",
    "FlowMatchingSurrogate",
    "FlowSurrogate",
    "GANSurrogate",
    "ModelFileError",
    "ShowerPreprocessor",
    "ShowerSurrogate",
    "TrainConfig",
    "TrainResult",
    "VAESurrogate",
    "build_flow",
    "encode_conditions",
    "fit_surrogate",
    "flow_loss",
    "flow_matching_loss",
    "gan_loss",
    "load",
    "load_checkpoint",
    "prepare_training_data",
    "register_model",
    "sample_batched",
    "save",
    "save_checkpoint",
    "surrogate_class",
    "train",
    "vae_loss",
    "zero_suppress",
]
