"""The main job (``surrinf run`` / ``make run``).

First version: simulate a reference dataset with the embedded GFLASH calorimeter and write a report on
the simulator itself (mean longitudinal and radial profiles against the GFLASH mean expectation, the
energy response and the resolution curve with its fit) to ``runs/<timestamp>/``. Later stages
(surrogate training, validation, calibration, unfolding, kinematic fit, sensitivity) extend this job.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from .data import ShowerData, ShowerWriter, layer_energies
from .report import Measurement, Report, Table, new_figure, provenance
from .sim import Calorimeter, DetectorParams, calorimeter
from .sim.spectrum import parse_energy_spec
from .validation.resolution import fit_resolution, measure_response, resolution_model


@dataclass(frozen=True)
class RunConfig:
    """Configuration of the main job (energies in GeV).

    geometry / material: simulator preset names; theta: (energy scale, sampling term [GeV^1/2], noise
    [GeV]) or None for the material's nominal values; n_showers and energy_spectrum: the reference
    dataset; profile_energies and n_profile: showers for the profile plots; resolution_energies and
    n_resolution: the resolution scan; seed: the root of every random number; out_dir: parent folder.
    """

    geometry: str = "default"
    material: str | None = None
    theta: tuple[float, float, float] | None = None
    n_showers: int = 20_000
    energy_spectrum: str = "log-uniform:1,1000"
    profile_energies: tuple[float, ...] = (10.0, 100.0, 1000.0)
    n_profile: int = 2000
    resolution_energies: tuple[float, ...] = (2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0)
    n_resolution: int = 2000
    seed: int = 0
    out_dir: str = "runs"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _run_directory(parent: Path) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    path = parent / stamp
    k = 1
    while path.exists():
        path = parent / f"{stamp}-{k}"
        k += 1
    path.mkdir(parents=True)
    return path


def simulate_to_file(
    cal: Calorimeter,
    key: jax.Array,
    energies_gev: np.ndarray,
    path: Path,
    theta: np.ndarray | None = None,
    offset_mm: np.ndarray | None = None,
    progress: bool = True,
    chunk_size: int | None = None,
) -> Path:
    """Simulate showers chunk by chunk into a CaloChallenge HDF5 file (MeV), atomically; memory stays
    bounded by one chunk. theta and the impact offset are stored per shower."""
    n = len(energies_gev)
    theta_arr = np.broadcast_to(np.asarray(cal.default_theta() if theta is None else theta, np.float32), (n, 3))
    offset_arr = np.broadcast_to(
        np.zeros(2, np.float32) if offset_mm is None else np.asarray(offset_mm, np.float32), (n, 2)
    )
    attrs = {"material": cal.material.name, "particle": "electron", "simulator": "surrinf GFLASH reference"}
    chunk = int(chunk_size or min(cal.auto_chunk_size(bool(np.any(offset_arr != 0))), 4096))
    with (
        ShowerWriter(path, cal.geometry, with_theta=True, with_offset=True, attrs=attrs) as writer,
        tqdm(total=n, desc="simulate", unit="shower", disable=not progress, file=sys.stderr) as bar,
    ):
        start = 0
        for batch in cal.iter_simulate(key, energies_gev, theta_arr, offset_arr, chunk_size=chunk):
            stop = start + batch.showers.shape[0]
            writer.append(
                ShowerData.from_gev(
                    energies_gev[start:stop],
                    batch.showers,
                    theta=theta_arr[start:stop],
                    impact_offset_mm=offset_arr[start:stop],
                    geometry=cal.geometry,
                )
            )
            bar.update(stop - start)
            start = stop
    return path


def _profiles(cal: Calorimeter, key: jax.Array, energies: tuple[float, ...], n: int) -> dict:
    """Mean layer and radial profiles (fractions of E_inc) of simulated showers and of the GFLASH mean
    expectation at each energy, with the calorimeter's own detector parameters."""
    geo = cal.geometry
    coords = geo.voxel_coordinates()
    r_bin = coords["r_bin"]
    n_r = int(geo.n_radial.max())
    out = {}
    for i, e in enumerate(energies):
        k_sim, k_exp = jax.random.split(jax.random.fold_in(key, i))
        showers = cal.simulate(k_sim, np.full(n, e)).showers.astype(np.float64) / e
        expected = cal.expected_showers(k_exp, e, n_draws=4000).astype(np.float64) / e
        lay = layer_energies(showers, geo)
        rad = np.stack([showers[:, r_bin == j].sum(axis=1) for j in range(n_r)], axis=1)
        out[e] = {
            "layer_mean": lay.mean(0),
            "layer_err": lay.std(0, ddof=1) / np.sqrt(n),
            "layer_expected": layer_energies(expected[None], geo)[0],
            "radial_mean": rad.mean(0),
            "radial_err": rad.std(0, ddof=1) / np.sqrt(n),
            "radial_expected": np.array([expected[r_bin == j].sum() for j in range(n_r)]),
        }
    return out


