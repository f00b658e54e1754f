"""Dijet events from Pythia 8 with anti-kt jets (FastJet): the optional ``pythia`` extra.

``pip install 'surrinf[pythia]'`` installs ``pythia8mc`` (Pythia 8.317 Python bindings) and ``fastjet`` (the
scikit-hep bindings); both are imported lazily inside :func:`generate_pythia`, so importing this module needs neither.
The events are the same :class:`~surrinf.kinfit.events.DijetEvents` as the parametric generator's and are cached
with :meth:`~surrinf.kinfit.events.DijetEvents.to_hdf5` (see ``studies/pythia_dijets.py``).
"""

from __future__ import annotations

import importlib.metadata
import math
from typing import Any, Literal

import numpy as np

from surrinf._checks import check_positive_int
from surrinf.kinfit.events import PROCESS_QCD, PROCESS_RESONANCE, DijetEvents

__all__ = ["PYTHIA_EXTRA_HINT", "generate_pythia", "pythia_settings", "pythia_versions"]

PYTHIA_EXTRA_HINT = "needs the 'pythia' extra: pip install 'surrinf[pythia]'"

#: Z boson mass and width [GeV] (PDG) and the generated Z mass window in widths (as the parametric generator).
_Z_MASS_GEV, _Z_WIDTH_GEV, _Z_WINDOW_WIDTHS = 91.1876, 2.4952, 10.0
#: |PDG id| of neutrinos (invisible, excluded from the jet inputs).
_NEUTRINOS = (12, 14, 16)
#: Events generated per call of Pythia's ``nextBatch`` (the events do not depend on it).
_PYTHIA_BATCH = 100
#: Give up when this many events were generated without one passing the jet cuts.
_MAX_EMPTY_EVENTS = 20_000


