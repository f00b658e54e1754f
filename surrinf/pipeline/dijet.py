"""The dijet stages of the main job: the shower surrogate's imperfection propagated into a dijet analysis.

``jets`` fits the jet-energy response (mean response mu(E) = s0 + s1 ln(E / 100 GeV), relative resolution
a / sqrt(E) (+) b (+) c / E; :meth:`surrinf.kinfit.JetResponse.from_showers`) twice: to reference showers (simulated
at ``jets.calibration_energies_gev``, or the stored showers of ``simulate.data`` grouped in log energy bins) and to
surrogate showers at the same energies. Jets are treated as showering in the reference calorimeter (the library's
jet model), so the two responses differ only by the surrogate's imperfection. ``kinfit`` measures Z -> q qbar jets
with both responses (common random numbers, the reference calibration for both) and compares m_jj before and after
the kinematic fit; ``sensitivity`` builds reference and surrogate m_jj templates of the Z peak over QCD dijets and
compares the expected discovery significance, with and without the surrogate-fidelity systematic.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jax
import numpy as np

from surrinf.kinfit.response import E_REF_GEV
from surrinf.pipeline.config import ConfigError
from surrinf.pipeline.runner import Stage, StageContext, StageOutput
from surrinf.pipeline.shower import calorimeter_for, load_surrogate, reference_showers
from surrinf.report import Measurement, Report, Table, new_figure, save_figure
from surrinf.sim.spectrum import parse_energy_spec

__all__ = ["JETS", "KINFIT", "SENSITIVITY", "headline_dijet", "report_dijet"]

M0_GEV = 91.1876  #: Z pole mass [GeV] (PDG), the mass of the fit's constraints
E_HEADLINE_GEV = 100.0  #: energy [GeV] of the headline response numbers
MIN_PER_BIN = 200  #: stored showers per energy bin of the reference fit with ``simulate.data``
BIAS_JETS = 20_000  #: most jets per (E, eta) point of the measured jet-energy bias of the surrogate response
_UNITS = {"s0": "1", "s1": "1", "a": "GeV^1/2", "b": "1", "c": "GeV"}


def _response(summary: dict[str, Any], which: str) -> Any:
    """The jets stage's "reference" or "surrogate" :class:`~surrinf.kinfit.JetResponse`."""
    from surrinf.kinfit import JetResponse

    return JetResponse.from_dict(summary[which]["parameters"])


# --------------------------------------------------------------------------------------------------------- jets
def _visible(showers_gev: np.ndarray, energies_gev: np.ndarray) -> np.ndarray:
    """Visible energy (N,) [GeV, float64] of showers (N, V) [GeV] as the surrogate models them: non-negative and
    zero-suppressed (:func:`surrinf.generators.base.zero_suppress`), like the validation stage's reference."""
    from surrinf.generators.base import zero_suppress

    s = zero_suppress(np.maximum(np.asarray(showers_gev, np.float64), 0.0), np.asarray(energies_gev, np.float64))
    return s.sum(axis=1)


def _energy_bins(e: np.ndarray, n_bins: int) -> np.ndarray:
    """Group index (N,) of showers with a continuous energy spectrum e (N,) [GeV]: ``n_bins`` log-spaced bins, each
    merged with the next (the last with the one before) until it holds >= MIN_PER_BIN showers."""
    edges = np.geomspace(e.min(), e.max() * (1 + 1e-12), n_bins + 1)
    counts = np.histogram(e, edges)[0]
    keep, acc = [edges[0]], 0
    for k, c in enumerate(counts):
        acc += c
        if acc >= MIN_PER_BIN:
            keep.append(edges[k + 1])
            acc = 0
    if acc and len(keep) > 1:
        keep[-1] = edges[-1]  # a short last bin joins the one before
    elif acc:
        keep.append(edges[-1])
    return np.clip(np.searchsorted(np.asarray(keep), e, side="right") - 1, 0, len(keep) - 2)


