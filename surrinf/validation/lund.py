"""Primary Lund-plane density of jets and the KL divergence between two Lund densities (generated vs reference).

The primary Lund plane (F. A. Dreyer, G. P. Salam, G. Soyez, "The Lund jet plane", JHEP 12 (2018) 064,
arXiv:1807.04758): a jet's constituents are reclustered with the Cambridge/Aachen (C/A) algorithm (pairwise distance
Delta_ij^2 = (y_i - y_j)^2 + (phi_i - phi_j)^2 in *rapidity* y = 0.5 ln((E + pz) / (E - pz)) and azimuth, E-scheme
recombination: four-momenta add). The clustering is then undone from the jet down, always following the harder
(higher-pT) branch; each step j -> (a, b) with pT_a >= pT_b records one primary emission

    Delta = sqrt((y_a - y_b)^2 + dphi_ab^2),  kt = pT_b Delta [GeV],  z = pT_b / (pT_a + pT_b),

a point (ln 1/Delta, ln kt/GeV) of the Lund plane. :func:`lund_points` has two back ends with the same output: a
self-contained numpy C/A (O(n^2) per merging step; meant for jets of <= ~100 constituents) and fastjet
(``fastjet.ClusterSequence`` with ``cambridge_algorithm``, the ``pythia`` extra), chosen automatically.

:func:`lund_density` bins the points into rho = (1 / N_jet) dN_emissions / (d ln 1/Delta d ln kt) with Poisson errors;
its integral over the plane is the mean number of primary emissions per jet inside the plane. :func:`lund_kl` is the
KL divergence D(P || Q) between two such densities normalised to unit mass over the plane, with a documented
pseudo-count, a bootstrap error over jets and its finite-sample expectation for two samples of one distribution.
:func:`plot_lund_density` and :func:`plot_lund_ratio` draw them. Statistics are float64 numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import jax
import numpy as np
from matplotlib.colors import LogNorm, TwoSlopeNorm
from matplotlib.figure import Figure

from surrinf._checks import check_positive_int
from surrinf.report.figure import hep_style, new_figure

__all__ = [
    "DEFAULT_LN_INV_DELTA_EDGES",
    "DEFAULT_LN_KT_EDGES",
    "LundDensity",
    "LundKL",
    "LundPoints",
    "fastjet_available",
    "lund_density",
    "lund_kl",
    "lund_points",
    "plot_lund_density",
    "plot_lund_ratio",
]

#: Same text as :data:`surrinf.kinfit.pythia.PYTHIA_EXTRA_HINT` (validation does not import kinfit).
PYTHIA_EXTRA_HINT = "needs the 'pythia' extra: pip install 'surrinf[pythia]'"

#: Default bins of ln(1/Delta): [0, 6] in steps of 0.25 (Delta from 1 down to 2.5e-3).
DEFAULT_LN_INV_DELTA_EDGES = np.linspace(0.0, 6.0, 25)
#: Default bins of ln(kt / GeV): [-3, 6] in steps of 0.5 (kt from 0.05 GeV to 403 GeV).
DEFAULT_LN_KT_EDGES = np.linspace(-3.0, 6.0, 19)

#: C/A radius of the fastjet reclustering: fastjet's largest allowed R, so every constituent ends in one jet.
_FASTJET_CA_RADIUS = 1000.0


# --------------------------------------------------------------------------------------------- declustering


@dataclass(frozen=True)
class LundPoints:
    """The primary Lund-plane emissions of ``n_jets`` jets, one entry per declustering step (M,).

    ``delta``: rapidity-azimuth distance between the two branches (> 0); ``kt`` [GeV] = pT_softer Delta (> 0);
    ``z`` = pT_softer / (pT_1 + pT_2) in (0, 1/2]; ``jet``: index of the jet in [0, n_jets) (int64), emissions of a
    jet in declustering order (largest Delta first in C/A). Jets without emission (one constituent) count in
    ``n_jets``. ``backend``: what produced them ("numpy", "fastjet", or "external").
    """

    delta: np.ndarray
    kt: np.ndarray
    z: np.ndarray
    jet: np.ndarray
    n_jets: int
    backend: str = "external"

    def __post_init__(self) -> None:
        n_jets = check_positive_int(self.n_jets, "n_jets")
        arrays = {}
        for name in ("delta", "kt", "z"):
            a = np.asarray(getattr(self, name), dtype=np.float64)
            if a.ndim != 1:
                raise ValueError(f"LundPoints.{name} must be 1-D (M,), got shape {a.shape}")
            arrays[name] = a
        jet = np.asarray(self.jet)
        if jet.ndim != 1 or not (jet.size == 0 or np.issubdtype(jet.dtype, np.integer)):
            raise ValueError(f"LundPoints.jet must be a 1-D integer array (M,), got {jet.dtype} {jet.shape}")
        shapes = {k: a.shape for k, a in arrays.items()} | {"jet": jet.shape}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"LundPoints arrays must have one common shape (M,), got {shapes}")
        for name in ("delta", "kt"):
            a = arrays[name]
            if not np.all(np.isfinite(a) & (a > 0)):
                raise ValueError(f"LundPoints.{name} must be finite and > 0")
        z = arrays["z"]
        if not np.all(np.isfinite(z) & (z > 0) & (z <= 0.5 + 1e-12)):
            raise ValueError("LundPoints.z must lie in (0, 1/2] (pT_softer / (pT_1 + pT_2))")
        if jet.size and (jet.min() < 0 or jet.max() >= n_jets):
            raise ValueError(f"LundPoints.jet must lie in [0, n_jets = {n_jets})")
        for name, a in arrays.items():
            object.__setattr__(self, name, a)
        object.__setattr__(self, "jet", jet.astype(np.int64))
        object.__setattr__(self, "n_jets", n_jets)

    def __len__(self) -> int:
        return int(self.delta.size)

    @property
    def ln_inv_delta(self) -> np.ndarray:
        """ln(1 / Delta) (M,)."""
        return -np.log(self.delta)

    @property
    def ln_kt(self) -> np.ndarray:
        """ln(kt / GeV) (M,)."""
        return np.log(self.kt)

    def multiplicity(self) -> np.ndarray:
        """Number of primary emissions of each jet (n_jets,) int64 (the whole plane, no binning)."""
        return np.bincount(self.jet, minlength=self.n_jets).astype(np.int64)

    def subset(self, jets: Any) -> LundPoints:
        """The emissions of the jets with indices ``jets`` (K,) (renumbered 0..K-1 in that order)."""
        idx = np.asarray(jets, dtype=np.int64).ravel()
        if idx.size == 0 or idx.min() < 0 or idx.max() >= self.n_jets or np.unique(idx).size != idx.size:
            raise ValueError(f"jets must be distinct indices in [0, {self.n_jets}), at least one")
        new = np.full(self.n_jets, -1, np.int64)
        new[idx] = np.arange(idx.size)
        keep = new[self.jet] >= 0
        order = np.argsort(new[self.jet[keep]], kind="stable")
        sel = np.flatnonzero(keep)[order]
        return LundPoints(self.delta[sel], self.kt[sel], self.z[sel], new[self.jet[sel]], idx.size, self.backend)


def fastjet_available() -> bool:
    """Whether the fastjet back end can be used (the ``pythia`` extra is installed)."""
    try:
        import fastjet._swig  # noqa: F401
    except ImportError:
        return False
    return True


def _import_fastjet() -> Any:
    try:
        import fastjet._swig as fj
    except ImportError as e:
        raise ImportError(f"surrinf.validation.lund backend='fastjet' {PYTHIA_EXTRA_HINT} ({e})") from e
    return fj


def _as_jets(constituents: Any, counts: Any) -> list[np.ndarray]:
    """Constituents as a list of (n_i, 4) float64 arrays (px, py, pz, E) [GeV], checked."""
    form = "a sequence of (n_i, 4) arrays or a padded (N, n_max, 4) array with counts (N,)"
    if counts is None:
        if isinstance(constituents, np.ndarray) and constituents.ndim == 3:
            raise ValueError("constituents is a padded (N, n_max, 4) array: pass counts (N,) (constituents per jet)")
        if isinstance(constituents, np.ndarray | str) or not isinstance(constituents, Sequence):
            raise ValueError(f"constituents must be {form}, got {type(constituents).__name__}")
        jets = []
        for i, j in enumerate(constituents):
            try:
                a = np.asarray(j, dtype=np.float64)
            except (TypeError, ValueError) as e:
                raise ValueError(
                    f"constituents[{i}] must be a real (n_i, 4) array (px, py, pz, E) [GeV]: {e}"
                ) from None
            if a.ndim != 2 or a.shape[1] != 4:
                raise ValueError(f"constituents[{i}] must have shape (n_i, 4) = (px, py, pz, E) [GeV], got {a.shape}")
            jets.append(a)
    else:
        try:
            a = np.asarray(constituents, dtype=np.float64)
            c = np.asarray(counts)
        except (TypeError, ValueError) as e:
            raise ValueError(f"constituents must be {form}: {e}") from None
        if a.ndim != 3 or a.shape[2] != 4:
            raise ValueError(f"with counts, constituents must have shape (N, n_max, 4) (px, py, pz, E), got {a.shape}")
        if c.shape != (a.shape[0],) or not np.issubdtype(c.dtype, np.integer):
            raise ValueError(f"counts must be an integer array of shape (N={a.shape[0]},), got {c.dtype} {c.shape}")
        if c.size and (c.min() < 0 or c.max() > a.shape[1]):
            raise ValueError(f"counts must lie in [0, n_max = {a.shape[1]}]")
        jets = [a[i, : int(k)] for i, k in enumerate(c)]
    if not jets:
        raise ValueError("constituents must hold at least one jet")
    for i, a in enumerate(jets):
        if a.size == 0:
            continue
        if not np.all(np.isfinite(a)):
            raise ValueError(f"constituents of jet {i} must be finite (px, py, pz, E) [GeV]; found NaN or inf")
        if np.any(a[:, 3] <= 0) or np.any(a[:, 0] ** 2 + a[:, 1] ** 2 <= 0):
            raise ValueError(f"constituents of jet {i} must have E > 0 and pT > 0 [GeV] (rapidity and phi defined)")
    return jets


def _kinematics(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pT^2, rapidity and phi in [0, 2 pi) of four-momenta (..., 4) (fastjet's definitions, massless-safe)."""
    px, py, pz, e = p[..., 0], p[..., 1], p[..., 2], p[..., 3]
    pt2 = px * px + py * py
    m2 = np.maximum(e * e - pt2 - pz * pz, 0.0)
    e_plus_abs_pz = e + np.abs(pz)
    rap = 0.5 * np.log((pt2 + m2) / (e_plus_abs_pz * e_plus_abs_pz))
    rap = np.where(pz > 0, -rap, rap)
    phi = np.mod(np.arctan2(py, px), 2.0 * np.pi)
    return pt2, rap, phi


