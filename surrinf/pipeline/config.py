"""The main job's configuration: a TOML file checked against one schema, with errors that name the key.

The schema is the set of frozen dataclasses below, one per TOML table; every field carries its help text (units
included) and its allowed range, and :func:`default_toml` renders the defaults with that help as comments (what
``surrinf config show`` prints). :func:`load_config` reads a user file: every table and key is optional, unknown ones
are errors, values must have the field's type (an integer is accepted where a float is expected).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "QUICK",
    "CalibrationConfig",
    "ConfigError",
    "JetsConfig",
    "KinfitConfig",
    "PipelineConfig",
    "RunSection",
    "SensitivityConfig",
    "SimulateConfig",
    "TrainSection",
    "UnfoldingConfig",
    "ValidateConfig",
    "config_hash",
    "default_toml",
    "load_config",
    "to_toml",
]


class ConfigError(ValueError):
    """An invalid configuration; the message names the key (``table.key``) and the expected form."""


def _f(default: Any, help: str, *, lo: float | None = None, hi: float | None = None, choices=None, n=None):
    """A schema field: default, help text, closed range [lo, hi], allowed values, fixed list length."""
    meta = {"help": help, "lo": lo, "hi": hi, "choices": choices, "n": n}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class RunSection:
    """[run]: where the job writes and the root of every random number."""

    name: str = _f("default", "run id prefix: the report goes to <out_dir>/<name>-<config hash>/")
    seed: int = _f(0, "root seed; every stage draws from jax.random.fold_in(key(seed), stage)", lo=0)
    out_dir: str = _f("runs", "parent folder of run directories")
    cache_dir: str = _f("", "stage cache (content-addressed); empty: <out_dir>/cache")


@dataclass(frozen=True)
class SimulateConfig:
    """[simulate]: the reference showers (training and held-out test sets)."""

    data: str = _f(
        "",
        "CaloChallenge HDF5 file [MeV] with a stored geometry to use instead of simulating (first n_train showers "
        "train, the next n_test test); empty: simulate with the embedded GFLASH calorimeter",
    )
    geometry: str = _f("default", "simulator geometry preset (ignored with data)", choices="geometries")
    material: str = _f("", "simulator material preset; empty: the geometry's own", choices="materials")
    energy_spectrum: str = _f("log-uniform:1,1000", "incident-energy spectrum [GeV], e.g. fixed:50, uniform:1,100")
    n_train: int = _f(30_000, "reference showers to train the surrogate on", lo=1000)
    n_test: int = _f(5000, "held-out reference showers for validation", lo=500)


@dataclass(frozen=True)
class TrainSection:
    """[train]: the shower surrogate (trained here with a small budget, or a saved one)."""

    model: str = _f("", "directory of a saved surrogate (surrinf.generators.save) to use instead of training")
    kind: str = _f("flow", "surrogate family", choices=("flow", "vae", "diffusion", "gan"))
    max_steps: int = _f(4000, "optimiser steps (about 12 per second for the default flow on 2 CPU cores)", lo=1)
    batch_size: int = _f(256, "showers per step", lo=1)
    learning_rate: float = _f(1e-3, "peak learning rate (cosine schedule with warmup)", lo=1e-8, hi=1.0)
    warmup_steps: int = _f(100, "linear warmup steps", lo=0)
    checkpoint_every: int = _f(250, "checkpoint interval [steps]; a killed run resumes from the last one", lo=1)
    hidden: int = _f(128, "hidden units of the flow's conditioner networks (flow only)", lo=4)
    n_layers: int = _f(4, "coupling layers per block of the flow (flow only)", lo=1)


@dataclass(frozen=True)
class ValidateConfig:
    """[validate]: surrogate fidelity on the held-out showers."""

    n_showers: int = _f(5000, "generated and reference showers compared (<= simulate.n_test)", lo=500)
    classifier: bool = _f(True, "train the high- and low-level classifiers (AUC)")


@dataclass(frozen=True)
class CalibrationConfig:
    """[calibration]: tempered Bayesian calibration of the detector parameters theta = (s, a, sigma_n)."""

    enabled: bool = _f(True, "run this stage")
    n_train: int = _f(
        50_000,
        "reference summaries (theta ~ prior box, E log-uniform in 8-120 GeV) to train the summary flow on",
        lo=1000,
    )
    steps: int = _f(1000, "summary-flow training steps (batch 1024, learning rate 2e-3, cosine)", lo=1)
    flow_layers: int = _f(3, "coupling layers of the summary flow (compile and evaluation time grow with it)", lo=2)
    n_events: int = _f(400, "showers of the calibration data set (split over 10, 20, 50, 100 GeV)", lo=4)
    theta_star: tuple[float, ...] = _f(
        (1.0, 0.17, 0.0015), "true theta of the data: energy scale, sampling term [GeV^1/2], noise [GeV]", n=3
    )
    warmup: int = _f(150, "NUTS warm-up iterations per chain (step size and diagonal mass matrix adaptation)", lo=10)
    samples: int = _f(200, "NUTS draws kept per chain (the diagnostics ask for ESS >= 100 per chain)", lo=10)
    chains: int = _f(2, "NUTS chains (vectorised; R-hat needs >= 2)", lo=1)
    mismatch_points: int = _f(12, "prior points where the surrogate-reference mismatch sets the temperature", lo=2)
    heldout: int = _f(2000, "held-out reference showers per mismatch point (split over the beam energies)", lo=8)
    pseudo_experiments: int = _f(
        40, "pseudo-experiments of the coverage check (binomial error of a 68 % coverage: 0.47 / sqrt(M))", lo=2
    )
    events_per_experiment: int = _f(200, "showers per coverage pseudo-experiment", lo=4)
    draws: int = _f(100, "importance draws (Laplace-proposal Student-t) per coverage posterior", lo=10)


@dataclass(frozen=True)
class UnfoldingConfig:
    """[unfolding]: bias of an unfolded incident-energy spectrum from the surrogate's response matrix."""

    enabled: bool = _f(True, "run this stage")
    energy_range_gev: tuple[float, ...] = _f(
        (5.0, 500.0),
        "[lo, hi]: truth and reco range [GeV] (log-spaced bins); the response Monte Carlo covers [0.75 lo, 1.3 hi], "
        "which must lie in [0.1, 10000] GeV",
        n=2,
    )
    truth_bins: int = _f(10, "truth bins (log-spaced)", lo=2)
    reco_bins: int = _f(20, "reco bins (log-spaced; usually >= truth_bins)", lo=2)
    n_response: int = _f(
        40_000,
        "Monte Carlo showers behind both response matrices (the same truth energies for reference and surrogate; "
        "with simulate.data: at most this many stored showers)",
        lo=1000,
    )
    n_data: float = _f(1e5, "expected events of the pseudo-data in the range (truth dN/dE ~ E^-2)", lo=10.0)
    iterations: int = _f(4, "iterations of iterative Bayesian unfolding (the regularisation)", lo=1)
    toys: int = _f(300, "Poisson pseudo-data sets (each unfolded with both responses)", lo=10)


