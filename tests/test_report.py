"""Tests for surrinf.report: tables, figures, reports and provenance."""

from __future__ import annotations

import csv
import io
import json
import math
import pathlib
import re

import matplotlib
import numpy as np
import pytest

from surrinf.report import (
    Measurement,
    Report,
    Table,
    hep_style,
    hist_with_ratio,
    new_figure,
    provenance,
    save_figure,
    write_provenance,
)
from surrinf.report.measurement import format_sig
from surrinf.report.provenance import git_revision

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def tiny() -> Table:
    return Table("Fit", ["name", "E [GeV]", "n"], [["a_1", Measurement(1.23456, 0.0123), 3], ["b%", 2.5e-5, None]])


def _leftovers(directory: pathlib.Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.name.endswith(".tmp"))


# ---------------------------------------------------------------------- numbers
@pytest.mark.parametrize(
    ("x", "text"),
    [(1.5, "1.5"), (0.1, "0.1"), (3.14159265, "3.142"), (12345.678, "12346"), (1234567.0, "1.235e+06"),
     (2.5e-5, "2.5e-05"), (-0.5, "-0.5"), (0.0, "0"), (math.nan, "nan"), (-math.inf, "-inf")],
)  # fmt: skip
def test_format_sig(x: float, text: str) -> None:
    assert format_sig(x) == text


@pytest.mark.parametrize(
    ("value", "error", "text"),
    [(1.23456, 0.0123, "1.235 ± 0.012"), (1234.5, 56.7, "1234 ± 57"), (0.5, 0.0996, "0.50 ± 0.10"),
     (1.23456e-5, 1.23e-7, "(1.235 ± 0.012)e-05"), (2.0, 0.0, "2 ± 0")],
)  # fmt: skip
def test_measurement_str(value: float, error: float, text: str) -> None:
    assert str(Measurement(value, error)) == text


# ---------------------------------------------------------------------- tables
def test_markdown_exact(tiny: Table) -> None:
    assert tiny.to_markdown() == (
        "**Fit**\n"
        "\n"
        "| name |       E [GeV] |   n |\n"
        "| ---- | ------------: | --: |\n"
        "| a_1  | 1.235 ± 0.012 |   3 |\n"
        "| b%   |       2.5e-05 |   — |\n"
    )


def test_csv_exact_and_parse_back(tiny: Table) -> None:
    text = tiny.to_csv()
    assert text == "name,E [GeV],E [GeV]_err,n\r\na_1,1.23456,0.0123,3\r\nb%,2.5e-05,,\r\n"
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == ["name", "E [GeV]", "E [GeV]_err", "n"]
    assert float(rows[1][1]) == 1.23456 and float(rows[1][2]) == 0.0123
    assert rows[2] == ["b%", "2.5e-05", "", ""]


def test_csv_quoting_roundtrip() -> None:
    table = Table("q", ["text", "x"], [['a, "quoted"\nline', 1.0], ["plain", Measurement(2.0, 0.5)]])
    records = list(csv.DictReader(io.StringIO(table.to_csv(), newline="")))
    assert records[0] == {"text": 'a, "quoted"\nline', "x": "1.0", "x_err": ""}
    assert records[1] == {"text": "plain", "x": "2.0", "x_err": "0.5"}


def test_latex_exact(tiny: Table) -> None:
    assert tiny.to_latex(float_env=False) == (
        "\\begin{tabular}{lrr}\n"
        "  \\toprule\n"
        "  name & E [GeV] & n \\\\\n"
        "  \\midrule\n"
        "  a\\_1 & $1.235 \\pm 0.012$ & 3 \\\\\n"
        "  b\\% & $2.5 \\times 10^{-5}$ & -- \\\\\n"
        "  \\bottomrule\n"
        "\\end{tabular}\n"
    )
    full = tiny.to_latex(label="tab:fit")
    assert full.startswith("\\begin{table}[htbp]\n  \\centering\n  \\caption{Fit}\n  \\label{tab:fit}\n")
    assert full.endswith("\\end{table}\n")


def test_latex_escaping() -> None:
    table = Table("eff_total 50%", ["bin_id", "frac [%]"], [["a_b & c#d $x$ {y} ~z^ \\w", "[GeV]"]], caption="q_T")
    tex = table.to_latex()
    assert r"\caption{eff\_total 50\%. q\_T}" in tex
    assert r"bin\_id & frac [\%] \\" in tex
    assert r"a\_b \& c\#d \$x\$ \{y\} \textasciitilde{}z\textasciicircum{} \textbackslash{}w & [GeV] \\" in tex
    assert "{}[" not in tex  # only a row *starting* with "[" needs protecting
    first = Table("t", ["a"], [["[x]"]]).to_latex(float_env=False)
    assert r"{}[x] \\" in first


