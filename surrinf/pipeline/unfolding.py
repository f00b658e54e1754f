"""The unfolding stage of the main job: the bias an unfolded incident-energy spectrum gets from the surrogate.

A compact version of ``studies/unfolding_bias.py``. Truth is the incident energy [GeV] with dN/dE ~ E^-2 on
``[unfolding] energy_range_gev``; reco is the summed voxel energy over the simulate stage's ``visible_fraction``
[GeV]. Two response matrices are built from the SAME truth energies: R_ref from the reference detector and R_sur from
the trained surrogate. Without ``simulate.data`` the Monte Carlo is log-uniform on [0.75 lo, 1.3 hi] weighted by 1/E
(the E^-2 shape inside bins, and the fakes of events generated outside the range) and the reference showers are
simulated here; with ``simulate.data`` the stored showers (train + test files) inside that range are the Monte Carlo,
with unit weights (their file's spectrum is not reweighted to E^-2). Poisson pseudo-data of the reference expectation
(signal + fakes) are unfolded with iterative Bayesian unfolding (IBU) using R_sur and, on the same toys, R_ref (the
closure baseline: IBU's own regularisation bias) by :func:`surrinf.unfolding.bias_study`.

Outputs in the stage directory: ``bias.{md,csv,tex,json}`` (per truth bin), ``summary.*``, ``bias.png``,
``response.png`` and ``responses.json`` (both matrices, :meth:`ResponseMatrix.to_dict`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from statistics import NormalDist
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from surrinf._atomic import atomic_write_text
from surrinf.data import iter_showers
from surrinf.generators import sample_batched
from surrinf.pipeline.config import ConfigError
from surrinf.pipeline.runner import Stage, StageContext, StageOutput
from surrinf.pipeline.shower import calorimeter_for, load_surrogate
from surrinf.report import Measurement, Report, Table, new_figure, save_figure
from surrinf.sim.spectrum import parse_energy_spec
from surrinf.unfolding import ResponseMatrix, bias_study, ibu

__all__ = ["UNFOLDING", "headline_unfolding", "report_unfolding"]

#: Monte Carlo truth range of the response matrices, as factors of the unfolding range [lo, hi].
MC_LO, MC_HI = 0.75, 1.3
#: Showers per simulation / sampling chunk (bounded memory: chunk x voxels float32); 4096 is the simulate stage's
#: chunk, so the compiled simulator is shared when both stages run in one process.
CHUNK = 4096


def power_law_counts(edges: np.ndarray, n_total: float, lo: float, hi: float) -> np.ndarray:
    """Expected events per bin (n_bins,) of dN/dE ~ E^-2 normalised to ``n_total`` events on [lo, hi] [GeV]."""
    cdf = (1.0 / lo - 1.0 / np.asarray(edges, np.float64)) / (1.0 / lo - 1.0 / hi)
    return n_total * np.diff(cdf)


def _chunks(n: int) -> list[tuple[int, int]]:
    return [(a, min(a + CHUNK, n)) for a in range(0, n, CHUNK)]


def _stored_mc(sim: StageOutput, lo: float, hi: float, n_max: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Truth energies (N,) [GeV] and summed voxel energies (N,) [GeV] of the simulate stage's stored showers (train,
    then test) with energy in [lo, hi], at most ``n_max`` of them; also the number of stored showers in range."""
    energies, sums, n_in = [], [], 0
    for which in ("train", "test"):
        for d in iter_showers(sim.path / f"reference_{which}.h5", CHUNK):
            e = d.energies_gev().astype(np.float64)
            sel = (e >= lo) & (e <= hi)
            n_in += int(sel.sum())
            energies.append(e[sel])
            sums.append(np.asarray(d.showers_gev()[sel], np.float64).sum(axis=1))
    return np.concatenate(energies)[:n_max], np.concatenate(sums)[:n_max], n_in


