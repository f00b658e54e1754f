"""Condition encoding and FiLM conditioning shared by every surrogate.

A surrogate is conditioned on the incident energy (log-scaled) and optionally on the detector parameters
theta. :func:`encode_conditions` turns a conditions array (columns as in
:data:`surrinf.response.CONDITION_COLUMNS`) into a small float32 vector; :class:`FiLM` predicts a scale
and shift per feature from it (feature-wise linear modulation, Perez et al. 2018):
h -> h * (1 + gamma(c)) + beta(c).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

#: ln E is mapped to (ln E - LN_E_CENTRE) / LN_E_HALF_RANGE: [-1, 1] for 1 GeV - 1 TeV.
LN_E_CENTRE = 0.5 * np.log(1000.0)
LN_E_HALF_RANGE = 0.5 * np.log(1000.0)


def encode_conditions(
    conditions: jax.Array, n_theta: int = 0, theta_mean: jax.Array | None = None, theta_std: jax.Array | None = None
) -> jax.Array:
    """(N,) or (N, k) conditions [E in GeV, theta...] -> (N, 1 + n_theta) float32 encoding.

    Column 0: scaled ln E. Columns 1..n_theta: theta standardised by ``theta_mean`` / ``theta_std``
    (identity when not given). Extra condition columns beyond 1 + n_theta are ignored."""
    c = jnp.asarray(conditions, dtype=jnp.float32)
    if c.ndim == 1:
        c = c[:, None]
    if c.shape[1] < 1 + n_theta:
        raise ValueError(f"conditions need at least {1 + n_theta} columns (E and {n_theta} theta), got {c.shape[1]}")
    enc = [((jnp.log(c[:, :1]) - LN_E_CENTRE) / LN_E_HALF_RANGE)]
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
