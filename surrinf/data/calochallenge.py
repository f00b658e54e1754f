"""Reading and writing showers in the CaloChallenge HDF5 format.

File layout (all energies in MeV, as in the CaloChallenge datasets):

* ``incident_energies``: float32 ``(N, 1)``, incident particle energy, MeV.
* ``showers``: float32 ``(N, n_voxels)``, deposited energy per voxel, MeV; gzip compressed and
  HDF5-chunked by rows so that row slices read efficiently.

Optional extras written by surrinf (real CaloChallenge files have none of them and read fine):

* ``theta``: float32 ``(N, 3)`` = (energy_scale [1], sampling_term [GeV^1/2], noise_sigma [GeV]) with
  attributes ``columns`` and ``units``.
* ``impact_offset_mm``: float32 ``(N, 2)``, transverse impact offset (x, y) in mm.
* File attributes ``surrinf_geometry`` (geometry JSON), ``surrinf_version``, ``material``, ``particle``.

:func:`read_showers` returns the arrays exactly as h5py gives them (bitwise, in the stored dtype);
:func:`iter_showers` reads row slices one chunk at a time so that memory stays bounded; both validate
the file (structure always, values unless ``validate=False``) and raise :class:`ShowerFileError` with a
message that names the file, the dataset or argument and the expected form.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from surrinf._atomic import atomic_path
from surrinf.data.geometry import GEOMETRY_NAMES, Geometry, get_geometry

__all__ = [
    "THETA_COLUMNS",
    "THETA_UNITS",
    "ShowerData",
    "ShowerFileError",
    "ShowerWriter",
    "file_info",
    "file_info_json",
    "iter_showers",
    "read_showers",
    "validate_file",
    "write_showers",
]

#: Column names and units of the optional ``theta`` dataset.
THETA_COLUMNS = ("energy_scale", "sampling_term", "noise_sigma")
THETA_UNITS = ("1", "GeV^1/2", "GeV")

_ENERGIES = "incident_energies"
_SHOWERS = "showers"
_THETA = "theta"
_OFFSET = "impact_offset_mm"
_GEOMETRY_ATTR = "surrinf_geometry"
_VERSION_ATTR = "surrinf_version"
_RESERVED_ATTRS = (_GEOMETRY_ATTR, _VERSION_ATTR)
#: Factor of the default negative-voxel tolerance: this many times the largest stored noise sigma.
NEGATIVE_TOLERANCE_SIGMAS = 5.0
#: Rows per block when checking values, so that temporaries stay small (elements per block).
_CHECK_BLOCK_ELEMENTS = 1 << 22
#: HDF5 chunk cache per dataset when reading (a chunk read by two consecutive row slices is decompressed once).
_CHUNK_CACHE_BYTES = 4 << 20


class ShowerFileError(ValueError):
    """A shower file (or data to be written to one) does not have the expected form."""


def _version() -> str:
    try:
        return metadata.version("surrinf")
    except metadata.PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------------------------- data


@dataclass(frozen=True, eq=False)
class ShowerData:
    """A batch of showers in file units.

    Attributes:
        incident_energies_mev: ``(N, 1)`` incident energies, MeV (float32 when written by surrinf;
            arrays read from a file keep the stored dtype so that they are bitwise what h5py returns).
        showers_mev: ``(N, V)`` voxel energies, MeV.
        theta: ``(N, 3)`` (energy_scale [1], sampling_term [GeV^1/2], noise_sigma [GeV]) or None.
        impact_offset_mm: ``(N, 2)`` transverse impact offsets (x, y), mm, or None.
        geometry: the voxel geometry, or None when unknown (then ``V`` is only checked for consistency).
        attrs: extra file attributes (``material``, ``particle``, ...); str/int/float/bool values.
    """

    incident_energies_mev: np.ndarray
    showers_mev: np.ndarray
    theta: np.ndarray | None = None
    impact_offset_mm: np.ndarray | None = None
    geometry: Geometry | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        e = np.asarray(self.incident_energies_mev)
        s = np.asarray(self.showers_mev)
        object.__setattr__(self, "incident_energies_mev", e)
        object.__setattr__(self, "showers_mev", s)
        object.__setattr__(self, "attrs", dict(self.attrs))
        if e.ndim != 2 or e.shape[1] != 1:
            raise ValueError(f"incident_energies_mev must have shape (N, 1), got {e.shape}")
        if s.ndim != 2 or s.shape[0] != e.shape[0]:
            raise ValueError(f"showers_mev must have shape (N, n_voxels) with N = {e.shape[0]}, got {s.shape}")
        for name, width in (("theta", 3), ("impact_offset_mm", 2)):
            a = getattr(self, name)
            if a is None:
                continue
            a = np.asarray(a)
            object.__setattr__(self, name, a)
            if a.shape != (e.shape[0], width):
                raise ValueError(f"{name} must have shape (N, {width}) with N = {e.shape[0]}, got {a.shape}")
        if self.geometry is not None and s.shape[1] != self.geometry.n_voxels:
            raise ValueError(
                f"showers_mev has {s.shape[1]} voxels per shower but geometry {self.geometry.name!r} "
                f"has {self.geometry.n_voxels}"
            )

    @property
    def n(self) -> int:
        """Number of showers N."""
        return int(self.showers_mev.shape[0])

    @property
    def n_voxels(self) -> int:
        return int(self.showers_mev.shape[1])

    def __len__(self) -> int:
        return self.n

    def energies_gev(self) -> np.ndarray:
        """``(N,)`` float32 incident energies in GeV."""
        return (self.incident_energies_mev[:, 0].astype(np.float64) / 1000.0).astype(np.float32)

    def showers_gev(self) -> np.ndarray:
        """``(N, V)`` float32 voxel energies in GeV."""
        return (self.showers_mev.astype(np.float64) / 1000.0).astype(np.float32)

    @classmethod
    def from_gev(
        cls,
        energies_gev: np.ndarray,
        showers_gev: np.ndarray,
        theta: np.ndarray | None = None,
        impact_offset_mm: np.ndarray | None = None,
        geometry: Geometry | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> ShowerData:
        """Build from GeV arrays: energies ``(N,)`` or ``(N, 1)``, showers ``(N, V)``.

        The conversion is done in float64 (x 1000) and then cast to float32; theta and offsets are cast
        to float32."""
        e = np.asarray(energies_gev, dtype=np.float64)
        if e.ndim == 1:
            e = e[:, None]
        s = np.asarray(showers_gev, dtype=np.float64)
        return cls(
            incident_energies_mev=(e * 1000.0).astype(np.float32),
            showers_mev=(s * 1000.0).astype(np.float32),
            theta=None if theta is None else np.asarray(theta, dtype=np.float32),
            impact_offset_mm=None if impact_offset_mm is None else np.asarray(impact_offset_mm, dtype=np.float32),
            geometry=geometry,
            attrs=attrs or {},
        )

    def __getitem__(self, idx: int | slice | np.ndarray | Sequence[int]) -> ShowerData:
        """Subset of rows by slice, integer index array or boolean mask (an int keeps one row, 2-D)."""
        if isinstance(idx, (int, np.integer)):
            i = int(idx) + (self.n if idx < 0 else 0)
            if not 0 <= i < self.n:
                raise IndexError(f"shower index {idx} out of range for {self.n} showers")
            idx = slice(i, i + 1)
        elif not isinstance(idx, slice):
            idx = np.asarray(idx)
            if idx.dtype != bool and not np.issubdtype(idx.dtype, np.integer):
                raise IndexError(f"showers can be indexed by slices, integer arrays or masks, got {idx.dtype}")

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        return ShowerData(
            self.incident_energies_mev[idx],
            self.showers_mev[idx],
            take(self.theta),
            take(self.impact_offset_mm),
            self.geometry,
            self.attrs,
        )

    @classmethod
    def concatenate(cls, parts: Sequence[ShowerData]) -> ShowerData:
        """Join batches row-wise. All must have the same voxel count, geometry binning (or none) and the
        same optional datasets; the result keeps the attributes on which all parts agree."""
        parts = list(parts)
        if not parts:
            raise ValueError("concatenate needs at least one ShowerData")
        first = parts[0]
        geometry = next((p.geometry for p in parts if p.geometry is not None), None)
        for i, p in enumerate(parts):
            if p.n_voxels != first.n_voxels:
                raise ValueError(f"parts[{i}] has {p.n_voxels} voxels, parts[0] has {first.n_voxels}")
            if p.geometry is not None and geometry is not None and not p.geometry.same_binning(geometry):
                raise ValueError(f"parts[{i}] has geometry {p.geometry.name!r}, different from {geometry.name!r}")
            for name in ("theta", "impact_offset_mm"):
                if (getattr(p, name) is None) != (getattr(first, name) is None):
                    raise ValueError(f"parts[{i}] and parts[0] differ in whether {name} is present")
        attrs = {k: v for k, v in first.attrs.items() if all(k in p.attrs and p.attrs[k] == v for p in parts)}

        def cat(name: str) -> np.ndarray | None:
            if getattr(first, name) is None:
                return None
            return np.concatenate([getattr(p, name) for p in parts], axis=0)

        return cls(
            cat("incident_energies_mev"),
            cat("showers_mev"),
            cat("theta"),
            cat("impact_offset_mm"),
            geometry,
            attrs,
        )


# ------------------------------------------------------------------------------------ value checks


def _first_bad_row(bad: np.ndarray) -> int:
    """Index of the first row of a 2-D boolean array that has a True entry."""
    return int(np.argmax(bad.any(axis=1)))


def _check_values(
    where: str,
    energies: np.ndarray,
    showers: np.ndarray,
    theta: np.ndarray | None,
    offset: np.ndarray | None,
    row0: int,
    negative_tolerance_mev: float,
) -> None:
    """Raise ShowerFileError on NaN/inf, non-positive incident energies or voxels below -tolerance.

    Checks ``block`` rows at a time so that the boolean temporaries stay small. ``row0`` is the file row
    of the first array row (for messages)."""
    n, v = showers.shape
    block = max(1, _CHECK_BLOCK_ELEMENTS // max(v, 1))
    for name, a in ((_ENERGIES, energies), (_THETA, theta), (_OFFSET, offset)):
        if a is None:
            continue
        bad = ~np.isfinite(a)
        if bad.any():
            r = _first_bad_row(bad)
            raise ShowerFileError(f"{where}: dataset '{name}' has a NaN/inf value in row {row0 + r}: {a[r].tolist()}")
    bad_e = ~(energies[:, 0] > 0)
    if bad_e.any():
        r = int(np.argmax(bad_e))
        raise ShowerFileError(
            f"{where}: dataset '{_ENERGIES}' must hold positive incident energies (MeV); row {row0 + r} "
            f"has {float(energies[r, 0])!r}"
        )
    if theta is not None:
        bad_t = theta[:, 2] < 0
        if bad_t.any():
            r = int(np.argmax(bad_t))
            raise ShowerFileError(
                f"{where}: dataset '{_THETA}' column 2 (noise_sigma, GeV) must be >= 0; row {row0 + r} "
                f"has {float(theta[r, 2])!r}"
            )
    for i in range(0, n, block):
        s = showers[i : i + block]
        bad = ~np.isfinite(s)
        if bad.any():
            r = _first_bad_row(bad)
            c = int(np.argmax(bad[r]))
            raise ShowerFileError(
                f"{where}: dataset '{_SHOWERS}' has a NaN/inf value in row {row0 + i + r} (voxel {c}: {s[r, c]!r})"
            )
        neg = s < -negative_tolerance_mev
        if neg.any():
            r = _first_bad_row(neg)
            c = int(np.argmax(neg[r]))
            raise ShowerFileError(
                f"{where}: dataset '{_SHOWERS}' has a negative voxel energy in row {row0 + i + r}, voxel {c}: "
                f"{float(s[r, c])!r} MeV, below the tolerance -{negative_tolerance_mev:g} MeV (default: "
                f"{NEGATIVE_TOLERANCE_SIGMAS:g} x the largest noise_sigma in '{_THETA}', 0 without it; "
                "pass negative_tolerance_mev to change it)"
            )


def _default_tolerance_mev(max_noise_sigma_gev: float | None) -> float:
    if max_noise_sigma_gev is None:
        return 0.0
    return NEGATIVE_TOLERANCE_SIGMAS * max(float(max_noise_sigma_gev), 0.0) * 1000.0


def _check_tolerance(where: str, tol: float | None) -> None:
    if tol is not None and not (np.isfinite(tol) and tol >= 0):
        raise ShowerFileError(f"{where}: negative_tolerance_mev must be a finite number >= 0, got {tol!r}")


# ------------------------------------------------------------------------------------------ writing


def _auto_chunk_rows(n_voxels: int) -> int:
    """Rows per HDF5 chunk: about 1 MiB of float32 per chunk, between 1 and 4096 rows."""
    return int(np.clip((1 << 20) // (4 * max(n_voxels, 1)), 1, 4096))


_SCALAR_TYPES = (str, bool, int, float, np.bool_, np.integer, np.floating)


def _check_attr(where: str, key: str, value: Any) -> Any:
    if not isinstance(key, str) or not key:
        raise ShowerFileError(f"{where}: attribute names must be non-empty strings, got {key!r}")
    if isinstance(value, _SCALAR_TYPES):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, _SCALAR_TYPES) for v in value):
        return list(value)
    raise ShowerFileError(
        f"{where}: attribute {key!r} must be a str, int, float, bool or a non-empty list of them, "
        f"got {type(value).__name__}"
    )


class ShowerWriter:
    """Stream showers into a CaloChallenge HDF5 file, atomically.

    Data go to a temporary file beside ``path`` that is renamed onto ``path`` when the ``with`` block
    ends normally; on an exception the temporary file is deleted and an existing ``path`` is untouched::

        with ShowerWriter("out.h5", geometry, with_theta=True) as w:
            for batch in batches:
                w.append(batch)

    Args:
        path: target file.
        geometry: the voxel geometry (stored as the ``surrinf_geometry`` attribute); None writes no
            geometry and takes the voxel count from the first batch.
        with_theta / with_offset: write the ``theta`` / ``impact_offset_mm`` datasets; every batch must then
            carry them (and must not carry them otherwise).
        attrs: extra file attributes (``material``, ``particle``, ...), str/int/float/bool values (or lists
            of them); the reserved ``surrinf_geometry`` / ``surrinf_version`` keys are ignored.
        chunk_rows: rows per HDF5 chunk; default about 1 MiB per chunk.
        compression, compression_opts: h5py filter for all datasets (default gzip level 4).
        negative_tolerance_mev: voxels below minus this are rejected; default 5 x the largest
            noise_sigma appended so far (0 without theta), the same rule the reader applies.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        geometry: Geometry | None,
        *,
        with_theta: bool = False,
        with_offset: bool = False,
        attrs: dict[str, Any] | None = None,
        chunk_rows: int | None = None,
        compression: str | None = "gzip",
        compression_opts: int | None = 4,
        negative_tolerance_mev: float | None = None,
    ) -> None:
        self.path = Path(path)
        self.geometry = geometry
        self.with_theta = bool(with_theta)
        self.with_offset = bool(with_offset)
        where = f"{self.path}"
        # surrinf_geometry / surrinf_version are written by the writer itself (so read -> write round-trips).
        self.attrs = {k: _check_attr(where, k, v) for k, v in (attrs or {}).items() if k not in _RESERVED_ATTRS}
        if chunk_rows is not None and int(chunk_rows) < 1:
            raise ShowerFileError(f"{where}: chunk_rows must be >= 1, got {chunk_rows}")
        self.chunk_rows = None if chunk_rows is None else int(chunk_rows)
        self.compression = compression
        self.compression_opts = compression_opts if compression is not None else None
        _check_tolerance(where, negative_tolerance_mev)
        self.negative_tolerance_mev = negative_tolerance_mev
        self.n_written = 0
        self._max_noise_gev: float | None = None
        self._n_voxels: int | None = None if geometry is None else geometry.n_voxels
        self._ctx: Any = None
        self._tmp: Path | None = None
        self._file: h5py.File | None = None

    # -------------------------------------------------------------- context management
    def __enter__(self) -> ShowerWriter:
        if self._ctx is not None:
            raise RuntimeError("ShowerWriter is not re-entrant")
        self.n_written = 0
        self._max_noise_gev = None
        self._ctx = atomic_path(self.path, suffix=".h5")
        self._tmp = self._ctx.__enter__()
        try:
            self._file = h5py.File(self._tmp, "w")
            self._file.attrs[_VERSION_ATTR] = _version()
            if self.geometry is not None:
                self._file.attrs[_GEOMETRY_ATTR] = self.geometry.to_json()
            for k, v in self.attrs.items():
                self._file.attrs[k] = v
            if self._n_voxels is not None:
                self._create_datasets(self._n_voxels)
        except BaseException as err:
            self._abort(err)
            raise
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is not None:
            self._abort(exc)
            return False
        try:
            if self._n_voxels is None:
                raise ShowerFileError(
                    f"{self.path}: nothing was appended and no geometry was given, so the number of voxels "
                    "(width of 'showers') is unknown"
                )
            self._file.close()
            self._file = None
        except BaseException as err:
            self._abort(err)
            raise
        ctx, self._ctx = self._ctx, None
        ctx.__exit__(None, None, None)  # renames the temporary file onto path
        return False

    def _abort(self, err: BaseException) -> None:
        """Close and delete the temporary file (leaving ``path`` untouched)."""
        if self._file is not None:
            with contextlib.suppress(Exception):  # the original error matters more
                self._file.close()
            self._file = None
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            try:
                ctx.__exit__(type(err), err, err.__traceback__)
            except BaseException as raised:
                if raised is not err:
                    raise

    def _create_datasets(self, n_voxels: int) -> None:
        f = self._file
        rows = self.chunk_rows or _auto_chunk_rows(n_voxels)
        kw = {"compression": self.compression, "compression_opts": self.compression_opts}
        if n_voxels > 0:
            f.create_dataset(
                _SHOWERS, (0, n_voxels), np.float32, maxshape=(None, n_voxels), chunks=(rows, n_voxels), **kw
            )
        else:
            f.create_dataset(_SHOWERS, (0, 0), np.float32, maxshape=(None, 0))
        f.create_dataset(_ENERGIES, (0, 1), np.float32, maxshape=(None, 1), chunks=(max(rows, 1024), 1), **kw)
        if self.with_theta:
            d = f.create_dataset(_THETA, (0, 3), np.float32, maxshape=(None, 3), chunks=(max(rows, 1024), 3), **kw)
            d.attrs["columns"] = list(THETA_COLUMNS)
            d.attrs["units"] = list(THETA_UNITS)
        if self.with_offset:
            d = f.create_dataset(_OFFSET, (0, 2), np.float32, maxshape=(None, 2), chunks=(max(rows, 1024), 2), **kw)
            d.attrs["columns"] = ["x", "y"]
            d.attrs["units"] = "mm"

    # -------------------------------------------------------------- appending
    def append(self, data: ShowerData) -> None:
        """Validate a batch (shapes vs the geometry, optional datasets, finite values, positive incident
        energies, negative voxels) and append it, cast to float32."""
        if self._file is None:
            raise RuntimeError("ShowerWriter.append must be called inside its 'with' block")
        where = f"{self.path} (batch at row {self.n_written})"
        if not isinstance(data, ShowerData):
            raise ShowerFileError(f"{where}: append expects a ShowerData, got {type(data).__name__}")
        if self._n_voxels is not None and data.n_voxels != self._n_voxels:
            gname = f"geometry {self.geometry.name!r}" if self.geometry is not None else "the first batch"
            raise ShowerFileError(
                f"{where}: argument 'data.showers_mev' has {data.n_voxels} voxels per shower, but {gname} "
                f"has {self._n_voxels}"
            )
        if self.geometry is not None and data.geometry is not None and not data.geometry.same_binning(self.geometry):
            raise ShowerFileError(
                f"{where}: batch geometry {data.geometry.name!r} has a different binning from the writer's "
                f"geometry {self.geometry.name!r}"
            )
        for name, wanted in (("theta", self.with_theta), ("impact_offset_mm", self.with_offset)):
            present = getattr(data, name) is not None
            if present != wanted:
                flag = "with_theta" if name == "theta" else "with_offset"
                raise ShowerFileError(
                    f"{where}: argument 'data.{name}' is {'present' if present else 'missing'} but the writer "
                    f"was opened with {flag}={wanted}"
                )
        energies = np.asarray(data.incident_energies_mev, dtype=np.float32)
        showers = np.asarray(data.showers_mev, dtype=np.float32)
        theta = None if data.theta is None else np.asarray(data.theta, dtype=np.float32)
        offset = None if data.impact_offset_mm is None else np.asarray(data.impact_offset_mm, dtype=np.float32)
        max_noise = self._max_noise_gev
        if theta is not None and theta.shape[0] > 0:
            noise = theta[:, 2]
            if np.all(np.isfinite(noise)):
                max_noise = max(float(noise.max()), max_noise if max_noise is not None else 0.0)
        tol = self.negative_tolerance_mev
        if tol is None:
            tol = _default_tolerance_mev(max_noise if theta is not None else None)
        _check_values(where, energies, showers, theta, offset, self.n_written, tol)
        self._max_noise_gev = max_noise
        if self._n_voxels is None:
            self._n_voxels = data.n_voxels
            self._create_datasets(self._n_voxels)
        n0, n1 = self.n_written, self.n_written + data.n
        if data.n == 0:
            return
        f = self._file
        for name, arr in ((_ENERGIES, energies), (_SHOWERS, showers), (_THETA, theta), (_OFFSET, offset)):
            if arr is None:
                continue
            ds = f[name]
            ds.resize(n1, axis=0)
            ds[n0:n1] = arr
        self.n_written = n1


