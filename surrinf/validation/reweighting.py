"""Classifier-based density-ratio reweighting of a candidate sample onto the reference, with a closure check.

w(x) = C(x) / (1 - C(x)) with C the output of the reference (1) vs candidate (0) classifier of
``classifier.py``. Because that classifier is trained and calibrated with class-balanced weights (equal priors),
C estimates p_ref / (p_ref + p_cand) and C / (1 - C) estimates p_ref(x) / p_cand(x) with no further prior
factor N / M; the weights are then clipped and normalised to mean 1 over the candidate sample (which removes any
residual constant factor).

Out of sample by K-fold cross-fitting: the candidate rows are split at random into K folds; for fold k a
classifier is trained on all reference rows and the candidate rows of the other K - 1 folds (split into train /
validation only, for early stopping and calibration) and predicts the weights of fold k. No candidate row is
weighted by a classifier that saw it.

Calibration: by default C is the network output sigmoid(logit) itself (``calibrated=False``). The network is
trained on the class-balanced BCE, a proper scoring rule, so its output already estimates p_ref / (p_ref +
p_cand). The isotonic map (``calibrated=True``) is a step function fitted on a finite validation split: its end
blocks are often pure (C = 0 or 1), which gives zero or clip-limited weights in the tails, and its steps bias
the reweighted moments. For a 0.2 sigma shift in 1-3 dimensions with 20k rows per class (9 trials), the raw
output closes the mean to within 1.5 standard errors (W1 down 12-30x, ESS ~ 0.96 M); the isotonic one
overshoots by up to ~5 standard errors (W1 down only 4-20x).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np
from scipy.stats import wasserstein_distance

from .classifier import (
    PROB_CLIP,
    ClassifierConfig,
    TrainedClassifier,
    _check_samples,
    as_key,
    train_classifier,
    with_split,
)

__all__ = [
    "ClosureResult",
    "ReweightResult",
    "closure_check",
    "effective_sample_size",
    "reweight",
    "weighted_wasserstein",
]


def effective_sample_size(weights: Any) -> float:
    """Kish effective sample size (sum w)^2 / sum w^2 of non-negative weights (n,)."""
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    s2 = float(np.sum(w * w))
    return float(np.sum(w) ** 2 / s2) if s2 > 0 else 0.0


@dataclass(frozen=True)
class ReweightResult:
    """Candidate weights estimating p_ref / p_cand.

    weights: (M,) float64, mean 1, one per x_cand row (out of fold); ess: (sum w)^2 / sum w^2; ess_fraction:
    ess / M; n_clipped: rows whose raw ratio fell outside ``clip``; folds: (M,) fold index of each candidate
    row; classifiers: the K fold classifiers (fold k never saw candidate rows with folds == k).
    """

    weights: np.ndarray
    ess: float
    ess_fraction: float
    n_clipped: int
    folds: np.ndarray
    classifiers: tuple[TrainedClassifier, ...] = field(repr=False)

    def to_dict(self) -> dict[str, float | int]:
        """JSON-serialisable summary (no per-row weights)."""
        return {
            "n": int(self.weights.size),
            "n_folds": len(self.classifiers),
            "ess": self.ess,
            "ess_fraction": self.ess_fraction,
            "n_clipped": self.n_clipped,
            "weight_max": float(np.max(self.weights)),
            "weight_std": float(np.std(self.weights)),
        }


def reweight(
    key: jax.Array | int,
    x_ref: Any,
    x_cand: Any,
    config: ClassifierConfig | None = None,
    clip: tuple[float, float] = (0.0, 50.0),
    n_folds: int = 3,
    calibrated: bool = False,
) -> ReweightResult:
    """Cross-fitted classifier weights for the candidate sample x_cand (M, F) towards x_ref (N, F).

    Raw ratios C / (1 - C) (C clipped to [1e-7, 1 - 1e-7]) are clipped to ``clip`` = (low, high) and then
    normalised to mean 1. C is sigmoid(logit) by default, or the isotonic-calibrated output with
    ``calibrated=True`` (see the module docstring). Each fold's classifier uses ``config.split`` with the test
    share folded into train (train : val kept in proportion, no test split). Fold k trains with ``fold_in(key, k)``.
    """
    cfg = config or ClassifierConfig()
    xr, xc = _check_samples(x_ref, x_cand)
    k = int(n_folds)
    if k < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    lo, hi = float(clip[0]), float(clip[1])
    if not (0.0 <= lo < hi) or not np.isfinite(hi):
        raise ValueError(f"clip must be (low, high) with 0 <= low < high < inf, got {clip}")
    m = xc.shape[0]
    k_folds, k_train = jax.random.split(as_key(key))
    folds = np.empty(m, dtype=np.int64)
    folds[np.asarray(jax.random.permutation(k_folds, m))] = np.arange(m) % k
    if np.min(np.bincount(folds, minlength=k)) * (k - 1) < 50:
        raise ValueError(f"x_cand has too few rows ({m}) for {k}-fold cross-fitting with >= 50 training rows")

    tr, va, _ = cfg.split
    fold_cfg = with_split(cfg, (tr / (tr + va), va / (tr + va), 0.0))
    raw = np.empty(m)
    classifiers = []
    for f in range(k):
        held = folds == f
        clf = train_classifier(jax.random.fold_in(k_train, f), xr, xc[~held], fold_cfg)
        c = clf.predict_proba(xc[held]) if calibrated else clf.predict_raw(xc[held])
        c = np.clip(c, PROB_CLIP, 1.0 - PROB_CLIP)
        raw[held] = c / (1.0 - c)
        classifiers.append(clf)
    n_clipped = int(np.count_nonzero((raw < lo) | (raw > hi)))
    w = np.clip(raw, lo, hi)
    w = w / np.mean(w)
    ess = effective_sample_size(w)
    return ReweightResult(w, ess, ess / m, n_clipped, folds, tuple(classifiers))


def weighted_wasserstein(u: Any, v: Any, u_weights: Any = None, v_weights: Any = None) -> float:
    """1-D Wasserstein-1 distance between weighted samples u (n,) and v (m,) (``scipy.stats.wasserstein_distance``)."""
    return float(wasserstein_distance(np.ravel(u), np.ravel(v), u_weights, v_weights))


@dataclass(frozen=True)
class ClosureResult:
    """W1 of a 1-D observable between reference and candidate, before and after weighting [observable units]."""

    w1_before: float
    w1_after: float

    @property
    def ratio(self) -> float:
        """w1_before / w1_after (> 1: the weights close the gap)."""
        return self.w1_before / self.w1_after if self.w1_after > 0 else float("inf")


def closure_check(obs_ref: Any, obs_cand: Any, weights: Any) -> ClosureResult:
    """W1(reference, candidate) unweighted and with ``weights`` (M,) on the candidate; obs_*: 1-D observables."""
    r = np.asarray(obs_ref, dtype=np.float64).reshape(-1)
    c = np.asarray(obs_cand, dtype=np.float64).reshape(-1)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != c.shape:
        raise ValueError(f"weights must have one entry per obs_cand row, got {w.size} for {c.size}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(c)) and np.all(np.isfinite(w)) and np.all(w >= 0)):
        raise ValueError("obs_ref, obs_cand and weights must be finite (weights >= 0)")
    return ClosureResult(weighted_wasserstein(r, c), weighted_wasserstein(r, c, None, w))
