"""Cost of the validation module, written as JSON.

1. Classifier two-sample test on 100k x 100-feature samples per class (two Gaussians with a small mean
   shift), against a peer measured in the same run: logistic regression fitted with scipy's L-BFGS on the
   same training split (time and test AUC).
2. The full ``validate()`` report (all observables, classifiers, distances, CE, plots) on default-geometry
   samples, against the time the simulator needs to produce the two samples (same run).

    python benchmarks/bench_validate.py [--n-classifier 100000] [--n-showers 20000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import jax
import numpy as np
from scipy.optimize import minimize

from surrinf._atomic import atomic_write_text
from surrinf.report.provenance import provenance
from surrinf.sim import calorimeter
from surrinf.sim.spectrum import parse_energy_spec
from surrinf.validation import auc, classifier_test
from surrinf.validation.validate import Showers, validate


def _logistic_peer(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray) -> tuple[float, float]:
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-12
    a, b = (x_tr - mu) / sd, (x_te - mu) / sd

    def loss(w):
        z = a @ w[1:] + w[0]
        p = 1.0 / (1.0 + np.exp(-z))
        val = np.mean(np.logaddexp(0.0, z) - y_tr * z)
        grad = np.concatenate([[np.mean(p - y_tr)], a.T @ (p - y_tr) / y_tr.size])
        return val, grad

    t0 = time.perf_counter()
    w = minimize(loss, np.zeros(a.shape[1] + 1), jac=True, method="L-BFGS-B").x
    dt = time.perf_counter() - t0
    return dt, auc(b @ w[1:] + w[0], y_te)


def bench_classifier(n: int, f: int = 100) -> dict:
    rng = np.random.default_rng(0)
    x_ref = rng.normal(size=(n, f))
    x_cand = rng.normal(size=(n, f))
    x_cand[:, :5] += 0.05  # a small shift in a few features
    classifier_test(jax.random.key(0), x_ref[:2000], x_cand[:2000])  # compile outside the timing
    t0 = time.perf_counter()
    res = classifier_test(jax.random.key(1), x_ref, x_cand)
    dt = time.perf_counter() - t0
    sp = res.classifier.splits
    x_tr = np.concatenate([x_ref[sp.train_ref], x_cand[sp.train_cand]])
    y_tr = np.concatenate([np.ones(sp.train_ref.size), np.zeros(sp.train_cand.size)])
    x_te = np.concatenate([x_ref[sp.test_ref], x_cand[sp.test_cand]])
    y_te = np.concatenate([np.ones(sp.test_ref.size), np.zeros(sp.test_cand.size)])
    dt_peer, auc_peer = _logistic_peer(x_tr, y_tr, x_te, y_te)
    print(
        f"classifier {n} x {f} per class: {dt:.1f} s ({res.epochs} epochs), AUC {res.auc:.4f}; "
        f"logistic peer {dt_peer:.1f} s, AUC {auc_peer:.4f}"
    )
    return {
        "n_per_class": n,
        "features": f,
        "seconds": dt,
        "epochs": res.epochs,
        "auc": res.auc,
        "peer_logistic_seconds": dt_peer,
        "peer_logistic_auc": auc_peer,
        "time_ratio_vs_peer": dt / dt_peer,
    }


def bench_report(n: int) -> dict:
    cal = calorimeter("default")
    spec = parse_energy_spec("log-uniform:1,1000")
    cal.simulate(jax.random.key(0), np.full(16, 10.0))  # compile outside the timing
    t0 = time.perf_counter()
    samples = []
    for i in (1, 2):
        k_e, k_s = jax.random.split(jax.random.key(i))
        e = spec.sample(k_e, n)
        samples.append(Showers(e.astype(np.float64), cal.simulate(k_s, e).showers))
    t_sim = time.perf_counter() - t0
    t0 = time.perf_counter()
    rep = validate(samples[0], samples[1], cal.geometry, seed=0, x0_mm=cal.x0_mm)
    t_val = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rep.save(tmp)
        t_save = time.perf_counter() - t0
    print(
        f"report {n} vs {n} default showers: validate {t_val:.1f} s + save {t_save:.1f} s; "
        f"simulating both {t_sim:.1f} s"
    )
    return {
        "n_per_sample": n,
        "n_observables": len(rep.one_d),
        "validate_seconds": t_val,
        "save_seconds": t_save,
        "simulate_both_seconds": t_sim,
        "time_ratio_vs_simulation": (t_val + t_save) / t_sim,
        "auc_high": rep.classifier_high.auc,
        "auc_low": rep.classifier_low.auc,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-classifier", type=int, default=100_000)
    p.add_argument("--n-showers", type=int, default=20_000)
    p.add_argument("--out", default="benchmarks/results/bench_validate.json")
    args = p.parse_args(argv)
    result = {
        "benchmark": "bench_validate",
        "provenance": provenance(include_jax=True),
        "classifier": bench_classifier(args.n_classifier),
        "report": bench_report(args.n_showers),
    }
    atomic_write_text(args.out, json.dumps(result, indent=2, default=str))
    print(f"written {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