def _jets(ctx: StageContext) -> dict[str, Any]:
    from surrinf.generators import sample_batched
    from surrinf.kinfit import JetResponse

    cfg = ctx.section
    sim = ctx.inputs["simulate"]
    scale = float(sim.summary["visible_fraction"])
    k_ref, k_sur = jax.random.split(ctx.key)
    data = ctx.config.simulate.data
    if data:
        # the stored showers (train + test) up to K x max(n_per_energy, MIN_PER_BIN), in log energy bins of
        # >= MIN_PER_BIN showers
        n_max = len(cfg.calibration_energies_gev) * max(cfg.n_per_energy, MIN_PER_BIN)
        parts = [reference_showers(sim, "train", stop=n_max)]
        n_train = parts[0].showers_mev.shape[0]
        if n_train < n_max:
            parts.append(reference_showers(sim, "test", stop=n_max - n_train))
        e_true = np.concatenate([p.energies_gev() for p in parts]).astype(np.float64)
        vis_ref = np.concatenate([_visible(p.showers_gev(), p.energies_gev()) for p in parts])
        order = np.argsort(e_true, kind="stable")  # bins (the fit's groups) in increasing energy
        e_true, vis_ref = e_true[order], vis_ref[order]
        group = _energy_bins(e_true, len(cfg.calibration_energies_gev))
        n_groups = int(group.max()) + 1
        if n_groups < 4:
            raise ConfigError(
                f"config key 'simulate.data': the jet-response fit needs >= 4 energy bins of >= {MIN_PER_BIN} stored "
                f"showers; {e_true.size} showers give {n_groups}"
            )
        e_bin = np.array([e_true[group == k].mean() for k in range(n_groups)])[group]
        source = f"{e_true.size} stored showers of {data} in {n_groups} log energy bins (>= {MIN_PER_BIN} each)"
        ctx.log(f"jets: reference response from {source}")
    else:
        e_true = np.repeat(np.asarray(cfg.calibration_energies_gev, np.float64), cfg.n_per_energy)
        e_bin = e_true
        cal = calorimeter_for(ctx.config)
        ctx.log(f"jets: simulating {e_true.size} reference showers")
        vis_ref, start = [], 0
        for batch in cal.iter_simulate(k_ref, e_true):  # chunked: bounded memory
            stop = start + batch.showers.shape[0]
            vis_ref.append(_visible(batch.showers, e_true[start:stop]))
            start = stop
        vis_ref = np.concatenate(vis_ref)
        source = f"{cfg.n_per_energy} simulated showers at each of {len(cfg.calibration_energies_gev)} energies"
        if not ctx.config.train.model:  # energies outside the surrogate's training spectrum: extrapolated
            spec = parse_energy_spec(ctx.config.simulate.energy_spectrum)
            lo, hi = (min(spec.values), max(spec.values)) if spec.kind in ("fixed", "discrete") else spec.values[:2]
            outside = [e for e in cfg.calibration_energies_gev if not lo <= e <= hi]
            if outside:
                source += f" ({', '.join(f'{e:g}' for e in outside)} GeV outside the surrogate's training spectrum)"
    ctx.log(f"jets: sampling {e_true.size} surrogate showers")
    model = load_surrogate(ctx.inputs["train"])
    vis_sur = _visible(sample_batched(model, k_sur, e_true.astype(np.float32)), e_true)
    # binned energies (simulate.data): each shower's response r = vis / (E_true scale) counts at its bin's mean energy
    # E_bin; from_showers computes vis' / (E_bin scale), so vis' = vis E_bin / E_true (a factor 1 when not binned)
    fits = {}
    for name, vis, title in (
        ("reference", vis_ref, "Jet response fitted to the reference showers"),
        ("surrogate", vis_sur, "Jet response fitted to the surrogate showers"),
    ):
        ctx.log(f"jets: fitting the {name} response")
        fits[name] = JetResponse.from_showers(e_bin, vis * (e_bin / e_true), scale, title=title)
    work = ctx.work_dir
    summary: dict[str, Any] = {"source": source, "n_showers": int(e_true.size), "visible_fraction": scale}
    for name, (resp, rep) in fits.items():
        rep.table.save(work, f"jets_points_{name}")
        doc = {
            "parameters": resp.to_dict(),
            "errors": {k: m.error for k, m in rep.parameters.items()},
            "covariance_mean": rep.covariance_mean.tolist(),
            "covariance_resolution": rep.covariance_resolution.tolist(),
            "chi2_mean": [rep.chi2_mean, rep.ndf_mean],
            "chi2_resolution": [rep.chi2_resolution, rep.ndf_resolution],
            "energies_gev": rep.energies_gev.tolist(),
            "mean_response": [rep.mean_response.tolist(), rep.mean_response_err.tolist()],
            "resolution": [rep.resolution.tolist(), rep.resolution_err.tolist()],
            "n_per_energy": rep.n_per_energy,
        }
        (work / f"{name}.json").write_text(json.dumps(doc, indent=1))
        summary[name] = doc
        summary[name]["at_100_gev"] = _at_energy(resp, rep, E_HEADLINE_GEV)
    _parameter_table(summary).save(work, "jets_parameters")
    _response_figure(summary, work / "jets_response.png")
    return summary


