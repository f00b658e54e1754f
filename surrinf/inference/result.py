"""PosteriorResult: draws of theta from any sampler, with the statistics the diagnostics need."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["PosteriorResult", "weighted_quantile"]


def weighted_quantile(values: np.ndarray, q: np.ndarray | float, weights: np.ndarray | None = None) -> np.ndarray:
    """Quantiles q of 1-D values with optional non-negative weights (interpolated weighted CDF)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    qs = np.atleast_1d(np.asarray(q, dtype=np.float64))
    if weights is None:
        return np.quantile(v, qs)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    order = np.argsort(v)
    v, w = v[order], w[order]
    cdf = (np.cumsum(w) - 0.5 * w) / np.sum(w)
    return np.interp(qs, cdf, v)


@dataclass(frozen=True)
class PosteriorResult:
    """Posterior draws of theta.

    samples: (chains, draws, P) float64 in theta units (see ``names``); ``weights``: optional (chains, draws)
    normalised importance weights (SMC particles, importance sampling; None = equal weights).
    sample_stats: per-draw sampler statistics, each (chains, draws): ``diverging`` (bool), ``energy`` (Hamiltonian,
    for E-BFMI), ``tree_depth``, ``acceptance_rate``, ``n_steps`` where the sampler has them.
    tau: the likelihood temperature. log_evidence: log marginal likelihood of the tempered posterior (SMC).
    info: sampler settings and timings (num_warmup, num_samples, wall_s, ...).
    """

    samples: np.ndarray
    names: tuple[str, ...]
    sampler: str
    tau: float
    sample_stats: dict[str, np.ndarray] = field(default_factory=dict)
    weights: np.ndarray | None = None
    log_evidence: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s = np.asarray(self.samples, dtype=np.float64)
        if s.ndim != 3 or s.shape[2] != len(self.names):
            raise ValueError(f"samples must have shape (chains, draws, {len(self.names)}), got {s.shape}")
        object.__setattr__(self, "samples", s)
        if self.weights is not None:
            w = np.asarray(self.weights, dtype=np.float64)
            if w.shape != s.shape[:2] or np.any(w < 0) or not np.isfinite(w).all():
                raise ValueError(f"weights must be finite, >= 0, shape {s.shape[:2]}, got {w.shape}")
            object.__setattr__(self, "weights", w / w.sum())
        for k, v in self.sample_stats.items():
            if np.shape(v) != s.shape[:2]:
                raise ValueError(f"sample_stats[{k!r}] must have shape {s.shape[:2]}, got {np.shape(v)}")

    @property
    def n_chains(self) -> int:
        return self.samples.shape[0]

    @property
    def n_draws(self) -> int:
        return self.samples.shape[1]

    def flat(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(draws (C*D, P), weights (C*D,) or None)."""
        w = None if self.weights is None else self.weights.reshape(-1)
        return self.samples.reshape(-1, self.samples.shape[2]), w

    def mean(self) -> np.ndarray:
        x, w = self.flat()
        return np.average(x, axis=0, weights=w)

    def sd(self) -> np.ndarray:
        x, w = self.flat()
        m = np.average(x, axis=0, weights=w)
        return np.sqrt(np.average((x - m) ** 2, axis=0, weights=w))

    def quantile(self, q: float | np.ndarray) -> np.ndarray:
        """(len(q), P) posterior quantiles of each parameter."""
        x, w = self.flat()
        return np.stack([weighted_quantile(x[:, j], q, w) for j in range(x.shape[1])], axis=1)

    def interval(self, level: float) -> np.ndarray:
        """(P, 2) central credible interval of probability ``level`` per parameter."""
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must lie in (0, 1), got {level}")
        return self.quantile(np.array([(1 - level) / 2, (1 + level) / 2])).T

    def effective_sample_size(self) -> float | None:
        """Kish ESS of the weights (None for unweighted draws; use the diagnostics for MCMC ESS)."""
        if self.weights is None:
            return None
        w = self.weights.reshape(-1)
        return float(1.0 / np.sum(w**2))
