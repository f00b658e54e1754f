"""The main job (``surrinf run``, ``make run``): every stage in order, then the run report.

simulate -> train -> validate -> calibration -> unfolding -> jets -> kinfit -> sensitivity, then
``<out_dir>/<name>-<hash>/report.md`` and the self-contained ``report.html``: a headline table (surrogate fidelity,
calibration posterior and coverage, unfolding bias, m_jj shift before and after the kinematic fit, Z0 with
reference and surrogate templates), one section per stage, the configuration, seeds, versions and git revision.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from surrinf._atomic import atomic_write_text
from surrinf.pipeline.calibration import CALIBRATION, headline_calibration, report_calibration
from surrinf.pipeline.config import PipelineConfig, config_hash, to_toml
from surrinf.pipeline.dijet import JETS, KINFIT, SENSITIVITY, headline_dijet, report_dijet
from surrinf.pipeline.runner import RunResult, Stage, StageOutput, run_stages
from surrinf.pipeline.shower import SIMULATE, TRAIN, VALIDATE, headline_shower, report_shower
from surrinf.pipeline.unfolding import UNFOLDING, headline_unfolding, report_unfolding
from surrinf.report import Report, Table, provenance, write_provenance

__all__ = ["HEADLINE_COLUMNS", "STAGES", "run_pipeline", "write_report"]

#: Every stage of the main job, in order.
STAGES: tuple[Stage, ...] = (SIMULATE, TRAIN, VALIDATE, CALIBRATION, UNFOLDING, JETS, KINFIT, SENSITIVITY)

#: Columns of the headline table.
HEADLINE_COLUMNS = ["stage", "quantity", "reference / target", "surrogate", "comment"]

Outputs = dict[str, StageOutput | None]

#: (stages whose outputs a report part needs, section writer, headline rows)
_PARTS: tuple[tuple[tuple[str, ...], Callable[..., None], Callable[[Outputs], list]], ...] = (
    (("simulate", "train", "validate"), report_shower, headline_shower),
    (("calibration",), report_calibration, headline_calibration),
    (("unfolding",), report_unfolding, headline_unfolding),
    (("jets",), report_dijet, headline_dijet),
)


def run_pipeline(config: PipelineConfig | None = None, *, progress: bool = True) -> RunResult:
    """Run the main job with ``config`` (default: the embedded defaults) and write its report.

    Finished stages found in the stage cache are skipped; a stage interrupted earlier starts again (training resumes
    from its last checkpoint). Returns the run directory and every stage's output; the report is
    ``result.run_dir / "report.html"`` (and ``report.md``).
    """
    cfg = config or PipelineConfig()
    result = run_stages(STAGES, cfg, progress=progress)
    path = write_report(result)
    if progress:
        print(f"[surrinf run] report: {path.with_suffix('.html')}", file=sys.stderr, flush=True)
    return result


def _status(out: StageOutput | None) -> list[Any]:
    if out is None:
        return ["disabled", "", ""]
    return ["cached" if out.cached else "ran", round(out.seconds, 1), out.path.name]


def write_report(result: RunResult, stages: Sequence[Stage] = STAGES) -> Path:
    """Write ``report.md`` and ``report.html`` into the run directory from the stage outputs; return the .md path."""
    cfg, outputs, run_dir = result.config, result.outputs, result.run_dir
    rep = Report("surrinf: surrogate fidelity and analysis impact", run_dir)
    train = outputs.get("train")
    kind = train.summary.get("kind", "?") if train is not None else "?"
    rep.paragraph(
        f"The `{kind}` shower surrogate trained on the reference showers, validated against held-out reference "
        "showers, and the same analyses run with the reference and with the surrogate: tempered Bayesian calibration "
        "of the detector parameters, unfolding with a surrogate-built response matrix, the dijet mass before and "
        "after a kinematic fit with the surrogate's jet response, and the expected discovery significance. Energies "
        f"in GeV. Configuration hash `{config_hash(cfg.to_dict())[:16]}`, seed {cfg.run.seed}."
    )
    rows: list[list[Any]] = []
    for needs, _, headline in _PARTS:
        if all(outputs.get(n) is not None for n in needs):
            rows.extend(headline(outputs))
    rep.section("Headline")
    rep.table(
        Table(
            "Headline: reference vs surrogate",
            HEADLINE_COLUMNS,
            rows,
            notes=["value ± uncertainty; the details are in the sections below"],
        ),
        "headline",
    )
    for needs, section, _ in _PARTS:
        if all(outputs.get(n) is not None for n in needs):
            section(rep, outputs, run_dir)
        else:
            off = [n for n in needs if outputs.get(n) is None]
            rep.section(needs[0].capitalize(), f"Not run: stage(s) {', '.join(off)} disabled in the configuration.")
    rep.section("Stages")
    rep.table(
        Table(
            "Stages of this run (cached: found finished in the stage cache, not recomputed)",
            ["stage", "status", "seconds (when computed)", "cache entry"],
            [[s.name, *_status(outputs.get(s.name))] for s in stages],
        ),
        "stages",
    )
    rep.section("Configuration", "The effective configuration (`config.toml` in the run directory):")
    rep.paragraph(f"```toml\n{to_toml(cfg, comments=False)}```")
    info = provenance(cfg.to_dict(), seed=cfg.run.seed)
    info["stage_hashes"] = {n: (o.hash[:16] if o is not None else None) for n, o in outputs.items()}
    write_provenance(run_dir / "provenance.json", info)  # with the configuration, shown as TOML above
    rep.provenance({k: v for k, v in info.items() if k != "config"}, save_json=False)
    rep.paragraph("Files: [json](provenance.json)")
    path = rep.write()
    summaries = {n: (o.summary if o is not None else None) for n, o in outputs.items()}
    atomic_write_text(run_dir / "summary.json", json.dumps(summaries, indent=1))
    return path
