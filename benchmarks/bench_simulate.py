"""Throughput of the GFLASH reference simulator (showers per second), written as JSON.

For the default and DS2 geometries at 10, 100 and 1000 GeV it measures the batched simulator (vmapped,
chunked, compiled once) against a baseline measured in the same run: the same simulator called one
shower at a time. Compilation time is reported separately. Optionally it streams N/10 and N showers of
the default geometry into HDF5 files, each in a fresh process, and reports their peak resident memory:
bounded memory shows as equal peaks far below the data size.

    python benchmarks/bench_simulate.py [--out benchmarks/results/bench_simulate.json] [--stream 100000]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from surrinf._atomic import atomic_write_text
from surrinf.report.provenance import provenance
from surrinf.sim import calorimeter, simulate_to_file

SETTINGS = {"default": {"n": 4096, "n_baseline": 64}, "ds2": {"n": 1024, "n_baseline": 16}}
ENERGIES = (10.0, 100.0, 1000.0)


def _rate(fn, n: int, repeats: int = 3) -> float:
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def bench_geometry(name: str, n: int, n_baseline: int) -> dict:
    cal = calorimeter(name)
    key = jax.random.key(0)
    out = {"n_voxels": cal.geometry.n_voxels, "chunk_size": min(n, cal.auto_chunk_size()), "energies": {}}
    t0 = time.perf_counter()
    cal.simulate(key, np.full(n, 10.0), chunk_size=min(n, cal.auto_chunk_size()))
    cal.simulate(key, np.full(1, 10.0), chunk_size=1)
    out["compile_and_first_call_s"] = time.perf_counter() - t0
    for e in ENERGIES:
        batched = _rate(lambda e=e: cal.simulate(key, np.full(n, e), chunk_size=min(n, cal.auto_chunk_size())), n)
        single = _rate(lambda e=e: cal.simulate(key, np.full(n_baseline, e), chunk_size=1), n_baseline, repeats=1)
        out["energies"][f"{e:g}"] = {
            "showers_per_s": batched,
            "baseline_one_at_a_time_showers_per_s": single,
            "speedup_vs_baseline": batched / single,
        }
        print(
            f"{name:8s} {e:7.0f} GeV  {batched:10.1f} showers/s"
            f"  (one at a time: {single:8.1f}/s, x{batched / single:.1f})"
        )
    return out


def bench_poisson() -> dict:
    """The spot-count sampler against jax.random.poisson on DS2-sized rate arrays (512 showers x 7200
    cells, rates exponential with mean 3 as in the shower cores, plus 5 % of cells at 10-1000)."""
    import jax.numpy as jnp

    from surrinf.sim.poisson import poisson

    rng = np.random.default_rng(0)
    lam = rng.exponential(3.0, (512, 7200))
    big = rng.random(lam.shape) < 0.05
    lam[big] = np.exp(rng.uniform(np.log(10.0), np.log(1000.0), big.sum()))
    lam = jnp.asarray(lam, dtype=jnp.float32)
    key = jax.random.key(0)
    ours = jax.jit(poisson)
    peer = jax.jit(lambda k, x: jax.random.poisson(k, x))
    ours(key, lam).block_until_ready()
    peer(key, lam).block_until_ready()
    t_ours = 1.0 / _rate(lambda: ours(key, lam).block_until_ready(), 1)
    t_peer = 1.0 / _rate(lambda: peer(key, lam).block_until_ready(), 1)
    print(f"poisson  surrinf {t_ours:.3f} s, jax.random.poisson {t_peer:.3f} s, x{t_peer / t_ours:.1f}")
    return {"cells": int(lam.size), "surrinf_s": t_ours, "jax_random_poisson_s": t_peer, "speedup": t_peer / t_ours}


def _stream_child(n: int) -> dict:
    """Runs in a fresh process: stream n default showers to HDF5, report time and peak RSS."""
    cal = calorimeter("default")
    energies = np.exp(np.random.default_rng(0).uniform(0.0, np.log(1000.0), n)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = simulate_to_file(cal, jax.random.key(1), energies, Path(tmp) / "stream.h5", progress=False)
        dt = time.perf_counter() - t0
        size = path.stat().st_size / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB on Linux
    raw = n * cal.geometry.n_voxels * 4 / 2**20
    return {"n": n, "seconds": dt, "showers_per_s": n / dt, "raw_data_mib": raw, "file_mib": size, "peak_rss_mib": rss}


def bench_stream(n: int) -> dict:
    """Stream n/10 and n default showers (log-uniform 1-1000 GeV), each in its own process: bounded
    memory means the same peak RSS for both, far below the raw data size."""
    out = {}
    for size in (max(n // 10, 1), n):
        proc = subprocess.run(
            [sys.executable, __file__, "--stream-child", str(size)], capture_output=True, text=True, check=True
        )
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        out[str(size)] = r
        print(
            f"stream   {size} showers in {r['seconds']:.1f} s ({r['showers_per_s']:.0f}/s); raw data "
            f"{r['raw_data_mib']:.0f} MiB, file {r['file_mib']:.0f} MiB, peak RSS {r['peak_rss_mib']:.0f} MiB"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/bench_simulate.json")
    p.add_argument("--stream", type=int, default=0, help="also stream N default showers to a file (e.g. 1000000)")
    p.add_argument("--stream-child", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.stream_child:
        print(json.dumps(_stream_child(args.stream_child)))
        return 0
    result = {
        "benchmark": "bench_simulate",
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "devices": str(jax.devices())},
        "provenance": provenance(include_jax=False),
        "geometries": {name: bench_geometry(name, **s) for name, s in SETTINGS.items()},
        "poisson": bench_poisson(),
    }
    if args.stream:
        result["stream"] = bench_stream(args.stream)
    out = atomic_write_text(args.out, json.dumps(result, indent=2, default=str))
    print(f"written {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
