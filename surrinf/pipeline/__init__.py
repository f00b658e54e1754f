"""The main job: reference showers -> surrogate -> validation -> calibration, unfolding, dijet fit, sensitivity.

``surrinf run [--config FILE]`` (and ``make run``) calls :func:`run_pipeline`. The configuration is TOML checked
against one schema (:mod:`surrinf.pipeline.config`; ``surrinf config show`` prints the defaults); every stage is
cached by a content hash of its configuration and inputs (:mod:`surrinf.pipeline.runner`), so a rerun skips
finished stages and a killed run resumes. Importing this package is light: the stages (and JAX, pyhf, NumPyro) load
on first use of :func:`run_pipeline`, :data:`STAGES` or :func:`write_report`.
"""

from __future__ import annotations

from typing import Any

from surrinf.pipeline.config import ConfigError, PipelineConfig, default_toml, load_config, to_toml

__all__ = [
    "STAGES",
    "ConfigError",
    "PipelineConfig",
    "default_toml",
    "load_config",
    "run_pipeline",
    "to_toml",
    "write_report",
]

_LAZY = {"STAGES", "run_pipeline", "write_report"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from surrinf.pipeline import job

        return getattr(job, name)
    raise AttributeError(f"module 'surrinf.pipeline' has no attribute {name!r}")
