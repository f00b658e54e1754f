"""The ```python examples of docs/*.md and README.md run as written (issue 9: one page per module, runnable, tested).

Each page's blocks run top to bottom in one fresh namespace, as a reader would run them, in a temporary working
directory (so every file an example writes lands there). They run in-process: the JAX import and compilation
caches are shared with the rest of the test session.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

REPO = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)

# Pages whose examples need an optional extra: page name -> (module to import, reason). None at present.
EXTRAS: dict[str, tuple[str, str]] = {}


def python_blocks(page: Path) -> list[str]:
    """The page's ```python fenced blocks, in order."""
    return FENCE.findall(page.read_text(encoding="utf-8"))


# Pages whose example another test runs and checks: page name -> that test file.
RUN_ELSEWHERE = {"pipeline.md": "tests/test_pipeline_job.py"}


def pages() -> list[Path]:
    """docs/*.md and README.md that contain at least one ```python block (except those in RUN_ELSEWHERE)."""
    candidates = [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]
    return [p for p in candidates if p.is_file() and python_blocks(p) and p.name not in RUN_ELSEWHERE]


def test_pages_run_elsewhere_are_run_there():
    for page, test_file in RUN_ELSEWHERE.items():
        assert python_blocks(REPO / "docs" / page), page
        assert "python_blocks" in (REPO / test_file).read_text() and page in (REPO / test_file).read_text()


def test_pages_found():
    assert pages(), "no ```python blocks found in docs/*.md or README.md"


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.name)
def test_page_examples_run(page: Path, tmp_path, monkeypatch):
    if page.name in EXTRAS:
        module, reason = EXTRAS[page.name]
        pytest.importorskip(module, reason=reason)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    import matplotlib.pyplot as plt

    try:
        for i, block in enumerate(python_blocks(page), start=1):
            first = next((line for line in block.splitlines() if line.strip()), "")
            try:
                exec(compile(block, f"{page.name}[block {i}]", "exec"), namespace)
            except Exception as exc:
                rel = page.relative_to(REPO)
                pytest.fail(f"{rel}, block {i} (first line: {first!r}): {type(exc).__name__}: {exc}")
    finally:
        plt.close("all")
