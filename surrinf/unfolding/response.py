"""ResponseMatrix: detector migrations between truth and reco bins, estimated from paired simulated events.

Normalisation (explicit): ``probabilities[j, i] = P(reco bin j | truth bin i)`` = migrations[j, i] / truth_counts[i],
where ``truth_counts[i]`` counts every event *generated* in truth bin i, reconstructed or not. Columns therefore sum to
the efficiency ``efficiency[i] <= 1``; events lost (not reconstructed, or reconstructed outside the reco binning) are
the missing probability. Fakes are reco events whose truth lies outside the truth binning (or that have no truth);
they are kept as counts and as the fraction ``fake_fraction[j]`` of reco bin j.

Statistical uncertainty of the matrix (finite simulation): per truth bin the reco bins plus "lost" form one
multinomial draw of ``n_eff[i]`` events, so Cov(P[j, i], P[k, i]) = (delta_jk P[j, i] - P[j, i] P[k, i]) / n_eff[i] and
columns are independent; the efficiency is binomial, Var(eps_i) = eps_i (1 - eps_i) / n_eff[i]. With weighted
events n_eff = (sum w)^2 / sum w^2 (Kish).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import numpy as np

__all__ = ["ResponseMatrix"]


def _f64(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _check_edges(edges: Any, name: str) -> np.ndarray:
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
        raise ValueError(f"{name} must be a 1-D array of >= 2 finite, strictly increasing bin edges, got {e!r}")
    return e


def _bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each value, -1 outside [edges[0], edges[-1]) or NaN."""
    idx = np.searchsorted(edges, values, side="right") - 1
    inside = np.isfinite(values) & (values >= edges[0]) & (values < edges[-1])
    return np.where(inside, idx, -1)


