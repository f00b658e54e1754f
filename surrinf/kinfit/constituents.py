"""Jets with their constituents: Pythia 8 QCD jets (the ``pythia`` extra) and a per-constituent detector response.

:class:`JetConstituents` holds N jets as a zero-padded array of constituent four-momenta (N, n_max, 4) =
(px, py, pz, E) [GeV] with the number of constituents of each jet (N,): the input of
:func:`surrinf.validation.lund.lund_points` (``lund_points(jets.p4, jets.counts)``).

- :func:`generate_pythia_jets`: particle-level anti-kt jets of Pythia 8 QCD events with their constituents (the
  same event settings and visible-particle selection as :func:`surrinf.kinfit.pythia.generate_pythia`). pythia8mc,
  fastjet and awkward are imported lazily; without them an ImportError gives the install hint.
- :func:`apply_constituent_response`: the same jets seen by a calorimeter. Constituents are summed into cells of a
  (eta, phi) grid (towers: massless, at the cell centre), each tower's energy is drawn from any energy response
  model (``response.sample(key, conditions)`` with conditions (T, 2) = (E [GeV], eta), e.g.
  :class:`surrinf.kinfit.response.JetResponse` or its surrogate :class:`~surrinf.kinfit.response.JetResponseFlow`),
  and towers at or below an energy threshold are dropped. The jets are not re-found: detector jet i is particle jet
  i, so a Lund-plane comparison measures the response alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from surrinf._checks import check_positive_int
from surrinf.kinfit.pythia import (
    _MAX_EMPTY_EVENTS,
    next_visible_batch,
    pythia_settings,
    start_pythia,
)

__all__ = ["JetConstituents", "apply_constituent_response", "generate_pythia_jets"]


@dataclass(frozen=True)
class JetConstituents:
    """N jets with their constituents.

    ``p4`` (N, n_max, 4) float64: (px, py, pz, E) [GeV] of each constituent, rows ``counts[i]:`` of jet i zero;
    ``counts`` (N,) int64 in [0, n_max]. Real constituents must be finite with E > 0 (checked).
    """

    p4: np.ndarray
    counts: np.ndarray

    def __post_init__(self) -> None:
        p4 = np.asarray(self.p4, dtype=np.float64)
        counts = np.asarray(self.counts)
        if p4.ndim != 3 or p4.shape[2] != 4:
            raise ValueError(f"p4 must have shape (N, n_max, 4) = (px, py, pz, E) [GeV], got {p4.shape}")
        if counts.shape != (p4.shape[0],) or not (counts.size == 0 or np.issubdtype(counts.dtype, np.integer)):
            raise ValueError(f"counts must be an integer array of shape (N={p4.shape[0]},), got {counts.shape}")
        if counts.size and (counts.min() < 0 or counts.max() > p4.shape[1]):
            raise ValueError(f"counts must lie in [0, n_max = {p4.shape[1]}]")
        real = np.arange(p4.shape[1])[None, :] < counts[:, None]
        if not np.all(np.isfinite(p4)):
            raise ValueError("p4 must be finite (px, py, pz, E) [GeV]")
        if np.any(p4[..., 3][real] <= 0):
            raise ValueError("every constituent must have E > 0 [GeV]")
        object.__setattr__(self, "p4", p4)
        object.__setattr__(self, "counts", counts.astype(np.int64))

    @classmethod
    def from_list(cls, jets: list[Any]) -> JetConstituents:
        """From a list of (n_i, 4) arrays (px, py, pz, E) [GeV]."""
        arrays = [np.asarray(j, dtype=np.float64).reshape(-1, 4) for j in jets]
        counts = np.array([a.shape[0] for a in arrays], np.int64)
        p4 = np.zeros((len(arrays), int(counts.max(initial=0)), 4))
        for i, a in enumerate(arrays):
            p4[i, : a.shape[0]] = a
        return cls(p4, counts)

    @property
    def n_jets(self) -> int:
        return int(self.counts.size)

    def __len__(self) -> int:
        return self.n_jets

    def jets(self) -> list[np.ndarray]:
        """The constituents of each jet, a list of N arrays (n_i, 4)."""
        return [self.p4[i, :c] for i, c in enumerate(self.counts)]

    def flat(self) -> tuple[np.ndarray, np.ndarray]:
        """All constituents (M, 4) and the index of their jet (M,) int64."""
        real = np.arange(self.p4.shape[1])[None, :] < self.counts[:, None]
        return self.p4[real], np.repeat(np.arange(self.n_jets, dtype=np.int64), self.counts)

    def jet_p4(self) -> np.ndarray:
        """Jet four-momenta (N, 4) (E-scheme sum of the constituents) [GeV]."""
        return self.p4.sum(axis=1)

    def jet_pt(self) -> np.ndarray:
        """Jet transverse momenta (N,) [GeV]."""
        p = self.jet_p4()
        return np.hypot(p[:, 0], p[:, 1])

    def select(self, jets: Any) -> JetConstituents:
        """The jets with indices (or boolean mask) ``jets``, in that order."""
        idx = np.arange(self.n_jets)[np.asarray(jets)]
        counts = self.counts[idx]
        n_max = int(counts.max(initial=0))
        return JetConstituents(self.p4[idx, :n_max], counts)


def _from_flat(p4: np.ndarray, jet: np.ndarray, n_jets: int) -> JetConstituents:
    """Pad constituents (M, 4) with jet indices (M,) (grouped by jet, in order) into :class:`JetConstituents`."""
    counts = np.bincount(jet, minlength=n_jets).astype(np.int64)
    out = np.zeros((n_jets, int(counts.max(initial=0)), 4))
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(jet.size) - start[jet]
    out[jet, slot] = p4
    return JetConstituents(out, counts)


def _eta_phi(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Energy, pseudorapidity and phi in [0, 2 pi) of four-momenta (M, 4) (pT > 0 required)."""
    pt = np.hypot(p[:, 0], p[:, 1])
    if np.any(pt <= 0):
        raise ValueError("every constituent needs pT > 0 (pseudorapidity and phi undefined along the beam)")
    return p[:, 3], np.arcsinh(p[:, 2] / pt), np.mod(np.arctan2(p[:, 1], p[:, 0]), 2.0 * np.pi)


