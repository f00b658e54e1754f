"""Dijet kinematic fit and propagation of surrogate jet-energy biases (work in progress: issue 7)."""

from .constraints import BreitWignerMass, FixedMass, GaussianMass, MassConstraint
from .fit import SOLVERS, KinFitJacobian, KinFitResult, dijet_mass, fit_event, kinfit, kinfit_jacobian, opening_cosine

__all__ = [
    "SOLVERS",
    "BreitWignerMass",
    "FixedMass",
    "GaussianMass",
    "KinFitJacobian",
    "KinFitResult",
    "MassConstraint",
    "dijet_mass",
    "fit_event",
    "kinfit",
    "kinfit_jacobian",
    "opening_cosine",
]
