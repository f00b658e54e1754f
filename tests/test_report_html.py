"""Tests for the self-contained HTML report written by surrinf.report.Report."""

from __future__ import annotations

import base64
import pathlib
from html.parser import HTMLParser

import pytest

from surrinf.report import Measurement, Report, Table, new_figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Page(HTMLParser):
    """Collects the start tags (with attributes) and the text inside each element, keyed by tag."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: dict[str, list[str]] = {}
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in {"img", "br", "meta", "input", "hr"}:
            self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._open:
            while self._open.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        for tag in self._open:
            self.text.setdefault(tag, []).append(data)

    def find(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for t, attrs in self.tags if t == tag]


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


@pytest.fixture
def written(tmp_path: pathlib.Path) -> Report:
    report = Report("HTML check <a&b>", tmp_path / "run")
    report.section("Summary", "Fit with `code`, a [link](fit.csv) and **bold** text; 1 < 2 & <b>raw</b>.")
    table = Table(
        "Fit <a&b>",
        ["name", "E [GeV]", "n"],
        [["<a&b>", Measurement(1.23456, 0.0123), 3], ["plain", 2.5e-5, None]],
        notes=["a note with <tags> & ampersands"],
    )
    report.table(table, "fit")
    report.section("Figures")
    for stem, caption in (("first", "The *first* figure."), ("second", "")):
        fig, ax = new_figure(figsize=(3, 2))
        ax.plot([0, 1, 2], [0, 1, 4])
        report.figure(fig, stem, caption, dpi=50)
    report.provenance({"seed": 7, "versions": {"numpy": "2.0"}, "config": {"lr": 0.001, "name": "<x>"}})
    assert report.write() == report.path
    return report


def test_html_structure(written: Report) -> None:
    run = written.directory
    path = run / "report.html"
    assert path == written.html_path and path.is_file()
    text = path.read_text(encoding="utf-8")
    page = _parse(text)

    assert text.startswith("<!DOCTYPE html>")
    assert any(a.get("charset", "").lower() == "utf-8" for a in page.find("meta"))
    assert "".join(page.text["title"]) == "HTML check <a&b>"
    assert "<title>HTML check &lt;a&amp;b&gt;</title>" in text

    # figures: exactly two, embedded byte for byte
    imgs = page.find("img")
    assert len(imgs) == 2
    for attrs, stem in zip(imgs, ("first", "second"), strict=True):
        src = attrs["src"] or ""
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data[:8] == PNG_SIGNATURE
        assert data == (run / "figures" / f"{stem}.png").read_bytes()

    # the table: header + 2 rows of 3 cells, numbers right-aligned, Measurement as in Markdown, escaped text
    assert len(page.find("table")) == 1 and len(page.find("caption")) == 1
    assert len(page.find("tr")) == 3 and len(page.find("th")) == 3 and len(page.find("td")) == 6
    assert [a.get("class") for a in page.find("th")] == [None, "num", "num"]
    cells = page.text["td"]
    assert "1.235 ± 0.012" in cells and "<a&b>" in cells and "—" in cells
    assert "<td>&lt;a&amp;b&gt;</td>" in text
    assert "Fit &lt;a&amp;b&gt;" in text and "Fit <a&b>" not in text
    assert "a note with &lt;tags&gt; &amp; ampersands" in text
    assert '<a href="fit.csv">csv</a>' in text

    # the paragraph's Markdown is rendered, its raw HTML is shown as text
    assert "<code>code</code>" in text and "<strong>bold</strong>" in text
    assert '<a href="fit.csv">link</a>' in text
    assert "&lt;b&gt;raw&lt;/b&gt;" in text and "<b>raw</b>" not in text

    # provenance: a definition list and the config as a JSON block
    assert any("provenance" in (a.get("class") or "") for a in page.find("dl"))
    assert '"name": "&lt;x&gt;"' in text and len(page.find("pre")) == 1

    # nothing external, no scripts
    for tag, attrs in page.tags:
        for name, value in attrs.items():
            assert not (value or "").lower().startswith(("http://", "https://", "//")), (tag, name, value)
    assert not page.find("script") and "<script" not in text.lower()
    assert not [a for a in page.find("link") if "stylesheet" in (a.get("rel") or "")]
    assert len(page.find("style")) == 1

    # table of contents: the level-2 sections, each anchor resolving to an element id
    ids = [a["id"] for _, a in page.tags if a.get("id")]
    assert len(ids) == len(set(ids))
    toc = [a["href"] for a in page.find("a") if (a.get("href") or "").startswith("#")]
    assert len(toc) == 3  # Summary, Figures, Provenance
    for href in toc:
        assert href[1:] in ids
    assert [t for t in page.text["h2"] if t.strip()] == ["Summary", "Figures", "Provenance"]


def test_markdown_unchanged_and_html_optional(tmp_path: pathlib.Path) -> None:
    report = Report("Only md", tmp_path)
    report.section("A", "text")
    report.write(html=False)
    assert not (tmp_path / "report.html").exists()
    assert (tmp_path / "report.md").read_text(encoding="utf-8") == "# Only md\n\n## A\n\ntext\n"
    other = report.write_html(tmp_path / "elsewhere" / "page.html")
    assert other.read_text(encoding="utf-8") == report.to_html()
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_table_to_html_alone() -> None:
    table = Table("T", ["x", "m"], [[1.5, Measurement(2.0, 0.5)]], caption="c & d", notes=["n1", "n2"])
    html = table.to_html()
    assert "<caption><strong>T</strong> c &amp; d</caption>" in html
    assert '<td class="num">1.5</td><td class="num">2.00 ± 0.50</td>' in html
    assert '<p class="notes">Notes: n1<br>\nn2</p>' in html


def test_chromium_loads_all_images(written: Report, chromium_images) -> None:
    assert chromium_images(written.directory / "report.html") == (2, 2)
