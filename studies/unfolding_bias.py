"""Unfolding bias study: the bias a surrogate-built response matrix causes in an unfolded energy spectrum.

Truth = incident electron energy [GeV] with a falling power-law spectrum dN/dE ~ E^-2, reco = measured energy
E_vis / f_samp [GeV] (the summed voxel energies over the nominal sampling fraction). Two response matrices from the
same truth energies: R_ref from the reference calorimeter simulator and R_sur from a trained generative surrogate
(surrinf.generators; default a VAE trained here, or --surrogate DIR to load a saved one). Poisson pseudo-data made
with R_ref are unfolded with R_sur (and, on the same toys, with R_ref: the closure baseline that carries only the
method's own regularisation bias) by inversion, IBU, Tikhonov and fully Bayesian unfolding; bias, variance and
coverage per bin, and bias vs iterations / regularisation strength. Also RooUnfold's standard example.

    .venv/bin/python studies/unfolding_bias.py --seed 0

Outputs in --out (default docs/results): unfolding_bias_<method>.{md,csv,tex,json}, unfolding_summary.*,
unfolding_scan_{ibu,tikhonov}.*, unfolding_response.png, unfolding_bias_<method>.png, unfolding_scan_*.png,
unfolding_roounfold.{md,...,png}, unfolding_provenance.json. The trained surrogate is cached in --work.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

from surrinf._atomic import atomic_write_text
from surrinf.data.bijection import ShowerBijection
from surrinf.generators import EnergyConsistency, TrainConfig, fit_surrogate, load, sample_batched, save
from surrinf.generators.models import DEFAULT_TRAIN_CONFIGS
from surrinf.report import Table, new_figure, save_figure
from surrinf.report.study import StudyRun, parse_study_args, study_parser
from surrinf.sim import calorimeter
from surrinf.sim.spectrum import parse_energy_spec
from surrinf.unfolding import (
    ResponseMatrix,
    bias_study,
    fbu_toys,
    ibu,
    invert,
    lcurve,
    min_global_correlation,
    plot_lcurve,
    poisson_toys,
    roounfold_example,
    scan,
    tikhonov,
)


def power_law_counts(edges: np.ndarray, n_total: float, lo: float, hi: float) -> np.ndarray:
    """Expected events per bin of dN/dE ~ E^-2 normalised to n_total events on [lo, hi] [GeV]."""
    cdf = (1.0 / lo - 1.0 / np.asarray(edges)) / (1.0 / lo - 1.0 / hi)
    return n_total * np.diff(cdf)


def reco_energies(showers: np.ndarray, sampling_fraction: float) -> np.ndarray:
    """Measured energy [GeV]: summed visible voxel energies over the nominal sampling fraction."""
    return np.asarray(showers, np.float64).sum(axis=1) / sampling_fraction


def build_parser() -> argparse.ArgumentParser:
    """The study's options (with the common --seed, --config, --out of :func:`surrinf.report.study.study_parser`)."""
    p = study_parser(__doc__)
    p.add_argument("--kind", default="vae", help="surrogate family trained when --surrogate is not given")
    p.add_argument("--surrogate", default=None, help="directory of a saved surrogate (surrinf.generators.save)")
    p.add_argument("--n-train", type=int, default=100_000, help="reference showers to train the surrogate")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the family's default)")
    p.add_argument("--n-response", type=int, default=400_000, help="events behind each response matrix")
    p.add_argument("--n-data", type=float, default=1e5, help="expected data events in the truth range")
    p.add_argument("--truth-bins", type=int, default=16)
    p.add_argument("--reco-bins", type=int, default=32)
    p.add_argument("--range", type=float, nargs=2, default=(2.0, 100.0), help="truth and reco range [GeV]")
    p.add_argument("--toys", type=int, default=1000)
    p.add_argument("--fbu-toys", type=int, default=1000)
    p.add_argument("--iterations", type=int, default=4, help="IBU iterations of the bias table")
    p.add_argument("--work", default="runs/unfolding")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse_study_args(build_parser(), argv)
    # Runs of this study hung inside XLA CPU (all threads waiting, jaxlib 0.10.2) in the Tikhonov scan until the toy
    # loops were compiled with single-threaded Eigen (surrinf.unfolding.CPU_COMPILER_OPTIONS); synchronous CPU dispatch
    # (jax-ml/jax#25861) is kept as a second guard.
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    run = StudyRun()
    out, work = Path(args.out), Path(args.work)
    root = jax.random.key(args.seed)
    cal = calorimeter("default")
    f_samp = cal.material.sampling_fraction
    lo, hi = args.range

    # 1. the surrogate: loaded, cached, or trained here (as studies/generator_quality.py does)
    if args.surrogate:
        surrogate, _ = load(args.surrogate)
        sur_label = f"{args.surrogate}"
    else:
        steps = args.steps or DEFAULT_TRAIN_CONFIGS[args.kind].max_steps
        model_dir = work / f"{args.kind}-n{args.n_train}-s{steps}-seed{args.seed}"
        if (model_dir / "model.json").exists():
            surrogate, _ = load(model_dir)
            print(f"loaded {model_dir}")
        else:
            e_train = np.asarray(
                parse_energy_spec("log-uniform:1,1000").sample(jax.random.fold_in(root, 1), args.n_train)
            )
            x_train = np.asarray(cal.simulate(jax.random.fold_in(root, 2), e_train).showers)
            ec_ref = EnergyConsistency.fit_reference(e_train, x_train.sum(1), degree=1)
            lam = float(1.0 / np.var(np.asarray(ec_ref.residual(x_train.sum(1, keepdims=True), e_train))))
            extra = {"energy_consistency": EnergyConsistency(ec_ref.fixed_coeffs, lam=lam)}
            if args.kind not in ("vae", "gan"):
                extra = {}
            tc = TrainConfig.from_dict(DEFAULT_TRAIN_CONFIGS[args.kind].to_dict() | {"max_steps": steps})
            tt = time.perf_counter()
            surrogate, res = fit_surrogate(
                args.kind,
                jax.random.fold_in(root, 3),
                x_train,
                e_train,
                ShowerBijection(cal.geometry),
                train_config=tc,
                **extra,
            )
            save(surrogate, model_dir, surrogate.config(), metadata={"study": "unfolding_bias", "steps": res.steps_run})
            print(f"trained {args.kind} ({res.steps_run} steps) in {time.perf_counter() - tt:.0f} s")
            del x_train
        sur_label = f"{args.kind} ({steps} steps)"

    # 2. response matrices from the same truth energies, MC log-uniform on a wider range, weighted to E^-2
    truth_edges = np.geomspace(lo, hi, args.truth_bins + 1)
    reco_edges = np.geomspace(lo, hi, args.reco_bins + 1)
    e_mc = np.asarray(
        parse_energy_spec(f"log-uniform:{0.75 * lo},{1.3 * hi}").sample(jax.random.fold_in(root, 4), args.n_response),
        np.float64,
    )
    weights = 1.0 / e_mc  # log-uniform (dN/dE ~ 1/E) -> E^-2: same truth shape inside bins and same fakes as the data
    chunk = 50_000
    reco_ref, reco_sur = [], []
    for i, start in enumerate(range(0, e_mc.size, chunk)):
        e = e_mc[start : start + chunk].astype(np.float32)
        reco_ref.append(reco_energies(cal.simulate(jax.random.fold_in(root, 1000 + i), e).showers, f_samp))
        reco_sur.append(reco_energies(sample_batched(surrogate, jax.random.fold_in(root, 2000 + i), e), f_samp))
    responses = {
        "reference": ResponseMatrix.from_events(
            e_mc, np.concatenate(reco_ref), truth_edges, reco_edges, weights=weights
        ),
        "surrogate": ResponseMatrix.from_events(
            e_mc, np.concatenate(reco_sur), truth_edges, reco_edges, weights=weights
        ),
    }
    r_ref, r_sur = responses["reference"], responses["surrogate"]
    print(f"responses built in {run.elapsed():.0f} s")
    atomic_write_text(work / "responses.json", json.dumps({k: r.to_dict() for k, r in responses.items()}))

    # 3. the truth spectrum and the expected data (signal + fakes of the reference)
    truth = power_law_counts(truth_edges, args.n_data, lo, hi)
    signal = r_ref.fold(truth)
    fakes = signal * r_ref.fake_fraction / np.maximum(1.0 - r_ref.fake_fraction, 1e-12)

    methods = {
        "inversion": lambda d, r: invert(d, r),
        f"ibu{args.iterations}": lambda d, r: ibu(d, r, iterations=args.iterations),
    }
    # Tikhonov (curvature of t itself, no reference shape): strength chosen on one pseudo-data set unfolded with R_sur,
    # as an analyst would, by minimum mean global correlation; the L-curve is recorded too (on this well-conditioned
    # problem it has no corner and picks the smallest strength scanned)
    toy0 = poisson_toys(jax.random.fold_in(root, 5), signal + fakes, 1)[0]
    strengths = np.geomspace(1e-12, 1e-2, 41)
    lc = lcurve(toy0, r_sur, strengths)
    tau_lc = float(lc.best)
    tau_mgc = float(min_global_correlation(toy0, r_sur, strengths)[0])
    methods["tikhonov"] = lambda d, r: tikhonov(d, r, strength=tau_mgc)

    studies = {}
    key_toys = jax.random.fold_in(root, 6)
    for name, method in methods.items():
        ts = time.perf_counter()
        studies[name] = bias_study(
            key_toys, method, r_ref, r_sur, truth, n_toys=args.toys, fakes_ref=fakes, label=f"{name}, {sur_label}"
        )
        print(f"{name}: {time.perf_counter() - ts:.0f} s")

    # fully Bayesian unfolding: one vectorised NUTS chain per toy (the same toys, fewer of them if asked)
    ts = time.perf_counter()
    fbu_n = min(args.fbu_toys, args.toys)

    def fbu_method(toys, response):
        return fbu_toys(jax.random.fold_in(root, 7), toys, response, fakes=None)

    studies["fbu"] = bias_study(
        key_toys,
        fbu_method,
        r_ref,
        r_sur,
        truth,
        n_toys=fbu_n,
        fakes_ref=fakes,
        label=f"fbu, {sur_label}",
        batched=True,
    )
    print(f"fbu: {time.perf_counter() - ts:.0f} s")

    # 4. bias vs regularisation (same toys for every value)
    ibu_values = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]
    ibu_scan = scan(
        key_toys,
        lambda k: lambda d, r: ibu(d, r, iterations=k, propagate_response=False),
        ibu_values,
        r_ref,
        r_sur,
        truth,
        n_toys=args.toys,
        fakes_ref=fakes,
        label="IBU",
        parameter="iterations",
    )
    tik_values = [float(s) for s in np.geomspace(1e-9, 1e-4, 6)]
    tik_scan = scan(
        key_toys,
        lambda s: lambda d, r: tikhonov(d, r, strength=s, propagate_response=False),
        tik_values,
        r_ref,
        r_sur,
        truth,
        n_toys=args.toys,
        fakes_ref=fakes,
        label="Tikhonov",
        parameter="strength",
    )

    # 5. RooUnfold's standard example: IBU chi2 vs iterations against the test truth
    ex = roounfold_example(jax.random.fold_in(root, 8))
    ex_rows = []
    for k in (1, 2, 4, 8, 16, 32, 50, 100):
        r = ibu(ex.test_data, ex.response, iterations=k)
        d = np.asarray(r.unfolded) - ex.test_truth
        v = np.asarray(r.total_covariance)
        ex_rows.append([k, float(d @ np.linalg.solve(v, d)), ex.test_truth.size])
    ex_table = Table(
        "RooUnfold standard example: IBU vs the double Breit-Wigner test truth (chi2 with the total "
        "covariance, data + response)",
        ["iterations", "chi2", "bins"],
        ex_rows,
    )
    best = min(ex_rows, key=lambda row: abs(row[1] - row[2]))[0]
    ex_best = ibu(ex.test_data, ex.response, iterations=best)
    ex_four = ibu(ex.test_data, ex.response, iterations=4)

    # 6. outputs
    out.mkdir(parents=True, exist_ok=True)
    summary = []
    for name, st in studies.items():
        st.table().save(out, f"unfolding_bias_{name}")
        save_figure(st.figure(xlabel="incident energy [GeV]"), out / f"unfolding_bias_{name}.png")
        s, c = st.surrogate, st.closure
        summary.append(
            [
                name,
                st.n_toys,
                float(np.mean(np.abs(s.bias_over_sigma))),
                float(np.max(np.abs(s.bias_over_sigma))),
                float(np.mean(np.abs(c.bias_over_sigma))),
                float(np.mean(s.coverage)),
                float(np.mean(c.coverage)),
                float(np.mean(st.systematic() / s.stat_sigma)),
            ]
        )
    Table(
        f"Unfolding bias from the surrogate response ({sur_label}); truth E^-2 on [{lo:g}, {hi:g}] GeV, "
        f"{args.n_data:.0f} expected events, {args.truth_bins} truth x {args.reco_bins} reco bins; Tikhonov strength "
        f"{tau_mgc:.3g} (minimum global correlation; the L-curve picks {tau_lc:.3g})",
        [
            "method",
            "toys",
            "mean |bias|/sigma (R_sur)",
            "max |bias|/sigma (R_sur)",
            "mean |bias|/sigma (closure)",
            "coverage 68% (R_sur)",
            "coverage 68% (closure)",
            "mean systematic / sigma",
        ],
        summary,
    ).save(out, "unfolding_summary")
    ibu_scan.table().save(out, "unfolding_scan_ibu")
    tik_scan.table().save(out, "unfolding_scan_tikhonov")
    save_figure(ibu_scan.figure(), out / "unfolding_scan_ibu.png")
    save_figure(tik_scan.figure(xscale="log"), out / "unfolding_scan_tikhonov.png")
    ex_table.save(out, "unfolding_roounfold")

    # response comparison: efficiency and resolution per truth bin
    fig, axes = new_figure(1, figsize=(10, 4), ncols=2)
    centers = np.sqrt(truth_edges[1:] * truth_edges[:-1])
    for label, r in responses.items():
        axes[0].plot(centers, r.efficiency, "o-", label=label)
    e_all = np.concatenate([e_mc, e_mc])
    ratio = np.concatenate([np.concatenate(reco_ref), np.concatenate(reco_sur)]) / e_all
    which = np.repeat([0, 1], e_mc.size)
    for k, label in enumerate(responses):
        sel = which == k
        idx = np.digitize(e_all[sel], truth_edges) - 1
        ok = (idx >= 0) & (idx < truth.size)
        res = [np.std(ratio[sel][ok & (idx == i)]) for i in range(truth.size)]
        axes[1].plot(centers, res, "o-", label=label)
    axes[0].set(xscale="log", xlabel="incident energy [GeV]", ylabel="efficiency (reco in range)")
    axes[1].set(xscale="log", yscale="log", xlabel="incident energy [GeV]", ylabel="sd of E_reco / E_true")
    axes[0].legend()
    save_figure(fig, out / "unfolding_response.png")

    fig, ax = new_figure()
    c = 0.5 * (ex.edges[1:] + ex.edges[:-1])
    ax.step(ex.edges[:-1], ex.test_truth, where="post", label="test truth (double Breit-Wigner)")
    ax.step(ex.edges[:-1], ex.test_data, where="post", label="measured")
    ax.errorbar(c, np.asarray(ex_four.unfolded), np.asarray(ex_four.total_errors), fmt="o", ms=3, label="IBU, 4 it.")
    ax.errorbar(
        c, np.asarray(ex_best.unfolded), np.asarray(ex_best.total_errors), fmt="s", ms=3, label=f"IBU, {best} it."
    )
    ax.set(xlabel="x", ylabel="events per bin")
    ax.legend()
    save_figure(fig, out / "unfolding_roounfold.png")
    save_figure(plot_lcurve(lc), out / "unfolding_lcurve.png")

    run.finish(
        out,
        "unfolding",
        args,
        surrogate=sur_label,
        tikhonov_strength_lcurve=tau_lc,
        tikhonov_strength_min_global_correlation=tau_mgc,
        roounfold_best_iterations=best,
    )
    print(f"done in {run.elapsed():.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
