"""Sampling and training throughput of each surrogate family vs the reference simulator, written as JSON.

For the default geometry (360 voxels) and each family's default architecture (as in
``studies/generator_quality.py``), measured in the same run on the same machine:

- showers per second of the compiled, batched sampler (:func:`surrinf.generators.base.sample_batched`)
  at 10, 100 and 1000 GeV, and its ratio to the reference GFLASH simulator at the same energies;
- training steps per second with the family's default batch size (from the trainer's wall-clock log,
  excluding the first ``log_every`` steps, which include compilation).

Speed does not depend on how well a model is trained, so the models are trained for only a few steps.

    python benchmarks/bench_generate.py [--models flow,vae,diffusion,gan] [--out benchmarks/results/bench_generate.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
from pathlib import Path

import jax
import numpy as np
from bench_simulate import _rate  # same timing rule (best of repeats); benchmarks/ is on sys.path

from surrinf._atomic import atomic_write_text
from surrinf.data import ShowerBijection
from surrinf.generators.base import sample_batched
from surrinf.generators.models import DEFAULT_TRAIN_CONFIGS, SURROGATE_KINDS, fit_surrogate
from surrinf.report.provenance import provenance
from surrinf.sim import calorimeter

ENERGIES = (10.0, 100.0, 1000.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(SURROGATE_KINDS))
    p.add_argument("--n", type=int, default=4096, help="showers per timed sampling call")
    p.add_argument("--train-steps", type=int, default=60, help="training steps timed per model")
    p.add_argument("--out", default="benchmarks/results/bench_generate.json")
    args = p.parse_args(argv)
    cal = calorimeter("default")
    key = jax.random.key(0)
    n = args.n
    cal.simulate(key, np.full(n, 10.0))  # compile
    reference = {f"{e:g}": _rate(lambda e=e: cal.simulate(key, np.full(n, e)), n) for e in ENERGIES}
    print("reference simulator showers/s:", reference, file=sys.stderr)
    energies = np.exp(np.random.default_rng(0).uniform(0.0, np.log(1000.0), 5000)).astype(np.float32)
    showers = np.asarray(cal.simulate(jax.random.key(1), energies).showers)
    results = {}
    for kind in [k.strip() for k in args.models.split(",") if k.strip()]:
        log_every = 10
        tc = dataclasses.replace(
            DEFAULT_TRAIN_CONFIGS[kind],
            max_steps=args.train_steps,
            log_every=log_every,
            eval_every=10 * args.train_steps,
            checkpoint_every=0,
            warmup_steps=0,
        )
        model, res = fit_surrogate(kind, key, showers, energies, ShowerBijection(cal.geometry), train_config=tc)
        walls = [(h["step"], h["wall_time"]) for h in res.history if "train_loss" in h]
        (s0, w0), (s1, w1) = walls[0], walls[-1]
        steps_per_s = (s1 - s0) / (w1 - w0) if s1 > s0 else float("nan")
        sample_batched(model, key, np.full(n, 10.0, np.float32), batch_size=n)  # compile
        rates = {
            f"{e:g}": _rate(lambda e=e, m=model: sample_batched(m, key, np.full(n, e, np.float32), batch_size=n), n)
            for e in ENERGIES
        }
        results[kind] = {
            "batch_size": tc.batch_size,
            "train_steps_per_s": steps_per_s,
            "showers_per_s": rates,
            "ratio_to_reference": {e: rates[e] / reference[e] for e in rates},
        }
        print(kind, json.dumps(results[kind]), file=sys.stderr, flush=True)
    doc = {
        "benchmark": "bench_generate",
        "machine": {"platform": platform.platform(), "devices": str(jax.devices())},
        "provenance": provenance({"command": sys.argv, "n": n, "train_steps": args.train_steps}),
        "reference_showers_per_s": reference,
        "models": results,
    }
    atomic_write_text(args.out, json.dumps(doc, indent=2) + "\n")
    print(json.dumps({k: {"showers_per_s": v["showers_per_s"]} for k, v in results.items()}, indent=1))
    print(Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