def _at_energy(resp: Any, rep: Any, e: float) -> dict[str, list[float]]:
    """Mean response mu(e) and relative resolution sigma(e)/e with their fit errors (covariance propagation)."""
    g_mu = np.array([1.0, math.log(e / E_REF_GEV)])
    mu_err = float(np.sqrt(g_mu @ rep.covariance_mean @ g_mu))
    sig = float(resp.relative_resolution(e))
    g_sig = np.array([resp.a / e, resp.b, resp.c / e**2]) / sig
    sig_err = float(np.sqrt(max(g_sig @ rep.covariance_resolution @ g_sig, 0.0)))
    return {"scale": [float(resp.mean_response(e)), mu_err], "resolution": [sig, sig_err]}


def _parameter_table(summary: dict[str, Any]) -> Table:
    ref, sur = summary["reference"], summary["surrogate"]
    t = Table(
        "Jet-energy response: reference vs surrogate showers",
        ["parameter", "unit", "reference", "surrogate", "(sur - ref) / error"],
        notes=[
            f"mu(E) = s0 + s1 ln(E / 100 GeV); sigma(E)/E = a / sqrt(E) (+) b (+) c / E; response r = E_visible / "
            f"(E x {summary['visible_fraction']:.5g}) per shower; {summary['source']}",
            f"chi2/ndf, mean: reference {ref['chi2_mean'][0]:.1f}/{ref['chi2_mean'][1]}, surrogate "
            f"{sur['chi2_mean'][0]:.1f}/{sur['chi2_mean'][1]}; resolution: reference "
            f"{ref['chi2_resolution'][0]:.1f}/{ref['chi2_resolution'][1]}, surrogate "
            f"{sur['chi2_resolution'][0]:.1f}/{sur['chi2_resolution'][1]}",
            "error: the two fit errors in quadrature (independent shower samples); '-': a term at its bound",
        ],
    )

    def cell(v: list[float]) -> Any:
        # a resolution term fitted to its bound 0 has no meaningful (linearised) error
        return "0 (at bound)" if abs(v[0]) < 1e-9 else Measurement(*v)

    def row(label: str, unit: str, a: list[float], b: list[float]) -> None:
        cells = [cell(a), cell(b)]
        err = math.hypot(a[1], b[1])
        ok = err > 0 and all(isinstance(c, Measurement) for c in cells)
        t.add_row([label, unit, *cells, (b[0] - a[0]) / err if ok else "-"])

    for name, unit in _UNITS.items():
        row(name, unit, [ref["parameters"][name], ref["errors"][name]], [sur["parameters"][name], sur["errors"][name]])
    row("mean response at 100 GeV", "1", ref["at_100_gev"]["scale"], sur["at_100_gev"]["scale"])
    row("sigma/E at 100 GeV", "1", ref["at_100_gev"]["resolution"], sur["at_100_gev"]["resolution"])
    return t


