"""Discovery sensitivity with pyhf: workspaces from histograms made with any response model, discovery significance
(asymptotic and vectorised toys), nuisance-parameter impacts, pulls and yields tables (issue 8; no study yet).

- :mod:`~surrinf.sensitivity.workspace`: :func:`build_workspace` (signal strength mu, luminosity, background
  normalisation, jet-energy-scale histosys, MC statistical uncertainty, surrogate-fidelity histosys), JSON round trip.
- :mod:`~surrinf.sensitivity.significance`: :func:`discovery_significance` (q0; Asimov expected with bands, observed;
  toys vectorised with JAX), :func:`asimov_z0` (closed forms without and with a background uncertainty).
- :mod:`~surrinf.sensitivity.impacts`: maximum-likelihood :func:`fit`, :func:`impacts` and ranking (pre- and post-fit),
  pulls and constraints, :func:`yields`; tables and plots (cabinetry conventions, cross-checked in the tests).
- :mod:`~surrinf.sensitivity.backend`: :func:`pyhf_backend`, the contained opt-in to pyhf's JAX backend.

Precision: pyhf's numpy backend (float64) by default. pyhf's JAX backend switches JAX to float64 process-wide when
loaded; :func:`pyhf_backend` contains that (the previous pyhf backend and ``jax_enable_x64`` are restored on exit), and
importing this package changes neither.
"""

from .backend import BACKENDS, pyhf_backend
from .impacts import (
    FitResult,
    ImpactResult,
    PullResult,
    Yields,
    YieldsResult,
    fit,
    impacts,
    plot_pulls,
    plot_ranking,
    yields,
)
from .significance import METHODS, DiscoveryResult, asimov_z0, discovery_significance, toy_q0
from .workspace import (
    FIDELITY_SYMMETRISATIONS,
    POI_BOUNDS,
    Sample,
    build_workspace,
    symmetrise_fidelity,
    workspace_from_json,
    workspace_to_json,
)

__all__ = [
    "BACKENDS",
    "FIDELITY_SYMMETRISATIONS",
    "METHODS",
    "POI_BOUNDS",
    "DiscoveryResult",
    "FitResult",
    "ImpactResult",
    "PullResult",
    "Sample",
    "Yields",
    "YieldsResult",
    "asimov_z0",
    "build_workspace",
    "discovery_significance",
    "fit",
    "impacts",
    "plot_pulls",
    "plot_ranking",
    "pyhf_backend",
    "symmetrise_fidelity",
    "toy_q0",
    "workspace_from_json",
    "workspace_to_json",
    "yields",
]
