"""Jet energy response: the reference (fitted to the calorimeter simulator) and a conditional-flow surrogate.

Both are response models (:mod:`surrinf.response`) on jets: conditions are a float array ``(N, 2)`` with columns
(E_true [GeV], eta) (a 1-D ``(N,)`` array is read as E_true with eta = 0), observations are the measured jet energies
E_reco ``(N,)`` [GeV].

- :class:`JetResponse`, the reference: E_reco = E_true * (mu(E_true) + sigma_rel(E_true) * z), z ~ N(0, 1), with the
  jet energy scale mu(E) = s0 + s1 ln(E / 100 GeV) and the relative resolution
  sigma(E) / E = sqrt((a / sqrt(E))^2 + b^2 + (c / E)^2). :meth:`JetResponse.from_calorimeter` fits it to showers of
  the reference calorimeter simulator, :meth:`JetResponse.from_showers` to any showers grouped by beam energy (for
  example a shower surrogate's); :func:`default_jet_response` holds that fit for the default calorimeter.
  Float64 (statistics precision, entered locally).
- :class:`JetResponseFlow`, the surrogate: a conditional spline flow of the standardised response
  x = (E_reco / E_true - loc) / scale given ((ln E_true - ln_e_mean) / ln_e_sd, eta / eta_scale), trained on draws
  of a reference by :func:`fit_jet_response_flow`. Float32 (generator precision). Saved and loaded with
  :func:`surrinf.generators.save` / :func:`surrinf.generators.load` (model type ``"jet_response_flow"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import curve_fit

from surrinf._checks import check_positive_int
from surrinf._precision import float64
from surrinf.generators import TrainConfig, TrainResult, build_flow, flow_loss, register_model, train
from surrinf.generators.flow import AutoregressiveFlow, CouplingFlow
from surrinf.report import Measurement, Table
from surrinf.sim import Calorimeter, calorimeter

__all__ = [
    "DEFAULT_CALIBRATION_ENERGIES_GEV",
    "DEFAULT_JET_FLOW_CONFIG",
    "DEFAULT_JET_TRAIN_CONFIG",
    "E_REF_GEV",
    "JetResponse",
    "JetResponseFitReport",
    "JetResponseFlow",
    "default_jet_response",
    "fit_jet_response_flow",
]

#: Reference energy of the jet-energy-scale slope: mu(E) = s0 + s1 ln(E / E_REF_GEV) [GeV].
E_REF_GEV = 100.0
#: Beam energies [GeV] of :meth:`JetResponse.from_calorimeter`.
DEFAULT_CALIBRATION_ENERGIES_GEV = (5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
_PARAM_NAMES = ("s0", "s1", "a", "b", "c")
_N_CALIBRATE_ITERATIONS = 8
_CALIBRATE_RTOL = 1e-10
_LOG_2PI = math.log(2.0 * math.pi)

# The embedded reference: the fit of the default calorimeter ("default" geometry, W/Si, no cell noise), produced by
#   .venv/bin/python -c "import jax; from surrinf.kinfit.response import JetResponse; \
#       r, rep = JetResponse.from_calorimeter(jax.random.key(0)); print(rep.parameter_table().to_markdown())"
# (8 energies 5 GeV - 1 TeV, 2000 showers each, ~10 s on 2 CPU cores). Values and one-sigma statistical errors:
_DEFAULT_PARAMS = {
    "s0": 0.9914989567859349,
    "s1": -0.001251294404778414,
    "a": 0.16854312077934494,
    "b": 0.002961427469252898,
    "c": 0.07167723341134176,
}
_DEFAULT_ERRORS = {
    "s0": 0.0001818683129841371,
    "s1": 9.839574209829309e-05,
    "a": 0.0017414591134368097,
    "b": 0.00023468905434826127,
    "c": 0.04024890683947127,
}
#: chi2 and ndf of the embedded fits. The mean response is not exactly linear in ln E (it falls faster above
#: ~200 GeV, longitudinal leakage): chi2 16.8 for 6 ndf, pulls up to 1.9; the resolution form gives 11.0 for 5 ndf.
_DEFAULT_CHI2 = {"mean": (16.82068657004912, 6), "resolution": (11.030115519687971, 5)}


# --------------------------------------------------------------------------------------------- input checks


def _is_traced(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def _check_values(x: np.ndarray, name: str, *, positive: bool, what: str) -> None:
    """ValueError naming ``name`` when ``x`` (concrete) holds NaN/inf or, with ``positive``, values <= 0."""
    if not np.all(np.isfinite(x)):
        bad = np.flatnonzero(~np.isfinite(np.ravel(x)))
        raise ValueError(f"{name} must be finite ({what}); found NaN or inf at flat index {int(bad[0])}")
    if positive and np.any(x <= 0):
        bad = np.flatnonzero(np.ravel(x) <= 0)
        raise ValueError(f"{name} must be > 0 ({what}); got {float(np.ravel(x)[bad[0]])!r} at flat index {int(bad[0])}")


def _as_array(x: Any, name: str, dtype: Any, *, positive: bool, what: str) -> jax.Array:
    """``x`` as a jax array of ``dtype``; concrete values are checked (finite, and > 0 with ``positive``)."""
    if _is_traced(x):
        return jnp.asarray(x, dtype=dtype)
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a real array ({what}): {e}") from None
    _check_values(a, name, positive=positive, what=what)
    return jnp.asarray(a, dtype=dtype)


def _split_conditions(conditions: Any, dtype: Any) -> tuple[jax.Array, jax.Array]:
    """Conditions (N,) = E_true or (N, 1) / (N, 2) = (E_true [GeV], eta) -> E_true (N,), eta (N,) of ``dtype``."""
    if not _is_traced(conditions):
        try:
            conditions = np.asarray(conditions, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"conditions must be a real array (N, 2) = (E_true [GeV], eta): {e}") from None
    shape = jnp.shape(conditions)
    if len(shape) == 1:
        e, eta = conditions, None
    elif len(shape) == 2 and shape[1] in (1, 2):
        e = conditions[:, 0]
        eta = conditions[:, 1] if shape[1] == 2 else None
    else:
        raise ValueError(f"conditions must have shape (N,) = E_true [GeV] or (N, 2) = (E_true [GeV], eta), got {shape}")
    e = _as_array(e, "conditions[:, 0] (E_true)", dtype, positive=True, what="true jet energy [GeV]")
    if eta is None:
        return e, jnp.zeros_like(e)
    return e, _as_array(eta, "conditions[:, 1] (eta)", dtype, positive=False, what="pseudorapidity")


def _check_observations(e_reco: Any, n: int, dtype: Any, name: str = "e_reco") -> jax.Array:
    """E_reco (N,) [GeV] (or standard-normal noise (N,)), finite (may be <= 0: the densities are on the real line)."""
    what = "standard-normal draw" if name == "noise" else "measured jet energy [GeV]"
    if jnp.ndim(e_reco) != 1 or jnp.shape(e_reco)[0] != n:
        raise ValueError(f"{name} must have shape (N={n},) (one {what} per row of conditions), got {jnp.shape(e_reco)}")
    return _as_array(e_reco, name, dtype, positive=False, what=what)


def _finite_float(value: Any, name: str, *, minimum: float | None = None, strict: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if minimum is not None and (v < minimum or (strict and v == minimum)):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value!r}")
    return v


# --------------------------------------------------------------------------------------------- reference


class JetResponse(eqx.Module):
    """The reference jet energy response: Gaussian E_reco given E_true, with an energy-dependent scale and width.

    Mean response (jet energy scale) mu(E) = s0 + s1 ln(E / 100 GeV) [1]; relative resolution
    sigma(E) / E = sqrt((a / sqrt(E))^2 + b^2 + (c / E)^2) with a [GeV^1/2] (stochastic), b [1] (constant) and
    c [GeV] (noise term); E_reco = E_true (mu(E_true) + sigma_rel(E_true) z), z ~ N(0, 1).

    The resolution is the electromagnetic calorimeter's (:meth:`from_calorimeter`): jets in this library are treated
    as showering in the reference calorimeter, and hadronic effects (non-compensation, fragmentation, out-of-cone
    losses) are outside the scope of the reference. The response is eta-independent: the calorimeter simulator models
    normal incidence, so the eta column of the conditions is accepted and ignored.

    The five numbers are static float fields (not trained; under jit they are compile-time constants, so each
    :meth:`with_scale` variant compiles its own kernels). Methods run in float64 (entered locally) and return float64
    jax arrays; concrete inputs are checked (finite, E > 0), traced inputs are not. Inside a caller's jit/vmap, call
    them from a float64 region (``jax.enable_x64(True)``, as the statistics modules do): a float32 trace cannot draw
    the float64 normals of :meth:`sample`.
    """

    s0: float = eqx.field(static=True, converter=float)
    s1: float = eqx.field(static=True, converter=float)
    a: float = eqx.field(static=True, converter=float)
    b: float = eqx.field(static=True, converter=float)
    c: float = eqx.field(static=True, converter=float)

    def __check_init__(self) -> None:
        _finite_float(self.s0, "s0 (mean response at 100 GeV)", minimum=0.0, strict=True)
        _finite_float(self.s1, "s1 (jet-energy-scale slope per unit ln E)")
        _finite_float(self.a, "a (stochastic term [GeV^1/2])", minimum=0.0)
        _finite_float(self.b, "b (constant term)", minimum=0.0)
        _finite_float(self.c, "c (noise term [GeV])", minimum=0.0)
        if self.a == 0 and self.b == 0 and self.c == 0:
            raise ValueError("the resolution must not vanish: at least one of a, b, c must be > 0")

    # ------------------------------------------------------------------ response functions (float64)
    def _mu(self, e: jax.Array) -> jax.Array:
        return self.s0 + self.s1 * jnp.log(e / E_REF_GEV)

    def _sigma_rel(self, e: jax.Array) -> jax.Array:
        return jnp.sqrt(self.a**2 / e + self.b**2 + (self.c / e) ** 2)

    @float64
    def mean_response(self, e_true_gev: Any) -> jax.Array:
        """mu(E) = s0 + s1 ln(E / 100 GeV) [1] for true energies E [GeV] (any shape, > 0)."""
        e = _as_array(e_true_gev, "e_true_gev", jnp.float64, positive=True, what="true energy [GeV]")
        return _ref_functions(self, e)[0]

    @float64
    def relative_resolution(self, e_true_gev: Any) -> jax.Array:
        """sigma(E) / E = sqrt(a^2 / E + b^2 + c^2 / E^2) [1] for true energies E [GeV] (any shape, > 0)."""
        e = _as_array(e_true_gev, "e_true_gev", jnp.float64, positive=True, what="true energy [GeV]")
        return _ref_functions(self, e)[1]

    @float64
    def sigma_gev(self, e_true_gev: Any) -> jax.Array:
        """Absolute resolution sigma(E) = E sigma_rel(E) [GeV] for true energies E [GeV] (any shape, > 0)."""
        e = _as_array(e_true_gev, "e_true_gev", jnp.float64, positive=True, what="true energy [GeV]")
        return _ref_functions(self, e)[2]

    # ------------------------------------------------------------------ response-model protocol
    @float64
    def sample(self, key: jax.Array, conditions: Any) -> jax.Array:
        """Measured energies E_reco (N,) [GeV, float64] for conditions (N, 2) = (E_true [GeV], eta) or (N,) = E_true,
        one draw per row from the JAX PRNG ``key`` (same key, same bits)."""
        e, _ = _split_conditions(conditions, jnp.float64)
        return _ref_sample(self, key, e)

    @float64
    def generate(self, noise: Any, conditions: Any) -> jax.Array:
        """Deterministic sampler: E_reco (N,) [GeV, float64] = E (mu(E) + sigma_rel(E) z) for standard-normal noise z
        (N,) and conditions (N, 2) or (N,). The same noise in two response models gives common random numbers (the
        quantile coupling used by :func:`surrinf.kinfit.measure_jets`)."""
        e, _ = _split_conditions(conditions, jnp.float64)
        z = _check_observations(noise, e.shape[0], jnp.float64, name="noise")
        return _ref_generate(self, z, e)

    @float64
    def log_prob(self, e_reco: Any, conditions: Any) -> jax.Array:
        """Gaussian log density (N,) [ln(1/GeV)] of measured energies E_reco (N,) [GeV] given conditions (N, 2) or
        (N,): mean E mu(E), width E sigma_rel(E)."""
        e, _ = _split_conditions(conditions, jnp.float64)
        return _ref_log_prob(self, _check_observations(e_reco, e.shape[0], jnp.float64), e)

    # ------------------------------------------------------------------ calibration and variations
    @float64
    def calibrate(self, e_reco: Any) -> jax.Array:
        """Invert the mean response: the E [GeV] with E mu(E) = e_reco, for measured energies e_reco [GeV] (any shape,
        > 0), to 1e-10 relative. Newton iterations in ln E (a fixed number, vectorised); needs mu(E) > 0 and
        mu(E) + s1 > 0 (E mu(E) increasing) near the solution, true for any physical scale. Concrete inputs are
        checked for convergence (ValueError otherwise)."""
        y = _as_array(e_reco, "e_reco", jnp.float64, positive=True, what="measured jet energy [GeV]")
        e, rel = _ref_calibrate(self, y)
        if not _is_traced(e):
            rel = np.ravel(np.asarray(rel))
            if not np.all(rel <= _CALIBRATE_RTOL):
                i = int(np.argmax(np.where(np.isfinite(rel), rel, np.inf)))
                raise ValueError(
                    f"calibrate did not converge for e_reco = {float(np.ravel(np.asarray(y))[i])!r} GeV (relative "
                    f"residual {float(rel[i]):.3g}): the mean response mu(E) must stay positive there"
                )
        return e

    def with_scale(self, factor: float) -> JetResponse:
        """A copy whose mean response is multiplied by ``factor`` (> 0): a jet-energy-scale shift (s0, s1 scaled).
        The relative resolution is unchanged (a rescaling of E_reco by ``factor`` would also widen sigma by
        ``factor``; that second-order effect is not included)."""
        f = _finite_float(factor, "factor (jet-energy-scale multiplier)", minimum=0.0, strict=True)
        return JetResponse(self.s0 * f, self.s1 * f, self.a, self.b, self.c)

    def to_dict(self) -> dict[str, float]:
        """JSON-safe {s0, s1 [1], a [GeV^1/2], b [1], c [GeV]}."""
        return {name: float(getattr(self, name)) for name in _PARAM_NAMES}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JetResponse:
        """Inverse of :meth:`to_dict`; missing or unknown keys raise ValueError."""
        if not isinstance(d, dict):
            raise ValueError(f"from_dict needs a dict with keys {_PARAM_NAMES}, got {type(d).__name__}")
        missing, unknown = set(_PARAM_NAMES) - set(d), set(d) - set(_PARAM_NAMES)
        if missing or unknown:
            raise ValueError(
                f"JetResponse dict must have exactly the keys {_PARAM_NAMES}; missing {sorted(missing)}, "
                f"unknown {sorted(unknown)}"
            )
        return cls(**{k: _finite_float(d[k], k) for k in _PARAM_NAMES})

    # ------------------------------------------------------------------ fit to the calorimeter simulator
    @classmethod
    def from_calorimeter(
        cls,
        key: jax.Array,
        calo: Calorimeter | None = None,
        energies_gev: Any = DEFAULT_CALIBRATION_ENERGIES_GEV,
        n_per_energy: int = 2000,
    ) -> tuple[JetResponse, JetResponseFitReport]:
        """Fit the reference response to showers of the calorimeter simulator (default: ``calorimeter("default")``).

        ``n_per_energy`` showers at each of the ``energies_gev`` (K,) [GeV] (>= 4 distinct, in the simulator's range)
        are simulated with ``key`` and fitted by :meth:`from_showers` with the response
        r = sum(voxels) / (E f_samp s) (f_samp: the sampling fraction, s: the detector energy scale).
        """
        calo = calorimeter("default") if calo is None else calo
        if not isinstance(calo, Calorimeter):
            raise ValueError(f"calo must be a surrinf.sim.Calorimeter or None, got {type(calo).__name__}")
        energies = _check_beam_energies(np.asarray(energies_gev, dtype=np.float64))
        n = check_positive_int(n_per_energy, "n_per_energy", minimum=10)
        e_all = np.repeat(energies, n)
        showers = np.asarray(calo.simulate(key, e_all).showers, dtype=np.float64)
        scale = calo.params.energy_scale * calo.material.sampling_fraction
        return cls.from_showers(e_all, showers.sum(axis=1), scale, scale_label="f_samp s")

    @classmethod
    def from_showers(
        cls,
        energies_gev: Any,
        visible_gev: Any,
        scale: float = 1.0,
        *,
        title: str = "Jet response of the reference calorimeter",
        scale_label: str | None = None,
    ) -> tuple[JetResponse, JetResponseFitReport]:
        """Fit the response to any showers (simulated, generated by a surrogate, or measured), grouped by energy.

        ``energies_gev`` (N,) [GeV]: beam energy of each shower, taking >= 4 distinct values (the groups, in order of
        first appearance) with >= 10 showers each (bin the energies of a continuous spectrum first); ``visible_gev``
        (N,) [GeV]: the shower's visible energy (sum of its voxels); ``scale`` (> 0): the visible fraction that
        defines unit response, r = visible / (E scale) (f_samp s for a sampling calorimeter). Per energy the mean
        response has error sd / sqrt(n) and the relative resolution sd(r) has error
        sqrt((m4 / sd^4 - (n - 3) / (n - 1)) / (4 n)) sd (any shape, m4 the fourth central moment). Weighted least
        squares (``curve_fit`` with the errors, ``absolute_sigma=True``) of mu(E) = s0 + s1 ln(E / 100 GeV) and of
        the resolution form (a, b, c >= 0). ``title``: of the report's per-energy table; ``scale_label``: how its
        caption names the scale (default: its value).
        """
        e_all = np.asarray(energies_gev, dtype=np.float64)
        vis = np.asarray(visible_gev, dtype=np.float64)
        if e_all.ndim != 1 or vis.shape != e_all.shape:
            raise ValueError(
                f"energies_gev and visible_gev must have the same shape (N,) [GeV], got {e_all.shape} and {vis.shape}"
            )
        _check_values(e_all, "energies_gev", positive=True, what="beam energy [GeV]")
        _check_values(vis, "visible_gev", positive=False, what="visible shower energy [GeV]")
        scale = _finite_float(scale, "scale (visible fraction of unit response)", minimum=0.0, strict=True)
        uniq, first, inverse, counts = np.unique(e_all, return_index=True, return_inverse=True, return_counts=True)
        order = np.argsort(first, kind="stable")  # groups in order of first appearance
        energies = _check_beam_energies(uniq[order])
        counts = counts[order]
        if counts.min() < 10:
            k = int(np.argmin(counts))
            raise ValueError(
                f"every energy needs >= 10 showers to fit a resolution; {float(energies[k])!r} GeV has {int(counts[k])}"
            )
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        group = rank[inverse.ravel()]
        r_all = vis / (e_all * scale)
        mean, sd, m4 = (np.empty(energies.size) for _ in range(3))
        for k in range(energies.size):
            r = r_all[group == k]
            mean[k] = r.mean()
            sd[k] = r.std(ddof=1)
            m4[k] = np.mean((r - mean[k]) ** 4)
        n = counts.astype(np.float64)
        mean_err = sd / np.sqrt(n)
        sd_err = sd * np.sqrt(np.maximum(m4 / sd**4 - (n - 3) / (n - 1), 0.0) / (4 * n))
        if np.any(sd_err <= 0) or np.any(sd <= 0):
            raise ValueError("the response has zero spread at some energy; cannot fit a resolution")

        def mu_model(e, s0, s1):
            return s0 + s1 * np.log(e / E_REF_GEV)

        def res_model(e, a, b, c):
            return np.sqrt(a**2 / e + b**2 + (c / e) ** 2)

        p_mu, c_mu = curve_fit(mu_model, energies, mean, p0=(1.0, 0.0), sigma=mean_err, absolute_sigma=True)
        p_res, c_res = curve_fit(
            res_model,
            energies,
            sd,
            p0=(0.15, 0.005, 0.05),
            sigma=sd_err,
            absolute_sigma=True,
            bounds=(0.0, np.inf),
        )
        fit_mu, fit_res = mu_model(energies, *p_mu), res_model(energies, *p_res)
        chi2_mu = float(np.sum(((mean - fit_mu) / mean_err) ** 2))
        chi2_res = float(np.sum(((sd - fit_res) / sd_err) ** 2))
        values = (*p_mu, *p_res)
        errors = (*np.sqrt(np.diag(c_mu)), *np.sqrt(np.diag(c_res)))
        params = {k: Measurement(v, e) for k, v, e in zip(_PARAM_NAMES, values, errors, strict=True)}
        n_min, n_max = int(counts.min()), int(counts.max())
        n_text = f"{n_min}" if n_min == n_max else f"{n_min}-{n_max}"
        table = Table(
            title,
            ["E [GeV]", "mean response", "fit mu", "pull mu", "relative resolution", "fit sigma/E", "pull sigma"],
            caption=(
                f"{n_text} showers per energy; response r = E_visible / (E {scale_label or f'x {scale:.6g}'}); "
                f"pull = (measured - fit) / error. "
                f"chi2/ndf: mean {chi2_mu:.2f}/{energies.size - 2}, resolution {chi2_res:.2f}/{energies.size - 3}."
            ),
        )
        for i, e in enumerate(energies):
            table.add_row(
                [
                    float(e),
                    Measurement(mean[i], mean_err[i]),
                    float(fit_mu[i]),
                    float((mean[i] - fit_mu[i]) / mean_err[i]),
                    Measurement(sd[i], sd_err[i]),
                    float(fit_res[i]),
                    float((sd[i] - fit_res[i]) / sd_err[i]),
                ]
            )
        report = JetResponseFitReport(
            parameters=params,
            covariance_mean=np.asarray(c_mu),
            covariance_resolution=np.asarray(c_res),
            chi2_mean=chi2_mu,
            ndf_mean=energies.size - 2,
            chi2_resolution=chi2_res,
            ndf_resolution=energies.size - 3,
            energies_gev=energies,
            mean_response=mean,
            mean_response_err=mean_err,
            resolution=sd,
            resolution_err=sd_err,
            n_per_energy=n_min,
            table=table,
        )
        return cls(*values), report


def _check_beam_energies(energies: np.ndarray) -> np.ndarray:
    """The K >= 4 distinct positive beam energies [GeV] of a response fit (ValueError naming energies_gev)."""
    if energies.ndim != 1 or energies.size < 4:
        raise ValueError(f"energies_gev must be a 1-D array of >= 4 beam energies [GeV], got shape {energies.shape}")
    _check_values(energies, "energies_gev", positive=True, what="beam energy [GeV]")
    if np.unique(energies).size != energies.size:
        raise ValueError(f"energies_gev must be distinct, got {energies.tolist()}")
    return energies


@eqx.filter_jit
def _ref_functions(model: JetResponse, e: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """mu(E), sigma_rel(E), sigma(E) [GeV] for E [GeV] (one compiled kernel per shape)."""
    sig = model._sigma_rel(e)
    return model._mu(e), sig, e * sig


@eqx.filter_jit
def _ref_sample(model: JetResponse, key: jax.Array, e: jax.Array) -> jax.Array:
    z = jax.random.normal(key, e.shape, dtype=jnp.float64)
    return e * (model._mu(e) + model._sigma_rel(e) * z)


@eqx.filter_jit
def _ref_generate(model: JetResponse, z: jax.Array, e: jax.Array) -> jax.Array:
    return e * (model._mu(e) + model._sigma_rel(e) * z)


@eqx.filter_jit
def _ref_log_prob(model: JetResponse, y: jax.Array, e: jax.Array) -> jax.Array:
    sd = e * model._sigma_rel(e)
    u = (y - e * model._mu(e)) / sd
    return -0.5 * u * u - jnp.log(sd) - 0.5 * _LOG_2PI


@eqx.filter_jit
def _ref_calibrate(model: JetResponse, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """E with E mu(E) = y and the relative residual |E mu(E) / y - 1|: Newton in u = ln E on
    h(u) = u + ln mu(e^u) - ln y, h'(u) = 1 + s1 / mu."""
    ln_y = jnp.log(y)

    def newton(_, u):
        mu = model._mu(jnp.exp(u))
        return u - (u + jnp.log(mu) - ln_y) / (1.0 + model.s1 / mu)

    u0 = ln_y - jnp.log(jnp.maximum(model._mu(y), 1e-3))  # E0 = y / mu(y), within ~1e-4 of the root
    e = jnp.exp(jax.lax.fori_loop(0, _N_CALIBRATE_ITERATIONS, newton, u0))
    return e, jnp.abs(e * model._mu(e) / y - 1.0)


@dataclass(frozen=True)
class JetResponseFitReport:
    """Outcome of :meth:`JetResponse.from_showers` (and :meth:`JetResponse.from_calorimeter`).

    ``parameters``: {s0, s1, a [GeV^1/2], b, c [GeV]} as :class:`~surrinf.report.Measurement` (value, one-sigma
    statistical error); ``covariance_mean`` (2, 2) of (s0, s1) and ``covariance_resolution`` (3, 3) of (a, b, c);
    chi2 and ndf of both fits; per energy (K,): beam energies [GeV], mean response and relative resolution with their
    errors; ``n_per_energy``: showers per energy (the smallest group when they differ); ``table``: the per-energy
    points, fits and pulls.
    """

    parameters: dict[str, Measurement]
    covariance_mean: np.ndarray
    covariance_resolution: np.ndarray
    chi2_mean: float
    ndf_mean: int
    chi2_resolution: float
    ndf_resolution: int
    energies_gev: np.ndarray
    mean_response: np.ndarray
    mean_response_err: np.ndarray
    resolution: np.ndarray
    resolution_err: np.ndarray
    n_per_energy: int
    table: Table

    def parameter_table(self) -> Table:
        """The fitted parameters with errors and the fit qualities as a :class:`~surrinf.report.Table`."""
        units = {"s0": "1", "s1": "1", "a": "GeV^1/2", "b": "1", "c": "GeV"}
        t = Table(
            "Reference jet response: fitted parameters",
            ["parameter", "unit", "value"],
            notes=[
                f"mean response chi2/ndf = {self.chi2_mean:.2f}/{self.ndf_mean}",
                f"resolution chi2/ndf = {self.chi2_resolution:.2f}/{self.ndf_resolution}",
            ],
        )
        for name in _PARAM_NAMES:
            t.add_row([name, units[name], self.parameters[name]])
        return t


def default_jet_response() -> JetResponse:
    """The reference jet response of the default calorimeter (constants fitted once, see the module source)."""
    return JetResponse(**_DEFAULT_PARAMS)


# --------------------------------------------------------------------------------------------- surrogate

#: Flow of :func:`fit_jet_response_flow` (dim and cond_dim are set by it). The splines act on [-bound, bound] of the
#: standardised response x; outside it every layer is the identity (Gaussian tails of the base distribution). x is
#: standardised with the sd of the whole training sample, so at the low-energy end of a wide training range the
#: response is wider than one unit of x (10 GeV jets in a 10 GeV - 1 TeV sample: sd(x) = 2.2); bound 8 keeps their
#: tails inside the splines (bound 5 gave a 6 % too narrow response at 10 GeV).
DEFAULT_JET_FLOW_CONFIG: dict[str, Any] = {
    "type": "autoregressive",
    "n_layers": 4,
    "hidden": [64, 64],
    "n_bins": 16,
    "bound": 8.0,
}

#: Training of :func:`fit_jet_response_flow`, sized for ~2e5 jets: 8000 steps of 1024 (~45 epochs), ~2.7 minutes on
#: 2 CPU cores (measured: 2e5 jets, E log-uniform 10 GeV - 1 TeV, validation NLL 1.054). The kinematic-fit study
#: trains it once and caches it.
DEFAULT_JET_TRAIN_CONFIG = TrainConfig(
    batch_size=1024,
    max_steps=8000,
    learning_rate=2e-3,
    warmup_steps=100,
    eval_every=500,
    checkpoint_every=0,
    log_every=100,
)


@register_model("jet_response_flow")
class JetResponseFlow(eqx.Module):
    """Conditional-flow surrogate of a jet energy response: the response-model protocol in float32.

    The flow (``dim = 1``, ``cond_dim = 2``) models x = (E_reco / E_true - loc) / scale given the standardised
    conditions ((ln E_true - ln_e_mean) / ln_e_sd, eta / eta_scale). The standardisation constants are static float
    fields set from the training data (not trained, stored in the saved config). ``log_prob`` is the exact density
    in E_reco [1/GeV]: log p_flow(x) - ln(scale) - ln(E_true).
    """

    flow: AutoregressiveFlow | CouplingFlow
    loc: float = eqx.field(static=True, converter=float)
    scale: float = eqx.field(static=True, converter=float)
    ln_e_mean: float = eqx.field(static=True, converter=float)
    ln_e_sd: float = eqx.field(static=True, converter=float)
    eta_scale: float = eqx.field(static=True, converter=float)

    def __check_init__(self) -> None:
        if self.flow.dim != 1 or self.flow.cond_dim != 2:
            raise ValueError(
                f"the flow must have dim=1, cond_dim=2, got dim={self.flow.dim}, cond_dim={self.flow.cond_dim}"
            )
        _finite_float(self.loc, "loc")
        _finite_float(self.ln_e_mean, "ln_e_mean")
        for name in ("scale", "ln_e_sd", "eta_scale"):
            _finite_float(getattr(self, name), name, minimum=0.0, strict=True)

    def _cond(self, e: jax.Array, eta: jax.Array) -> jax.Array:
        """(N,) E_true [GeV], (N,) eta -> standardised conditions (N, 2) float32."""
        return jnp.stack([(jnp.log(e) - self.ln_e_mean) / self.ln_e_sd, eta / self.eta_scale], axis=1).astype(
            jnp.float32
        )

    def sample(self, key: jax.Array, conditions: Any) -> jax.Array:
        """Measured energies E_reco (N,) [GeV, float32] for conditions (N, 2) = (E_true [GeV], eta) or (N,) = E_true,
        one draw per row from the JAX PRNG ``key`` (same key, same bits)."""
        e, eta = _split_conditions(conditions, jnp.float32)
        return _flow_sample(self, key, e, eta)

    def generate(self, noise: Any, conditions: Any) -> jax.Array:
        """Deterministic sampler: E_reco (N,) [GeV, float32] from standard-normal noise (N,) through the flow's
        generative direction, for conditions (N, 2) or (N,). The map is monotone in the noise (a one-dimensional
        spline flow), so the same noise in the reference and here couples the two by quantiles."""
        e, eta = _split_conditions(conditions, jnp.float32)
        z = _check_observations(noise, e.shape[0], jnp.float32, name="noise")
        return _flow_generate(self, z, e, eta)

    def log_prob(self, e_reco: Any, conditions: Any) -> jax.Array:
        """Exact log density (N,) [ln(1/GeV), float32] of measured energies E_reco (N,) [GeV] given conditions."""
        e, eta = _split_conditions(conditions, jnp.float32)
        y = _check_observations(e_reco, e.shape[0], jnp.float32)
        return _flow_log_prob(self, y, e, eta)

    def config(self) -> dict[str, Any]:
        """JSON-safe config: the flow's and the standardisation constants (``from_config`` rebuilds the skeleton)."""
        return {
            "flow": self.flow.config(),
            "loc": self.loc,
            "scale": self.scale,
            "ln_e_mean": self.ln_e_mean,
            "ln_e_sd": self.ln_e_sd,
            "eta_scale": self.eta_scale,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], key: jax.Array) -> JetResponseFlow:
        """Skeleton for :func:`surrinf.generators.load` (the flow's array leaves are overwritten by the saved ones)."""
        names = ("loc", "scale", "ln_e_mean", "ln_e_sd", "eta_scale")
        return cls(build_flow(config["flow"], key), *(config[k] for k in names))


