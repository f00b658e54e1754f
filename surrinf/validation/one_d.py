"""One-dimensional comparisons of an observable between a reference and a candidate sample.

For each observable: the two-sample Kolmogorov-Smirnov test with its effect size and a practical
significance verdict; the 1-Wasserstein distance W1 with its bootstrap uncertainty and its *floor* (the
W1 of reference against reference at the same sample sizes, from bootstrap pairs drawn from the
reference); the CaloChallenge separation power 0.5 sum (h1 - h2)^2 / (h1 + h2) and a chi2 on matched
histograms; and the shift of the mean and the ratio of the widths, so that a difference can be
attributed (scale versus resolution).

Practical significance: a KS difference is *statistically* significant when p < alpha at the sizes at
hand. It is *practically* relevant only if an analysis with ``n_practical`` events (default 10 000)
could see it: D above the alpha-critical value of the reference-vs-reference KS statistic at that size,
D_crit = K_(1-alpha) sqrt(2 / n_practical) with K the Kolmogorov distribution (the KS null is the same
for every continuous distribution, so this is the reference-vs-reference spread). A tiny shift in a huge
sample is significant but negligible (docs/validation.md has the worked example).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

#: Verdicts of :func:`compare_1d`.
CONSISTENT = "consistent"
NEGLIGIBLE = "significant, practically negligible"
RELEVANT = "significant"


@dataclass(frozen=True)
class OneDComparison:
    """All one-dimensional numbers for one observable (reference vs candidate)."""

    name: str
    n_ref: int
    n_cand: int
    ks_statistic: float
    ks_pvalue: float
    ks_critical_practical: float
    verdict: str
    w1: float
    w1_err: float
    w1_floor: float
    w1_floor_err: float
    separation_power: float
    chi2: float
    chi2_ndf: int
    chi2_pvalue: float
    mean_ref: float
    mean_shift: float
    mean_shift_err: float
    width_ratio: float
    width_ratio_err: float

    @property
    def w1_over_floor(self) -> float:
        """W1 in units of its reference-vs-reference floor (about 1 for compatible samples)."""
        return self.w1 / self.w1_floor if self.w1_floor > 0 else (0.0 if self.w1 == 0 else np.inf)

    @property
    def w1_within_floor(self) -> bool:
        """W1 compatible with the floor: below floor + 3 x the combined bootstrap spread."""
        return bool(self.w1 <= self.w1_floor + 3.0 * np.hypot(self.w1_err, self.w1_floor_err))

    @property
    def mean_shift_significance(self) -> float:
        return self.mean_shift / self.mean_shift_err if self.mean_shift_err > 0 else 0.0

    @property
    def width_ratio_significance(self) -> float:
        return (self.width_ratio - 1.0) / self.width_ratio_err if self.width_ratio_err > 0 else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["w1_over_floor"] = self.w1_over_floor
        d["w1_within_floor"] = self.w1_within_floor
        return d


def _cdf_distances(values: np.ndarray, wa: np.ndarray, wb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W1 and KS D between weighted empirical distributions on the same sorted support.

    values: (K,) sorted support; wa, wb: (B, K) non-negative weights, each row summing to 1. W1 is the
    integral and D the maximum of |F - G| over the support (exact for empirical distributions; at tied
    values only the last position counts for D)."""
    return _signed_cdf_distances(values, wa - wb)