def test_formats_and_overrides() -> None:
    table = Table(
        "f",
        ["a", "b", "c"],
        [[0.123456, 0.123456, 7], [np.float32(2.0), np.int64(5), 12345]],
        float_format=3,
        column_formats={"b": ".1%", "c": "{:,}"},
    )
    assert table.rows[1][:2] == [2.0, 5] and type(table.rows[1][1]) is int  # numpy scalars become Python numbers
    md = table.to_markdown()
    assert "| 0.123 |  12.3% |      7 |" in md
    assert "|     2 | 500.0% | 12,345 |" in md  # a str override also formats ints
    assert r"12.3\%" in table.to_latex()


def test_table_validation() -> None:
    with pytest.raises(ValueError, match="cells"):
        Table("t", ["a", "b"], [[1]])
    with pytest.raises(TypeError):
        Table("t", ["a"], [[object()]])
    with pytest.raises(ValueError, match="duplicate"):
        Table("t", ["a", "a"])
    table = Table("t", ["a", "b"]).add_row({"b": 2}).add_row([1, "x"])
    assert table.rows == [[None, 2], [1, "x"]]
    assert table.column("a") == [None, 1]


def test_dict_roundtrip(tiny: Table) -> None:
    tiny.add_row(["c", Measurement(math.nan, math.inf), -4]).notes.append("n")
    data = json.loads(json.dumps(tiny.to_dict(), allow_nan=False))  # strictly JSON-safe
    back = Table.from_dict(data)
    assert back.columns == tiny.columns and back.title == tiny.title and back.notes == ["n"]
    assert back.rows[:2] == tiny.rows[:2]
    m = back.rows[2][1]
    assert isinstance(m, Measurement) and math.isnan(m.value) and m.error == math.inf
    assert back.to_markdown() == tiny.to_markdown()


def test_save_all_formats(tmp_path: pathlib.Path, tiny: Table) -> None:
    paths = tiny.save(tmp_path / "out", "fit")
    assert set(paths) == {"md", "csv", "tex", "json"}
    assert paths["md"].read_text(encoding="utf-8") == tiny.to_markdown()
    assert paths["csv"].read_bytes() == tiny.to_csv().encode()
    assert Table.load(paths["json"]).rows == tiny.rows
    assert "\\label{tab:fit}" in paths["tex"].read_text()
    assert _leftovers(tmp_path) == []
    with pytest.raises(ValueError):
        tiny.save(tmp_path, "fit", formats=("md", "xlsx"))
    with pytest.raises(ValueError):
        tiny.save(tmp_path, "../escape")


