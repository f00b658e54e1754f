"""Surrogate-assisted Bayesian detector calibration with tempered likelihoods (NumPyro + BlackJAX).

Calibration data are shower summaries x (:mod:`~surrinf.inference.summary`) at known beam energies; a theta-
conditional flow p_s(x | E, theta) (:class:`SummaryFlow`) trained on reference summaries is the likelihood, raised
to a power tau <= 1 (:mod:`~surrinf.inference.temperature`: fixed, divergence, curvature and coverage-calibrated
rules). Samplers: NumPyro NUTS, BlackJAX NUTS with window adaptation, BlackJAX adaptive tempered SMC stopped at tau,
and vectorised Laplace-proposal importance sampling for coverage studies. Diagnostics go through ArviZ.

Precision: the summary flow runs in float32; samplers, rules and coverage enable float64 locally
(``with jax.enable_x64(True)``); importing this module changes nothing globally.
"""

from .coverage import CoverageStudy, coverage_tau, laplace_importance_posterior, run_coverage
from .diagnostics import (
    Diagnosis,
    diagnose,
    load_inference_data,
    plot_corner,
    plot_rank,
    plot_trace,
    save_inference_data,
    systematic_resample,
    to_inference_data,
)
from .likelihood import (
    DEFAULT_SUMMARY_FLOW,
    ScaleBiasedDensity,
    SummaryFlow,
    fit_summary_flow,
    load_summary_flow,
    save_summary_flow,
)
from .prior import CALIBRATION_PARAMETERS, BoxPrior, default_prior
from .problem import CalibrationProblem, SummaryDensity, check_tau, log_posterior_unconstrained
from .result import PosteriorResult, weighted_quantile
from .samplers import numpyro_model, run_blackjax_nuts, run_numpyro_nuts, run_tempered_smc
from .summary import SUMMARY_NAMES, ReferenceSummaries, log_uniform_energies, shower_summary
from .temperature import REFERENCES, Mismatch, Temperature, curvature_tau, divergence_tau, fixed_tau, measure_mismatch
from .toy import GaussianToy

__all__ = [
    "CALIBRATION_PARAMETERS",
    "DEFAULT_SUMMARY_FLOW",
    "REFERENCES",
    "SUMMARY_NAMES",
    "BoxPrior",
    "CalibrationProblem",
    "CoverageStudy",
    "Diagnosis",
    "GaussianToy",
    "Mismatch",
    "PosteriorResult",
    "ReferenceSummaries",
    "ScaleBiasedDensity",
    "SummaryDensity",
    "SummaryFlow",
    "Temperature",
    "check_tau",
    "coverage_tau",
    "curvature_tau",
    "default_prior",
    "diagnose",
    "divergence_tau",
    "fit_summary_flow",
    "fixed_tau",
    "laplace_importance_posterior",
    "load_inference_data",
    "load_summary_flow",
    "log_posterior_unconstrained",
    "log_uniform_energies",
    "measure_mismatch",
    "numpyro_model",
    "plot_corner",
    "plot_rank",
    "plot_trace",
    "run_blackjax_nuts",
    "run_coverage",
    "run_numpyro_nuts",
    "run_tempered_smc",
    "save_inference_data",
    "save_summary_flow",
    "shower_summary",
    "systematic_resample",
    "to_inference_data",
    "weighted_quantile",
]
