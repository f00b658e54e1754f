"""Discovery sensitivity: Z0 of a dijet resonance with reference vs surrogate templates, and the fidelity systematic.

Templates: m_jj histograms of Z -> q qbar signal and QCD dijet background from the embedded parametric generator
(surrinf.kinfit), the jets measured with the reference jet response (surrinf.kinfit.default_jet_response) or with the
conditional-flow surrogate (trained on the reference, cached in --work and shared with studies/dijet_kinfit.py), both
calibrated with the reference calibration; the same truth events and random numbers for both. Yields per fb^-1 in the
generator acceptance are configuration (--signal-per-fb, --background-per-fb). Workspaces (surrinf.sensitivity): mu,
luminosity (1.7 %), background normalisation (10 %), MC statistical uncertainty (staterror), jet-energy-scale histosys
(reference response with its scale shifted by +-1 %) and, optionally, the surrogate-fidelity histosys (reference vs
surrogate templates). Expected (Asimov) Z0 vs integrated luminosity with reference templates, surrogate templates, and
surrogate templates with the fidelity systematic; impacts and ranking at one luminosity; toy Z0 against asymptotics at
a small luminosity.

    .venv/bin/python studies/discovery_sensitivity.py --seed 0

Outputs in --out (default docs/results): sensitivity_z0.*, sensitivity_ranking.*, sensitivity_toys.*,
sensitivity_yields.*, sensitivity_z0.png, sensitivity_ranking.png, sensitivity_templates.png,
sensitivity_provenance.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np

from surrinf.generators import TrainConfig, load, save
from surrinf.kinfit import (
    DEFAULT_JET_TRAIN_CONFIG,
    default_jet_response,
    fit_jet_response_flow,
    generate_parametric,
    measure_jets,
)
from surrinf.report import Table, new_figure, save_figure
from surrinf.report.study import StudyRun, parse_study_args, study_parser
from surrinf.sensitivity import Sample, build_workspace, discovery_significance, impacts, plot_ranking, yields


def mjj_counts(events, e_meas: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of the measured dijet mass [GeV] (directions and jet masses from the truth, energies measured)."""
    return np.histogram(events.with_energies(e_meas).mjj(), bins=edges)[0].astype(np.float64)