def _response_figure(summary: dict[str, Any], path: Path) -> None:
    from surrinf.kinfit import JetResponse

    fig, axes = new_figure(1, figsize=(13, 5), ncols=2)
    for name, colour in (("reference", "C0"), ("surrogate", "C1")):
        doc = summary[name]
        resp = JetResponse.from_dict(doc["parameters"])
        e = np.asarray(doc["energies_gev"])
        grid = np.geomspace(e.min(), e.max(), 200)
        for ax, key, curve in (
            (axes[0], "mean_response", resp.mean_response(grid)),
            (axes[1], "resolution", resp.relative_resolution(grid)),
        ):
            y, dy = (np.asarray(v) for v in doc[key])
            ax.errorbar(e, y, dy, fmt="o", color=colour, label=f"{name} showers")
            ax.plot(grid, np.asarray(curve), color=colour, label=f"{name} fit")
    axes[0].set(xscale="log", xlabel="E [GeV]", ylabel="mean response <r>", title="Jet-energy scale")
    axes[1].set(xscale="log", yscale="log", xlabel="E [GeV]", ylabel="relative resolution sigma(r)", title="Resolution")
    for ax in axes:
        ax.legend(fontsize="small")
    save_figure(fig, path)


JETS = Stage(
    "jets",
    "jet-energy response: reference and surrogate showers",
    _jets,
    needs=("simulate", "train"),
    table="jets",
    enabled=lambda cfg: cfg.kinfit.enabled or cfg.sensitivity.enabled,
)


