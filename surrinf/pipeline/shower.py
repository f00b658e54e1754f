"""The shower stages of the main job: reference showers, the surrogate, and its validation.

``simulate`` writes ``reference_train.h5`` and ``reference_test.h5`` (CaloChallenge format, MeV) from the embedded
calorimeter, or copies them out of the user's file (``simulate.data``); ``train`` trains the surrogate (resuming from
its checkpoints after a kill) or copies the user's saved one (``train.model``) to ``model/``; ``validate`` compares
surrogate showers with the held-out reference at the same incident energies (``validation/`` holds the full
validation report). Later stages read these outputs through :func:`reference_showers` and :func:`load_surrogate`.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from surrinf.data import ShowerBijection, ShowerData, read_showers, write_showers
from surrinf.data.calochallenge import file_info
from surrinf.generators import TrainConfig, load, sample_batched, save
from surrinf.generators.base import zero_suppress
from surrinf.generators.models import fit_surrogate
from surrinf.pipeline.config import ConfigError, PipelineConfig
from surrinf.pipeline.runner import Stage, StageContext, StageOutput
from surrinf.report import Measurement, Report, Table, new_figure, save_figure
from surrinf.sim import Calorimeter, calorimeter, get_material, simulate_to_file
from surrinf.sim.spectrum import parse_energy_spec
from surrinf.validation import ValidationConfig, validate
from surrinf.validation.validate import Showers

__all__ = ["SIMULATE", "TRAIN", "VALIDATE", "calorimeter_for", "load_surrogate", "reference_showers"]

#: The observables whose W1 / floor the headline quotes.
KEY_OBSERVABLES = ("E_ratio", "depth_of_max")


def calorimeter_for(cfg: PipelineConfig) -> Calorimeter:
    """The embedded reference calorimeter of ``[simulate]`` (geometry, material)."""
    return calorimeter(cfg.simulate.geometry, cfg.simulate.material or None)


def reference_showers(out: StageOutput, which: str = "train", stop: int | None = None) -> ShowerData:
    """The simulate stage's reference showers (``which`` = "train" or "test"; MeV, as stored)."""
    if which not in ("train", "test"):
        raise ValueError(f"which must be 'train' or 'test', got {which!r}")
    return read_showers(out.path / f"reference_{which}.h5", stop=stop)


def load_surrogate(out: StageOutput) -> Any:
    """The train stage's surrogate (an eqx.Module with ``sample`` / ``generate``)."""
    return load(out.path / "model")[0]