def _dphi(a: np.ndarray, b: Any) -> np.ndarray:
    d = np.abs(a - b)
    return np.where(d > np.pi, 2.0 * np.pi - d, d)


def _ca_history(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """C/A clustering of one jet's constituents (n, 4) to a single pseudojet.

    Returns the four-momenta of all 2n - 1 nodes (leaves first, merged nodes in merging order) and their parents
    (2n - 1, 2) (-1 for leaves). Each step merges the pair with the smallest Delta^2 (ties: lowest index pair).
    """
    n = p.shape[0]
    mom = np.zeros((2 * n - 1, 4))
    mom[:n] = p
    parents = np.full((2 * n - 1, 2), -1, np.int64)
    _, rap, phi = _kinematics(p)
    dist = (rap[:, None] - rap[None, :]) ** 2 + _dphi(phi[:, None], phi[None, :]) ** 2
    np.fill_diagonal(dist, np.inf)
    node = np.arange(n)  # node held by each slot
    alive = np.ones(n, bool)
    nxt = n
    for _ in range(n - 1):
        i, j = divmod(int(np.argmin(dist)), n)  # i < j: the merged pseudojet takes slot i
        mom[nxt] = mom[node[i]] + mom[node[j]]
        parents[nxt] = node[i], node[j]
        node[i] = nxt
        nxt += 1
        alive[j] = False
        dist[j, :] = np.inf
        dist[:, j] = np.inf
        _, r, f = _kinematics(mom[node[i]])
        rap[i], phi[i] = r, f
        row = np.where(alive, (rap - r) ** 2 + _dphi(phi, f) ** 2, np.inf)
        row[i] = np.inf
        dist[i, :] = row
        dist[:, i] = row
    return mom, parents


def _decluster_numpy(p: np.ndarray) -> np.ndarray:
    """Primary declusterings (k, 3) = (Delta, kt, z) of one jet (n, 4) with the numpy C/A."""
    if p.shape[0] < 2:
        return np.zeros((0, 3))
    mom, parents = _ca_history(p)
    pt2, rap, phi = _kinematics(mom)
    pt = np.sqrt(pt2)
    out = []
    node = mom.shape[0] - 1
    while parents[node, 0] >= 0:
        a, b = parents[node]
        if pt2[a] < pt2[b]:
            a, b = b, a
        delta = math.sqrt((rap[a] - rap[b]) ** 2 + float(_dphi(phi[a], phi[b])) ** 2)
        out.append((delta, pt[b] * delta, pt[b] / (pt[a] + pt[b])))
        node = a
    return np.asarray(out, dtype=np.float64)


def _decluster_fastjet(fj: Any, jet_def: Any, p: np.ndarray) -> np.ndarray:
    """Primary declusterings (k, 3) = (Delta, kt, z) of one jet (n, 4) with fastjet's C/A."""
    if p.shape[0] < 2:
        return np.zeros((0, 3))
    cs = fj.ClusterSequence([fj.PseudoJet(*row) for row in p.tolist()], jet_def)
    (jet,) = cs.exclusive_jets(1)
    out = []
    a, b = fj.PseudoJet(), fj.PseudoJet()
    while jet.has_parents(a, b):
        if a.pt2() < b.pt2():
            a, b = b, a
        delta = a.delta_R(b)
        out.append((delta, b.pt() * delta, b.pt() / (a.pt() + b.pt())))
        jet, a, b = a, fj.PseudoJet(), fj.PseudoJet()
    del cs
    return np.asarray(out, dtype=np.float64).reshape(-1, 3)


def lund_points(
    constituents: Any,
    counts: Any = None,
    *,
    backend: Literal["auto", "numpy", "fastjet"] = "auto",
) -> LundPoints:
    """Primary Lund-plane emissions of jets (module docstring: C/A reclustering, harder-branch declustering).

    ``constituents``: a sequence of N arrays (n_i, 4) = (px, py, pz, E) [GeV], or a zero-padded array
    (N, n_max, 4) with ``counts`` (N,) (the number of real rows of each jet). Every constituent needs E > 0 and
    pT > 0; a jet with 0 or 1 constituent has no emission but counts as a jet. ``backend``: "numpy" (self-contained,
    ~1 ms per 60-constituent jet), "fastjet" (the ``pythia`` extra; ImportError with the install hint when absent)
    or "auto" (fastjet when installed, numpy otherwise). Both give the same points to rounding.
    """
    if backend not in ("auto", "numpy", "fastjet"):
        raise ValueError(f"backend must be 'auto', 'numpy' or 'fastjet', got {backend!r}")
    jets = _as_jets(constituents, counts)
    if backend == "auto":
        backend = "fastjet" if fastjet_available() else "numpy"
    if backend == "fastjet":
        fj = _import_fastjet()
        jet_def = fj.JetDefinition(fj.cambridge_algorithm, _FASTJET_CA_RADIUS)
        steps = [_decluster_fastjet(fj, jet_def, p) for p in jets]
    else:
        steps = [_decluster_numpy(p) for p in jets]
    allsteps = np.concatenate(steps) if steps else np.zeros((0, 3))
    jet = np.repeat(np.arange(len(jets), dtype=np.int64), [s.shape[0] for s in steps])
    return LundPoints(allsteps[:, 0], allsteps[:, 1], allsteps[:, 2], jet, len(jets), backend)


# --------------------------------------------------------------------------------------------- density


def _check_edges(edges: Any, name: str) -> np.ndarray:
    try:
        e = np.asarray(edges, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a 1-D array of bin edges: {err}") from None
    if e.ndim != 1 or e.size < 2 or not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
        raise ValueError(f"{name} must be >= 2 finite, strictly increasing bin edges, got {e!r}")
    return e


@dataclass(frozen=True)
class LundDensity:
    """A binned primary Lund-plane density rho = (1 / N_jet) dN_emissions / (d ln 1/Delta d ln kt).

    ``counts`` (nx, ny): emissions per bin (x = ln 1/Delta, y = ln kt/GeV) with edges ``x_edges`` (nx + 1,) and
    ``y_edges`` (ny + 1,); ``n_jets``: jets of the sample (including jets with no emission in the plane);
    ``n_outside``: emissions outside the plane. ``emission_bin`` / ``emission_jet`` (M_in,): flat bin index
    (x-major) and jet of each emission inside the plane, for the bootstrap of :func:`lund_kl`.
    """

    x_edges: np.ndarray
    y_edges: np.ndarray
    counts: np.ndarray
    n_jets: int
    n_outside: int
    emission_bin: np.ndarray = field(repr=False)
    emission_jet: np.ndarray = field(repr=False)

    @property
    def area(self) -> np.ndarray:
        """Bin areas (nx, ny) in (ln 1/Delta) x (ln kt)."""
        return np.outer(np.diff(self.x_edges), np.diff(self.y_edges))

    @property
    def density(self) -> np.ndarray:
        """rho (nx, ny) per jet per unit area."""
        return self.counts / (self.n_jets * self.area)

    @property
    def density_err(self) -> np.ndarray:
        """Poisson error of rho (nx, ny): sqrt(counts) / (N_jet area)."""
        return np.sqrt(self.counts) / (self.n_jets * self.area)

    def integral(self) -> float:
        """Integral of rho over the plane = mean number of primary emissions per jet inside the plane."""
        return float(np.sum(self.density * self.area))

    def integral_err(self) -> float:
        """Standard error of :meth:`integral` from the spread of the per-jet emission counts in the plane."""
        per_jet = np.bincount(self.emission_jet, minlength=self.n_jets)
        return float(np.std(per_jet, ddof=1) / math.sqrt(self.n_jets)) if self.n_jets > 1 else math.nan


def lund_density(points: LundPoints, bins: tuple[Any, Any] | None = None) -> LundDensity:
    """Bin Lund points into the density rho = (1 / N_jet) dN / (d ln 1/Delta d ln kt) (:class:`LundDensity`).

    ``bins`` = (edges of ln 1/Delta, edges of ln kt/GeV), each increasing (default
    :data:`DEFAULT_LN_INV_DELTA_EDGES`, :data:`DEFAULT_LN_KT_EDGES`); bins are half-open [lo, hi) except the last,
    closed. N_jet = ``points.n_jets`` (jets with no emission count). Errors are Poisson on the emission counts.
    """
    if not isinstance(points, LundPoints):
        raise ValueError(f"points must be LundPoints (from lund_points), got {type(points).__name__}")
    if bins is None:
        bins = (DEFAULT_LN_INV_DELTA_EDGES, DEFAULT_LN_KT_EDGES)
    if not isinstance(bins, tuple | list) or len(bins) != 2:
        raise ValueError("bins must be a pair (edges of ln 1/Delta, edges of ln kt/GeV)")
    xe, ye = _check_edges(bins[0], "bins[0] (ln 1/Delta edges)"), _check_edges(bins[1], "bins[1] (ln kt edges)")
    x, y = points.ln_inv_delta, points.ln_kt
    ix = np.searchsorted(xe, x, side="right") - 1
    iy = np.searchsorted(ye, y, side="right") - 1
    ix = np.where(x == xe[-1], xe.size - 2, ix)  # the last bin is closed
    iy = np.where(y == ye[-1], ye.size - 2, iy)
    inside = (ix >= 0) & (ix < xe.size - 1) & (iy >= 0) & (iy < ye.size - 1)
    flat = ix[inside] * (ye.size - 1) + iy[inside]
    counts = np.bincount(flat, minlength=(xe.size - 1) * (ye.size - 1)).astype(np.float64)
    return LundDensity(
        x_edges=xe,
        y_edges=ye,
        counts=counts.reshape(xe.size - 1, ye.size - 1),
        n_jets=points.n_jets,
        n_outside=int(np.count_nonzero(~inside)),
        emission_bin=flat.astype(np.int64),
        emission_jet=points.jet[inside],
    )


# --------------------------------------------------------------------------------------------- KL divergence


@dataclass(frozen=True)
class LundKL:
    """KL divergence D(P || Q) between two Lund densities normalised to unit mass over the plane (:func:`lund_kl`).

    ``value`` [nats]; ``error``: standard deviation over ``n_bootstrap`` Poisson-bootstrap replicates of the jets of
    both samples (0 when n_bootstrap = 0); ``null_mean`` / ``null_sd``: the finite-sample expectation and spread of
    the estimator for two *independent* samples of one distribution, (K - 1) / 2 (1/N_P + 1/N_Q) and
    sqrt(2 (K - 1)) / 2 (1/N_P + 1/N_Q) (K: bins used, N: emissions in the plane; the chi2 limit, independent
    emissions). ``n_bins``: K, bins populated in either sample; ``pseudo_count``: added to each of them.
    ``paired``: the two samples are the same jets (e.g. particle and detector level); then the replicates reweight
    both with the same jet weights and the expectation without distortion is exactly 0, not ``null_mean``.
    """

    value: float
    error: float
    null_mean: float
    null_sd: float
    n_bins: int
    pseudo_count: float
    n_emissions_p: int
    n_emissions_q: int
    n_jets_p: int
    n_jets_q: int
    n_bootstrap: int
    paired: bool = False

    @property
    def excess(self) -> float:
        """The divergence beyond what samples without distortion give on average: value - null_mean (independent
        samples) or value (paired)."""
        return self.value - (0.0 if self.paired else self.null_mean)

    @property
    def significance(self) -> float:
        """excess / sqrt(error^2 + null_sd^2) (independent samples) or excess / error (paired)."""
        s = self.error if self.paired else math.hypot(self.error, self.null_sd)
        return self.excess / s if s > 0 else 0.0

    def to_dict(self) -> dict[str, float | int]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["excess"], d["significance"] = self.excess, self.significance
        return d


def _kl(p_counts: np.ndarray, q_counts: np.ndarray, alpha: float) -> np.ndarray:
    """sum_i p_i ln(p_i / q_i) over the last axis of count arrays (..., K), pseudo-count alpha per bin."""
    p = p_counts + alpha
    q = q_counts + alpha
    p = p / p.sum(axis=-1, keepdims=True)
    q = q / q.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p / q), 0.0)
    return terms.sum(axis=-1)


