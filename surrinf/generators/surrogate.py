"""FlowSurrogate: a conditional flow wrapped as a response model on voxel showers (GeV).

showers (N, V) --ShowerBijection--> z (N, V) --Standardize--> z' --flow--> N(0, I), conditioned on the
encoded (E, theta). ``sample(key, conditions)`` returns non-negative voxel energies [GeV] of the training
geometry; ``log_prob(showers, conditions)`` is the exact log density in voxel space (flow density plus the
log-Jacobians of the standardisation and of the bijection), for showers with non-negative voxels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..data.bijection import ShowerBijection
from .base import ConditionEncoder, ShowerPreprocessor, ShowerSurrogate, prepare_training_data
from .flow import AutoregressiveFlow, CouplingFlow, TwoStageFlow, build_flow, flow_loss
from .serialization import register_model
from .trainer import TrainConfig, TrainResult, train

#: Default architecture (overridden by ``flow_config``): a two-stage flow, layer energies ln(E_l/E) first
#: (the first ``n_layers`` preprocessed coordinates), then the within-layer shape given them.
DEFAULT_FLOW_CONFIG: dict[str, Any] = {
    "type": "two_stage",
    "first": {"n_layers": 6, "hidden": [128, 128], "n_bins": 8},
    "second": {"n_layers": 6, "hidden": [256, 256], "n_bins": 8},
}


@register_model("flow_surrogate")
class FlowSurrogate(ShowerSurrogate):
    """A trained conditional flow on preprocessed showers, implementing ``sample`` and exact ``log_prob``."""

    flow: CouplingFlow | AutoregressiveFlow | TwoStageFlow
    preprocessor: ShowerPreprocessor
    encoder: ConditionEncoder

    def latent_dim(self) -> int:
        return self.preprocessor.dim

    def decode(self, noise: jax.Array, cond: jax.Array) -> jax.Array:
        return jax.vmap(self.flow.inverse)(noise, cond)[0]

    def log_prob(self, showers: Any, conditions: Any) -> jax.Array:
        """Exact log density (N,) of voxel showers [GeV, >= 0] given the conditions (units: ln GeV^-V)."""
        c = self.encoder.check(conditions)
        s = jnp.asarray(showers, dtype=jnp.float32)
        if s.ndim != 2 or s.shape != (c.shape[0], self.preprocessor.dim):
            raise ValueError(f"showers must have shape (N={c.shape[0]}, V={self.preprocessor.dim}), got {s.shape}")
        if not isinstance(s, jax.core.Tracer) and bool(jnp.any(s < 0)):
            raise ValueError("showers must be non-negative voxel energies [GeV]")
        return _log_prob_jit(self, s, c)

    def config(self) -> dict:
        return {
            "flow": self.flow.config(),
            "bijection": self.preprocessor.bijection.to_dict(),
            "n_theta": self.n_theta,
        }

    @classmethod
    def from_config(cls, config: dict, key: jax.Array) -> FlowSurrogate:
        """Skeleton for :func:`surrinf.generators.load` (every array is overwritten by the saved leaves)."""
        k = int(config["n_theta"])
        return cls(
            build_flow(config["flow"], key),
            ShowerPreprocessor.skeleton(config["bijection"]),
            ConditionEncoder(np.zeros(k), np.ones(k)),
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
        resume: bool = False,
    ) -> tuple[FlowSurrogate, TrainResult]:
        """Preprocess showers (N, V) [GeV, >= 0] with incident energies (N,) [GeV] (and theta (N, k)),
        train a flow (``flow_config`` overrides :data:`DEFAULT_FLOW_CONFIG`; top-level ``n_layers``, ``hidden``,
        ``n_bins``, ``bound`` apply to both blocks of the two-stage flow; ``{"type": "coupling", ...}`` gives a
        single coupling flow) and wrap it. ``resume=True`` continues an interrupted run from its checkpoint in
        ``out_dir`` (see :func:`~surrinf.generators.train`)."""
        k_init, k_train, k_data = jax.random.split(key, 3)
        pre, enc, data = prepare_training_data(bijection, showers_gev, energies_gev, theta, key=k_data)
        user = dict(flow_config or {})
        base = DEFAULT_FLOW_CONFIG if user.get("type", DEFAULT_FLOW_CONFIG["type"]) == "two_stage" else {}
        cfg = {**base, "dim": pre.dim, "cond_dim": enc.dim, **user}
        if cfg.get("type") == "two_stage":
            # top-level n_layers / hidden / n_bins / bound apply to both blocks
            shared = {k: cfg.pop(k) for k in ("n_layers", "hidden", "n_bins", "bound") if k in cfg}
            cfg["first"] = {**cfg.get("first", {}), **shared}
            cfg["second"] = {**cfg.get("second", {}), **shared}
            cfg.setdefault("n_first", bijection.n_layers)
        flow = build_flow(cfg, k_init)
        data = {"x": data["x"], "cond": data["cond"]}
        result = train(
            flow,
            flow_loss,
            data,
            k_train,
            train_config or TrainConfig(),
            out_dir=out_dir,
            progress=progress,
            resume=resume,
        )
        return cls(result.model, pre, enc), result


@eqx.filter_jit
def _log_prob_jit(model: FlowSurrogate, showers: jax.Array, conditions: jax.Array) -> jax.Array:
    zs, log_jac = model.preprocessor.forward(showers, conditions[:, 0])
    return model.flow.log_prob(zs, model.encoder(conditions)) + log_jac
