"""Classifier two-sample test (CaloChallenge style): a small MLP tells reference from candidate samples.

Labels: reference = 1, candidate = 0. The data of each class are split at random, per class (stratified), into
train / validation / test (default 60/20/20). The network is trained with Adam on a class-balanced binary
cross-entropy, early-stopped on the validation loss (best parameters kept), its validation-split probabilities
are calibrated by isotonic regression (pool-adjacent-violators, class-balanced weights, pure end blocks pooled
into their neighbours so that no calibrated probability is exactly 0 or 1) and the calibrated test-split
probabilities give the AUC (with a bootstrap interval), the BCE and JSD = (ln 2 - BCE) / ln 2.

Class balance: every sample of class c in a split carries weight n / (2 n_c) (n the split size, n_c its rows
of class c), so both classes carry half the total weight whatever N and M are. The loss, the isotonic
calibration and the test BCE all use these weights, so the calibrated output estimates
C(x) = p_ref(x) / (p_ref(x) + p_cand(x)) (equal priors) and BCE >= ln 2 - JSD_nats(p_ref, p_cand) with equal
mixture weights. The AUC is invariant to class-level weights and is the plain Mann-Whitney statistic.

Network in float32 (JAX default); statistics in numpy float64.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy.special import expit

MIN_ROWS_PER_CLASS = 50
PROB_CLIP = 1e-7
_PREDICT_CHUNK = 8192

__all__ = [
    "MLP",
    "ClassifierConfig",
    "ClassifierResult",
    "IsotonicMap",
    "SplitIndices",
    "TrainedClassifier",
    "as_key",
    "auc",
    "balanced_bce",
    "balanced_weights",
    "bootstrap_auc",
    "classifier_test",
    "fit_isotonic",
    "pav",
    "train_classifier",
    "with_split",
]


# ----------------------------------------------------------------------------------------------------------------
# Keys and input checks
# ----------------------------------------------------------------------------------------------------------------


def as_key(key: jax.Array | int) -> jax.Array:
    """A ``jax.random`` key from a key (new-style or legacy uint32) or an integer seed."""
    if isinstance(key, int | np.integer):
        return jax.random.key(int(key))
    return key


def _check_samples(x_ref: Any, x_cand: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both samples as float64 (N, F), (M, F); ValueError naming the argument on bad shape / size / values."""
    out = []
    for name, x in (("x_ref", x_ref), ("x_cand", x_cand)):
        a = np.asarray(x, dtype=np.float64)
        if a.ndim != 2:
            raise ValueError(f"{name} must be a 2-D array (rows, features), got shape {a.shape}")
        if a.shape[1] < 1:
            raise ValueError(f"{name} must have at least one feature column, got shape {a.shape}")
        if a.shape[0] < MIN_ROWS_PER_CLASS:
            raise ValueError(f"{name} needs at least {MIN_ROWS_PER_CLASS} rows, got {a.shape[0]}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or inf values")
        out.append(a)
    if out[0].shape[1] != out[1].shape[1]:
        raise ValueError(
            f"x_cand has {out[1].shape[1]} features but x_ref has {out[0].shape[1]}; the feature counts must match"
        )
    return out[0], out[1]


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Per-sample class weights n / (2 n_c), (n,) float64: mean 1, each class carries half the total weight."""
    y = np.asarray(labels)
    n = y.size
    n1 = int(np.count_nonzero(y == 1))
    n0 = n - n1
    if n1 == 0 or n0 == 0:
        raise ValueError("labels must contain both classes (1 = reference, 0 = candidate)")
    return np.where(y == 1, n / (2.0 * n1), n / (2.0 * n0))


# ----------------------------------------------------------------------------------------------------------------
# AUC (Mann-Whitney with ties, weighted, vectorised over bootstrap resamples)
# ----------------------------------------------------------------------------------------------------------------


def _auc_from_sorted(pos_w: np.ndarray, neg_w: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """AUC of rows of weights (B, n) for scores already sorted ascending with tie groups starting at ``starts``.

    AUC = sum_{i pos, j neg} w_i w_j ([s_i > s_j] + 1/2 [s_i = s_j]) / (W_pos W_neg), (B,).
    """
    p = np.add.reduceat(pos_w, starts, axis=1)  # (B, K) weight per distinct score level
    q = np.add.reduceat(neg_w, starts, axis=1)
    below = np.cumsum(q, axis=1) - q
    num = np.sum(p * (below + 0.5 * q), axis=1)
    den = p.sum(axis=1) * q.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def _sort_levels(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stable ascending order of ``scores`` and the start index of each group of equal scores."""
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(s) != 0) + 1])
    return order, starts