class ResponseMatrix(eqx.Module):
    """Migrations (n_reco, n_truth), generated counts per truth bin (n_truth,), their effective numbers (n_truth,),
    fakes per reco bin (n_reco,) and the bin edges. All float64 (numpy); build with :meth:`from_events` or
    :meth:`from_response_model`, or directly from histograms."""

    migrations: np.ndarray = eqx.field(converter=_f64)
    truth_counts: np.ndarray = eqx.field(converter=_f64)
    fakes: np.ndarray = eqx.field(converter=_f64)
    truth_edges: np.ndarray = eqx.field(converter=_f64)
    reco_edges: np.ndarray = eqx.field(converter=_f64)
    n_eff: np.ndarray = eqx.field(converter=_f64)

    def __init__(
        self,
        migrations: Any,
        truth_counts: Any,
        fakes: Any = None,
        truth_edges: Any = None,
        reco_edges: Any = None,
        n_eff: Any = None,
    ):
        m = _f64(migrations)
        if m.ndim != 2 or min(m.shape) < 1:
            raise ValueError(f"migrations must have shape (n_reco, n_truth), got {m.shape}")
        n_r, n_t = m.shape
        t = _f64(truth_counts)
        if t.shape != (n_t,):
            raise ValueError(f"truth_counts must have shape ({n_t},) (generated events per truth bin), got {t.shape}")
        f = np.zeros(n_r) if fakes is None else _f64(fakes)
        if f.shape != (n_r,):
            raise ValueError(f"fakes must have shape ({n_r},) (reco events without truth), got {f.shape}")
        for name, a in (("migrations", m), ("truth_counts", t), ("fakes", f)):
            if not np.all(np.isfinite(a)) or np.any(a < 0):
                raise ValueError(f"{name} must be finite and >= 0")
        if np.any(m.sum(axis=0) > t * (1 + 1e-12) + 1e-12):
            raise ValueError(
                "migrations summed over reco bins exceed truth_counts: truth_counts must count every "
                "generated event of the truth bin, reconstructed or not"
            )
        self.migrations, self.truth_counts, self.fakes = m, t, f
        self.truth_edges = np.arange(n_t + 1.0) if truth_edges is None else _check_edges(truth_edges, "truth_edges")
        self.reco_edges = np.arange(n_r + 1.0) if reco_edges is None else _check_edges(reco_edges, "reco_edges")
        if self.truth_edges.shape != (n_t + 1,) or self.reco_edges.shape != (n_r + 1,):
            raise ValueError(
                f"truth_edges / reco_edges must have {n_t + 1} / {n_r + 1} entries, got "
                f"{self.truth_edges.size} / {self.reco_edges.size}"
            )
        ne = t.copy() if n_eff is None else _f64(n_eff)
        if ne.shape != (n_t,) or np.any(ne < 0) or not np.all(np.isfinite(ne)):
            raise ValueError(f"n_eff must have shape ({n_t},), finite and >= 0, got {ne.shape}")
        self.n_eff = ne

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_events(
        cls,
        truth: Any,
        reco: Any,
        truth_edges: Any,
        reco_edges: Any,
        *,
        reconstructed: Any = None,
        weights: Any = None,
    ) -> ResponseMatrix:
        """From paired events: ``truth`` (N,) and ``reco`` (N,) values in the units of their edges. An event is lost
        when ``reconstructed`` (N,) bool is False, ``reco`` is NaN or outside ``reco_edges``; it is a fake when its
        ``truth`` is NaN or outside ``truth_edges`` but its reco value is in range. ``weights`` (N,) >= 0 optional."""
        te, re = _check_edges(truth_edges, "truth_edges"), _check_edges(reco_edges, "reco_edges")
        t, r = _f64(truth).reshape(-1), _f64(reco).reshape(-1)
        if r.shape != t.shape:
            raise ValueError(f"truth and reco must have the same length (one pair per event), got {t.size}, {r.size}")
        w = np.ones_like(t) if weights is None else _f64(weights).reshape(-1)
        if w.shape != t.shape or not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(f"weights must have shape ({t.size},), finite and >= 0")
        ok = np.ones(t.shape, bool) if reconstructed is None else np.asarray(reconstructed, bool).reshape(-1)
        if ok.shape != t.shape:
            raise ValueError(f"reconstructed must have shape ({t.size},) (bool per event), got {ok.shape}")
        it, ir = _bin_index(t, te), _bin_index(np.where(ok, r, np.nan), re)
        n_t, n_r = te.size - 1, re.size - 1
        has_t, has_r = it >= 0, ir >= 0
        truth_counts = np.bincount(it[has_t], w[has_t], minlength=n_t)
        sumw2 = np.bincount(it[has_t], w[has_t] ** 2, minlength=n_t)
        both = has_t & has_r
        migrations = np.zeros((n_r, n_t))
        np.add.at(migrations, (ir[both], it[both]), w[both])
        fake = ~has_t & has_r
        fakes = np.bincount(ir[fake], w[fake], minlength=n_r)
        n_eff = np.divide(truth_counts**2, sumw2, out=np.zeros(n_t), where=sumw2 > 0)
        return cls(migrations, truth_counts, fakes, te, re, n_eff)

    @classmethod
    def from_response_model(
        cls,
        key: jax.Array,
        response: Any,
        truth: Any,
        truth_edges: Any,
        reco_edges: Any,
        observable: Callable[[np.ndarray], np.ndarray],
        *,
        conditions: Any = None,
        weights: Any = None,
    ) -> ResponseMatrix:
        """Sample ``response.sample(key, conditions)`` (conditions default: ``truth`` as (N,)) and histogram the pairs
        (truth, ``observable(observations)``); ``observable`` maps (N, ...) observations to (N,) reco values, NaN for
        events that are not reconstructed. Works for the reference simulators and every surrogate alike."""
        t = _f64(truth).reshape(-1)
        cond = t if conditions is None else conditions
        obs = response.sample(key, cond)
        reco = _f64(observable(np.asarray(obs))).reshape(-1)
        if reco.shape != t.shape:
            raise ValueError(f"observable must return one reco value per event ({t.size},), got {reco.shape}")
        return cls.from_events(t, reco, truth_edges, reco_edges, weights=weights)

    # ------------------------------------------------------------------ derived quantities
    @property
    def n_truth(self) -> int:
        return self.migrations.shape[1]

    @property
    def n_reco(self) -> int:
        return self.migrations.shape[0]

    @property
    def probabilities(self) -> np.ndarray:
        """(n_reco, n_truth) P(reco j | truth i); zero columns for truth bins without generated events."""
        return np.divide(
            self.migrations, self.truth_counts, out=np.zeros_like(self.migrations), where=self.truth_counts > 0
        )

    @property
    def efficiency(self) -> np.ndarray:
        """(n_truth,) probability that an event of truth bin i is reconstructed inside the reco binning."""
        return self.probabilities.sum(axis=0)

    @property
    def efficiency_variance(self) -> np.ndarray:
        """(n_truth,) binomial variance eps (1 - eps) / n_eff."""
        e = self.efficiency
        return np.divide(e * (1 - e), self.n_eff, out=np.zeros_like(e), where=self.n_eff > 0)

    @property
    def element_variance(self) -> np.ndarray:
        """(n_reco, n_truth) multinomial variance of each P[j, i]: P (1 - P) / n_eff[i]."""
        p = self.probabilities
        return np.divide(p * (1 - p), self.n_eff, out=np.zeros_like(p), where=self.n_eff > 0)

    def column_covariance(self, i: int) -> np.ndarray:
        """(n_reco, n_reco) covariance of column i of :attr:`probabilities` (multinomial, one truth bin)."""
        if not 0 <= int(i) < self.n_truth:
            raise ValueError(f"i must be a truth-bin index in [0, {self.n_truth}), got {i}")
        p = self.probabilities[:, int(i)]
        n = self.n_eff[int(i)]
        return (np.diag(p) - np.outer(p, p)) / n if n > 0 else np.zeros((p.size, p.size))

    @property
    def fake_fraction(self) -> np.ndarray:
        """(n_reco,) fraction of the simulated reco events in bin j that are fakes."""
        total = self.fakes + self.migrations.sum(axis=1)
        return np.divide(self.fakes, total, out=np.zeros_like(total), where=total > 0)

    def fold(self, truth_spectrum: Any) -> np.ndarray:
        """(n_reco,) expected reco counts (without fakes) of a truth spectrum (n_truth,) [events per truth bin]."""
        t = _f64(truth_spectrum)
        if t.shape != (self.n_truth,):
            raise ValueError(f"truth_spectrum must have shape ({self.n_truth},), got {t.shape}")
        return self.probabilities @ t

    @property
    def truth_centers(self) -> np.ndarray:
        return 0.5 * (self.truth_edges[1:] + self.truth_edges[:-1])

    @property
    def reco_centers(self) -> np.ndarray:
        return 0.5 * (self.reco_edges[1:] + self.reco_edges[:-1])

    def to_dict(self) -> dict[str, list]:
        """Plain-JSON form (lists of floats); :meth:`from_dict` restores it."""
        names = ("migrations", "truth_counts", "fakes", "truth_edges", "reco_edges", "n_eff")
        return {k: np.asarray(getattr(self, k)).tolist() for k in names}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResponseMatrix:
        missing = {"migrations", "truth_counts"} - set(data)
        if missing:
            raise ValueError(f"response dict lacks keys {sorted(missing)}")
        return cls(
            **{k: data.get(k) for k in ("migrations", "truth_counts", "fakes", "truth_edges", "reco_edges", "n_eff")}
        )
