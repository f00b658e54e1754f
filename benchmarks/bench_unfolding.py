"""Toy IBU unfoldings per second: surrinf (jit + vmap over toys) against pyunfold called in a loop, written as JSON.

Problem: RooUnfold's standard example response (40 x 40 bins, built from 100k training events) and Poisson toys
around its 10k-event test spectrum; 4 iterations, flat prior, statistical covariance and the response-matrix
(multinomial) covariance propagated, as pyunfold always does. surrinf unfolds all ``--toys`` toys in one vmapped call
(wall time with and without the first call's compilation); pyunfold (``iterative_unfold`` with ts_stopping below any
reachable value so it runs exactly 4 iterations) unfolds the first ``--peer-toys`` toys in a Python loop, and its
per-toy time gives the ratio. Also the peak memory of a 500 x 500 IBU with full covariance propagation, measured in a
child process (VmHWM).

    python benchmarks/bench_unfolding.py [--toys 10000] [--peer-toys 300]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

from surrinf._atomic import atomic_write_text
from surrinf.report.provenance import provenance
from surrinf.unfolding import CPU_COMPILER_OPTIONS, ibu, poisson_toys, roounfold_example

_MEMORY_CHILD = r"""
import time, numpy as np
from surrinf.unfolding import ResponseMatrix, ibu
n = 500
rng = np.random.default_rng(0)
x = np.arange(n)
smear = np.exp(-0.5 * ((x[:, None] - x[None, :] - 0.5) / 2.0) ** 2)
migr = smear / smear.sum(0) * (0.5 + 0.4 * x / n) * 2000.0
resp = ResponseMatrix(np.round(migr), np.full(n, 2000.0))
data = rng.poisson(resp.fold(np.full(n, 400.0))).astype(float)
t0 = time.perf_counter()
r = ibu(data, resp, iterations=4, propagate_response=True)
r.response_covariance.block_until_ready()
wall = time.perf_counter() - t0
hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(wall, hwm / 1024.0, float(np.isfinite(np.asarray(r.total_covariance)).all()))
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--toys", type=int, default=10_000)
    p.add_argument("--peer-toys", type=int, default=300, help="toys unfolded by pyunfold in the loop")
    p.add_argument("--out", default="benchmarks/results/bench_unfolding.json")
    args = p.parse_args(argv)
    from pyunfold import iterative_unfold

    ex = roounfold_example(jax.random.key(0))
    r = ex.response
    toys = poisson_toys(jax.random.key(1), r.fold(ex.test_truth), args.toys)

    unfold_all = jax.jit(
        jax.vmap(lambda d: ibu(d, r, iterations=4, fakes=np.zeros(r.n_reco))), compiler_options=CPU_COMPILER_OPTIONS
    )

    def ours(batch):
        with jax.enable_x64(True):
            return jax.block_until_ready(unfold_all(batch))

    t0 = time.perf_counter()
    first = ours(toys)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours(toys)
    t_ours = time.perf_counter() - t0

    P, eff = r.probabilities, r.efficiency
    kw = dict(
        response=P,
        response_err=np.sqrt(r.element_variance),
        efficiencies=eff,
        efficiencies_err=eff / np.sqrt(r.n_eff),
        ts_stopping=-1.0,
        max_iter=4,
        cov_type="multinomial",
    )
    n_peer = min(args.peer_toys, args.toys)
    t0 = time.perf_counter()
    peer = [iterative_unfold(data=d, data_err=np.sqrt(d), **kw) for d in toys[:n_peer]]
    t_peer = time.perf_counter() - t0
    agree = max(
        float(np.max(np.abs(np.asarray(first.unfolded[i]) - pu["unfolded"]) / np.abs(pu["unfolded"])))
        for i, pu in enumerate(peer)
    )

    child = subprocess.run([sys.executable, "-c", _MEMORY_CHILD], capture_output=True, text=True, check=True)
    mem_wall, mem_mib, finite = (float(x) for x in child.stdout.split())

    per_ours = t_ours / args.toys
    per_peer = t_peer / n_peer
    result = {
        "problem": "RooUnfold example response 40 x 40, 4 iterations, flat prior, data + response covariance",
        "toys": args.toys,
        "surrinf_s_with_compile": t_first,
        "surrinf_s": t_ours,
        "surrinf_toys_per_s": args.toys / t_ours,
        "pyunfold_toys": n_peer,
        "pyunfold_s": t_peer,
        "pyunfold_toys_per_s": n_peer / t_peer,
        "ratio_per_toy": per_peer / per_ours,
        "ratio_per_toy_incl_compile": per_peer / (t_first / args.toys),
        "max_rel_diff_unfolded_vs_pyunfold": agree,
        "ibu_500x500": {"wall_s_incl_compile": mem_wall, "peak_rss_mib": mem_mib, "finite": bool(finite)},
        "provenance": provenance({"argv": sys.argv}),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "provenance"}, indent=1))
    atomic_write_text(Path(args.out), json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
