"""Effective samples per second of each calibration sampler on the standard calibration posterior, written as JSON.

The standard posterior: N = 1000 showers (250 each at 10, 20, 50, 100 GeV) from the reference calorimeter at
theta* = (1.0, 0.17, 0.0015), the trained SummaryFlow of ``studies/calibration.py`` (loaded from its cache, or
trained here with the same settings), tau = 1. Each sampler runs once; its wall time includes compilation (NumPyro
recompiles on every call, so a user pays it on every run as well). ESS: the smallest bulk ESS over the parameters
(ArviZ, rank-normalised) for MCMC; the Kish ESS of the weights for SMC and importance sampling. Ratios are to
NumPyro NUTS measured in the same run.

    python benchmarks/bench_calibration.py [--out benchmarks/results/bench_calibration.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import arviz as az
import jax
import numpy as np

from surrinf._atomic import atomic_write_text
from surrinf.generators import TrainConfig
from surrinf.inference import (
    CalibrationProblem,
    ReferenceSummaries,
    default_prior,
    fit_summary_flow,
    laplace_importance_posterior,
    load_summary_flow,
    run_blackjax_nuts,
    run_numpyro_nuts,
    run_tempered_smc,
    to_inference_data,
)
from surrinf.report.provenance import provenance
from surrinf.sim import calorimeter


def _ess(result) -> float:
    if result.weights is not None:
        return result.effective_sample_size()
    ess = az.ess(to_inference_data(result), method="bulk")
    return float(min(float(ess[v]) for v in ess.data_vars))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flow", default="runs/calibration/summary_flow-n200000-s3000-seed0")
    p.add_argument("--n", type=int, default=1000, help="showers in the calibration data")
    p.add_argument("--out", default="benchmarks/results/bench_calibration.json")
    args = p.parse_args(argv)
    prior = default_prior()
    reference = ReferenceSummaries(calorimeter("default"))
    if (Path(args.flow) / "model.json").exists():
        flow = load_summary_flow(args.flow)[0]
        flow_source = args.flow
    else:
        data = reference.training_set(jax.random.fold_in(jax.random.key(0), 1), 200_000, prior, (8.0, 120.0))
        cfg = TrainConfig(batch_size=1024, max_steps=3000, learning_rate=2e-3, eval_every=500)
        flow = fit_summary_flow(jax.random.fold_in(jax.random.key(0), 2), data, prior, train_config=cfg)[0]
        flow_source = "trained in this run (3000 steps)"
    e = np.repeat([10.0, 20.0, 50.0, 100.0], -(-args.n // 4))[: args.n]
    x = reference.simulate(jax.random.key(7), e, np.array([1.0, 0.17, 0.0015]))
    problem = CalibrationProblem(flow, x, e, prior)
    samplers = {
        "numpyro_nuts (4 x 500 warm-up + 1000)": lambda k: run_numpyro_nuts(problem, k, 1.0),
        "blackjax_nuts (4 x 500 warm-up + 1000)": lambda k: run_blackjax_nuts(problem, k, 1.0),
        "tempered_smc (500 particles, 5 RWM steps)": lambda k: run_tempered_smc(
            problem, k, 1.0, n_particles=500, n_mcmc_steps=5
        ),
        "laplace_is (2000 draws)": lambda k: laplace_importance_posterior(problem, k, 1.0),
    }
    rows = {}
    for name, run in samplers.items():
        t0 = time.perf_counter()
        res = run(jax.random.key(1))
        wall = time.perf_counter() - t0
        ess = _ess(res)
        rows[name] = {
            "wall_s": wall,
            "min_ess": ess,
            "ess_per_s": ess / wall,
            "mean": res.mean().tolist(),
            "sd": res.sd().tolist(),
        }
        print(f"{name:44s} {wall:7.1f} s  ESS {ess:8.0f}  ESS/s {ess / wall:8.2f}")
    base = rows["numpyro_nuts (4 x 500 warm-up + 1000)"]["ess_per_s"]
    for r in rows.values():
        r["ratio_to_numpyro_nuts"] = r["ess_per_s"] / base
    doc = {
        "benchmark": "bench_calibration",
        "machine": {"platform": platform.platform(), "devices": str(jax.devices())},
        "provenance": provenance({"command": [*sys.argv], "flow": flow_source, "n": args.n}),
        "samplers": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
