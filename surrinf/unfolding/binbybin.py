"""Bin-by-bin correction factors (needs as many reco as truth bins).

``c_i = truth_counts_i / (MC reco)_i`` from the simulation behind the response, where the MC reco of bin i is the
signal (``migrations`` row sum) plus the fakes, and the unfolded spectrum is ``c * d``. With explicit ``fakes`` the
fakes are subtracted from the data first and the MC reco is the signal only: ``t = (d - fakes) * truth / signal``;
with ``fakes=None`` both forms coincide (``(1 - ff) d truth / signal = d truth / (signal + fakes)``).

The method is exact when the response is diagonal (no migrations: ``c_i = 1 / efficiency_i``), and also, whatever the
migrations, when the data's truth spectrum has the shape of the simulated one; otherwise it is biased towards the
simulation: with migrations the factors depend on the simulated spectrum (an Asimov test with a different truth shape
shows the bias). Covariance ``diag(c) V diag(c)`` (``diag(c^2 var(d))`` for Poisson data, from the observed counts);
the finite-simulation uncertainty of the factors is not propagated (``response_covariance`` is zero).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from surrinf.unfolding.inversion import _as_data, _as_data_cov, _check_response, _fake_terms, _signal
from surrinf.unfolding.response import ResponseMatrix
from surrinf.unfolding.result import UnfoldingResult, float64

__all__ = ["bin_by_bin", "correction_factors"]


def correction_factors(response: ResponseMatrix) -> np.ndarray:
    """(n,) truth_counts / (signal + fakes) per bin of a square response [truth events per reco event]."""
    r = _check_response(response)
    if r.n_reco != r.n_truth:
        raise ValueError(
            f"response must be square for bin-by-bin corrections (n_reco == n_truth), got n_reco={r.n_reco}, "
            f"n_truth={r.n_truth}"
        )
    reco = r.migrations.sum(axis=1) + r.fakes
    if np.any(reco <= 0):
        raise ValueError(f"response: reco bins {np.flatnonzero(reco <= 0).tolist()} have no simulated events")
    return r.truth_counts / reco


@jax.jit
def _corrected(
    c: jax.Array, d: jax.Array, scale: jax.Array, offset: jax.Array, data_cov: jax.Array | None
) -> tuple[jax.Array, jax.Array]:
    """Pure: (c * s, diag(c) V_s diag(c)) for the fake-subtracted signal s of the data d (Poisson V, no floor)."""
    s, v = _signal(d, scale, offset, data_cov, False)
    return c * s, c[:, None] * v * c[None, :]


@float64
def bin_by_bin(data: Any, response: ResponseMatrix, *, fakes: Any = None, data_cov: Any = None) -> UnfoldingResult:
    """Bin-by-bin unfolding of ``data`` (n,) [events] (method "bin_by_bin"; see the module docstring). ``fakes`` (n,)
    expected fakes [events] (None: ``data * response.fake_fraction``, i.e. the MC factors including fakes);
    ``data_cov`` (n,) or (n, n) [events^2] (None: Poisson ``diag(data)``). vmap-able over ``data``."""
    correction_factors(response)  # validates: square, no empty reco bin
    r = response
    d = _as_data(data, r.n_reco)
    scale, offset = _fake_terms(r, fakes)
    cov_in = _as_data_cov(data_cov, r.n_reco)
    signal = r.migrations.sum(axis=1)
    if np.any(signal <= 0):
        raise ValueError(f"response: reco bins {np.flatnonzero(signal <= 0).tolist()} have no simulated signal")
    c = r.truth_counts / signal  # applied to the fake-subtracted data s
    t, cov = _corrected(jnp.asarray(c), d, scale, offset, cov_in)
    return UnfoldingResult(t, cov, jnp.zeros_like(cov), method="bin_by_bin")