def _poisson_weights(key: jax.Array, n_bootstrap: int, n_jets: int) -> np.ndarray:
    """Poisson(1) bootstrap weights (B, n_jets) float64.

    The jax key seeds a numpy Generator (same key, same weights): ``jax.random.poisson`` would compile anew for
    every sample size (~3 s each).
    """
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key), dtype=np.uint32).ravel())
    return rng.poisson(1.0, (n_bootstrap, n_jets)).astype(np.float64)


def _bootstrap_counts(w: np.ndarray, d: LundDensity, support: np.ndarray) -> np.ndarray:
    """Replicate counts (B, K) of ``d`` on the bins ``support`` (K,) with jet weights ``w`` (B, n_jets)."""
    n_bootstrap = w.shape[0]
    col = np.full(d.counts.size, -1, np.int64)
    col[support] = np.arange(support.size)
    c = col[d.emission_bin]
    keep = c >= 0
    c, jets = c[keep], d.emission_jet[keep]
    k = support.size
    idx = (np.arange(n_bootstrap)[:, None] * k + c[None, :]).ravel()
    return np.bincount(idx, weights=w[:, jets].ravel(), minlength=n_bootstrap * k).reshape(n_bootstrap, k)


def lund_kl(
    key: jax.Array,
    density_p: LundDensity,
    density_q: LundDensity,
    *,
    pseudo_count: float = 0.5,
    n_bootstrap: int = 200,
    paired: bool = False,
) -> LundKL:
    """KL divergence D(P || Q) = sum_i p_i ln(p_i / q_i) between two Lund densities on the same bins.

    p_i, q_i are the emission counts normalised to unit sum over the plane (so D compares shapes; compare the
    multiplicities, :meth:`LundDensity.integral`, separately). Empty bins: bins empty in both samples are dropped
    (no information); ``pseudo_count`` alpha (default 0.5, the Jeffreys-prior posterior mean of a multinomial) is
    added to every remaining bin of both, so a bin empty in one sample gives a finite term. D = 0 for identical
    densities; for two finite samples of one distribution E[D] ~ (K - 1)/2 (1/N_P + 1/N_Q) (``null_mean``).
    Error: Poisson-bootstrap over jets (each jet's emissions reweighted together, so correlations inside a jet are
    kept), ``n_bootstrap`` replicates from ``key``; pass ``n_bootstrap=0`` to skip it. ``paired``: P and Q are the
    same jets (jet i of one is jet i of the other, e.g. particle level and the same jets after a detector response):
    both are reweighted with the same jet weights, which keeps their correlation (the independent resampling would
    overstate the error), and D = 0 is the expectation without distortion. Near the null (a distortion no larger
    than the statistical noise) D is quadratic in the fluctuations and the bootstrap error overstates its spread
    (by ~1.3-1.5 in the tests' toys); compare with ``null_mean`` there. Returns :class:`LundKL`.
    """
    for name, d in (("density_p", density_p), ("density_q", density_q)):
        if not isinstance(d, LundDensity):
            raise ValueError(f"{name} must be a LundDensity (from lund_density), got {type(d).__name__}")
    if not (
        np.array_equal(density_p.x_edges, density_q.x_edges) and np.array_equal(density_p.y_edges, density_q.y_edges)
    ):
        raise ValueError("density_p and density_q must have the same bins (x_edges and y_edges)")
    alpha = float(pseudo_count) if not isinstance(pseudo_count, bool) else math.nan
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"pseudo_count must be a finite number > 0 (counts added per bin), got {pseudo_count!r}")
    n_bootstrap = check_positive_int(n_bootstrap, "n_bootstrap", minimum=0)
    if not isinstance(paired, bool):
        raise ValueError(f"paired must be True or False, got {paired!r}")
    if paired and density_p.n_jets != density_q.n_jets:
        raise ValueError(
            f"paired=True needs the same jets in both samples; n_jets differ ({density_p.n_jets}, {density_q.n_jets})"
        )
    pc, qc = density_p.counts.ravel(), density_q.counts.ravel()
    n_p, n_q = float(pc.sum()), float(qc.sum())
    if n_p == 0 or n_q == 0:
        raise ValueError(
            f"both densities need emissions inside the plane (density_p has {n_p:.0f}, density_q {n_q:.0f})"
        )
    support = np.flatnonzero((pc > 0) | (qc > 0))
    k = support.size
    value = float(_kl(pc[support], qc[support], alpha))
    error = 0.0
    if n_bootstrap > 1:
        kp, kq = jax.random.split(key)
        wp = _poisson_weights(kp, n_bootstrap, density_p.n_jets)
        wq = wp if paired else _poisson_weights(kq, n_bootstrap, density_q.n_jets)
        bp = _bootstrap_counts(wp, density_p, support)
        bq = _bootstrap_counts(wq, density_q, support)
        error = float(np.std(_kl(bp, bq, alpha), ddof=1))
    scale = 0.5 * (1.0 / n_p + 1.0 / n_q)
    return LundKL(
        value=max(value, 0.0),
        error=error,
        null_mean=(k - 1) * scale,
        null_sd=math.sqrt(2.0 * max(k - 1, 0)) * scale,
        n_bins=int(k),
        pseudo_count=alpha,
        n_emissions_p=int(n_p),
        n_emissions_q=int(n_q),
        n_jets_p=density_p.n_jets,
        n_jets_q=density_q.n_jets,
        n_bootstrap=n_bootstrap,
        paired=paired,
    )


