"""Validation of response models: fidelity metrics and the energy response / resolution."""

from .resolution import EnergyResponse, ResolutionFit, fit_resolution, measure_response, resolution_model

__all__ = ["EnergyResponse", "ResolutionFit", "fit_resolution", "measure_response", "resolution_model"]
