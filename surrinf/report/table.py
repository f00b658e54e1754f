"""Result tables rendered alike as Markdown, HTML, CSV, LaTeX (booktabs) and JSON.

Cells are ``str``, ``int``, ``float``, ``bool``, ``None`` or :class:`Measurement`. Plain floats are printed with
``float_format`` (default: 4 significant digits, scientific outside [1e-3, 1e6)); a Measurement is rounded to two
significant digits of its error (``"1.235 ± 0.012"``). CSV keeps full precision and splits a Measurement column
``x`` into ``x`` and ``x_err`` so the file stays machine-readable.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import numbers
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from surrinf._atomic import atomic_write_text
from surrinf.report.measurement import Measurement, format_sig, measurement_parts

__all__ = ["Cell", "FloatFormat", "Measurement", "Table", "latex_escape"]

Cell = str | int | float | bool | Measurement | None
#: An int (significant digits), a format spec (``".3f"`` or ``"{:.1%}"``) or a callable ``float -> str``.
FloatFormat = int | str | Callable[[float], str]

SCHEMA = "surrinf.table/1"
FORMATS = ("md", "csv", "tex", "json")
_MISSING_MD = "—"
_MISSING_TEX = "--"
_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "|": r"\textbar{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}
_LATEX_RE = re.compile("|".join(re.escape(c) for c in _LATEX_SPECIAL))
_NUMBER_RE = re.compile(r"^(?P<mant>[-+]?\d+(?:\.\d*)?)(?:e(?P<exp>[-+]?\d+))?$")


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters (``& % $ # _ { } ~ ^ \\``, and ``| < >``) for text mode."""
    return _LATEX_RE.sub(lambda m: _LATEX_SPECIAL[m.group()], text)