# --------------------------------------------------------------------------------------------- figures

_X_LABEL = r"$\ln(1/\Delta)$"
_Y_LABEL = r"$\ln(k_t/\mathrm{GeV})$"


def plot_lund_density(
    densities: LundDensity | Sequence[LundDensity],
    labels: str | Sequence[str] | None = None,
    *,
    vmin: float | None = None,
) -> Figure:
    """Lund-plane densities rho side by side on one logarithmic colour scale (empty bins white).

    ``densities``: one :class:`LundDensity` or several (same bins); ``labels``: a panel title each. ``vmin``: lower
    end of the colour scale (default: the smallest non-zero rho).
    """
    ds = [densities] if isinstance(densities, LundDensity) else list(densities)
    if not ds or not all(isinstance(d, LundDensity) for d in ds):
        raise ValueError("densities must be a LundDensity or a non-empty sequence of them")
    labs = [labels] if isinstance(labels, str) else list(labels or [None] * len(ds))
    if len(labs) != len(ds):
        raise ValueError(f"labels must have one entry per density ({len(ds)}), got {len(labs)}")
    rho = [d.density for d in ds]
    positive = np.concatenate([r[r > 0] for r in rho]) if any(np.any(r > 0) for r in rho) else np.array([1.0])
    norm = LogNorm(vmin=vmin if vmin is not None else float(positive.min()), vmax=float(positive.max()))
    fig, axes = new_figure(ncols=len(ds), figsize=(8.5 * len(ds), 7.0))
    axes = np.atleast_1d(axes)
    with hep_style():
        for ax, d, r, lab in zip(axes, ds, rho, labs, strict=True):
            mesh = ax.pcolormesh(d.x_edges, d.y_edges, np.ma.masked_less_equal(r, 0).T, norm=norm, cmap="viridis")
            ax.set_xlabel(_X_LABEL)
            ax.set_ylabel(_Y_LABEL)
            if lab:
                ax.set_title(f"{lab} ({d.n_jets} jets)", fontsize=16)
        fig.colorbar(mesh, ax=list(axes), label=r"$\rho = \frac{1}{N_\mathrm{jet}}\frac{dN}{d\ln(1/\Delta)\,d\ln k_t}$")
    return fig


