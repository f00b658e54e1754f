"""Provenance of a run: when, with which code and library versions, on which machine, with which config and seed."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from surrinf._atomic import atomic_write_text
from surrinf.report._json import to_jsonable

__all__ = ["LIBRARIES", "git_revision", "provenance", "write_provenance"]

#: Libraries whose versions are recorded when importable.
LIBRARIES = ("jax", "jaxlib", "equinox", "numpy", "scipy", "h5py", "matplotlib")
_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the surrinf package directory


def provenance(config: Mapping[str, Any] | None = None, seed: int | None = None, include_jax: bool = True) -> dict:
    """Return a JSON-safe dict describing this run; never raises.

    Keys: ``timestamp`` (UTC, ISO 8601), ``surrinf_version``, ``python``, ``platform``, ``machine``, ``versions``
    (of the importable :data:`LIBRARIES`), ``jax`` (``{"backend", "devices"}``, or None when jax is unavailable or
    ``include_jax`` is False; this imports jax and initialises its backend), ``git`` (40-hex revision of the checkout
    holding the surrinf package, or None), ``git_dirty`` (bool, or None without a revision), ``command`` (sys.argv),
    ``config`` and ``seed``.
    """
    revision, dirty = git_revision()
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "surrinf_version": _version("surrinf") or "unknown",
        "python": platform.python_version(),
        "platform": _safe(platform.platform),
        "machine": _safe(platform.machine),
        "versions": _library_versions(),
        "jax": _jax_info() if include_jax else None,
        "git": revision,
        "git_dirty": dirty,
        "command": list(sys.argv),
        "config": to_jsonable(dict(config)) if config is not None else None,
        "seed": None if seed is None else int(seed),
    }


def write_provenance(path: str | os.PathLike, info: Mapping[str, Any]) -> Path:
    """Write ``info`` as indented JSON to ``path`` atomically; return the path."""
    text = json.dumps(to_jsonable(dict(info)), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


def git_revision(directory: str | os.PathLike | None = None) -> tuple[str | None, bool | None]:
    """``(HEAD revision, dirty)`` of the git checkout holding the surrinf package (or ``directory``).

    ``(None, None)`` when git is missing, the directory is not in a checkout, or (for the package) the package is
    not tracked there, e.g. an installed copy inside some unrelated repository. Never raises.
    """
    cwd = Path(directory) if directory is not None else _PACKAGE_DIR.parent
    revision = _git(cwd, "rev-parse", "--verify", "HEAD")
    if revision is None or len(revision) != 40 or any(c not in "0123456789abcdef" for c in revision):
        return None, None
    if directory is None and _git(cwd, "ls-files", "--error-unmatch", "--", str(_PACKAGE_DIR / "__init__.py")) is None:
        return None, None
    status = _git(cwd, "status", "--porcelain")
    return revision, (None if status is None else bool(status))


def _git(cwd: Path, *args: str) -> str | None:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except Exception:
        return None


def _library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            if importlib.util.find_spec(name) is None:
                continue
        except Exception:
            continue
        version = _version(name)
        if version is None:
            module = sys.modules.get(name)
            version = getattr(module, "__version__", None) if module is not None else None
        versions[name] = str(version) if version is not None else "unknown"
    return versions


def _jax_info() -> dict[str, Any] | None:
    try:
        if importlib.util.find_spec("jax") is None:
            return None
        import jax

        devices = jax.devices()
        return {
            "backend": jax.default_backend(),
            "devices": [f"{d.platform}:{d.id} ({getattr(d, 'device_kind', '?')})" for d in devices],
        }
    except Exception as exc:  # a broken accelerator setup must not break a report
        return {"backend": None, "devices": [], "error": f"{type(exc).__name__}: {exc}"}


def _safe(fn: Any) -> str | None:
    try:
        return str(fn())
    except Exception:
        return None
