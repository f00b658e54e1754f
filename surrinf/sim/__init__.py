"""Reference simulators: the embedded "truth" that plays the role of Geant4 in every study."""

from . import bethe_bloch, gflash, muon, pileup, tracks
from .bethe_bloch import (
    IONISATION_MEDIA,
    IonisationMedium,
    get_ionisation_medium,
    landau_xi,
    mean_dedx,
    mean_dedx_per_cm,
    minimum_ionisation,
    most_probable_loss,
)
from .calorimeter import ENERGY_RANGE_GEV, Calorimeter, DetectorParams, ShowerBatch, calorimeter
from .files import simulate_to_file
from .materials import MATERIALS, Material, Medium, get_material
from .muon import (
    C_GEV_PER_T_M,
    MUON_CONDITION_COLUMNS,
    MuonSpectrometer,
    exact_sagitta_m,
    highland_theta0,
    measure_sagitta,
    pt_from_sagitta_gev,
    sagitta_m,
)
from .pileup import (
    DEFAULT_SOFT_ENERGY_GEV,
    PileupDeposits,
    PileupModel,
    PileupResponse,
    draw_pileup,
    overlay_pileup,
)
from .tracks import TrackHitSimulator, expected_truncated_mean, truncated_mean

__all__ = [
    "C_GEV_PER_T_M",
    "DEFAULT_SOFT_ENERGY_GEV",
    "ENERGY_RANGE_GEV",
    "IONISATION_MEDIA",
    "MATERIALS",
    "MUON_CONDITION_COLUMNS",
    "Calorimeter",
    "DetectorParams",
    "IonisationMedium",
    "Material",
    "Medium",
    "MuonSpectrometer",
    "PileupDeposits",
    "PileupModel",
    "PileupResponse",
    "ShowerBatch",
    "TrackHitSimulator",
    "bethe_bloch",
    "calorimeter",
    "draw_pileup",
    "exact_sagitta_m",
    "expected_truncated_mean",
    "get_ionisation_medium",
    "get_material",
    "gflash",
    "highland_theta0",
    "landau_xi",
    "mean_dedx",
    "mean_dedx_per_cm",
    "measure_sagitta",
    "minimum_ionisation",
    "most_probable_loss",
    "muon",
    "overlay_pileup",
    "pileup",
    "pt_from_sagitta_gev",
    "sagitta_m",
    "simulate_to_file",
    "tracks",
    "truncated_mean",
]
