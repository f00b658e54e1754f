"""Extrapolation in incident energy: one-hot binned vs continuous FiLM conditioning (+ energy consistency).

Reference: the default-geometry GFLASH calorimeter (:func:`surrinf.sim.calorimeter`). Three VAE surrogates of the
same size, training budget and seed are trained on ``--n-train`` reference showers with incident energies
log-uniform in the training range ``--train-range`` (default 10-100 GeV) and evaluated on a log grid of
``--n-eval`` energies spanning ``--eval-range`` (default 1-1000 GeV):

- ``one-hot``: the energy enters the FiLM layers as a one-hot vector over ``--onehot-bins`` log-spaced bins of
  the training range (outside it the first / last bin: a one-hot model sees 1 GeV as the lowest training bin);
- ``continuous``: the scaled ln E (the library default);
- ``continuous + EC``: continuous, plus the energy-consistency penalty
  (:class:`surrinf.generators.physics.EnergyConsistency`) with f(E) fitted on the training showers only (so it
  never sees an energy outside the training range; the penalty acts on training batches only).

Metric: the calibration error of the energy response (:func:`surrinf.validation.calibration_error.calibration_error`)
of the generated visible energy against an independent reference sample on the same grid (the target f(E) is
fitted on half of that reference, the other half gives the closure), per logarithmic energy bin, with the
resolution ratio; :func:`region_summary` averages it over the bins below, inside and above the training range.
Writes ``extrapolation.{md,csv,tex,json}`` (summary), ``extrapolation_bins.*`` (per bin), ``extrapolation.png``
and the provenance to ``--out``; the trained models to ``--model-dir``.

    python studies/extrapolation.py [--n-train 40000] [--steps 8000] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from surrinf.report.study import StudyRun, parse_study_args, study_parser

if TYPE_CHECKING:
    from surrinf.validation.calibration_error import CalibrationErrorResult

VARIANTS = ("one-hot", "continuous", "continuous + EC")
REGIONS = ("below", "inside", "above")


def region_summary(
    edges_gev: Any,
    rel_ce: Any,
    rel_ce_err: Any,
    resolution_ratio: Any,
    resolution_ratio_err: Any,
    train_range_gev: tuple[float, float],
) -> dict[str, dict[str, float]]:
    """Average per-bin calibration results over the bins below, inside and above the training range.

    edges_gev (K + 1,) [GeV]; rel_ce, rel_ce_err, resolution_ratio, resolution_ratio_err (K,) per bin. A bin
    belongs to the region of its geometric centre: below ``train_range_gev[0]``, inside [lo, hi] or above ``hi``.
    Bins with a NaN relative CE (fewer than 2 events) are skipped. Per region: ``n_bins``, ``rel_ce`` (mean of
    the bins' relative CE) with ``rel_ce_err`` (sqrt(sum err^2) / n: independent bins), ``max_rel_ce`` and
    ``resolution_ratio`` (mean) with its error; NaN where a region has no bin."""
    edges = np.asarray(edges_gev, dtype=np.float64).reshape(-1)
    arrays = [np.asarray(a, dtype=np.float64).reshape(-1) for a in (rel_ce, rel_ce_err, resolution_ratio)]
    arrays.append(np.asarray(resolution_ratio_err, dtype=np.float64).reshape(-1))
    if edges.size < 2 or np.any(np.diff(edges) <= 0) or np.any(edges <= 0):
        raise ValueError(f"edges_gev must be K + 1 >= 2 increasing energies > 0 [GeV], got {edges.tolist()}")
    if any(a.shape != (edges.size - 1,) for a in arrays):
        raise ValueError(f"per-bin arrays must have shape (K,) = ({edges.size - 1},), got {[a.shape for a in arrays]}")
    lo, hi = (float(x) for x in train_range_gev)
    if not 0 < lo < hi:
        raise ValueError(f"train_range_gev must be (lo, hi) with 0 < lo < hi [GeV], got {train_range_gev!r}")
    ce, ce_err, ratio, ratio_err = arrays
    centres = np.sqrt(edges[:-1] * edges[1:])
    masks = {"below": centres < lo, "inside": (centres >= lo) & (centres <= hi), "above": centres > hi}
    out: dict[str, dict[str, float]] = {}
    for region, mask in masks.items():
        sel = mask & np.isfinite(ce)
        n = int(sel.sum())
        if n == 0:
            out[region] = dict.fromkeys(
                ("rel_ce", "rel_ce_err", "max_rel_ce", "resolution_ratio", "resolution_ratio_err"), float("nan")
            )
            out[region]["n_bins"] = 0
            continue
        out[region] = {
            "n_bins": n,
            "rel_ce": float(ce[sel].mean()),
            "rel_ce_err": float(np.sqrt(np.sum(ce_err[sel] ** 2)) / n),
            "max_rel_ce": float(ce[sel].max()),
            "resolution_ratio": float(np.nanmean(ratio[sel])),
            "resolution_ratio_err": float(np.sqrt(np.nansum(ratio_err[sel] ** 2)) / n),
        }
    return out


def _closure(res: CalibrationErrorResult) -> tuple[np.ndarray, np.ndarray]:
    """Relative CE (K,) and its error of the held-out reference against the target (the closure floor)."""
    return np.abs(res.ce_ref) / res.target, res.ce_ref_err / res.target


def build_parser() -> argparse.ArgumentParser:
    """The study's options (with the common --seed, --config, --out of :func:`surrinf.report.study.study_parser`)."""
    p = study_parser(__doc__)
    p.add_argument("--n-train", type=int, default=40_000, help="reference showers for training")
    p.add_argument("--train-range", type=float, nargs=2, default=[10.0, 100.0], help="training energies [GeV]")
    p.add_argument("--eval-range", type=float, nargs=2, default=[1.0, 1000.0], help="evaluation energies [GeV]")
    p.add_argument("--n-eval", type=int, default=24_000, help="showers on the evaluation grid (each sample)")
    p.add_argument("--n-bins", type=int, default=12, help="logarithmic energy bins of the calibration error")
    p.add_argument("--onehot-bins", type=int, default=8, help="one-hot bins over the training range")
    p.add_argument("--latent", type=int, default=16, help="VAE latent dimension")
    p.add_argument("--hidden", type=int, nargs="+", default=[128, 128], help="VAE hidden widths")
    p.add_argument("--steps", type=int, default=8000, help="training steps of every variant")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--ec-degree", type=int, default=1, choices=(1, 2), help="degree of the energy-consistency f(E)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {VARIANTS}")
    p.add_argument("--model-dir", default="runs/extrapolation")
    p.add_argument("--name", default="extrapolation", help="output file stem")
    return p


def main(argv: list[str] | None = None) -> int:
    # the heavy imports live here, so that importing the module (tests of region_summary, --help) stays cheap
    import jax
    from matplotlib.ticker import NullFormatter

    from surrinf.data import ShowerBijection
    from surrinf.generators import TrainConfig, save
    from surrinf.generators.base import sample_batched, zero_suppress
    from surrinf.generators.physics import EnergyConsistency
    from surrinf.generators.vae import VAESurrogate
    from surrinf.report import Measurement, Table, new_figure, save_figure
    from surrinf.sim import calorimeter
    from surrinf.validation.calibration_error import calibration_error

    p = build_parser()
    args = parse_study_args(p, argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        p.error(f"--variants: unknown {bad}; choose from {VARIANTS}")
    lo, hi = args.train_range
    e_lo, e_hi = args.eval_range
    if not (0 < lo < hi and 0 < e_lo < e_hi):
        p.error("--train-range and --eval-range must be (lo, hi) with 0 < lo < hi [GeV]")
    if args.n_train < 100 or args.n_eval < 20 * args.n_bins or args.onehot_bins < 2 or args.steps < 1:
        p.error("need --n-train >= 100, --n-eval >= 20 * --n-bins, --onehot-bins >= 2 and --steps >= 1")

    run = StudyRun()
    cal = calorimeter("default")
    root = jax.random.key(args.seed)
    rng = np.random.default_rng(args.seed)
    # training energies log-uniform in the training range; evaluation on a log grid (reference and surrogates alike)
    e_train = np.exp(rng.uniform(np.log(lo), np.log(hi), args.n_train)).astype(np.float32)
    e_eval = np.geomspace(e_lo, e_hi, args.n_eval).astype(np.float32)
    x_train = np.asarray(cal.simulate(jax.random.fold_in(root, 1), e_train).showers)
    x_ref = np.asarray(cal.simulate(jax.random.fold_in(root, 2), e_eval).showers)
    s_ref = zero_suppress(x_ref, e_eval).sum(1)  # what the surrogates model (voxels above 1e-6 E)
    print(f"reference simulated in {run.elapsed():.0f} s", file=sys.stderr, flush=True)

    bijection = ShowerBijection(cal.geometry)
    onehot_edges = np.geomspace(lo, hi, args.onehot_bins + 1)
    # energy consistency: f(E) fitted to the TRAINING showers only (10-100 GeV by default); lam = 1 / var(relative
    # residual of those showers), so a data-like deviation of one shower costs ~1 nat (as in generator_quality)
    s_train = x_train.sum(1)
    ec_ref = EnergyConsistency.fit_reference(e_train, s_train, degree=args.ec_degree)
    ec_lam = float(1.0 / np.var(np.asarray(ec_ref.residual(s_train[:, None], e_train))))
    ec = EnergyConsistency(ec_ref.fixed_coeffs, lam=ec_lam)
    vae_config = {"latent": args.latent, "hidden": list(args.hidden)}
    train_cfg = TrainConfig(
        batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=1e-3,
        warmup_steps=min(200, args.steps // 10),
        eval_every=max(1, args.steps // 5),
        checkpoint_every=0,
    )
    settings = {
        "one-hot": {"energy_bin_edges_gev": onehot_edges.tolist()},
        "continuous": {},
        "continuous + EC": {"energy_consistency": ec},
    }

    results: dict[str, CalibrationErrorResult] = {}
    summaries: dict[str, dict] = {}
    details: dict[str, dict] = {}
    model_dir = Path(args.model_dir)
    k_model, k_gen = jax.random.fold_in(root, 100), jax.random.fold_in(root, 200)  # the same for every variant
    for name in variants:
        slug = name.replace(" + ", "-").replace(" ", "-").lower()
        t0 = time.perf_counter()
        model, result = VAESurrogate.fit(
            k_model,
            x_train,
            e_train,
            bijection,
            vae_config=vae_config,
            train_config=train_cfg,
            out_dir=model_dir / f"{slug}-train",
            **settings[name],
        )
        train_s = time.perf_counter() - t0
        save(model, model_dir / slug, model.config(), metadata={"study": "extrapolation", "variant": name})
        s_gen = sample_batched(model, k_gen, e_eval).sum(1)
        res = calibration_error(e_eval, s_ref, e_eval, s_gen, n_bins=args.n_bins, seed=args.seed)
        results[name] = res
        summaries[name] = region_summary(
            res.edges, res.rel_ce_cand, res.rel_ce_cand_err, res.resolution_ratio, res.resolution_ratio_err, (lo, hi)
        )
        details[name] = {
            "train_seconds": train_s,
            "steps": result.steps_run,
            "best_val_loss": result.best_val_loss,
            "model_config": model.config(),
            "calibration_error": res.to_dict(),
            "regions": summaries[name],
        }
        print(f"{name}: trained in {train_s:.0f} s; {summaries[name]}", file=sys.stderr, flush=True)

    out = Path(args.out)
    first = next(iter(results.values()))
    closure, closure_err = _closure(first)
    ones = np.ones_like(closure)
    closure_summary = region_summary(first.edges, closure, closure_err, ones, 0 * ones, (lo, hi))

    def pct(d: dict, key: str) -> Measurement | None:
        return None if d["n_bins"] == 0 else Measurement(100 * d[key], 100 * d[f"{key}_err"])

    rows = []
    for name in variants:
        s = summaries[name]
        rows.append(
            [
                name,
                *(pct(s[r], "rel_ce") for r in REGIONS),
                *(100 * s[r]["max_rel_ce"] for r in ("below", "above")),
                *(Measurement(s[r]["resolution_ratio"], s[r]["resolution_ratio_err"]) for r in REGIONS),
                round(details[name]["train_seconds"]),
            ]
        )
    rows.append(
        [
            "reference closure",
            *(pct(closure_summary[r], "rel_ce") for r in REGIONS),
            *(100 * closure_summary[r]["max_rel_ce"] for r in ("below", "above")),
            None,
            None,
            None,
            None,
        ]
    )
    n_regions = {r: summaries[variants[0]][r]["n_bins"] for r in REGIONS}
    flat = first.target / first.centres
    table = Table(
        f"Extrapolation in incident energy: VAE trained on {args.n_train} default-geometry showers at "
        f"{lo:g}-{hi:g} GeV (log-uniform), evaluated on {args.n_eval} energies {e_lo:g}-{e_hi:g} GeV",
        [
            "conditioning",
            "rel. CE below [%]",
            "rel. CE inside [%]",
            "rel. CE above [%]",
            "max rel. CE below [%]",
            "max rel. CE above [%]",
            "resolution ratio below",
            "resolution ratio inside",
            "resolution ratio above",
            "train s",
        ],
        rows,
        column_formats={"max rel. CE below [%]": ".2f", "max rel. CE above [%]": ".2f"},
        notes=[
            f"relative CE = |mean(E_vis - f(E))| / f(E) per log energy bin ({args.n_bins} bins: {n_regions['below']} "
            f"below, {n_regions['inside']} inside, {n_regions['above']} above the training range), averaged over the "
            "region's bins; f(E) fitted on half of an independent reference sample on the evaluation grid, the other "
            "half gives the reference closure (the floor); resolution ratio = std(E_vis / f) generated / reference",
            f"reference response f(E) / E over the evaluation grid: {flat.min():.4f} - {flat.max():.4f} (from the "
            "fitted f at the bin centres)",
            f"VAE latent {args.latent}, hidden {list(args.hidden)}, {args.steps} steps, batch {args.batch_size}, "
            f"same seed for every variant; one-hot: {args.onehot_bins} log bins over {lo:g}-{hi:g} GeV (energies "
            f"outside go to the first / last bin); EC: f(E) of degree {args.ec_degree} fitted on the training showers "
            f"only, lambda = {ec_lam:.3g}",
        ],
    )
    table.save(out, args.name)

    bin_rows = []
    for k, c in enumerate(first.centres):
        region = "below" if c < lo else ("above" if c > hi else "inside")
        cells: list[Any] = [float(c), region, Measurement(100 * closure[k], 100 * closure_err[k])]
        for name in variants:
            r = results[name]
            cells.append(Measurement(100 * r.ce_cand[k] / r.target[k], 100 * r.rel_ce_cand_err[k]))
            cells.append(Measurement(r.resolution_ratio[k], r.resolution_ratio_err[k]))
        bin_rows.append(cells)
    Table(
        "Extrapolation in incident energy, per energy bin: signed relative calibration error mean(E_vis - f) / f [%] "
        "and resolution ratio (generated / reference)",
        [
            "E centre [GeV]",
            "region",
            "reference closure |CE| / f [%]",
            *(col for name in variants for col in (f"{name} CE / f [%]", f"{name} resolution ratio")),
        ],
        bin_rows,
        column_formats={"E centre [GeV]": 3},
    ).save(out, f"{args.name}_bins")

    fig, (ax, ax_res) = new_figure(1, ratio=True, figsize=(10, 9))
    for a in (ax, ax_res):
        a.axvspan(lo, hi, color="0.9", zorder=0, label="training range" if a is ax else None)
    ax.errorbar(first.centres, 100 * closure, 100 * closure_err, color="k", marker="s", ls=":", label="reference")
    for name in variants:
        r = results[name]
        ax.errorbar(r.centres, 100 * r.rel_ce_cand, 100 * r.rel_ce_cand_err, marker="o", label=name)
        ax_res.errorbar(r.centres, r.resolution_ratio, r.resolution_ratio_err, marker="o")
    ax.set(yscale="log", ylabel="relative calibration error [%]", xscale="log")
    ax.legend(fontsize="small")
    ax_res.axhline(1.0, color="k", lw=0.8)
    ax_res.set(xscale="log", yscale="log", xlabel="E [GeV]", ylabel="resolution ratio")
    ax_res.xaxis.set_minor_formatter(NullFormatter())
    save_figure(fig, out / f"{args.name}.png")

    run.finish(
        out,
        args.name,
        args,
        variants=details,
        reference_closure=closure_summary,
        energy_consistency=ec.config(),
        onehot_edges_gev=onehot_edges.tolist(),
        cpu_count=os.cpu_count(),
    )
    print(table.to_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
