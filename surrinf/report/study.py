"""The common command-line interface of the scripts in ``studies/``: options, a config file, provenance.

Every study runs standalone with ``--seed`` (int), ``--config FILE`` and ``--out`` (where its outputs go) and
records its provenance next to its outputs::

    def build_parser() -> argparse.ArgumentParser:
        p = study_parser(__doc__)
        p.add_argument("--n", type=int, default=20_000, help="showers per sample")
        return p

    def main(argv=None) -> int:
        args = parse_study_args(build_parser(), argv)
        run = StudyRun()
        ...  # the study, writing to args.out
        run.finish(args.out, "my_study", args, extra_key=...)  # -> <out>/my_study_provenance.json

The config file is TOML (``.toml``) or JSON (``.json``): one flat table whose keys are option names (``n_train`` or
``n-train``) and whose values have the option's type (``--lumi 1 2`` is ``lumi = [1.0, 2.0]``, ``--massive`` is
``massive = true``). It replaces the defaults; options given explicitly on the command line win over it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from surrinf.report.provenance import provenance, write_provenance

__all__ = ["StudyRun", "load_config", "parse_study_args", "study_parser"]

_DEFAULT_OUT = "docs/results"


def study_parser(
    doc: str | None,
    *,
    seed: int = 0,
    seed_help: str = "random seed",
    out: str | None = _DEFAULT_OUT,
    out_help: str | None = None,
) -> argparse.ArgumentParser:
    """An argument parser with the options every study shares.

    ``description`` is the first line of ``doc`` (the study's module docstring). Options: ``--seed`` (int, default
    ``seed``), ``--config FILE`` (TOML or JSON, read by :func:`parse_study_args`) and ``--out`` (default ``out``,
    ``docs/results`` unless a study writes elsewhere).
    """
    first = (doc or "").strip().splitlines()
    p = argparse.ArgumentParser(description=first[0] if first else None)
    p.add_argument("--seed", type=int, default=seed, help=seed_help)
    p.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="TOML (.toml) or JSON (.json) table of option values (names as below, '-' or '_'); "
        "options given on the command line win",
    )
    p.add_argument("--out", default=out, help=out_help or f"output directory (default {out})")
    return p


def parse_study_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``) with ``parser``, then apply ``--config`` if given.

    Precedence: command line > config file > the parser's defaults. A file that cannot be read or parsed, a key that
    is not an option of ``parser`` or a value of the wrong type exits through ``parser.error`` (status 2) with a
    message naming the file and the key.
    """
    args = parser.parse_args(argv)
    path = getattr(args, "config", None)
    if not path:
        return args
    values = load_config(parser, path)
    # Defaults are set only for the options missing from the namespace passed in: pre-filling it with the file's
    # values makes them the new defaults, and whatever the command line gives explicitly still replaces them.
    args = parser.parse_args(argv, namespace=argparse.Namespace(**values))
    order = [a.dest for a in parser._actions if hasattr(args, a.dest)]  # the options' order, as without a file
    return argparse.Namespace(
        **{dest: getattr(args, dest) for dest in order}, **{k: v for k, v in vars(args).items() if k not in order}
    )


def load_config(parser: argparse.ArgumentParser, path: str | os.PathLike) -> dict[str, Any]:
    """The checked values of the config file ``path`` for ``parser``'s options, as ``{dest: value}``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        parser.error(f"--config {path}: expected a .toml or .json file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        parser.error(f"--config {path}: cannot read the file ({exc.__class__.__name__}: {exc})")
    try:
        raw = tomllib.loads(text) if suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        parser.error(f"--config {path}: not valid {suffix[1:].upper()}: {exc}")
    if not isinstance(raw, dict):
        parser.error(f"--config {path}: expected a table of option values, got {type(raw).__name__}")
    actions = _options(parser)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        dest = str(key).replace("-", "_")
        action = actions.get(dest)
        if action is None:
            known = ", ".join(sorted(actions))
            parser.error(f"--config {path}: unknown option {key!r}; known options: {known}")
        ok, converted, expected = _check(action, value)
        if not ok:
            parser.error(f"--config {path}: option {key!r} expects {expected}, got {type(value).__name__} {value!r}")
        values[dest] = converted
    return values


class StudyRun:
    """Wall-clock timer of one study run, and the writer of its provenance file.

    Attributes:
        t0: ``time.perf_counter()`` when the run started (construction).
    """

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.t0

    def finish(self, out_dir: str | os.PathLike, name: str, args: argparse.Namespace, **extra: Any) -> Path:
        """Write ``<out_dir>/<name>_provenance.json``; return its path.

        The file holds :func:`surrinf.report.provenance` with ``config = vars(args)`` and ``seed = args.seed``
        (so also the command line, ``sys.argv``, as ``command``), ``wall_s`` (seconds since the run started) and
        the ``extra`` keys (which must not replace those).
        """
        info = provenance(vars(args), seed=getattr(args, "seed", None))
        info["wall_s"] = self.elapsed()
        clash = sorted(set(extra) & set(info))
        if clash:
            raise ValueError(f"extra provenance keys {clash} would replace standard ones")
        info.update(extra)
        return write_provenance(Path(out_dir) / f"{name}_provenance.json", info)


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """``{dest: action}`` of the options a config file may set (not help/version, not --config itself)."""
    skip = (argparse._HelpAction, argparse._VersionAction)
    return {
        a.dest: a
        for a in parser._actions
        if a.option_strings and a.dest not in (argparse.SUPPRESS, "config") and not isinstance(a, skip)
    }


def _check(action: argparse.Action, value: Any) -> tuple[bool, Any, str]:
    """``(valid, value to store, description of the expected type)`` of a config value for ``action``."""
    if isinstance(action, argparse._StoreConstAction):  # store_true / store_false / store_const
        if isinstance(action.const, bool):
            return isinstance(value, bool), value, "true or false"
        return value in (action.const, action.default), value, f"{action.const!r} or {action.default!r}"
    if value is None and action.default is None:
        return True, None, "null"
    nargs = action.nargs
    if nargs in (None, "?"):
        return _scalar(action, value)
    count = {"+": "one or more", "*": "any number of"}.get(nargs, str(nargs))
    expected = f"a list of {count} {_type_name(action, plural=True)}"
    if not isinstance(value, list) or (isinstance(nargs, int) and len(value) != nargs) or (nargs == "+" and not value):
        return False, value, expected
    items = []
    for item in value:
        ok, converted, _ = _scalar(action, item)
        if not ok:
            return False, value, expected
        items.append(converted)
    return True, items, expected


def _scalar(action: argparse.Action, value: Any) -> tuple[bool, Any, str]:
    kind = action.type
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind is None or kind is str:
        ok = isinstance(value, str)
    else:  # a custom type: applied to the value's text, as argparse would
        try:
            value, ok = kind(value if isinstance(value, str) else json.dumps(value)), True
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            ok = False
    if ok and action.choices is not None and value not in action.choices:
        return False, value, f"one of {list(action.choices)}"
    return ok, value, _type_name(action)


_TYPE_NAMES = {int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("a string", "strings")}


def _type_name(action: argparse.Action, plural: bool = False) -> str:
    kind = str if action.type is None else action.type
    if kind in _TYPE_NAMES:
        return _TYPE_NAMES[kind][plural]
    return f"{getattr(kind, '__name__', repr(kind))} value{'s' if plural else ''}"
