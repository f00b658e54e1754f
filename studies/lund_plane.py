"""Primary Lund plane of Pythia 8 QCD jets: particle level (reference) vs after a calorimeter response (KL divergence).

Needs the ``pythia`` extra (pythia8mc, fastjet, awkward). Reference: ``--n-jets`` anti-kt R = 0.4 particle-level jets
with pT > 300 GeV, |eta| < 2 from 13 TeV QCD events (``surrinf.kinfit.constituents.generate_pythia_jets``). Detector
level: the same jets after ``apply_constituent_response`` with four settings, cited from the ATLAS detector paper
(ATLAS Collaboration, JINST 3 (2008) S08003: Table 1.1 resolution goals, sec. 5 granularities):

- ``hadronic``: Tile-like 0.1 x 2pi/64 cells and sigma/E = 50 %/sqrt(E) (+) 3 % (the hadronic-jet design goal);
- ``hadronic cells only`` and ``hadronic resolution only``: the two parts separately;
- ``EM``: LAr-middle-layer-like 0.025 x 2pi/256 cells and this library's calorimeter response
  (``surrinf.kinfit.response.default_jet_response``, fitted to the reference electromagnetic calorimeter simulator).

Towers with measured E <= ``--e-min-gev`` are dropped. For each setting: the primary Lund density
(C/A declustering, fastjet back end), the mean number of primary emissions in the plane, and the KL divergence
D(reference || detector) with its bootstrap error over jets, against the same for two independent halves of the
reference (the finite-sample floor). The numpy back end is cross-checked against fastjet on ``--n-check`` jets.
Writes ``lund_kl.{md,csv,tex,json}``, ``lund_density.png``, ``lund_ratio.png`` and ``lund_provenance.json``.

    .venv/bin/python studies/lund_plane.py [--n-jets 4000] [--seed 1]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import jax
import numpy as np

from surrinf.kinfit.constituents import apply_constituent_response, generate_pythia_jets
from surrinf.kinfit.pythia import pythia_settings, pythia_versions
from surrinf.kinfit.response import JetResponse, default_jet_response
from surrinf.report import Measurement, Table
from surrinf.report.figure import save_figure
from surrinf.report.study import StudyRun, parse_study_args, study_parser
from surrinf.validation.lund import lund_density, lund_kl, lund_points, plot_lund_density, plot_lund_ratio

#: ATLAS design resolution for hadronic jets, sigma/E = 50 %/sqrt(E) (+) 3 % (JINST 3 (2008) S08003, Table 1.1).
HADRONIC_RESPONSE = JetResponse(s0=1.0, s1=0.0, a=0.50, b=0.03, c=0.0)
#: Tile calorimeter cells, d_eta x d_phi = 0.1 x 2pi/64 (64 azimuthal modules), and the LAr EM middle layer,
#: 0.025 x 2pi/256 (JINST 3 (2008) S08003, sec. 5).
HADRONIC_CELLS = (0.1, 2.0 * math.pi / 64)
EM_CELLS = (0.025, 2.0 * math.pi / 256)


def build_parser() -> argparse.ArgumentParser:
    """The study's options (with the common --seed, --config, --out of :func:`surrinf.report.study.study_parser`;
    --seed is Pythia's Random:seed and the root of the JAX keys)."""
    p = study_parser(__doc__, seed=1, seed_help="Pythia Random:seed in [1, 900000000] and root of the JAX keys")
    p.add_argument("--n-jets", type=int, default=4000, help="particle-level jets")
    p.add_argument("--pthat-min-gev", type=float, default=250.0, help="Pythia PhaseSpace:pTHatMin [GeV]")
    p.add_argument("--pt-min-gev", type=float, default=300.0, help="jet pT cut [GeV]")
    p.add_argument("--eta-max", type=float, default=2.0, help="jet |eta| cut")
    p.add_argument("--jet-r", type=float, default=0.4, help="anti-kt radius")
    p.add_argument("--e-min-gev", type=float, default=0.0, help="tower energy threshold [GeV]")
    p.add_argument("--n-bootstrap", type=int, default=200, help="bootstrap replicates of the KL error")
    p.add_argument("--n-check", type=int, default=200, help="jets for the numpy vs fastjet cross-check")
    p.add_argument("--name", default="lund", help="output file stem")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse_study_args(build_parser(), argv)
    run = StudyRun()
    out = Path(args.out)
    root = jax.random.key(args.seed)
    try:
        jets = generate_pythia_jets(
            args.n_jets,
            seed=args.seed,
            pthat_min_gev=args.pthat_min_gev,
            jet_r=args.jet_r,
            pt_min_gev=args.pt_min_gev,
            eta_max=args.eta_max,
        )
    except (ImportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t_gen = run.elapsed()
    print(f"{jets.n_jets} Pythia jets in {t_gen:.0f} s", file=sys.stderr)

    ref_points = lund_points(jets.p4, jets.counts)
    ref = lund_density(ref_points)

    # back-end cross-check on the first jets
    n_check = min(args.n_check, jets.n_jets)
    sub = jets.select(np.arange(n_check))
    a, b = lund_points(sub.p4, sub.counts, backend="numpy"), lund_points(sub.p4, sub.counts, backend="fastjet")
    same = len(a) == len(b) and np.array_equal(a.jet, b.jet)
    check = {
        "jets": n_check,
        "emissions": [len(a), len(b)],
        "same_emissions": bool(same),
        "max_rel_diff_kt": float(np.max(np.abs(a.kt / b.kt - 1))) if same and len(a) else None,
        "max_abs_diff_delta": float(np.max(np.abs(a.delta - b.delta))) if same and len(a) else None,
    }

    settings = [
        ("hadronic", HADRONIC_CELLS, HADRONIC_RESPONSE, "50%/sqrt(E) (+) 3%"),
        ("hadronic cells only", HADRONIC_CELLS, None, "none"),
        ("hadronic resolution only", None, HADRONIC_RESPONSE, "50%/sqrt(E) (+) 3%"),
        ("EM", EM_CELLS, default_jet_response(), "library calorimeter fit"),
    ]
    table = Table(
        f"Primary Lund plane: KL divergence D(reference || detector) for {jets.n_jets} Pythia 8 QCD jets "
        f"(anti-kt R = {args.jet_r}, pT > {args.pt_min_gev:g} GeV, |eta| < {args.eta_max:g}, 13 TeV)",
        [
            "detector",
            "cells d_eta x d_phi",
            "energy resolution",
            "towers / jet",
            "emissions / jet in plane",
            "KL [nats]",
            "finite-sample floor",
            "KL / floor",
        ],
        caption=(
            "Reference: particle-level constituents; detector: the same jets after the per-constituent response "
            "(towers at cell centres, energies smeared, towers with E <= "
            f"{args.e_min_gev:g} GeV dropped). Lund plane ln(1/Delta) in [0, 6] (0.25 bins), ln(kt/GeV) in [-3, 6] "
            "(0.5 bins); KL with pseudo-count 0.5 on the bins populated in either sample, error = bootstrap sd "
            f"({args.n_bootstrap} Poisson replicates of the jets; paired: detector jet i is particle jet i, both "
            "reweighted alike, so a response that changed nothing would give exactly 0). Floor: (K - 1)/2 "
            "(1/N_P + 1/N_Q), the mean KL of two independent samples of one distribution of these sizes (K bins, "
            "N emissions): the smallest distortion an independently generated sample of this size could resolve. "
            "The null row compares two independent halves of the reference."
        ),
        column_formats={"KL [nats]": 4, "finite-sample floor": 4, "KL / floor": 3},
    )
    detail: dict[str, dict] = {}
    half = jets.n_jets // 2
    d_a = lund_density(ref_points.subset(np.arange(half)))
    d_b = lund_density(ref_points.subset(np.arange(half, 2 * half)))
    null = lund_kl(jax.random.fold_in(root, 100), d_a, d_b, n_bootstrap=args.n_bootstrap)
    table.add_row(
        [
            "none (reference half A vs half B)",
            "-",
            "-",
            round(float(jets.counts.mean()), 1),
            Measurement(d_b.integral(), d_b.integral_err()),
            Measurement(null.value, null.error),
            null.null_mean,
            null.value / null.null_mean,
        ]
    )
    detail["null"] = null.to_dict()
    dets = []
    for i, (name, cells, response, res_text) in enumerate(settings):
        det_jets = apply_constituent_response(
            jax.random.fold_in(root, 10 + i), jets, response, cell_size=cells, e_min_gev=args.e_min_gev
        )
        pts = lund_points(det_jets.p4, det_jets.counts)
        det = lund_density(pts)
        kl = lund_kl(jax.random.fold_in(root, 200 + i), ref, det, n_bootstrap=args.n_bootstrap, paired=True)
        mult = pts.multiplicity()
        cell_text = "none" if cells is None else f"{cells[0]:g} x {cells[1]:.4f}"
        table.add_row(
            [
                name,
                cell_text,
                res_text,
                round(float(det_jets.counts.mean()), 1),
                Measurement(det.integral(), det.integral_err()),
                Measurement(kl.value, kl.error),
                kl.null_mean,
                kl.value / kl.null_mean,
            ]
        )
        detail[name] = kl.to_dict() | {"mean_primary_emissions": float(mult.mean()), "cells": cells}
        dets.append((name, det))
        print(name, kl.to_dict(), file=sys.stderr, flush=True)
    table.notes.append(
        f"Reference: {jets.counts.mean():.1f} constituents / jet, {ref.integral():.3f} +- "
        f"{ref.integral_err():.3f} primary emissions / jet in the plane "
        f"({ref_points.multiplicity().mean():.3f} in all)."
    )
    table.notes.append(
        f"numpy vs fastjet C/A on {n_check} jets: identical emission lists {check['same_emissions']}, "
        f"max |kt ratio - 1| = {check['max_rel_diff_kt']:.1e}, max |Delta difference| = "
        f"{check['max_abs_diff_delta']:.1e}."
        if same
        else f"numpy vs fastjet C/A on {n_check} jets: emission lists differ ({check['emissions']})"
    )

    out.mkdir(parents=True, exist_ok=True)
    table.save(out, f"{args.name}_kl")
    show = [dets[0], dets[3]]
    save_figure(
        plot_lund_density([ref, *(d for _, d in show)], ["particle level", *(f"detector: {n}" for n, _ in show)]),
        out / f"{args.name}_density.png",
    )
    save_figure(
        plot_lund_ratio([d for _, d in dets], ref, [f"{n} / particle" for n, _ in dets]),
        out / f"{args.name}_ratio.png",
    )
    run.finish(
        out,
        args.name,
        args,
        pythia_settings=pythia_settings("qcd", args.seed, 13000.0, args.pthat_min_gev),
        package_versions=pythia_versions(),
        pythia_seconds=t_gen,
        backend_check=check,
        kl=detail,
        cpu_count=os.cpu_count(),
    )
    print(table.to_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
