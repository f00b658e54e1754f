"""A Markdown report for a run directory, embedding saved tables and figures, with a self-contained HTML twin."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from surrinf._atomic import atomic_write_bytes, atomic_write_text
from surrinf.report._json import to_jsonable
from surrinf.report.figure import save_figure
from surrinf.report.html import Block, render_page
from surrinf.report.table import FORMATS, Table, _check_stem

__all__ = ["Report"]

FIGURE_DIR = "figures"
REPORT_NAME = "report.md"
HTML_NAME = "report.html"
_RESERVED_STEMS = frozenset({"report", "provenance"})


class Report:
    """Collect a Markdown document ``directory/report.md``; tables and figures are saved as they are added.

    Tables go next to the report (``directory/<stem>.{md,csv,tex,json}``), figures into ``directory/figures/``, and
    the report links them with relative paths. :meth:`write` also writes ``directory/report.html``, a self-contained
    page (figures embedded, no external resources, no scripts; see :mod:`surrinf.report.html`). Every method except
    :meth:`write` and :meth:`write_html` returns ``self`` for chaining.
    """

    def __init__(self, title: str, directory: str | os.PathLike) -> None:
        self.title = str(title)
        self.directory = Path(directory)
        self._blocks: list[Block] = []
        self._stems: set[str] = set()
        self._n_tables = 0
        self._n_figures = 0

    @property
    def path(self) -> Path:
        """Where :meth:`write` puts the report."""
        return self.directory / REPORT_NAME

    @property
    def html_path(self) -> Path:
        """Where :meth:`write_html` puts the HTML report by default."""
        return self.directory / HTML_NAME

    def section(self, heading: str, text: str = "", level: int = 2) -> Report:
        """Start a section (``level`` 2 is ``##``; the report title is the only ``#``) with optional text."""
        if not 1 <= level <= 6:
            raise ValueError("heading level must be between 1 and 6")
        heading = str(heading)
        self._blocks.append(Block("heading", f"{'#' * level} {heading}".rstrip(), (level, heading)))
        if text:
            self.paragraph(text)
        return self

    def paragraph(self, text: str) -> Report:
        """Add a Markdown paragraph (text is used as is)."""
        text = str(text).strip("\n")
        if text:
            self._blocks.append(Block("text", text))
        return self

    def table(self, table: Table, stem: str, formats: Iterable[str] = FORMATS) -> Report:
        """Save ``table`` as ``directory/stem.*``, embed its Markdown and link the saved files."""
        self._claim(stem)
        paths = table.save(self.directory, stem, formats)
        self._n_tables += 1
        files = {fmt: p.name for fmt, p in paths.items() if fmt != "md"}
        text = table.to_markdown().rstrip("\n")
        if files:
            text += "\n\nFiles: " + " · ".join(f"[{fmt}]({name})" for fmt, name in files.items())
        self._blocks.append(Block("table", text, (stem, table.to_html(), files)))
        return self

    def figure(self, fig: Figure, stem: str, caption: str = "", dpi: int = 120) -> Report:
        """Save ``fig`` as ``directory/figures/stem.png`` (closing it) and embed it with ``caption``."""
        self._claim(stem, kind=FIGURE_DIR)
        path = save_figure(fig, self.directory / FIGURE_DIR / f"{stem}.png", dpi=dpi)
        return self._add_figure(stem, path, caption)

    def image(self, png: str | os.PathLike, stem: str, caption: str = "") -> Report:
        """Copy an existing PNG (e.g. one a pipeline stage saved) to ``directory/figures/stem.png`` and embed it."""
        src = Path(png)
        data = src.read_bytes()
        if not data.startswith(b"\x89PNG\r\n\x1a\n"):
            raise ValueError(f"png must be a PNG file, got {str(src)!r}")
        self._claim(stem, kind=FIGURE_DIR)
        path = atomic_write_bytes(self.directory / FIGURE_DIR / f"{stem}.png", data)
        return self._add_figure(stem, path, caption)

    def _add_figure(self, stem: str, path: Path, caption: str) -> Report:
        self._n_figures += 1
        alt = " ".join(caption.split()).replace("[", "(").replace("]", ")") or stem
        rel = f"{FIGURE_DIR}/{path.name}"
        text = f"![{alt}]({rel})"
        if caption:
            text += f"\n\n*Figure {self._n_figures}.* {caption}"
        self._blocks.append(Block("figure", text, (stem, rel, alt, caption, self._n_figures)))
        return self

    def provenance(self, info: Mapping[str, Any], heading: str = "Provenance", save_json: bool = True) -> Report:
        """Render ``info`` (see :func:`surrinf.report.provenance.provenance`) as a section; with ``save_json`` also
        write it to ``directory/provenance.json`` and link it."""
        data = to_jsonable(dict(info))
        self.section(heading)
        lines: list[str] = []
        flat_items: list[tuple[str, Any]] = []
        complex_items: list[tuple[str, Any]] = []
        for key, value in data.items():
            if key == "config" and isinstance(value, dict | list) and value:
                complex_items.append((key, value))
            elif isinstance(value, dict) and value and all(_is_flat(v) for v in value.values()):
                flat_items.append((key, value))
                lines.append(f"- **{key}**:")
                lines.extend(f"  - {k}: {_inline(v)}" for k, v in value.items())
            elif _is_flat(value):
                flat_items.append((key, value))
                lines.append(f"- **{key}**: {_inline(value)}")
            else:
                complex_items.append((key, value))
        parts = ["\n".join(lines)] if lines else []
        for key, value in complex_items:
            parts.append(f"**{key}**:\n\n```json\n{json.dumps(value, indent=2, ensure_ascii=False)}\n```")
        json_name = None
        if save_json:
            from surrinf.report.provenance import write_provenance

            json_name = write_provenance(self.directory / "provenance.json", data).name
            parts.append(f"Files: [json]({json_name})")
        if parts:
            self._blocks.append(Block("provenance", "\n\n".join(parts), (flat_items, complex_items, json_name)))
        return self

    def to_markdown(self) -> str:
        """The report text as :meth:`write` would save it."""
        return "\n\n".join([f"# {self.title}", *(b.markdown for b in self._blocks)]) + "\n"

    def to_html(self) -> str:
        """The self-contained HTML page as :meth:`write_html` would save it (reads the saved figures)."""
        return render_page(self.title, self._blocks, self.directory)

    def write(self, html: bool = True) -> Path:
        """Write ``directory/report.md`` and, with ``html``, ``directory/report.html``, each atomically (again after
        further additions, if called again); return the Markdown path."""
        page = self.to_html() if html else None  # render everything before writing anything
        path = atomic_write_text(self.path, self.to_markdown())
        if page is not None:
            atomic_write_text(self.html_path, page)
        return path

    def write_html(self, path: str | os.PathLike | None = None) -> Path:
        """Write the self-contained HTML report atomically to ``path`` (default ``directory/report.html``); return it.

        Figures are embedded, so the page shows completely on its own; its links to the side files (``fit.csv``,
        ``provenance.json``) are relative to ``directory`` and work when the page stays there."""
        return atomic_write_text(self.html_path if path is None else Path(path), self.to_html())

    def _claim(self, stem: str, kind: str = "table") -> None:
        _check_stem(stem)
        if kind == "table" and stem in _RESERVED_STEMS:
            raise ValueError(f"table stem {stem!r} is reserved for the report's own files")
        key = f"{kind}/{stem}"
        if key in self._stems:
            raise ValueError(f"{kind} stem {stem!r} already used in this report")
        self._stems.add(key)


def _is_flat(value: Any) -> bool:
    """A scalar, or a list of scalars."""
    if isinstance(value, list):
        return all(not isinstance(v, dict | list) for v in value)
    return not isinstance(value, dict) or not value


def _inline(value: Any) -> str:
    if isinstance(value, list | dict) and not value:
        return "none"
    if isinstance(value, list):
        return ", ".join(_inline(v) for v in value)
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    return f"`{text}`" if text and "`" not in text else text
