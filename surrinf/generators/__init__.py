"""Conditional generative surrogates (flow, VAE, flow-matching diffusion, WGAN-GP), their training, saving
and export.

Every surrogate is an ``eqx.Module`` implementing the response-model protocol on voxel showers [GeV]:
``sample(key, conditions)`` and, where defined, ``log_prob(showers, conditions)``; ``generate(noise,
conditions)`` is the deterministic sampler exported to ONNX. :func:`fit_surrogate` trains a family by name
("flow", "vae", "diffusion", "gan"); :func:`save` / :func:`load` store models without pickle (SHA-256
verified). Beyond single showers: :class:`HurdleSurrogate` (pile-up, conditioned on (E, mu), with a spike-and-slab
per-cell likelihood), :class:`MuonHitModel` (muon-spectrometer station hits given pT) and the track-hit generator
trained with a Bethe-Bloch penalty (:mod:`.track_hits`).
"""

from .base import (
    ConditionEncoder,
    ShowerPreprocessor,
    ShowerSurrogate,
    prepare_training_data,
    sample_batched,
    zero_suppress,
)
from .conditioning import FiLM, check_energy_bin_edges, encode_conditions, one_hot_energy
from .flow import AutoregressiveFlow, CouplingFlow, build_flow, flow_loss
from .flow_matching import FlowMatchingSurrogate, flow_matching_loss
from .gan import GANSurrogate, gan_loss
from .hurdle import DEFAULT_HURDLE_CONFIG, HurdleSurrogate, hurdle_log_likelihood, hurdle_loss
from .models import DEFAULT_TRAIN_CONFIGS, SURROGATE_KINDS, fit_surrogate, surrogate_class
from .muon_hits import DEFAULT_MUON_HIDDEN, MuonHitModel, muon_hit_loss
from .physics import EnergyConsistency
from .serialization import MODEL_REGISTRY, ModelFileError, load, load_checkpoint, register_model, save, save_checkpoint
from .surrogate import FlowSurrogate
from .track_hits import TrackHitGenerator, build_track_hit_generator, fit_track_hits, prepare_track_data, track_hit_loss
from .trainer import TrainConfig, TrainResult, train
from .vae import VAESurrogate, vae_loss

__all__ = [
    "DEFAULT_HURDLE_CONFIG",
    "DEFAULT_MUON_HIDDEN",
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
    "HurdleSurrogate",
    "ModelFileError",
    "MuonHitModel",
    "ShowerPreprocessor",
    "ShowerSurrogate",
    "TrackHitGenerator",
    "TrainConfig",
    "TrainResult",
    "VAESurrogate",
    "build_flow",
    "build_track_hit_generator",
    "check_energy_bin_edges",
    "encode_conditions",
    "fit_surrogate",
    "fit_track_hits",
    "flow_loss",
    "flow_matching_loss",
    "gan_loss",
    "hurdle_log_likelihood",
    "hurdle_loss",
    "load",
    "load_checkpoint",
    "muon_hit_loss",
    "one_hot_energy",
    "prepare_track_data",
    "prepare_training_data",
    "register_model",
    "sample_batched",
    "save",
    "save_checkpoint",
    "surrogate_class",
    "track_hit_loss",
    "train",
    "vae_loss",
    "zero_suppress",
]
