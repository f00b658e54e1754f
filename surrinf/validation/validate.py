"""``validate(reference, candidate)``: every fidelity number of a candidate against a reference sample.

One call computes, on showers in GeV with their incident energies:

- one-dimensional comparisons of every high-level observable (:mod:`.one_d`);
- the classifier two-sample test on high-level and on low-level features (:mod:`.classifier`);
- the energy-distance permutation test and the Frechet / kernel physics distances on the high-level
  features (:mod:`.distances`);
- the calibration error CE(E) of the energy response with a target fitted on a held-out reference split
  (:mod:`.calibration_error`).

The result, a :class:`ValidationReport`, holds every number and writes the tables (Markdown, CSV, LaTeX,
JSON) and plots (reference vs candidate with ratio panels) atomically with :meth:`ValidationReport.save`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from .._atomic import atomic_write_text
from ..data import ConditionalStandardize, ShowerData, flatten_features, high_level_features
from ..data.geometry import Geometry
from ..report import Measurement, Report, Table, hist_with_ratio, new_figure, provenance
from .calibration_error import CalibrationErrorResult, calibration_error
from .classifier import ClassifierConfig, ClassifierResult, classifier_test
from .distances import DistanceResult, EnergyDistanceResult, energy_distance_test, fpd, kpd
from .one_d import CONSISTENT, NEGLIGIBLE, RELEVANT, OneDComparison, compare_1d
from .reweighting import ReweightResult, reweight

#: Observable plotted by :meth:`ValidationReport.save` (per-layer ones at the layer of maximal energy).
PLOTTED = ("E_ratio", "depth_of_max", "E_layer", "x_centroid", "x_width", "sparsity")


@dataclass(frozen=True)
class Showers:
    """Showers in GeV: ``energies`` (N,) incident energies, ``showers`` (N, V) voxel energies."""

    energies: np.ndarray
    showers: np.ndarray

    @classmethod
    def coerce(cls, x: Any, name: str, geometry: Geometry) -> Showers:
        if isinstance(x, Showers):
            out = x
        elif isinstance(x, ShowerData):
            out = cls(x.energies_gev(), x.showers_gev())
        elif isinstance(x, tuple) and len(x) == 2:
            out = cls(np.asarray(x[0]).reshape(-1), np.asarray(x[1]))
        else:
            raise ValueError(f"{name} must be ShowerData, Showers or a tuple (energies_gev (N,), showers_gev (N, V))")
        if out.showers.ndim != 2 or out.showers.shape[0] != out.energies.shape[0]:
            raise ValueError(f"{name}: showers must be (N, V) with one incident energy per row")
        if out.showers.shape[1] != geometry.n_voxels:
            raise ValueError(
                f"{name}: showers have {out.showers.shape[1]} voxels, "
                f"geometry {geometry.name!r} has {geometry.n_voxels}"
            )
        if not (np.all(np.isfinite(out.showers)) and np.all(np.isfinite(out.energies))) or np.any(out.energies <= 0):
            raise ValueError(f"{name}: showers must be finite and incident energies positive [GeV]")
        return out


def low_level_features(showers: Showers) -> np.ndarray:
    """(N, V + 1): log(max(e, 0)/E_inc + 1e-6) per voxel, and ln E_inc (the condition)."""
    frac = np.maximum(showers.showers, 0.0) / showers.energies[:, None]
    return np.concatenate([np.log(frac + 1e-6), np.log(showers.energies)[:, None]], axis=1)


def energy_features(showers: Showers, geometry: Geometry) -> tuple[np.ndarray, list[str]]:
    """(N, 2 + n_active_layers): ln E_inc, E_vis/E_inc and the layer energy fractions E_layer/E_inc.

    The representation of the energy response used for classifier reweighting: low-dimensional, every
    column sensitive to a change of scale or resolution. (With all ~90 high-level features and 20k
    showers per sample the classifier's density ratio is too noisy to close a 1 % scale change.) See
    :func:`reweight_response` for the conditional standardisation that makes the reweighting robust."""
    e = showers.energies
    layers = geometry.active_layers
    frac = high_level_features(showers.showers, e, geometry)["E_layer"][:, layers] / e[:, None]
    x = np.concatenate([np.log(e)[:, None], (showers.showers.sum(axis=1) / e)[:, None], frac], axis=1)
    return x, ["ln_E_inc", "E_ratio", *(f"E_layer[{int(k)}]/E_inc" for k in layers)]


def reweight_response(
    key: jax.Array,
    reference: ShowerData | Showers | tuple,
    candidate: ShowerData | Showers | tuple,
    geometry: Geometry,
    config: ClassifierConfig | None = None,
) -> ReweightResult:
    """Classifier weights (one per candidate shower, mean 1) that reweight the candidate's energy response
    toward the reference: :func:`energy_features`, standardised conditionally on ln E with a
    :class:`~surrinf.data.ConditionalStandardize` fitted on the reference, then :func:`.reweighting.reweight`
    (cross-fitted, so every weight is out of sample)."""
    ref = Showers.coerce(reference, "reference", geometry)
    cand = Showers.coerce(candidate, "candidate", geometry)
    x_ref, _ = energy_features(ref, geometry)
    x_cand, _ = energy_features(cand, geometry)
    std = ConditionalStandardize.fit(x_ref[:, 1:], x_ref[:, 0])
    z_ref = np.concatenate([x_ref[:, :1], std(x_ref[:, 1:], x_ref[:, 0])], axis=1)
    z_cand = np.concatenate([x_cand[:, :1], std(x_cand[:, 1:], x_cand[:, 0])], axis=1)
    return reweight(key, z_ref, z_cand, config=config)


@dataclass(frozen=True)
class ValidationConfig:
    """Switches and sizes of :func:`validate`.

    n_practical: the analysis sample size for the practical-significance verdict; n_bootstrap: W1
    bootstrap resamples; classifier / low_level: run the classifier tests; classifier_config: its
    training; energy_distance_samples and permutations: the permutation test's size; alpha: test level.
    """

    n_practical: int = 10_000
    n_bootstrap: int = 50
    alpha: float = 0.05
    classifier: bool = True
    low_level: bool = True
    classifier_config: ClassifierConfig | None = None
    energy_distance_samples: int = 3000
    energy_distance_permutations: int = 500
    ce_bins: int = 10


@dataclass
class ValidationReport:
    """Every number of a validation (see the module docstring)."""

    geometry: Geometry
    n_ref: int
    n_cand: int
    one_d: list[OneDComparison]
    energy_distance: EnergyDistanceResult
    fpd: DistanceResult
    kpd: DistanceResult
    calibration: CalibrationErrorResult
    classifier_high: ClassifierResult | None
    classifier_low: ClassifierResult | None
    config: dict = field(default_factory=dict)
    _plot_data: dict = field(default_factory=dict, repr=False)

    def observable(self, name: str) -> OneDComparison:
        for c in self.one_d:
            if c.name == name:
                return c
        raise KeyError(f"no observable {name!r}; have {[c.name for c in self.one_d][:8]}...")

    # ------------------------------------------------------------------ tables
    def summary_table(self) -> Table:
        n_obs = len(self.one_d)
        within = sum(c.w1_within_floor for c in self.one_d)
        worst = max(self.one_d, key=lambda c: c.w1_over_floor)
        relevant = [c.name for c in self.one_d if c.verdict == RELEVANT]
        rows: list[list] = []
        for label, res in (("high-level", self.classifier_high), ("low-level", self.classifier_low)):
            if res is not None:
                lo, hi = res.auc_interval
                rows.append([f"classifier AUC ({label})", Measurement(res.auc, res.auc_std), f"[{lo:.3f}, {hi:.3f}]"])
                rows.append([f"classifier JSD ({label})", res.jsd, ""])
        ed = self.energy_distance
        rows += [
            ["energy distance (high-level)", ed.statistic, f"p = {ed.p_value:.3g}"],
            ["FPD (high-level)", Measurement(self.fpd.value, self.fpd.error), ""],
            ["KPD (high-level)", Measurement(self.kpd.value, self.kpd.error), ""],
            ["observables with W1 within floor", f"{within} / {n_obs}", ""],
            ["largest W1 / floor", worst.w1_over_floor, worst.name],
            ["KS practically relevant", f"{len(relevant)} / {n_obs}", ", ".join(relevant[:6])],
        ]
        ce = self.calibration
        worst_ce = int(np.nanargmax(ce.rel_ce_cand / np.where(ce.rel_ce_cand_err > 0, ce.rel_ce_cand_err, np.inf)))
        rows.append(
            [
                "largest CE(E) / f(E)",
                Measurement(float(ce.rel_ce_cand[worst_ce]), float(ce.rel_ce_cand_err[worst_ce])),
                f"at {ce.centres[worst_ce]:.3g} GeV",
            ]
        )
        return Table(
            f"Validation summary ({self.n_cand} candidate vs {self.n_ref} reference showers, {self.geometry.name})",
            ["quantity", "value", "note"],
            rows,
            notes=["AUC 0.5 and JSD 0 for indistinguishable samples; W1 floor = reference vs reference."],
        )

    def observables_table(self) -> Table:
        rows = [
            [
                c.name,
                c.ks_statistic,
                c.ks_pvalue,
                c.verdict,
                Measurement(c.w1_over_floor, c.w1_err / c.w1_floor if c.w1_floor > 0 else 0.0),
                c.separation_power,
                f"{c.chi2:.1f} / {c.chi2_ndf}",
                c.mean_shift_significance,
                Measurement(c.width_ratio, c.width_ratio_err),
            ]
            for c in self.one_d
        ]
        return Table(
            "One-dimensional comparisons",
            [
                "observable",
                "KS D",
                "KS p",
                "verdict",
                "W1 / floor",
                "sep. power",
                "chi2 / ndf",
                "mean shift [sigma]",
                "width ratio",
            ],
            rows,
            notes=[
                f"verdict: '{CONSISTENT}' (p >= alpha), '{NEGLIGIBLE}' (p < alpha but D below the reference-vs-"
                f"reference critical value at n = {self.config.get('n_practical')}), or '{RELEVANT}'.",
            ],
        )

    def calibration_table(self) -> Table:
        ce = self.calibration
        rows = [
            [
                f"{ce.edges[k]:.3g}-{ce.edges[k + 1]:.3g}",
                float(ce.target[k]),
                Measurement(float(ce.ce_cand[k]), float(ce.ce_cand_err[k])),
                Measurement(float(ce.ce_ref[k]), float(ce.ce_ref_err[k])),
                Measurement(float(ce.resolution_ratio[k]), float(ce.resolution_ratio_err[k])),
                int(ce.n_cand[k]),
            ]
            for k in range(ce.centres.size)
        ]
        return Table(
            "Calibration error of the energy response",
            [
                "E bin [GeV]",
                "f(E) [GeV]",
                "<S - f> candidate [GeV]",
                "<S - f> ref. closure [GeV]",
                "resolution ratio cand/ref",
                "n cand",
            ],
            rows,
            notes=["f fitted on a held-out half of the reference; CE = |<S - f>|."],
        )

    def to_dict(self) -> dict:
        def res(r):
            return None if r is None else r.to_dict()

        return {
            "geometry": self.geometry.name,
            "n_ref": self.n_ref,
            "n_cand": self.n_cand,
            "config": self.config,
            "one_d": [c.to_dict() for c in self.one_d],
            "energy_distance": res(self.energy_distance),
            "fpd": res(self.fpd),
            "kpd": res(self.kpd),
            "calibration": self.calibration.to_dict(),
            "classifier_high": res(self.classifier_high),
            "classifier_low": res(self.classifier_low),
        }

    # ------------------------------------------------------------------ output
    def save(self, directory: str | Path, title: str = "Validation report") -> Path:
        """Write report.md, the tables (md/csv/tex/json), figures/*.png and validation.json to a
        directory (each file atomically); returns the report path."""
        directory = Path(directory)
        report = Report(title, directory)
        report.section("Summary").table(self.summary_table(), "summary")
        report.section("Distributions")
        feats_ref, feats_cand, names = self._plot_data["ref"], self._plot_data["cand"], self._plot_data["names"]
        for name in self._plot_names(names):
            j = names.index(name)
            fig, (ax, axr) = new_figure(ratio=True, figsize=(8, 8))
            lo, hi = np.percentile(feats_ref[:, j], [0.5, 99.5])
            rng = (lo, hi) if hi > lo else None
            hist_with_ratio(ax, axr, feats_ref[:, j], feats_cand[:, j], bins=40, xlabel=name, hist_range=rng)
            c = self.observable(name)
            ax.set_title(f"W1/floor = {c.w1_over_floor:.2f}, KS p = {c.ks_pvalue:.2g}", fontsize="small")
            stem = "hist_" + name.replace("[", "_").replace("]", "")
            report.figure(fig, stem, f"{name}: reference vs candidate, ratio candidate/reference.")
        report.section("Energy response").table(self.calibration_table(), "calibration_error")
        report.figure(self._ce_figure(), "calibration_error", "CE(E) relative to the target response, with closure.")
        report.section("All observables").table(self.observables_table(), "observables")
        report.provenance(provenance(self.config, seed=self.config.get("seed")))
        atomic_write_text(directory / "validation.json", json.dumps(self.to_dict(), indent=1, default=_json_default))
        return report.write()

    def _plot_names(self, names: list[str]) -> list[str]:
        e_layer = [n for n in names if n.startswith("E_layer[")]
        j_max = int(np.argmax([self._plot_data["ref"][:, names.index(n)].mean() for n in e_layer])) if e_layer else 0
        layer = e_layer[j_max][len("E_layer") :] if e_layer else ""
        out = []
        for p in PLOTTED:
            cand = p if p in names else f"{p}{layer}"
            if cand in names:
                out.append(cand)
        return out

    def _ce_figure(self):
        ce = self.calibration
        fig, ax = new_figure(figsize=(8, 6))
        ax.errorbar(ce.centres, ce.ce_cand / ce.target, ce.ce_cand_err / ce.target, fmt="o", label="candidate")
        ax.errorbar(
            ce.centres * 1.03, ce.ce_ref / ce.target, ce.ce_ref_err / ce.target, fmt="s", label="reference (closure)"
        )
        ax.axhline(0.0, color="gray", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("incident energy [GeV]")
        ax.set_ylabel("<S - f(E)> / f(E)")
        ax.legend()
        return fig


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def validate(
    reference: ShowerData | Showers | tuple,
    candidate: ShowerData | Showers | tuple,
    geometry: Geometry,
    *,
    key: jax.Array | None = None,
    seed: int = 0,
    x0_mm: float | None = None,
    config: ValidationConfig | None = None,
) -> ValidationReport:
    """Validate a candidate sample against a reference sample of the same geometry.

    Args:
        reference, candidate: :class:`~surrinf.data.ShowerData` (MeV files), :class:`Showers` or
            ``(energies_gev (N,), showers_gev (N, V))``.
        geometry: their voxel geometry.
        key / seed: randomness of splits, bootstraps and permutations (``key`` wins if given).
        x0_mm: radiation length [mm] for the depth-of-maximum observable (omitted when None).
        config: :class:`ValidationConfig`.
    """
    cfg = config or ValidationConfig()
    key = jax.random.key(seed) if key is None else key
    ref = Showers.coerce(reference, "reference", geometry)
    cand = Showers.coerce(candidate, "candidate", geometry)
    k_hl, k_ll, k_ed, k_fpd, k_kpd, k_np = jax.random.split(key, 6)
    np_seed = int(jax.random.randint(k_np, (), 0, 2**31 - 1))

    hl_ref, names = flatten_features(high_level_features(ref.showers, ref.energies, geometry, x0_mm=x0_mm), geometry)
    hl_cand, _ = flatten_features(high_level_features(cand.showers, cand.energies, geometry, x0_mm=x0_mm), geometry)
    names = list(names)
    keep = [j for j, n in enumerate(names) if n not in ("E_inc",)]
    one_d = [
        compare_1d(
            hl_ref[:, j],
            hl_cand[:, j],
            names[j],
            seed=np_seed + j,
            n_bootstrap=cfg.n_bootstrap,
            alpha=cfg.alpha,
            n_practical=cfg.n_practical,
        )
        for j in keep
        if np.ptp(hl_ref[:, j]) > 0 or np.ptp(hl_cand[:, j]) > 0
    ]
    hl_ref_k, hl_cand_k = hl_ref[:, keep], hl_cand[:, keep]
    ed = energy_distance_test(
        k_ed,
        hl_ref_k,
        hl_cand_k,
        n_permutations=cfg.energy_distance_permutations,
        max_samples=cfg.energy_distance_samples,
    )
    fpd_res = fpd(k_fpd, hl_ref_k, hl_cand_k)
    # batches of at most half of each sample, so that their spread measures the error
    kpd_res = kpd(k_kpd, hl_ref_k, hl_cand_k, batch_size=min(5000, ref.energies.size // 2, cand.energies.size // 2))
    ce = calibration_error(
        ref.energies,
        ref.showers.sum(axis=1),
        cand.energies,
        cand.showers.sum(axis=1),
        n_bins=cfg.ce_bins,
        seed=np_seed,
    )
    clf_high = clf_low = None
    if cfg.classifier:
        with_e = lambda h, s: np.concatenate([h, np.log(s.energies)[:, None]], axis=1)
        clf_high = classifier_test(k_hl, with_e(hl_ref_k, ref), with_e(hl_cand_k, cand), cfg.classifier_config)
        if cfg.low_level:
            clf_low = classifier_test(k_ll, low_level_features(ref), low_level_features(cand), cfg.classifier_config)
    cfg_dict = {
        "n_practical": cfg.n_practical,
        "n_bootstrap": cfg.n_bootstrap,
        "alpha": cfg.alpha,
        "classifier": cfg.classifier,
        "low_level": cfg.low_level,
        "energy_distance_samples": cfg.energy_distance_samples,
        "energy_distance_permutations": cfg.energy_distance_permutations,
        "seed": seed,
        "x0_mm": x0_mm,
    }
    return ValidationReport(
        geometry=geometry,
        n_ref=int(ref.energies.size),
        n_cand=int(cand.energies.size),
        one_d=one_d,
        energy_distance=ed,
        fpd=fpd_res,
        kpd=kpd_res,
        calibration=ce,
        classifier_high=clf_high,
        classifier_low=clf_low,
        config=cfg_dict,
        _plot_data={"ref": hl_ref, "cand": hl_cand, "names": names},
    )
