"""Surrogate summary densities p_s(x | E, theta): a conditional normalizing flow trained on reference summaries.

:class:`SummaryFlow` standardises x with fixed shift and scale (the training-set mean and sd, log-Jacobian
included), encodes (ln E, theta) with :func:`surrinf.generators.encode_conditions` (theta mapped to [-1, 1] over the
prior box) and evaluates a :class:`surrinf.generators.CouplingFlow` (exact density). :func:`fit_summary_flow`
trains it with the generators' trainer. :class:`ScaleBiasedDensity` wraps any density to model a surrogate whose
response scale is off by a known fraction (a deliberately imperfect surrogate for coverage studies).

The flow runs in float32 (a generator); :class:`~surrinf.inference.problem.CalibrationProblem` sums the per-event
log densities in float64.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from surrinf.generators import CouplingFlow, TrainConfig, TrainResult, build_flow, encode_conditions, train
from surrinf.generators.serialization import load, register_model, save

from .prior import BoxPrior

__all__ = [
    "DEFAULT_SUMMARY_FLOW",
    "ScaleBiasedDensity",
    "SummaryFlow",
    "fit_summary_flow",
    "load_summary_flow",
    "save_summary_flow",
]

#: Default flow hyperparameters of :class:`SummaryFlow` (a small coupling flow: the summary has 3 dimensions).
DEFAULT_SUMMARY_FLOW = {"n_layers": 6, "hidden": [64, 64], "n_bins": 8, "bound": 5.0}


class SummaryFlow(eqx.Module):
    """p_s(x | E, theta) for x (N, D): flow on (x - shift) / scale, conditioned on (ln E, theta in [-1, 1])."""

    flow: CouplingFlow
    shift: jax.Array  # (D,) float32
    scale: jax.Array  # (D,) float32
    prior: BoxPrior

    def __init__(self, key: jax.Array, dim: int, prior: BoxPrior, flow: dict | None = None):
        cfg = {**DEFAULT_SUMMARY_FLOW, **(flow or {})}
        self.flow = build_flow({"type": "coupling", "dim": int(dim), "cond_dim": 1 + prior.dim, **cfg}, key)
        self.shift = jnp.zeros((dim,), jnp.float32)
        self.scale = jnp.ones((dim,), jnp.float32)
        self.prior = prior

    @property
    def dim(self) -> int:
        return self.flow.dim

    def config(self) -> dict[str, Any]:
        f = self.flow.config()
        return {
            "dim": f["dim"],
            "prior": {
                "names": list(self.prior.names),
                "low": self.prior.low.tolist(),
                "high": self.prior.high.tolist(),
            },
            "flow": {k: f[k] for k in DEFAULT_SUMMARY_FLOW},
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], key: jax.Array) -> SummaryFlow:
        p = config["prior"]
        return cls(key, config["dim"], BoxPrior(p["names"], p["low"], p["high"]), config.get("flow"))

    def encode(self, energies_gev: jax.Array, theta: jax.Array) -> jax.Array:
        """(N, 1 + P) float32 flow conditions for energies (N,) [GeV] and theta (P,) or (N, P)."""
        e = jnp.asarray(energies_gev, dtype=jnp.float32).reshape(-1)
        t = jnp.broadcast_to(jnp.asarray(theta, dtype=jnp.float32), (e.shape[0], self.prior.dim))
        centre = jnp.asarray(0.5 * (self.prior.low + self.prior.high), jnp.float32)
        half = jnp.asarray(0.5 * self.prior.width, jnp.float32)
        return encode_conditions(jnp.concatenate([e[:, None], t], axis=1), self.prior.dim, centre, half)

    def log_prob(self, x: jax.Array, energies_gev: jax.Array, theta: jax.Array) -> jax.Array:
        """Exact log density (N,) of x (N, D) at energies (N,) [GeV] and theta (P,) or (N, P)."""
        x = jnp.asarray(x, dtype=jnp.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (N, {self.dim}) (summaries), got {x.shape}")
        z = (x - self.shift) / self.scale
        return self.flow.log_prob(z, self.encode(energies_gev, theta)) - jnp.sum(jnp.log(self.scale))

    def sample(self, key: jax.Array, energies_gev: jax.Array, theta: jax.Array) -> jax.Array:
        """x (N, D) drawn at energies (N,) [GeV] and theta (P,) or (N, P)."""
        c = self.encode(energies_gev, theta)
        return self.flow.sample(key, c) * self.scale + self.shift

    def simulate(self, key: jax.Array, energies_gev: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """Numpy version of :meth:`sample` (the reference-simulator interface)."""
        return np.asarray(self.sample(key, jnp.asarray(energies_gev), jnp.asarray(theta)))


register_model("summary_flow", SummaryFlow)


def _flow_nll(model: SummaryFlow, batch: dict[str, jax.Array], key: jax.Array | None = None) -> jax.Array:
    del key
    return -jnp.mean(model.log_prob(batch["x"], batch["energies_gev"], batch["theta"]))


def fit_summary_flow(
    key: jax.Array,
    data: dict[str, np.ndarray],
    prior: BoxPrior,
    *,
    flow: dict | None = None,
    train_config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    progress: bool = False,
) -> tuple[SummaryFlow, TrainResult]:
    """Train a :class:`SummaryFlow` on reference summaries ``data`` = {"x": (N, D), "energies_gev": (N,),
    "theta": (N, P)} (e.g. :meth:`ReferenceSummaries.training_set`) by maximum likelihood."""
    x = np.asarray(data["x"], dtype=np.float64)
    e = np.asarray(data["energies_gev"], dtype=np.float64).reshape(-1)
    th = np.asarray(data["theta"], dtype=np.float64)
    if x.ndim != 2 or e.shape != (x.shape[0],) or th.shape != (x.shape[0], prior.dim):
        raise ValueError(
            f"data needs x (N, D), energies_gev (N,) and theta (N, {prior.dim}); got {x.shape}, {e.shape}, {th.shape}"
        )
    if not (np.isfinite(x).all() and np.isfinite(th).all() and np.all(e > 0)):
        raise ValueError("data must be finite with energies_gev > 0 [GeV]")
    k_init, k_train = jax.random.split(key)
    model = SummaryFlow(k_init, x.shape[1], prior, flow)
    shift, scale = x.mean(axis=0), x.std(axis=0)
    if np.any(scale <= 0):
        raise ValueError("every summary column needs a non-zero spread in the training data")
    model = eqx.tree_at(
        lambda m: (m.shift, m.scale), model, (jnp.asarray(shift, jnp.float32), jnp.asarray(scale, jnp.float32))
    )
    # shift / scale are fixed preprocessing: freeze them by training only the flow.
    arrays = {
        "x": x.astype(np.float32),
        "energies_gev": e.astype(np.float32),
        "theta": th.astype(np.float32),
    }
    cfg = train_config or TrainConfig(batch_size=512, max_steps=4000, learning_rate=1e-3, eval_every=500)

    def loss(flow_model: CouplingFlow, batch: dict[str, jax.Array], key: jax.Array | None = None) -> jax.Array:
        return _flow_nll(eqx.tree_at(lambda m: m.flow, model, flow_model), batch, key)

    result = train(model.flow, loss, arrays, k_train, cfg, out_dir=out_dir, progress=progress)
    return eqx.tree_at(lambda m: m.flow, model, result.model), result


def save_summary_flow(model: SummaryFlow, path: str | Path, metadata: dict | None = None) -> Path:
    """Save without pickle (Equinox leaves + JSON + SHA-256), see :func:`surrinf.generators.save`."""
    return save(model, path, model.config(), metadata=metadata, model_type="summary_flow")


def load_summary_flow(path: str | Path) -> tuple[SummaryFlow, dict[str, Any]]:
    """Load a :class:`SummaryFlow` saved by :func:`save_summary_flow` (checksum verified); returns (model, metadata)."""
    return load(path, expected_type="summary_flow")


class ScaleBiasedDensity(eqx.Module):
    """A density whose response (summary column ``column``) is scaled by (1 + bias): p(x) = p_base(x') / (1 + bias)
    with x'_column = x_column / (1 + bias). Models a surrogate with a relative energy-scale error ``bias``."""

    base: Any
    bias: float = eqx.field(static=True)
    column: int = eqx.field(static=True, default=0)

    def log_prob(self, x: jax.Array, energies_gev: jax.Array, theta: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        f = 1.0 + self.bias
        x = x.at[:, self.column].divide(f)
        return self.base.log_prob(x, energies_gev, theta) - math.log(f)