def test_save_failure_keeps_old_file(tmp_path: pathlib.Path, tiny: Table, monkeypatch: pytest.MonkeyPatch) -> None:
    old = tmp_path / "fit.csv"
    old.write_text("old content", encoding="utf-8")
    original = pathlib.Path.write_text

    def broken_write_text(self: pathlib.Path, data: str, *args: object, **kwargs: object) -> int:
        original(self, data[: len(data) // 2], *args, **kwargs)  # a partial write, then the disk "fails"
        raise OSError("disk full")

    monkeypatch.setattr(pathlib.Path, "write_text", broken_write_text)
    with pytest.raises(OSError, match="disk full"):
        tiny.save(tmp_path, "fit", formats=("csv",))
    monkeypatch.undo()
    assert old.read_text(encoding="utf-8") == "old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.csv"]


# ---------------------------------------------------------------------- figures
def test_hep_style_does_not_leak() -> None:
    before = dict(matplotlib.rcParams)
    with hep_style():
        assert matplotlib.rcParams["xtick.direction"] == "in"
    fig, _ = new_figure()
    assert dict(matplotlib.rcParams) == before
    assert fig.canvas.get_default_filetype() == "png"


def test_save_figure_png(tmp_path: pathlib.Path) -> None:
    fig, ax = new_figure()
    ax.plot([0, 1, 2], [0, 1, 4], label="x^2")
    ax.set_xlabel("x [GeV]")
    path = save_figure(fig, tmp_path / "plots" / "curve.png")
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 5_000
    assert save_figure(new_figure()[0], tmp_path / "noext").suffix == ".png"
    assert _leftovers(tmp_path) == []


def test_save_figure_failure_keeps_old_file(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = tmp_path / "f.png"
    old.write_bytes(b"old")
    fig, _ = new_figure()

    def broken_savefig(fname: object, *args: object, **kwargs: object) -> None:
        pathlib.Path(fname).write_bytes(PNG_SIGNATURE)
        raise RuntimeError("render failed")

    monkeypatch.setattr(fig, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="render failed"):
        save_figure(fig, old)
    assert old.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png"]


def test_hist_with_ratio_gaussians(tmp_path: pathlib.Path) -> None:
    rng = np.random.default_rng(1)
    reference, candidate = rng.normal(size=200_000), rng.normal(size=200_000)
    fig, (ax_main, ax_ratio) = new_figure(ratio=True)
    comp = hist_with_ratio(ax_main, ax_ratio, reference, candidate, bins=np.linspace(-4, 4, 41), xlabel="x")
    bulk = np.abs(comp.centers) < 1.5
    assert np.all(np.abs(comp.ratio[bulk] - 1) < 5 * comp.ratio_err[bulk])
    assert abs(np.mean(comp.ratio[bulk]) - 1) < 0.01
    assert np.all(comp.ratio_err[bulk] < 0.05)
    assert np.isclose(np.sum(comp.reference * np.diff(comp.edges)), 1.0)  # density
    assert ax_ratio.get_ylabel() == "Ratio" and ax_ratio.get_xlabel() == "x"
    assert save_figure(fig, tmp_path / "h.png").read_bytes()[:8] == PNG_SIGNATURE


def test_hist_with_ratio_counts_and_empty_bins() -> None:
    _, (ax_main, ax_ratio) = new_figure(ratio=True)
    comp = hist_with_ratio(ax_main, ax_ratio, [0.5, 0.5, 0.5, 0.5], [0.5, 2.5], bins=[0, 1, 2, 3], density=False)
    np.testing.assert_allclose(comp.reference, [4, 0, 0])
    np.testing.assert_allclose(comp.candidate_err, [1, 0, 1])
    assert comp.ratio[0] == 0.25 and np.isnan(comp.ratio[1:]).all()
    np.testing.assert_allclose(comp.ratio_err[0], 0.25 * math.sqrt(1 / 1 + 1 / 4))
    _, axes = new_figure(nrows=2, ratio=True)
    assert axes.shape == (2, 2)


# ---------------------------------------------------------------------- report and provenance
def test_report_writes_markdown_with_files(tmp_path: pathlib.Path, tiny: Table) -> None:
    run = tmp_path / "run"
    fig, ax = new_figure()
    ax.plot([1, 2, 3])
    report = Report("Validation", run)
    report.section("Summary", "All good.").table(tiny, "fit").figure(fig, "curve", "A curve")
    report.provenance(provenance({"n": 3}, seed=7, include_jax=False))
    path = report.write()
    assert path == run / "report.md"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Validation\n\n## Summary\n\nAll good.\n")
    assert tiny.to_markdown().strip() in text
    assert "![A curve](figures/curve.png)" in text
    for link in re.findall(r"\]\(([^)]+)\)", text):
        assert (run / link).is_file(), link
    assert {"fit.csv", "fit.tex", "fit.json", "fit.md", "provenance.json"} <= {p.name for p in run.iterdir()}
    assert (run / "figures" / "curve.png").read_bytes()[:8] == PNG_SIGNATURE
    assert json.loads((run / "provenance.json").read_text())["seed"] == 7
    with pytest.raises(ValueError, match="already used"):
        report.table(tiny, "fit")
    with pytest.raises(ValueError, match="reserved"):
        report.table(tiny, "report")
    assert _leftovers(run) == []


def test_provenance_keys(tmp_path: pathlib.Path) -> None:
    info = provenance({"lr": 1e-3, "out": tmp_path, "bins": (1, 2)}, seed=42)
    for key in ("timestamp", "surrinf_version", "versions", "python", "platform", "jax", "git", "git_dirty",
                "config", "seed"):  # fmt: skip
        assert key in info
    assert info["timestamp"].endswith("+00:00")
    assert info["git"] is None or re.fullmatch(r"[0-9a-f]{40}", info["git"])
    assert info["git_dirty"] is None if info["git"] is None else isinstance(info["git_dirty"], bool)
    assert info["versions"]["numpy"] == np.__version__
    assert info["config"] == {"lr": 1e-3, "out": str(tmp_path), "bins": [1, 2]} and info["seed"] == 42
    path = write_provenance(tmp_path / "prov.json", info)
    assert json.loads(path.read_text()) == info


def test_provenance_outside_git(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    assert git_revision(tmp_path) == (None, None)
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable at all
    info = provenance(include_jax=False)
    assert info["git"] is None and info["git_dirty"] is None and info["jax"] is None