@dataclass
class Table:
    """A titled table of result cells; see the module docstring for cell types and formatting.

    ``column_formats`` maps a column name to a :data:`FloatFormat` overriding ``float_format`` for that column (a str
    or callable format also applies to ints and to both parts of a Measurement). ``latex_columns`` optionally gives
    raw LaTeX headers (e.g. ``r"$E_\\mathrm{T}$ [GeV]"``) used by :meth:`to_latex` instead of escaped ``columns``.
    Callable formats are not serialised by :meth:`to_dict`.
    """

    title: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    caption: str | None = None
    notes: list[str] = field(default_factory=list)
    float_format: FloatFormat = 4
    column_formats: dict[str, FloatFormat] = field(default_factory=dict)
    latex_columns: list[str] | None = None

    def __post_init__(self) -> None:
        self.title = str(self.title)
        if isinstance(self.columns, str):
            raise TypeError("columns must be a sequence of strings, not a string")
        self.columns = [str(c) for c in self.columns]
        if not self.columns:
            raise ValueError("a table needs at least one column")
        if len(set(self.columns)) != len(self.columns):
            raise ValueError(f"duplicate column names: {self.columns}")
        rows, self.rows = self.rows, []
        for row in rows:
            self.add_row(row)
        self.notes = [self.notes] if isinstance(self.notes, str) else [str(n) for n in (self.notes or [])]
        self.column_formats = dict(self.column_formats or {})
        unknown = set(self.column_formats) - set(self.columns)
        if unknown:
            raise ValueError(f"column_formats for unknown columns: {sorted(unknown)}")
        if self.latex_columns is not None:
            self.latex_columns = [str(c) for c in self.latex_columns]
            if len(self.latex_columns) != len(self.columns):
                raise ValueError("latex_columns must have one entry per column")

    # ------------------------------------------------------------------ building
    def add_row(self, row: Sequence[Any] | Mapping[str, Any]) -> Table:
        """Append a row (a sequence in column order, or a mapping column -> cell; missing keys are None)."""
        if isinstance(row, Mapping):
            unknown = set(row) - set(self.columns)
            if unknown:
                raise ValueError(f"row has unknown columns: {sorted(unknown)}")
            row = [row.get(c) for c in self.columns]
        if isinstance(row, str):
            raise TypeError("a row must be a sequence of cells, not a string")
        cells = [_normalize_cell(c) for c in row]
        if len(cells) != len(self.columns):
            raise ValueError(f"row has {len(cells)} cells, table has {len(self.columns)} columns")
        self.rows.append(cells)
        return self

    def column(self, name: str) -> list[Cell]:
        """The cells of column ``name``."""
        j = self.columns.index(name)
        return [row[j] for row in self.rows]

    # ------------------------------------------------------------------ rendering
    def format_cell(self, cell: Cell, column: str) -> str:
        """Plain-text rendering of one cell as used in Markdown (None -> ``"—"``)."""
        if cell is None:
            return _MISSING_MD
        if isinstance(cell, Measurement):
            value, error, exponent = self._measurement_texts(cell, column)
            return f"{value} ± {error}" if exponent is None else f"({value} ± {error})e{exponent:+03d}"
        return self._scalar_text(cell, column)

    def to_markdown(self, title: bool = True) -> str:
        """GitHub-flavoured Markdown: bold title, caption, padded pipe table (numbers right-aligned), notes."""
        header = [_md_escape(c) for c in self.columns]
        body = [
            [_md_escape(self.format_cell(c, name)) for c, name in zip(row, self.columns, strict=True)]
            for row in self.rows
        ]
        widths = [max([3, len(h)] + [len(r[j]) for r in body]) for j, h in enumerate(header)]
        right = self._numeric_columns()

        def line(cells: list[str]) -> str:
            padded = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)]
            return "| " + " | ".join(padded) + " |"

        rule = "| " + " | ".join("-" * (w - 1) + ":" if r else "-" * w for w, r in zip(widths, right, strict=True))
        parts = []
        if title and self.title:
            parts.append(f"**{self.title}**")
        if self.caption:
            parts.append(self.caption)
        parts.append("\n".join([line(header), rule + " |", *(line(r) for r in body)]))
        if len(self.notes) == 1:
            parts.append(f"Note: {self.notes[0]}")
        elif self.notes:
            parts.append("Notes:\n" + "\n".join(f"- {n}" for n in self.notes))
        return "\n\n".join(parts) + "\n"

    def to_html(self) -> str:
        """An HTML ``<table>`` (title and caption as ``<caption>``, numeric columns with class ``num``, cells as in
        :meth:`to_markdown`) followed by the notes as a ``<p class="notes">``; all text is HTML-escaped."""
        esc = html.escape
        cls = [' class="num"' if r else "" for r in self._numeric_columns()]
        lines = ['<table class="report-table">']
        caption = [f"<strong>{esc(self.title)}</strong>"] if self.title else []
        caption += [esc(self.caption)] if self.caption else []
        if caption:
            lines.append(f"<caption>{' '.join(caption)}</caption>")
        header = "".join(f"<th{c}>{esc(n)}</th>" for n, c in zip(self.columns, cls, strict=True))
        lines += ["<thead>", f"<tr>{header}</tr>", "</thead>", "<tbody>"]
        for row in self.rows:
            cells = zip(row, self.columns, cls, strict=True)
            lines.append("<tr>" + "".join(f"<td{c}>{esc(self.format_cell(x, n))}</td>" for x, n, c in cells) + "</tr>")
        lines += ["</tbody>", "</table>"]
        if self.notes:
            label = "Note:" if len(self.notes) == 1 else "Notes:"
            lines.append(f'<p class="notes">{label} ' + "<br>\n".join(esc(n) for n in self.notes) + "</p>")
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """RFC-4180 CSV (CRLF line ends, minimal quoting) with full-precision numbers.

        A column holding any Measurement becomes two columns ``name`` and ``name_err``; None is an empty field.
        """
        split = [any(isinstance(row[j], Measurement) for row in self.rows) for j in range(len(self.columns))]
        header: list[str] = []
        for name, s in zip(self.columns, split, strict=True):
            header.extend([name, f"{name}_err"] if s else [name])
        buf = io.StringIO(newline="")
        writer = csv.writer(buf, lineterminator="\r\n")
        writer.writerow(header)
        for row in self.rows:
            out: list[str] = []
            for cell, s in zip(row, split, strict=True):
                if isinstance(cell, Measurement):
                    out.extend([_csv_number(cell.value), _csv_number(cell.error)])
                else:
                    out.append("" if cell is None else _csv_number(cell) if _is_number(cell) else str(cell))
                    if s:
                        out.append("")
            writer.writerow(out)
        return buf.getvalue()

    def to_latex(self, float_env: bool = True, label: str | None = None, placement: str = "htbp") -> str:
        """booktabs ``tabular`` (inside a ``table`` float with caption, label and notes when ``float_env``)."""
        right = self._numeric_columns()
        header = self.latex_columns or [latex_escape(c) for c in self.columns]
        lines = [
            r"\begin{tabular}{" + "".join("r" if r else "l" for r in right) + "}",
            r"  \toprule",
            "  " + _latex_row(header),
            r"  \midrule",
        ]
        for row in self.rows:
            lines.append("  " + _latex_row([self._latex_cell(c, n) for c, n in zip(row, self.columns, strict=True)]))
        lines += [r"  \bottomrule", r"\end{tabular}"]
        if not float_env:
            return "\n".join(lines) + "\n"
        caption = latex_escape(self.title)
        if self.caption:
            sep = "" if not caption or caption[-1] in ".:;!?" else "."
            caption = f"{caption}{sep} {latex_escape(self.caption)}".strip()
        out = [rf"\begin{{table}}[{placement}]", r"  \centering"]
        if caption:
            out.append(rf"  \caption{{{caption}}}")
        if label:
            out.append(rf"  \label{{{label}}}")
        out += ["  " + ln for ln in lines]
        for note in self.notes:
            out.append(rf"  \par\smallskip{{\footnotesize {latex_escape(note)}\par}}")
        out.append(r"\end{table}")
        return "\n".join(out) + "\n"

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (non-finite floats as ``{"float": "nan"}``, Measurement as ``{"value", "error"}``)."""
        return {
            "schema": SCHEMA,
            "title": self.title,
            "columns": list(self.columns),
            "rows": [[_encode_cell(c) for c in row] for row in self.rows],
            "caption": self.caption,
            "notes": list(self.notes),
            "float_format": self.float_format if isinstance(self.float_format, int | str) else None,
            "column_formats": {k: v for k, v in self.column_formats.items() if isinstance(v, int | str)},
            "latex_columns": list(self.latex_columns) if self.latex_columns is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Table:
        """Inverse of :meth:`to_dict`."""
        schema = data.get("schema", SCHEMA)
        if schema != SCHEMA:
            raise ValueError(f"unsupported table schema {schema!r} (expected {SCHEMA!r})")
        float_format = data.get("float_format")
        return cls(
            title=data["title"],
            columns=list(data["columns"]),
            rows=[[_decode_cell(c) for c in row] for row in data.get("rows", [])],
            caption=data.get("caption"),
            notes=list(data.get("notes") or []),
            float_format=4 if float_format is None else float_format,
            column_formats=dict(data.get("column_formats") or {}),
            latex_columns=data.get("latex_columns"),
        )

    def to_json(self) -> str:
        """:meth:`to_dict` as indented, strict JSON text."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"

    def save(self, directory: str | os.PathLike, stem: str, formats: Iterable[str] = FORMATS) -> dict[str, Path]:
        """Write ``directory/stem.<fmt>`` for each format (md, csv, tex, json) atomically; return ``{fmt: path}``.

        Everything is rendered before the first file is written, and each file replaces an old one only once complete.
        """
        _check_stem(stem)
        formats = list(dict.fromkeys(formats))
        unknown = [f for f in formats if f not in FORMATS]
        if unknown:
            raise ValueError(f"unknown table formats {unknown}; choose from {FORMATS}")
        render = {
            "md": self.to_markdown,
            "csv": self.to_csv,
            "tex": lambda: self.to_latex(label=f"tab:{stem}"),
            "json": self.to_json,
        }
        texts = {fmt: render[fmt]() for fmt in formats}
        directory = Path(directory)
        return {fmt: atomic_write_text(directory / f"{stem}.{fmt}", text) for fmt, text in texts.items()}

    @classmethod
    def load(cls, path: str | os.PathLike) -> Table:
        """Read a table saved as JSON."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    # ------------------------------------------------------------------ helpers
    def _format_for(self, column: str) -> FloatFormat:
        return self.column_formats.get(column, self.float_format)

    def _scalar_text(self, cell: Cell, column: str) -> str:
        fmt = self._format_for(column)
        if isinstance(cell, bool) or not _is_number(cell):
            return str(cell)
        if isinstance(cell, int) and column not in self.column_formats:
            return str(cell)
        return _apply_format(cell, fmt)

    def _measurement_texts(self, cell: Measurement, column: str) -> tuple[str, str, int | None]:
        fmt = self.column_formats.get(column)
        if fmt is None or isinstance(fmt, int):
            return measurement_parts(cell.value, cell.error)
        return _apply_format(cell.value, fmt), _apply_format(cell.error, fmt), None

    def _latex_cell(self, cell: Cell, column: str) -> str:
        if cell is None:
            return _MISSING_TEX
        if isinstance(cell, Measurement):
            value, error, exponent = self._measurement_texts(cell, column)
            value, error = _latex_math_number(value), _latex_math_number(error)
            if value is None or error is None:  # a custom format produced non-numeric text
                return latex_escape(self.format_cell(cell, column))
            if exponent is None:
                return f"${value} \\pm {error}$"
            return f"$({value} \\pm {error}) \\times 10^{{{exponent}}}$"
        text = self._scalar_text(cell, column)
        if _is_number(cell) and not isinstance(cell, bool):
            math_text = _latex_math_number(text)
            if math_text is not None and ("\\times" in math_text or math_text.startswith("-")):
                return f"${math_text}$"
            if text == "inf":
                return r"$\infty$"
            if text == "-inf":
                return r"$-\infty$"
        return latex_escape(text)

    def _numeric_columns(self) -> list[bool]:
        out = []
        for j in range(len(self.columns)):
            cells = [row[j] for row in self.rows if row[j] is not None]
            out.append(bool(cells) and all(isinstance(c, Measurement) or _is_number(c) for c in cells))
        return out


# ---------------------------------------------------------------------- module helpers
def _is_number(cell: object) -> bool:
    return isinstance(cell, numbers.Real) and not isinstance(cell, bool)


def _normalize_cell(cell: Any) -> Cell:
    if cell is None or isinstance(cell, str | bool | Measurement):
        return cell
    if isinstance(cell, numbers.Integral):
        return int(cell)
    if isinstance(cell, numbers.Real):
        return float(cell)
    if hasattr(cell, "shape") and getattr(cell, "shape", None) == () and hasattr(cell, "item"):
        return _normalize_cell(cell.item())  # 0-d numpy/jax arrays
    raise TypeError(f"unsupported table cell {cell!r} of type {type(cell).__name__}")


def _apply_format(x: float, fmt: FloatFormat) -> str:
    if isinstance(fmt, bool):
        raise TypeError("a float format cannot be a bool")
    if isinstance(fmt, int):
        return format_sig(x, fmt)
    if isinstance(fmt, str):
        return fmt.format(x) if "{" in fmt else format(x, fmt)
    return str(fmt(x))


def _csv_number(x: int | float) -> str:
    return str(x) if isinstance(x, int) else repr(float(x))


def _md_escape(text: str) -> str:
    return text.replace("|", r"\|").replace("\r\n", " ").replace("\n", " ")


def _latex_row(cells: list[str]) -> str:
    if cells and cells[0].startswith("["):
        cells = ["{}" + cells[0], *cells[1:]]  # keep `\\` / `\midrule` from reading "[...]" as an optional argument
    return " & ".join(cells) + r" \\"


def _latex_math_number(text: str) -> str | None:
    """``"1.2e-05"`` -> ``"1.2 \\times 10^{-5}"``; plain numbers unchanged; None for non-numeric text."""
    m = _NUMBER_RE.match(text)
    if m is None:
        return None
    if m.group("exp") is None:
        return m.group("mant")
    return f"{m.group('mant')} \\times 10^{{{int(m.group('exp'))}}}"


def _encode_float(x: float) -> float | dict[str, str]:
    return x if math.isfinite(x) else {"float": repr(x)}


def _decode_float(x: Any) -> float:
    return float(x["float"]) if isinstance(x, Mapping) else float(x)


def _encode_cell(cell: Cell) -> Any:
    if isinstance(cell, Measurement):
        return {"value": _encode_float(cell.value), "error": _encode_float(cell.error)}
    if isinstance(cell, float):
        return _encode_float(cell)
    return cell


def _decode_cell(cell: Any) -> Cell:
    if isinstance(cell, Mapping):
        if "float" in cell:
            return _decode_float(cell)
        if "value" in cell and "error" in cell:
            return Measurement(_decode_float(cell["value"]), _decode_float(cell["error"]))
        raise ValueError(f"cannot decode table cell {cell!r}")
    return cell


def _check_stem(stem: str) -> None:
    if not stem or stem in {".", ".."} or "/" in stem or "\\" in stem or stem.startswith("."):
        raise ValueError(f"invalid file stem {stem!r}: use a plain file name without directories or leading dot")
