"""Truth-level dijet events: the container, its HDF5 cache and the embedded parametric generator.

:class:`DijetEvents` holds the two truth jets of N events (leading jet first as generated) as numpy float64 arrays;
:func:`generate_parametric` is the default generator (no external dependency): a Z -> q qbar resonance and a QCD
dijet continuum from documented parametrisations, vectorised with jax.random. Pythia 8 events come from
:func:`surrinf.kinfit.pythia.generate_pythia` (the ``pythia`` extra) and share this container and file format.

HDF5 layout (:meth:`DijetEvents.to_hdf5` / :meth:`DijetEvents.from_hdf5`), plain datasets only:

- ``jets/E``, ``jets/pt``, ``jets/eta``, ``jets/phi``, ``jets/m``: (N, 2) float64 (little endian); energies, transverse
  momenta and masses in GeV, phi in rad in (-pi, pi]; column 0 is the first (leading) jet;
- ``process``: (N,) int8, 0 = QCD dijet, 1 = resonance; ``m_parent``: (N,) float64 [GeV], the resonance's true mass
  (0.0 for QCD events);
- root attributes: ``format = "surrinf-dijets"``, ``format_version = 1``, ``units = "GeV"``, ``n_events``,
  ``metadata`` (a JSON string: generator name and config, seed, ``package_versions``) and ``sha256``: the hex SHA-256
  of the datasets' raw little-endian bytes concatenated in the order above (:data:`HDF5_DATASETS`).

Loading checks format, version, dataset dtypes and shapes and the checksum before building the events (a mismatch
raises :class:`DijetFileError`, a ``ValueError``) and executes no code from the file. Files are written atomically
(a temporary file in the target directory, then ``os.replace``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import equinox as eqx
import h5py
import jax
import jax.numpy as jnp
import numpy as np

from surrinf._atomic import atomic_path
from surrinf._checks import check_positive_int

__all__ = [
    "HDF5_DATASETS",
    "HDF5_FORMAT",
    "HDF5_FORMAT_VERSION",
    "PROCESS_QCD",
    "PROCESS_RESONANCE",
    "DijetEvents",
    "DijetFileError",
    "ParametricDijetConfig",
    "generate_parametric",
    "read_metadata",
]

PROCESS_QCD = 0
PROCESS_RESONANCE = 1

HDF5_FORMAT = "surrinf-dijets"
#: The format version this code writes and the newest it reads.
HDF5_FORMAT_VERSION = 1
#: Dataset names, in the order their bytes enter the ``sha256`` attribute, with their dtype and trailing shape.
HDF5_DATASETS: tuple[tuple[str, str, tuple[int, ...]], ...] = (
    ("jets/E", "<f8", (2,)),
    ("jets/pt", "<f8", (2,)),
    ("jets/eta", "<f8", (2,)),
    ("jets/phi", "<f8", (2,)),
    ("jets/m", "<f8", (2,)),
    ("process", "|i1", ()),
    ("m_parent", "<f8", ()),
)

#: Relative tolerance of the check E^2 = (pt cosh eta)^2 + m^2 (loose enough for float32-derived inputs, tight enough
#: to catch swapped or inconsistent fields).
_CONSISTENCY_RTOL = 1e-6


class DijetFileError(ValueError):
    """A dijet HDF5 file that is not in the expected format, or corrupt (checksum mismatch)."""


def _float_array(value: Any) -> np.ndarray:
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"expected a real float array, got {type(value).__name__}: {e}") from None
    arr.flags.writeable = False
    return arr


def _process_array(value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "iub" and not (arr.dtype.kind == "f" and np.all(arr == np.round(arr))):
        raise ValueError(f"process must be an integer array of 0 (QCD) / 1 (resonance), got dtype {arr.dtype}")
    if arr.size and (np.min(arr) < 0 or np.max(arr) > 1):
        raise ValueError(f"process must contain only 0 (QCD) or 1 (resonance), found values {np.unique(arr)[:5]}")
    out = np.array(arr, dtype=np.int8)
    out.flags.writeable = False
    return out


class DijetEvents(eqx.Module):
    """Truth-level jets of N dijet events; all fields are read-only numpy arrays, jets are columns.

    Fields: ``e`` [GeV], ``pt`` [GeV], ``eta``, ``phi`` [rad, in (-pi, pi]], ``m`` [GeV, jet mass >= 0], each (N, 2)
    float64; ``process`` (N,) int8 (0 = QCD dijet, 1 = resonance); ``m_parent`` (N,) float64 [GeV]: the true mass of
    the decaying resonance for process 1 and 0.0 for QCD events (no parent). The generators store the leading (higher
    pT) jet in column 0; :meth:`with_energies` keeps the column order (column j stays the same jet), so afterwards
    column 0 need not be the higher-pT jet. Validated on construction: consistent shapes, finite values, pt > 0,
    m >= 0, E >= m and E^2 = (pt cosh eta)^2 + m^2 to a relative 1e-6; use :meth:`from_pt_eta_phi_m` to build from
    massive-jet kinematics without energies.
    """

    e: np.ndarray = eqx.field(converter=_float_array)
    pt: np.ndarray = eqx.field(converter=_float_array)
    eta: np.ndarray = eqx.field(converter=_float_array)
    phi: np.ndarray = eqx.field(converter=_float_array)
    m: np.ndarray = eqx.field(converter=_float_array)
    process: np.ndarray = eqx.field(converter=_process_array)
    m_parent: np.ndarray = eqx.field(converter=_float_array)

    _JET_FIELDS: ClassVar[tuple[str, ...]] = ("e", "pt", "eta", "phi", "m")

    def __check_init__(self) -> None:
        if self.e.ndim != 2 or self.e.shape[1] != 2:
            raise ValueError(f"e must have shape (N, 2) [GeV] (two jets per event), got {self.e.shape}")
        n = self.e.shape[0]
        for name in self._JET_FIELDS:
            arr = getattr(self, name)
            if arr.shape != (n, 2):
                raise ValueError(f"{name} must have shape (N, 2) = ({n}, 2) like e, got {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} must be finite; found {int(np.sum(~np.isfinite(arr)))} non-finite values")
        for name in ("process", "m_parent"):
            arr = getattr(self, name)
            if arr.shape != (n,):
                raise ValueError(f"{name} must have shape (N,) = ({n},), got {arr.shape}")
        if not np.all(np.isfinite(self.m_parent)):
            raise ValueError("m_parent [GeV] must be finite (use 0.0 for QCD events, not NaN)")
        if np.any(self.pt <= 0):
            raise ValueError(f"pt [GeV] must be > 0; minimum is {self.pt.min()}")
        if np.any(self.m < 0):
            raise ValueError(f"m [GeV] (jet mass) must be >= 0; minimum is {self.m.min()}")
        if np.any(self.e < self.m):
            i = int(np.argmax(self.m - self.e))
            raise ValueError(
                f"e must be >= m (jet energy >= jet mass); event {i // 2}: E={self.e.flat[i]}, m={self.m.flat[i]} GeV"
            )
        if np.any((self.phi <= -np.pi) | (self.phi > np.pi)):
            raise ValueError("phi [rad] must lie in (-pi, pi]")
        p2 = (self.pt * np.cosh(self.eta)) ** 2
        resid = np.abs(self.e**2 - p2 - self.m**2)
        if np.any(resid > _CONSISTENCY_RTOL * self.e**2):
            i = int(np.argmax(resid / self.e**2))
            raise ValueError(
                f"inconsistent jets: E^2 != (pt cosh eta)^2 + m^2 to a relative {_CONSISTENCY_RTOL} (event {i // 2}: "
                f"E={self.e.flat[i]}, pt={self.pt.flat[i]}, eta={self.eta.flat[i]}, m={self.m.flat[i]}); "
                "build from (pt, eta, phi, m) with DijetEvents.from_pt_eta_phi_m"
            )
        qcd = self.process == PROCESS_QCD
        if np.any(self.m_parent[qcd] != 0.0):
            raise ValueError("m_parent must be 0.0 [GeV] for QCD events (process 0)")
        if np.any(self.m_parent[~qcd] <= 0.0):
            raise ValueError("m_parent [GeV] must be > 0 for resonance events (process 1)")

    # ------------------------------------------------------------------------------------------- construction

    @classmethod
    def from_pt_eta_phi_m(cls, pt: Any, eta: Any, phi: Any, m: Any, process: Any, m_parent: Any) -> DijetEvents:
        """Events from pt [GeV], eta, phi [rad], m [GeV] (each (N, 2)) with E = sqrt((pt cosh eta)^2 + m^2);
        phi is wrapped into (-pi, pi]."""
        pt, eta, phi, m = (_float_array(x) for x in (pt, eta, phi, m))
        e = np.sqrt((pt * np.cosh(eta)) ** 2 + m**2)
        return cls(e=e, pt=pt, eta=eta, phi=_wrap_phi(phi), m=m, process=process, m_parent=m_parent)

    @classmethod
    def concatenate(cls, events: Sequence[DijetEvents]) -> DijetEvents:
        """All events of a non-empty sequence of :class:`DijetEvents`, in order."""
        events = list(events)
        if not events or not all(isinstance(ev, DijetEvents) for ev in events):
            raise ValueError("concatenate needs a non-empty sequence of DijetEvents")
        fields = {f.name: np.concatenate([getattr(ev, f.name) for ev in events]) for f in dataclasses.fields(cls)}
        return cls(**fields)

    def select(self, mask_or_index: Any) -> DijetEvents:
        """A subset: a boolean mask (N,), a 1-D integer index array (any order, repeats allowed) or a slice."""
        if isinstance(mask_or_index, slice):
            idx: Any = mask_or_index
        else:
            idx = np.asarray(mask_or_index)
            if idx.dtype == bool:
                if idx.shape != (self.n_events,):
                    raise ValueError(f"boolean mask must have shape (N,) = ({self.n_events},), got {idx.shape}")
            elif idx.dtype.kind in "iu" and idx.ndim <= 1:
                idx = np.atleast_1d(idx)
                if idx.size and (idx.min() < -self.n_events or idx.max() >= self.n_events):
                    raise ValueError(f"index out of range for {self.n_events} events")
            else:
                raise ValueError(
                    "mask_or_index must be a boolean mask (N,), a 1-D integer array or a slice, "
                    f"got dtype {idx.dtype} shape {idx.shape}"
                )
        return DijetEvents(**{f.name: getattr(self, f.name)[idx] for f in dataclasses.fields(self)})

    def with_energies(self, e_new: Any) -> DijetEvents:
        """The same jets (directions eta, phi and masses m) with new energies ``e_new`` (N, 2) [GeV]:
        |p| = sqrt(E^2 - m^2), pt = |p| / cosh(eta). Columns keep their jet (no re-sorting by pt).
        Raises ``ValueError`` unless every new energy is finite and exceeds the jet mass (|p| > 0)."""
        e_new = _float_array(e_new)
        if e_new.shape != self.e.shape:
            raise ValueError(f"e_new must have shape (N, 2) = {self.e.shape} [GeV], got {e_new.shape}")
        if not np.all(np.isfinite(e_new)):
            raise ValueError("e_new [GeV] must be finite")
        if np.any(e_new <= self.m):
            i = int(np.argmax(self.m - e_new))
            raise ValueError(
                f"e_new must exceed the jet mass m (|p| = sqrt(E^2 - m^2) > 0); event {i // 2}, jet {i % 2}: "
                f"E={e_new.flat[i]} GeV <= m={self.m.flat[i]} GeV"
            )
        p = np.sqrt((e_new - self.m) * (e_new + self.m))
        return dataclasses.replace(self, e=e_new, pt=p / np.cosh(self.eta))

    # ------------------------------------------------------------------------------------------- kinematics

    @property
    def n_events(self) -> int:
        """Number of events N."""
        return int(self.e.shape[0])

    @property
    def px(self) -> np.ndarray:
        """(N, 2) [GeV]."""
        return self.pt * np.cos(self.phi)

    @property
    def py(self) -> np.ndarray:
        """(N, 2) [GeV]."""
        return self.pt * np.sin(self.phi)

    @property
    def pz(self) -> np.ndarray:
        """(N, 2) [GeV]."""
        return self.pt * np.sinh(self.eta)

    @property
    def p(self) -> np.ndarray:
        """(N, 2) [GeV]: momentum magnitude pt cosh(eta)."""
        return self.pt * np.cosh(self.eta)

    def four_momenta(self) -> np.ndarray:
        """(N, 2, 4) [GeV]: (E, px, py, pz) of each jet."""
        return np.stack([self.e, self.px, self.py, self.pz], axis=-1)

    def mjj(self) -> np.ndarray:
        """(N,) [GeV]: dijet invariant mass, sqrt(m1^2 + m2^2 + 2 (E1 E2 - p1.p2))."""
        p1p2 = (
            self.pt[:, 0]
            * self.pt[:, 1]
            * (np.cos(self.phi[:, 0] - self.phi[:, 1]) + np.sinh(self.eta[:, 0]) * np.sinh(self.eta[:, 1]))
        )
        m2 = self.m[:, 0] ** 2 + self.m[:, 1] ** 2 + 2.0 * (self.e[:, 0] * self.e[:, 1] - p1p2)
        return np.sqrt(np.maximum(m2, 0.0))

    def cos_opening(self) -> np.ndarray:
        """(N,): cosine of the angle between the two jets' momenta."""
        c = (np.cos(self.phi[:, 0] - self.phi[:, 1]) + np.sinh(self.eta[:, 0]) * np.sinh(self.eta[:, 1])) / (
            np.cosh(self.eta[:, 0]) * np.cosh(self.eta[:, 1])
        )
        return np.clip(c, -1.0, 1.0)

    # ------------------------------------------------------------------------------------------- files

    def to_hdf5(self, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None) -> Path:
        """Write the events atomically to ``path`` (layout in the module docstring) and return the path.

        ``metadata``: JSON-serialisable mapping (generator name and config, seed, ...); the versions of surrinf,
        numpy, h5py and jax are added under ``package_versions`` (entries given by the caller win).
        """
        if metadata is not None and not isinstance(metadata, Mapping):
            raise ValueError(f"metadata must be a JSON-serialisable mapping or None, got {type(metadata).__name__}")
        doc = dict(metadata or {})
        versions = _package_versions("surrinf", "numpy", "h5py", "jax", "jaxlib", "equinox")
        given = doc.get("package_versions") or {}
        if not isinstance(given, Mapping):
            raise ValueError("metadata['package_versions'] must be a mapping of package name -> version")
        doc["package_versions"] = {**versions, **given}
        try:
            meta_json = json.dumps(doc, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"metadata must be JSON-serialisable (no NaN/inf): {e}") from None
        arrays = self._dataset_arrays()
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            for name, arr in arrays.items():
                f.create_dataset(name, data=arr)
            f.attrs["format"] = HDF5_FORMAT
            f.attrs["format_version"] = HDF5_FORMAT_VERSION
            f.attrs["units"] = "GeV"
            f.attrs["n_events"] = self.n_events
            f.attrs["metadata"] = meta_json
            f.attrs["sha256"] = _checksum(arrays)
        return Path(path)

    @classmethod
    def from_hdf5(cls, path: str | os.PathLike) -> DijetEvents:
        """Read events written by :meth:`to_hdf5`; format, dtypes, shapes and the SHA-256 checksum are verified
        (:class:`DijetFileError` otherwise). See :func:`read_metadata` for the metadata."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"dijet file {path} does not exist")
        with _open(path) as f:
            _check_header(f, path)
            n = f.attrs.get("n_events")
            arrays: dict[str, np.ndarray] = {}
            for name, dtype, tail in HDF5_DATASETS:
                ds = f.get(name)
                if not isinstance(ds, h5py.Dataset):
                    raise DijetFileError(f"{path}: dataset {name!r} is missing")
                if ds.dtype != np.dtype(dtype) or ds.shape != (n, *tail):
                    raise DijetFileError(
                        f"{path}: dataset {name!r} must be {np.dtype(dtype)} of shape {(n, *tail)}, "
                        f"found {ds.dtype} {ds.shape}"
                    )
                arrays[name] = np.asarray(ds[()])
            expected = f.attrs.get("sha256")
        found = _checksum(arrays)
        if found != expected:
            raise DijetFileError(
                f"{path} is corrupt or altered: SHA-256 checksum mismatch (expected {expected}, found {found})"
            )
        try:
            return cls(
                e=arrays["jets/E"],
                pt=arrays["jets/pt"],
                eta=arrays["jets/eta"],
                phi=arrays["jets/phi"],
                m=arrays["jets/m"],
                process=arrays["process"],
                m_parent=arrays["m_parent"],
            )
        except ValueError as e:
            raise DijetFileError(f"{path}: invalid events: {e}") from None

    def _dataset_arrays(self) -> dict[str, np.ndarray]:
        values = (self.e, self.pt, self.eta, self.phi, self.m, self.process, self.m_parent)
        return {
            name: np.ascontiguousarray(v, dtype=dtype)
            for (name, dtype, _), v in zip(HDF5_DATASETS, values, strict=True)
        }


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata dict stored in a dijet HDF5 file (generator, config, seed, package_versions)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dijet file {path} does not exist")
    with _open(path) as f:
        _check_header(f, path)
        raw = f.attrs.get("metadata")
    try:
        meta = json.loads(raw)
    except (TypeError, json.JSONDecodeError) as e:
        raise DijetFileError(f"{path}: the metadata attribute is not a JSON string: {e}") from None
    if not isinstance(meta, dict):
        raise DijetFileError(f"{path}: the metadata attribute must be a JSON object")
    return meta


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise DijetFileError(f"{path} is not a readable HDF5 file (corrupt or truncated?): {e}") from None


def _check_header(f: h5py.File, path: Path) -> None:
    fmt = f.attrs.get("format")
    if fmt != HDF5_FORMAT:
        raise DijetFileError(f"{path} is not a {HDF5_FORMAT} file (format attribute {fmt!r})")
    fv = f.attrs.get("format_version")
    if not isinstance(fv, np.integer | int) or fv < 1:
        raise DijetFileError(f"{path}: invalid format_version {fv!r}")
    if fv > HDF5_FORMAT_VERSION:
        raise DijetFileError(f"{path} has format_version {fv}; this surrinf reads up to {HDF5_FORMAT_VERSION}")
    if f.attrs.get("units") != "GeV":
        raise DijetFileError(f"{path}: units attribute must be 'GeV', found {f.attrs.get('units')!r}")
    n = f.attrs.get("n_events")
    if not isinstance(n, np.integer | int) or n < 0:
        raise DijetFileError(f"{path}: invalid n_events attribute {n!r}")


def _checksum(arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name, dtype, _ in HDF5_DATASETS:
        h.update(np.ascontiguousarray(arrays[name], dtype=dtype).tobytes())
    return h.hexdigest()


def _package_versions(*names: str) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _wrap_phi(phi: np.ndarray) -> np.ndarray:
    """phi [rad] wrapped into (-pi, pi]."""
    w = np.arctan2(np.sin(phi), np.cos(phi))
    return np.where(w <= -np.pi, np.pi, w)


# ============================================================================================ parametric generator


@dataclasses.dataclass(frozen=True)
class ParametricDijetConfig:
    """Parameters of :func:`generate_parametric` (energies, masses and momenta in GeV); JSON via to_dict/from_dict.

    Resonance (vector boson -> q qbar, default the Z): ``m0_gev`` = 91.1876, ``width_gev`` = 2.4952 (PDG Z mass and
    total width), mass window ``m0 +- bw_window_widths * width`` (10); transverse momentum scale
    ``resonance_pt_scale_gev`` = 15 (p0 below; mean pT 21.8 GeV with the cap). QCD: m_jj on
    [``qcd_m_min_gev``, ``qcd_m_max_gev``] = [40, 300] from (1 - x)^p1 / x^p2 with p1 = ``qcd_p1`` = 10,
    p2 = ``qcd_p2`` = 5 (> 1), ``qcd_cos_theta_max`` = 0.8, dijet-system pT scale ``qcd_pt_scale_gev`` = 10 (mean
    ~15 GeV). Both: system pT capped at ``pt_system_max_gev`` = 250; rapidity width ``rapidity_sigma`` = 2;
    jet mass m/pT log-normal with median ``jet_mass_ratio_median`` = 0.1 and log-width ``jet_mass_ratio_sigma``
    = 0.5, capped at ``jet_mass_ratio_max`` = 0.5; ``massless`` = True sets m = 0. Acceptance: both jets
    pT > ``pt_min_gev`` = 20 and |eta| < ``eta_max`` = 2.5. ``sqrt_s_gev`` = 13000 (collider energy).
    """

    sqrt_s_gev: float = 13000.0
    m0_gev: float = 91.1876
    width_gev: float = 2.4952
    bw_window_widths: float = 10.0
    resonance_pt_scale_gev: float = 15.0
    qcd_m_min_gev: float = 40.0
    qcd_m_max_gev: float = 300.0
    qcd_p1: float = 10.0
    qcd_p2: float = 5.0
    qcd_cos_theta_max: float = 0.8
    qcd_pt_scale_gev: float = 10.0
    pt_system_max_gev: float = 250.0
    rapidity_sigma: float = 2.0
    jet_mass_ratio_median: float = 0.1
    jet_mass_ratio_sigma: float = 0.5
    jet_mass_ratio_max: float = 0.5
    massless: bool = False
    pt_min_gev: float = 20.0
    eta_max: float = 2.5

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "massless":
                if not isinstance(value, bool | np.bool_):
                    raise ValueError(f"massless must be a bool, got {value!r}")
                object.__setattr__(self, f.name, bool(value))
                continue
            if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.integer | np.floating):
                raise ValueError(f"{f.name} must be a real number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{f.name} must be finite, got {value!r}")
            object.__setattr__(self, f.name, float(value))
        positive = ("sqrt_s_gev", "m0_gev", "width_gev", "bw_window_widths", "qcd_m_min_gev", "pt_system_max_gev")
        positive += ("jet_mass_ratio_median", "jet_mass_ratio_max", "eta_max")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        non_negative = ("resonance_pt_scale_gev", "qcd_pt_scale_gev", "rapidity_sigma", "jet_mass_ratio_sigma")
        non_negative += ("qcd_p1", "pt_min_gev")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        lo, hi = (
            self.m0_gev - self.bw_window_widths * self.width_gev,
            self.m0_gev + self.bw_window_widths * self.width_gev,
        )
        if lo <= 0 or hi >= self.sqrt_s_gev:
            raise ValueError(
                f"resonance window m0 +- bw_window_widths * width_gev = [{lo}, {hi}] GeV must lie in (0, sqrt_s_gev)"
            )
        if not self.qcd_m_min_gev < self.qcd_m_max_gev < self.sqrt_s_gev:
            raise ValueError(
                f"need 0 < qcd_m_min_gev < qcd_m_max_gev < sqrt_s_gev [GeV], got {self.qcd_m_min_gev}, "
                f"{self.qcd_m_max_gev}, {self.sqrt_s_gev}"
            )
        if self.qcd_p2 <= 1:
            raise ValueError(f"qcd_p2 must be > 1 (a steeply falling 1/x^p2 spectrum), got {self.qcd_p2}")
        if not 0 < self.qcd_cos_theta_max < 1:
            raise ValueError(f"qcd_cos_theta_max must lie in (0, 1), got {self.qcd_cos_theta_max}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of all fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ParametricDijetConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``, missing keys take the defaults."""
        if not isinstance(d, Mapping):
            raise ValueError(f"config must be a mapping, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ParametricDijetConfig keys {unknown}; known: {sorted(known)}")
        return cls(**d)

    def _params(self) -> np.ndarray:
        return np.array([getattr(self, name) for name in _PARAM_NAMES], dtype=np.float64)