def build_parser() -> argparse.ArgumentParser:
    """The study's options (with the common --seed, --config, --out of :func:`surrinf.report.study.study_parser`)."""
    p = study_parser(__doc__)
    p.add_argument("--n-signal", type=int, default=200_000, help="simulated signal events")
    p.add_argument("--n-background", type=int, default=1_000_000, help="simulated QCD events")
    p.add_argument("--signal-per-fb", type=float, default=150.0, help="signal events per fb^-1 in the acceptance")
    p.add_argument("--background-per-fb", type=float, default=30_000.0, help="QCD events per fb^-1 in the acceptance")
    p.add_argument("--window", type=float, nargs=2, default=(70.0, 110.0), help="m_jj window [GeV]")
    p.add_argument("--bins", type=int, default=10)
    p.add_argument("--lumi", type=float, nargs="+", default=[0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0], help="fb^-1")
    p.add_argument("--ranking-lumi", type=float, default=10.0, help="fb^-1 of the impact ranking")
    p.add_argument("--toy-lumi", type=float, default=0.5, help="fb^-1 of the toy-based Z0")
    p.add_argument("--toys", type=int, default=3000)
    p.add_argument("--n-train", type=int, default=400_000, help="jets to train the surrogate on (if not cached)")
    p.add_argument("--steps", type=int, default=None, help="surrogate training steps (default: the package default)")
    p.add_argument("--surrogate", default=None, help="directory of a saved JetResponseFlow")
    p.add_argument("--work", default="runs/kinfit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse_study_args(build_parser(), argv)
    run = StudyRun()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = jax.random.key(args.seed)
    reference = default_jet_response()

    # 1. the surrogate jet response (the cache of studies/dijet_kinfit.py, or trained here)
    steps = args.steps or DEFAULT_JET_TRAIN_CONFIG.max_steps
    model_dir = Path(args.surrogate) if args.surrogate else Path(args.work) / f"jetflow-n{args.n_train}-s{steps}-seed0"
    if (model_dir / "model.json").exists():
        surrogate = load(model_dir)[0]
    else:
        train = generate_parametric(jax.random.fold_in(jax.random.key(0), 2), args.n_train // 2, process="both")
        tc = TrainConfig.from_dict(DEFAULT_JET_TRAIN_CONFIG.to_dict() | {"max_steps": steps})
        surrogate, _ = fit_jet_response_flow(
            jax.random.fold_in(jax.random.key(0), 3), reference, train.e.ravel(), train.eta.ravel(), train_config=tc
        )
        save(surrogate, model_dir, surrogate.config(), metadata={"study": "discovery_sensitivity"})
    print(f"surrogate: {model_dir} ({run.elapsed():.0f} s)")

    # 2. templates: the same truth events and random numbers for every response
    edges = np.linspace(*args.window, args.bins + 1)
    events = {
        "signal": generate_parametric(jax.random.fold_in(root, 1), args.n_signal, process="resonance"),
        "background": generate_parametric(jax.random.fold_in(root, 2), args.n_background, process="qcd"),
    }
    per_fb = {"signal": args.signal_per_fb, "background": args.background_per_fb}
    n_gen = {"signal": args.n_signal, "background": args.n_background}
    responses = {
        "reference": reference,
        "surrogate": surrogate,
        "jes_up": reference.with_scale(1.01),
        "jes_down": reference.with_scale(0.99),
    }
    raw: dict[str, dict[str, np.ndarray]] = {name: {} for name in responses}  # MC counts per bin
    for k, (proc, ev) in enumerate(events.items()):
        key = jax.random.fold_in(root, 10 + k)
        for name, resp in responses.items():
            raw[name][proc] = mjj_counts(ev, measure_jets(key, ev.e, ev.eta, resp, calibration=reference), edges)
    print(f"templates ({run.elapsed():.0f} s)")

    def template(name: str, proc: str, lumi: float) -> np.ndarray:
        return raw[name][proc] * per_fb[proc] * lumi / n_gen[proc]

    def workspace(templates: str, lumi: float, with_fidelity: bool):
        samples = {}
        for proc in ("signal", "background"):
            counts = template(templates, proc, lumi)
            stat = counts / np.sqrt(np.maximum(raw[templates][proc], 1.0))  # MC statistical uncertainty [events]
            samples[proc] = Sample(proc, counts, stat)
        jes = {proc: (template("jes_up", proc, lumi), template("jes_down", proc, lumi)) for proc in samples}
        fidelity = None
        if with_fidelity:
            fidelity = {p: (template("reference", p, lumi), template("surrogate", p, lumi)) for p in samples}
        return build_workspace(samples["signal"], samples["background"], bin_edges=edges, jes=jes, fidelity=fidelity)

    # 3. expected Z0 vs luminosity
    rows, curves = [], {"reference": [], "surrogate": [], "surrogate + fidelity syst.": []}
    for lumi in args.lumi:
        z = {
            "reference": discovery_significance(workspace("reference", lumi, False)).z0_expected_median,
            "surrogate": discovery_significance(workspace("surrogate", lumi, False)).z0_expected_median,
            "surrogate + fidelity syst.": discovery_significance(workspace("surrogate", lumi, True)).z0_expected_median,
        }
        for name, value in z.items():
            curves[name].append(value)
        rows.append(
            [
                lumi,
                z["reference"],
                z["surrogate"],
                z["surrogate"] - z["reference"],
                z["surrogate + fidelity syst."],
                z["surrogate + fidelity syst."] - z["surrogate"],
            ]
        )
    s_tot = {name: template(name, "signal", 1.0).sum() for name in ("reference", "surrogate")}
    b_tot = {name: template(name, "background", 1.0).sum() for name in ("reference", "surrogate")}
    Table(
        "Expected discovery significance Z0 (Asimov, mu = 1) vs integrated luminosity",
        ["L [fb^-1]", "Z0 ref", "Z0 sur", "Z0 sur - ref", "Z0 sur + fidelity", "fidelity effect"],
        rows,
        notes=[
            f"m_jj window {args.window[0]:g}-{args.window[1]:g} GeV, {args.bins} bins; per fb^-1 in the window: "
            f"signal {s_tot['reference']:.2f} (ref) / {s_tot['surrogate']:.2f} (sur), background "
            f"{b_tot['reference']:.1f} (ref) / {b_tot['surrogate']:.1f} (sur)",
            "systematics: lumi 1.7 %, background norm. 10 %, MC stat. (staterror), JES +-1 % (histosys)"
            "; fidelity: histosys from surrogate - reference templates, symmetrised",
            f"simulated: {args.n_signal} signal, {args.n_background} QCD events; surrogate {model_dir}",
        ],
    ).save(out, "sensitivity_z0")
    fig, ax = new_figure(1, figsize=(7, 5))
    for name, values in curves.items():
        ax.plot(args.lumi, values, marker="o", label=name)
    ax.set(xscale="log", xlabel="integrated luminosity [fb^-1]", ylabel="expected Z0", title="Discovery sensitivity")
    ax.legend(fontsize="small")
    save_figure(fig, out / "sensitivity_z0.png")
    print(f"Z0 scan ({run.elapsed():.0f} s)")

    # 4. impacts and ranking (surrogate templates with the fidelity systematic, Asimov data with mu = 1)
    ws = workspace("surrogate", args.ranking_lumi, True)
    asimov = template("surrogate", "signal", args.ranking_lumi) + template("surrogate", "background", args.ranking_lumi)
    ranking = impacts(ws, data=asimov)
    ranking.table().save(out, "sensitivity_ranking")
    plot_ranking(ranking, out / "sensitivity_ranking.png")
    yields(ws, fit_result=ranking.fit).table("post-fit").save(out, "sensitivity_yields")

    # 5. toys vs asymptotics at a small luminosity (observed = the Asimov signal + background counts, rounded)
    ws_toy = workspace("reference", args.toy_lumi, False)
    data = np.round(template("reference", "signal", args.toy_lumi) + template("reference", "background", args.toy_lumi))
    toy = discovery_significance(ws_toy, data, method="toys", n_toys=args.toys, seed=args.seed)
    asym = discovery_significance(ws_toy, data)
    Table(
        f"Toy-based vs asymptotic Z0 at {args.toy_lumi:g} fb^-1 (reference templates)",
        ["", "toys", "toy MC error", "asymptotic"],
        [
            ["observed Z0", toy.z0_observed, toy.z0_toy_error, asym.z0_observed],
            ["expected median Z0", toy.z0_expected_median, toy.z0_expected_toy_error, asym.z0_expected_median],
        ],
        notes=[f"{args.toys} toys per set; observed data: rounded Asimov signal + background counts"],
    ).save(out, "sensitivity_toys")

    # 6. templates
    fig, axes = new_figure(1, figsize=(12, 5), ncols=2)
    centres = 0.5 * (edges[1:] + edges[:-1])
    for ax, proc in zip(axes, ("signal", "background"), strict=True):
        for name in ("reference", "surrogate", "jes_up", "jes_down"):
            ax.step(centres, template(name, proc, 1.0), where="mid", label=name)
        ax.set(xlabel="m_jj [GeV]", ylabel="events per fb^-1 per bin", title=proc)
        ax.legend(fontsize="small")
    save_figure(fig, out / "sensitivity_templates.png")

    run.finish(out, "sensitivity", args)
    print(f"done in {run.elapsed():.0f} s -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