def plot_lund_ratio(
    generated: LundDensity | Sequence[LundDensity],
    reference: LundDensity,
    labels: str | Sequence[str] | None = None,
    *,
    min_count: int = 10,
    ratio_range: tuple[float, float] = (0.0, 2.0),
) -> Figure:
    """Ratio rho_generated / rho_reference per bin, one panel per generated density (same bins as the reference).

    Bins with fewer than ``min_count`` reference emissions are left white (their ratio is noise); the colour scale
    spans ``ratio_range`` and is centred on 1.
    """
    gens = [generated] if isinstance(generated, LundDensity) else list(generated)
    if not gens or not all(isinstance(d, LundDensity) for d in [*gens, reference]):
        raise ValueError("generated must be a LundDensity or a non-empty sequence of them; reference a LundDensity")
    for g in gens:
        if not (np.array_equal(g.x_edges, reference.x_edges) and np.array_equal(g.y_edges, reference.y_edges)):
            raise ValueError("every generated density must have the reference's bins")
    lo, hi = (float(v) for v in ratio_range)
    if not (lo < 1.0 < hi):
        raise ValueError(f"ratio_range must be (lo, hi) with lo < 1 < hi, got {ratio_range!r}")
    min_count = check_positive_int(min_count, "min_count")
    labs = [labels] if isinstance(labels, str) else list(labels or [None] * len(gens))
    if len(labs) != len(gens):
        raise ValueError(f"labels must have one entry per generated density ({len(gens)}), got {len(labs)}")
    ref = reference.density
    fig, axes = new_figure(ncols=len(gens), figsize=(8.5 * len(gens), 7.0))
    axes = np.atleast_1d(axes)
    norm = TwoSlopeNorm(vcenter=1.0, vmin=lo, vmax=hi)
    with hep_style():
        for ax, g, lab in zip(axes, gens, labs, strict=True):
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = g.density / ref
            masked = np.ma.masked_where(reference.counts < min_count, ratio)
            mesh = ax.pcolormesh(g.x_edges, g.y_edges, masked.T, norm=norm, cmap="RdBu_r")
            ax.set_xlabel(_X_LABEL)
            ax.set_ylabel(_Y_LABEL)
            if lab:
                ax.set_title(lab, fontsize=14)
        fig.colorbar(mesh, ax=list(axes), label=r"$\rho_\mathrm{generated} / \rho_\mathrm{reference}$")
    return fig