# ------------------------------------------------------------------------------------------------------- kinfit
def _kinfit(ctx: StageContext) -> dict[str, Any]:
    from surrinf.kinfit import (
        FixedMass,
        GaussianMass,
        compare_responses,
        generate_parametric,
        kinfit,
        measure_jets,
        measure_response_bias,
        opening_cosine,
    )

    cfg = ctx.section
    jets = ctx.inputs["jets"].summary
    reference, surrogate = _response(jets, "reference"), _response(jets, "surrogate")
    k_events, k_bias, k_cmp = (jax.random.fold_in(ctx.key, i) for i in range(3))
    ctx.log(f"kinfit: {cfg.n_events} Z -> q qbar events")
    events = generate_parametric(k_events, cfg.n_events, process="resonance")
    cos = opening_cosine(events.eta, events.phi)
    ctx.log("kinfit: jet-energy bias of the surrogate response")
    bias = measure_response_bias(k_bias, surrogate, reference, n_per_point=min(BIAS_JETS, max(1000, cfg.n_events)))
    bias.table().save(ctx.work_dir, "kinfit_bias")
    constraints = {"gaussian": GaussianMass(M0_GEV, cfg.sigma_prior_gev)}
    if cfg.hard_constraint:
        constraints["hard"] = FixedMass(M0_GEV)
    labels = {"gaussian": f"Gaussian prior (sigma = {cfg.sigma_prior_gev:g} GeV)", "hard": "hard constraint"}
    comparisons = {}
    for name, constraint in constraints.items():
        ctx.log(f"kinfit: reference vs surrogate jets, {labels[name]}")
        try:
            comparisons[name] = compare_responses(
                k_cmp, events.e, events.eta, cos, reference, surrogate, constraint, bias=bias
            )
        except ValueError as err:  # e.g. a jet measured at E <= 0 by a very poor surrogate response
            sig = jets["surrogate"]["at_100_gev"]["resolution"][0]
            raise ValueError(
                f"kinfit: the dijet analysis failed with the surrogate jet response (sigma/E at 100 GeV = {sig:.3g}, "
                f"reference {jets['reference']['at_100_gev']['resolution'][0]:.3g}): {err}"
            ) from err
    rows: list[list[Any]] = []
    summary: dict[str, Any] = {"n_events": events.n_events, "sigma_prior_gev": cfg.sigma_prior_gev, "fits": {}}
    for name, cmp in comparisons.items():
        entry = {}
        for stage in ("before", "after"):
            (pr, wr, er), (ps, ws, es) = cmp.peaks[f"reference/{stage}"], cmp.peaks[f"candidate/{stage}"]
            shift, err = cmp.mean_shift_mc[stage]
            entry[stage] = {
                "peak_reference": [pr, er],
                "width_reference": wr,
                "peak_surrogate": [ps, es],
                "width_surrogate": ws,
                "mean_shift": [shift, err],
                "mean_shift_linear": cmp.mean_shift_linear[stage],
                "mjj_resolution": cmp.resolution[stage],
            }
            if stage == "before" and rows:
                continue  # identical for every constraint
            if stage == "after" and name == "hard":  # m_jj = m0 for every event: only the resolution is informative
                rows.append([labels[name], M0_GEV, 0.0, M0_GEV, 0.0, "0 (by construction)", 0.0, cmp.resolution[stage]])
                continue
            rows.append(
                [
                    "no fit" if stage == "before" else labels[name],
                    Measurement(pr, er),
                    wr,
                    Measurement(ps, es),
                    ws,
                    Measurement(shift, err),
                    cmp.mean_shift_linear[stage],
                    cmp.resolution[stage],
                ]
            )
        summary["fits"][name] = entry
    Table(
        "Dijet mass of Z -> q qbar: reference vs surrogate jet response, before and after the kinematic fit",
        [
            "fit",
            "peak ref [GeV]",
            "width ref [GeV]",
            "peak sur [GeV]",
            "width sur [GeV]",
            "mean shift sur - ref [GeV]",
            "mean shift, linearised bias [GeV]",
            "m_jj - m_true width (ref) [GeV]",
        ],
        rows,
        notes=[
            f"{events.n_events} parametric Z -> q qbar events, massless jets in the fit, m0 = {M0_GEV} GeV; both "
            "responses calibrated with the reference calibration and fitted with the reference resolutions",
            "common random numbers: both responses measure the same jets with the same standard-normal noise, so the "
            "mean shift is paired (its error is the Monte Carlo error of the paired difference)",
            "peak, width: Gaussian core fit (+-1.5 sigma, iterated); linearised: <(dm_jj/dE) . bias(E) E> with the "
            "measured bias of the surrogate response (table kinfit_bias)",
        ],
    ).save(ctx.work_dir, "kinfit_mjj")
    # m_jj figure: the events of compare_responses (its measurement key is the first half of split(k_cmp))
    k_meas = jax.random.split(k_cmp)[0]
    gaussian = constraints["gaussian"]
    fits = {
        name: kinfit(measure_jets(k_meas, events.e, events.eta, resp, calibration=reference), reference, cos, gaussian)
        for name, resp in (("reference", reference), ("surrogate", surrogate))
    }
    fig, axes = new_figure(1, figsize=(13, 5), ncols=2)
    bins = np.linspace(M0_GEV - 20, M0_GEV + 20, 81)
    for ax, attr, title in zip(
        axes, ("mjj_measured", "mjj"), ("before the fit", f"after the fit ({labels['gaussian']})"), strict=True
    ):
        for name, fit in fits.items():
            ax.hist(getattr(fit, attr), bins=bins, histtype="step", label=f"{name} jet response")
        ax.set(xlabel="m_jj [GeV]", ylabel="events / 0.5 GeV", title=title)
        ax.legend(fontsize="small")
    save_figure(fig, ctx.work_dir / "kinfit_mjj.png")
    return summary


KINFIT = Stage(
    "kinfit",
    "dijet mass before and after the kinematic fit",
    _kinfit,
    needs=("jets",),
    table="kinfit",
    enabled=lambda cfg: cfg.kinfit.enabled,
)


