"""Validation of response models: is a surrogate good enough?

One-dimensional comparisons (KS with practical significance, W1 with bootstrap floor, separation power,
chi2), multivariate tests (classifier two-sample test, energy distance, FPD, KPD), the calibration error
of the energy response, classifier reweighting, the energy response / resolution, and
:func:`validate`, which runs them all and writes a report.
"""

from .calibration_error import CalibrationErrorResult, calibration_error
from .classifier import ClassifierConfig, ClassifierResult, auc, classifier_test, train_classifier
from .distances import DistanceResult, EnergyDistanceResult, energy_distance_test, fpd, frechet_distance, kpd
from .one_d import CONSISTENT, NEGLIGIBLE, RELEVANT, OneDComparison, compare_1d, separation_power, wasserstein_1d
from .resolution import EnergyResponse, ResolutionFit, fit_resolution, measure_response, resolution_model
from .reweighting import ReweightResult, closure_check, reweight
from .validate import Showers, ValidationConfig, ValidationReport, energy_features, reweight_response, validate

__all__ = [
    "CONSISTENT",
    "NEGLIGIBLE",
    "RELEVANT",
    "CalibrationErrorResult",
    "ClassifierConfig",
    "ClassifierResult",
    "DistanceResult",
    "EnergyDistanceResult",
    "EnergyResponse",
    "OneDComparison",
    "ResolutionFit",
    "ReweightResult",
    "Showers",
    "ValidationConfig",
    "ValidationReport",
    "auc",
    "calibration_error",
    "classifier_test",
    "closure_check",
    "compare_1d",
    "energy_distance_test",
    "energy_features",
    "fit_resolution",
    "fpd",
    "frechet_distance",
    "kpd",
    "measure_response",
    "resolution_model",
    "reweight",
    "reweight_response",
    "separation_power",
    "train_classifier",
    "validate",
    "wasserstein_1d",
]
