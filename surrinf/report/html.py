"""Self-contained HTML rendering of a :class:`surrinf.report.Report`: one file, no external resources, no scripts.

Figures are embedded as ``data:`` URIs, tables are real ``<table>`` elements, Markdown text is rendered with
Python-Markdown (``tables`` and ``fenced_code``) with raw HTML escaped, and links to the side files the report saved
(``fit.csv``, ``provenance.json``) stay relative. A table of contents of the level-2 sections comes first.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import re
from collections.abc import Iterable
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

__all__ = ["STYLE", "Block", "data_uri", "markdown_to_html", "render_page"]

STYLE = """\
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  line-height: 1.5; color: #1b1b1b; background: #fff; margin: 0; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5em 1.5em 4em; }
h1, h2, h3 { line-height: 1.25; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
a { color: #0b57d0; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .9em; }
code { background: #f3f3f3; padding: 0 .2em; border-radius: 3px; }
pre { background: #f6f8fa; padding: .8em 1em; overflow-x: auto; border-radius: 4px; }
pre code { background: none; padding: 0; }
img { max-width: 100%; height: auto; }
figure { margin: 1.5em 0; } figcaption { font-size: .9em; color: #444; }
.table-wrap { overflow-x: auto; margin: 1em 0; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #bbb; padding: .25em .6em; } th { background: #f0f0f0; }
caption { text-align: left; padding: .3em 0; } .num { text-align: right; font-variant-numeric: tabular-nums; }
.notes, .files { font-size: .85em; color: #444; }
nav.toc { background: #f8f8f8; border: 1px solid #e3e3e3; padding: .5em 1.2em; display: inline-block; }
dl.provenance, dl.provenance dl { display: grid; grid-template-columns: max-content 1fr; gap: .1em 1em; margin: 0; }
dl.provenance dt { font-weight: 600; } dl.provenance dd { margin: 0; }
"""

_HEADING_RE = re.compile(r"^<h([1-6])>(.*)</h\1>$", re.DOTALL)


@dataclass(frozen=True)
class Block:
    """One piece of a report: its Markdown (exactly as written to ``report.md``) plus what the HTML needs.

    ``kind`` and ``payload``: ``"heading"`` ``(level, text)``; ``"text"`` None (the Markdown itself is rendered);
    ``"table"`` ``(stem, table HTML, {format: file name})``; ``"figure"`` ``(stem, png path relative to the report,
    alt, caption, number)``; ``"provenance"`` ``(flat items, complex items, json file name or None)``.
    """

    kind: str
    markdown: str
    payload: Any = None


def data_uri(path: str | Path, mime: str | None = None) -> str:
    """``data:<mime>;base64,...`` of a file (mime type guessed from the suffix unless given)."""
    path = Path(path)
    mime = mime or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def markdown_to_html(text: str, directory: str | Path | None = None) -> str:
    """Render Markdown like the report does: raw HTML is escaped, local images under ``directory`` are embedded and
    remote images become plain links, so the result never loads anything from elsewhere."""
    return _Markdown(directory).convert(text)


def render_page(title: str, blocks: Iterable[Block], directory: str | Path) -> str:
    """The complete HTML document for a report titled ``title`` whose files live in ``directory``."""
    directory = Path(directory)
    md = _Markdown(directory)
    used: set[str] = set()
    toc: list[str] = []
    body: list[str] = []
    for block in blocks:
        if block.kind == "heading":
            level, text = block.payload
            match = _HEADING_RE.match(md.convert(block.markdown))
            inner = match.group(2) if match else escape(text)
            anchor = _unique_id(_slug(text) or "section", used)
            body.append(f'<h{level} id="{anchor}">{inner}</h{level}>')
            if level == 2:
                toc.append(f'<li><a href="#{anchor}">{re.sub(r"<[^>]+>", "", inner) or anchor}</a></li>')
        elif block.kind == "text":
            body.append(md.convert(block.markdown))
        elif block.kind == "table":
            stem, table_html, files = block.payload
            anchor = _unique_id(f"table-{_slug(stem)}", used)
            body.append(f'<div class="table-wrap" id="{anchor}">\n{table_html.rstrip()}\n</div>' + _files_html(files))
        elif block.kind == "figure":
            stem, rel, alt, caption, number = block.payload
            anchor = _unique_id(f"figure-{_slug(stem)}", used)
            parts = [f'<figure id="{anchor}">', f'<img src="{data_uri(directory / rel)}" alt="{escape(alt)}">']
            if caption:
                parts.append(f"<figcaption><em>Figure {number}.</em> {md.inline(caption)}</figcaption>")
            body.append("\n".join([*parts, "</figure>"]))
        elif block.kind == "provenance":
            body.append(_provenance_html(*block.payload))
        else:
            raise ValueError(f"unknown report block kind {block.kind!r}")
    nav = f'<nav class="toc">\n<strong>Contents</strong>\n<ol>\n{chr(10).join(toc)}\n</ol>\n</nav>' if toc else ""
    title_html = escape(title)
    return (
        "\n".join(
            [
                "<!DOCTYPE html>",
                '<html lang="en">',
                "<head>",
                '<meta charset="utf-8">',
                '<meta name="viewport" content="width=device-width, initial-scale=1">',
                f"<title>{title_html}</title>",
                f"<style>\n{STYLE}</style>",
                "</head>",
                "<body>",
                "<main>",
                f'<h1 id="{_unique_id("top", used)}">{title_html}</h1>',
                *([nav] if nav else []),
                *body,
                "</main>",
                "</body>",
                "</html>",
            ]
        )
        + "\n"
    )


class _Markdown:
    """A reusable Python-Markdown converter with raw HTML disabled and images made self-contained."""

    def __init__(self, directory: str | Path | None) -> None:
        import markdown  # imported lazily: only HTML output needs it
        from markdown.treeprocessors import Treeprocessor

        root_dir = Path(directory).resolve() if directory is not None else None

        class SelfContainedImages(Treeprocessor):
            def run(self, root: Any) -> None:
                for img in root.iter("img"):
                    src = img.get("src", "")
                    local = _local_image(root_dir, src)
                    if local is not None:
                        img.set("src", data_uri(local))
                    elif not src.startswith("data:"):  # a remote image would be an external resource: link it
                        alt = img.get("alt") or src
                        img.tag, img.text = "a", alt
                        img.attrib.clear()
                        img.set("href", src)

        self._md = markdown.Markdown(extensions=["tables", "fenced_code"], output_format="html")
        self._md.preprocessors.deregister("html_block")  # raw HTML is shown as text, never interpreted
        self._md.inlinePatterns.deregister("html")
        self._md.treeprocessors.register(SelfContainedImages(self._md), "surrinf_images", 1)

    def convert(self, text: str) -> str:
        return self._md.reset().convert(text)

    def inline(self, text: str) -> str:
        """Render a one-line snippet without its enclosing ``<p>``."""
        out = self.convert(text)
        return out[3:-4] if out.startswith("<p>") and out.endswith("</p>") and out.count("<p>") == 1 else out


def _local_image(root_dir: Path | None, src: str) -> Path | None:
    """The image file ``src`` refers to when it is a relative path to an image inside ``root_dir``."""
    if root_dir is None or not src or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^/", src):
        return None
    path = (root_dir / src).resolve()
    mime = mimetypes.guess_type(path.name)[0] or ""
    if not path.is_relative_to(root_dir) or not path.is_file() or not mime.startswith("image/"):
        return None
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _unique_id(base: str, used: set[str]) -> str:
    anchor, n = base, 1
    while anchor in used:
        n += 1
        anchor = f"{base}-{n}"
    used.add(anchor)
    return anchor


def _files_html(files: dict[str, str]) -> str:
    if not files:
        return ""
    links = " · ".join(f'<a href="{escape(name)}">{escape(fmt)}</a>' for fmt, name in files.items())
    return f'\n<p class="files">Files: {links}</p>'


def _provenance_html(flat: list[tuple[str, Any]], complex_items: list[tuple[str, Any]], json_name: str | None) -> str:
    parts = []
    if flat:
        parts.append(_dl(flat, 'class="provenance"'))
    for key, value in complex_items:
        text = escape(json.dumps(value, indent=2, ensure_ascii=False), quote=False)
        parts.append(f'<p><strong>{escape(key)}</strong>:</p>\n<pre><code class="language-json">{text}</code></pre>')
    if json_name:
        parts.append(_files_html({"json": json_name}).lstrip("\n"))
    return "\n".join(parts)


def _dl(items: Iterable[tuple[str, Any]], attrs: str = "") -> str:
    rows = []
    for key, value in items:
        dd = _dl(value.items()) if isinstance(value, dict) and value else _value_html(value)
        rows.append(f"<dt>{escape(str(key))}</dt><dd>{dd}</dd>")
    return f"<dl{' ' + attrs if attrs else ''}>\n" + "\n".join(rows) + "\n</dl>"


def _value_html(value: Any) -> str:
    """HTML twin of the Markdown report's inline provenance values."""
    if isinstance(value, list | dict) and not value:
        return "none"
    if isinstance(value, list):
        return ", ".join(_value_html(v) for v in value)
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    return f"<code>{escape(text)}</code>" if text else ""
