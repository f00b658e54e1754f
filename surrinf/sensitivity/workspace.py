"""HistFactory workspaces (pyhf JSON) for a signal + background search, built from histograms of expected counts.

The histograms are numpy arrays of expected events per bin that the caller made with any response model (the
reference simulator or a surrogate); this module only turns them into a validated ``pyhf.Workspace``. The surrogate
enters twice: through the templates themselves and through the "surrogate_fidelity" shape systematic, the difference
between the templates made with the surrogate and with the reference simulator.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyhf

from surrinf._atomic import atomic_write_text

__all__ = [
    "FIDELITY_SYMMETRISATIONS",
    "POI_BOUNDS",
    "Sample",
    "build_workspace",
    "symmetrise_fidelity",
    "workspace_from_json",
    "workspace_to_json",
]

#: Bounds of the signal strength (the POI): mu >= 0 as the discovery test statistic q0 needs; 10 times the nominal
#: signal is far beyond any fluctuation of interest for a discovery (a best fit above it would be clipped).
POI_BOUNDS = (0.0, 10.0)
#: Accepted values of ``fidelity_symmetrisation`` (see :func:`symmetrise_fidelity`).
FIDELITY_SYMMETRISATIONS = ("symmetric", "envelope")
_N_SIGMA_BOUNDS = 5.0  # lumi parameter bounds: nominal +- 5 sigma


def _counts(values: Any, name: str, n_bins: int | None = None) -> np.ndarray:
    """values as a read-only float64 (n_bins,) array of finite counts >= 0; a clear ValueError otherwise."""
    try:
        arr = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a 1-D array of finite counts >= 0 [events], got {values!r}") from None
    expected = f"({n_bins},)" if n_bins is not None else "(n_bins,) with n_bins >= 1"
    if arr.ndim != 1 or arr.size == 0 or (n_bins is not None and arr.size != n_bins):
        raise ValueError(f"{name} must have shape {expected} [events], got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr.tolist()}")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0 [events], got {arr.tolist()}")
    arr.setflags(write=False)
    return arr


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value


@dataclass(frozen=True, eq=False)
class Sample:
    """One template: ``counts`` (n_bins,) expected events per bin and, optionally, ``stat_uncertainty`` (n_bins,) the
    absolute Monte Carlo statistical uncertainty of those counts [events] (becomes a pyhf ``staterror``).

    Arrays are stored as read-only float64 copies; counts and uncertainties must be finite and >= 0.
    """

    name: str
    counts: np.ndarray
    stat_uncertainty: np.ndarray | None = None

    def __post_init__(self) -> None:
        _name(self.name, "Sample name")
        counts = _counts(self.counts, f"Sample {self.name!r} counts")
        object.__setattr__(self, "counts", counts)
        if self.stat_uncertainty is not None:
            stat = _counts(self.stat_uncertainty, f"Sample {self.name!r} stat_uncertainty", counts.size)
            object.__setattr__(self, "stat_uncertainty", stat)

    @property
    def n_bins(self) -> int:
        """Number of bins."""
        return int(self.counts.size)


def symmetrise_fidelity(
    nominal: np.ndarray, reference: np.ndarray, surrogate: np.ndarray, how: str = "symmetric"
) -> tuple[np.ndarray, np.ndarray]:
    """(up, down) templates [events] of the surrogate-fidelity systematic from delta = surrogate - reference.

    - "symmetric" (default): up = nominal + delta, down = nominal - delta. The two-sided symmetrisation of a one-sided
      variation, standard for a modelling difference (one alternative model, not a +-1 sigma pair): it keeps the sign
      and the bin-to-bin correlation of the observed difference, and a symmetric pair gives a likelihood that is smooth
      at alpha = 0 (a one-sided pair, down = nominal, puts a kink there and lets the fit move only one way).
    - "envelope": up = nominal + |delta|, down = nominal - |delta| bin by bin. Conservative per bin, but it turns every
      difference into a normalisation-like shift in the same direction and loses the shape of delta; use it when the
      sign of delta is not trusted (e.g. surrogate statistical noise).

    A down template that would fall below zero in a bin is set to 0 events there (a negative expected count is not a
    valid Poisson rate).
    """
    if how not in FIDELITY_SYMMETRISATIONS:
        raise ValueError(f"fidelity_symmetrisation must be one of {FIDELITY_SYMMETRISATIONS}, got {how!r}")
    delta = np.asarray(surrogate, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    if how == "envelope":
        delta = np.abs(delta)
    nominal = np.asarray(nominal, dtype=np.float64)
    return nominal + delta, np.clip(nominal - delta, 0.0, None)


def _variations(
    variations: Mapping[str, Any] | None, samples: dict[str, Sample], argument: str, labels: tuple[str, str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Validate ``{sample_name: (a, b)}``: known sample names, two (n_bins,) finite count arrays >= 0 each."""
    if variations is None:
        return {}
    if not isinstance(variations, Mapping):
        raise ValueError(f"{argument} must be a mapping {{sample_name: ({labels[0]}, {labels[1]})}} or None")
    out = {}
    for key, pair in variations.items():
        if key not in samples:
            raise ValueError(f"{argument}: unknown sample {key!r}; the samples are {sorted(samples)}")
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise ValueError(f"{argument}[{key!r}] must be a pair ({labels[0]}, {labels[1]}) of (n_bins,) counts")
        n = samples[key].n_bins
        out[key] = (
            _counts(pair[0], f"{argument}[{key!r}] {labels[0]}", n),
            _counts(pair[1], f"{argument}[{key!r}] {labels[1]}", n),
        )
    return out


