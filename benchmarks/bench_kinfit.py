"""Dijet kinematic fits per second: surrinf (jit + vmap, optimistix Gauss-Newton) against iminuit in a Python loop.

Problem: Z -> q qbar resonance events from the embedded parametric generator (massless jets), measured with the
default reference jet response (resolution sigma(E) from surrinf.kinfit.default_jet_response), Gaussian mass prior
(m0 = 91.1876 GeV, sigma = 2.5 GeV). surrinf fits all ``--events`` events (wall time with and without compilation);
iminuit (MIGRAD, the same chi2 written in plain Python, tol 1e-8, strategy 2, started at the measured energies) fits
the first ``--peer-events`` of them one by one, and its per-event time gives the ratio. The fitted energies of the
subset are compared. Both run on this machine's CPU cores in the same process, one after the other.

    python benchmarks/bench_kinfit.py [--events 1000000] [--peer-events 2000]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import jax
import numpy as np

from surrinf._atomic import atomic_write_text
from surrinf.kinfit import GaussianMass, default_jet_response, generate_parametric, kinfit, measure_jets, opening_cosine
from surrinf.report.provenance import provenance

M0, SIGMA_M = 91.1876, 2.5


def _chi2(em1, em2, s1, s2, c):
    def chi2(e1, e2):
        mjj = math.sqrt(max(2.0 * e1 * e2 * (1.0 - c), 1e-300))
        return ((e1 - em1) / s1) ** 2 + ((e2 - em2) / s2) ** 2 + ((mjj - M0) / SIGMA_M) ** 2

    return chi2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--peer-events", type=int, default=2000, help="events fitted by iminuit in the loop")
    p.add_argument("--out", default="benchmarks/results/bench_kinfit.json")
    args = p.parse_args(argv)
    from iminuit import Minuit

    events = generate_parametric(jax.random.key(0), args.events, process="resonance")
    response = default_jet_response()
    e_meas = measure_jets(jax.random.key(1), events.e, events.eta, response, calibration=response)
    cos = opening_cosine(events.eta, events.phi)
    sigma = np.asarray(response.sigma_gev(e_meas), dtype=np.float64)
    prior = GaussianMass(M0, SIGMA_M)

    t0 = time.perf_counter()
    fit = kinfit(e_meas, sigma, cos, prior)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit = kinfit(e_meas, sigma, cos, prior)
    t_ours = time.perf_counter() - t0

    n_peer = min(args.peer_events, args.events)
    ref = np.empty((n_peer, 2))
    t0 = time.perf_counter()
    for i in range(n_peer):
        (em1, em2), (s1, s2) = e_meas[i], sigma[i]
        mi = Minuit(_chi2(em1, em2, s1, s2, cos[i]), e1=em1, e2=em2)
        mi.errordef = Minuit.LEAST_SQUARES
        mi.strategy = 2
        mi.tol = 1e-8
        mi.migrad()
        ref[i] = mi.values["e1"], mi.values["e2"]
    t_peer = time.perf_counter() - t0
    agree = float(np.max(np.abs(fit.energies[:n_peer] - ref) / ref))

    per_ours, per_peer = t_ours / args.events, t_peer / n_peer
    result = {
        "problem": "Z -> qq parametric events, massless jets, default reference jet response, Gaussian mass prior",
        "events": args.events,
        "surrinf_s_with_compile": t_first,
        "surrinf_s": t_ours,
        "surrinf_events_per_s": args.events / t_ours,
        "surrinf_converged_fraction": float(fit.converged.mean()),
        "iminuit_events": n_peer,
        "iminuit_s": t_peer,
        "iminuit_events_per_s": n_peer / t_peer,
        "ratio_per_event": per_peer / per_ours,
        "ratio_per_event_incl_compile": per_peer / (t_first / args.events),
        "max_rel_diff_energies_vs_iminuit": agree,
        "devices": [str(d) for d in jax.devices()],
        "provenance": provenance({"argv": sys.argv}),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "provenance"}, indent=1))
    atomic_write_text(Path(args.out), json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