# -------------------------------------------------------------------------------------------------- sensitivity
def _sensitivity(ctx: StageContext) -> dict[str, Any]:
    from surrinf.kinfit import generate_parametric, measure_jets
    from surrinf.sensitivity import Sample, build_workspace, discovery_significance

    cfg = ctx.section
    jets = ctx.inputs["jets"].summary
    reference = _response(jets, "reference")
    responses = {
        "reference": reference,
        "surrogate": _response(jets, "surrogate"),
        "jes_up": reference.with_scale(1.01),
        "jes_down": reference.with_scale(0.99),
    }
    edges = np.linspace(*cfg.window_gev, cfg.bins + 1)
    n_gen = {"signal": cfg.n_signal, "background": cfg.n_background}
    per_fb = {"signal": cfg.signal_per_fb, "background": cfg.background_per_fb}
    raw: dict[str, dict[str, np.ndarray]] = {name: {} for name in responses}  # MC counts per bin
    lost = dict.fromkeys(responses, 0)  # events with a jet measured below its mass
    for k, (proc, kind) in enumerate((("signal", "resonance"), ("background", "qcd"))):
        ctx.log(f"sensitivity: {n_gen[proc]} {proc} events and their m_jj templates")
        events = generate_parametric(jax.random.fold_in(ctx.key, k), n_gen[proc], process=kind)
        key = jax.random.fold_in(ctx.key, 10 + k)  # the same random numbers for every response
        for name, resp in responses.items():
            # a jet measured at E <= 0 (far tail of a poor response) is kept below its mass: no m_jj, not in a bin
            reco = np.maximum(measure_jets(key, events.e, events.eta, resp), 1e-3)
            e = np.asarray(reference.calibrate(reco), dtype=np.float64)
            ok = np.all(e > events.m, axis=1)  # a jet measured below its mass has no m_jj: outside the window
            lost[name] += int(ok.size - ok.sum())
            mjj = events.select(ok).with_energies(e[ok]).mjj()
            raw[name][proc] = np.histogram(mjj, bins=edges)[0].astype(np.float64)

    def template(name: str, proc: str, lumi: float) -> np.ndarray:
        return raw[name][proc] * per_fb[proc] * lumi / n_gen[proc]

    def workspace(name: str, lumi: float, with_fidelity: bool) -> Any:
        samples = {}
        for proc in ("signal", "background"):
            counts = template(name, proc, lumi)
            samples[proc] = Sample(proc, counts, counts / np.sqrt(np.maximum(raw[name][proc], 1.0)))
        jes = {p: (template("jes_up", p, lumi), template("jes_down", p, lumi)) for p in samples}
        fidelity = None
        if with_fidelity:
            fidelity = {p: (template("reference", p, lumi), template("surrogate", p, lumi)) for p in samples}
        return build_workspace(samples["signal"], samples["background"], bin_edges=edges, jes=jes, fidelity=fidelity)

    variants = {"reference": ("reference", False), "surrogate": ("surrogate", False), "fidelity": ("surrogate", True)}
    z0: dict[str, list[float]] = {v: [] for v in variants}
    rows = []
    for lumi in cfg.lumi_fb:
        ctx.log(f"sensitivity: expected Z0 at {lumi:g} fb^-1")
        for v, (name, fid) in variants.items():
            z0[v].append(float(discovery_significance(workspace(name, lumi, fid)).z0_expected_median))
        r, s, f = z0["reference"][-1], z0["surrogate"][-1], z0["fidelity"][-1]
        rows.append([lumi, r, s, s - r, f, f - s])
    s_fb = {n: float(template(n, "signal", 1.0).sum()) for n in ("reference", "surrogate")}
    b_fb = {n: float(template(n, "background", 1.0).sum()) for n in ("reference", "surrogate")}
    lo, hi = cfg.window_gev
    Table(
        "Expected discovery significance Z0 (Asimov, mu = 1) vs integrated luminosity",
        ["L [fb^-1]", "Z0 ref", "Z0 sur", "Z0 sur - ref", "Z0 sur + fidelity syst.", "fidelity effect"],
        rows,
        notes=[
            f"m_jj window {lo:g}-{hi:g} GeV, {cfg.bins} bins; per fb^-1 in the window: signal "
            f"{s_fb['reference']:.2f} (ref) / {s_fb['surrogate']:.2f} (sur), background {b_fb['reference']:.1f} (ref) "
            f"/ {b_fb['surrogate']:.1f} (sur)",
            "systematics: luminosity 1.7 %, background normalisation 10 %, MC statistics (staterror), jet-energy "
            "scale +-1 % (histosys); fidelity: histosys from the surrogate - reference templates, symmetrised",
            f"simulated: {cfg.n_signal} Z -> q qbar and {cfg.n_background} QCD dijet events (parametric generator), "
            "measured with each jet response (same random numbers), calibrated with the reference calibration",
            *([f"events lost (a jet measured below its mass: no m_jj): {lost}"] if any(lost.values()) else []),
        ],
    ).save(ctx.work_dir, "sensitivity_z0")
    fig, ax = new_figure(1, figsize=(7, 5))
    for v, label in zip(variants, ("reference", "surrogate", "surrogate + fidelity syst."), strict=True):
        ax.plot(cfg.lumi_fb, z0[v], marker="o", label=label)
    ax.set(xscale="log", xlabel="integrated luminosity [fb^-1]", ylabel="expected Z0", title="Discovery sensitivity")
    ax.legend(fontsize="small")
    save_figure(fig, ctx.work_dir / "sensitivity_z0.png")
    fig, axes = new_figure(1, figsize=(13, 5), ncols=2)
    for ax, proc in zip(axes, ("signal", "background"), strict=True):
        for name in responses:
            ax.stairs(template(name, proc, 1.0), edges, label=name.replace("_", " "))
        ax.set(xlabel="m_jj [GeV]", ylabel="events per fb^-1 per bin", title=proc)
        ax.legend(fontsize="small")
    save_figure(fig, ctx.work_dir / "sensitivity_templates.png")
    return {
        "lumi_fb": list(cfg.lumi_fb),
        "z0_reference": z0["reference"],
        "z0_surrogate": z0["surrogate"],
        "z0_surrogate_fidelity": z0["fidelity"],
        "signal_per_fb": s_fb,
        "background_per_fb": b_fb,
        "events_lost": lost,
    }


