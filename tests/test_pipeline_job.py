"""The main job end to end on a tiny configuration: every stage runs, the report is complete and self-contained, a
rerun recomputes nothing, and the report opens in headless Chromium with every image loaded."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser

import pytest

from surrinf.pipeline import PipelineConfig, run_pipeline
from surrinf.pipeline.job import HEADLINE_COLUMNS, STAGES

#: Every stage, tiny: seconds each once compiled (the numbers are meaningless, the code paths are the real ones).
TINY = {
    "simulate": {"n_train": 1000, "n_test": 500, "energy_spectrum": "log-uniform:5,500"},
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
    "kinfit": {"calibration_energies_gev": [10.0, 30.0, 100.0, 300.0], "n_per_energy": 50, "n_events": 1000},
    "sensitivity": {"n_signal": 1000, "n_background": 2000, "lumi_fb": [10.0], "bins": 6},
}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("job") / "runs"
    cfg = PipelineConfig().replace(run={"out_dir": str(out)}, **TINY)
    return run_pipeline(cfg, progress=False)


def test_every_stage_ran_and_the_report_is_complete(tiny_run):
    run_dir = tiny_run.run_dir
    assert [s.name for s in STAGES] == list(tiny_run.outputs)
    assert all(o is not None and not o.cached for o in tiny_run.outputs.values())
    md = (run_dir / "report.md").read_text()
    html = (run_dir / "report.html").read_text()
    headline = json.loads((run_dir / "headline.json").read_text())
    assert headline["columns"] == HEADLINE_COLUMNS
    stages_in_headline = {row[0] for row in headline["rows"]}
    assert {"fidelity", "calibration", "unfolding", "kinfit", "sensitivity"} <= stages_in_headline, stages_in_headline
    for needle in ("classifier AUC", "bias", "m_jj", "Z0", "coverage"):
        assert needle in md, needle
    # the configuration, seed, versions and git revision are in the page
    assert "[train]" in html and "max_steps = 30" in html
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert provenance["seed"] == 0 and provenance["versions"]["jax"] and "git" in provenance
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


def test_rerun_recomputes_nothing(tiny_run):
    again = run_pipeline(tiny_run.config, progress=False)
    assert again.run_dir == tiny_run.run_dir
    assert all(o.cached for o in again.outputs.values())
    assert {n: o.summary for n, o in again.outputs.items()} == {n: o.summary for n, o in tiny_run.outputs.items()}


def test_report_opens_in_chromium_with_every_image(tiny_run, chromium_images):
    loaded, total = chromium_images(tiny_run.run_dir / "report.html")
    assert total >= 8 and loaded == total