@eqx.filter_jit
def _flow_sample(model: JetResponseFlow, key: jax.Array, e: jax.Array, eta: jax.Array) -> jax.Array:
    x = model.flow.sample(key, model._cond(e, eta))[:, 0]
    return e * (model.loc + model.scale * x)


@eqx.filter_jit
def _flow_generate(model: JetResponseFlow, z: jax.Array, e: jax.Array, eta: jax.Array) -> jax.Array:
    x = jax.vmap(model.flow.inverse)(z[:, None], model._cond(e, eta))[0][:, 0]
    return e * (model.loc + model.scale * x)


@eqx.filter_jit
def _flow_log_prob(model: JetResponseFlow, y: jax.Array, e: jax.Array, eta: jax.Array) -> jax.Array:
    x = ((y / e - model.loc) / model.scale)[:, None]
    return model.flow.log_prob(x, model._cond(e, eta)) - jnp.log(e) - math.log(model.scale)


def _robust_scale(x: np.ndarray) -> float:
    """Standard deviation of ``x``, or 1 when it vanishes (constant column: nothing to standardise)."""
    sd = float(np.std(x))
    return sd if sd > 0 else 1.0


def fit_jet_response_flow(
    key: jax.Array,
    reference: Any,
    e_true_gev: Any,
    eta: Any,
    *,
    flow_config: dict[str, Any] | None = None,
    train_config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    progress: bool = False,
) -> tuple[JetResponseFlow, TrainResult]:
    """Train a :class:`JetResponseFlow` on E_reco drawn from ``reference`` for the truth E_true (N,) [GeV], eta (N,).

    ``reference``: a response model on jet conditions (N, 2) = (E_true [GeV], eta) returning E_reco (N,) [GeV], e.g.
    :func:`default_jet_response`. ``flow_config`` overrides :data:`DEFAULT_JET_FLOW_CONFIG` (``dim`` and ``cond_dim``
    are fixed to 1 and 2); ``train_config`` defaults to :data:`DEFAULT_JET_TRAIN_CONFIG`; the loss is the mean NLL of
    x given the conditions (:func:`surrinf.generators.flow_loss`). ``out_dir``: training log and checkpoint. The key
    is split into the reference draw, the flow initialisation and the training (split, batches).
    """
    if _is_traced(e_true_gev) or _is_traced(eta):
        raise ValueError("fit_jet_response_flow needs concrete e_true_gev and eta (it trains; do not jit it)")
    try:
        e, h = np.asarray(e_true_gev, dtype=np.float64), np.asarray(eta, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"e_true_gev [GeV] and eta must be real arrays of shape (N,): {err}") from None
    if e.ndim != 1 or e.size == 0:
        raise ValueError(f"e_true_gev must have shape (N,) [GeV] with N >= 1, got {e.shape}")
    if h.shape != e.shape:
        raise ValueError(f"eta must have the shape of e_true_gev {e.shape}, got {h.shape}")
    _check_values(e, "e_true_gev", positive=True, what="true jet energy [GeV]")
    _check_values(h, "eta", positive=False, what="pseudorapidity")
    user = dict(flow_config or {})
    for k in ("dim", "cond_dim"):
        if k in user and user[k] != {"dim": 1, "cond_dim": 2}[k]:
            raise ValueError(f"flow_config[{k!r}] is fixed by the jet response (dim=1, cond_dim=2), got {user[k]!r}")
    cfg = {**DEFAULT_JET_FLOW_CONFIG, **user, "dim": 1, "cond_dim": 2}

    k_data, k_init, k_train = jax.random.split(key, 3)
    cond = np.stack([e, h], axis=1)
    y = np.asarray(reference.sample(k_data, cond), dtype=np.float64)
    if y.shape != e.shape:
        raise ValueError(f"reference.sample returned shape {y.shape}, expected E_reco of shape {e.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("reference.sample returned NaN or inf measured energies")
    r = y / e
    loc, scale = float(np.mean(r)), _robust_scale(r)
    ln_e = np.log(e)
    ln_e_mean, ln_e_sd, eta_scale = float(np.mean(ln_e)), _robust_scale(ln_e), _robust_scale(h)

    flow = build_flow(cfg, k_init)
    skeleton = JetResponseFlow(flow, loc, scale, ln_e_mean, ln_e_sd, eta_scale)
    data = {
        "x": ((r - loc) / scale).astype(np.float32)[:, None],
        "cond": np.asarray(skeleton._cond(jnp.asarray(e, jnp.float32), jnp.asarray(h, jnp.float32))),
    }
    result = train(
        flow,
        flow_loss,
        data,
        k_train,
        train_config or DEFAULT_JET_TRAIN_CONFIG,
        out_dir=out_dir,
        progress=progress,
    )
    # Uncommitted copies of the trained leaves (the trainer returns device-committed arrays): a trained and a loaded
    # model then share the compiled sample / log_prob kernels instead of compiling them twice.
    trained = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)) if eqx.is_array(x) else x, result.model)
    return JetResponseFlow(trained, loc, scale, ln_e_mean, ln_e_sd, eta_scale), result
