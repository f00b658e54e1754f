"""Calibration study: tempered surrogate posteriors of the detector parameters and their frequentist coverage.

theta = (energy scale s, sampling term a [GeV^1/2], cell noise sigma_n [GeV]) is inferred from shower summaries
(response, front fraction, summed negative cell energies) at beam energies 10, 20, 50, 100 GeV. Steps:

1. reference summaries over the prior box -> a SummaryFlow p_s(x | E, theta) (cached under --work);
2. four likelihoods: the exact Gaussian toy (its own reference), the trained flow against the calorimeter, and two
   deliberately imperfect surrogates: an under-trained flow (--undertrained steps) and the trained flow with its
   response scale off by --bias (default +0.3 %);
3. temperature rules for each: divergence and curvature from the mismatch on held-out reference data at --points
   prior points, coverage-calibrated tau from --m-cal calibration pseudo-experiments on a tau grid;
4. coverage (68 %, 95 %; per parameter and joint) of tau = 1 and each rule over --m independent pseudo-experiments of
   --n-cov events, SBC rank histograms;
5. a posterior of --n-post events at a fixed theta* with NumPyro NUTS (4 chains): table with R-hat and ESS,
   diagnostics, trace and corner plots.

Writes calibration_{coverage,temperatures,posterior}.{md,csv,tex,json}, figures and provenance to --out.

    python studies/calibration.py [--seed 0] [--m 200] [--out docs/results]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np

from surrinf.generators import TrainConfig
from surrinf.inference import (
    CalibrationProblem,
    GaussianToy,
    ReferenceSummaries,
    ScaleBiasedDensity,
    coverage_tau,
    curvature_tau,
    default_prior,
    diagnose,
    divergence_tau,
    fit_summary_flow,
    load_summary_flow,
    measure_mismatch,
    plot_corner,
    plot_trace,
    run_coverage,
    run_numpyro_nuts,
    save_inference_data,
    save_summary_flow,
)
from surrinf.report import Table
from surrinf.report.figure import save_figure
from surrinf.report.study import StudyRun, parse_study_args, study_parser
from surrinf.sim import calorimeter

BEAM_ENERGIES_GEV = (10.0, 20.0, 50.0, 100.0)


def beam(n: int) -> np.ndarray:
    """n events split evenly over the beam energies [GeV]."""
    return np.resize(np.repeat(BEAM_ENERGIES_GEV, -(-n // len(BEAM_ENERGIES_GEV))), n).astype(np.float64)


def build_parser() -> argparse.ArgumentParser:
    """The study's options (with the common --seed, --config, --out of :func:`surrinf.report.study.study_parser`)."""
    p = study_parser(__doc__)
    p.add_argument("--m", type=int, default=200, help="pseudo-experiments of the coverage study")
    p.add_argument("--m-cal", type=int, default=200, help="pseudo-experiments calibrating the coverage rule")
    p.add_argument("--n-cov", type=int, default=200, help="events per pseudo-experiment")
    p.add_argument("--n-post", type=int, default=1000, help="events of the posterior table")
    p.add_argument("--n-train", type=int, default=200_000, help="reference summaries to train the flow")
    p.add_argument("--steps", type=int, default=3000, help="flow training steps")
    p.add_argument("--points", type=int, default=24, help="prior points of the mismatch measurement")
    p.add_argument("--heldout", type=int, default=2500, help="held-out reference events per point")
    p.add_argument("--undertrained", type=int, default=250, help="training steps of the under-trained flow")
    p.add_argument("--bias", type=float, default=0.003, help="response-scale error of the imperfect surrogate")
    p.add_argument("--draws", type=int, default=250, help="importance draws per coverage posterior")
    p.add_argument("--work", default="runs/calibration", help="cache of the trained flow")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse_study_args(build_parser(), argv)
    run = StudyRun()
    out, work = Path(args.out), Path(args.work)
    root = jax.random.key(args.seed)
    prior = default_prior()
    cal = calorimeter("default")
    reference = ReferenceSummaries(cal)

    # 1. the surrogate summary densities (cached by their settings)
    data = None

    def flow_with(steps: int):
        nonlocal data
        flow_dir = work / f"summary_flow-n{args.n_train}-s{steps}-seed{args.seed}"
        if (flow_dir / "model.json").exists():
            print(f"loaded {flow_dir}")
            return load_summary_flow(flow_dir)[0]
        if data is None:
            data = reference.training_set(jax.random.fold_in(root, 1), args.n_train, prior, (8.0, 120.0))
        cfg = TrainConfig(batch_size=1024, max_steps=steps, learning_rate=2e-3, eval_every=min(500, steps))
        flow, res = fit_summary_flow(jax.random.fold_in(root, 2), data, prior, train_config=cfg, progress=True)
        save_summary_flow(flow, flow_dir, {"best_val_nll": res.best_val_loss, "steps": res.steps_run})
        print(f"trained flow ({steps} steps): val NLL {res.best_val_loss:.4f} at step {res.best_step}")
        return flow

    flow = flow_with(args.steps)
    weak = flow_with(args.undertrained)

    toy = GaussianToy()
    cases = {
        "exact toy": (toy, toy),
        f"flow ({args.steps} steps)": (flow, reference),
        f"under-trained flow ({args.undertrained} steps)": (weak, reference),
        f"flow, response {args.bias:+.1%}": (ScaleBiasedDensity(flow, args.bias), reference),
    }
    e_cov = beam(args.n_cov)
    temp_rows, cov_tables, figures = [], [], {}
    for c, (label, (density, ref)) in enumerate(cases.items()):
        tc = time.perf_counter()
        key = jax.random.fold_in(root, 100 + c)
        points = prior.sample(jax.random.fold_in(key, 0), args.points)
        mm = measure_mismatch(density, ref, prior, jax.random.fold_in(key, 1), points, beam(args.heldout))
        rules = {
            "tau = 1": 1.0,
            "divergence": divergence_tau(mm, args.n_cov).tau,
            "curvature": curvature_tau(mm, args.n_cov).tau,
        }
        cov_rule = coverage_tau(
            density,
            ref,
            prior,
            jax.random.fold_in(key, 2),
            e_cov,
            n_experiments=args.m_cal,
            n_draws=args.draws,
            tau_grid=np.geomspace(0.1, 1.0, 5),
        )
        rules["coverage"] = cov_rule.tau
        study = run_coverage(
            density,
            ref,
            prior,
            jax.random.fold_in(key, 3),
            rules,
            e_cov,
            n_experiments=args.m,
            n_draws=args.draws,
        )
        t = study.table()
        t.title = f"{label}: {t.title}"
        cov_tables.append((label, t))
        figures[label] = study.rank_figure()
        for rule, tau in rules.items():
            temp_rows.append([label, rule, float(tau)])
        print(t.to_markdown() if hasattr(t, "to_markdown") else t)
        print(f"{label}: {time.perf_counter() - tc:.0f} s")

    # 5. one posterior with NUTS at theta*, N = n_post events
    theta_star = np.array([1.0, 0.17, 0.0015])
    e_post = beam(args.n_post)
    x = reference.simulate(jax.random.fold_in(root, 7), e_post, theta_star)
    problem = CalibrationProblem(flow, x, e_post, prior)
    points = prior.sample(jax.random.fold_in(root, 8), args.points)
    mm = measure_mismatch(flow, reference, prior, jax.random.fold_in(root, 9), points, beam(args.heldout))
    tau_post = curvature_tau(mm, args.n_post).tau
    tp = time.perf_counter()
    post = run_numpyro_nuts(problem, jax.random.fold_in(root, 10), tau_post, num_warmup=500, num_samples=500)
    t_nuts = time.perf_counter() - tp
    diag = diagnose(post)
    print(diag)

    out.mkdir(parents=True, exist_ok=True)
    rows = [list(r) for r in temp_rows]
    Table("Likelihood temperatures per rule", ["likelihood", "rule", "tau"], rows).save(out, "calibration_temperatures")
    # One coverage table for all likelihoods (a likelihood column in front).
    first = cov_tables[0][1]
    merged = Table(
        f"Coverage of tempered posteriors ({args.m} pseudo-experiments of {args.n_cov} events; binomial errors)",
        ["likelihood", *first.columns],
        [[label, *row] for label, t in cov_tables for row in t.rows],
    )
    merged.save(out, "calibration_coverage")
    post_table = diag.table
    post_table.title = (
        f"Posterior of theta from {args.n_post} showers at theta* = {theta_star.tolist()} "
        f"(flow surrogate, curvature tau = {tau_post:.3f}, NumPyro NUTS 4 x (500 + 500), {t_nuts:.0f} s)"
    )
    post_table.save(out, "calibration_posterior")
    for i, fig in enumerate(figures.values()):
        save_figure(fig, out / f"calibration_sbc_{i}.png")
    save_figure(plot_trace(post), out / "calibration_trace.png")
    save_figure(plot_corner(post, truth=theta_star), out / "calibration_corner.png")
    save_inference_data(post, work / "calibration_posterior.nc")
    run.finish(
        out,
        "calibration",
        args,
        sbc_figures={f"calibration_sbc_{i}.png": label for i, label in enumerate(figures)},
        diagnostic_warnings=list(diag.warnings),
    )
    print(f"done in {run.elapsed():.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