def apply_constituent_response(
    key: jax.Array,
    jets: JetConstituents,
    response: Any = None,
    *,
    cell_size: tuple[float, float] | None = None,
    e_min_gev: float = 0.0,
) -> JetConstituents:
    """The jets as measured by a calorimeter: towers of summed constituents with an energy response applied.

    1. Cells (``cell_size`` = (d_eta, d_phi) [1, rad]; None: every constituent is its own tower): the eta axis is cut
       at multiples of d_eta, the phi axis into n_phi = round(2 pi / d_phi) equal cells; the energies of a jet's
       constituents in one cell add up into a tower placed at the cell centre (no cells: at the constituent's eta,
       phi).
    2. Energy response: each tower's energy E is replaced by ``response.sample(key, conditions)`` with conditions
       (T, 2) = (E [GeV], tower eta), which must return (T,) finite energies [GeV]; None: no smearing. Any response
       model with that protocol works (:class:`surrinf.kinfit.response.JetResponse`, sigma/E = a/sqrt(E) (+) b (+)
       c/E, or a trained :class:`~surrinf.kinfit.response.JetResponseFlow`).
    3. Towers with measured E <= ``e_min_gev`` [GeV] (>= 0; a Gaussian response can give E < 0 at low energy) are
       dropped; the rest become massless four-vectors (px, py, pz, E) along the tower direction.

    Detector jet i is particle jet i (no re-clustering; jets may lose all towers). Same key -> same towers.
    """
    if not isinstance(jets, JetConstituents):
        raise ValueError(f"jets must be JetConstituents, got {type(jets).__name__}")
    if response is not None and not callable(getattr(response, "sample", None)):
        raise ValueError("response must have a method sample(key, conditions (T, 2) = (E [GeV], eta)) or be None")
    e_min = float(e_min_gev) if not isinstance(e_min_gev, bool) else math.nan
    if not (math.isfinite(e_min) and e_min >= 0):
        raise ValueError(f"e_min_gev must be a finite number >= 0 [GeV], got {e_min_gev!r}")
    p, jet = jets.flat()
    e, eta, phi = _eta_phi(p)
    if cell_size is not None:
        try:
            d_eta, d_phi = (float(v) for v in cell_size)
        except (TypeError, ValueError):
            raise ValueError(f"cell_size must be (d_eta, d_phi [rad]) or None, got {cell_size!r}") from None
        if not (math.isfinite(d_eta) and d_eta > 0 and math.isfinite(d_phi) and 0 < d_phi <= 2 * math.pi):
            raise ValueError(f"cell_size must be (d_eta > 0, d_phi in (0, 2 pi] [rad]), got {cell_size!r}")
        n_phi = max(1, round(2.0 * math.pi / d_phi))
        d_phi = 2.0 * math.pi / n_phi
        i_eta = np.floor(eta / d_eta).astype(np.int64)
        i_phi = np.minimum(np.floor(phi / d_phi).astype(np.int64), n_phi - 1)
        cells, inverse = np.unique(np.stack([jet, i_eta, i_phi], axis=1), axis=0, return_inverse=True)
        inverse = inverse.ravel()
        jet = cells[:, 0]
        e = np.bincount(inverse, weights=e, minlength=cells.shape[0])
        eta = (cells[:, 1] + 0.5) * d_eta
        phi = (cells[:, 2] + 0.5) * d_phi
    if response is not None and e.size:
        cond = np.stack([e, eta], axis=1)
        measured = np.asarray(response.sample(key, cond), dtype=np.float64)
        if measured.shape != e.shape or not np.all(np.isfinite(measured)):
            raise ValueError(
                f"response.sample must return finite energies of shape (T={e.size},) [GeV], got {measured.shape}"
            )
        e = measured
    keep = e > e_min
    e, eta, phi, jet = e[keep], eta[keep], phi[keep], jet[keep]
    pt = e / np.cosh(eta)
    towers = np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), e], axis=1)
    return _from_flat(towers, jet, jets.n_jets)