def _unfolding(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.section
    sim, train = ctx.inputs["simulate"], ctx.inputs["train"]
    lo, hi = cfg.energy_range_gev
    mc_lo, mc_hi = MC_LO * lo, MC_HI * hi
    visible = float(sim.summary["visible_fraction"])
    truth_edges = np.geomspace(lo, hi, cfg.truth_bins + 1)
    reco_edges = np.geomspace(lo, hi, cfg.reco_bins + 1)
    k_mc, k_ref, k_sur, k_toys = jax.random.split(ctx.key, 4)
    seconds: dict[str, float] = {}

    # 1. the Monte Carlo truth energies and the reference response
    t0 = time.perf_counter()
    stored = bool(ctx.config.simulate.data)
    if stored:
        e_mc, sum_ref, n_in = _stored_mc(sim, mc_lo, mc_hi, cfg.n_response)
        weights = np.ones_like(e_mc)
        ctx.log(f"unfolding: {e_mc.size} stored reference showers in [{mc_lo:g}, {mc_hi:g}] GeV ({n_in} available)")
    else:
        spec = parse_energy_spec(f"log-uniform:{mc_lo},{mc_hi}")
        e_mc = np.asarray(spec.sample(k_mc, cfg.n_response), np.float64)
        weights = 1.0 / e_mc  # log-uniform (dN/dE ~ 1/E) -> E^-2
        cal = calorimeter_for(ctx.config)
        ctx.log(f"unfolding: simulating {e_mc.size} reference showers in [{mc_lo:g}, {mc_hi:g}] GeV")
        sum_ref = np.empty(e_mc.size)
        with tqdm(total=e_mc.size, desc="reference", unit="shower", disable=not ctx.progress, file=sys.stderr) as bar:
            for i, (a, b) in enumerate(_chunks(e_mc.size)):
                batch = cal.simulate(jax.random.fold_in(k_ref, i), e_mc[a:b].astype(np.float32))
                sum_ref[a:b] = np.asarray(batch.showers, np.float64).sum(axis=1)
                bar.update(b - a)
    if e_mc.size == 0:
        raise ConfigError(
            f"config key 'unfolding.energy_range_gev': no stored reference shower of simulate.data has an energy in "
            f"[{mc_lo:g}, {mc_hi:g}] GeV"
        )
    seconds["reference"] = time.perf_counter() - t0

    # 2. the surrogate response at the same truth energies
    model = load_surrogate(train)
    ctx.log(f"unfolding: sampling {e_mc.size} surrogate showers")
    t0 = time.perf_counter()
    sum_sur = np.empty(e_mc.size)
    with tqdm(total=e_mc.size, desc="surrogate", unit="shower", disable=not ctx.progress, file=sys.stderr) as bar:
        for i, (a, b) in enumerate(_chunks(e_mc.size)):
            showers = sample_batched(model, jax.random.fold_in(k_sur, i), e_mc[a:b].astype(np.float32))
            sum_sur[a:b] = np.asarray(showers, np.float64).sum(axis=1)
            bar.update(b - a)
    seconds["surrogate"] = time.perf_counter() - t0
    reco_ref, reco_sur = sum_ref / visible, sum_sur / visible
    r_ref = ResponseMatrix.from_events(e_mc, reco_ref, truth_edges, reco_edges, weights=weights)
    r_sur = ResponseMatrix.from_events(e_mc, reco_sur, truth_edges, reco_edges, weights=weights)
    empty = np.flatnonzero(r_ref.truth_counts <= 0)
    if empty.size:
        i = int(empty[0])
        raise ConfigError(
            f"config key 'unfolding.energy_range_gev': truth bin [{truth_edges[i]:.4g}, {truth_edges[i + 1]:.4g}] GeV "
            f"holds no Monte Carlo shower ({'of simulate.data' if stored else 'raise unfolding.n_response'})"
        )
    atomic_write_text(
        ctx.work_dir / "responses.json", json.dumps({"reference": r_ref.to_dict(), "surrogate": r_sur.to_dict()})
    )
    _response_figure(e_mc, reco_ref, reco_sur, r_ref, r_sur, ctx.work_dir / "response.png")

    # 3. pseudo-data of the reference (signal + fakes) unfolded with R_sur and R_ref
    truth = power_law_counts(truth_edges, cfg.n_data, lo, hi)
    signal = r_ref.fold(truth)
    ff = r_ref.fake_fraction
    fakes = signal * ff / np.maximum(1.0 - ff, 1e-12)
    ctx.log(f"unfolding: IBU ({cfg.iterations} iterations) of {cfg.toys} Poisson toys with R_sur and R_ref")
    t0 = time.perf_counter()
    kind = train.summary.get("kind", "surrogate")
    st = bias_study(
        k_toys,
        lambda d, r: ibu(d, r, iterations=cfg.iterations),
        r_ref,
        r_sur,
        truth,
        n_toys=cfg.toys,
        fakes_ref=fakes,
        label=f"IBU {cfg.iterations} it., {kind} surrogate",
    )
    seconds["unfold"] = time.perf_counter() - t0
    st.table().save(ctx.work_dir, "bias")
    fig = st.figure(xlabel="incident energy [GeV]")
    for ax in fig.axes:
        ax.set_xscale("log")  # log-spaced bins
    fig.axes[0].set_yscale("log")  # E^-2 spectrum
    save_figure(fig, ctx.work_dir / "bias.png")

    # 4. summary numbers; errors from the spread over toys of per-toy versions of each mean (bins are correlated)
    s, c = st.surrogate, st.closure
    n_toys = st.n_toys
    b_s, b_c = s.bias_over_sigma, c.bias_over_sigma

    def mean_abs(toys, b) -> tuple[float, float]:
        per_toy = np.mean(np.sign(b) * (toys.unfolded - toys.truth) / toys.stat_sigma, axis=1)
        return float(np.mean(np.abs(b))), float(np.std(per_toy, ddof=1) / np.sqrt(n_toys))

    def max_abs(toys, b) -> tuple[float, float, int]:
        i = int(np.nanargmax(np.abs(b)))
        return float(abs(b[i])), float(toys.bias_error[i] / toys.stat_sigma[i]), i

    def coverage(toys) -> tuple[float, float]:
        z = abs(toys.unfolded - toys.truth) < _z(toys.level) * toys.sigma
        per_toy = z.mean(axis=1)
        return float(per_toy.mean()), float(np.std(per_toy, ddof=1) / np.sqrt(n_toys))

    diff = s.unfolded - c.unfolded
    syst = st.systematic() / s.stat_sigma
    syst_toy = np.mean(np.sign(st.surrogate_bias) * diff / s.stat_sigma, axis=1)
    i_max = max_abs(s, b_s)[2]
    summary = {
        "source": "stored" if stored else "simulated",
        "weights": "1" if stored else "1/E",
        "surrogate": kind,
        "energy_range_gev": [lo, hi],
        "mc_range_gev": [mc_lo, mc_hi],
        "truth_bins": cfg.truth_bins,
        "reco_bins": cfg.reco_bins,
        "n_response": int(e_mc.size),
        "n_data": float(cfg.n_data),
        "iterations": cfg.iterations,
        "toys": n_toys,
        "visible_fraction": visible,
        "seconds": seconds,
        "surrogate_showers_per_s": e_mc.size / max(seconds["surrogate"], 1e-9),
        "mean_abs_bias_over_sigma": mean_abs(s, b_s)[:2],
        "max_abs_bias_over_sigma": max_abs(s, b_s)[:2],
        "max_bin_gev": [float(truth_edges[i_max]), float(truth_edges[i_max + 1])],
        "closure_mean_abs_bias_over_sigma": mean_abs(c, b_c)[:2],
        "closure_max_abs_bias_over_sigma": max_abs(c, b_c)[:2],
        "coverage": coverage(s),
        "closure_coverage": coverage(c),
        "coverage_level": st.level,
        "mean_systematic_over_sigma": [float(np.mean(syst)), float(np.std(syst_toy, ddof=1) / np.sqrt(n_toys))],
        "per_bin": {
            "truth_edges_gev": truth_edges.tolist(),
            "truth": truth.tolist(),
            "bias_over_sigma": b_s.tolist(),
            "closure_bias_over_sigma": b_c.tolist(),
            "coverage": s.coverage.tolist(),
            "closure_coverage": c.coverage.tolist(),
            "systematic_over_sigma": syst.tolist(),
            "efficiency_reference": r_ref.efficiency.tolist(),
            "efficiency_surrogate": r_sur.efficiency.tolist(),
        },
    }
    _summary_table(summary).save(ctx.work_dir, "summary")
    return summary


def _z(level: float) -> float:
    """Half-width of the central ``level`` interval of a standard normal (0.68 -> 0.994)."""
    return NormalDist().inv_cdf(0.5 + 0.5 * level)


def _summary_table(s: dict[str, Any]) -> Table:
    """Closure (R_ref) vs surrogate (R_sur) means over truth bins."""

    def m(key: str) -> Measurement:
        return Measurement(*s[key])

    rows = [
        ["mean |bias| / sigma", m("closure_mean_abs_bias_over_sigma"), m("mean_abs_bias_over_sigma")],
        ["max |bias| / sigma", m("closure_max_abs_bias_over_sigma"), m("max_abs_bias_over_sigma")],
        [f"coverage {s['coverage_level']:.0%} (mean over bins)", m("closure_coverage"), m("coverage")],
        ["mean systematic / sigma", "", m("mean_systematic_over_sigma")],
    ]
    lo, hi = s["energy_range_gev"]
    return Table(
        f"IBU ({s['iterations']} iterations) of E^-2 pseudo-data on [{lo:g}, {hi:g}] GeV: closure vs surrogate "
        "response",
        ["quantity", "closure (R_ref)", "surrogate (R_sur)"],
        rows,
        caption=(
            f"{s['toys']} Poisson toys of {s['n_data']:.0f} expected events, {s['truth_bins']} truth x "
            f"{s['reco_bins']} reco bins; responses from {s['n_response']} showers. Errors: spread over toys of the "
            "per-toy mean over bins (max: the toy standard error of the worst bin)."
        ),
        notes=["systematic = |bias with R_sur - bias with R_ref| on the same toys; sigma = mean reported IBU sigma."],
    )


def _response_figure(
    e: np.ndarray, reco_ref: np.ndarray, reco_sur: np.ndarray, r_ref: ResponseMatrix, r_sur: ResponseMatrix, path: Path
) -> None:
    """2 x 2 panels: P(reco | truth) of R_ref and R_sur (same colour scale); efficiency and mean +- sd of
    E_reco / E_true per truth bin (unweighted showers)."""
    fig, axes = new_figure(nrows=2, ncols=2, figsize=(12, 10))
    p_ref, p_sur = r_ref.probabilities, r_sur.probabilities
    vmax = max(float(p_ref.max()), float(p_sur.max()), 1e-12)
    for ax, p, name in ((axes[0, 0], p_ref, "reference"), (axes[0, 1], p_sur, "surrogate")):
        mesh = ax.pcolormesh(r_ref.truth_edges, r_ref.reco_edges, p, vmin=0.0, vmax=vmax, cmap="viridis")
        ax.set(xscale="log", yscale="log", xlabel="true energy [GeV]", ylabel="reco energy [GeV]")
        ax.set_title(f"P(reco | truth), {name}")
    fig.colorbar(mesh, ax=axes[0, :].tolist(), label="probability")
    edges = r_ref.truth_edges
    centres = np.sqrt(edges[1:] * edges[:-1])
    idx = np.searchsorted(edges, e, side="right") - 1
    for k, (name, r, reco) in enumerate((("reference", r_ref, reco_ref), ("surrogate", r_sur, reco_sur))):
        axes[1, 0].plot(centres, r.efficiency, "o-", label=name)
        ratio = reco / e
        mean = np.array([np.mean(ratio[idx == i]) if np.any(idx == i) else np.nan for i in range(centres.size)])
        sd = np.array([np.std(ratio[idx == i]) if np.any(idx == i) else np.nan for i in range(centres.size)])
        x = centres * (1.0 + 0.02 * (2 * k - 1))
        axes[1, 1].errorbar(x, mean, yerr=sd, fmt="o", ms=4, capsize=2, label=f"{name} (mean +- sd)")
    axes[1, 0].set(xscale="log", xlabel="true energy [GeV]", ylabel="efficiency (reco in range)")
    axes[1, 1].set(xscale="log", xlabel="true energy [GeV]", ylabel="E_reco / E_true")
    for ax in (axes[1, 0], axes[1, 1]):
        ax.legend(fontsize="small")
    save_figure(fig, path)


UNFOLDING = Stage(
    "unfolding",
    "unfolding bias from the surrogate response",
    _unfolding,
    needs=("simulate", "train"),
    table="unfolding",
    enabled=lambda cfg: cfg.unfolding.enabled,
)


# -------------------------------------------------------------------------------------------------------- report
def report_unfolding(report: Report, outputs: dict[str, StageOutput | None], run_dir: Path) -> None:
    """The unfolding section of the run report (nothing when the stage is disabled)."""
    out = outputs.get("unfolding")
    if out is None:
        return
    s = out.summary
    lo, hi = s["energy_range_gev"]
    mlo, mhi = s["mc_range_gev"]
    if s["source"] == "simulated":
        mc = (
            f"{s['n_response']} Monte Carlo energies log-uniform on [{mlo:.4g}, {mhi:.4g}] GeV weighted by 1/E (the "
            "E^-2 shape inside bins, and fakes from outside the range), simulated with the reference calorimeter"
        )
    else:
        mc = (
            f"the {s['n_response']} stored reference showers (train + test files of simulate.data) with energies in "
            f"[{mlo:.4g}, {mhi:.4g}] GeV, unit weights (their file's energy spectrum is NOT reweighted to E^-2)"
        )
    report.section("Unfolding bias")
    report.paragraph(
        f"Truth: incident energy with dN/dE ~ E^-2 on [{lo:g}, {hi:g}] GeV ({s['truth_bins']} log bins, "
        f"{s['n_data']:.0f} expected events); reco: summed voxel energy / {s['visible_fraction']:.4g} (visible "
        f"fraction) [GeV] ({s['reco_bins']} log bins). Both response matrices use the same truth energies: {mc}, "
        f"and the `{s['surrogate']}` surrogate at the same energies ({s['surrogate_showers_per_s']:.0f} showers/s). "
        f"{s['toys']} Poisson pseudo-data sets of the reference expectation (signal + fakes) are unfolded by IBU "
        f"({s['iterations']} iterations) with the surrogate response R_sur and, on the same toys, with the reference "
        "response R_ref (closure: IBU's own regularisation bias). sigma is the mean reported IBU sigma (data and "
        "response-matrix statistics)."
    )
    report.table(Table.load(out.path / "summary.json"), "unfolding_summary")
    report.image(
        out.path / "response.png",
        "unfolding_response",
        "Response matrices P(reco | truth) of the reference and the surrogate; efficiency and E_reco / E_true per "
        "truth bin.",
    )
    report.table(Table.load(out.path / "bias.json"), "unfolding_bias")
    report.image(
        out.path / "bias.png",
        "unfolding_bias",
        "Unfolded spectrum (top) and bias / stat sigma per truth bin (bottom), with R_ref (closure) and R_sur.",
    )


def headline_unfolding(outputs: dict[str, StageOutput | None]) -> list[list[Any]]:
    """Headline rows: IBU mean and max |bias| / sigma (closure vs surrogate response) and the 68 % coverage."""
    out = outputs.get("unfolding")
    if out is None:
        return []
    s = out.summary
    note = f"{s['toys']} toys, {s['iterations']} it.; reference = closure with R_ref"
    a, b = s["max_bin_gev"]
    cov = Measurement(*s["closure_coverage"])
    return [
        [
            "unfolding",
            "IBU mean |bias| / sigma",
            Measurement(*s["closure_mean_abs_bias_over_sigma"]),
            Measurement(*s["mean_abs_bias_over_sigma"]),
            note,
        ],
        [
            "unfolding",
            "IBU max |bias| / sigma",
            Measurement(*s["closure_max_abs_bias_over_sigma"]),
            Measurement(*s["max_abs_bias_over_sigma"]),
            f"surrogate's worst bin [{a:.3g}, {b:.3g}] GeV",
        ],
        [
            "unfolding",
            f"IBU {s['coverage_level']:.0%} coverage",
            f"{s['coverage_level']:.2f}",
            Measurement(*s["coverage"]),
            f"mean over bins; closure {cov}",
        ],
    ]
