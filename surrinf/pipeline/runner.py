"""Stages, their content-addressed cache, and the run loop of the main job.

A :class:`Stage` is a pure-ish function of its config table, the run seed and the outputs of the stages it needs. Its
outputs live in ``<cache_dir>/<stage>-<hash>/`` where the hash (SHA-256 of the canonical JSON) covers the stage name
and version, the surrinf version, the stage's config table, the seed, the hashes of its inputs and the content of any
user file it reads. A stage writes into ``<stage>-<hash>.partial/`` and the directory is renamed when the stage has
finished (``result.json`` written last), so a finished stage is never half-written: a rerun finds it and skips it, a
killed run leaves only the ``.partial`` directory of the stage it was in. A resumable stage (training) continues from
the checkpoints it left there; any other stage starts that directory afresh.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax

from surrinf import __version__
from surrinf._atomic import atomic_write_text
from surrinf.pipeline.config import PipelineConfig, config_hash, to_toml

__all__ = ["RunResult", "Stage", "StageContext", "StageOutput", "file_digest", "run_directory", "run_stages"]

RESULT_FILE = "result.json"


@dataclass(frozen=True)
class StageOutput:
    """A finished stage: its directory, content hash, summary (JSON) and wall time [s] (of the run that made it)."""

    name: str
    path: Path
    hash: str
    summary: dict[str, Any]
    seconds: float
    cached: bool = False


@dataclass
class StageContext:
    """What a stage's ``run`` gets: the config, its key, its output directory and its inputs' outputs."""

    config: PipelineConfig
    key: jax.Array
    work_dir: Path
    inputs: Mapping[str, StageOutput]
    resume: bool
    progress: bool
    log: Callable[[str], None]

    table: str = ""

    @property
    def section(self) -> Any:
        """The stage's own config table."""
        return getattr(self.config, self.table)


@dataclass(frozen=True)
class Stage:
    """One step of the job.

    ``run(ctx) -> summary``: write outputs into ``ctx.work_dir`` and return a JSON-able summary. ``needs``: stages
    whose outputs it reads. ``table``: its config table (part of its hash). ``files(cfg)``: user files it reads (their
    content is hashed). ``enabled(cfg)``: whether it runs. ``resumable``: keep the ``.partial`` directory of a killed
    run (the stage resumes from its checkpoints). Bump ``version`` when the stage's outputs change meaning.
    """

    name: str
    title: str
    run: Callable[[StageContext], dict[str, Any]]
    needs: tuple[str, ...] = ()
    table: str | None = None
    version: int = 1
    resumable: bool = False
    enabled: Callable[[PipelineConfig], bool] = field(default=lambda cfg: True)
    files: Callable[[PipelineConfig], Sequence[str]] = field(default=lambda cfg: ())


@dataclass(frozen=True)
class RunResult:
    """The run directory and every stage's output (None for a disabled stage)."""

    run_dir: Path
    config: PipelineConfig
    outputs: dict[str, StageOutput | None]


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file, or of every file under a directory (relative names included), streamed."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    for q in files:
        h.update(str(q.relative_to(p) if p.is_dir() else q.name).encode())
        with q.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def stage_key(seed: int, name: str) -> jax.Array:
    """The stage's random key: ``fold_in(key(seed), crc32(name))`` (independent of which other stages run)."""
    return jax.random.fold_in(jax.random.key(seed), zlib.crc32(name.encode()))


def cache_dir(cfg: PipelineConfig) -> Path:
    return Path(cfg.run.cache_dir) if cfg.run.cache_dir else Path(cfg.run.out_dir) / "cache"


def run_directory(cfg: PipelineConfig) -> Path:
    """``<out_dir>/<name>-<first 10 hex of the config hash>``: the same config always reports to the same place."""
    data = cfg.to_dict()
    data["run"] = {k: v for k, v in data["run"].items() if k not in ("out_dir", "cache_dir")}
    return Path(cfg.run.out_dir) / f"{cfg.run.name}-{config_hash(data)[:10]}"


def _stage_hash(stage: Stage, cfg: PipelineConfig, inputs: Mapping[str, StageOutput]) -> str:
    return config_hash(
        {
            "stage": stage.name,
            "version": stage.version,
            "surrinf": __version__,
            "seed": cfg.run.seed,
            "config": dataclasses.asdict(getattr(cfg, stage.table)) if stage.table else None,
            "inputs": {name: out.hash for name, out in sorted(inputs.items())},
            "files": {str(f): file_digest(f) for f in stage.files(cfg)},
        }
    )


def run_stages(
    stages: Sequence[Stage],
    cfg: PipelineConfig,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> RunResult:
    """Run ``stages`` in order (skipping finished ones found in the cache) and return their outputs (absolute paths).

    The run directory gets ``config.toml`` (the effective configuration) and ``stages.json`` (which cache entry
    each stage used); the report is written by the caller from the returned outputs.
    """

    def say(msg: str) -> None:
        if log is not None:
            log(msg)
        elif progress:
            print(f"[surrinf run] {msg}", file=sys.stderr, flush=True)

    cache = cache_dir(cfg).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    run_dir = run_directory(cfg).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.toml", to_toml(cfg))
    outputs: dict[str, StageOutput | None] = {}
    n = len(stages)
    for i, stage in enumerate(stages, 1):
        head = f"({i}/{n}) {stage.name}"
        if not stage.enabled(cfg):
            outputs[stage.name] = None
            say(f"{head}: disabled in the configuration")
            continue
        missing = [s for s in stage.needs if outputs.get(s) is None]
        if missing:
            raise ValueError(f"stage {stage.name!r} needs {missing}, which are disabled or not in the stage list")
        inputs = {s: outputs[s] for s in stage.needs}
        digest = _stage_hash(stage, cfg, inputs)
        final = cache / f"{stage.name}-{digest[:16]}"
        done = final / RESULT_FILE
        if done.is_file():
            doc = json.loads(done.read_text())
            outputs[stage.name] = StageOutput(stage.name, final, digest, doc["summary"], doc["seconds"], cached=True)
            say(f"{head}: cached ({final})")
            continue
        partial = final.with_name(final.name + ".partial")
        resume = partial.is_dir() and stage.resumable
        if partial.exists() and not resume:
            shutil.rmtree(partial)
        partial.mkdir(parents=True, exist_ok=True)
        say(f"{head}: {stage.title}{' (resuming)' if resume else ''} -> {final}")
        t0 = time.perf_counter()
        ctx = StageContext(
            cfg, stage_key(cfg.run.seed, stage.name), partial, inputs, resume, progress, say, table=stage.table or ""
        )
        summary = stage.run(ctx)
        seconds = time.perf_counter() - t0
        doc = {"stage": stage.name, "hash": digest, "summary": summary, "seconds": seconds}
        text = json.dumps(doc, indent=1, default=_json_default)
        atomic_write_text(partial / RESULT_FILE, text)
        if final.exists():  # a leftover without result.json (never produced by this code): replace it
            shutil.rmtree(final)
        partial.rename(final)
        outputs[stage.name] = StageOutput(stage.name, final, digest, json.loads(text)["summary"], seconds)
        say(f"{head}: done in {seconds:.0f} s")
    atomic_write_text(
        run_dir / "stages.json",
        json.dumps(
            {
                name: None
                if o is None
                else {"path": str(o.path), "hash": o.hash, "seconds": o.seconds, "cached": o.cached}
                for name, o in outputs.items()
            },
            indent=1,
        ),
    )
    return RunResult(run_dir, cfg, outputs)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"stage summary value of type {type(o).__name__} is not JSON-able")