SENSITIVITY = Stage(
    "sensitivity",
    "expected discovery significance, reference vs surrogate templates",
    _sensitivity,
    needs=("jets",),
    table="sensitivity",
    enabled=lambda cfg: cfg.sensitivity.enabled,
)


# ------------------------------------------------------------------------------------------------------- report
def report_dijet(report: Report, outputs: dict[str, StageOutput | None], run_dir: Path) -> None:
    """The jet-response, kinematic-fit and sensitivity sections of the run report (those whose stages ran)."""
    jets, fit, sens = outputs["jets"], outputs.get("kinfit"), outputs.get("sensitivity")
    s = jets.summary
    report.section("Jet energy response")
    report.paragraph(
        "The jet-energy response (mean response mu(E) = s0 + s1 ln(E / 100 GeV), relative resolution "
        "a / sqrt(E) (+) b (+) c / E) fitted to reference showers and to showers of the trained surrogate at the "
        f"same energies: {s['source']}; {s['n_showers']} showers each. Jets are treated as showering in the "
        f"reference calorimeter; the response of a shower is r = E_visible / (E x {s['visible_fraction']:.5g}) with "
        "both samples non-negative and zero-suppressed, so the two responses differ only by the surrogate's "
        "imperfection. Energies in GeV."
    )
    report.table(Table.load(jets.path / "jets_parameters.json"), "jets_parameters")
    report.image(
        jets.path / "jets_response.png",
        "jets_response",
        "Mean response and resolution vs E (points: per-energy means and widths with errors; lines: the fits).",
    )
    report.table(Table.load(jets.path / "jets_points_reference.json"), "jets_points_reference")
    report.table(Table.load(jets.path / "jets_points_surrogate.json"), "jets_points_surrogate")
    if fit is not None:
        f = fit.summary
        report.section("Dijet mass and kinematic fit")
        report.paragraph(
            f"{f['n_events']} Z -> q qbar events (embedded parametric generator) measured with the reference and "
            "with the surrogate jet response (the same jets and random numbers), both calibrated with the reference "
            "calibration and fitted with the reference resolutions under a Gaussian mass prior "
            f"(sigma = {f['sigma_prior_gev']:g} GeV){' and the hard constraint' if 'hard' in f['fits'] else ''}. "
            "Shift: surrogate - reference, in GeV; target 0."
        )
        report.table(Table.load(fit.path / "kinfit_mjj.json"), "kinfit_mjj")
        report.image(
            fit.path / "kinfit_mjj.png",
            "kinfit_mjj",
            "m_jj with the reference and the surrogate jet response, before and after the fit (Gaussian prior).",
        )
        report.table(Table.load(fit.path / "kinfit_bias.json"), "kinfit_bias")
    if sens is not None:
        report.section("Discovery sensitivity")
        z = sens.summary
        report.paragraph(
            "Expected (Asimov) discovery significance of the Z -> q qbar dijet peak over QCD dijets with m_jj "
            "templates from the reference jet response, from the surrogate's, and from the surrogate's with the "
            f"surrogate-fidelity systematic, at {', '.join(f'{x:g}' for x in z['lumi_fb'])} fb^-1 (asymptotic "
            "formulae, pyhf)."
        )
        report.table(Table.load(sens.path / "sensitivity_z0.json"), "sensitivity_z0")
        report.image(sens.path / "sensitivity_z0.png", "sensitivity_z0", "Expected Z0 vs integrated luminosity.")
        report.image(
            sens.path / "sensitivity_templates.png",
            "sensitivity_templates",
            "m_jj templates per fb^-1 "
            "(reference, surrogate, and the reference with its jet-energy scale shifted by +-1 %).",
        )


