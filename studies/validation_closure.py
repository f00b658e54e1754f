"""Validation closure study: the validation module against the reference simulator alone.

Reference (default geometry, log-uniform 1-1000 GeV) against an independent reference, against a
reference with a +1 % energy scale and against one with a 20 % larger sampling term; classifier
reweighting of the +1 % sample; energy-distance tests on disjoint reference subsamples; the KS example
that is significant but practically negligible. Writes a table and provenance to docs/results/.

    python studies/validation_closure.py [--n 20000] [--seed 0] [--out docs/results]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np

from surrinf.report import Measurement, Table
from surrinf.report.study import StudyRun, parse_study_args, study_parser
from surrinf.sim import calorimeter
from surrinf.sim.spectrum import parse_energy_spec
from surrinf.validation import compare_1d, energy_distance_test
from surrinf.validation.reweighting import closure_check
from surrinf.validation.validate import Showers, reweight_response, validate


def build_parser() -> argparse.ArgumentParser:
    """The study's options (with the common --seed, --config, --out of :func:`surrinf.report.study.study_parser`)."""
    p = study_parser(__doc__)
    p.add_argument("--n", type=int, default=20_000, help="showers per sample")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse_study_args(build_parser(), argv)
    run = StudyRun()
    cal = calorimeter("default")
    a_nom = cal.material.nominal_sampling_term
    root = jax.random.key(args.seed)
    spectrum = parse_energy_spec("log-uniform:1,1000")

    def sample(i: int, theta) -> Showers:
        k_e, k_s = jax.random.split(jax.random.fold_in(root, i))
        e = spectrum.sample(k_e, args.n)
        return Showers(e.astype(np.float64), cal.simulate(k_s, e, theta=theta).showers)

    ref = sample(1, (1.0, a_nom, 0.0))
    cands = {
        "independent reference": sample(2, (1.0, a_nom, 0.0)),
        "energy scale +1 %": sample(3, (1.01, a_nom, 0.0)),
        "sampling term +20 %": sample(4, (1.0, 1.2 * a_nom, 0.0)),
    }
    rows = []
    reports = {}
    for name, cand in cands.items():
        rep = validate(ref, cand, cal.geometry, seed=args.seed, x0_mm=cal.x0_mm)
        reports[name] = rep
        e = rep.observable("E_ratio")
        within = sum(c.w1_within_floor for c in rep.one_d)
        rows.append(
            [
                name,
                Measurement(rep.classifier_high.auc, rep.classifier_high.auc_std),
                Measurement(rep.classifier_low.auc, rep.classifier_low.auc_std),
                rep.energy_distance.p_value,
                f"{within} / {len(rep.one_d)}",
                Measurement(e.w1_over_floor, e.w1_err / e.w1_floor),
                e.mean_shift_significance,
                e.width_ratio_significance,
                e.verdict,
            ]
        )
        print(name, rows[-1], file=sys.stderr)
    table = Table(
        f"Validation closure: {args.n} showers per sample, default geometry, log-uniform 1-1000 GeV",
        [
            "candidate",
            "AUC high-level",
            "AUC low-level",
            "energy distance p",
            "W1 within floor",
            "E_ratio W1 / floor",
            "E_ratio mean shift [sigma]",
            "E_ratio width change [sigma]",
            "E_ratio KS verdict",
        ],
        rows,
    )
    # Reweighting of the +1 % sample (energy-response features, conditionally standardised in ln E).
    scaled = cands["energy scale +1 %"]
    rw = reweight_response(jax.random.key(args.seed + 7), ref, scaled, cal.geometry)
    e_ref, e_cand = ref.showers.sum(1) / ref.energies, scaled.showers.sum(1) / scaled.energies
    before = compare_1d(e_ref, e_cand, "E_ratio")
    after = closure_check(e_ref, e_cand, rw.weights).w1_after
    # Energy distance on 6 disjoint pairs of reference subsamples of 3000.
    from surrinf.data import flatten_features, high_level_features

    hl = [
        flatten_features(high_level_features(s.showers, s.energies, cal.geometry), cal.geometry)[0]
        for s in (ref, cands["independent reference"])
    ]
    pvals = [
        energy_distance_test(
            jax.random.key(100 + i),
            hl[0][i * 3000 : (i + 1) * 3000],
            hl[1][i * 3000 : (i + 1) * 3000],
            n_permutations=500,
        ).p_value
        for i in range(min(6, args.n // 3000))
    ]
    rng = np.random.default_rng(args.seed)
    ks_example = compare_1d(rng.normal(0.0, 1.0, 1_000_000), rng.normal(0.01, 1.0, 1_000_000), "x", n_bootstrap=10)
    extra = Table(
        "Reweighting closure, energy distance on disjoint reference subsamples, KS practical significance",
        ["check", "value"],
        [
            ["E_ratio W1 floor", before.w1_floor],
            ["E_ratio W1, +1 % scale, before reweighting", before.w1],
            ["E_ratio W1, +1 % scale, after reweighting", after],
            ["after / floor", after / before.w1_floor],
            ["effective sample size fraction", rw.ess_fraction],
            ["energy-distance p-values (ref vs ref, 6 x 3000)", ", ".join(f"{p:.3f}" for p in pvals)],
            ["KS D, 0.01 sigma shift, 10^6 per sample", ks_example.ks_statistic],
            ["KS p-value", ks_example.ks_pvalue],
            ["critical D for n_practical = 10^4", ks_example.ks_critical_practical],
            ["verdict", ks_example.verdict],
        ],
    )
    out = Path(args.out)
    table.save(out, "validation_closure")
    extra.save(out, "validation_closure_checks")
    run.finish(out, "validation_closure", args)
    print(table.to_markdown())
    print(extra.to_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
