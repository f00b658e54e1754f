"""Reference simulators: the embedded "truth" that plays the role of Geant4 in every study."""

from . import bethe_bloch, gflash
from .bethe_bloch import (
    IONISATION_MEDIA,
    IonisationMedium,
    get_ionisation_medium,
    mean_dedx,
    mean_dedx_per_cm,
    minimum_ionisation,
)
from .calorimeter import ENERGY_RANGE_GEV, Calorimeter, DetectorParams, ShowerBatch, calorimeter
from .files import simulate_to_file
from .materials import MATERIALS, Material, Medium, get_material

__all__ = [
    "ENERGY_RANGE_GEV",
    "IONISATION_MEDIA",
    "MATERIALS",
    "Calorimeter",
    "DetectorParams",
    "IonisationMedium",
    "Material",
    "Medium",
    "ShowerBatch",
    "bethe_bloch",
    "calorimeter",
    "get_ionisation_medium",
    "get_material",
    "gflash",
    "mean_dedx",
    "mean_dedx_per_cm",
    "minimum_ionisation",
    "simulate_to_file",
]