def _profile_figure(prof: dict, kind: str, x: np.ndarray, xlabel: str, ylabel: str):
    """Simulated mean profile (points) and GFLASH mean expectation (lines) per energy, ratio below."""
    fig, (ax, axr) = new_figure(ratio=True)
    for e, p in prof.items():
        mean, err, expected = p[f"{kind}_mean"], p[f"{kind}_err"], p[f"{kind}_expected"]
        line = ax.errorbar(x, mean, err, fmt="o", ms=4, label=f"simulated, {e:g} GeV")
        ax.plot(x, expected, "-", color=line[0].get_color(), label=f"GFLASH mean, {e:g} GeV")
        axr.errorbar(x, mean / expected, err / expected, fmt="o", ms=3, color=line[0].get_color())
    ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="x-small")
    axr.axhline(1.0, color="gray", lw=1)
    axr.set_ylim(0.8, 1.2)
    axr.set_xlabel(xlabel)
    axr.set_ylabel("sim / mean")
    return fig


def run(config: RunConfig | None = None, progress: bool = True) -> Path:
    """Run the main job and return the run directory (``<out_dir>/<UTC timestamp>``)."""
    cfg = config or RunConfig()
    params = DetectorParams(*cfg.theta) if cfg.theta is not None else DetectorParams()
    cal = calorimeter(cfg.geometry, cfg.material, params)
    theta = cal.default_theta()
    spectrum = parse_energy_spec(cfg.energy_spectrum)
    run_dir = _run_directory(Path(cfg.out_dir))
    key = jax.random.key(cfg.seed)
    k_energy, k_data, k_prof, k_res = jax.random.split(key, 4)
    geo, mat = cal.geometry, cal.material
    s, a, sigma_n = (float(x) for x in theta)

    def stage(msg: str) -> None:
        if progress:
            print(f"[surrinf run] {msg}", file=sys.stderr, flush=True)

    stage(f"simulating {cfg.n_showers} showers ({spectrum}) in the {geo.name} geometry ({mat.name})")
    energies = spectrum.sample(k_energy, cfg.n_showers)
    data_path = simulate_to_file(cal, k_data, energies, run_dir / "reference.h5", progress=progress)

    stage("mean profiles against the GFLASH expectation")
    prof = _profiles(cal, k_prof, cfg.profile_energies, cfg.n_profile)

    stage("energy response and resolution scan")
    resp = measure_response(cal, k_res, np.array(cfg.resolution_energies), cfg.n_resolution, theta=tuple(theta))
    # Relative resolution in units of the incident energy: the visible energy is s * f_samp * E.
    # The noise term c is fitted only when there is noise: at c = 0 its derivative vanishes.
    terms = ("a", "b", "c") if sigma_n > 0 else ("a", "b")
    fit = fit_resolution(resp.energies_gev, resp.relative_resolution, resp.relative_resolution_err, terms)

    stage("writing the report")
    report = Report(f"surrinf simulator report: {geo.name} geometry, {mat.name}", run_dir)
    report.paragraph(
        "Reference electromagnetic showers from the embedded GFLASH parameterisation "
        "(Grindhammer & Peters, hep-ex/0001020). Energies in GeV; profiles are fractions of the incident energy."
    )
    report.section("Detector")
    t_mat = Table(
        "Material and detector parameters",
        ["quantity", "value"],
        [
            ["material", mat.name],
            ["geometry", f"{geo.name} ({geo.n_layers} layers, {geo.n_voxels} voxels)"],
            ["X0_eff [mm]", mat.X0_mm],
            ["R_M,eff [mm]", mat.RM_mm],
            ["E_c,eff [MeV]", mat.Ec_GeV * 1e3],
            ["Z_eff", mat.Z_eff],
            ["sampling fraction f_samp", mat.sampling_fraction],
            ["depth [X0]", float(geo.layer_edges_mm[-1] / mat.X0_mm)],
            ["energy scale s", s],
            ["sampling term a [GeV^1/2]", a],
            ["noise per cell sigma_n [GeV]", sigma_n],
        ],
    )
    report.table(t_mat, "detector")

    report.section("Reference dataset")
    report.paragraph(
        f"{cfg.n_showers} showers, incident energies `{spectrum}` GeV, written in CaloChallenge format "
        f"(MeV) to [`reference.h5`]({data_path.name}) with per-shower theta and impact offset."
    )

    report.section("Mean profiles")
    depth_x0 = geo.layer_centers_mm / mat.X0_mm
    fig = _profile_figure(prof, "layer", depth_x0, "layer depth [X0]", "mean E_layer / E_inc")
    report.figure(fig, "longitudinal_profile", "Mean longitudinal profile with the GFLASH mean expectation.")
    n_r = int(geo.n_radial.max())
    r_edges = geo.r_edges_mm[int(np.argmax(geo.n_radial))]
    r_centres = 0.5 * (r_edges[:-1] + np.where(np.isinf(r_edges[1:]), r_edges[:-1], r_edges[1:]))
    fig = _profile_figure(prof, "radial", r_centres[:n_r], "radius [mm]", "mean E_radial bin / E_inc")
    report.figure(fig, "radial_profile", "Mean radial profile (all layers) with the GFLASH mean expectation.")

    report.section("Energy response and resolution")
    lin = resp.mean / (s * mat.sampling_fraction * resp.energies_gev)
    lin_err = resp.mean_err / (s * mat.sampling_fraction * resp.energies_gev)
    t_res = Table(
        "Energy response and resolution",
        ["E [GeV]", "<E_vis> / (s f_samp E)", "sigma/E", "expected a/sqrt(E)"],
        [
            [float(e), Measurement(float(m), float(me)), Measurement(float(r), float(re)), float(a / np.sqrt(e))]
            for e, m, me, r, re in zip(
                resp.energies_gev, lin, lin_err, resp.relative_resolution, resp.relative_resolution_err, strict=True
            )
        ],
        notes=["E_vis below s f_samp E measures the geometry's leakage; a, b, c fitted below."],
    )
    report.table(t_res, "response")
    t_fit = Table(
        "Resolution fit sigma/E = a/sqrt(E) (+) b (+) c/E",
        ["term", "fitted", "configured"],
        [
            ["a [GeV^1/2]", Measurement(fit.a, fit.a_err), a],
            ["b", Measurement(fit.b, fit.b_err), "leakage only"],
            [
                "c [GeV]",
                Measurement(fit.c, fit.c_err) if "c" in terms else "not fitted (no noise)",
                float(np.sqrt(geo.n_voxels) * sigma_n / (s * mat.sampling_fraction)),
            ],
            ["chi2 / ndf", f"{fit.chi2:.1f} / {fit.ndf}", ""],
        ],
        notes=["The configured noise term is sqrt(n_voxels) sigma_n / (s f_samp), in incident-energy units."],
    )
    report.table(t_fit, "resolution_fit")
    fig, (ax, axr) = new_figure(ratio=True)
    grid = np.geomspace(resp.energies_gev.min() * 0.8, resp.energies_gev.max() * 1.25, 200)
    ax.errorbar(resp.energies_gev, resp.relative_resolution, resp.relative_resolution_err, fmt="o", label="simulated")
    ax.plot(grid, fit(grid), "-", label=f"fit: a = {fit.a:.3f}, b = {fit.b:.4f}, c = {fit.c:.3f}")
    ax.plot(grid, resolution_model(grid, a), "--", label=f"configured a/sqrt(E), a = {a:.3f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylabel("sigma_E / E")
    ax.legend(fontsize="small")
    axr.errorbar(resp.energies_gev, lin, lin_err, fmt="o")
    axr.axhline(1.0, color="gray", lw=1)
    axr.set_xscale("log")
    axr.set_xlabel("incident energy E [GeV]")
    axr.set_ylabel("<E_vis>/(s f E)")
    report.figure(fig, "resolution", "Resolution curve with its fit; lower panel: response linearity.")

    report.provenance(provenance(cfg.to_dict(), seed=cfg.seed))
    path = report.write()
    stage(f"report written to {path}")
    return run_dir
