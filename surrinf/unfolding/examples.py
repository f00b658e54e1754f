"""RooUnfold's standard example (``RooUnfoldExample.cxx``), adapted as the project specifies.

The observable x is dimensionless, on [low, high) = [0, 10) by default. One detector model (:func:`smear`) serves the
training and the test sample:

- efficiency: an event is kept with probability eps(x) rising linearly from 0.5 at x = low to 0.9 at x = high;
- response: reco = x + shift + N(0, sigma) with shift = -1 and Gaussian resolution sigma = 0.5;
- acceptance: a reco value outside [low, high) is lost as well and counts as inefficiency, as under- and overflow
  count as misses in RooUnfold (``RooUnfoldResponse`` without ``UseOverflow``). Lost events have reco = NaN.

Training truth is flat on [low, high) (the response matrix is built from it); test truth is a "double Breit-Wigner":
two Cauchy peaks at x = 3.0 (FWHM 1.0) and x = 7.0 (FWHM 0.7), each truncated to [low, high) exactly by inverse-CDF
sampling and mixed with equal weight *inside* the range. (RooUnfold's original: x on [-10, 10), efficiency
0.3 -> 1.0, shift -2.5, resolution 0.2, training truth Breit-Wigner(0.3, 2.5), test truth Gaussian(0, 2).) Every
random number comes from jax.random keys (float64); same key, same bits.
"""

from __future__ import annotations

import functools
import math
import operator
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .response import ResponseMatrix

__all__ = ["RooUnfoldExample", "double_breit_wigner", "roounfold_example", "smear"]

#: Efficiency at x = low and at x = high (linear in between).
EFFICIENCY = (0.5, 0.9)
#: Mean migration reco - truth [x units].
SHIFT = -1.0
#: Gaussian resolution of reco [x units].
RESOLUTION = 0.5
#: Test-truth Breit-Wigner peaks: (position, FWHM) [x units], equal weights inside [low, high).
PEAKS = ((3.0, 1.0), (7.0, 0.7))


@dataclass(frozen=True)
class RooUnfoldExample:
    """The example's samples and histograms (x dimensionless; counts are events).

    response: built by :meth:`ResponseMatrix.from_events` from the training sample (truth flat on [low, high));
    edges: (bins + 1,) common truth and reco bin edges; train_truth_values / train_reco_values: (n_train,) training
    events; test_truth_values / test_reco_values: (n_test,) test events (double Breit-Wigner truth); reco is NaN for
    lost events (efficiency or acceptance); test_truth: (bins,) histogram of all generated test events;
    test_data: (bins,) histogram of the reconstructed test events (the data to unfold)."""

    response: ResponseMatrix
    edges: np.ndarray
    train_truth_values: np.ndarray
    train_reco_values: np.ndarray
    test_truth_values: np.ndarray
    test_reco_values: np.ndarray
    test_truth: np.ndarray
    test_data: np.ndarray


def _check_range(low: float, high: float) -> tuple[float, float]:
    low, high = float(low), float(high)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"low and high must be finite with low < high, got low={low}, high={high}")
    return low, high


def _check_count(n: Any, name: str) -> int:
    if isinstance(n, bool):
        raise ValueError(f"{name} must be an integer >= 1, got {n!r}")
    try:
        n_int = operator.index(n)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= 1, got {n!r}") from None
    if n_int < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {n!r}")
    return n_int


def _smear(
    key: jax.Array, x: jax.Array, low: Any, high: Any, shift: Any, sigma: Any, efficiency: tuple[Any, Any]
) -> jax.Array:
    """(N,) reco values of truth x (N,) [x units]; NaN where lost (efficiency or reco outside [low, high)). Pure jnp
    (scalars may be traced); call in a float64 region."""
    k_eff, k_res = jax.random.split(key)
    eff = efficiency[0] + (efficiency[1] - efficiency[0]) * (x - low) / (high - low)
    kept = jax.random.uniform(k_eff, x.shape, dtype=jnp.float64) < jnp.clip(eff, 0.0, 1.0)
    reco = x + shift + sigma * jax.random.normal(k_res, x.shape, dtype=jnp.float64)
    return jnp.where(kept & (reco >= low) & (reco < high), reco, jnp.nan)