def _check_scores_labels(scores: Any, labels: Any, weights: Any = None) -> tuple[np.ndarray, ...]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels must have the same length, got {s.size} and {y.size}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contains NaN or inf values")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 or 1")
    y = y.astype(np.int64)
    if y.min(initial=1) != 0 or y.max(initial=0) != 1:
        raise ValueError("labels must contain both classes (0 and 1)")
    if weights is None:
        w = np.ones_like(s)
    else:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if w.shape != s.shape or not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("weights must be finite, non-negative and of the same length as scores")
    return s, y, w


def auc(scores: Any, labels: Any, weights: Any = None) -> float:
    """Area under the ROC curve: P(score of a label-1 row > score of a label-0 row), ties counted 1/2.

    scores: (n,) any real; labels: (n,) in {0, 1} with both present; weights: optional (n,) non-negative
    per-row weights. Computed from the ranks (Mann-Whitney U / (n1 n0)) in O(n log n).
    """
    s, y, w = _check_scores_labels(scores, labels, weights)
    order, starts = _sort_levels(s)
    ws, ys = w[order], y[order]
    return float(_auc_from_sorted((ws * ys)[None], (ws * (1 - ys))[None], starts)[0])


def bootstrap_auc(key: jax.Array | int, scores: Any, labels: Any, n_bootstrap: int) -> np.ndarray:
    """AUCs of ``n_bootstrap`` resamples (rows drawn with replacement, the whole sample at once), (B,).

    Vectorised: each resample is the multiplicity vector of its draws, used as weights on the sorted sample.
    """
    s, y, _ = _check_scores_labels(scores, labels)
    n, b = s.size, int(n_bootstrap)
    if b < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    order, starts = _sort_levels(s)
    ys = y[order].astype(np.float64)
    out = np.empty(b)
    chunk = max(1, (1 << 24) // max(n, 1))  # bound the (chunk, n) count matrices to ~16M entries
    for c0 in range(0, b, chunk):
        nb = min(chunk, b - c0)
        idx = np.asarray(jax.random.randint(jax.random.fold_in(as_key(key), c0), (nb, n), 0, n))
        counts = np.bincount((idx + n * np.arange(nb)[:, None]).ravel(), minlength=nb * n).reshape(nb, n)
        counts = counts[:, order].astype(np.float64)
        out[c0 : c0 + nb] = _auc_from_sorted(counts * ys, counts * (1.0 - ys), starts)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Isotonic regression (pool-adjacent-violators)
# ----------------------------------------------------------------------------------------------------------------


def pav(y: Any, weights: Any = None) -> np.ndarray:
    """Weighted isotonic (non-decreasing) least-squares fit of ``y`` in the given order, (n,) float64.

    Pool-adjacent-violators: adjacent blocks whose means decrease are merged into their weighted mean.
    """
    yv = np.asarray(y, dtype=np.float64).reshape(-1)
    w = np.ones_like(yv) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != yv.shape or np.any(w <= 0) or not np.all(np.isfinite(w)) or not np.all(np.isfinite(yv)):
        raise ValueError("y and weights must be finite, of equal length, with weights > 0")
    n = yv.size
    means = np.empty(n)
    wsum = np.empty(n)
    size = np.empty(n, dtype=np.int64)
    k = -1
    for i in range(n):
        k += 1
        means[k], wsum[k], size[k] = yv[i], w[i], 1
        while k > 0 and means[k - 1] > means[k]:
            wt = wsum[k - 1] + wsum[k]
            means[k - 1] = (wsum[k - 1] * means[k - 1] + wsum[k] * means[k]) / wt
            wsum[k - 1] = wt
            size[k - 1] += size[k]
            k -= 1
    return np.repeat(means[: k + 1], size[: k + 1])


@dataclass(frozen=True)
class IsotonicMap:
    """Monotone piecewise-linear map from raw to calibrated probability.

    x: (K,) increasing knots [raw probability]; y: (K,) non-decreasing calibrated values in [0, 1]. Inputs
    outside [x[0], x[-1]] are clamped to the end values.
    """

    x: np.ndarray
    y: np.ndarray

    def __call__(self, p: Any) -> np.ndarray:
        """Calibrated probabilities, same shape as ``p``, float64."""
        p = np.asarray(p, dtype=np.float64)
        return np.interp(p, self.x, self.y)


def fit_isotonic(x: Any, y: Any, weights: Any = None, pool_pure_ends: bool = False) -> IsotonicMap:
    """Weighted isotonic regression of ``y`` (e.g. 0/1 labels) on ``x`` (e.g. raw probabilities).

    Equal x values are pooled first (weighted mean of y), then PAV; the knots kept are the first and last x of
    every constant block, so interpolation between blocks is linear. x, y, weights: (n,).

    pool_pure_ends: merge a first block at min(y) (a last block at max(y)) into its neighbour. For 0/1 labels
    this keeps the calibrated probability strictly inside (0, 1): a pure end block, typically a handful of
    extreme validation rows, would otherwise map every more extreme row to exactly 0 or 1 (log loss 16 nats at
    the 1e-7 clip). The result stays non-decreasing; it is no longer the exact least-squares fit at the ends.
    """
    xv = np.asarray(x, dtype=np.float64).reshape(-1)
    yv = np.asarray(y, dtype=np.float64).reshape(-1)
    w = np.ones_like(xv) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if not (xv.shape == yv.shape == w.shape) or xv.size == 0:
        raise ValueError("x, y and weights must be non-empty and of equal length")
    if not (np.all(np.isfinite(xv)) and np.all(np.isfinite(yv))):
        raise ValueError("x and y must be finite")
    ux, inv = np.unique(xv, return_inverse=True)
    wu = np.bincount(inv, weights=w, minlength=ux.size)
    if np.any(wu <= 0):
        raise ValueError("weights must be positive")
    yu = np.bincount(inv, weights=w * yv, minlength=ux.size) / wu
    fit = pav(yu, wu)
    if pool_pure_ends:
        lo, hi = yv.min(), yv.max()
        # Blocks are runs of equal fitted values; merging the first (last) two keeps the order of the rest.
        while fit[0] <= lo < fit[-1]:
            sel = fit <= fit[fit > fit[0]][0]
            fit[sel] = np.average(yu[sel], weights=wu[sel])
        while fit[0] < hi <= fit[-1]:
            sel = fit >= fit[fit < fit[-1]][-1]
            fit[sel] = np.average(yu[sel], weights=wu[sel])
    if ux.size > 2:
        keep = np.ones(ux.size, dtype=bool)
        keep[1:-1] = (fit[1:-1] != fit[:-2]) | (fit[1:-1] != fit[2:])
        ux, fit = ux[keep], fit[keep]
    return IsotonicMap(ux, fit)


# ----------------------------------------------------------------------------------------------------------------
# Network
# ----------------------------------------------------------------------------------------------------------------


class MLP(eqx.Module):
    """Fully connected classifier: x (F,) -> standardised -> hidden layers -> one logit (scalar).

    ``mean``, ``std`` (F,) float32 are the input standardisation fitted on the training split; they are not
    trained (excluded from the optimiser by ``trainable_filter``).
    """

    layers: tuple[eqx.nn.Linear, ...]
    mean: jax.Array
    std: jax.Array
    activation: str = eqx.field(static=True)

    def __init__(
        self,
        key: jax.Array,
        mean: Any,
        std: Any,
        hidden: tuple[int, ...] = (128, 128),
        activation: str = "leaky_relu",
    ):
        if activation not in ("leaky_relu", "gelu"):
            raise ValueError(f"activation must be 'leaky_relu' or 'gelu', got {activation!r}")
        mean = jnp.asarray(mean, dtype=jnp.float32).reshape(-1)
        std = jnp.asarray(std, dtype=jnp.float32).reshape(-1)
        sizes = (mean.shape[0], *tuple(int(h) for h in hidden), 1)
        keys = jax.random.split(key, len(sizes) - 1)
        self.layers = tuple(eqx.nn.Linear(a, b, key=k) for a, b, k in zip(sizes[:-1], sizes[1:], keys, strict=True))
        self.mean = mean
        self.std = std
        self.activation = activation

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logit for one row x (F,); log-odds of reference vs candidate (class-balanced)."""
        act = jax.nn.leaky_relu if self.activation == "leaky_relu" else jax.nn.gelu
        h = (x - self.mean) / self.std
        for layer in self.layers[:-1]:
            h = act(layer(h))
        return self.layers[-1](h)[0]

    def trainable_filter(self) -> Any:
        """Filter pytree for ``eqx.partition``: the layers' arrays, not the standardisation."""
        spec = jax.tree.map(eqx.is_inexact_array, self)
        return eqx.tree_at(lambda m: (m.mean, m.std), spec, replace=(False, False))


@eqx.filter_jit
def _logits(model: MLP, x: jax.Array) -> jax.Array:
    return jax.vmap(model)(x)


def _predict_logits(model: MLP, x: np.ndarray) -> np.ndarray:
    """Logits (n,) float64 in fixed-size chunks (one compilation per feature count)."""
    x = np.asarray(x, dtype=np.float32)
    n = x.shape[0]
    if n == 0:
        return np.zeros(0)
    chunk = min(_PREDICT_CHUNK, 1 << max(0, (n - 1).bit_length()))
    out = np.empty(n)
    for c0 in range(0, n, chunk):
        xb = x[c0 : c0 + chunk]
        m = xb.shape[0]
        if m < chunk:
            xb = np.concatenate([xb, np.zeros((chunk - m, x.shape[1]), np.float32)])
        out[c0 : c0 + m] = np.asarray(_logits(model, jnp.asarray(xb)), dtype=np.float64)[:m]
    return out


# ----------------------------------------------------------------------------------------------------------------
# Configuration and training
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassifierConfig:
    """Classifier and training settings.

    hidden: hidden layer widths; activation: 'leaky_relu' | 'gelu'; learning_rate: Adam peak rate, decayed by a
    cosine schedule over max_epochs to ``learning_rate * final_lr_fraction``; weight_decay: AdamW decoupled decay
    (0 = plain Adam); batch_size: rows per minibatch; max_epochs; patience: epochs without validation-BCE
    improvement (by more than min_delta) before stopping; split: (train, val, test) fractions per class;
    n_bootstrap: test-split resamples for the AUC interval.
    """

    hidden: tuple[int, ...] = (128, 128)
    activation: str = "leaky_relu"
    learning_rate: float = 1e-3
    final_lr_fraction: float = 0.05
    weight_decay: float = 0.0
    batch_size: int = 512
    max_epochs: int = 50
    patience: int = 5
    min_delta: float = 1e-4
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    n_bootstrap: int = 200

    def __post_init__(self):
        if len(self.hidden) < 1 or any(int(h) < 1 for h in self.hidden):
            raise ValueError(f"hidden must be a non-empty tuple of positive widths, got {self.hidden}")
        if self.activation not in ("leaky_relu", "gelu"):
            raise ValueError(f"activation must be 'leaky_relu' or 'gelu', got {self.activation!r}")
        if not self.learning_rate > 0 or not 0 < self.final_lr_fraction <= 1:
            raise ValueError("learning_rate must be > 0 and final_lr_fraction in (0, 1]")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1:
            raise ValueError("batch_size, max_epochs and patience must be >= 1")
        if self.n_bootstrap < 1:
            raise ValueError(f"n_bootstrap must be >= 1, got {self.n_bootstrap}")
        if len(self.split) != 3:
            raise ValueError(f"split must be (train, val, test) fractions, got {self.split}")
        tr, va, te = (float(f) for f in self.split)
        if tr <= 0 or va <= 0 or te < 0 or abs(tr + va + te - 1.0) > 1e-6:
            raise ValueError(f"split must be (train > 0, val > 0, test >= 0) fractions summing to 1, got {self.split}")

    @classmethod
    def small(cls, **overrides: Any) -> ClassifierConfig:
        """Fast settings for tests and quick checks: (64, 64) hidden, batch 1024, at most 15 epochs."""
        base = dict(hidden=(64, 64), learning_rate=2e-3, batch_size=1024, max_epochs=15, patience=3, n_bootstrap=200)
        base.update(overrides)
        return cls(**base)


@dataclass(frozen=True)
class SplitIndices:
    """Row indices into x_ref (``*_ref``) and x_cand (``*_cand``) of each split; the test arrays may be empty."""

    train_ref: np.ndarray
    val_ref: np.ndarray
    test_ref: np.ndarray
    train_cand: np.ndarray
    val_cand: np.ndarray
    test_cand: np.ndarray


@dataclass(frozen=True)
class TrainedClassifier:
    """A trained, calibrated classifier. P(reference | x) is meant with equal class priors.

    model: best-validation MLP; calibration: isotonic map fitted on the validation split; splits: the row
    indices used; train_loss, val_loss: (epochs_run,) class-balanced BCE per epoch [nats]; best_epoch: 0-based
    epoch whose parameters were kept.
    """

    model: MLP
    calibration: IsotonicMap
    splits: SplitIndices
    train_loss: np.ndarray
    val_loss: np.ndarray
    best_epoch: int
    config: ClassifierConfig = field(repr=False)

    @property
    def epochs_run(self) -> int:
        return int(self.train_loss.size)

    def predict_logit(self, x: Any) -> np.ndarray:
        """Raw network logits (n,) float64 for rows x (n, F): class-balanced log(p_ref / p_cand) estimate."""
        a = np.asarray(x, dtype=np.float32)
        n_feat = int(self.model.mean.shape[0])
        if a.ndim != 2 or a.shape[1] != n_feat:
            raise ValueError(f"x must have shape (n, {n_feat}), got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError("x contains NaN or inf values")
        return _predict_logits(self.model, a)

    def predict_raw(self, x: Any) -> np.ndarray:
        """Uncalibrated sigmoid(logit), (n,) float64."""
        return expit(self.predict_logit(x))

    def predict_proba(self, x: Any) -> np.ndarray:
        """Isotonic-calibrated P(reference | x), (n,) float64 in [0, 1]."""
        return self.calibration(self.predict_raw(x))


def _split_class(key: jax.Array, n: int, fractions: tuple[float, float, float]) -> tuple[np.ndarray, ...]:
    perm = np.asarray(jax.random.permutation(key, n))
    n_tr = max(1, round(fractions[0] * n))
    n_va = max(1, round(fractions[1] * n))
    if fractions[2] == 0:
        n_va = n - n_tr
    n_va = min(n_va, n - n_tr)
    return perm[:n_tr], perm[n_tr : n_tr + n_va], perm[n_tr + n_va :]


def _weighted_bce(logits: jax.Array, y: jax.Array, w: jax.Array) -> jax.Array:
    return jnp.sum(w * optax.sigmoid_binary_cross_entropy(logits, y)) / jnp.sum(w)


@eqx.filter_jit
def _train_epoch(params, static, opt_state, optimizer, key, x, y, w, batch_size):
    """One epoch: random permutation, drop the remainder (< batch_size rows, different each epoch), scan over
    minibatches. Returns params, opt_state and the mean minibatch loss."""
    n = x.shape[0]
    bs = min(batch_size, n)
    n_batches = n // bs
    idx = jax.random.permutation(key, n)[: n_batches * bs].reshape(n_batches, bs)

    def loss_fn(p, xb, yb, wb):
        model = eqx.combine(p, static)
        # Weights have mean 1 over the training split, so the plain mean is an unbiased minibatch estimate.
        return jnp.mean(wb * optax.sigmoid_binary_cross_entropy(jax.vmap(model)(xb), yb))

    def step(carry, ib):
        p, s = carry
        loss, grads = jax.value_and_grad(loss_fn)(p, x[ib], y[ib], w[ib])
        updates, s = optimizer.update(grads, s, p)
        return (eqx.apply_updates(p, updates), s), loss

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), idx)
    return params, opt_state, jnp.mean(losses)


