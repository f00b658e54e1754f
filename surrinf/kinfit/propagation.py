"""Propagation of jet-energy biases into the dijet mass, before and after the kinematic fit.

Two routes, compared on the same events:

- **Monte Carlo** (re-smearing): fit the events measured with the nominal response and with the shifted one (for a
  jet-energy-scale shift: the same random numbers, :func:`propagate_shift`; for a surrogate: each response smears
  the same truth jets, :func:`compare_responses`) and take the difference of the m_jj distributions.
- **Linearised**: dm = (dm_jj / dE_meas) . dE per event, with the derivative of the fitted m_jj from the fit's implicit
  differentiation (:func:`surrinf.kinfit.kinfit_jacobian`) and dE the change of the measured energies: the measured
  jet-energy bias of the surrogate (:func:`measure_response_bias`, not assumed) or a scale shift.

Peak positions and widths of m_jj come from an iterative Gaussian core fit (:func:`gaussian_core`).
All energies and masses in GeV; statistics in float64.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from surrinf._checks import check_positive_int
from surrinf.report import Measurement, Table

from .constraints import MassConstraint
from .fit import KinFitResult, dijet_mass, kinfit, kinfit_jacobian

__all__ = [
    "JetEnergyBias",
    "ResponseComparison",
    "ShiftPropagation",
    "compare_responses",
    "gaussian_core",
    "measure_jets",
    "measure_response_bias",
    "propagate_shift",
]


def gaussian_core(x: Any, n_sigma: float = 1.5, iterations: int = 5, bins: int = 60) -> tuple[float, float, float]:
    """Peak position and width of the core of a distribution: a Gaussian fitted to the histogram of ``x`` within
    +- ``n_sigma`` widths of the peak, iterated from the median and the interquartile width. Returns (mean, sigma,
    error of the mean) in the units of x; the error is sigma / sqrt(entries in the window) (Gaussian core). Without
    spread (interquartile width below 1e-9 relative, as m_jj after a hard mass constraint): mean, standard deviation
    and error of the mean."""
    x = np.asarray(x, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size < 50:
        raise ValueError(f"x must hold at least 50 finite values for a core fit, got {x.size}")
    mu = float(np.median(x))
    sigma = float(np.subtract(*np.percentile(x, [75, 25])) / 1.349) or float(np.std(x))
    if sigma <= 1e-9 * max(abs(mu), 1.0):  # a (numerically) fixed value, e.g. m_jj after a hard constraint
        return float(np.mean(x)), float(np.std(x)), float(np.std(x)) / np.sqrt(x.size)
    n_in = x.size
    for _ in range(iterations):
        lo, hi = mu - n_sigma * sigma, mu + n_sigma * sigma
        inside = x[(x > lo) & (x < hi)]
        n_in = inside.size
        counts, edges = np.histogram(inside, bins=bins, range=(lo, hi))
        centres = 0.5 * (edges[1:] + edges[:-1])
        err = np.sqrt(np.maximum(counts, 1.0))

        def gauss(t, a, m, s):
            return a * np.exp(-0.5 * ((t - m) / s) ** 2)

        (_, mu_new, sigma_new), _ = optimize.curve_fit(
            gauss, centres, counts, p0=(counts.max(), mu, sigma), sigma=err, maxfev=10_000
        )
        mu, sigma = float(mu_new), abs(float(sigma_new))
    return mu, sigma, sigma / np.sqrt(max(n_in, 1))


def _jet_conditions(e_true: np.ndarray, eta: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(e_true, np.float64).ravel(), np.asarray(eta, np.float64).ravel()], axis=1)


def _generate(key: jax.Array, response: Any, conditions: np.ndarray) -> np.ndarray:
    """E_reco (N,) float64: ``response.generate(noise, conditions)`` with standard-normal noise drawn from ``key`` when
    the model has a deterministic sampler (then two models with the same key share their random numbers), else
    ``response.sample(key, conditions)``."""
    if hasattr(response, "generate"):
        with jax.enable_x64(True):
            noise = np.asarray(jax.random.normal(key, (conditions.shape[0],), jnp.float64))
        return np.asarray(response.generate(noise, conditions), dtype=np.float64)
    return np.asarray(response.sample(key, conditions), dtype=np.float64)


def measure_jets(key: jax.Array, e_true: Any, eta: Any, response: Any, calibration: Any = None) -> np.ndarray:
    """Measured jet energies (N, 2) [GeV]: the response model applied to conditions (E_true, eta) of every jet, then
    the jet-energy calibration ``calibration.calibrate`` (for example the reference :class:`JetResponse`:
    calibrating a surrogate's jets with the reference's calibration is what leaves its bias visible); None: none.

    Response models with a deterministic sampler ``generate(noise, conditions)`` (the reference and the flow
    surrogate) are driven by standard-normal noise drawn from ``key``: measuring the same jets with two such models
    and the same key gives common random numbers (the models are coupled by quantiles), so differences between the
    two samples are the response difference, not sampling noise. Other models use ``sample(key, conditions)``."""
    e_true = np.asarray(e_true, dtype=np.float64)
    eta = np.asarray(eta, dtype=np.float64)
    if e_true.ndim != 2 or e_true.shape[1] != 2 or eta.shape != e_true.shape:
        raise ValueError(f"e_true and eta must have shape (N, 2), got {e_true.shape} and {eta.shape}")
    reco = _generate(key, response, _jet_conditions(e_true, eta)).reshape(e_true.shape)
    if calibration is not None:
        reco = np.asarray(calibration.calibrate(reco), dtype=np.float64)
    return reco


class JetEnergyBias(eqx.Module):
    """Relative jet-energy bias of a candidate response against a reference on a grid of (E_true, eta):
    shift[i, k] = <E_reco cand> / <E_reco ref> - 1 at energies[i] [GeV] and eta[k], with its statistical error.
    Calling it interpolates bilinearly in (ln E, eta) (clamped at the grid edges)."""

    energies: np.ndarray  #: (n_e,) [GeV], increasing
    eta: np.ndarray  #: (n_eta,), increasing
    shift: np.ndarray  #: (n_e, n_eta) relative shift [1]
    error: np.ndarray  #: (n_e, n_eta) statistical error of shift [1]

    def __call__(self, e_gev: Any, eta: Any) -> np.ndarray:
        """Relative shift at energies e_gev [GeV] and pseudorapidities eta (same shape)."""
        e = np.asarray(e_gev, dtype=np.float64)
        h = np.asarray(eta, dtype=np.float64)
        le = np.log(self.energies)

        def index(grid: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            if grid.size == 1:
                return np.zeros(v.shape, int), np.zeros(v.shape)
            v = np.clip(v, grid[0], grid[-1])
            i = np.clip(np.searchsorted(grid, v) - 1, 0, grid.size - 2)
            return i, (v - grid[i]) / (grid[i + 1] - grid[i])

        i, u = index(le, np.log(e))
        k, w = index(self.eta, h)
        i1 = np.minimum(i + 1, self.energies.size - 1)
        k1 = np.minimum(k + 1, self.eta.size - 1)
        s = self.shift
        return (1 - u) * (1 - w) * s[i, k] + u * (1 - w) * s[i1, k] + (1 - u) * w * s[i, k1] + u * w * s[i1, k1]

    def table(self) -> Table:
        """The measured shifts [%] per energy (rows) and eta (columns)."""
        cols = ["E_true [GeV]"] + [f"shift at eta = {v:g} [%]" for v in self.eta]
        rows = [
            [float(e)] + [Measurement(100 * s, 100 * d) for s, d in zip(r, dr, strict=True)]
            for e, r, dr in zip(self.energies, self.shift, self.error, strict=True)
        ]
        return Table("Jet-energy bias of the candidate response (relative to the reference)", cols, rows)


def measure_response_bias(
    key: jax.Array,
    candidate: Any,
    reference: Any,
    energies_gev: Any = (20.0, 30.0, 45.0, 70.0, 100.0, 150.0, 250.0),
    eta: Any = (0.0, 1.0, 2.0),
    n_per_point: int = 20_000,
) -> JetEnergyBias:
    """Measure the relative jet-energy bias <E_cand> / <E_ref> - 1 of two response models from ``n_per_point`` jets
    of each at every grid point (E_true [GeV], eta). Both models see the same standard-normal noise when both have
    ``generate`` (common random numbers; the error is then that of the paired ratio of means), else independent
    draws (error from the two sample standard deviations)."""
    n = check_positive_int(n_per_point, "n_per_point")
    e = np.asarray(energies_gev, dtype=np.float64)
    h = np.asarray(eta, dtype=np.float64)
    if e.ndim != 1 or e.size == 0 or np.any(e <= 0) or np.any(np.diff(e) <= 0):
        raise ValueError("energies_gev must be increasing positive jet energies [GeV]")
    if h.ndim != 1 or h.size == 0 or np.any(np.diff(h) <= 0):
        raise ValueError("eta must be an increasing 1-D array of pseudorapidities")
    if n < 2:
        raise ValueError("n_per_point must be >= 2 (the error needs a sample variance)")
    ee, hh = np.meshgrid(e, h, indexing="ij")
    cond = np.repeat(_jet_conditions(ee, hh), n, axis=0)
    paired = hasattr(candidate, "generate") and hasattr(reference, "generate")
    k_c, k_r = (key, key) if paired else tuple(jax.random.split(key))
    xc = _generate(k_c, candidate, cond).reshape(e.size, h.size, n)
    xr = _generate(k_r, reference, cond).reshape(e.size, h.size, n)
    mc, mr = xc.mean(axis=-1), xr.mean(axis=-1)
    ratio = mc / mr
    if paired:  # delta method for the ratio of two means of paired draws
        resid = (xc - ratio[..., None] * xr) / mr[..., None]
        error = resid.std(axis=-1, ddof=1) / np.sqrt(n)
    else:
        error = ratio * np.hypot(xc.std(axis=-1, ddof=1) / mc, xr.std(axis=-1, ddof=1) / mr) / np.sqrt(n)
    return JetEnergyBias(e, h, ratio - 1.0, error)


class ShiftPropagation(eqx.Module):
    """Shift of m_jj [GeV] caused by a change dE of the measured energies, before and after the fit: Monte Carlo
    (refit of the shifted energies) and linearised (fit Jacobian . dE), as event means with their errors."""

    mc_before: float
    mc_after: float
    linear_before: float
    linear_after: float
    mc_before_error: float
    mc_after_error: float
    n_events: int

    def table(self, title: str = "m_jj shift: Monte Carlo vs linearised propagation") -> Table:
        rows = [
            [
                "before fit",
                self.mc_before,
                self.mc_before_error,
                self.linear_before,
                self._rel(self.mc_before, self.linear_before),
            ],
            [
                "after fit",
                self.mc_after,
                self.mc_after_error,
                self.linear_after,
                self._rel(self.mc_after, self.linear_after),
            ],
        ]
        cols = ["m_jj", "MC shift [GeV]", "MC error [GeV]", "linear shift [GeV]", "(linear - MC) / MC"]
        return Table(title, cols, rows)


def propagate_shift(
    e_meas: Any,
    e_shifted: Any,
    sigma: Any,
    cos_opening: Any,
    constraint: MassConstraint,
    masses: Any = None,
    nominal: KinFitResult | None = None,
    **fit_options: Any,
) -> ShiftPropagation:
    """Propagate the change e_shifted - e_meas (N, 2) [GeV] of the measured energies (same events, same random
    numbers: for example a jet-energy-scale shift) into m_jj before and after the fit, by refitting (Monte Carlo)
    and by the fit Jacobian at the nominal point (linearised). ``sigma``: (N, 2) [GeV] or a resolution model (then
    sigma follows the shifted energies in both routes). ``nominal``: the fit of e_meas, if already done."""
    e0 = np.asarray(e_meas, dtype=np.float64)
    e1 = np.asarray(e_shifted, dtype=np.float64)
    if e1.shape != e0.shape:
        raise ValueError(f"e_shifted must have the shape of e_meas {e0.shape}, got {e1.shape}")
    fit0 = nominal if nominal is not None else kinfit(e0, sigma, cos_opening, constraint, masses, **fit_options)
    fit1 = kinfit(e1, sigma, cos_opening, constraint, masses, **fit_options)
    jac = kinfit_jacobian(e0, sigma, cos_opening, constraint, masses, **fit_options)
    d = e1 - e0
    mc_b, mc_a = fit1.mjj_measured - fit0.mjj_measured, fit1.mjj - fit0.mjj
    n = e0.shape[0]
    return ShiftPropagation(
        mc_before=float(mc_b.mean()),
        mc_after=float(mc_a.mean()),
        linear_before=float(np.einsum("nj,nj->n", jac.mjj_measured, d).mean()),
        linear_after=float(np.einsum("nj,nj->n", jac.mjj, d).mean()),
        mc_before_error=float(mc_b.std(ddof=1) / np.sqrt(n)),
        mc_after_error=float(mc_a.std(ddof=1) / np.sqrt(n)),
        n_events=n,
    )


class ResponseComparison(eqx.Module):
    """m_jj peak position and width [GeV] (Gaussian core) before and after the fit for the events measured with the
    reference and with the candidate response, their differences (Monte Carlo), the linearised prediction of the
    mean shift from the measured jet-energy bias and from the event-by-event energy differences, and the fit's
    resolution improvement (core width of m_jj - m_true before / after, reference response)."""

    peaks: dict[str, tuple[float, float, float]]  #: "reference/before" ... -> (peak, width, peak error)
    mean_shift_mc: dict[str, tuple[float, float]]  #: "before"/"after" -> (<m_cand> - <m_ref>, error)
    mean_shift_linear: dict[str, float]  #: "before"/"after" -> linearised <dm> from the measured bias
    #: "before"/"after" -> linearised <dm> from the per-event differences E_cand - E_ref (common random numbers;
    #: NaN when a model has no ``generate`` and the samples are independent)
    mean_shift_linear_events: dict[str, float]
    resolution: dict[str, float]  #: "before"/"after" -> core width of m_jj - m_true [GeV] (reference response)
    n_events: int

    def table(self) -> Table:
        rows = []
        for stage in ("before", "after"):
            (pr, wr, er), (pc, wc, ec) = self.peaks[f"reference/{stage}"], self.peaks[f"candidate/{stage}"]
            shift, err = self.mean_shift_mc[stage]
            rows.append(
                [
                    f"{stage} fit",
                    pr,
                    wr,
                    pc,
                    wc,
                    pc - pr,
                    float(np.hypot(er, ec)),
                    shift,
                    err,
                    self.mean_shift_linear[stage],
                    self.mean_shift_linear_events[stage],
                    self.resolution[stage],
                ]
            )
        cols = [
            "m_jj",
            "peak ref [GeV]",
            "width ref [GeV]",
            "peak cand [GeV]",
            "width cand [GeV]",
            "peak shift [GeV]",
            "peak shift error, uncorrelated [GeV]",
            "mean shift MC [GeV]",
            "mean shift MC error [GeV]",
            "mean shift linear, mean bias [GeV]",
            "mean shift linear, per event [GeV]",
            "m_jj - m_true core width (ref) [GeV]",
        ]
        return Table(
            "Dijet mass with the reference and the candidate jet response, before and after the fit", cols, rows
        )


def compare_responses(
    key: jax.Array,
    e_true: Any,
    eta: Any,
    cos_opening: Any,
    reference: Any,
    candidate: Any,
    constraint: MassConstraint,
    masses: Any = None,
    bias: JetEnergyBias | None = None,
    **fit_options: Any,
) -> ResponseComparison:
    """Measure the truth jets (E_true (N, 2) [GeV], eta (N, 2)) with the reference and with the candidate response
    (both calibrated with the reference's calibration; common random numbers where both models have ``generate``, see
    :func:`measure_jets`: the event-by-event differences then carry the response difference), fit both samples with the
    reference resolution model, and compare m_jj before and after the fit. ``bias``: the measured jet-energy bias
    of the candidate (default: :func:`measure_response_bias` with a key split from ``key``). Linearised mean shifts:
    <(dm/dE_meas) . (bias(E_meas, eta) E_meas)> over the reference-measured events (the mean bias only, as from a
    jet-energy-scale table; the bias, a function of E_true, is evaluated at the measured energy) and, with common
    random numbers, <(dm/dE_meas) . (E_cand - E_ref)> (per event: includes the resolution difference, which shifts
    <m_jj> in second order through the correlation of dm/dE with the fluctuation)."""
    k_meas, k_bias = jax.random.split(key)
    e_ref = measure_jets(k_meas, e_true, eta, reference, calibration=reference)
    e_cand = measure_jets(k_meas, e_true, eta, candidate, calibration=reference)
    if bias is None:
        bias = measure_response_bias(k_bias, candidate, reference)
    fits = {
        "reference": kinfit(e_ref, reference, cos_opening, constraint, masses, **fit_options),
        "candidate": kinfit(e_cand, reference, cos_opening, constraint, masses, **fit_options),
    }
    peaks = {}
    for name, fit in fits.items():
        peaks[f"{name}/before"] = gaussian_core(fit.mjj_measured)
        peaks[f"{name}/after"] = gaussian_core(fit.mjj)
    n = e_ref.shape[0]
    shift_mc = {}
    for stage, attr in (("before", "mjj_measured"), ("after", "mjj")):
        a, b = getattr(fits["candidate"], attr), getattr(fits["reference"], attr)
        shift_mc[stage] = (float(a.mean() - b.mean()), float((a - b).std(ddof=1) / np.sqrt(n)))  # paired events
    jac = kinfit_jacobian(e_ref, reference, cos_opening, constraint, masses, **fit_options)
    d = bias(e_ref, np.asarray(eta, dtype=np.float64)) * e_ref
    paired = hasattr(reference, "generate") and hasattr(candidate, "generate")
    d_events = e_cand - e_ref
    linear, linear_events = {}, {}
    for stage, j in (("before", jac.mjj_measured), ("after", jac.mjj)):
        linear[stage] = float(np.einsum("nj,nj->n", j, d).mean())
        linear_events[stage] = float(np.einsum("nj,nj->n", j, d_events).mean()) if paired else float("nan")
    with jax.enable_x64(True):
        m = None if masses is None else jnp.asarray(masses, jnp.float64)
        m_true = np.asarray(dijet_mass(jnp.asarray(e_true, jnp.float64), jnp.asarray(cos_opening, jnp.float64), m))
    resolution = {
        "before": gaussian_core(fits["reference"].mjj_measured - m_true)[1],
        "after": gaussian_core(fits["reference"].mjj - m_true)[1],
    }
    return ResponseComparison(peaks, shift_mc, linear, linear_events, resolution, n)
