"""FlowSurrogate: a conditional flow wrapped as a response model on voxel showers (GeV).

showers (N, V) --ShowerBijection--> z (N, V) --Standardize--> z' --flow--> N(0, I), conditioned on
:func:`~surrinf.generators.conditioning.encode_conditions` of (E, theta). ``sample(key, conditions)``
returns non-negative voxel energies [GeV] of the training geometry; ``log_prob(showers, conditions)`` is
the exact log density in voxel space (flow density plus the log-Jacobians of the standardisation and of
the bijection), for showers with non-negative voxels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..data.bijection import ShowerBijection
from ..data.preprocessing import Standardize
from .conditioning import encode_conditions
from .flow import AutoregressiveFlow, CouplingFlow, build_flow, flow_loss
from .serialization import register_model
from .trainer import TrainConfig, TrainResult, train


@register_model("flow_surrogate")
class FlowSurrogate(eqx.Module):
    """A trained conditional flow on preprocessed showers, implementing ``sample`` and ``log_prob``."""

    flow: CouplingFlow | AutoregressiveFlow
    standardize: Standardize
    theta_mean: jax.Array  # (n_theta,)
    theta_std: jax.Array  # (n_theta,)
    bijection: ShowerBijection

    @property
    def n_theta(self) -> int:
        return int(self.theta_mean.shape[0])

    def _cond(self, conditions: Any) -> jax.Array:
        c = jnp.asarray(conditions, dtype=jnp.float32)
        c = c[:, None] if c.ndim == 1 else c
        if c.ndim != 2 or c.shape[1] < 1 + self.n_theta:
            raise ValueError(
                f"conditions must be (N, k) with k >= {1 + self.n_theta} columns (E [GeV] and {self.n_theta} theta)"
            )
        return encode_conditions(c, self.n_theta, self.theta_mean, self.theta_std)

    def sample(self, key: jax.Array, conditions: Any) -> jax.Array:
        """Voxel energies (N, V) [GeV, >= 0] for conditions (N,) or (N, k) (E [GeV], theta...)."""
        c = jnp.asarray(conditions, dtype=jnp.float32)
        energies = c if c.ndim == 1 else c[:, 0]
        z = self.standardize.inverse(self.flow.sample(key, self._cond(conditions)))
        return self.bijection.inverse(z, energies)

    def log_prob(self, showers: Any, conditions: Any) -> jax.Array:
        """Exact log density (N,) of voxel showers [GeV, >= 0] given the conditions (units: ln GeV^-V)."""
        c = jnp.asarray(conditions, dtype=jnp.float32)
        energies = c if c.ndim == 1 else c[:, 0]
        z, log_jac = self.bijection.forward(showers, energies)
        zs = self.standardize.forward(z)
        return self.flow.log_prob(zs, self._cond(conditions)) + self.standardize.log_abs_det_jacobian() + log_jac

    def config(self) -> dict:
        return {"flow": self.flow.config(), "bijection": self.bijection.to_dict(), "n_theta": self.n_theta}

    @classmethod
    def from_config(cls, config: dict, key: jax.Array) -> FlowSurrogate:
        """Skeleton for :func:`surrinf.generators.load` (every array is overwritten by the saved leaves)."""
        flow = build_flow(config["flow"], key)
        n, k = int(config["flow"]["dim"]), int(config["n_theta"])
        return cls(
            flow,
            Standardize(np.zeros(n), np.ones(n)),
            jnp.zeros(k),
            jnp.ones(k),
            ShowerBijection.from_dict(config["bijection"]),
        )

    @classmethod
    def fit(
        cls,
        key: jax.Array,
        showers_gev: np.ndarray,
        energies_gev: np.ndarray,
        bijection: ShowerBijection,
        *,
        theta: np.ndarray | None = None,
        flow_config: dict | None = None,
        train_config: TrainConfig | None = None,
        out_dir: str | Path | None = None,
        progress: bool = False,
    ) -> tuple[FlowSurrogate, TrainResult]:
        """Preprocess showers (N, V) [GeV, >= 0] with incident energies (N,) [GeV] (and theta (N, k)),
        train a coupling flow (``flow_config`` overrides its hyperparameters) and wrap it."""
        k_init, k_train = jax.random.split(key)
        energies = np.asarray(energies_gev, dtype=np.float32).reshape(-1)
        z, _ = bijection.forward(showers_gev, energies)
        std = Standardize.fit(np.asarray(z))
        n_theta = 0 if theta is None else int(np.asarray(theta).reshape(energies.size, -1).shape[1])
        if theta is None:
            t_mean, t_std, cond_in = jnp.zeros(0), jnp.ones(0), energies[:, None]
        else:
            t = np.asarray(theta, dtype=np.float64).reshape(energies.size, -1)
            t_mean, t_std = jnp.asarray(t.mean(0)), jnp.asarray(np.where(t.std(0) > 0, t.std(0), 1.0))
            cond_in = np.concatenate([energies[:, None], t], axis=1)
        cond = encode_conditions(cond_in, n_theta, t_mean, t_std)
        cfg = {"type": "coupling", "dim": bijection.n_voxels, "cond_dim": 1 + n_theta, **(flow_config or {})}
        flow = build_flow(cfg, k_init)
        data = {"x": np.asarray(std.forward(z)), "cond": np.asarray(cond)}
        result = train(
            flow, flow_loss, data, k_train, train_config or TrainConfig(), out_dir=out_dir, progress=progress
        )
        return cls(result.model, std, t_mean, t_std, bijection), result
