"""Reference simulators: the embedded "truth" that plays the role of Geant4 in every study."""

from . import gflash
from .calorimeter import ENERGY_RANGE_GEV, Calorimeter, DetectorParams, ShowerBatch, calorimeter
from .files import simulate_to_file
from .materials import MATERIALS, Material, Medium, get_material

__all__ = [
    "ENERGY_RANGE_GEV",
    "MATERIALS",
    "Calorimeter",
    "DetectorParams",
    "Material",
    "Medium",
    "ShowerBatch",
    "calorimeter",
    "get_material",
    "gflash",
    "simulate_to_file",
]