# ----------------------------------------------------------------------------------------------------- simulate
def _simulate(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.section
    work = ctx.work_dir
    if cfg.data:
        n = int(file_info(cfg.data)["n_showers"])
        need = cfg.n_train + cfg.n_test
        if n < need:
            raise ConfigError(
                f"config key 'simulate.n_train': simulate.data {cfg.data!r} holds {n} showers, fewer than "
                f"n_train + n_test = {need}"
            )
        train = read_showers(cfg.data, stop=cfg.n_train)
        if train.geometry is None:
            raise ConfigError(f"config key 'simulate.data': {cfg.data!r} stores no geometry (surrinf_geometry)")
        write_showers(work / "reference_train.h5", train)
        write_showers(work / "reference_test.h5", read_showers(cfg.data, start=cfg.n_train, stop=need))
        geo = train.geometry
        material = train.attrs.get("material")
        e = train.energies_gev().astype(np.float64)
        visible = float(np.median(np.maximum(train.showers_gev(), 0).sum(1) / e))
        try:
            x0_mm = float(get_material(material).X0_mm) if material else None
        except (KeyError, ValueError):
            x0_mm = None
        source = str(cfg.data)
    else:
        cal = calorimeter_for(ctx.config)
        spectrum = parse_energy_spec(cfg.energy_spectrum)
        k_e, k_train, k_test = jax.random.split(ctx.key, 3)
        energies = np.asarray(spectrum.sample(k_e, cfg.n_train + cfg.n_test))
        simulate_to_file(cal, k_train, energies[: cfg.n_train], work / "reference_train.h5", progress=ctx.progress)
        simulate_to_file(cal, k_test, energies[cfg.n_train :], work / "reference_test.h5", progress=ctx.progress)
        geo, material = cal.geometry, cal.material.name
        visible = float(cal.params.energy_scale * cal.material.sampling_fraction)
        x0_mm = float(cal.x0_mm)
        source = f"GFLASH calorimeter ({cfg.energy_spectrum} GeV)"
    return {
        "source": source,
        "geometry": geo.name,
        "n_voxels": int(geo.n_voxels),
        "material": material,
        "x0_mm": x0_mm,
        "visible_fraction": visible,
        "n_train": cfg.n_train,
        "n_test": cfg.n_test,
    }


SIMULATE = Stage(
    "simulate",
    "reference showers",
    _simulate,
    table="simulate",
    files=lambda cfg: [cfg.simulate.data] if cfg.simulate.data else [],
)


# -------------------------------------------------------------------------------------------------------- train
def _train(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.section
    work = ctx.work_dir
    if cfg.model:
        shutil.copytree(cfg.model, work / "model", dirs_exist_ok=True)
        model = load(work / "model")[0]  # checks the files (SHA-256) before any later stage relies on them
        return {"source": str(cfg.model), "kind": type(model).__name__, "steps": None, "resumed": False}
    data = reference_showers(ctx.inputs["simulate"], "train")
    showers = np.maximum(data.showers_gev(), 0.0)  # noise: surrogates model non-negative showers
    energies = data.energies_gev()
    tc = TrainConfig(
        batch_size=cfg.batch_size,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        warmup_steps=min(cfg.warmup_steps, cfg.max_steps),
        eval_every=max(1, min(250, cfg.max_steps)),
        checkpoint_every=cfg.checkpoint_every,
        log_every=max(1, min(50, cfg.max_steps)),
    )
    model_config = {"hidden": [cfg.hidden, cfg.hidden], "n_layers": cfg.n_layers} if cfg.kind == "flow" else None
    log_dir = work / "train"
    resume = ctx.resume and (log_dir / "checkpoint").exists()
    t0 = time.perf_counter()
    model, result = fit_surrogate(
        cfg.kind,
        ctx.key,
        showers,
        energies,
        ShowerBijection(data.geometry),
        model_config=model_config,
        train_config=tc,
        out_dir=log_dir,
        progress=ctx.progress,
        resume=resume,
    )
    seconds = time.perf_counter() - t0
    save(model, work / "model", model.config(), metadata={"pipeline": "train", "steps": result.steps_run})
    _loss_figure(result.history, work / "loss.png")
    return {
        "source": "trained",
        "kind": cfg.kind,
        "steps": result.steps_run,
        "best_step": result.best_step,
        "best_val_loss": result.best_val_loss,
        "train_seconds": seconds,
        "resumed": resume,
        "train_config": tc.to_dict(),
        "model_config": model.config(),
    }


def _loss_figure(history: list[dict[str, Any]], path: Path) -> None:
    fig, ax = new_figure()
    for name in ("train_loss", "val_loss"):
        pts = [(r["step"], r[name]) for r in history if r.get(name) is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o" if name == "val_loss" else None, label=name.replace("_", " "))
    ax.set(xlabel="step", ylabel="loss (negative log-likelihood per shower)")
    ax.legend()
    save_figure(fig, path)


TRAIN = Stage(
    "train",
    "surrogate training",
    _train,
    needs=("simulate",),
    table="train",
    resumable=True,
    files=lambda cfg: [cfg.train.model] if cfg.train.model else [],
)


# ----------------------------------------------------------------------------------------------------- validate
def _validate(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.section
    sim = ctx.inputs["simulate"]
    test = reference_showers(sim, "test", stop=cfg.n_showers)
    e = test.energies_gev().astype(np.float64)
    model = load_surrogate(ctx.inputs["train"])
    k_gen, k_val = jax.random.split(ctx.key)
    t0 = time.perf_counter()
    gen = sample_batched(model, k_gen, e.astype(np.float32))
    rate = e.size / (time.perf_counter() - t0)
    ref = Showers(e, zero_suppress(np.maximum(test.showers_gev(), 0.0), e))  # like the surrogate's output
    rep = validate(
        ref,
        Showers(e, np.asarray(gen)),
        test.geometry,
        key=k_val,
        x0_mm=sim.summary["x0_mm"],
        config=ValidationConfig(classifier=cfg.classifier, low_level=cfg.classifier),
    )
    rep.save(ctx.work_dir / "validation", title="Validation of the surrogate against the held-out reference")

    def auc(res) -> list[float] | None:
        return None if res is None else [float(res.auc), float(res.auc_std)]

    w1 = {}
    for name in KEY_OBSERVABLES:
        try:
            c = rep.observable(name)
        except KeyError:
            continue
        w1[name] = [float(c.w1_over_floor), float(c.w1_err / c.w1_floor)]
    return {
        "n_showers": int(e.size),
        "auc_high": auc(rep.classifier_high),
        "auc_low": auc(rep.classifier_low),
        "w1_over_floor": w1,
        "within_floor": [int(sum(c.w1_within_floor for c in rep.one_d)), len(rep.one_d)],
        "energy_distance_p": float(rep.energy_distance.p_value),
        "samples_per_s": rate,
    }


VALIDATE = Stage("validate", "surrogate validation", _validate, needs=("simulate", "train"), table="validate")


# -------------------------------------------------------------------------------------------------------- report
def report_shower(report: Report, outputs: dict[str, StageOutput | None], run_dir: Path) -> None:
    """The reference, surrogate and validation sections of the run report."""
    sim, train, val = outputs["simulate"], outputs["train"], outputs["validate"]
    s = sim.summary
    report.section("Reference showers")
    report.paragraph(
        f"{s['n_train']} training and {s['n_test']} held-out showers from {s['source']}; geometry `{s['geometry']}` "
        f"({s['n_voxels']} voxels), material {s['material'] or 'unknown'}; files in CaloChallenge format (MeV)."
    )
    t = train.summary
    report.section("Surrogate")
    if t["source"] == "trained":
        report.paragraph(
            f"A `{t['kind']}` surrogate trained for {t['steps']} steps ({t['train_seconds']:.0f} s"
            f"{', resumed from a checkpoint' if t['resumed'] else ''}); best validation loss "
            f"{t['best_val_loss']:.3f} at step {t['best_step']}."
        )
        report.image(train.path / "loss.png", "training_loss", "Training and validation loss.")
    else:
        report.paragraph(f"The saved surrogate `{t['source']}` ({t['kind']}), not retrained.")
    v = val.summary
    report.section("Surrogate fidelity")
    vdir = val.path / "validation"
    report.table(Table.load(vdir / "summary.json"), "validation_summary")
    for name in KEY_OBSERVABLES:
        png = vdir / "figures" / f"hist_{name}.png"
        if png.is_file():
            report.image(png, f"validation_{name}", f"{name}: held-out reference vs surrogate (ratio below).")
    shutil.copytree(vdir, run_dir / "validation", dirs_exist_ok=True)
    report.paragraph(
        f"{v['n_showers']} surrogate showers at the held-out energies ({v['samples_per_s']:.0f} showers/s); "
        "the full validation report (every observable, energy response, calibration error) is in "
        "[validation/report.html](validation/report.html)."
    )


def headline_shower(outputs: dict[str, StageOutput | None]) -> list[list[Any]]:
    """Headline rows: classifier AUC (ideal 0.5) and W1 / floor of the key observables (ideal <~ 1)."""
    v = outputs["validate"].summary
    rows = []
    for label, key in (("classifier AUC, high-level features", "auc_high"), ("classifier AUC, voxels", "auc_low")):
        if v[key] is not None:
            rows.append(["fidelity", label, "0.5 (indistinguishable)", Measurement(*v[key]), ""])
    for name, (w, err) in v["w1_over_floor"].items():
        rows.append(["fidelity", f"{name} W1 / floor", "<~ 1 (reference-vs-reference)", Measurement(w, err), ""])
    n_in, n_all = v["within_floor"]
    rows.append(["fidelity", "observables with W1 within floor", f"{n_all} / {n_all}", f"{n_in} / {n_all}", ""])
    return rows
