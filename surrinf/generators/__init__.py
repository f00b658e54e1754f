"""Conditional generative surrogates (flows, VAE, diffusion, GAN), their training, saving and export.

Landed so far (issue 4 in progress): FiLM conditioning, the conditional rational-quadratic spline flows
(coupling and autoregressive), the optax trainer (early stopping, checkpoints, bitwise resume, data
parallelism) and save/load with SHA-256 verification (no pickle).
"""

from .base import ConditionEncoder, ShowerPreprocessor, ShowerSurrogate, prepare_training_data
from .conditioning import FiLM, encode_conditions
from .flow import AutoregressiveFlow, CouplingFlow, build_flow, flow_loss
from .serialization import MODEL_REGISTRY, ModelFileError, load, load_checkpoint, register_model, save, save_checkpoint
from .surrogate import FlowSurrogate
from .trainer import TrainConfig, TrainResult, train

__all__ = [
    "MODEL_REGISTRY",
    "AutoregressiveFlow",
    "ConditionEncoder",
    "CouplingFlow",
    "FiLM",
    "FlowSurrogate",
    "ModelFileError",
    "ShowerPreprocessor",
    "ShowerSurrogate",
    "TrainConfig",
    "TrainResult",
    "build_flow",
    "encode_conditions",
    "flow_loss",
    "load",
    "load_checkpoint",
    "prepare_training_data",
    "register_model",
    "save",
    "save_checkpoint",
    "train",
]
