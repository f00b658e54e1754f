"""Dijet kinematic fit and the propagation of surrogate jet-energy biases into the dijet mass.

- :mod:`~surrinf.kinfit.events`: truth-level dijet events (:class:`DijetEvents`, HDF5 cache), the embedded parametric
  generator (Z -> q qbar resonance + falling QCD spectrum) and, under the ``pythia`` extra, Pythia 8 + fastjet
  (:func:`surrinf.kinfit.pythia.generate_pythia`, imported on use).
- :mod:`~surrinf.kinfit.response`: jet energy response models (conditions (E_true [GeV], eta) -> E_reco [GeV]): the
  reference :class:`JetResponse` derived from the calorimeter simulator and the conditional-flow surrogate
  :class:`JetResponseFlow`.
- :mod:`~surrinf.kinfit.constraints` and :mod:`~surrinf.kinfit.fit`: the vectorised kinematic fit (Gaussian or
  Breit-Wigner mass prior, or a hard mass constraint), with implicit derivatives.
- :mod:`~surrinf.kinfit.constituents`: jets with their constituents (Pythia 8 + fastjet under the ``pythia`` extra)
  and a per-constituent detector response (towers in (eta, phi) cells, any response model for their energies).
- :mod:`~surrinf.kinfit.propagation`: measured jet-energy bias, Monte Carlo vs linearised propagation into m_jj.

Energies and masses in GeV. Precision: the fit and the propagation run in float64 (entered locally); the flow
surrogate in float32.
"""

from .constituents import JetConstituents, apply_constituent_response, generate_pythia_jets
from .constraints import BreitWignerMass, FixedMass, GaussianMass, MassConstraint
from .events import (
    PROCESS_QCD,
    PROCESS_RESONANCE,
    DijetEvents,
    DijetFileError,
    ParametricDijetConfig,
    generate_parametric,
    read_metadata,
)
from .fit import SOLVERS, KinFitJacobian, KinFitResult, dijet_mass, fit_event, kinfit, kinfit_jacobian, opening_cosine
from .propagation import (
    JetEnergyBias,
    ResponseComparison,
    ShiftPropagation,
    compare_responses,
    gaussian_core,
    measure_jets,
    measure_response_bias,
    propagate_shift,
)
from .response import (
    DEFAULT_JET_FLOW_CONFIG,
    DEFAULT_JET_TRAIN_CONFIG,
    JetResponse,
    JetResponseFitReport,
    JetResponseFlow,
    default_jet_response,
    fit_jet_response_flow,
)

__all__ = [
    "DEFAULT_JET_FLOW_CONFIG",
    "DEFAULT_JET_TRAIN_CONFIG",
    "PROCESS_QCD",
    "PROCESS_RESONANCE",
    "SOLVERS",
    "BreitWignerMass",
    "DijetEvents",
    "DijetFileError",
    "FixedMass",
    "GaussianMass",
    "JetConstituents",
    "JetEnergyBias",
    "JetResponse",
    "JetResponseFitReport",
    "JetResponseFlow",
    "KinFitJacobian",
    "KinFitResult",
    "MassConstraint",
    "ParametricDijetConfig",
    "ResponseComparison",
    "ShiftPropagation",
    "apply_constituent_response",
    "compare_responses",
    "default_jet_response",
    "dijet_mass",
    "fit_event",
    "fit_jet_response_flow",
    "gaussian_core",
    "generate_parametric",
    "generate_pythia_jets",
    "kinfit",
    "kinfit_jacobian",
    "measure_jets",
    "measure_response_bias",
    "opening_cosine",
    "propagate_shift",
    "read_metadata",
]
