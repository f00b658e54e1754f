"""Validation of response models: is a surrogate good enough?

One-dimensional comparisons (KS with practical significance, W1 with bootstrap floor, separation power,
chi2), multivariate tests (classifier two-sample test, energy distance, FPD, KPD), the calibration error
of the energy response, classifier reweighting, the energy response / resolution, and
:func:`validate`, which runs them all and writes a report. Beyond single showers: pile-up occupancy vs mu
(:mod:`.pileup`), mutual information and interventional sweeps of a surrogate's latent space
(:mod:`.disentanglement`), latent-uncertainty propagation (:mod:`.latent_uncertainty`), the muon sagitta's 1/pT
scaling (:mod:`.sagitta`), dE/dx vs beta*gamma against Bethe-Bloch (:mod:`.dedx`) and the primary Lund-plane density
with its KL divergence (:mod:`.lund`).
"""

from .calibration_error import CalibrationErrorResult, calibration_error
from .classifier import ClassifierConfig, ClassifierResult, auc, classifier_test, train_classifier
from .dedx import DedxComparison, DedxProfile, compare_to_bethe_bloch, dedx_vs_betagamma, plot_dedx_comparison
from .disentanglement import (
    MIMatrix,
    ShowerObservables,
    SweepResult,
    interventional_sweep,
    mi_matrix,
    mutual_information,
)
from .distances import DistanceResult, EnergyDistanceResult, energy_distance_test, fpd, frechet_distance, kpd
from .latent_uncertainty import (
    LatentPropagation,
    Propagation,
    mc_propagation,
    propagation_table,
    taylor_propagation,
    vae_mean_showers,
    vae_posterior,
    vae_propagation,
)
from .lund import (
    LundDensity,
    LundKL,
    LundPoints,
    fastjet_available,
    lund_density,
    lund_kl,
    lund_points,
    plot_lund_density,
    plot_lund_ratio,
)
from .one_d import CONSISTENT, NEGLIGIBLE, RELEVANT, OneDComparison, compare_1d, separation_power, wasserstein_1d
from .pileup import OccupancyVsMu, compare_pileup, occupancy_vs_mu, plot_occupancy_vs_mu
from .resolution import EnergyResponse, ResolutionFit, fit_resolution, measure_response, resolution_model
from .reweighting import ReweightResult, closure_check, reweight
from .sagitta import SagittaComparison, SagittaScaling, compare_sagitta, sagitta_scaling
from .validate import Showers, ValidationConfig, ValidationReport, energy_features, reweight_response, validate

__all__ = [
    "CONSISTENT",
    "NEGLIGIBLE",
    "RELEVANT",
    "CalibrationErrorResult",
    "ClassifierConfig",
    "ClassifierResult",
    "DedxComparison",
    "DedxProfile",
    "DistanceResult",
    "EnergyDistanceResult",
    "EnergyResponse",
    "LatentPropagation",
    "LundDensity",
    "LundKL",
    "LundPoints",
    "MIMatrix",
    "OccupancyVsMu",
    "OneDComparison",
    "Propagation",
    "ResolutionFit",
    "ReweightResult",
    "SagittaComparison",
    "SagittaScaling",
    "ShowerObservables",
    "Showers",
    "SweepResult",
    "ValidationConfig",
    "ValidationReport",
    "auc",
    "calibration_error",
    "classifier_test",
    "closure_check",
    "compare_1d",
    "compare_pileup",
    "compare_sagitta",
    "compare_to_bethe_bloch",
    "dedx_vs_betagamma",
    "energy_distance_test",
    "energy_features",
    "fastjet_available",
    "fit_resolution",
    "fpd",
    "frechet_distance",
    "interventional_sweep",
    "kpd",
    "lund_density",
    "lund_kl",
    "lund_points",
    "mc_propagation",
    "measure_response",
    "mi_matrix",
    "mutual_information",
    "occupancy_vs_mu",
    "plot_dedx_comparison",
    "plot_lund_density",
    "plot_lund_ratio",
    "plot_occupancy_vs_mu",
    "propagation_table",
    "resolution_model",
    "reweight",
    "reweight_response",
    "sagitta_scaling",
    "separation_power",
    "taylor_propagation",
    "train_classifier",
    "vae_mean_showers",
    "vae_posterior",
    "vae_propagation",
    "validate",
    "wasserstein_1d",
]
