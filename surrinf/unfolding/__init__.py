"""Response matrices and unfolding, and the bias a surrogate-built response causes.

A :class:`ResponseMatrix` is estimated from paired (truth, reco) events of any response model (the reference
simulator or a surrogate). Methods, all ``method(data, response, ...) -> UnfoldingResult`` and jit/vmap-able over
pseudo-data: :func:`invert` (generalised least squares), :func:`bin_by_bin`, :func:`ibu` (D'Agostini iterative
Bayesian unfolding, exact or pyunfold-compatible error propagation including the response-matrix uncertainty),
:func:`tikhonov` and :func:`svd_unfold` (regularisation strength by :func:`lcurve` or
:func:`min_global_correlation`), and fully Bayesian unfolding (:func:`fbu` with NumPyro NUTS, :func:`fbu_toys`
vectorised over pseudo-data). :func:`bias_study` and :func:`scan` unfold reference pseudo-data with a surrogate's
response and report bias, variance and coverage; :func:`roounfold_example` is RooUnfold's standard example.

Precision: every method runs in float64 inside ``jax.enable_x64(True)`` (entered locally); importing this package
changes nothing globally. To vmap/jit a method yourself, do it inside ``with jax.enable_x64(True):``.
"""

from .bayesian import BayesianUnfolding, fbu, fbu_model, fbu_toys
from .bias import BiasScan, BiasStudy, UnfoldedToys, bias_study, scan
from .binbybin import bin_by_bin, correction_factors
from .examples import RooUnfoldExample, double_breit_wigner, roounfold_example, smear
from .ibu import ibu, ibu_iterate, ibu_path, resolve_prior
from .inversion import gls_unfold, invert
from .response import ResponseMatrix
from .result import CPU_COMPILER_OPTIONS, UnfoldingResult, float64, key_rng, poisson_toys, pulls
from .tikhonov import LCurve, curvature_matrix, lcurve, min_global_correlation, plot_lcurve, svd_unfold, tikhonov

__all__ = [
    "CPU_COMPILER_OPTIONS",
    "BayesianUnfolding",
    "BiasScan",
    "BiasStudy",
    "LCurve",
    "ResponseMatrix",
    "RooUnfoldExample",
    "UnfoldedToys",
    "UnfoldingResult",
    "bias_study",
    "bin_by_bin",
    "correction_factors",
    "curvature_matrix",
    "double_breit_wigner",
    "fbu",
    "fbu_model",
    "fbu_toys",
    "float64",
    "gls_unfold",
    "ibu",
    "ibu_iterate",
    "ibu_path",
    "invert",
    "key_rng",
    "lcurve",
    "min_global_correlation",
    "plot_lcurve",
    "poisson_toys",
    "pulls",
    "resolve_prior",
    "roounfold_example",
    "scan",
    "smear",
    "svd_unfold",
    "tikhonov",
]
