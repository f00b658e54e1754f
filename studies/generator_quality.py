"""Generator quality study: each surrogate family trained on default-geometry reference showers, validated.

For every model (flow, VAE, flow-matching diffusion, WGAN-GP): train with its default configuration
(:data:`surrinf.generators.models.DEFAULT_TRAIN_CONFIGS`) on ``--n-train`` reference showers (default
geometry, log-uniform 1-1000 GeV), generate as many showers as a held-out reference sample at the same
incident energies and validate with :func:`surrinf.validation.validate` against the held-out reference
zero-suppressed at 1e-6 E like the surrogates' output (classifier AUC on high- and low-level features,
W1 of the key observables relative to the reference-vs-reference floor); measure the mean E_vis/E at 5,
50 and 500 GeV against the reference at the same energies, and the sampling rate.
Writes the trained models and a result file per family to ``--model-dir``, and the table of every family
with a result there (so families can be trained in separate calls) as ``generator_quality.md/.csv/.tex/
.json`` with provenance to ``--out``. ``--overrides FILE`` (JSON ``{kind: {"model": {...}, "train": {...}}}``) changes
a family's model and training settings; ``--config FILE`` (TOML or JSON), as for every study, sets the options below.

    python studies/generator_quality.py [--models flow,vae,diffusion,gan] [--n-train 100000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

from surrinf._atomic import atomic_write_text
from surrinf.data import ShowerBijection
from surrinf.generators import EnergyConsistency, TrainConfig, save
from surrinf.generators.base import sample_batched, zero_suppress
from surrinf.generators.models import DEFAULT_TRAIN_CONFIGS, SURROGATE_KINDS, fit_surrogate
from surrinf.report import Measurement, Table
from surrinf.report.study import StudyRun, parse_study_args, study_parser
from surrinf.sim import calorimeter
from surrinf.sim.spectrum import parse_energy_spec
from surrinf.validation.validate import Showers, validate

FIXED_ENERGIES_GEV = (5.0, 50.0, 500.0)
KEY_OBSERVABLES = ("E_ratio", "depth_of_max")


def _ratio_bias(gen: np.ndarray, ref: np.ndarray, energy: float) -> Measurement:
    """Relative difference of the mean E_vis/E (generated / reference - 1) with its statistical error."""
    g, r = gen.sum(1) / energy, ref.sum(1) / energy
    mg, mr = g.mean(), r.mean()
    err = abs(mg / mr) * np.hypot(g.std() / np.sqrt(g.size) / mg, r.std() / np.sqrt(r.size) / mr)
    return Measurement(mg / mr - 1.0, err)


def build_parser() -> argparse.ArgumentParser:
    """The study's options (with the common --seed, --config, --out of :func:`surrinf.report.study.study_parser`)."""
    p = study_parser(__doc__)
    p.add_argument("--models", default=",".join(SURROGATE_KINDS), help="comma-separated subset of the families")
    p.add_argument("--n-train", type=int, default=100_000, help="reference showers for training")
    p.add_argument("--n-test", type=int, default=20_000, help="held-out reference showers for validation")
    p.add_argument("--n-fixed", type=int, default=10_000, help="showers at each of 5, 50, 500 GeV")
    p.add_argument("--steps", type=int, default=None, help="override max_steps of every model (for smoke runs)")
    p.add_argument(
        "--overrides",
        default=None,
        metavar="FILE",
        help="JSON file {kind: {model: {...}, train: {...}}} of per-family model / training settings",
    )
    p.add_argument(
        "--energy-consistency",
        default="vae,gan",
        help="families trained with the energy-consistency term (f(E) linear, fitted to the training showers)",
    )
    p.add_argument("--model-dir", default="runs/generator_quality")
    p.add_argument("--name", default="generator_quality", help="output file stem")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = parse_study_args(p, argv)
    kinds = [k.strip() for k in args.models.split(",") if k.strip()]
    bad = [k for k in kinds if k not in SURROGATE_KINDS]
    if bad:
        p.error(f"--models: unknown {bad}; choose from {SURROGATE_KINDS}")
    overrides = json.loads(Path(args.overrides).read_text()) if args.overrides else {}

    run = StudyRun()
    cal = calorimeter("default")
    geo = cal.geometry
    root = jax.random.key(args.seed)
    spectrum = parse_energy_spec("log-uniform:1,1000")

    def reference(tag: int, energies: np.ndarray) -> np.ndarray:
        return np.asarray(cal.simulate(jax.random.fold_in(root, tag), energies).showers)

    e_train = np.asarray(spectrum.sample(jax.random.fold_in(root, 1), args.n_train))
    e_test = np.asarray(spectrum.sample(jax.random.fold_in(root, 2), args.n_test))
    x_train, x_test = reference(11, e_train), reference(12, e_test)
    fixed_ref = {e: reference(20 + i, np.full(args.n_fixed, e, np.float32)) for i, e in enumerate(FIXED_ENERGIES_GEV)}
    print(f"reference simulated in {run.elapsed():.0f} s", file=sys.stderr)
    # the surrogates model showers above the zero-suppression threshold 1e-6 E: compare like with like
    ref_test = Showers(e_test.astype(np.float64), zero_suppress(x_test, e_test))
    bijection = ShowerBijection(geo)
    # energy consistency: f(E) fitted to the reference; lam = 1 / var(relative residual of the reference), so
    # a data-like deviation of one shower costs ~1 nat, small next to the likelihood terms of 360 voxels
    ec_kinds = {k.strip() for k in args.energy_consistency.split(",") if k.strip()}
    ec_ref = EnergyConsistency.fit_reference(e_train, x_train.sum(1), degree=1)
    ec_lam = float(1.0 / np.var(np.asarray(ec_ref.residual(x_train.sum(1, keepdims=True), e_train))))
    ec = EnergyConsistency(ec_ref.fixed_coeffs, lam=ec_lam)

    model_dir = Path(args.model_dir)
    for kind in kinds:
        ov = overrides.get(kind, {})
        tc = DEFAULT_TRAIN_CONFIGS[kind].to_dict() | ov.get("train", {})
        if args.steps is not None:
            tc["max_steps"] = args.steps
        train_cfg = TrainConfig.from_dict(tc)
        t_train = time.perf_counter()
        model, result = fit_surrogate(
            kind,
            jax.random.fold_in(root, 100 + SURROGATE_KINDS.index(kind)),
            x_train,
            e_train,
            bijection,
            model_config=ov.get("model"),
            train_config=train_cfg,
            out_dir=Path(args.model_dir) / f"{kind}-train",
            progress=False,
            **({"energy_consistency": ec} if kind in ec_kinds else {}),
        )
        train_s = time.perf_counter() - t_train
        save(model, Path(args.model_dir) / kind, model.config(), metadata={"study": "generator_quality"})
        k_gen = jax.random.fold_in(root, 200 + SURROGATE_KINDS.index(kind))
        sample_batched(model, k_gen, e_test[:4096])  # compile
        t_gen = time.perf_counter()
        gen = sample_batched(model, k_gen, e_test)
        rate = e_test.size / (time.perf_counter() - t_gen)
        rep = validate(ref_test, Showers(e_test.astype(np.float64), gen), geo, seed=args.seed, x0_mm=cal.x0_mm)
        rep.save(Path(args.model_dir) / f"{kind}-validation")
        biases = []
        for j, (e, r) in enumerate(fixed_ref.items()):
            fixed = np.full(args.n_fixed, e, np.float32)
            biases.append(_ratio_bias(sample_batched(model, jax.random.fold_in(k_gen, 1000 + j), fixed), r, e))
        obs = [rep.observable(name) for name in KEY_OBSERVABLES]
        within = sum(c.w1_within_floor for c in rep.one_d)
        row = [
            kind,
            f"lambda = {ec_lam:.3g}" if kind in ec_kinds else "no",
            Measurement(rep.classifier_high.auc, rep.classifier_high.auc_std),
            Measurement(rep.classifier_low.auc, rep.classifier_low.auc_std),
            *(Measurement(c.w1_over_floor, c.w1_err / c.w1_floor) for c in obs),
            f"{within} / {len(rep.one_d)}",
            *(Measurement(100 * b.value, 100 * b.error) for b in biases),
            round(rate),
            round(train_s),
            result.steps_run,
        ]
        detail = {
            "energy_consistency": ec.config() if kind in ec_kinds else None,
            "train_config": train_cfg.to_dict(),
            "model_config": model.config(),
            "train_seconds": train_s,
            "steps": result.steps_run,
            "best_val_loss": result.best_val_loss,
            "samples_per_s": rate,
            "auc_high": rep.classifier_high.auc,
            "auc_low": rep.classifier_low.auc,
            "e_ratio_bias": {str(e): [b.value, b.error] for e, b in zip(FIXED_ENERGIES_GEV, biases, strict=True)},
        }
        detail["command"] = " ".join(sys.argv)
        cells = [[c.value, c.error] if isinstance(c, Measurement) else c for c in row]
        atomic_write_text(model_dir / f"{kind}-result.json", json.dumps({"row": cells, "details": detail}, indent=1))
        print(kind, row, file=sys.stderr, flush=True)

    # the table holds every family with a finished result in --model-dir (trained now or by an earlier call)
    rows, details = [], {}
    for kind in SURROGATE_KINDS:
        path = model_dir / f"{kind}-result.json"
        if path.exists():
            doc = json.loads(path.read_text())
            rows.append([Measurement(*c) if isinstance(c, list) else c for c in doc["row"]])
            details[kind] = doc["details"]

    table = Table(
        f"Generator quality: {args.n_train} default-geometry training showers (log-uniform 1-1000 GeV), "
        f"{args.n_test} held-out reference showers, {args.n_fixed} per fixed energy",
        [
            "model",
            "energy consistency",
            "AUC high-level",
            "AUC low-level",
            *(f"{n} W1 / floor" for n in KEY_OBSERVABLES),
            "W1 within floor",
            *(f"E_vis/E bias at {e:g} GeV [%]" for e in FIXED_ENERGIES_GEV),
            "samples/s",
            "train s",
            "steps",
        ],
        rows,
    )
    out = Path(args.out)
    table.save(out, args.name)
    run.finish(out, args.name, args, models=details, cpu_count=os.cpu_count())
    print(table.to_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