def smear(
    key: jax.Array,
    truth: Any,
    *,
    low: float = 0.0,
    high: float = 10.0,
    shift: float = SHIFT,
    sigma: float = RESOLUTION,
    efficiency: tuple[float, float] = EFFICIENCY,
) -> np.ndarray:
    """The example's detector: (N,) reco values [x units] of ``truth`` (N,) [x units], float64, NaN when lost.

    Kept with probability linear in x from ``efficiency[0]`` at ``low`` to ``efficiency[1]`` at ``high`` (clipped to
    [0, 1]); reco = truth + ``shift`` + N(0, ``sigma``); reco outside [low, high) is lost. Change ``shift`` or
    ``sigma`` to build a deliberately mis-modelled ("surrogate") response."""
    low, high = _check_range(low, high)
    x = np.asarray(truth, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise ValueError("truth must hold finite values")
    if not (math.isfinite(shift) and math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"shift must be finite and sigma finite and >= 0, got shift={shift}, sigma={sigma}")
    e0, e1 = (float(e) for e in efficiency)
    if not (0.0 <= e0 <= 1.0 and 0.0 <= e1 <= 1.0):
        raise ValueError(f"efficiency must be two probabilities in [0, 1] (at low, at high), got {efficiency}")
    with jax.enable_x64(True):
        reco = _smear_jit(key, jnp.asarray(x), low, high, float(shift), float(sigma), (e0, e1))
        return np.asarray(reco, dtype=np.float64)


_smear_jit = jax.jit(_smear)


def _cauchy_truncated(key: jax.Array, n: int, peaks: tuple[tuple[float, float], ...], low: Any, high: Any):
    """(n,) draws from an equal-weight mixture of Cauchy distributions (position, FWHM), each truncated to
    [low, high] exactly: u uniform on [F(low), F(high)], x = F^-1(u). Pure jnp; call in a float64 region."""
    k_comp, k_u = jax.random.split(key)
    comp = jax.random.randint(k_comp, (n,), 0, len(peaks))
    pos = jnp.asarray([p for p, _ in peaks], dtype=jnp.float64)[comp]
    gamma = 0.5 * jnp.asarray([w for _, w in peaks], dtype=jnp.float64)[comp]  # half width at half maximum
    f_lo = jnp.arctan((low - pos) / gamma) / jnp.pi + 0.5
    f_hi = jnp.arctan((high - pos) / gamma) / jnp.pi + 0.5
    u = f_lo + (f_hi - f_lo) * jax.random.uniform(k_u, (n,), dtype=jnp.float64)
    return jnp.clip(pos + gamma * jnp.tan(jnp.pi * (u - 0.5)), low, high)


_cauchy_truncated_jit = jax.jit(_cauchy_truncated, static_argnums=(1, 2))


def double_breit_wigner(key: jax.Array, n: int, *, low: float = 0.0, high: float = 10.0) -> np.ndarray:
    """(n,) test-truth values [x units]: Breit-Wigner (Cauchy) peaks at 3.0 (FWHM 1.0) and 7.0 (FWHM 0.7), each
    truncated to [low, high] and mixed with equal weight inside it; float64."""
    n = _check_count(n, "n")
    low, high = _check_range(low, high)
    with jax.enable_x64(True):
        return np.asarray(_cauchy_truncated_jit(key, n, PEAKS, low, high), dtype=np.float64)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _samples(key: jax.Array, n_train: int, n_test: int, low: Any, high: Any) -> tuple[jax.Array, ...]:
    """(train truth, train reco) (n_train,) and (test truth, test reco) (n_test,), one compiled program; the same
    draws as :func:`smear` and :func:`double_breit_wigner` with the split keys."""
    k_train, k_train_smear, k_test, k_test_smear = jax.random.split(key, 4)
    train_truth = jax.random.uniform(k_train, (n_train,), dtype=jnp.float64, minval=low, maxval=high)
    test_truth = _cauchy_truncated(k_test, n_test, PEAKS, low, high)
    return (
        train_truth,
        _smear(k_train_smear, train_truth, low, high, SHIFT, RESOLUTION, EFFICIENCY),
        test_truth,
        _smear(k_test_smear, test_truth, low, high, SHIFT, RESOLUTION, EFFICIENCY),
    )


def roounfold_example(
    key: jax.Array,
    *,
    n_train: int = 100_000,
    n_test: int = 10_000,
    bins: int = 40,
    low: float = 0.0,
    high: float = 10.0,
) -> RooUnfoldExample:
    """Generate the example: ``n_train`` training events (truth flat on [low, high)) -> response matrix with ``bins``
    equal truth and reco bins on [low, high); ``n_test`` test events (double Breit-Wigner truth) -> test truth and
    test data histograms. Both samples go through :func:`smear`. Same key, same bits."""
    n_train, n_test, bins = _check_count(n_train, "n_train"), _check_count(n_test, "n_test"), _check_count(bins, "bins")
    low, high = _check_range(low, high)
    with jax.enable_x64(True):
        samples = _samples(key, n_train, n_test, low, high)
        train_truth, train_reco, test_truth, test_reco = (np.asarray(a, dtype=np.float64) for a in samples)
    edges = np.linspace(low, high, bins + 1)
    response = ResponseMatrix.from_events(train_truth, train_reco, edges, edges)
    truth_hist = np.histogram(test_truth, edges)[0].astype(np.float64)  # right edge included: every test event
    data_hist = np.histogram(test_reco[np.isfinite(test_reco)], edges)[0].astype(np.float64)
    return RooUnfoldExample(response, edges, train_truth, train_reco, test_truth, test_reco, truth_hist, data_hist)