def generate_pythia_jets(
    n_jets: int,
    seed: int = 1,
    sqrt_s_gev: float = 13000.0,
    pthat_min_gev: float = 250.0,
    jet_r: float = 0.4,
    pt_min_gev: float = 300.0,
    eta_max: float = 2.0,
    jets_per_event: int = 2,
) -> JetConstituents:
    """``n_jets`` particle-level QCD jets from Pythia 8 with their constituents (pythia8mc + fastjet + awkward).

    Events: ``HardQCD:all`` at ``sqrt_s_gev`` with ``PhaseSpace:pTHatMin`` = ``pthat_min_gev`` (settings:
    :func:`surrinf.kinfit.pythia.pythia_settings`, MPI and hadronisation on, no pile-up). Jets: anti-kt with radius
    ``jet_r`` (E-scheme) on all visible final-state particles (everything but neutrinos), kept when
    pT > ``pt_min_gev`` [GeV] and |eta| < ``eta_max``; at most ``jets_per_event`` per event, the highest-pT first.
    Jets are stored in generation order until ``n_jets``; same seed and arguments -> the same jets. Constituents are
    (px, py, pz, E) [GeV] (massive hadrons: the Lund plane uses their rapidity).
    """
    n_jets = check_positive_int(n_jets, "n_jets")
    jets_per_event = check_positive_int(jets_per_event, "jets_per_event")
    settings = pythia_settings("qcd", seed, sqrt_s_gev, pthat_min_gev)
    pythia, jet_def, fastjet, ak = start_pythia(
        settings, jet_r, eta_max, pt_min_gev, caller="surrinf.kinfit.generate_pythia_jets"
    )

    chunks: list[np.ndarray] = []  # constituents (m, 4) of accepted jets
    jet_ids: list[np.ndarray] = []  # their jet index (m,)
    have = generated = 0
    while have < n_jets:
        if have == 0 and generated >= _MAX_EMPTY_EVENTS:
            raise ValueError(
                f"none of {generated} Pythia events has a jet with pT > {pt_min_gev} GeV, |eta| < {eta_max}"
            )
        prt, inputs = next_visible_batch(pythia, ak)
        generated += len(prt)
        consts = fastjet.ClusterSequence(inputs, jet_def).constituents(float(pt_min_gev))  # events -> jets -> particles
        n_per_event = np.asarray(ak.to_numpy(ak.num(consts, axis=1)), np.int64)
        n_per_jet = np.asarray(ak.to_numpy(ak.flatten(ak.num(consts, axis=2))), np.int64)
        if n_per_jet.size == 0:
            continue
        p = np.stack(
            [
                np.asarray(ak.to_numpy(ak.flatten(getattr(consts, c), axis=None)), np.float64)
                for c in "px py pz E".split()
            ],
            axis=1,
        )
        start = np.concatenate([[0], np.cumsum(n_per_jet)[:-1]])
        jp = np.add.reduceat(p, start, axis=0)  # jet four-momenta (J, 4)
        pt = np.hypot(jp[:, 0], jp[:, 1])
        eta = np.arcsinh(jp[:, 2] / pt)
        event = np.repeat(np.arange(n_per_event.size), n_per_event)
        ok = np.flatnonzero((pt > pt_min_gev) & (np.abs(eta) < eta_max))
        ok = ok[np.lexsort((-pt[ok], event[ok]))]  # by event, then decreasing pT
        rank = np.arange(ok.size) - np.searchsorted(event[ok], event[ok], side="left")
        for j in ok[rank < jets_per_event][: n_jets - have]:
            chunks.append(p[start[j] : start[j] + n_per_jet[j]])
            jet_ids.append(np.full(n_per_jet[j], have, np.int64))
            have += 1
    return _from_flat(np.concatenate(chunks), np.concatenate(jet_ids), n_jets)
