"""Sample-based distances between a reference sample x and a surrogate sample y of feature vectors.

* :func:`energy_distance_test` -- Szekely-Rizzo energy distance (unbiased U-statistic) with a permutation p-value.
* :func:`frechet_distance` / :func:`fpd` -- Frechet (Gaussian) distance, FPD of Kansal et al. 2023, with a
  bootstrap error.
* :func:`kpd` -- kernel physics distance: unbiased MMD^2 with a polynomial kernel over random batches.

Inputs are (N, F) arrays (a 1-D array is N samples of one feature). Every random result takes an explicit
``jax.random`` key; the same key gives the same bits. Nothing here changes ``jax_enable_x64``: the heavy
permutation / kernel sums run in float32 JAX on centred quantities (no large cancellations), everything else in
float64 numpy.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from scipy.linalg.blas import dsyrk

from ..report.measurement import Measurement

__all__ = [
    "DistanceResult",
    "EnergyDistanceResult",
    "energy_distance_test",
    "fpd",
    "frechet_distance",
    "gaussian_frechet_distance",
    "kpd",
]


# ----------------------------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class EnergyDistanceResult:
    """Energy-distance two-sample test.

    statistic: unbiased (U-statistic) energy distance of the samples used (can be slightly negative);
    p_value: permutation p-value (1 + #{E_perm >= E_obs}) / (1 + n_permutations); n_x, n_y: rows used after
    subsampling; null_mean, null_std: mean and standard deviation (ddof=1) of the permutation statistics.
    """

    statistic: float
    p_value: float
    n_x: int
    n_y: int
    n_permutations: int
    null_mean: float
    null_std: float

    def __post_init__(self) -> None:
        for name in ("statistic", "p_value", "null_mean", "null_std"):
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("n_x", "n_y", "n_permutations"):
            object.__setattr__(self, name, int(getattr(self, name)))

    def to_dict(self) -> dict[str, float | int]:
        """Plain-Python field dictionary for report tables."""
        return asdict(self)


@dataclass(frozen=True)
class DistanceResult:
    """A distance estimate with its one-sigma error (see the producing function for what the error means)."""

    value: float
    error: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "error", float(self.error))

    def to_dict(self) -> dict[str, float]:
        """Plain-Python field dictionary for report tables."""
        return asdict(self)

    def to_measurement(self) -> Measurement:
        """The same numbers as a report :class:`~surrinf.report.measurement.Measurement` (``"v ± e"``)."""
        return Measurement(self.value, self.error)


# ----------------------------------------------------------------------------------------------------------------
# input checks and helpers


def _samples(a: object, name: str, min_rows: int) -> np.ndarray:
    """Validate a sample and return it as an (N, F) array in its own numeric dtype (no float64 copy yet)."""
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[:, None]
    elif arr.ndim != 2:
        raise ValueError(f"{name} must have shape (N,) or (N, F), got {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has no features (shape {arr.shape})")
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name} must have at least {min_rows} rows, got {arr.shape[0]}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return arr


def _pair(x: object, y: object, min_rows: int) -> tuple[np.ndarray, np.ndarray]:
    xa, ya = _samples(x, "x", min_rows), _samples(y, "y", min_rows)
    if xa.shape[1] != ya.shape[1]:
        raise ValueError(f"x and y must have the same number of features, got x {xa.shape[1]} and y {ya.shape[1]}")
    return xa, ya


def _int_at_least(value: int, name: str, minimum: int) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _mean_std(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and standard deviation (ddof=0) in float64, (F,) each; constant columns get std 1."""
    mean = a.mean(axis=0, dtype=np.float64)
    std = np.sqrt(np.mean((a - mean) ** 2, axis=0))
    return mean, np.where(std > 0, std, 1.0)


def _subsample(key: jax.Array, a: np.ndarray, max_rows: int) -> np.ndarray:
    """At most ``max_rows`` rows of ``a`` drawn without replacement (all rows, in order, if there are few)."""
    if a.shape[0] <= max_rows:
        return a
    idx = np.asarray(jax.random.choice(key, a.shape[0], (max_rows,), replace=False))
    return a[idx]


# ----------------------------------------------------------------------------------------------------------------
# energy distance


def _pairwise_distances(z: np.ndarray) -> np.ndarray:
    """Euclidean distance matrix (n, n) of the rows of z (n, F), float64, via the Gram matrix of centred rows."""
    z = z - z.mean(axis=0)  # distances are translation invariant; centring limits the Gram-trick cancellation
    sq = np.einsum("ij,ij->i", z, z)
    d = z @ z.T
    d *= -2.0
    d += sq[:, None]
    d += sq[None, :]
    np.maximum(d, 0.0, out=d)
    np.sqrt(d, out=d)
    np.fill_diagonal(d, 0.0)
    return d


def _u_center_inplace(d: np.ndarray) -> np.ndarray:
    """U-centre a distance matrix in place (Szekely & Rizzo 2014): zero diagonal, zero row and column sums.

    C_ij = D_ij - r_i/(n-2) - r_j/(n-2) + T/((n-1)(n-2)) for i != j, with r = D 1 and T = 1^T D 1.
    """
    n = d.shape[0]
    r = d.sum(axis=1)
    u = r / (n - 2) - r.sum() / (2.0 * (n - 1) * (n - 2))
    d -= u[:, None]
    d -= u[None, :]
    np.fill_diagonal(d, 0.0)
    return d


def _energy_scale(n_x: int, n_y: int) -> float:
    """k with E_U = -k a^T C a for the U-centred distance matrix C and the x-indicator a."""
    return 2.0 / (n_x * n_y) + 1.0 / (n_x * (n_x - 1)) + 1.0 / (n_y * (n_y - 1))


@partial(jax.jit, static_argnames=("n_x", "batch_size"))
def _permuted_quadratic_forms(c: jax.Array, keys: jax.Array, n_x: int, batch_size: int) -> jax.Array:
    """a^T C a for the random x-indicator a of each key (B,): C (n, n) float32, keys (B,) -> (B,) float32.

    Each key draws a uniformly random subset of n_x of the n pooled rows (a permutation of the labels); lax.map
    with ``batch_size`` vmaps the matrix-vector products into (n, n) x (n, batch) matrix products.
    """
    n = c.shape[0]

    def one(k: jax.Array) -> jax.Array:
        a = (jax.random.permutation(k, n) < n_x).astype(c.dtype)
        return a @ (c @ a)

    return jax.lax.map(one, keys, batch_size=batch_size)


@jax.jit
def _quadratic_form(c: jax.Array, a: jax.Array) -> jax.Array:
    return a @ (c @ a)


def energy_distance_test(
    key: jax.Array,
    x: np.ndarray,
    y: np.ndarray,
    n_permutations: int = 500,
    max_samples: int = 3000,
    standardize: bool = True,
) -> EnergyDistanceResult:
    """Energy distance between samples x (N, F) and y (M, F) with a permutation p-value.

    Estimator (unbiased U-statistic, the same form for the observed and the permuted labels)::

        E = 2/(N M) sum_ij |x_i - y_j| - 1/(N(N-1)) sum_{i!=j} |x_i - x_j| - 1/(M(M-1)) sum_{i!=j} |y_i - y_j|

    Its expectation is the population energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| (0 iff the distributions are
    equal), so it fluctuates around 0 under the null and can be negative. (dcor / scipy report the biased
    V-statistic, which includes the zero diagonal terms.)

    Each sample is first reduced to at most ``max_samples`` rows drawn without replacement (key-driven). With
    ``standardize`` the features are scaled by the pooled mean and std (ddof=0) of the rows used, which is
    symmetric in x and y and unchanged by relabelling, so the permutation test stays exact. The pooled (n, n)
    distance matrix D (n = N + M) is built once in float64 and U-centred to C (zero row sums); the U-statistic is
    invariant under D_ij -> D_ij - u_i - u_j, which gives E = -(2/(NM) + 1/(N(N-1)) + 1/(M(M-1))) a^T C a with a
    the x-indicator vector. The ``n_permutations`` relabelled a^T C a are evaluated in batches in float32 JAX
    (C is O(1) and centred, so no large cancellation). Peak memory is of order 16 n^2 bytes (0.6 GB for 3000 + 3000).

    key: jax.random key (subsampling and permutations); returns an :class:`EnergyDistanceResult`.
    """
    n_permutations = _int_at_least(n_permutations, "n_permutations", 2)
    max_samples = _int_at_least(max_samples, "max_samples", 2)
    xa, ya = _pair(x, y, min_rows=2)
    k_x, k_y, k_perm = jax.random.split(key, 3)
    xa = _subsample(k_x, xa, max_samples).astype(np.float64)
    ya = _subsample(k_y, ya, max_samples).astype(np.float64)
    n_x, n_y = xa.shape[0], ya.shape[0]

    z = np.concatenate([xa, ya], axis=0)
    if standardize:
        mean, std = _mean_std(z)
        z = (z - mean) / std
    c = _u_center_inplace(_pairwise_distances(z))
    k = _energy_scale(n_x, n_y)
    statistic = 0.0 - k * float(c[:n_x, :n_x].sum())  # float64 observed value (a^T C a with a = [1]*N + [0]*M)

    c32 = jnp.asarray(c, dtype=jnp.float32)
    del c
    labels = jnp.asarray(np.arange(n_x + n_y) < n_x, dtype=jnp.float32)
    observed32 = -k * float(_quadratic_form(c32, labels))  # compared in the same float32 arithmetic as the null
    keys = jax.random.split(k_perm, n_permutations)
    null = -k * np.asarray(_permuted_quadratic_forms(c32, keys, n_x, min(128, n_permutations)), dtype=np.float64)
    p_value = (1.0 + np.count_nonzero(null >= observed32)) / (1.0 + n_permutations)
    return EnergyDistanceResult(
        statistic=statistic,
        p_value=p_value,
        n_x=n_x,
        n_y=n_y,
        n_permutations=n_permutations,
        null_mean=float(null.mean()),
        null_std=float(null.std(ddof=1)),
    )


# ----------------------------------------------------------------------------------------------------------------
# Frechet distance


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (F, F) (negative eigenvalues -> 0)."""
    w, v = np.linalg.eigh(0.5 * (a + a.T))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _trace_sqrt_product(cov_x: np.ndarray, cov_y: np.ndarray) -> float:
    """Tr (S_x S_y)^{1/2} = sum_k sqrt(lambda_k(S_x^{1/2} S_y S_x^{1/2})) (symmetric, numerically stable form)."""
    s = _psd_sqrt(cov_x)
    m = s @ cov_y @ s
    ev = np.linalg.eigvalsh(0.5 * (m + m.T))
    return float(np.sqrt(np.clip(ev, 0.0, None)).sum())


def gaussian_frechet_distance(mu_x: np.ndarray, cov_x: np.ndarray, mu_y: np.ndarray, cov_y: np.ndarray) -> float:
    """Frechet (2-Wasserstein squared) distance between N(mu_x, cov_x) and N(mu_y, cov_y), float64.

    |mu_x - mu_y|^2 + Tr(S_x + S_y - 2 (S_x S_y)^{1/2}); mu (F,), cov (F, F) symmetric PSD. The trace of the
    matrix square root is taken from the eigenvalues of S_x^{1/2} S_y S_x^{1/2}; the result is clipped at 0.
    """
    mu_x, mu_y = np.atleast_1d(np.asarray(mu_x, np.float64)), np.atleast_1d(np.asarray(mu_y, np.float64))
    cov_x, cov_y = np.atleast_2d(np.asarray(cov_x, np.float64)), np.atleast_2d(np.asarray(cov_y, np.float64))
    f = mu_x.shape[0]
    if mu_y.shape != (f,) or cov_x.shape != (f, f) or cov_y.shape != (f, f):
        raise ValueError(
            f"inconsistent shapes: mu_x {mu_x.shape}, cov_x {cov_x.shape}, mu_y {mu_y.shape}, cov_y {cov_y.shape}"
        )
    diff = mu_x - mu_y
    value = diff @ diff + np.trace(cov_x) + np.trace(cov_y) - 2.0 * _trace_sqrt_product(cov_x, cov_y)
    return max(float(value), 0.0)


def _mean_cov(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and unbiased covariance (F, F) of a (N, F) float64."""
    mean = a.mean(axis=0)
    return mean, _gram(a - mean) / (a.shape[0] - 1)


def _resampled_mean_cov(centred: np.ndarray, shift: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and unbiased covariance (F, F) of the bootstrap resample taking row i of ``centred + shift``
    ``counts[i]`` times (centred (N, F) with column means 0, counts (N,) summing to N); no resampled copy is made.
    Centring keeps the cancellation in sum w z z^T - N m m^T small."""
    n = centred.shape[0]
    m = counts @ centred / n
    gram = _gram(centred * np.sqrt(counts)[:, None])
    return shift + m, (gram - n * np.outer(m, m)) / (n - 1)


def _gram(a: np.ndarray) -> np.ndarray:
    """a^T a (F, F) for a (N, F) float64, via the symmetric rank-k BLAS update (half the work of a @ a)."""
    upper = dsyrk(1.0, np.ascontiguousarray(a).T, trans=0)
    return np.triu(upper) + np.triu(upper, 1).T


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted (mean, unbiased covariance) to x (N, F) and y (M, F), float64.

    No standardisation; see :func:`fpd` for the FPD convention with reference-standardised features.
    """
    xa, ya = _pair(x, y, min_rows=2)
    return gaussian_frechet_distance(*_mean_cov(xa.astype(np.float64)), *_mean_cov(ya.astype(np.float64)))


@partial(jax.jit, static_argnames=("n", "n_draws"))
def _counts(key: jax.Array, n: int, n_draws: int) -> jax.Array:
    """Multiplicities (n_draws, n) int32 of the rows of n_draws bootstrap resamples of n rows."""

    def one(k: jax.Array) -> jax.Array:
        return jnp.zeros(n, jnp.int32).at[jax.random.randint(k, (n,), 0, n)].add(1)

    return jax.vmap(one)(jax.random.split(key, n_draws))


def _bootstrap_counts(key: jax.Array, n: int, n_draws: int) -> Iterator[np.ndarray]:
    """Yield the (n,) float64 row multiplicities of ``n_draws`` bootstrap resamples of n rows.

    Drawn in chunks of at most ~2^24 counts per JAX call (bounded memory, few dispatches, so that JAX and BLAS
    thread pools do not alternate every replica); chunk c uses ``fold_in(key, c)``.
    """
    per_chunk = max(1, min(n_draws, (1 << 24) // n))
    for c, start in enumerate(range(0, n_draws, per_chunk)):
        counts = np.asarray(_counts(jax.random.fold_in(key, c), n, min(per_chunk, n_draws - start)))
        yield from counts.astype(np.float64)


def fpd(
    key: jax.Array, x: np.ndarray, y: np.ndarray, n_bootstrap: int = 50, standardize: bool = True
) -> DistanceResult:
    """Frechet physics distance (Kansal et al. 2023) of y (M, F) to the reference x (N, F) with a bootstrap error.

    With ``standardize`` both samples are scaled by the mean and std (ddof=0) of x. value: the Frechet distance of
    the full samples; error: std (ddof=1) of the distance over ``n_bootstrap`` resamplings (with replacement) of
    both x and y. The estimator has a positive finite-sample bias, about 2F/N + F(F+1)/(2N) for N = M and
    identical distributions (0.26 for F = 100, N = 20000); the bootstrap error does not include it, and unlike
    JetNet no extrapolation to infinite sample size is done, so compare FPDs at equal F and sample sizes.
    """
    n_bootstrap = _int_at_least(n_bootstrap, "n_bootstrap", 2)
    xa, ya = _pair(x, y, min_rows=2)
    xa, ya = xa.astype(np.float64), ya.astype(np.float64)
    if standardize:
        mean, std = _mean_std(xa)
        xa, ya = (xa - mean) / std, (ya - mean) / std
    value = frechet_distance(xa, ya)
    n_x, n_y = xa.shape[0], ya.shape[0]
    kx, ky = jax.random.split(key)
    mx, my = xa.mean(axis=0), ya.mean(axis=0)
    xc, yc = xa - mx, ya - my
    boot = np.array(
        [
            gaussian_frechet_distance(*_resampled_mean_cov(xc, mx, cx), *_resampled_mean_cov(yc, my, cy))
            for cx, cy in zip(
                _bootstrap_counts(kx, n_x, n_bootstrap), _bootstrap_counts(ky, n_y, n_bootstrap), strict=True
            )
        ]
    )
    return DistanceResult(value, boot.std(ddof=1))


# ----------------------------------------------------------------------------------------------------------------
# kernel physics distance


def _poly_kernel_minus_one(u: jax.Array, degree: int) -> jax.Array:
    """(1 + u)^degree - 1 = sum_{j=1}^{degree} C(degree, j) u^j (Horner), without the cancelling constant 1."""
    p = jnp.ones_like(u)
    for j in range(degree - 1, 0, -1):
        p = p * u + math.comb(degree, j)
    return p * u


@partial(jax.jit, static_argnames=("batch_size", "degree"))
def _kpd_row_sums(
    x: jax.Array, y: jax.Array, keys: jax.Array, batch_size: int, degree: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per batch (one key each, (B,)), row sums of the kernel matrices minus 1: off-diagonal xx, yy and xy.

    x (N, F), y (M, F) float32; returns three (B, batch_size) float32 arrays. The constant 1 of the kernel cancels
    exactly in the unbiased MMD^2, so it is dropped to avoid float32 cancellation.
    """
    f = x.shape[1]
    off_diagonal = ~jnp.eye(batch_size, dtype=bool)

    def one(k: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        kx, ky = jax.random.split(k)
        xb = x[jax.random.permutation(kx, x.shape[0])[:batch_size]]
        yb = y[jax.random.permutation(ky, y.shape[0])[:batch_size]]

        def kern(a: jax.Array, b: jax.Array) -> jax.Array:
            return _poly_kernel_minus_one((a @ b.T) / f, degree)

        sxx = jnp.where(off_diagonal, kern(xb, xb), 0.0).sum(axis=1)
        syy = jnp.where(off_diagonal, kern(yb, yb), 0.0).sum(axis=1)
        sxy = kern(xb, yb).sum(axis=1)
        return sxx, syy, sxy

    return jax.lax.map(one, keys)


def kpd(
    key: jax.Array,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int = 5000,
    n_batches: int = 10,
    degree: int = 3,
    standardize: bool = True,
) -> DistanceResult:
    """Kernel physics distance (Kansal et al. 2023) of y (M, F) to the reference x (N, F).

    Kernel k(a, b) = (a.b / F + 1)^degree on features standardised by the mean and std (ddof=0) of x. Each of
    ``n_batches`` batches draws b = min(batch_size, N, M) rows of x and of y without replacement (key-driven) and
    evaluates the unbiased MMD^2 estimator

        MMD^2_u = 1/(b(b-1)) sum_{i!=j} k(x_i, x_j) + 1/(b(b-1)) sum_{i!=j} k(y_i, y_j) - 2/b^2 sum_ij k(x_i, y_j)

    (zero expectation for equal distributions, can be negative). value: median over batches; error: half the
    16-84 % inter-quantile range of the batch values (JetNet's convention: the spread of one batch estimate, a
    conservative error for the median). Kernel sums run in float32 JAX without the cancelling constant term, and
    the final sums in float64. With b equal to N and M every batch holds the full samples and the error is 0:
    choose batch_size <= N/2 for a meaningful error. JetNet defaults differ: degree 4, features divided by
    max |x|, batches with replacement.
    """
    batch_size = _int_at_least(batch_size, "batch_size", 2)
    n_batches = _int_at_least(n_batches, "n_batches", 1)
    degree = _int_at_least(degree, "degree", 1)
    xa, ya = _pair(x, y, min_rows=2)
    if standardize:
        mean, std = _mean_std(xa)
        xa, ya = (xa - mean) / std, (ya - mean) / std
    b = min(batch_size, xa.shape[0], ya.shape[0])
    keys = jax.random.split(key, n_batches)
    sxx, syy, sxy = (
        np.asarray(s, dtype=np.float64)
        for s in _kpd_row_sums(jnp.asarray(xa, jnp.float32), jnp.asarray(ya, jnp.float32), keys, b, degree)
    )
    values = (sxx.sum(axis=1) + syy.sum(axis=1)) / (b * (b - 1.0)) - 2.0 * sxy.sum(axis=1) / (b * float(b))
    q16, q84 = np.percentile(values, [16.0, 84.0])
    return DistanceResult(float(np.median(values)), 0.5 * (q84 - q16))