_PARAM_NAMES = tuple(f.name for f in dataclasses.fields(ParametricDijetConfig) if f.name != "massless")
_P = {name: i for i, name in enumerate(_PARAM_NAMES)}

#: Events drawn per batch (one compiled kernel for every configuration and process). The drawn events depend on it:
#: changing it changes the events of a key.
_BATCH = 1 << 16
#: Give up (ValueError) when this many batches have been drawn without a single accepted event.
_MAX_EMPTY_BATCHES = 16
_MAX_BATCHES = 100_000


def _boost(e: jax.Array, p: jax.Array, b: jax.Array, gamma: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Boost four-vectors (e (B,), p (3, B)) from the rest frame of a system with momentum/mass b (3, B) and
    gamma = E/M (B,) into the frame where the system moves: e' = gamma e + b.p, p' = p + b (b.p / (gamma + 1) + e)."""
    bp = jnp.sum(b * p, axis=0)
    return gamma * e + bp, p + b * (bp / (gamma + 1.0) + e)


@functools.partial(jax.jit, static_argnames=("batch",))
def _draw_batch(
    key: jax.Array, index: jax.Array, params: jax.Array, resonance: jax.Array, massless: jax.Array, *, batch: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One float64 batch: jets (5, batch, 2) = (E, pt, eta, phi, m), parent mass (batch,) [GeV], acceptance (batch,).

    Must run with float64 enabled. ``resonance`` and ``massless`` are traced booleans, so a single compilation
    serves every process and configuration."""
    par = lambda name: params[_P[name]]
    ku, kn = jax.random.split(jax.random.fold_in(key, index))
    u = jax.random.uniform(ku, (7, batch), dtype=jnp.float64)
    z = jax.random.normal(kn, (3, batch), dtype=jnp.float64)
    rs = par("sqrt_s_gev")

    # Resonance mass: relativistic Breit-Wigner in s = m^2, inverse CDF within the window.
    m0, width, win = par("m0_gev"), par("width_gev"), par("bw_window_widths")
    s0, mg = m0 * m0, m0 * width
    a_lo = jnp.arctan(((m0 - win * width) ** 2 - s0) / mg)
    a_hi = jnp.arctan(((m0 + win * width) ** 2 - s0) / mg)
    m_res = jnp.sqrt(s0 + mg * jnp.tan(a_lo + u[0] * (a_hi - a_lo)))
    # QCD mass: proposal 1/x^p2 by inverse CDF, accepted with probability ((1 - x) / (1 - x_lo))^p1 <= 1.
    q = 1.0 - par("qcd_p2")
    x_lo, x_hi = par("qcd_m_min_gev") / rs, par("qcd_m_max_gev") / rs
    x = (x_lo**q + u[0] * (x_hi**q - x_lo**q)) ** (1.0 / q)
    qcd_ok = u[1] < ((1.0 - x) / (1.0 - x_lo)) ** par("qcd_p1")
    mass = jnp.where(resonance, m_res, x * rs)

    # System pT: dN/dpT ~ pT / (pT^2 + p0^2)^2 on [0, pt_max], inverse CDF; uniform azimuth; Gaussian rapidity.
    p0 = jnp.where(resonance, par("resonance_pt_scale_gev"), par("qcd_pt_scale_gev"))
    t = par("pt_system_max_gev")
    w = u[2] * t * t / (t * t + p0 * p0)
    pt_sys = p0 * jnp.sqrt(w / (1.0 - w))
    phi_sys = 2.0 * jnp.pi * u[3]
    y_sys = par("rapidity_sigma") * z[0]

    # Decay angle: resonance 1 + c^2 (Cardano root of c^3 + 3c + 4 - 8u = 0); QCD |c| ~ 1/(1 - |c|)^2, random sign.
    v = 4.0 * u[4] - 2.0
    a = jnp.cbrt(v + jnp.sqrt(v * v + 1.0))
    c_res = a - 1.0 / a
    cmax = par("qcd_cos_theta_max")
    c_abs = 1.0 - 1.0 / (1.0 + u[4] * cmax / (1.0 - cmax))
    c_qcd = jnp.where(u[5] < 0.5, c_abs, -c_abs)
    c = jnp.clip(jnp.where(resonance, c_res, c_qcd), -1.0, 1.0)
    s = jnp.sqrt(1.0 - c * c)
    phi_star = 2.0 * jnp.pi * u[6]
    half = 0.5 * mass
    n = jnp.stack([s * jnp.cos(phi_star), s * jnp.sin(phi_star), c])

    mt = jnp.sqrt(mass * mass + pt_sys * pt_sys)
    b = jnp.stack([pt_sys * jnp.cos(phi_sys), pt_sys * jnp.sin(phi_sys), mt * jnp.sinh(y_sys)]) / mass
    gamma = mt * jnp.cosh(y_sys) / mass
    _, p1 = _boost(half, half * n, b, gamma)
    _, p2 = _boost(half, -half * n, b, gamma)
    mom = jnp.stack([p1, p2], axis=-1)  # (3, batch, 2)

    pt = jnp.hypot(mom[0], mom[1])
    eta = jnp.arcsinh(mom[2] / pt)
    phi = jnp.arctan2(mom[1], mom[0])
    phi = jnp.where(phi <= -jnp.pi, jnp.pi, phi)
    r_med, r_sig, r_max = par("jet_mass_ratio_median"), par("jet_mass_ratio_sigma"), par("jet_mass_ratio_max")
    ratio = jnp.minimum(r_med * jnp.exp(r_sig * z[1:].T), r_max)
    m = jnp.where(massless, 0.0, ratio * pt)
    e = jnp.sqrt((pt * jnp.cosh(eta)) ** 2 + m * m)
    jets = jnp.stack([e, pt, eta, phi, m])  # (5, batch, 2)
    swap = pt[:, 1] > pt[:, 0]
    jets = jnp.where(swap[None, :, None], jets[:, :, ::-1], jets)

    accept = (
        (resonance | qcd_ok)
        & jnp.all(pt > par("pt_min_gev"), axis=-1)
        & jnp.all(jnp.abs(eta) < par("eta_max"), axis=-1)
        & (mt * jnp.exp(jnp.abs(y_sys)) <= rs)  # parton momentum fractions x1, x2 <= 1
        & jnp.all(jnp.isfinite(jets), axis=(0, 2))
    )
    return jets, mass, accept


def _check_key(key: Any) -> jax.Array:
    if isinstance(key, jax.Array):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ():
            return key
        if key.dtype == jnp.uint32 and key.shape == (2,):
            return key
    raise ValueError(
        f"key must be a single jax.random key (jax.random.key(seed)), got {type(key).__name__} "
        f"{getattr(key, 'dtype', '')}{getattr(key, 'shape', '')}"
    )


def _generate_process(key: jax.Array, n: int, config: ParametricDijetConfig, resonance: bool) -> DijetEvents:
    """n accepted events of one process: fixed-size batches i = 0, 1, ... from fold_in(key, i) until n pass."""
    params = jnp.asarray(config._params())
    res, massless = jnp.asarray(resonance), jnp.asarray(config.massless)
    chunks: list[tuple[np.ndarray, np.ndarray]] = []
    have = 0
    i = 0
    while have < n:
        if i >= _MAX_BATCHES or (have == 0 and i >= _MAX_EMPTY_BATCHES):
            raise ValueError(
                f"the acceptance of ParametricDijetConfig is too small: {have} of {i * _BATCH} drawn "
                f"{'resonance' if resonance else 'QCD'} events passed (loosen pt_min_gev / eta_max or widen the "
                "mass range)"
            )
        jets, mass, accept = _draw_batch(key, jnp.asarray(i, jnp.uint32), params, res, massless, batch=_BATCH)
        acc = np.asarray(accept)
        take = np.flatnonzero(acc)[: n - have]
        chunks.append((np.asarray(jets)[:, take], np.asarray(mass)[take]))
        have += take.size
        i += 1
    jets = np.concatenate([c[0] for c in chunks], axis=1)
    m_parent = np.concatenate([c[1] for c in chunks]) if resonance else np.zeros(n)
    process = np.full(n, PROCESS_RESONANCE if resonance else PROCESS_QCD, np.int8)
    return DijetEvents(e=jets[0], pt=jets[1], eta=jets[2], phi=jets[3], m=jets[4], process=process, m_parent=m_parent)


def generate_parametric(
    key: jax.Array,
    n_events: int,
    config: ParametricDijetConfig | None = None,
    process: Literal["both", "qcd", "resonance"] = "both",
    signal_fraction: float = 0.5,
) -> DijetEvents:
    """``n_events`` truth dijet events passing the acceptance, from the embedded parametric generator (no Pythia).

    ``process``: "resonance", "qcd" or "both" (round(signal_fraction * n_events) resonance events, the rest QCD,
    shuffled; ``signal_fraction`` in [0, 1] is used only for "both"). Same key and config -> identical arrays
    (float64 throughout; uniforms drawn with jax.random in float64 under a local ``jax.enable_x64``). The
    resonance and QCD samples come from ``jax.random.split(key, 3)[:2]`` and the shuffle from the third key, so
    "resonance" with a key gives the resonance events of "both" with that key.

    Physics (all momenta in the lab frame of a pp collider at ``sqrt_s_gev``; choices are approximations meant to give
    realistic shapes, not a QCD calculation):

    * Resonance: a vector boson (default Z: m0 = 91.1876 GeV, Gamma = 2.4952 GeV) decaying to a massless quark pair.
      Mass from a relativistic Breit-Wigner in s = m^2, dN/ds ~ 1 / ((s - m0^2)^2 + m0^2 Gamma^2) (fixed width, no
      parton-luminosity factor), truncated to [m0 - 10 Gamma, m0 + 10 Gamma]; its m quartiles are m0 - 0.472 Gamma and
      m0 + 0.479 Gamma (IQR 0.950 Gamma for the truncated Breit-Wigner; Gamma without truncation). Resonance pT
      from dN/dpT ~ pT / (pT^2 + p0^2)^2 (linear rise at small pT, pT^-3 hard-emission tail; p0 = 15 GeV: median
      15 GeV, mean 21.8 GeV with the 250 GeV cap), uniform azimuth. Rapidity y ~ Normal(0, 2): an approximation
      of the broad, nearly flat parton-luminosity rapidity shape of a 91 GeV state at 13 TeV. Decay angle:
      dN/dcos(theta*) ~ 1 + cos^2(theta*) (unpolarised vector -> massless fermions), uniform phi*, with the axis the
      beam (z) direction of the rest frame reached by a pure boost from the lab (close to Collins-Soper at small
      pT); both quarks boosted to the lab.
    * QCD: the parton-pair mass from the standard dijet fit function dN/dm ~ (1 - x)^p1 / x^p2, x = m / sqrt(s),
      p1 = 10, p2 = 5 (typical LHC fit values), on [40, 300] GeV (accept-reject on a 1/x^p2 proposal); t-channel
      dominated |cos(theta*)| ~ 1 / (1 - |cos(theta*)|)^2 truncated at |cos(theta*)| < 0.8 (Rutherford-like),
      random sign; dijet-system pT from the same form with p0 = 10 GeV (initial-state radiation); rapidity as for
      the resonance. m_parent is stored as 0.0 (QCD has no parent resonance).
    * Jets: each parton becomes a truth jet with the parton's 3-momentum and a jet mass m = r pT with r log-normal
      (median 0.1, log-width 0.5, capped at 0.5; typical of R = 0.4 light-quark jets), E = sqrt(p^2 + m^2), so
      E > m always; ``massless=True`` sets m = 0, E = |p| and then mjj equals m_parent exactly (up to rounding).
      Jet masses raise mjj above the parton-pair mass (for the Z by 0.5 GeV at the median, 3.8 GeV at the 99th
      percentile).
    * Acceptance (about 52 % of resonance and 19 % of QCD candidates with the defaults): both jets pT > 20 GeV and
      |eta| < 2.5, and the partons' momentum fractions x1,2 = m_T exp(+-y) / sqrt(s) <= 1. Fixed batches of 65536
      candidates are drawn (each with ``jax.random.fold_in(key, batch index)``) until ``n_events`` pass; the first
      passing ones are kept, in order. Leading (higher-pT) jet in column 0.
    """
    key = _check_key(key)
    n_events = check_positive_int(n_events, "n_events")
    config = ParametricDijetConfig() if config is None else config
    if not isinstance(config, ParametricDijetConfig):
        raise ValueError(f"config must be a ParametricDijetConfig or None, got {type(config).__name__}")
    if process not in ("both", "qcd", "resonance"):
        raise ValueError(f"process must be 'both', 'qcd' or 'resonance', got {process!r}")
    if isinstance(signal_fraction, bool) or not isinstance(signal_fraction, int | float | np.integer | np.floating):
        raise ValueError(f"signal_fraction must be a number in [0, 1], got {signal_fraction!r}")
    if not 0.0 <= signal_fraction <= 1.0:
        raise ValueError(f"signal_fraction must lie in [0, 1], got {signal_fraction!r}")
    with jax.enable_x64(True):
        k_res, k_qcd, k_perm = jax.random.split(key, 3)
        if process == "resonance":
            return _generate_process(k_res, n_events, config, resonance=True)
        if process == "qcd":
            return _generate_process(k_qcd, n_events, config, resonance=False)
        n_res = math.floor(signal_fraction * n_events + 0.5)
        parts = [
            _generate_process(k, n, config, resonance=r)
            for k, n, r in ((k_res, n_res, True), (k_qcd, n_events - n_res, False))
            if n > 0
        ]
        seed = np.asarray(jax.random.key_data(k_perm) if jnp.issubdtype(k_perm.dtype, jax.dtypes.prng_key) else k_perm)
    perm = np.random.Generator(np.random.PCG64(seed.astype(np.uint32).ravel().tolist())).permutation(n_events)
    return DijetEvents.concatenate(parts).select(perm)