def headline_dijet(outputs: dict[str, StageOutput | None]) -> list[list[Any]]:
    """Headline rows: response scale and resolution at 100 GeV, the mean m_jj shift before / after the fit, Z0."""
    rows: list[list[Any]] = []
    s = outputs["jets"].summary
    for key, label in (("scale", "jet response scale at 100 GeV"), ("resolution", "jet sigma/E at 100 GeV")):
        ref, sur = Measurement(*s["reference"]["at_100_gev"][key]), Measurement(*s["surrogate"]["at_100_gev"][key])
        err = math.hypot(ref.error, sur.error)
        pull = (sur.value - ref.value) / err if err > 0 else float("nan")
        rows.append(["jets", label, ref, sur, f"{pull:+.1f} sigma"])
    fit = outputs.get("kinfit")
    if fit is not None:
        g = fit.summary["fits"]["gaussian"]
        for stage in ("before", "after"):
            rows.append(
                [
                    "kinfit",
                    f"mean m_jj shift {stage} the fit [GeV]",
                    "0",
                    Measurement(*g[stage]["mean_shift"]),
                    "surrogate - reference, same events" + (", Gaussian mass prior" if stage == "after" else ""),
                ]
            )
    sens = outputs.get("sensitivity")
    if sens is not None:
        z = sens.summary
        for lumi, r, sur, f in zip(
            z["lumi_fb"], z["z0_reference"], z["z0_surrogate"], z["z0_surrogate_fidelity"], strict=True
        ):
            rows.append(["sensitivity", f"expected Z0 at {lumi:g} fb^-1", r, sur, f"{f:.3g} with fidelity syst."])
    return rows