def _signed_cdf_distances(values: np.ndarray, dw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_cdf_distances` from the signed weights dw = wa - wb (B, K); dw is overwritten."""
    diff = np.cumsum(dw, axis=1, out=dw)[:, :-1]  # F - G just after each support value
    gaps = np.diff(values)
    adiff = np.abs(diff)
    w1 = adiff @ gaps
    if not np.all(gaps > 0):  # tied support values: only the last position of a tie counts for D
        adiff = np.where(gaps > 0, adiff, 0.0)
    d = np.max(adiff, axis=1, initial=0.0)
    return w1, d


def _bootstrap_counts(rng: np.random.Generator, n: int, n_draws: int, b: int) -> np.ndarray:
    """(b, n) multiplicities of ``n_draws`` draws with replacement from n points."""
    idx = rng.integers(0, n, (b, n_draws))
    idx += (np.arange(b) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=b * n).reshape(b, n)


def _bootstrap_weights(rng: np.random.Generator, n: int, n_draws: int, b: int) -> np.ndarray:
    """(b, n) weights of ``n_draws`` draws with replacement from n points, each row summing to 1."""
    return _bootstrap_counts(rng, n, n_draws, b) / n_draws


def _merged(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted union of x (n,) and y (m,) and the sort order (indices < n belong to x)."""
    both = np.concatenate([x, y])
    order = np.argsort(both, kind="stable")
    return both[order], order


def wasserstein_1d(x: np.ndarray, y: np.ndarray) -> float:
    """Exact 1-Wasserstein distance between two 1-D empirical samples (same as scipy's)."""
    x, y = np.asarray(x, float).reshape(-1), np.asarray(y, float).reshape(-1)
    values, order = _merged(x, y)
    wa = np.where(order < x.size, 1.0 / x.size, 0.0)[None]
    wb = np.where(order >= x.size, 1.0 / y.size, 0.0)[None]
    return float(_cdf_distances(values, wa, wb)[0][0])


def _histograms(ref: np.ndarray, cand: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts on common bins spanning the reference's 0.1-99.9 % range (overflow into the edge bins)."""
    lo, hi = np.percentile(ref, [0.1, 99.9])
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    h_ref = np.histogram(np.clip(ref, lo, hi), edges)[0].astype(float)
    h_cand = np.histogram(np.clip(cand, lo, hi), edges)[0].astype(float)
    return h_ref, h_cand


def separation_power(ref: np.ndarray, cand: np.ndarray, bins: int = 50) -> float:
    """CaloChallenge separation power 0.5 sum (h1 - h2)^2 / (h1 + h2) of normalised histograms (0..1)."""
    h1, h2 = _histograms(np.asarray(ref, float), np.asarray(cand, float), bins)
    h1, h2 = h1 / h1.sum(), h2 / h2.sum()
    s = h1 + h2
    return float(0.5 * np.sum(np.where(s > 0, (h1 - h2) ** 2 / np.where(s > 0, s, 1.0), 0.0)))


def histogram_chi2(ref: np.ndarray, cand: np.ndarray, bins: int = 50) -> tuple[float, int, float]:
    """Two-sample chi2 of unweighted histograms with different totals (matched bins):
    chi2 = sum (sqrt(N_c/N_r) r_i - sqrt(N_r/N_c) c_i)^2 / (r_i + c_i); ndf = filled bins - 1."""
    r, c = _histograms(np.asarray(ref, float), np.asarray(cand, float), bins)
    nr, nc = r.sum(), c.sum()
    filled = (r + c) > 0
    chi2 = float(np.sum((np.sqrt(nc / nr) * r[filled] - np.sqrt(nr / nc) * c[filled]) ** 2 / (r[filled] + c[filled])))
    ndf = int(filled.sum() - 1)
    return chi2, ndf, float(stats.chi2.sf(chi2, ndf)) if ndf > 0 else 1.0


def ks_critical(n: int, m: int | None = None, alpha: float = 0.05) -> float:
    """Critical KS statistic at level alpha for sample sizes n and m (asymptotic Kolmogorov)."""
    m = n if m is None else m
    return float(stats.kstwobign.ppf(1.0 - alpha) * np.sqrt((n + m) / (n * m)))


def _check(name: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.size < 10:
        raise ValueError(f"{name} needs at least 10 values, got {x.size}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def compare_1d(
    ref: np.ndarray,
    cand: np.ndarray,
    name: str = "observable",
    *,
    seed: int = 0,
    n_bootstrap: int = 50,
    bins: int = 50,
    alpha: float = 0.05,
    n_practical: int = 10_000,
) -> OneDComparison:
    """Compare one observable of a reference (N,) and a candidate (M,) sample.

    The W1 uncertainty comes from ``n_bootstrap`` resamples of both samples; the floor is the mean W1
    of ``n_bootstrap`` pairs of samples of sizes (N, M) drawn from the reference, its error their
    standard deviation. ``seed`` drives the resampling (numpy Generator).
    """
    r = _check(f"reference values of {name}", ref)
    c = _check(f"candidate values of {name}", cand)
    n, m = r.size, c.size
    rng = np.random.default_rng(seed)
    ks = stats.ks_2samp(r, c)
    # Bootstrap resamples as multinomial weights on the fixed sorted support: no re-sorting.
    # Signed weights w_r - w_c live in the index space of concat(r, c): columns < n belong to r, the others to c,
    # so one array holds both (the difference is exact); row 0 holds the samples themselves.
    values, order = _merged(r, c)
    dw = np.empty((n_bootstrap + 1, n + m))
    dw[0, :n], dw[0, n:] = 1.0 / n, -1.0 / m
    np.divide(_bootstrap_counts(rng, n, n, n_bootstrap), n, out=dw[1:, :n])
    np.divide(_bootstrap_counts(rng, m, m, n_bootstrap), -m, out=dw[1:, n:])
    w_all = _signed_cdf_distances(values, dw[:, order])[0]
    w1, boot = float(w_all[0]), w_all[1:]
    # Floor: pairs of samples of sizes (n, m) drawn from the reference.
    perm = np.argsort(r, kind="stable")
    dw_floor = _bootstrap_weights(rng, n, n, n_bootstrap)
    dw_floor -= _bootstrap_weights(rng, n, m, n_bootstrap)
    floor = _signed_cdf_distances(r[perm], dw_floor[:, perm])[0]
    d_crit = ks_critical(n_practical, alpha=alpha)
    if ks.pvalue >= alpha:
        verdict = CONSISTENT
    elif ks.statistic < d_crit:
        verdict = NEGLIGIBLE
    else:
        verdict = RELEVANT
    sp = separation_power(r, c, bins)
    chi2, ndf, p_chi2 = histogram_chi2(r, c, bins)
    sr, sc = r.std(ddof=1), c.std(ddof=1)
    # Errors of the mean shift and of the width ratio (Gaussian approximation; kurtosis-corrected width).
    shift_err = np.sqrt(sr**2 / n + sc**2 / m)

    def rel_var_std(x: np.ndarray) -> float:
        k = stats.kurtosis(x, fisher=False) if x.std() > 0 else 3.0
        return (k - 1.0) / (4.0 * x.size)

    ratio = sc / sr if sr > 0 else (1.0 if sc == 0 else np.inf)
    ratio_err = ratio * np.sqrt(rel_var_std(r) + rel_var_std(c)) if sr > 0 else 0.0
    return OneDComparison(
        name=name,
        n_ref=n,
        n_cand=m,
        ks_statistic=float(ks.statistic),
        ks_pvalue=float(ks.pvalue),
        ks_critical_practical=d_crit,
        verdict=verdict,
        w1=w1,
        w1_err=float(boot.std(ddof=1)),
        w1_floor=float(floor.mean()),
        w1_floor_err=float(floor.std(ddof=1)),
        separation_power=sp,
        chi2=chi2,
        chi2_ndf=ndf,
        chi2_pvalue=p_chi2,
        mean_ref=float(r.mean()),
        mean_shift=float(c.mean() - r.mean()),
        mean_shift_err=float(shift_err),
        width_ratio=float(ratio),
        width_ratio_err=float(ratio_err),
    )