def pythia_settings(
    process: Literal["qcd", "resonance"],
    seed: int,
    sqrt_s_gev: float = 13000.0,
    pthat_min_gev: float = 15.0,
    resonance: Literal["Z"] = "Z",
) -> list[str]:
    """The Pythia ``readString`` lines of :func:`generate_pythia` (validated; recorded in file metadata).

    QCD: ``HardQCD:all = on`` with ``PhaseSpace:pTHatMin`` [GeV]. Resonance: Z -> q qbar (d, u, s, c, b) only, pure Z
    (``WeakZ0:gmZmode = 2``, no photon interference) with its mass generated within 91.1876 +- 10 x 2.4952 GeV like
    the parametric generator. Seeded (``Random:seed`` in [1, 900000000]), no event counter, quiet.
    """
    if process not in ("qcd", "resonance"):
        raise ValueError(f"process must be 'qcd' or 'resonance', got {process!r}")
    if resonance != "Z":
        raise ValueError(f"resonance must be 'Z' (the only one implemented), got {resonance!r}")
    seed = check_positive_int(seed, "seed")
    if seed > 900_000_000:
        raise ValueError(f"seed must be an integer in [1, 900000000] (Pythia's Random:seed range), got {seed}")
    for name, value in (("sqrt_s_gev", sqrt_s_gev), ("pthat_min_gev", pthat_min_gev)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0 [GeV], got {value!r}")
    lines = [
        f"Beams:eCM = {float(sqrt_s_gev)!r}",
        "Random:setSeed = on",
        f"Random:seed = {seed}",
        "Next:numberCount = 0",
        "Next:numberShowInfo = 0",
        "Next:numberShowProcess = 0",
        "Next:numberShowEvent = 0",
        "Print:quiet = on",
    ]
    if process == "qcd":
        lines += ["HardQCD:all = on", f"PhaseSpace:pTHatMin = {float(pthat_min_gev)!r}"]
    else:
        lo = _Z_MASS_GEV - _Z_WINDOW_WIDTHS * _Z_WIDTH_GEV
        hi = _Z_MASS_GEV + _Z_WINDOW_WIDTHS * _Z_WIDTH_GEV
        lines += [
            "WeakSingleBoson:ffbar2gmZ = on",
            "WeakZ0:gmZmode = 2",
            "23:onMode = off",
            "23:onIfAny = 1 2 3 4 5",
            f"23:mMin = {lo!r}",
            f"23:mMax = {hi!r}",
        ]
    return lines


def pythia_versions() -> dict[str, str]:
    """Installed versions of pythia8mc and fastjet (empty entries omitted)."""
    out = {}
    for dist in ("pythia8mc", "fastjet", "awkward"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _import_extra(caller: str = "surrinf.kinfit.generate_pythia") -> tuple[Any, Any, Any]:
    try:
        import awkward as ak
        import fastjet
        import pythia8mc
    except ImportError as e:
        raise ImportError(f"{caller} {PYTHIA_EXTRA_HINT} ({e})") from e
    return pythia8mc, fastjet, ak


def start_pythia(
    settings: list[str],
    jet_r: float,
    eta_max: float,
    pt_min_gev: float,
    caller: str = "surrinf.kinfit.generate_pythia",
) -> tuple[Any, Any, Any, Any]:
    """Check the jet arguments, start Pythia with ``settings`` and return (pythia, anti-kt jet definition of radius
    ``jet_r``, the fastjet module, the awkward module). ValueError naming a bad argument, ImportError with the install
    hint (naming ``caller``) without the extra, RuntimeError naming a setting Pythia rejects."""
    for name, value in (("jet_r", jet_r), ("eta_max", eta_max)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if isinstance(pt_min_gev, bool) or not isinstance(pt_min_gev, int | float) or not 0 <= pt_min_gev < math.inf:
        raise ValueError(f"pt_min_gev must be a finite number >= 0 [GeV], got {pt_min_gev!r}")
    pythia8mc, fastjet, ak = _import_extra(caller)
    pythia = pythia8mc.Pythia("", False)  # no banner
    for line in settings:
        if not pythia.readString(line):
            raise RuntimeError(f"Pythia rejected the setting {line!r}")
    if not pythia.init():
        raise RuntimeError("Pythia initialisation failed (see Pythia's log)")
    return pythia, fastjet.JetDefinition(fastjet.antikt_algorithm, float(jet_r)), fastjet, ak


def next_visible_batch(pythia: Any, ak: Any) -> tuple[Any, Any]:
    """The next :data:`_PYTHIA_BATCH` events: their particle record and the visible final-state particles (status > 0,
    no neutrinos) as awkward Momentum4D (px, py, pz, E) [GeV] per event, the input of the jet clustering."""
    prt = pythia.nextBatch(_PYTHIA_BATCH)["prt"]
    aid = abs(prt.id)
    visible = (prt.status > 0) & (aid != _NEUTRINOS[0]) & (aid != _NEUTRINOS[1]) & (aid != _NEUTRINOS[2])
    fs = prt[visible]
    return prt, ak.zip({"px": fs.p.px, "py": fs.p.py, "pz": fs.p.pz, "E": fs.p.e}, with_name="Momentum4D")


def generate_pythia(
    n_events: int,
    process: Literal["qcd", "resonance"] = "qcd",
    seed: int = 1,
    sqrt_s_gev: float = 13000.0,
    pthat_min_gev: float = 15.0,
    jet_r: float = 0.4,
    pt_min_gev: float = 20.0,
    eta_max: float = 2.5,
    resonance: Literal["Z"] = "Z",
) -> DijetEvents:
    """``n_events`` pp events at ``sqrt_s_gev`` from Pythia 8 (settings: :func:`pythia_settings`) with >= 2 jets.

    Jets: anti-kt with radius ``jet_r`` (E-scheme) on all final-state particles except neutrinos (charged and
    neutral hadrons, photons, leptons; pile-up free, no detector). An event is kept when at least two jets have
    pT > ``pt_min_gev`` [GeV] and |eta| < ``eta_max``; the two highest-pT of those are stored (leading first) with
    E, pt, eta, phi and m = sqrt(max(E^2 - p^2, 0)). ``m_parent`` is the generated mass of the Z (the first id-23
    entry of the event record) for ``process="resonance"`` and 0.0 for QCD. Events are generated in Pythia batches
    until ``n_events`` pass; same seed and arguments -> the same events. Raises ImportError with an install hint
    when pythia8mc / fastjet are missing. Default ``pthat_min_gev`` = 15 GeV: below the 20 GeV jet cut so the jet-pT
    turn-on comes from the jets, not from the generator cut (QCD only; ignored for the Z).
    """
    n_events = check_positive_int(n_events, "n_events")
    settings = pythia_settings(process, seed, sqrt_s_gev, pthat_min_gev, resonance)
    pythia, jet_def, fastjet, ak = start_pythia(settings, jet_r, eta_max, pt_min_gev)

    chunks: list[np.ndarray] = []  # (k, 2, 5) jets (E, pt, eta, phi, m) per accepted event
    parents: list[np.ndarray] = []
    have = generated = 0
    while have < n_events:
        if have == 0 and generated >= _MAX_EMPTY_EVENTS:
            raise ValueError(
                f"none of {generated} Pythia events has two jets with pT > {pt_min_gev} GeV and |eta| < {eta_max}"
            )
        prt, inputs = next_visible_batch(pythia, ak)
        generated += len(prt)
        jets = fastjet.ClusterSequence(inputs, jet_def).inclusive_jets(min_pt=float(pt_min_gev))
        lead, keep = _two_leading_jets(ak, jets, pt_min_gev, eta_max)
        if process == "resonance":
            parents.append(ak.to_numpy(ak.fill_none(ak.firsts(prt.m[prt.id == 23]), np.nan))[keep])
        take = min(lead.shape[0], n_events - have)
        chunks.append(lead[:take])
        if parents:
            parents[-1] = parents[-1][:take]
        have += take
    jets_all = np.concatenate(chunks).astype(np.float64)
    n = jets_all.shape[0]
    m_parent = np.concatenate(parents).astype(np.float64) if process == "resonance" else np.zeros(n)
    code = PROCESS_RESONANCE if process == "resonance" else PROCESS_QCD
    return DijetEvents(
        e=jets_all[..., 0],
        pt=jets_all[..., 1],
        eta=jets_all[..., 2],
        phi=jets_all[..., 3],
        m=jets_all[..., 4],
        process=np.full(n, code, np.int8),
        m_parent=m_parent,
    )


def _two_leading_jets(ak: Any, jets: Any, pt_min_gev: float, eta_max: float) -> tuple[np.ndarray, np.ndarray]:
    """From FastJet's jets (events, var, (px, py, pz, E)): the events with >= 2 jets passing pT > pt_min_gev and
    |eta| < eta_max (boolean mask (events,)) and their two highest-pT passing jets as (k, 2, 5) float64 arrays of
    (E, pt, eta, phi, m) [GeV, rad]."""
    counts = ak.to_numpy(ak.num(jets, axis=1))
    event = np.repeat(np.arange(counts.size), counts)
    px, py, pz, e = (np.asarray(ak.to_numpy(ak.flatten(getattr(jets, c))), np.float64) for c in ("px", "py", "pz", "E"))
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(pz / pt)
    phi = np.arctan2(py, px)
    phi = np.where(phi <= -np.pi, np.pi, phi)
    m = np.sqrt(np.maximum(e**2 - (pt**2 + pz**2), 0.0))
    ok = (pt > pt_min_gev) & (np.abs(eta) < eta_max)
    event, kin = event[ok], np.stack([e, pt, eta, phi, m], axis=-1)[ok]
    order = np.lexsort((-kin[:, 1], event))  # by event, then decreasing pT
    event, kin = event[order], kin[order]
    first = np.searchsorted(event, event, side="left")
    rank = np.arange(event.size) - first
    n_pass = np.bincount(event, minlength=counts.size)
    keep = n_pass >= 2
    sel = (rank < 2) & keep[event]
    return kin[sel].reshape(-1, 2, 5), keep