@dataclass(frozen=True)
class JetsConfig:
    """[jets]: the jet-energy response (scale and resolution vs E) of reference and surrogate showers."""

    calibration_energies_gev: tuple[float, ...] = _f(
        (5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0),
        "energies [GeV] of the jet-response fits (>= 4 distinct, in [0.1, 10000]); with simulate.data only their "
        "number counts: the stored showers are grouped into that many log energy bins (>= 200 showers each)",
    )
    n_per_energy: int = _f(
        2000,
        "reference and surrogate showers per energy of the jet-response fits (with simulate.data: at most "
        "len(calibration_energies_gev) x max(n_per_energy, 200) stored showers)",
        lo=10,
    )


@dataclass(frozen=True)
class KinfitConfig:
    """[kinfit]: the surrogate's jet-energy response propagated into m_jj of Z -> q qbar, before and after the fit."""

    enabled: bool = _f(
        True,
        "run the kinfit stage (m_jj before / after the fit); the jets stage runs when kinfit or sensitivity is enabled",
    )
    n_events: int = _f(50_000, "Z -> q qbar events (embedded parametric generator), >= 100", lo=100)
    sigma_prior_gev: float = _f(2.5, "width of the Gaussian mass prior of the fit [GeV]", lo=1e-3)
    hard_constraint: bool = _f(
        True, "also fit with the hard constraint m_jj = m_Z (the shift after it vanishes by construction)"
    )