def _fraction(value: float | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a relative uncertainty in (0, 1) or None, got {value!r}") from None
    if not (math.isfinite(v) and 0.0 < v < 1.0):
        raise ValueError(f"{name} must be a relative uncertainty in (0, 1) or None, got {value!r}")
    return v


def build_workspace(
    signal: Sample,
    background: Sample,
    *,
    bin_edges: Any = None,
    channel: str = "SR",
    lumi_uncertainty: float | None = 0.017,
    background_norm_uncertainty: float | None = 0.1,
    jes: Mapping[str, tuple[Any, Any]] | None = None,
    fidelity: Mapping[str, tuple[Any, Any]] | None = None,
    fidelity_symmetrisation: str = "symmetric",
    data: Any = None,
    poi: str = "mu",
) -> pyhf.Workspace:
    """A one-channel HistFactory workspace (validated against the pyhf schema) for a signal + background search.

    Modifiers (parameter names in quotes):

    - signal: ``normfactor`` ``poi`` (the signal strength mu, bounds :data:`POI_BOUNDS` = [0, 10], init 1);
    - both samples: ``lumi`` "lumi" (Gaussian, auxdata 1, sigma ``lumi_uncertainty``, bounds 1 +- 5 sigma), omitted
      when ``lumi_uncertainty`` is None;
    - background: ``normsys`` "<background.name>_norm" (factors 1 +- ``background_norm_uncertainty``), omitted when
      None;
    - each sample with ``stat_uncertainty``: ``staterror`` "staterror_<channel>" (Barlow-Beeston lite, one Gaussian
      gamma per bin shared by the samples that carry it);
    - ``jes = {sample_name: (counts_up, counts_down)}``: ``histosys`` "jes" (jet-energy-scale shape, +-1 sigma
      templates [events]);
    - ``fidelity = {sample_name: (counts_reference, counts_surrogate)}``: ``histosys`` "surrogate_fidelity" around the
      sample's own counts, from delta = surrogate - reference, symmetrised by ``fidelity_symmetrisation`` (default
      "symmetric": up = nominal + delta, down = nominal - delta; see :func:`symmetrise_fidelity` for why and for
      "envelope").

    Observations: ``data`` (n_bins,) observed counts [events] or, if None, the Asimov background-only expectation
    (mu = 0 and every nuisance parameter at its nominal value, i.e. exactly ``background.counts``). ``bin_edges``
    ((n_bins + 1,) strictly increasing) is only checked against the number of bins: the pyhf schema has no field for
    bin edges, so keep them next to the workspace for plots. Set ``lumi_uncertainty=None`` and
    ``background_norm_uncertainty=None`` (and give no stat uncertainties) for a model with mu as its only parameter.

    Raises:
        ValueError: samples of different lengths, equal sample names, negative or non-finite counts, a bad
            uncertainty (not in (0, 1)), unknown sample names in ``jes``/``fidelity``, bad ``bin_edges``/``data``.
    """
    if not isinstance(signal, Sample) or not isinstance(background, Sample):
        raise ValueError(f"signal and background must be Sample objects, got {type(signal)} and {type(background)}")
    if signal.name == background.name:
        raise ValueError(f"signal and background need different names, both are {signal.name!r}")
    n_bins = signal.n_bins
    if background.n_bins != n_bins:
        raise ValueError(f"background has {background.n_bins} bins, signal has {n_bins}: they must match")
    channel = _name(channel, "channel")
    poi = _name(poi, "poi")
    if bin_edges is not None:
        edges = np.asarray(bin_edges, dtype=np.float64)
        if edges.shape != (n_bins + 1,) or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
            raise ValueError(f"bin_edges must be ({n_bins + 1},) finite and strictly increasing, got {edges.tolist()}")
    lumi = _fraction(lumi_uncertainty, "lumi_uncertainty")
    bkg_norm = _fraction(background_norm_uncertainty, "background_norm_uncertainty")
    samples = {signal.name: signal, background.name: background}
    jes_var = _variations(jes, samples, "jes", ("counts_up", "counts_down"))
    fid_var = _variations(fidelity, samples, "fidelity", ("counts_reference", "counts_surrogate"))
    if fidelity_symmetrisation not in FIDELITY_SYMMETRISATIONS:
        raise ValueError(
            f"fidelity_symmetrisation must be one of {FIDELITY_SYMMETRISATIONS}, got {fidelity_symmetrisation!r}"
        )
    observed = background.counts if data is None else _counts(data, "data", n_bins)
    norm_name = f"{background.name}_norm"
    reserved = {"lumi", "jes", "surrogate_fidelity", f"staterror_{channel}", norm_name}
    if poi in reserved:
        raise ValueError(f"poi must not be one of the systematic names {sorted(reserved)}, got {poi!r}")

    def modifiers(sample: Sample, is_signal: bool) -> list[dict[str, Any]]:
        mods: list[dict[str, Any]] = []
        if is_signal:
            mods.append({"name": poi, "type": "normfactor", "data": None})
        if lumi is not None:
            mods.append({"name": "lumi", "type": "lumi", "data": None})
        if not is_signal and bkg_norm is not None:
            mods.append({"name": norm_name, "type": "normsys", "data": {"hi": 1.0 + bkg_norm, "lo": 1.0 - bkg_norm}})
        if sample.stat_uncertainty is not None:
            mods.append({"name": f"staterror_{channel}", "type": "staterror", "data": sample.stat_uncertainty.tolist()})
        if sample.name in jes_var:
            up, down = jes_var[sample.name]
            mods.append({"name": "jes", "type": "histosys", "data": {"hi_data": up.tolist(), "lo_data": down.tolist()}})
        if sample.name in fid_var:
            up, down = symmetrise_fidelity(sample.counts, *fid_var[sample.name], how=fidelity_symmetrisation)
            mods.append(
                {
                    "name": "surrogate_fidelity",
                    "type": "histosys",
                    "data": {"hi_data": up.tolist(), "lo_data": down.tolist()},
                }
            )
        return mods

    parameters: list[dict[str, Any]] = [{"name": poi, "bounds": [list(POI_BOUNDS)], "inits": [1.0]}]
    if lumi is not None:
        low = max(1.0 - _N_SIGMA_BOUNDS * lumi, 0.0)
        parameters.append(
            {
                "name": "lumi",
                "auxdata": [1.0],
                "sigmas": [lumi],
                "inits": [1.0],
                "bounds": [[low, 1.0 + _N_SIGMA_BOUNDS * lumi]],
            }
        )
    spec = {
        "channels": [
            {
                "name": channel,
                "samples": [
                    {"name": signal.name, "data": signal.counts.tolist(), "modifiers": modifiers(signal, True)},
                    {
                        "name": background.name,
                        "data": background.counts.tolist(),
                        "modifiers": modifiers(background, False),
                    },
                ],
            }
        ],
        "observations": [{"name": channel, "data": observed.tolist()}],
        "measurements": [{"name": "discovery", "config": {"poi": poi, "parameters": parameters}}],
        "version": "1.0.0",
    }
    pyhf.schema.validate(spec, "workspace.json")
    return pyhf.Workspace(spec)


def workspace_to_json(workspace: pyhf.Workspace, path: str | os.PathLike) -> Path:
    """Write ``workspace`` as pyhf JSON (sorted keys, indented) to ``path`` atomically; returns the path."""
    if not isinstance(workspace, pyhf.Workspace):
        raise ValueError(f"workspace must be a pyhf.Workspace, got {type(workspace)}")
    return atomic_write_text(path, json.dumps(dict(workspace), indent=2, sort_keys=True) + "\n")


def workspace_from_json(path: str | os.PathLike) -> pyhf.Workspace:
    """Read a pyhf JSON workspace: parses JSON only (no code is executed) and validates it against the pyhf schema.

    Raises:
        ValueError: the file is not JSON or not a valid pyhf workspace.
    """
    text = Path(path).read_text(encoding="utf-8")
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a JSON file ({err})") from err
    try:
        return pyhf.Workspace(spec)
    except pyhf.exceptions.InvalidSpecification as err:
        raise ValueError(f"{path}: not a valid pyhf workspace ({err})") from err
