"""The main job end to end: the quick run of docs/pipeline.md's example (every stage, tiny sizes); the report is
complete and self-contained, a rerun recomputes nothing, and the report opens in headless Chromium with every image
loaded. (tests/test_docs_examples.py leaves that page to this file.)"""

from __future__ import annotations

import base64
import json
import os
import re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pytest

from surrinf.pipeline import run_pipeline
from surrinf.pipeline.job import HEADLINE_COLUMNS, STAGES


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def run_documented_example(directory: Path):
    """Run the Python example of docs/pipeline.md (a quick run) in ``directory``; return its ``result``."""
    from test_docs_examples import python_blocks

    blocks = python_blocks(Path(__file__).resolve().parents[1] / "docs" / "pipeline.md")
    assert len(blocks) == 1 and "run_pipeline(" in blocks[0] and ".quick()" in blocks[0]
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        namespace = {"__name__": "__docs__"}
        exec(compile(blocks[0], "pipeline.md[block 1]", "exec"), namespace)
    finally:
        os.chdir(cwd)
    return namespace["result"]


@pytest.fixture(scope="module")
def quick_run(shared_once):
    """The documented quick run, computed once per session (a worker that needs it later finds every stage cached)."""
    return shared_once("pipeline-quick", run_documented_example)


def test_every_stage_ran_and_the_report_is_complete(quick_run):
    run_dir = quick_run.run_dir
    assert [s.name for s in STAGES] == list(quick_run.outputs)
    assert all(o is not None for o in quick_run.outputs.values())
    md = (run_dir / "report.md").read_text()
    html = (run_dir / "report.html").read_text()
    headline = json.loads((run_dir / "headline.json").read_text())
    assert headline["columns"] == HEADLINE_COLUMNS
    stages_in_headline = {row[0] for row in headline["rows"]}
    assert {"fidelity", "calibration", "unfolding", "kinfit", "sensitivity"} <= stages_in_headline, stages_in_headline
    for needle in ("classifier AUC", "bias", "m_jj", "Z0", "coverage"):
        assert needle in md, needle
    # the configuration, seed, versions and git revision are in the page
    text = unescape(html)
    assert "[train]" in text and "max_steps = 30" in text and 'name = "quick"' in text
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert provenance["seed"] == 0 and provenance["versions"]["jax"] and "git" in provenance
    assert provenance["config"]["train"]["max_steps"] == 30
    assert provenance["git"] is None or provenance["git"] in html
    # self-contained: every image is an embedded PNG, nothing is fetched from elsewhere, no scripts
    page = _Tags()
    page.feed(html)
    images = [a["src"] for t, a in page.tags if t == "img"]
    assert len(images) >= 8
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [t for t, _ in page.tags if t in ("script", "link", "iframe")]
    assert not [a for _, attrs in page.tags for k, a in attrs.items() if k == "src" and re.match(r"https?:", a or "")]
    assert (run_dir / "validation" / "report.html").is_file()  # the full validation report, linked


def test_rerun_recomputes_nothing(quick_run, monkeypatch):
    monkeypatch.chdir(quick_run.run_dir.parents[1])  # the example's out_dir "runs" is relative to where it ran
    again = run_pipeline(quick_run.config, progress=False)
    assert again.run_dir == quick_run.run_dir
    assert all(o.cached for o in again.outputs.values())
    assert {n: o.summary for n, o in again.outputs.items()} == {n: o.summary for n, o in quick_run.outputs.items()}


def test_report_opens_in_chromium_with_every_image(quick_run, chromium_images):
    loaded, total = chromium_images(quick_run.run_dir / "report.html")
    assert total >= 8 and loaded == total