@dataclass(frozen=True)
class SensitivityConfig:
    """[sensitivity]: expected discovery significance of the Z -> q qbar dijet peak, reference vs surrogate."""

    enabled: bool = _f(True, "run this stage (it uses the jet responses of the jets stage, see [jets])")
    lumi_fb: tuple[float, ...] = _f((1.0, 10.0, 50.0), "integrated luminosities [fb^-1]")
    window_gev: tuple[float, ...] = _f((60.0, 130.0), "m_jj window [GeV]", n=2)
    bins: int = _f(14, "m_jj bins in the window", lo=1)
    n_signal: int = _f(100_000, "simulated signal events", lo=100)
    n_background: int = _f(200_000, "simulated QCD dijet events", lo=100)
    signal_per_fb: float = _f(200.0, "signal events per fb^-1 in the generator acceptance", lo=0.0)
    background_per_fb: float = _f(20_000.0, "QCD dijet events per fb^-1 in the generator acceptance", lo=0.0)


@dataclass(frozen=True)
class PipelineConfig:
    """The whole configuration: one section per TOML table."""

    run: RunSection = field(default_factory=RunSection)
    simulate: SimulateConfig = field(default_factory=SimulateConfig)
    train: TrainSection = field(default_factory=TrainSection)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    unfolding: UnfoldingConfig = field(default_factory=UnfoldingConfig)
    jets: JetsConfig = field(default_factory=JetsConfig)
    kinfit: KinfitConfig = field(default_factory=KinfitConfig)
    sensitivity: SensitivityConfig = field(default_factory=SensitivityConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain dict {table: {key: value}} (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def quick(self) -> PipelineConfig:
        """A copy with the tiny sizes of :data:`QUICK` (and run name "quick"): checks the whole chain on a machine in
        about a minute and a half once compiled code is cached; its numbers mean nothing (``surrinf run --quick``)."""
        tables = {t: dict(v) for t, v in QUICK.items()}
        tables["run"] = {"name": "quick"}
        return self.replace(**tables)

    def replace(self, **tables: dict[str, Any]) -> PipelineConfig:
        """A copy with some keys changed, e.g. ``cfg.replace(train={"max_steps": 10})`` (validated)."""
        data = self.to_dict()
        for table, values in tables.items():
            if table not in data:
                raise ConfigError(f"config table [{table}] is unknown; tables: {', '.join(data)}")
            data[table].update(values)
        return from_dict(data)


#: Tiny sizes for every stage (:meth:`PipelineConfig.quick`): every code path runs, in seconds per stage once compiled.
QUICK: dict[str, dict[str, Any]] = {
    # n_train = n_test: one compiled simulator batch shape (1024) for both files
    "simulate": {"n_train": 1000, "n_test": 1000, "energy_spectrum": "log-uniform:5,500"},
    "train": {"max_steps": 30, "batch_size": 64, "hidden": 8, "n_layers": 1, "checkpoint_every": 10},
    "validate": {"n_showers": 500},
    "calibration": {
        "n_train": 1000,
        "steps": 20,
        "flow_layers": 2,
        "n_events": 160,
        "heldout": 160,
        "mismatch_points": 2,
        "warmup": 10,
        "samples": 10,
        "chains": 2,
        "pseudo_experiments": 4,
        "events_per_experiment": 160,
        "draws": 20,
    },
    "unfolding": {"n_response": 1000, "toys": 10, "truth_bins": 2, "reco_bins": 2, "n_data": 1000.0, "iterations": 1},
    "jets": {"calibration_energies_gev": [10.0, 30.0, 100.0, 300.0], "n_per_energy": 50},
    "kinfit": {"n_events": 1000},
    "sensitivity": {"n_signal": 1000, "n_background": 2000, "lumi_fb": [10.0], "bins": 6},
}


def _sections() -> dict[str, type]:
    hints = typing.get_type_hints(PipelineConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(PipelineConfig)}


def _choices(spec: Any) -> tuple[str, ...] | None:
    if spec == "geometries":
        from surrinf.data.geometry import GEOMETRY_NAMES

        return tuple(GEOMETRY_NAMES)
    if spec == "materials":
        from surrinf.sim import MATERIALS

        return ("", *sorted(MATERIALS))
    return spec


def _describe(kind: Any, meta: dict) -> str:
    """The expected form of a field, for error messages."""
    lo, hi = meta["lo"], meta["hi"]
    rng = ""
    if lo is not None and hi is not None:
        rng = f" in [{lo:g}, {hi:g}]"
    elif lo is not None:
        rng = f" >= {lo:g}"
    if kind is bool:
        return "true or false"
    if kind is int:
        return f"an integer{rng}"
    if kind is float:
        return f"a number{rng}"
    if kind is str:
        choices = _choices(meta["choices"])
        return f"one of {list(choices)}" if choices else "a string"
    n = meta["n"]
    return f"a list of {n if n else 'one or more'} positive numbers"


def _check_value(key: str, kind: Any, meta: dict, value: Any) -> Any:
    """Validate one value; return it converted to the field's type (tuple for lists, float for numbers)."""

    def bad(extra: str = "") -> ConfigError:
        return ConfigError(f"config key '{key}': expected {_describe(kind, meta)}, got {value!r}{extra}")

    if kind is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if kind is str:
        if not isinstance(value, str):
            raise bad()
        choices = _choices(meta["choices"])
        if choices and value not in choices:
            raise bad()
        return value
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and isinstance(value, float)):
            raise bad()
        if not math.isfinite(value):
            raise bad()
        if (meta["lo"] is not None and value < meta["lo"]) or (meta["hi"] is not None and value > meta["hi"]):
            raise bad()
        return kind(value)
    # tuple[float, ...]: a list of positive numbers
    if not isinstance(value, list | tuple) or not value:
        raise bad()
    if meta["n"] and len(value) != meta["n"]:
        raise bad(f" ({len(value)} values)")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise bad()
        out.append(float(v))
    return tuple(out)


def from_dict(data: Any, source: str = "config") -> PipelineConfig:
    """Build and validate a :class:`PipelineConfig` from {table: {key: value}}; missing keys take defaults."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a table of tables, got {type(data).__name__}")
    sections = _sections()
    unknown = [t for t in data if t not in sections]
    if unknown:
        raise ConfigError(f"config table [{unknown[0]}] is unknown; tables: {', '.join(sections)}")
    built = {}
    for table, cls in sections.items():
        values = data.get(table, {})
        if not isinstance(values, dict):
            raise ConfigError(f"config key '{table}': expected a table [{table}], got {values!r}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in values:
            if key not in fields:
                raise ConfigError(f"config key '{table}.{key}' is unknown; keys of [{table}]: {', '.join(fields)}")
        kwargs = {}
        for name, f in fields.items():
            if name in values:
                kind = hints[name]
                kind = tuple if typing.get_origin(kind) is tuple else kind
                kwargs[name] = _check_value(f"{table}.{name}", kind, dict(f.metadata), values[name])
        built[table] = cls(**kwargs)
    cfg = PipelineConfig(**built)
    _cross_checks(cfg)
    return cfg


def _cross_checks(cfg: PipelineConfig) -> None:
    """Constraints between keys; the message names the key to change."""
    from surrinf.sim.calorimeter import ENERGY_RANGE_GEV
    from surrinf.sim.spectrum import parse_energy_spec

    try:
        parse_energy_spec(cfg.simulate.energy_spectrum)
    except ValueError as err:
        raise ConfigError(f"config key 'simulate.energy_spectrum': {err}") from None
    if cfg.validate.n_showers > cfg.simulate.n_test:
        raise ConfigError(
            f"config key 'validate.n_showers': expected an integer <= simulate.n_test = {cfg.simulate.n_test}, "
            f"got {cfg.validate.n_showers}"
        )
    if cfg.simulate.data and not Path(cfg.simulate.data).is_file():
        raise ConfigError(f"config key 'simulate.data': expected an existing HDF5 file, got {cfg.simulate.data!r}")
    if cfg.train.model and not (Path(cfg.train.model) / "model.json").is_file():
        raise ConfigError(
            f"config key 'train.model': expected a saved-model directory containing model.json, got {cfg.train.model!r}"
        )
    lo, hi = cfg.unfolding.energy_range_gev
    if not (0 < lo < hi and 0.75 * lo >= ENERGY_RANGE_GEV[0] and 1.3 * hi <= ENERGY_RANGE_GEV[1]):
        raise ConfigError(
            "config key 'unfolding.energy_range_gev': expected [lo, hi] with 0 < lo < hi, 0.75 lo >= "
            f"{ENERGY_RANGE_GEV[0]:g} and 1.3 hi <= {ENERGY_RANGE_GEV[1]:g} GeV (the response Monte Carlo range), "
            f"got {[lo, hi]}"
        )
    lo, hi = cfg.sensitivity.window_gev
    if not 0 < lo < hi:
        raise ConfigError(f"config key 'sensitivity.window_gev': expected [lo, hi] with 0 < lo < hi, got {[lo, hi]}")
    energies = cfg.jets.calibration_energies_gev
    if len(energies) < 4 or len(set(energies)) != len(energies) or min(energies) <= 0:
        raise ConfigError(
            "config key 'jets.calibration_energies_gev': expected >= 4 distinct positive energies [GeV], "
            f"got {list(energies)}"
        )
    if not cfg.simulate.data and (min(energies) < 0.1 or max(energies) > 10_000.0):
        raise ConfigError(
            "config key 'jets.calibration_energies_gev': expected energies in the simulator's range "
            f"[0.1, 10000] GeV, got {list(energies)}"
        )
    if any(x <= 0 for x in cfg.sensitivity.lumi_fb):
        raise ConfigError(
            f"config key 'sensitivity.lumi_fb': expected positive luminosities, got {cfg.sensitivity.lumi_fb}"
        )
    from surrinf.inference.prior import default_prior

    prior = default_prior()
    if not prior.contains(cfg.calibration.theta_star):
        box = ", ".join(
            f"{lo:g} <= {n} <= {hi:g}" for n, lo, hi in zip(prior.names, prior.low, prior.high, strict=True)
        )
        raise ConfigError(
            f"config key 'calibration.theta_star': expected [s, a [GeV^1/2], sigma_n [GeV]] inside the prior box "
            f"({box}), got {list(cfg.calibration.theta_star)}"
        )


def load_config(path: str | os.PathLike | None = None) -> PipelineConfig:
    """The defaults, updated by the TOML file at ``path`` (if given)."""
    if path is None:
        return PipelineConfig()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {err.strerror or err}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {str(p)!r} is not valid TOML: {err}") from None
    return from_dict(data, source=str(p))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "nan"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return str(value)


def to_toml(cfg: PipelineConfig, comments: bool = True) -> str:
    """``cfg`` as TOML (with each key's help as a comment when ``comments``); :func:`load_config` reads it back."""
    lines: list[str] = []
    for table in _sections():
        section = getattr(cfg, table)
        if lines:
            lines.append("")
        if comments:
            lines.append(f"# {type(section).__doc__.splitlines()[0]}")
        lines.append(f"[{table}]")
        for f in dataclasses.fields(section):
            if comments:
                lines.append(f"# {f.metadata['help']}")
            lines.append(f"{f.name} = {_toml_value(getattr(section, f.name))}")
    return "\n".join(lines) + "\n"


def default_toml() -> str:
    """The default configuration as commented TOML (``surrinf config show``)."""
    return to_toml(PipelineConfig())


def config_hash(data: Any) -> str:
    """SHA-256 of the canonical JSON of ``data`` (sorted keys)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