def write_showers(
    path: str | os.PathLike,
    data: ShowerData,
    *,
    compression: str | None = "gzip",
    compression_opts: int | None = 4,
    chunk_rows: int | None = None,
    negative_tolerance_mev: float | None = None,
) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file + rename) and return the path.

    The geometry (if any) and ``data.attrs`` are stored as file attributes; arrays are cast to float32."""
    with ShowerWriter(
        path,
        data.geometry,
        with_theta=data.theta is not None,
        with_offset=data.impact_offset_mm is not None,
        attrs=data.attrs,
        chunk_rows=chunk_rows,
        compression=compression,
        compression_opts=compression_opts,
        negative_tolerance_mev=negative_tolerance_mev,
    ) as w:
        w.append(data)
    return Path(path)


# ------------------------------------------------------------------------------------------ reading


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return [_decode(v) for v in value.tolist()]
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass
class _Layout:
    """Checked structure of an open shower file."""

    n: int
    n_voxels: int
    geometry: Geometry | None
    stored_geometry: Geometry | None
    has_theta: bool
    has_offset: bool
    attrs: dict[str, Any]


def _open(path: str | os.PathLike) -> h5py.File:
    p = Path(path)
    if not p.exists():
        raise ShowerFileError(f"{p}: file not found")
    if p.is_dir():
        raise ShowerFileError(f"{p}: is a directory, expected a CaloChallenge HDF5 file")
    try:
        is_h5 = h5py.is_hdf5(p)
    except OSError as err:
        raise ShowerFileError(f"{p}: cannot be read ({err})") from None
    if not is_h5:
        raise ShowerFileError(f"{p}: not an HDF5 file (expected a CaloChallenge HDF5 file)")
    try:
        return h5py.File(p, "r", rdcc_nbytes=_CHUNK_CACHE_BYTES)
    except OSError as err:
        raise ShowerFileError(f"{p}: cannot open as HDF5 ({err})") from None


def _dataset(f: h5py.File, where: str, name: str, expected: str, required: bool = True) -> h5py.Dataset | None:
    if name not in f:
        if required:
            raise ShowerFileError(f"{where}: missing dataset '{name}' (expected {expected})")
        return None
    ds = f[name]
    if not isinstance(ds, h5py.Dataset):
        raise ShowerFileError(f"{where}: '{name}' is a {type(ds).__name__}, expected a dataset ({expected})")
    if ds.dtype.kind != "f":
        raise ShowerFileError(f"{where}: dataset '{name}' has dtype {ds.dtype}, expected floating point ({expected})")
    return ds


def _layout(f: h5py.File, where: str, geometry: Geometry | None) -> _Layout:
    """Check the structure of an open file (datasets, shapes, geometry) without reading the data."""
    e_exp = "float32 array of shape (N, 1) with the incident energies in MeV"
    s_exp = "float32 array of shape (N, n_voxels) with the voxel energies in MeV"
    e = _dataset(f, where, _ENERGIES, e_exp)
    s = _dataset(f, where, _SHOWERS, s_exp)
    if e.ndim != 2 or e.shape[1] != 1:
        raise ShowerFileError(f"{where}: dataset '{_ENERGIES}' has shape {e.shape}, expected (N, 1) ({e_exp})")
    if s.ndim != 2:
        raise ShowerFileError(f"{where}: dataset '{_SHOWERS}' has shape {s.shape}, expected (N, n_voxels) ({s_exp})")
    n = int(e.shape[0])
    if s.shape[0] != n:
        raise ShowerFileError(
            f"{where}: datasets '{_SHOWERS}' and '{_ENERGIES}' disagree on the number of showers: "
            f"{s.shape[0]} vs {n} rows"
        )
    has = {}
    for name, width, exp in (
        (_THETA, 3, "float32 (N, 3) = (energy_scale, sampling_term [GeV^1/2], noise_sigma [GeV])"),
        (_OFFSET, 2, "float32 (N, 2) impact offsets in mm"),
    ):
        ds = _dataset(f, where, name, exp, required=False)
        has[name] = ds is not None
        if ds is not None and ds.shape != (n, width):
            raise ShowerFileError(f"{where}: dataset '{name}' has shape {ds.shape}, expected ({n}, {width}) ({exp})")
    attrs = {k: _decode(v) for k, v in f.attrs.items() if k != _GEOMETRY_ATTR}
    stored = None
    if _GEOMETRY_ATTR in f.attrs:
        try:
            stored = Geometry.from_json(_decode(f.attrs[_GEOMETRY_ATTR]))
        except (ValueError, TypeError) as err:
            raise ShowerFileError(
                f"{where}: attribute '{_GEOMETRY_ATTR}' is not a valid geometry JSON ({err})"
            ) from None
    n_voxels = int(s.shape[1])
    if stored is not None and stored.n_voxels != n_voxels:
        raise ShowerFileError(
            f"{where}: dataset '{_SHOWERS}' has {n_voxels} voxels per shower but the stored geometry "
            f"{stored.name!r} has {stored.n_voxels}"
        )
    if geometry is not None:
        if stored is not None and not stored.same_binning(geometry):
            raise ShowerFileError(
                f"{where}: the stored geometry {stored.name!r} ({stored.n_voxels} voxels) has a different binning "
                f"from the argument geometry {geometry.name!r} ({geometry.n_voxels} voxels)"
            )
        if geometry.n_voxels != n_voxels:
            raise ShowerFileError(
                f"{where}: dataset '{_SHOWERS}' has {n_voxels} voxels per shower but the argument geometry "
                f"{geometry.name!r} has {geometry.n_voxels}"
            )
    return _Layout(
        n=n,
        n_voxels=n_voxels,
        geometry=geometry if geometry is not None else stored,
        stored_geometry=stored,
        has_theta=has[_THETA],
        has_offset=has[_OFFSET],
        attrs=attrs,
    )


def _row_blocks(n: int, rows: int, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, int]]:
    stop = n if stop is None else stop
    for i in range(start, stop, rows):
        yield i, min(i + rows, stop)


def _max_noise_gev(f: h5py.File, n: int) -> float | None:
    """Largest noise_sigma (GeV) in the ``theta`` dataset, read chunk-wise; None without theta."""
    if _THETA not in f:
        return None
    ds = f[_THETA]
    best = 0.0
    for a, b in _row_blocks(n, 1 << 18):
        col = ds[a:b, 2]
        finite = col[np.isfinite(col)]
        if finite.size:
            best = max(best, float(finite.max()))
    return best


def _tolerance(f: h5py.File, layout: _Layout, where: str, negative_tolerance_mev: float | None) -> float:
    _check_tolerance(where, negative_tolerance_mev)
    if negative_tolerance_mev is not None:
        return float(negative_tolerance_mev)
    return _default_tolerance_mev(_max_noise_gev(f, layout.n) if layout.has_theta else None)


def _read_rows(f: h5py.File, layout: _Layout, a: int, b: int) -> ShowerData:
    return ShowerData(
        f[_ENERGIES][a:b],
        f[_SHOWERS][a:b],
        f[_THETA][a:b] if layout.has_theta else None,
        f[_OFFSET][a:b] if layout.has_offset else None,
        layout.geometry,
        layout.attrs,
    )


def _check(where: str, d: ShowerData, row0: int, tol: float) -> None:
    _check_values(where, d.incident_energies_mev, d.showers_mev, d.theta, d.impact_offset_mm, row0, tol)


def read_showers(
    path: str | os.PathLike,
    *,
    geometry: Geometry | None = None,
    start: int = 0,
    stop: int | None = None,
    validate: bool = True,
    negative_tolerance_mev: float | None = None,
) -> ShowerData:
    """Read rows ``start:stop`` (Python slice semantics) of a CaloChallenge HDF5 file.

    Arrays are returned exactly as stored (MeV, stored dtype). The structure (datasets, shapes, voxel
    count vs ``geometry`` or the stored geometry) is always checked; with ``validate`` the values of the
    rows read are checked too (finite, positive incident energies, voxels >= -negative_tolerance_mev;
    default tolerance: 5 x the file's largest noise_sigma in MeV if it has ``theta``, else 0).

    Raises:
        ShowerFileError: naming the file, dataset or argument and the expected form.
    """
    where = str(path)
    with _open(path) as f:
        layout = _layout(f, where, geometry)
        a, b, _ = slice(start, stop).indices(layout.n)
        b = max(a, b)
        d = _read_rows(f, layout, a, b)
        if validate:
            _check(where, d, a, _tolerance(f, layout, where, negative_tolerance_mev))
    return d


def iter_showers(
    path: str | os.PathLike,
    chunk_size: int = 10_000,
    *,
    geometry: Geometry | None = None,
    validate: bool = True,
    negative_tolerance_mev: float | None = None,
) -> Iterator[ShowerData]:
    """Yield consecutive batches of at most ``chunk_size`` rows; only one batch is in memory at a time.

    Checks as :func:`read_showers`, batch by batch (an error is raised when the bad batch is reached)."""
    if int(chunk_size) < 1:
        raise ShowerFileError(f"{path}: chunk_size must be >= 1, got {chunk_size}")
    where = str(path)
    with _open(path) as f:
        layout = _layout(f, where, geometry)
        tol = _tolerance(f, layout, where, negative_tolerance_mev) if validate else 0.0
        for a, b in _row_blocks(layout.n, int(chunk_size)):
            d = _read_rows(f, layout, a, b)
            if validate:
                _check(where, d, a, tol)
            yield d


def validate_file(
    path: str | os.PathLike,
    *,
    geometry: Geometry | None = None,
    chunk_size: int = 10_000,
    negative_tolerance_mev: float | None = None,
) -> int:
    """Check a whole file chunk-wise (bounded memory) and return its number of showers."""
    n = 0
    for d in iter_showers(path, chunk_size, geometry=geometry, negative_tolerance_mev=negative_tolerance_mev):
        n += d.n
    return n


def file_info(path: str | os.PathLike, *, chunk_size: int = 100_000) -> dict[str, Any]:
    """Summary of a shower file without loading the showers (for ``surrinf info``).

    Keys: ``path``, ``file_size_bytes``, ``n_showers``, ``n_voxels``, ``geometry`` (stored name or None),
    ``geometry_fingerprint``, ``geometry_candidates`` (named geometries with this voxel count),
    ``energy_min_gev``, ``energy_max_gev`` (None for an empty file), ``datasets`` ({name: {shape, dtype,
    compression, chunks}}), ``extra_datasets`` (names beyond the two required ones), ``attrs``."""
    where = str(path)
    with _open(path) as f:
        layout = _layout(f, where, None)
        e = f[_ENERGIES]
        lo, hi = np.inf, -np.inf
        for a, b in _row_blocks(layout.n, chunk_size):
            block = e[a:b, 0]
            if block.size:
                lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
        datasets = {}
        for name, obj in f.items():
            if isinstance(obj, h5py.Dataset):
                datasets[name] = {
                    "shape": tuple(int(x) for x in obj.shape),
                    "dtype": str(obj.dtype),
                    "compression": obj.compression,
                    "chunks": None if obj.chunks is None else tuple(int(x) for x in obj.chunks),
                }
        stored = layout.stored_geometry
        candidates = [g for g in GEOMETRY_NAMES if get_geometry(g).n_voxels == layout.n_voxels]
    return {
        "path": str(Path(path)),
        "file_size_bytes": int(Path(path).stat().st_size),
        "n_showers": layout.n,
        "n_voxels": layout.n_voxels,
        "geometry": None if stored is None else stored.name,
        "geometry_fingerprint": None if stored is None else stored.fingerprint(),
        "geometry_candidates": candidates,
        "energy_min_gev": None if layout.n == 0 else lo / 1000.0,
        "energy_max_gev": None if layout.n == 0 else hi / 1000.0,
        "datasets": datasets,
        "extra_datasets": sorted(k for k in datasets if k not in (_ENERGIES, _SHOWERS)),
        "attrs": layout.attrs,
    }


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def file_info_json(path: str | os.PathLike) -> str:
    """:func:`file_info` as indented JSON text."""
    return json.dumps(file_info(path), indent=2, default=_json_default)
