"""Discovery significance Z0 with pyhf's q0 test statistic: asymptotic formulae or vectorised toys.

Conventions (Cowan, Cranmer, Gross, Vitells, arXiv:1007.1727):

- q0 = -2 ln [L(mu = 0, theta-hat-hat) / L(mu-hat, theta-hat)] for mu-hat >= 0, else 0; p0 = P(q0 >= q0_obs | mu = 0);
  Z0 = Phi^-1(1 - p0), reported as max(Z0, 0): an observation without excess (q0 = 0) has Z0 = 0 (toys give p0 = 1
  there, the asymptotic formula p0 = 0.5; both mean "no evidence").
- Expected significance: the Asimov dataset of signal + background, mu = 1 and every nuisance parameter at its nominal
  value (main and auxiliary data); its q0 is q0_A and the median expected Z0 = sqrt(q0_A). The +-1, +-2 sigma bands
  are the quantiles of Z0 for data from that signal + background point (asymptotically Z0 = sqrt(q0_A) + n).

``method="asymptotic"`` runs ``pyhf.infer.hypotest(0.0, ..., test_stat="q0", calctype="asymptotics")`` on the observed
data and on the Asimov dataset above (pyhf's numpy backend unless ``backend="jax"``; the JAX backend is contained by
:func:`~surrinf.sensitivity.backend.pyhf_backend`). ``method="toys"`` uses this module's own vectorised toy q0
(pyhf's ``toybased`` calculator fits toys one by one in Python and draws from numpy's global random state): pseudo-
experiments (main counts Poisson, auxiliary data from the constraint terms: Gaussian or Poisson) are drawn with numpy
from ``seed``, and both fits of every toy (mu = 0 fixed and mu free) run as one jit-compiled, vmapped projected-
Newton minimisation of pyhf's own ``model.logpdf`` under pyhf's JAX backend (float64, contained by ``pyhf_backend``,
so the process-wide state is restored afterwards). Toys are thrown like pyhf's ToyCalculator run on each dataset:
null toys for the observed p0 at (mu = 0, theta-hat-hat(0) fitted to the observed data), null toys for the expected
p0 at (mu = 0, theta-hat-hat(0) fitted to the Asimov data), signal toys at the Asimov point (mu = 1, nominal theta).
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pyhf
from scipy.stats import norm

from surrinf._checks import check_positive_int
from surrinf._xla import CPU_COMPILER_OPTIONS
from surrinf.report import Measurement, Table
from surrinf.sensitivity.backend import BACKENDS, pyhf_backend

__all__ = ["METHODS", "DiscoveryResult", "asimov_z0", "discovery_significance", "toy_q0"]

#: Accepted values of ``method``.
METHODS = ("asymptotic", "toys")
#: The expected-band keys: signal-like fluctuations of n standard deviations.
BAND_SIGMAS = (-2, -1, 0, 1, 2)
_MAX_NEWTON_STEPS = 50  # per fit; 3-8 projected Newton steps suffice from the generating point
_TOLERANCE = 1e-10  # a fit stops when its Newton decrement (predicted -ln L gain of the next step) is below this
_STEP_LENGTHS = (1.0, 0.5, 0.25, 0.1, 0.03, 0.01, 0.0)  # parallel line search; 0.0 keeps the fit monotone
_CHUNK = 512  # toys per compiled batch (one compilation per model; bounds memory)
_FD_STEP = 1e-6  # relative step of the forward-difference Hessian
# CPU: single-threaded Eigen (surrinf._xla, against the XLA CPU deadlock of vmapped linear algebra) and cheaper
# LLVM optimisation: the kernel is small per toy, compile time dominates (measured: about half the compile time)
_COMPILER_OPTIONS = {
    **CPU_COMPILER_OPTIONS,
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
}


@dataclass(frozen=True)
class DiscoveryResult:
    """Discovery significance: observed Z0 (None without data), median expected Z0 and its bands.

    ``z0_expected_bands`` maps n in (-2, -1, 0, 1, 2) to the expected Z0 for an n-sigma signal-like fluctuation (n = 0
    is the median). ``z0_toy_error`` / ``z0_expected_toy_error``: Monte Carlo uncertainty of the toy Z0 from the
    binomial error of the toy p-value, sqrt(p (1 - p) / n_toys) / phi(Z0) (None for asymptotics). ``q0_observed`` and
    ``q0_asimov`` are the test statistic on the data and on the Asimov dataset. ``n_unconverged``: toy fits whose
    Newton decrement stayed above tolerance (0 for asymptotics). A toy p0 of 0 gives Z0 = inf (more toys needed).
    ``p0_expected_bands``: the p0 of each band (same keys).
    """

    z0_observed: float | None
    p0_observed: float | None
    z0_expected_median: float
    z0_expected_bands: dict[int, float]
    method: str
    n_toys: int | None = None
    z0_toy_error: float | None = None
    z0_expected_toy_error: float | None = None
    q0_observed: float | None = None
    q0_asimov: float = math.nan
    p0_expected_bands: dict[int, float] = field(default_factory=dict)
    n_unconverged: int = 0

    def table(self, title: str = "Discovery significance") -> Table:
        """A :class:`~surrinf.report.Table`: one row for the observed and one per expected band (Z0, p0)."""

        def cell(z: float | None, err: float | None) -> Any:
            return None if z is None else (Measurement(z, err) if err is not None and math.isfinite(z) else z)

        rows: list[list[Any]] = [["observed", cell(self.z0_observed, self.z0_toy_error), self.p0_observed]]
        for n in BAND_SIGMAS:
            label = "expected median" if n == 0 else f"expected {n:+d} sigma"
            err = self.z0_expected_toy_error if n == 0 else None
            rows.append([label, cell(self.z0_expected_bands[n], err), self.p0_expected_bands.get(n)])
        notes = [
            f"method: {self.method}" + (f", {self.n_toys} toys per set" if self.n_toys else ""),
            "Z0 = max(Phi^-1(1 - p0), 0); expected: Asimov signal + background dataset (mu = 1, nominal nuisances)",
        ]
        return Table(title, ["", "Z0", "p0"], rows, notes=notes)


def asimov_z0(s: Any, b: Any, sigma_b: Any = None) -> np.ndarray | float:
    """Closed-form median discovery significance of a counting experiment with s signal, b background events.

    Without uncertainty: Z_A = sqrt(2((s + b) ln(1 + s/b) - s)). With an absolute background uncertainty sigma_b
    (an auxiliary Poisson measurement of b with tau = b / sigma_b^2; Cowan, Cranmer, Gross, Vitells):
    Z = sqrt(2((s + b) ln((s + b)(b + sigma_b^2) / (b^2 + (s + b) sigma_b^2))
               - (b^2 / sigma_b^2) ln(1 + sigma_b^2 s / (b (b + sigma_b^2))))).
    Broadcasts over arrays; s >= 0, b > 0, sigma_b > 0 [events].
    """
    s_arr, b_arr = np.asarray(s, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if not (np.all(np.isfinite(s_arr)) and np.all(s_arr >= 0)):
        raise ValueError(f"s must be finite signal counts >= 0 [events], got {s!r}")
    if not (np.all(np.isfinite(b_arr)) and np.all(b_arr > 0)):
        raise ValueError(f"b must be finite background counts > 0 [events], got {b!r}")
    if sigma_b is None:
        q = 2.0 * ((s_arr + b_arr) * np.log1p(s_arr / b_arr) - s_arr)
    else:
        sb = np.asarray(sigma_b, dtype=np.float64)
        if not (np.all(np.isfinite(sb)) and np.all(sb > 0)):
            raise ValueError(f"sigma_b must be a finite absolute background uncertainty > 0 [events], got {sigma_b!r}")
        v = sb**2
        n = s_arr + b_arr
        q = 2.0 * (
            n * np.log(n * (b_arr + v) / (b_arr**2 + n * v))
            - b_arr**2 / v * np.log1p(v * s_arr / (b_arr * (b_arr + v)))
        )
    z = np.sqrt(np.maximum(q, 0.0))  # q >= 0 analytically; rounding can give -1e-16 at s = 0
    return float(z) if z.ndim == 0 else z


def _z(p: float) -> float:
    """max(Phi^-1(1 - p), 0); inf for p = 0."""
    return max(float(norm.isf(p)), 0.0)


def _resolve(workspace_or_model: Any, data: Any) -> tuple[pyhf.pdf.Model, np.ndarray | None]:
    """(model, full observed data (main + aux) or None)."""
    if isinstance(workspace_or_model, pyhf.Workspace):
        model = workspace_or_model.model()
        if data is None:
            data = workspace_or_model.data(model)
    elif isinstance(workspace_or_model, pyhf.pdf.Model):
        model = workspace_or_model
    else:
        raise ValueError(
            f"workspace_or_model must be a pyhf.Workspace or pyhf.pdf.Model, got {type(workspace_or_model)}"
        )
    if model.config.poi_index is None:
        raise ValueError("the model has no parameter of interest (set the measurement's poi)")
    low, high = model.config.suggested_bounds()[model.config.poi_index]
    if not low <= 0.0 < high:
        raise ValueError(f"the POI bounds must contain mu = 0 for the discovery test, got [{low}, {high}]")
    if data is None:
        return model, None
    arr = np.asarray(data, dtype=np.float64)
    n_main, aux = model.config.nmaindata, np.asarray(model.config.auxdata, dtype=np.float64)
    if arr.ndim == 1 and arr.size == n_main:
        arr = np.concatenate([arr, aux])
    if arr.shape != (n_main + aux.size,):
        raise ValueError(
            f"data must have shape ({n_main},) (main counts) or ({n_main + aux.size},) (main + auxiliary data), "
            f"got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)) or np.any(arr[:n_main] < 0):
        raise ValueError("data must be finite with main counts >= 0 [events]")
    return model, arr


def _asimov_parameters(model: pyhf.pdf.Model) -> np.ndarray:
    """Nominal parameters (suggested init) with the POI at 1."""
    pars = np.asarray(model.config.suggested_init(), dtype=np.float64)
    pars[model.config.poi_index] = 1.0
    return pars


def _as_seed_sequence(seed: Any) -> np.random.SeedSequence:
    if seed is None:
        raise ValueError("seed is required for method='toys' (an integer >= 0 or a jax.random key)")
    if isinstance(seed, jax.Array):
        bits = np.asarray(jax.random.key_data(seed) if jnp.issubdtype(seed.dtype, jax.dtypes.prng_key) else seed)
        return np.random.SeedSequence(bits.astype(np.uint32).ravel().tolist())
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0 or a jax.random key, got {seed!r}")
    return np.random.SeedSequence(int(seed))


def _pyhf_q0(model: pyhf.pdf.Model, data: np.ndarray) -> tuple[float, float, list[float]]:
    """(sqrt(q0), p0, expected p0 for n = 2, 1, 0, -1, -2) from pyhf's asymptotic calculator (current backend).

    The same calls as ``pyhf.infer.hypotest(0.0, data, model, test_stat="q0", return_expected_set=True)``; sqrt(q0)
    is taken from the calculator rather than from Phi^-1(1 - p0), which underflows beyond Z0 ~ 37.
    """
    calc = pyhf.infer.calculators.AsymptoticCalculator(data, model, test_stat="q0")
    stat = calc.teststatistic(0.0)  # sqrt(q0) - sqrt(q0_A(data)) for q0
    sb_dist, b_dist = calc.distributions(0.0)
    p0 = float(calc.pvalues(stat, sb_dist, b_dist)[0])
    expected = [float(p) for p in calc.expected_pvalues(sb_dist, b_dist)[0]]
    return max(float(stat) + float(calc.sqrtqmuA_v), 0.0), p0, expected


def _asymptotic(model: pyhf.pdf.Model, data: np.ndarray | None, backend: str) -> DiscoveryResult:
    asimov = np.asarray(model.expected_data(_asimov_parameters(model)), dtype=np.float64)
    with pyhf_backend(backend):
        z_a, _, expected = _pyhf_q0(model, asimov)
        z_obs, p_obs, _ = (None, None, None) if data is None else _pyhf_q0(model, data)
    # pyhf orders the expected set from the most to the least significant: Z0 = sqrt(q0_A) + n for n = 2, ..., -2
    p_bands = dict(zip((2, 1, 0, -1, -2), expected, strict=True))
    return DiscoveryResult(
        z0_observed=z_obs,
        p0_observed=p_obs,
        z0_expected_median=z_a,
        z0_expected_bands={n: max(z_a + n, 0.0) for n in BAND_SIGMAS},
        method="asymptotic",
        q0_observed=None if z_obs is None else z_obs**2,
        q0_asimov=z_a**2,
        p0_expected_bands={n: p_bands[n] for n in BAND_SIGMAS},
    )


# ----------------------------------------------------------------------------------------------------------------
# vectorised toys


@functools.lru_cache(maxsize=4)  # one compilation per model (a few recent models are kept alive by the cache)
def _toy_kernel(model: pyhf.pdf.Model) -> Any:
    """A jit-compiled function (x0 (B, npars), data (B, ndata)) -> (q0, theta-hat-hat(0), decrement) per row.

    Each row runs projected Newton steps in one while loop: first with mu fixed at 0 (the conditional fit) until the
    Newton decrement is below ``_TOLERANCE`` (or ``_MAX_NEWTON_STEPS``), then with mu free, starting from the
    conditional optimum (so the free fit can only lower -ln L and q0 >= 0). The Hessian is the forward difference of
    the autodiff gradient (one vmapped gradient instead of a forward-over-reverse Hessian: the same Newton steps to
    ~1e-6 relative, a third of the compile time); the Newton direction uses |H| (eigenvalues made positive) and a
    parallel line search over ``_STEP_LENGTHS`` (including 0, so -ln L never increases). Must be built and called
    under ``pyhf_backend("jax")``.
    """
    lo, hi = (jnp.asarray(v, dtype=jnp.float64) for v in np.asarray(model.config.suggested_bounds(), dtype=float).T)
    fixed_free = jnp.asarray(model.config.suggested_fixed(), dtype=bool)
    poi = model.config.poi_index
    fixed_cond = fixed_free.at[poi].set(True)
    n_pars = model.config.npars
    eye = jnp.eye(n_pars)
    steps = jnp.asarray(_STEP_LENGTHS, dtype=jnp.float64)

    def nll(x: jax.Array, d: jax.Array) -> jax.Array:
        return -model.logpdf(x, d)[0]

    grad = jax.grad(nll)

    def newton_direction(x: jax.Array, d: jax.Array, fix: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Projected Newton direction (free parameters only) and the Newton decrement 0.5 g^T |H|^-1 g."""
        h = _FD_STEP * jnp.maximum(jnp.abs(x), 1.0)
        h = jnp.where(x + h <= hi, h, -h)  # stay inside the bounds
        gs = jax.vmap(grad, (0, None))(jnp.concatenate([x[None, :], x[None, :] + h[:, None] * eye]), d)
        g = gs[0]
        hess = (gs[1:] - g[None, :]) / h[:, None]
        hess = 0.5 * (hess + hess.T)
        active = fix | ((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0))
        free = ~active
        hess = jnp.where(free[:, None] & free[None, :], hess, eye)
        g = jnp.where(free, g, 0.0)
        w, v = jnp.linalg.eigh(hess)
        w = jnp.maximum(jnp.abs(w), 1e-12 * jnp.max(jnp.abs(w)) + 1e-300)  # |H|: a descent direction even if H < 0
        proj = v.T @ g
        return jnp.where(free, -(v @ (proj / w)), 0.0), 0.5 * jnp.sum(proj**2 / w)

    def q0_one(x0: jax.Array, d: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        # carry: (phase 0 = conditional fit / 1 = free fit / 2 = done, steps in phase, x, x_c, nll_c, dec_c, dec)
        def body(carry: tuple) -> tuple:
            phase, it, x, x_c, nll_c, dec_c, _ = carry
            dx, dec = newton_direction(x, d, jnp.where(phase == 0, fixed_cond, fixed_free))
            cands = jnp.clip(x[None, :] + steps[:, None] * dx[None, :], lo, hi)
            vals = jax.vmap(nll, (0, None))(cands, d)
            x_new = cands[jnp.argmin(jnp.where(jnp.isfinite(vals), vals, jnp.inf))]
            stop = (dec < _TOLERANCE) | (it >= _MAX_NEWTON_STEPS)  # converged (or out of steps) before this step
            x_next = jnp.where(stop, x, x_new)
            switch = stop & (phase == 0)  # the conditional optimum: store it, continue with mu free from there
            x_c = jnp.where(switch, x, x_c)
            nll_c = jnp.where(switch, nll(x, d), nll_c)
            dec_c = jnp.where(switch, dec, dec_c)
            return phase + stop, jnp.where(stop, 0, it + 1), x_next, x_c, nll_c, dec_c, dec

        zero = jnp.zeros((), dtype=jnp.float64)
        init = (jnp.int32(0), jnp.int32(0), x0.at[poi].set(0.0), x0, zero, zero, zero)
        _, _, x_f, x_c, nll_c, dec_c, dec_f = jax.lax.while_loop(lambda c: c[0] < 2, body, init)
        q0 = jnp.where(x_f[poi] < 0, 0.0, jnp.maximum(2.0 * (nll_c - nll(x_f, d)), 0.0))
        return q0, x_c, jnp.maximum(dec_c, dec_f)

    options = _COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
    return jax.jit(jax.vmap(q0_one), compiler_options=options)


def toy_q0(model: pyhf.pdf.Model, datasets: Any, start: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """q0 for each row of ``datasets`` (B, n_main + n_aux) with the vectorised fitter used for toys.

    ``start`` (npars,) or (B, npars): starting parameters (default: the model's suggested init). Returns (q0 (B,),
    theta-hat-hat(0) (B, npars) the mu = 0 conditional fits, Newton decrement (B,) of the worse of the two fits; a
    converged fit has a decrement below 1e-10). Runs in pyhf's JAX backend, contained by ``pyhf_backend("jax")``.
    """
    d = np.asarray(datasets, dtype=np.float64)
    n_data = model.config.nmaindata + model.config.nauxdata
    if d.ndim != 2 or d.shape[1] != n_data or not np.all(np.isfinite(d)):
        raise ValueError(f"datasets must be finite with shape (B, {n_data}), got shape {d.shape}")
    x0 = np.asarray(model.config.suggested_init() if start is None else start, dtype=np.float64)
    x0 = np.broadcast_to(x0, (d.shape[0], model.config.npars))
    with pyhf_backend("jax"):
        kernel = _toy_kernel(model)
        return _run_chunked(kernel, x0, d)


def _run_chunked(kernel: Any, x0: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run ``kernel`` in batches of ``_CHUNK`` rows (one compilation per model, whatever the number of toys), padding
    the last batch by repeating its last row."""
    n = d.shape[0]
    size = _CHUNK
    out_q, out_x, out_dec = [], [], []
    for start in range(0, n, size):
        idx = np.minimum(np.arange(start, start + size), n - 1)
        q, x, dec = kernel(jnp.asarray(x0[idx]), jnp.asarray(d[idx]))
        keep = min(size, n - start)
        out_q.append(np.asarray(q)[:keep])
        out_x.append(np.asarray(x)[:keep])
        out_dec.append(np.asarray(dec)[:keep])
    return np.concatenate(out_q), np.concatenate(out_x), np.concatenate(out_dec)


def _sample_toys(model: pyhf.pdf.Model, pars: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, n_main + n_aux) pseudo-experiments at ``pars``: main counts Poisson, auxiliary data from the constraint
    terms (Gaussian around the parameter with its sigma, or Poisson with rate parameter * factor); auxiliary data of
    fixed parameters stay at their nominal values. Mirrors pyhf's constraint model (pyhf 0.7)."""
    cfg = model.config
    with pyhf_backend("numpy"):
        main_rate = np.asarray(model.expected_actualdata(pars), dtype=np.float64)
    main = rng.poisson(main_rate, size=(n, main_rate.size)).astype(np.float64)
    nominal_aux = np.asarray(cfg.auxdata, dtype=np.float64)
    aux = np.broadcast_to(nominal_aux, (n, nominal_aux.size)).copy()
    offset = 0
    for name in cfg.auxdata_order:
        pset = cfg.param_set(name)
        k = pset.n_parameters
        value = pars[cfg.par_slice(name)]
        free = ~np.asarray(pset.suggested_fixed, dtype=bool)
        cols = offset + np.flatnonzero(free)
        if pset.pdf_type == "normal":
            sigmas = getattr(pset, "sigmas", None)  # staterror, lumi: their own sigmas; normsys, histosys: 1
            sigma = np.ones(k) if sigmas is None else np.asarray(sigmas, dtype=np.float64)
            aux[:, cols] = rng.normal(value[free], sigma[free], size=(n, cols.size))
        elif pset.pdf_type == "poisson":
            rate = value * np.asarray(pset.factors, dtype=np.float64)
            aux[:, cols] = rng.poisson(rate[free], size=(n, cols.size))
        else:  # pragma: no cover - pyhf 0.7 has only these two constraint types
            raise ValueError(f"unsupported constraint type {pset.pdf_type!r} of parameter {name!r}")
        offset += k
    return np.concatenate([main, aux], axis=1)


def _toy_z(null_q: np.ndarray, value: float) -> tuple[float, float, float]:
    """(p0, Z0, MC error of Z0) for a test statistic ``value`` against null toys (binomial error on p0)."""
    n = null_q.size
    p = float(np.count_nonzero(null_q >= value)) / n
    z = _z(p)
    if p == 0.0:  # no null toy as signal-like as the value: Z0 > Phi^-1(1 - 1/n), more toys needed
        return p, math.inf, math.inf
    if p == 1.0:  # every null toy at least as large (value 0: no excess); Z0 = 0 by convention
        return p, z, 0.0
    err = math.sqrt(p * (1.0 - p) / n) / float(norm.pdf(norm.isf(p)))
    return p, z, err


def _toys(model: pyhf.pdf.Model, data: np.ndarray | None, n_toys: int, seed: Any, backend: str) -> DiscoveryResult:
    ss_obs, ss_null, ss_alt = _as_seed_sequence(seed).spawn(3)
    alt_pars = _asimov_parameters(model)
    asimov = np.asarray(model.expected_data(alt_pars), dtype=np.float64)
    datasets = [asimov] if data is None else [asimov, data]
    with pyhf_backend(backend):  # theta-hat-hat(0) of the datasets: where the null toys are thrown
        gen = [np.asarray(pyhf.infer.mle.fixed_poi_fit(0.0, d, model), dtype=np.float64) for d in datasets]
    null_a = _sample_toys(model, gen[0], n_toys, np.random.default_rng(ss_null))
    alt = _sample_toys(model, alt_pars, n_toys, np.random.default_rng(ss_alt))
    rows = [np.stack(datasets), null_a, alt]
    starts = [
        np.stack(gen),
        np.broadcast_to(gen[0], null_a.shape[:1] + gen[0].shape),
        np.broadcast_to(alt_pars, null_a.shape[:1] + alt_pars.shape),
    ]
    if data is not None:
        rows.append(_sample_toys(model, gen[1], n_toys, np.random.default_rng(ss_obs)))
        starts.append(np.broadcast_to(gen[1], (n_toys, gen[1].size)))
    with pyhf_backend("jax"):
        q, _, dec = _run_chunked(_toy_kernel(model), np.concatenate(starts), np.concatenate(rows))
    n_fixed = len(datasets)
    q_data, q = q[:n_fixed], q[n_fixed:]
    q_null_a, q_alt = q[:n_toys], q[n_toys : 2 * n_toys]
    n_bad = int(np.count_nonzero(~(dec <= _TOLERANCE)))
    if n_bad:
        warnings.warn(
            f"{n_bad} toy fits did not converge (Newton decrement > {_TOLERANCE})",
            RuntimeWarning,
            stacklevel=3,
        )
    # expected: quantiles of q0 under signal + background, p-values from the null toys of the Asimov dataset
    quantiles = np.quantile(q_alt, norm.cdf(np.asarray(BAND_SIGMAS, dtype=np.float64)))
    band_p_z = {n: _toy_z(q_null_a, float(v))[:2] for n, v in zip(BAND_SIGMAS, quantiles, strict=True)}
    _, z_med, err_med = _toy_z(q_null_a, float(quantiles[BAND_SIGMAS.index(0)]))
    # plus the uncertainty of the signal median itself: Z0 at the median's order-statistic +-1 sigma (0.5 +- 0.5/sqrt n)
    q_lo, q_hi = np.quantile(q_alt, [0.5 - 0.5 / math.sqrt(n_toys), 0.5 + 0.5 / math.sqrt(n_toys)])
    spread = 0.5 * (_toy_z(q_null_a, float(q_hi))[1] - _toy_z(q_null_a, float(q_lo))[1])
    err_med = math.hypot(err_med, spread) if math.isfinite(spread) else math.inf
    obs = (None, None, None) if data is None else _toy_z(q[2 * n_toys :], float(q_data[1]))
    return DiscoveryResult(
        z0_observed=obs[1],
        p0_observed=obs[0],
        z0_expected_median=z_med,
        z0_expected_bands={n: z for n, (_, z) in band_p_z.items()},
        method="toys",
        n_toys=n_toys,
        z0_toy_error=obs[2],
        z0_expected_toy_error=err_med,
        q0_observed=None if data is None else float(q_data[1]),
        q0_asimov=float(q_data[0]),
        p0_expected_bands={n: p for n, (p, _) in band_p_z.items()},
        n_unconverged=n_bad,
    )


def discovery_significance(
    workspace_or_model: Any,
    data: Any = None,
    *,
    method: str = "asymptotic",
    n_toys: int = 2000,
    seed: Any = None,
    backend: str = "numpy",
) -> DiscoveryResult:
    """Observed and expected discovery significance Z0 (q0 test statistic; see the module docstring).

    Args:
        workspace_or_model: a ``pyhf.Workspace`` (its first measurement's model; ``data`` defaults to its
            observations) or a ``pyhf.pdf.Model`` (no observed result unless ``data`` is given). The toy kernel is
            compiled once per model object (cached for the 4 most recent): pass the same model to repeat toys cheaply.
        data: observed counts, (n_main,) [events] (the model's nominal auxiliary data is appended) or the full
            (n_main + n_aux,) pyhf data vector.
        method: "asymptotic" (pyhf's asymptotic calculator) or "toys" (vectorised pseudo-experiments, ``n_toys`` per
            hypothesis; the toy Z0 comes with its Monte Carlo error).
        n_toys: pseudo-experiments per toy set (null for the observed data, null and signal for the expected).
        seed: an integer >= 0 or a jax.random key; required for toys (same seed, same result).
        backend: pyhf backend of the asymptotic fits and of the fits giving the toys' generating parameters, "numpy"
            (default) or "jax" (opt-in, contained by ``pyhf_backend``). The toy fits always run under pyhf's JAX
            backend inside ``pyhf_backend("jax")``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    model, observed = _resolve(workspace_or_model, data)
    if method == "asymptotic":
        return _asymptotic(model, observed, backend)
    return _toys(model, observed, check_positive_int(n_toys, "n_toys", 10), seed, backend)
