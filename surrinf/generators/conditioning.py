"""Condition encoding and FiLM conditioning shared by every surrogate.

A surrogate is conditioned on the incident energy and optionally on the detector parameters theta.
:func:`encode_conditions` turns a conditions array (columns as in :data:`surrinf.response.CONDITION_COLUMNS`)
into a small float32 vector; :class:`FiLM` predicts a scale and shift per feature from it (feature-wise linear
modulation, Perez et al. 2018): h -> h * (1 + gamma(c)) + beta(c).

The energy is encoded in one of two ways:

- continuous (default): one column, the scaled ln E (:data:`LN_E_CENTRE`, :data:`LN_E_HALF_RANGE`);
- one-hot binned (``energy_bin_edges_gev`` given, K + 1 increasing edges [GeV]): K columns, a one-hot vector of
  the energy bin (:func:`one_hot_energy`). Bins are [edges[k], edges[k + 1]); energies below the first edge go
  to the first bin and energies at or above the last edge to the last bin. Outside the edges a one-hot
  conditioned model therefore sees the condition of the nearest edge bin: it cannot tell 1 GeV from 10 GeV
  if the first edge is 10 GeV (it extrapolates as a constant in the condition).
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

#: ln E is mapped to (ln E - LN_E_CENTRE) / LN_E_HALF_RANGE: [-1, 1] for 1 GeV - 1 TeV.
LN_E_CENTRE = 0.5 * np.log(1000.0)
LN_E_HALF_RANGE = 0.5 * np.log(1000.0)


def check_energy_bin_edges(energy_bin_edges_gev: Any) -> tuple[float, ...]:
    """Validated one-hot energy bin edges: a sequence of K + 1 >= 3 finite, strictly increasing energies > 0 [GeV]
    (K >= 2 bins), returned as a tuple of floats; ValueError otherwise."""
    try:
        e = np.asarray(energy_bin_edges_gev, dtype=np.float64)
    except (TypeError, ValueError):
        e = None
    if e is None or e.ndim != 1:
        raise ValueError(
            f"energy_bin_edges_gev must be a 1-d sequence of K + 1 >= 3 increasing energies [GeV], "
            f"got {energy_bin_edges_gev!r}"
        )
    if e.size < 3:
        raise ValueError(f"energy_bin_edges_gev must hold K + 1 >= 3 edges (at least 2 bins), got {e.size} edge(s)")
    if not np.all(np.isfinite(e)) or np.any(e <= 0):
        raise ValueError(f"energy_bin_edges_gev must be finite energies > 0 [GeV], got {e.tolist()}")
    if np.any(np.diff(e) <= 0):
        raise ValueError(f"energy_bin_edges_gev must be strictly increasing [GeV], got {e.tolist()}")
    return tuple(float(x) for x in e)


def one_hot_energy(energies_gev: jax.Array, energy_bin_edges_gev: tuple[float, ...]) -> jax.Array:
    """Energies (N,) [GeV] -> one-hot (N, K) float32 over the K bins [edges[k], edges[k + 1]) of the (checked,
    see :func:`check_energy_bin_edges`) edges [GeV]; energies below the first edge fall in bin 0, energies at or
    above the last edge in bin K - 1."""
    e = jnp.asarray(energies_gev, dtype=jnp.float32).reshape(-1)
    n_bins = len(energy_bin_edges_gev) - 1
    inner = jnp.asarray(energy_bin_edges_gev[1:-1], dtype=jnp.float32)
    idx = jnp.searchsorted(inner, e, side="right")  # 0 .. K - 1, clamped by construction
    return jax.nn.one_hot(idx, n_bins, dtype=jnp.float32)


def encode_conditions(
    conditions: jax.Array,
    n_theta: int = 0,
    theta_mean: jax.Array | None = None,
    theta_std: jax.Array | None = None,
    energy_bin_edges_gev: tuple[float, ...] | None = None,
) -> jax.Array:
    """(N,) or (N, k) conditions [E in GeV, theta...] -> (N, n_e + n_theta) float32 encoding.

    Energy columns (n_e of them): the scaled ln E (n_e = 1, default) or, with ``energy_bin_edges_gev`` (K + 1
    increasing edges [GeV]), the one-hot bin of E (n_e = K, :func:`one_hot_energy`, clamped to the first / last
    bin outside the edges). Then theta standardised by ``theta_mean`` / ``theta_std`` (identity when not
    given). Extra condition columns beyond 1 + n_theta are ignored."""
    c = jnp.asarray(conditions, dtype=jnp.float32)
    if c.ndim == 1:
        c = c[:, None]
    if c.shape[1] < 1 + n_theta:
        raise ValueError(f"conditions need at least {1 + n_theta} columns (E and {n_theta} theta), got {c.shape[1]}")
    if energy_bin_edges_gev is None:
        enc = [((jnp.log(c[:, :1]) - LN_E_CENTRE) / LN_E_HALF_RANGE)]
    else:
        enc = [one_hot_energy(c[:, 0], check_energy_bin_edges(energy_bin_edges_gev))]
    if n_theta:
        t = c[:, 1 : 1 + n_theta]
        if theta_mean is not None:
            t = (t - theta_mean) / theta_std
        enc.append(t)
    return jnp.concatenate(enc, axis=1)


class FiLM(eqx.Module):
    """Feature-wise linear modulation: ``FiLM(key, cond_dim, features)(h, c) = h * (1 + gamma) + beta`` with
    (gamma, beta) = Linear(c); initialised to the identity (zero weights)."""

    linear: eqx.nn.Linear

    def __init__(self, key: jax.Array, cond_dim: int, features: int):
        lin = eqx.nn.Linear(cond_dim, 2 * features, key=key)
        self.linear = eqx.tree_at(
            lambda m: (m.weight, m.bias), lin, (jnp.zeros_like(lin.weight), jnp.zeros_like(lin.bias))
        )

    def __call__(self, h: jax.Array, c: jax.Array) -> jax.Array:
        gamma, beta = jnp.split(self.linear(c), 2)
        return h * (1.0 + gamma) + beta
