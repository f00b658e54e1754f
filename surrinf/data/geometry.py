"""Cylindrical voxel geometries: layers along the beam x radial bins x angular bins.

Voxel order follows the CaloChallenge convention: radial bins vary fastest, then angular bins, then
layers, ``index = layer_offset[l] + alpha_bin * n_radial[l] + r_bin``. A layer whose radial edges are
just ``[0]`` has no voxels (as in the CaloChallenge dataset-1 binnings).

Lengths are in mm. The four CaloChallenge binnings are shipped with the package
(``surrinf/data/binnings/*.xml``); their XML files carry no layer depths, so the depths used here are
stated per geometry below.
"""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from importlib import resources

import numpy as np

#: Sampling cell of the CaloChallenge dataset-2/3 calorimeter: 1.4 mm W + 0.3 mm Si (mm).
WSI_CELL_MM = 1.7


@dataclass(frozen=True, eq=False)
class Geometry:
    """A cylindrical voxel geometry.

    Attributes:
        name: identifier (``"default"``, ``"ds2"``, ...).
        layer_edges_mm: ``(n_layers + 1,)`` increasing depths of the layer boundaries along the beam,
            measured from the calorimeter front, mm. The last edge may be ``inf`` (unbounded depth).
        r_edges_mm: per layer, the increasing radial bin edges in mm starting at 0; the last edge may be
            ``inf`` (unbounded radius). ``[0]`` means the layer has no voxels.
        n_alpha: per layer, the number of equal angular bins covering [-pi, pi).
    """

    name: str
    layer_edges_mm: np.ndarray
    r_edges_mm: tuple[np.ndarray, ...]
    n_alpha: tuple[int, ...]

    def __post_init__(self) -> None:
        edges = np.asarray(self.layer_edges_mm, dtype=np.float64)
        r_edges = tuple(np.asarray(r, dtype=np.float64).reshape(-1) for r in self.r_edges_mm)
        n_alpha = tuple(int(a) for a in self.n_alpha)
        object.__setattr__(self, "layer_edges_mm", edges)
        object.__setattr__(self, "r_edges_mm", r_edges)
        object.__setattr__(self, "n_alpha", n_alpha)
        if edges.ndim != 1 or edges.size < 2:
            raise ValueError(f"layer_edges_mm must be 1-D with n_layers + 1 >= 2 entries, got shape {edges.shape}")
        if np.any(np.isnan(edges)) or edges[0] < 0 or np.any(np.diff(edges) < 0) or np.any(np.isinf(edges[:-1])):
            raise ValueError("layer_edges_mm must be non-decreasing depths >= 0 mm (only the last may be inf)")
        n_layers = edges.size - 1
        if len(r_edges) != n_layers or len(n_alpha) != n_layers:
            raise ValueError(
                f"r_edges_mm and n_alpha need one entry per layer ({n_layers}), got {len(r_edges)} and {len(n_alpha)}"
            )
        for i, (r, a) in enumerate(zip(r_edges, n_alpha, strict=True)):
            if r.size == 0 or r[0] != 0.0:
                raise ValueError(f"r_edges_mm[{i}] must start at 0 mm, got {r.tolist()}")
            if np.any(np.isnan(r)) or np.any(np.diff(r) <= 0) or np.any(np.isinf(r[:-1])):
                raise ValueError(f"r_edges_mm[{i}] must be strictly increasing (only the last may be inf)")
            if a < 1:
                raise ValueError(f"n_alpha[{i}] must be >= 1, got {a}")

    # ----------------------------------------------------------------- derived quantities
    @property
    def n_layers(self) -> int:
        return len(self.r_edges_mm)

    @property
    def n_radial(self) -> np.ndarray:
        """``(n_layers,)`` number of radial bins per layer (0 for a layer without voxels)."""
        return np.array([r.size - 1 for r in self.r_edges_mm], dtype=np.int64)

    @property
    def voxels_per_layer(self) -> np.ndarray:
        """``(n_layers,)`` number of voxels in each layer."""
        return self.n_radial * np.array(self.n_alpha, dtype=np.int64)

    @property
    def layer_offsets(self) -> np.ndarray:
        """``(n_layers + 1,)`` flat index of the first voxel of each layer (last entry = n_voxels)."""
        return np.concatenate([[0], np.cumsum(self.voxels_per_layer)])

    @property
    def n_voxels(self) -> int:
        return int(self.voxels_per_layer.sum())

    @property
    def active_layers(self) -> np.ndarray:
        """Indices of the layers that have voxels."""
        return np.nonzero(self.voxels_per_layer > 0)[0]

    @property
    def layer_centers_mm(self) -> np.ndarray:
        """``(n_layers,)`` depth of each layer's centre in mm (an unbounded last layer gets its front + 1 mm)."""
        e = self.layer_edges_mm
        back = np.where(np.isinf(e[1:]), e[:-1] + 1.0, e[1:])
        return 0.5 * (e[:-1] + back)

    def voxel_coordinates(self) -> dict[str, np.ndarray]:
        """Per-voxel ``layer``, ``alpha_bin``, ``r_bin`` indices and bin centres ``r_mm``, ``alpha``, ``x_mm``,
        ``y_mm`` (``(n_voxels,)`` each). Radial centres of unbounded bins are placed at the inner edge."""
        layer, a_bin, r_bin, r_c, a_c = [], [], [], [], []
        for i, (r, na) in enumerate(zip(self.r_edges_mm, self.n_alpha, strict=True)):
            nr = r.size - 1
            if nr == 0:
                continue
            outer = np.where(np.isinf(r[1:]), r[:-1], r[1:])
            rc = 0.5 * (r[:-1] + outer)
            ac = -np.pi + (np.arange(na) + 0.5) * 2 * np.pi / na
            aa, rr = np.meshgrid(np.arange(na), np.arange(nr), indexing="ij")
            layer.append(np.full(na * nr, i))
            a_bin.append(aa.ravel())
            r_bin.append(rr.ravel())
            # A single angular bin has no direction: its centre sits on the axis in x/y.
            r_c.append(rc[rr.ravel()])
            a_c.append(ac[aa.ravel()])
        cat = (lambda xs, dt: np.concatenate(xs).astype(dt)) if layer else (lambda xs, dt: np.zeros(0, dt))
        out = {
            "layer": cat(layer, np.int64),
            "alpha_bin": cat(a_bin, np.int64),
            "r_bin": cat(r_bin, np.int64),
            "r_mm": cat(r_c, np.float64),
            "alpha": cat(a_c, np.float64),
        }
        single = np.array(self.n_alpha)[out["layer"]] == 1 if out["layer"].size else np.zeros(0, bool)
        out["x_mm"] = np.where(single, 0.0, out["r_mm"] * np.cos(out["alpha"]))
        out["y_mm"] = np.where(single, 0.0, out["r_mm"] * np.sin(out["alpha"]))
        return out

    # ----------------------------------------------------------------- serialisation
    def to_dict(self) -> dict:
        """JSON-compatible description (``inf`` written as the string ``"inf"``)."""

        def enc(x: np.ndarray) -> list:
            return ["inf" if np.isinf(v) else float(v) for v in x]

        return {
            "name": self.name,
            "layer_edges_mm": enc(self.layer_edges_mm),
            "r_edges_mm": [enc(r) for r in self.r_edges_mm],
            "n_alpha": list(self.n_alpha),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Geometry:
        try:
            return cls(
                name=str(d["name"]),
                layer_edges_mm=np.array([float(v) for v in d["layer_edges_mm"]]),
                r_edges_mm=tuple(np.array([float(v) for v in r]) for r in d["r_edges_mm"]),
                n_alpha=tuple(int(a) for a in d["n_alpha"]),
            )
        except KeyError as err:
            raise ValueError(f"geometry description lacks the key {err}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Geometry:
        return cls.from_dict(json.loads(text))

    def fingerprint(self) -> str:
        """SHA-256 of the binning (layer depths, radial edges, angular bins), independent of the name."""
        d = self.to_dict()
        d.pop("name")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()

    def same_binning(self, other: Geometry) -> bool:
        """True when both geometries have identical voxels (names may differ)."""
        return self.fingerprint() == other.fingerprint()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Geometry) and self.name == other.name and self.same_binning(other)

    def __hash__(self) -> int:
        return hash((self.name, self.fingerprint()))

    def __repr__(self) -> str:
        return f"Geometry({self.name!r}, n_layers={self.n_layers}, n_voxels={self.n_voxels})"


def parse_binning_xml(text: str, layer_edges_mm: np.ndarray, name: str) -> Geometry:
    """Build a geometry from a CaloChallenge binning XML string and the layer depths (mm)."""
    root = ET.fromstring(text)
    layers = sorted(root.iter("Layer"), key=lambda el: int(el.get("id")))
    if not layers:
        raise ValueError("binning XML has no <Layer> elements")
    r_edges = [np.array([float(v) for v in el.get("r_edges").split(",")]) for el in layers]
    n_alpha = [int(el.get("n_bin_alpha")) for el in layers]
    return Geometry(name, np.asarray(layer_edges_mm, dtype=np.float64), tuple(r_edges), tuple(n_alpha))


def _binning_text(filename: str) -> str:
    return resources.files("surrinf.data").joinpath("binnings", filename).read_text(encoding="utf-8")


_DS1_THICKNESS_X0 = {0: 2.0, 1: 4.3, 2: 16.0, 3: 2.0, 12: 20.0, 13: 20.0, 14: 20.0}


def _ds1_layer_edges(has_voxels: list[bool]) -> np.ndarray:
    """Approximate ATLAS barrel (|eta| ~ 0.2) depths for the dataset-1 layers, in mm of the Pb/LAr
    sampling structure used for ds1 (X0_eff = 18.6 mm): presampler 2 X0, strips 4.3 X0, middle 16 X0,
    back 2 X0, hadronic layers (ids 12-14) 20 X0 each. Layers without voxels get zero thickness."""
    x0 = 18.6
    thickness = np.array([_DS1_THICKNESS_X0.get(i, 0.0) * x0 if v else 0.0 for i, v in enumerate(has_voxels)])
    return np.concatenate([[0.0], np.cumsum(thickness)])


def _default_geometry() -> Geometry:
    """Small W/Si geometry for CPU studies: 15 layers of 5 sampling cells (8.5 mm = 2.0 X0 each,
    30 X0 in all), 6 radial bins out to 50 mm (4.6 Moliere radii), 4 angular bins: 360 voxels."""
    layer_edges = np.arange(16) * 5 * WSI_CELL_MM
    r = np.array([0.0, 2.5, 5.0, 10.0, 17.5, 30.0, 50.0])
    return Geometry("default", layer_edges, tuple(r for _ in range(15)), tuple(4 for _ in range(15)))


#: Names accepted by :func:`get_geometry`.
GEOMETRY_NAMES = ("default", "ds1-photons", "ds1-pions", "ds2", "ds3")


def get_geometry(name: str) -> Geometry:
    """Return a named geometry: ``default`` (360 voxels), ``ds1-photons`` (368), ``ds1-pions`` (533),
    ``ds2`` (6480) or ``ds3`` (40500). DS2/DS3 layers are two W/Si sampling cells (3.4 mm) deep."""
    if name == "default":
        return _default_geometry()
    if name in ("ds1-photons", "ds1-pions"):
        fname = "binning_dataset_1_photons.xml" if name == "ds1-photons" else "binning_dataset_1_pions.xml"
        text = _binning_text(fname)
        layers = sorted(ET.fromstring(text).iter("Layer"), key=lambda el: int(el.get("id")))
        has_voxels = [el.get("r_edges").strip() != "0" for el in layers]
        return parse_binning_xml(text, _ds1_layer_edges(has_voxels), name)
    if name in ("ds2", "ds3"):
        fname = "binning_dataset_2.xml" if name == "ds2" else "binning_dataset_3.xml"
        return parse_binning_xml(_binning_text(fname), np.arange(46) * 2 * WSI_CELL_MM, name)
    raise ValueError(f"unknown geometry {name!r}; expected one of {', '.join(GEOMETRY_NAMES)}")
