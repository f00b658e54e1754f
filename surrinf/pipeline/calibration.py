"""The calibration stage of the main job: a tempered surrogate posterior of the detector parameters and its coverage.

theta = (energy scale s, sampling term a [GeV^1/2], cell noise sigma_n [GeV]) is inferred from shower summaries
(response, front fraction, summed negative cell energies; :mod:`surrinf.inference.summary`) at the beam energies
10, 20, 50, 100 GeV. A compact version of ``studies/calibration.py``:

1. reference summaries over the prior box (embedded calorimeter of ``[simulate]``) -> a :class:`SummaryFlow`
   p_s(x | E, theta), the surrogate likelihood (``summary_flow/``);
2. calibration data: ``n_events`` showers at theta*;
3. temperature: surrogate-vs-reference mismatch at ``mismatch_points`` prior points -> curvature-matching tau;
4. the tempered posterior with NumPyro NUTS: table (mean, sd, R-hat, ESS), corner plot;
5. frequentist coverage of tau = 1 and of the curvature tau over pseudo-experiments from the reference, SBC ranks.

The reference is always the embedded calorimeter (theta is a parameter of its simulation): with ``simulate.data``
set, the user's showers are not used here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from surrinf.generators import TrainConfig
from surrinf.inference import (
    CalibrationProblem,
    ReferenceSummaries,
    curvature_tau,
    default_prior,
    diagnose,
    fit_summary_flow,
    measure_mismatch,
    plot_corner,
    run_coverage,
    run_numpyro_nuts,
    save_summary_flow,
    shower_summary,
)
from surrinf.pipeline.runner import Stage, StageContext, StageOutput
from surrinf.pipeline.shower import calorimeter_for
from surrinf.report import Measurement, Report, Table, save_figure

__all__ = ["BEAM_ENERGIES_GEV", "CALIBRATION", "headline_calibration", "report_calibration"]

#: Beam energies [GeV] of the calibration data and of every pseudo-experiment (events split evenly).
BEAM_ENERGIES_GEV = (10.0, 20.0, 50.0, 100.0)
#: Energy range [GeV] (log-uniform) of the summary flow's training set: covers the beam energies.
TRAIN_ENERGIES_GEV = (8.0, 120.0)
#: Showers per compiled calorimeter batch: one batch shape for every sub-step (a new shape compiles for ~10 s).
SIM_CHUNK = 256
#: Display names of theta (units) in tables and the headline.
LABELS = ("s", "a [GeV^1/2]", "sigma_n [GeV]")
#: The coverage rules, in table order.
RULES = ("curvature", "tau = 1")


def beam(n: int) -> np.ndarray:
    """(n,) beam energies [GeV]: n events split evenly over :data:`BEAM_ENERGIES_GEV`."""
    k = len(BEAM_ENERGIES_GEV)
    return np.resize(np.repeat(BEAM_ENERGIES_GEV, -(-n // k)), n).astype(np.float64)


class _Reference(ReferenceSummaries):
    """:class:`ReferenceSummaries` simulating in batches of :data:`SIM_CHUNK` showers (the same draws: shower i
    uses ``fold_in(key, i)`` for any batching), so that all sub-steps share one compiled batch shape."""

    def simulate(self, key: jax.Array, energies_gev: np.ndarray, theta: np.ndarray) -> np.ndarray:
        e = np.asarray(energies_gev, dtype=np.float64).reshape(-1)
        t = np.asarray(theta, dtype=np.float64)
        parts, start = [], 0
        for batch in self.calorimeter.iter_simulate(key, e, t, chunk_size=SIM_CHUNK):
            stop = start + batch.showers.shape[0]
            parts.append(shower_summary(batch.showers, e[start:stop], self.calorimeter))
            start = stop
        return np.concatenate(parts) if parts else np.zeros((0, 3), np.float32)


def _calibrate(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.section
    work = ctx.work_dir
    cal = calorimeter_for(ctx.config)
    reference = _Reference(cal)
    prior = default_prior()
    theta_star = prior.check(np.asarray(cfg.theta_star, dtype=np.float64), "calibration.theta_star")
    seconds: dict[str, float] = {}

    def key(i: int) -> jax.Array:
        return jax.random.fold_in(ctx.key, i)

    # 1. the surrogate likelihood: a summary flow trained on reference summaries over the prior box
    t0 = time.perf_counter()
    ctx.log(f"calibration: {cfg.n_train} reference summaries, summary flow {cfg.steps} steps")
    data = reference.training_set(key(1), cfg.n_train, prior, TRAIN_ENERGIES_GEV)
    seconds["flow_data"] = time.perf_counter() - t0
    tc = TrainConfig(
        batch_size=min(1024, int(0.85 * cfg.n_train)),
        max_steps=cfg.steps,
        learning_rate=2e-3,
        eval_every=max(1, min(250, cfg.steps)),
        checkpoint_every=0,
        log_every=max(1, min(100, cfg.steps)),
    )
    flow, fit = fit_summary_flow(
        key(2), data, prior, flow={"n_layers": cfg.flow_layers}, train_config=tc, progress=ctx.progress
    )
    save_summary_flow(flow, work / "summary_flow", {"best_val_nll": fit.best_val_loss, "steps": fit.steps_run})
    seconds["flow"] = time.perf_counter() - t0

    # 2. calibration data at theta*; 3. temperature from the mismatch on held-out reference data
    t0 = time.perf_counter()
    ctx.log(f"calibration: temperature from the mismatch at {cfg.mismatch_points} prior points")
    e_data = beam(cfg.n_events)
    x = reference.simulate(key(3), e_data, theta_star)
    points = prior.sample(key(4), cfg.mismatch_points)
    mismatch = measure_mismatch(flow, reference, prior, key(5), points, beam(cfg.heldout))
    temp = curvature_tau(mismatch, cfg.n_events)
    temp_cov = curvature_tau(mismatch, cfg.events_per_experiment)
    Table(
        "Curvature-matching temperature: tau = 1 / max_j R_j, R_j the sandwich-to-model variance ratio of parameter "
        f"j (mean over {cfg.mismatch_points} prior points, {cfg.heldout} held-out reference showers each)",
        ["use", "events N", *[f"R {n}" for n in LABELS], "tau"],
        [
            ["posterior (calibration data)", cfg.n_events, *temp.details["variance_ratio_mean"], temp.tau],
            [
                "coverage (pseudo-experiment)",
                cfg.events_per_experiment,
                *temp_cov.details["variance_ratio_mean"],
                temp_cov.tau,
            ],
        ],
        notes=[temp.reference],
    ).save(work, "temperature")
    seconds["temperature"] = time.perf_counter() - t0

    # 4. the tempered posterior with NUTS
    t0 = time.perf_counter()
    ctx.log(f"calibration: NUTS {cfg.chains} x ({cfg.warmup} + {cfg.samples}) at tau = {temp.tau:.3f}")
    problem = CalibrationProblem(flow, x, e_data, prior)
    post = run_numpyro_nuts(
        problem,
        key(6),
        temp.tau,
        num_warmup=cfg.warmup,
        num_samples=cfg.samples,
        num_chains=cfg.chains,
        progress=ctx.progress,
    )
    seconds["nuts"] = time.perf_counter() - t0
    diag = diagnose(post, ess_min=100.0 * cfg.chains)
    np.savez(work / "posterior.npz", samples=post.samples, names=np.asarray(post.names))
    rows = diag.table.rows
    cols = diag.table.columns
    posterior = Table(
        f"Posterior of theta from {cfg.n_events} showers at theta* (summary-flow likelihood, curvature tau = "
        f"{temp.tau:.3f}; NumPyro NUTS {cfg.chains} x ({cfg.warmup} + {cfg.samples}))",
        ["parameter", "truth", "pull", *cols[1:]],
        [[LABELS[j], float(theta_star[j]), (row[1] - theta_star[j]) / row[2], *row[1:]] for j, row in enumerate(rows)],
        notes=[*diag.table.notes, "pull = (mean - truth) / sd"],
        column_formats={"pull": ".2f", **diag.table.column_formats},
    )
    posterior.save(work, "posterior")
    save_figure(plot_corner(post, truth=theta_star), work / "corner.png")
    seconds["posterior"] = time.perf_counter() - t0

    # 5. coverage over pseudo-experiments from the reference (theta* from the prior)
    t0 = time.perf_counter()
    ctx.log(f"calibration: coverage, {cfg.pseudo_experiments} pseudo-experiments of {cfg.events_per_experiment} events")
    taus = {"curvature": temp_cov.tau, "tau = 1": 1.0}
    study = run_coverage(
        flow,
        reference,
        prior,
        key(7),
        taus,
        beam(cfg.events_per_experiment),
        n_experiments=cfg.pseudo_experiments,
        n_draws=cfg.draws,
    )
    cov_table = study.table()
    cov_table.title = (
        f"Coverage of the tempered posteriors over {cfg.pseudo_experiments} pseudo-experiments of "
        f"{cfg.events_per_experiment} reference showers (theta* from the prior; binomial errors at the nominal rate)"
    )
    cov_table.save(work, "coverage")
    save_figure(study.rank_figure(n_bins=int(np.clip(cfg.pseudo_experiments // 8, 2, 10))), work / "sbc.png")
    seconds["coverage"] = time.perf_counter() - t0

    coverage = {}
    for t, rule in enumerate(taus):
        entry: dict[str, Any] = {"tau": float(taus[rule])}
        for level, tag in ((0.68, "68"), (0.95, "95")):
            cov, err = study.coverage(level)[t], study.coverage_error(level)[t]
            entry[f"per_parameter_{tag}"] = [[float(c), float(e)] for c, e in zip(cov, err, strict=True)]
            entry[f"joint_{tag}"] = [float(study.joint_coverage(level)[t]), float(err[0])]
        entry["median_kish_ess"] = float(np.median(study.ess[t]))
        coverage[rule] = entry
    stats = [[r[cols.index(c)] for r in rows] for c in ("mean", "sd", "r_hat", "ess_bulk", "ess_tail")]
    finite = [v for v in stats[2] if v is not None]
    return {
        "reference": f"GFLASH calorimeter `{cal.geometry.name}` ({cal.material.name})",
        "data_file_ignored": bool(ctx.config.simulate.data),
        "names": list(post.names),
        "labels": list(LABELS),
        "theta_star": theta_star.tolist(),
        "posterior_mean": [float(v) for v in stats[0]],
        "posterior_sd": [float(v) for v in stats[1]],
        "r_hat": [None if v is None else float(v) for v in stats[2]],
        "ess_bulk": [float(v) for v in stats[3]],
        "ess_tail": [float(v) for v in stats[4]],
        "r_hat_max": max(finite) if finite else None,
        "ess_min": float(min(min(stats[3]), min(stats[4]))),
        "n_divergent": diag.n_divergent,
        "warnings": list(diag.warnings),
        "tau": float(temp.tau),
        "variance_ratio": [float(v) for v in temp.details["variance_ratio_mean"]],
        "tau_coverage": float(temp_cov.tau),
        "coverage": coverage,
        "flow": {
            "layers": cfg.flow_layers,
            "steps": fit.steps_run,
            "best_step": fit.best_step,
            "best_val_nll": fit.best_val_loss,
        },
        "n": {
            "train_summaries": cfg.n_train,
            "events": cfg.n_events,
            "mismatch_points": cfg.mismatch_points,
            "heldout": cfg.heldout,
            "chains": cfg.chains,
            "warmup": cfg.warmup,
            "samples": cfg.samples,
            "pseudo_experiments": cfg.pseudo_experiments,
            "events_per_experiment": cfg.events_per_experiment,
            "draws": cfg.draws,
        },
        "seconds": seconds,
    }


CALIBRATION = Stage(
    "calibration",
    "tempered Bayesian calibration of theta = (s, a, sigma_n)",
    _calibrate,
    needs=("simulate",),
    table="calibration",
    enabled=lambda cfg: cfg.calibration.enabled,
)


# -------------------------------------------------------------------------------------------------------- report
def report_calibration(report: Report, outputs: dict[str, StageOutput | None], run_dir: Path) -> None:
    """The calibration section of the run report: posterior, temperature, coverage, figures."""
    del run_dir
    out = outputs["calibration"]
    s, n = out.summary, out.summary["n"]
    report.section("Detector calibration")
    ignored = (
        " (`simulate.data` is set, but theta is a parameter of the simulation, so this stage uses the embedded "
        "calorimeter, not the user's showers)"
        if s["data_file_ignored"]
        else ""
    )
    report.paragraph(
        "Tempered Bayesian calibration of theta = (energy scale s, sampling term a [GeV^1/2], cell noise sigma_n "
        "[GeV]) from three shower summaries (response, front fraction, summed negative cell energies) at beam "
        f"energies {', '.join(f'{e:g}' for e in BEAM_ENERGIES_GEV)} GeV. Reference: the {s['reference']}{ignored}. "
        f"Surrogate likelihood: a conditional flow p_s(x | E, theta) ({s['flow']['layers']} coupling layers) "
        f"trained for {s['flow']['steps']} steps on "
        f"{n['train_summaries']} reference summaries over the prior box (validation NLL "
        f"{s['flow']['best_val_nll']:.3f}). The likelihood is tempered, p ∝ prior x L^tau, with tau from curvature "
        f"matching of the surrogate-vs-reference mismatch at {n['mismatch_points']} prior points "
        f"({n['heldout']} held-out showers each): tau = {s['tau']:.3f} for the {n['events']} calibration showers."
    )
    report.table(Table.load(out.path / "posterior.json"), "calibration_posterior")
    report.image(
        out.path / "corner.png", "calibration_corner", "Tempered posterior of theta (NUTS); red lines: theta*."
    )
    if s["warnings"]:
        report.paragraph("Sampler diagnostics, warnings:\n\n" + "\n".join(f"- {w}" for w in s["warnings"]))
    else:
        report.paragraph(
            f"Sampler diagnostics: no warnings (max R-hat {s['r_hat_max'] or float('nan'):.3f}, "
            f"min ESS {s['ess_min']:.0f}, {s['n_divergent'] or 0} divergences)."
        )
    report.table(Table.load(out.path / "temperature.json"), "calibration_temperature")
    cov = s["coverage"]
    report.paragraph(
        f"Coverage: {n['pseudo_experiments']} pseudo-experiments of {n['events_per_experiment']} reference showers, "
        f"theta* drawn from the prior, each posterior by Laplace-proposal importance sampling ({n['draws']} draws). "
        f"A calibrated posterior covers the truth in 68 % (95 %) of the experiments; joint 68 % coverage "
        f"{_pm(cov['curvature']['joint_68'])} with the curvature tau = {cov['curvature']['tau']:.3f}, "
        f"{_pm(cov['tau = 1']['joint_68'])} with tau = 1."
    )
    report.table(Table.load(out.path / "coverage.json"), "calibration_coverage")
    report.image(
        out.path / "sbc.png",
        "calibration_sbc",
        "SBC ranks: posterior CDF at the true theta over the pseudo-experiments (flat for a calibrated posterior; "
        "grey band: +-2 sigma around the expectation).",
    )


def _pm(v: list[float]) -> str:
    return str(Measurement(*v))


def headline_calibration(outputs: dict[str, StageOutput | None]) -> list[list[Any]]:
    """Headline rows: posterior mean +- sd of each parameter vs theta*, and the 68 % coverage (joint) per rule."""
    s = outputs["calibration"].summary
    rows: list[list[Any]] = []
    for j, label in enumerate(s["labels"]):
        truth, mean, sd = s["theta_star"][j], s["posterior_mean"][j], s["posterior_sd"][j]
        rows.append(
            [
                "calibration",
                f"posterior {label}",
                f"{truth:g}",
                Measurement(mean, sd),
                f"pull {(mean - truth) / sd:+.2f}, tau = {s['tau']:.3f}",
            ]
        )
    for rule in RULES:
        c = s["coverage"][rule]
        per = ", ".join(f"{lab.split()[0]} {_pm(v)}" for lab, v in zip(s["labels"], c["per_parameter_68"], strict=True))
        name = f"curvature tau = {c['tau']:.3f}" if rule == "curvature" else "tau = 1"
        rows.append(
            [
                "calibration",
                f"coverage 68 % ({name}), joint",
                "0.68",
                Measurement(*c["joint_68"]),
                f"per parameter: {per}",
            ]
        )
    return rows