@eqx.filter_jit
def _eval_loss(params, static, x, y, w):
    return _weighted_bce(jax.vmap(eqx.combine(params, static))(x), y, w)


@functools.lru_cache(maxsize=64)
def _make_optimizer(
    learning_rate: float, final_lr_fraction: float, weight_decay: float, total_steps: int
) -> optax.GradientTransformation:
    """Adam(W) with cosine decay; cached so that equal settings reuse the compiled training epoch."""
    schedule = optax.cosine_decay_schedule(learning_rate, max(1, total_steps), alpha=final_lr_fraction)
    if weight_decay > 0:
        return optax.adamw(schedule, weight_decay=weight_decay)
    return optax.adam(schedule)


def train_classifier(
    key: jax.Array | int, x_ref: Any, x_cand: Any, config: ClassifierConfig | None = None
) -> TrainedClassifier:
    """Train and calibrate a reference (label 1) vs candidate (label 0) classifier.

    x_ref: (N, F), x_cand: (M, F), each with >= 50 finite rows. Stratified random split by ``config.split``;
    class-balanced BCE (weights n / (2 n_c) per split); Adam + cosine decay, epochs scanned under jit, early
    stopping on the validation BCE keeping the best parameters; isotonic calibration of the validation
    probabilities with the same class-balanced weights.
    """
    cfg = config or ClassifierConfig()
    xr, xc = _check_samples(x_ref, x_cand)
    k_split_r, k_split_c, k_init, k_train = jax.random.split(as_key(key), 4)
    tr_r, va_r, te_r = _split_class(k_split_r, xr.shape[0], cfg.split)
    tr_c, va_c, te_c = _split_class(k_split_c, xc.shape[0], cfg.split)
    splits = SplitIndices(tr_r, va_r, te_r, tr_c, va_c, te_c)

    def stack(ir: np.ndarray, ic: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.concatenate([xr[ir], xc[ic]])
        y = np.concatenate([np.ones(ir.size), np.zeros(ic.size)])
        return x, y, balanced_weights(y)

    x_tr, y_tr, w_tr = stack(tr_r, tr_c)
    x_va, y_va, w_va = stack(va_r, va_c)
    mean = x_tr.mean(axis=0)
    std = x_tr.std(axis=0)
    std = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)

    model = MLP(k_init, mean, std, cfg.hidden, cfg.activation)
    params, static = eqx.partition(model, model.trainable_filter())
    bs = min(cfg.batch_size, x_tr.shape[0])
    optimizer = _make_optimizer(
        cfg.learning_rate, cfg.final_lr_fraction, cfg.weight_decay, cfg.max_epochs * (x_tr.shape[0] // bs)
    )
    opt_state = optimizer.init(params)

    f32 = lambda a: jnp.asarray(a, dtype=jnp.float32)
    xj_tr, yj_tr, wj_tr = f32(x_tr), f32(y_tr), f32(w_tr)
    xj_va, yj_va, wj_va = f32(x_va), f32(y_va), f32(w_va)

    best_params, best_val, best_epoch, wait = params, np.inf, 0, 0
    train_hist: list[float] = []
    val_hist: list[float] = []
    for epoch in range(cfg.max_epochs):
        params, opt_state, tl = _train_epoch(
            params, static, opt_state, optimizer, jax.random.fold_in(k_train, epoch), xj_tr, yj_tr, wj_tr, bs
        )
        vl = float(_eval_loss(params, static, xj_va, yj_va, wj_va))
        train_hist.append(float(tl))
        val_hist.append(vl)
        if vl < best_val - cfg.min_delta:
            best_params, best_val, best_epoch, wait = params, vl, epoch, 0
        else:
            wait += 1
            if wait >= cfg.patience:
                break

    model = eqx.combine(best_params, static)
    p_va = expit(_predict_logits(model, x_va))
    calibration = fit_isotonic(p_va, y_va, w_va, pool_pure_ends=True)
    return TrainedClassifier(model, calibration, splits, np.array(train_hist), np.array(val_hist), best_epoch, cfg)


# ----------------------------------------------------------------------------------------------------------------
# The two-sample test
# ----------------------------------------------------------------------------------------------------------------


def balanced_bce(prob: Any, labels: Any) -> float:
    """Class-balanced BCE [nats]: (mean_ref(-ln C) + mean_cand(-ln(1 - C))) / 2, C clipped to [1e-7, 1 - 1e-7]."""
    c = np.clip(np.asarray(prob, dtype=np.float64), PROB_CLIP, 1.0 - PROB_CLIP)
    y = np.asarray(labels)
    return float(0.5 * np.mean(-np.log(c[y == 1])) + 0.5 * np.mean(-np.log1p(-c[y == 0])))


@dataclass(frozen=True)
class ClassifierResult:
    """Result of ``classifier_test`` on the test split (calibrated probabilities unless stated).

    auc: Mann-Whitney AUC; auc_interval: (2.5 %, 97.5 %) bootstrap percentiles; auc_std: bootstrap standard
    deviation; auc_raw: AUC of the uncalibrated output; bce: class-balanced BCE [nats]; jsd: (ln 2 - bce) / ln 2
    (0 = indistinguishable, 1 = separated; can be slightly negative from fluctuations); bce_raw, jsd_raw: the
    same with the uncalibrated output (cross-check); n_*: rows (both classes) per split; epochs: epochs run.
    """

    auc: float
    auc_interval: tuple[float, float]
    auc_std: float
    auc_raw: float
    bce: float
    jsd: float
    bce_raw: float
    jsd_raw: float
    n_train: int
    n_val: int
    n_test: int
    epochs: int
    classifier: TrainedClassifier = field(repr=False)

    def to_dict(self) -> dict[str, float | int | list[float]]:
        """JSON-serialisable summary (plain numbers, no classifier)."""
        return self.summary()

    def summary(self) -> dict[str, float | int | list[float]]:
        """Plain-number summary for reports."""
        return {
            "auc": self.auc,
            "auc_interval": list(self.auc_interval),
            "auc_std": self.auc_std,
            "auc_raw": self.auc_raw,
            "bce": self.bce,
            "jsd": self.jsd,
            "bce_raw": self.bce_raw,
            "jsd_raw": self.jsd_raw,
            "n_train": self.n_train,
            "n_val": self.n_val,
            "n_test": self.n_test,
            "epochs": self.epochs,
        }


def classifier_test(
    key: jax.Array | int, x_ref: Any, x_cand: Any, config: ClassifierConfig | None = None
) -> ClassifierResult:
    """Classifier two-sample test of reference x_ref (N, F) against candidate x_cand (M, F).

    Trains with ``train_classifier`` (first half of the key split), evaluates the calibrated probabilities on the
    test split, and bootstraps the test split ``config.n_bootstrap`` times (second half) for the AUC interval.
    """
    cfg = config or ClassifierConfig()
    if cfg.split[2] <= 0:
        raise ValueError(f"config.split needs a test fraction > 0 for classifier_test, got {cfg.split}")
    xr, xc = _check_samples(x_ref, x_cand)
    k_train, k_boot = jax.random.split(as_key(key))
    clf = train_classifier(k_train, xr, xc, cfg)
    sp = clf.splits
    if sp.test_ref.size == 0 or sp.test_cand.size == 0:
        raise ValueError(f"config.split test fraction {cfg.split[2]} leaves an empty test split for a class")
    x_te = np.concatenate([xr[sp.test_ref], xc[sp.test_cand]])
    y_te = np.concatenate([np.ones(sp.test_ref.size), np.zeros(sp.test_cand.size)])
    p_raw = clf.predict_raw(x_te)
    p_cal = clf.calibration(p_raw)
    a = auc(p_cal, y_te)
    boot = bootstrap_auc(k_boot, p_cal, y_te, cfg.n_bootstrap)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    bce = balanced_bce(p_cal, y_te)
    bce_raw = balanced_bce(p_raw, y_te)
    ln2 = math.log(2.0)
    return ClassifierResult(
        auc=a,
        auc_interval=(float(lo), float(hi)),
        auc_std=float(np.std(boot, ddof=1)) if boot.size > 1 else 0.0,
        auc_raw=auc(p_raw, y_te),
        bce=bce,
        jsd=(ln2 - bce) / ln2,
        bce_raw=bce_raw,
        jsd_raw=(ln2 - bce_raw) / ln2,
        n_train=int(sp.train_ref.size + sp.train_cand.size),
        n_val=int(sp.val_ref.size + sp.val_cand.size),
        n_test=int(y_te.size),
        epochs=clf.epochs_run,
        classifier=clf,
    )


def with_split(config: ClassifierConfig, split: tuple[float, float, float]) -> ClassifierConfig:
    """A copy of ``config`` with another (train, val, test) split."""
    return replace(config, split=split)
