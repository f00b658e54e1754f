"""Shower data: voxel geometries, the CaloChallenge HDF5 format, high-level features and preprocessing."""

from surrinf.data.bijection import ShowerBijection
from surrinf.data.calochallenge import (
    THETA_COLUMNS,
    THETA_UNITS,
    ShowerData,
    ShowerFileError,
    ShowerWriter,
    file_info,
    file_info_json,
    iter_showers,
    read_showers,
    validate_file,
    write_showers,
)
from surrinf.data.conditional import ConditionalStandardize
from surrinf.data.features import (
    PER_LAYER_FEATURES,
    centroids,
    depth_of_maximum,
    energy_ratio,
    flatten_features,
    high_level_features,
    layer_energies,
    sparsity,
    total_energy,
    widths,
)
from surrinf.data.geometry import GEOMETRY_NAMES, Geometry, get_geometry
from surrinf.data.preprocessing import LayerFractionTransform, Standardize, transform_from_dict

__all__ = [
    "GEOMETRY_NAMES",
    "PER_LAYER_FEATURES",
    "THETA_COLUMNS",
    "THETA_UNITS",
    "ConditionalStandardize",
    "Geometry",
    "LayerFractionTransform",
    "ShowerBijection",
    "ShowerData",
    "ShowerFileError",
    "ShowerWriter",
    "Standardize",
    "centroids",
    "depth_of_maximum",
    "energy_ratio",
    "file_info",
    "file_info_json",
    "flatten_features",
    "get_geometry",
    "high_level_features",
    "iter_showers",
    "layer_energies",
    "read_showers",
    "sparsity",
    "total_energy",
    "transform_from_dict",
    "validate_file",
    "widths",
    "write_showers",
]
