"""A generated-hit model of the three-station muon spectrometer: a conditional Gaussian on chord residuals.

The response is the (N, 3) bending coordinates y [m] at the three stations of
:class:`~surrinf.sim.muon.MuonSpectrometer`, given conditions [pT [GeV], charge, phi0 [rad]] (columns
:data:`~surrinf.sim.muon.MUON_CONDITION_COLUMNS`; charge defaults to +1, phi0 to 0).

Preprocessing (fixed at fit time, float64 arithmetic, stored as float32 arrays):

1. Chord coordinates u = T y: u_0 = (y_1 + y_3) / 2 (the chord at the middle station), u_1 = (y_3 - y_1) / 2
   (half the chord's rise) and u_2 = y_2 - (y_1 + y_3) / 2 (the middle hit's deviation from the chord: the
   sagitta along y for the centred middle station). |det T| = 1/2.
2. Conditioning features e = standardised (q / pT) and, when the training sample varies phi0, standardised phi0.
3. A linear baseline u ~ A [1, e] fitted by least squares on the training sample, and the residual
   r = (u - A [1, e]) / sd, with sd the per-coordinate residual standard deviation. The sagitta of a 10 GeV muon
   is ~ 47 mm but its resolution ~ 50 um: without the baseline a float32 network would have to reproduce the
   mean to 1e-3 relative. The residuals are O(1) numbers, so the network resolves a micrometre.

The network models r given e as a full-covariance Gaussian: r = m(e) + L(e) z, z ~ N(0, I_3), with m (3,) and the
lower-triangular Cholesky factor L (positive diagonal exp(l_ii), 3 off-diagonal entries) the outputs of a
FiLM-conditioned MLP (:class:`~surrinf.generators.flow.FiLMMLP`, input and condition both e): a conditional affine
flow with an exact density, trained by maximum likelihood. The family is the right one for this reference: given
the conditions the hits are a near-linear function of Gaussian resolution and multiple-scattering draws, so the
conditional law is Gaussian with a condition-dependent mean and covariance (the multiple-scattering part of the
covariance scales with 1/pT^2, the resolution part does not, and multiple scattering correlates the stations).
The output layer starts small, so a fresh model is r ~ N(0, I): the standardised residuals of the training set.

The baseline is a linear fit, not the sagitta formula: the 1/pT law of the generated sagitta is a learned property
that :mod:`surrinf.validation.sagitta` checks (the network can shift the mean with the conditions), and everything
beyond the linear mean - the spread and its pT dependence (resolution and multiple scattering), correlations
between stations, the non-linear (L/R)^2 and phi0 terms of the exact geometry - is the network's.
"""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..sim.muon import split_conditions
from .flow import _OUTPUT_INIT_SCALE, FiLMMLP
from .serialization import register_model
from .trainer import TrainConfig, TrainResult, train

__all__ = ["DEFAULT_MUON_HIDDEN", "MuonHitModel", "muon_hit_loss"]

#: Default hidden widths of the FiLM MLP (3-dimensional data and 1-2 conditions: small networks suffice).
DEFAULT_MUON_HIDDEN: tuple[int, ...] = (32, 32)
#: ln |det T| of the chord coordinates (T maps y to u; |det T| = 1/2).
_LOG_DET_T = math.log(0.5)
_LOG_2PI = math.log(2.0 * math.pi)
#: Clip of the log-diagonal of the Cholesky factor (std in [4.5e-5, 2.2e4] in units of the residual std).
_LOG_DIAG_MIN, _LOG_DIAG_MAX = -10.0, 10.0


def _to_chord(y: Any) -> Any:
    """(N, 3) hits -> (N, 3) chord coordinates (mid-chord, half rise, deviation); numpy or jax."""
    mid = 0.5 * (y[:, 0] + y[:, 2])
    xp = np if isinstance(y, np.ndarray) else jnp
    return xp.stack([mid, 0.5 * (y[:, 2] - y[:, 0]), y[:, 1] - mid], axis=1)


def _from_chord(u: jax.Array) -> jax.Array:
    return jnp.stack([u[:, 0] - u[:, 1], u[:, 2] + u[:, 0], u[:, 0] + u[:, 1]], axis=1)


def _raw_features(conditions: Any, use_phi0: bool) -> np.ndarray:
    """(N, C) float64 [q / pT [1/GeV], phi0 [rad]] (phi0 only with ``use_phi0``)."""
    pt, q, phi0 = split_conditions(conditions)
    cols = [q / pt] + ([phi0] if use_phi0 else [])
    return np.stack(cols, axis=1)


@register_model("muon_hit_model")
class MuonHitModel(eqx.Module):
    """Conditional Gaussian (affine flow) of the three station hits; see the module docstring.

    ``sample(key, conditions) -> hits`` (N, 3) [m, float32]; ``log_prob(hits, conditions)`` [ln m^-3]. Build with
    :meth:`fit`; ``net``: (e (C,), e (C,)) -> (mean (3,), log-diagonal (3,), off-diagonal (3,))."""

    net: FiLMMLP
    cond_mean: jax.Array  # (C,) mean of the raw features [q/pT 1/GeV, phi0 rad]
    cond_std: jax.Array  # (C,)
    baseline: jax.Array  # (1 + C, 3): u ~ [1, e] @ baseline [m]
    scale: jax.Array  # (3,) residual std [m]
    hidden: tuple[int, ...] = eqx.field(static=True)
    use_phi0: bool = eqx.field(static=True)

    def __init__(self, key: jax.Array, *, hidden: Any = DEFAULT_MUON_HIDDEN, use_phi0: bool = False):
        """Fresh network (from ``key``) with identity preprocessing; :meth:`fit` sets the preprocessing."""
        try:
            hid = tuple(int(h) for h in hidden)
        except (TypeError, ValueError):
            hid = ()
        if not hid or any(h < 1 for h in hid):
            raise ValueError(f"hidden must be a non-empty list of integers >= 1, got {hidden!r}")
        if not isinstance(use_phi0, (bool, np.bool_)):
            raise ValueError(f"use_phi0 must be True or False, got {use_phi0!r}")
        c = 1 + int(use_phi0)
        self.net = _new_net(key, c, hid)
        self.cond_mean = jnp.zeros((c,), jnp.float32)
        self.cond_std = jnp.ones((c,), jnp.float32)
        self.baseline = jnp.zeros((1 + c, 3), jnp.float32)
        self.scale = jnp.ones((3,), jnp.float32)
        self.hidden, self.use_phi0 = hid, bool(use_phi0)

    @property
    def cond_dim(self) -> int:
        return 1 + int(self.use_phi0)

    def encode(self, conditions: Any) -> jax.Array:
        """Conditions (N,) or (N, k) -> standardised features e (N, C) float32 (checked like the simulator's)."""
        raw = _raw_features(conditions, self.use_phi0)
        return (jnp.asarray(raw, jnp.float32) - self.cond_mean) / self.cond_std

    def residual_params(self, e: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Features e (N, C) -> mean m (N, 3), log-diagonal (N, 3) and below-diagonal entries (L_10, L_20, L_21)
        (N, 3) of the Cholesky factor L of the standardised residual r's covariance."""
        out = jax.vmap(self.net)(e, e)
        return out[:, :3], jnp.clip(out[:, 3:6], _LOG_DIAG_MIN, _LOG_DIAG_MAX), out[:, 6:]

    def residual_log_prob(self, r: jax.Array, e: jax.Array) -> jax.Array:
        """log N(r; m(e), L L^T) (N,) of standardised residuals r (N, 3) given features e (N, C)."""
        mean, log_diag, off = self.residual_params(e)
        v, d = r - mean, jnp.exp(log_diag)
        # forward substitution L z = v (3 x 3, written out: cheaper to compile than a triangular solve)
        z0 = v[:, 0] / d[:, 0]
        z1 = (v[:, 1] - off[:, 0] * z0) / d[:, 1]
        z2 = (v[:, 2] - off[:, 1] * z0 - off[:, 2] * z1) / d[:, 2]
        return -0.5 * (z0 * z0 + z1 * z1 + z2 * z2) - jnp.sum(log_diag, axis=1) - 1.5 * _LOG_2PI

    def _mean(self, e: jax.Array) -> jax.Array:
        return self.baseline[0] + e @ self.baseline[1:]

    def sample(self, key: jax.Array, conditions: Any) -> jax.Array:
        """key, conditions (N,) or (N, k) [pT GeV, charge, phi0 rad] -> hits (N, 3) [m]. Same key, same hits."""
        return _sample(self, key, self.encode(conditions))

    def log_prob(self, hits_m: Any, conditions: Any) -> jax.Array:
        """Exact log density (N,) of hits (N, 3) [m] given conditions, in ln m^-3."""
        e = self.encode(conditions)
        h = jnp.asarray(hits_m, dtype=jnp.float32)
        if h.shape != (e.shape[0], 3):
            raise ValueError(f"hits_m must have shape (N={e.shape[0]}, 3) like conditions, got {tuple(h.shape)}")
        r = (_to_chord(h) - self._mean(e)) / self.scale
        return self.residual_log_prob(r, e) - jnp.sum(jnp.log(self.scale)) + _LOG_DET_T

    # ----------------------------------------------------------------------------------- save / load

    def config(self) -> dict[str, Any]:
        return {"hidden": list(self.hidden), "use_phi0": self.use_phi0}

    @classmethod
    def from_config(cls, config: dict[str, Any], key: jax.Array) -> MuonHitModel:
        """Skeleton for :func:`surrinf.generators.load` (every array is overwritten by the saved leaves)."""
        return cls(key, hidden=config["hidden"], use_phi0=bool(config["use_phi0"]))

    # ----------------------------------------------------------------------------------- training

    @classmethod
    def fit(
        cls,
        key: jax.Array,
        hits_m: Any,
        conditions: Any,
        *,
        hidden: Any = DEFAULT_MUON_HIDDEN,
        train_config: TrainConfig | None = None,
        use_phi0: bool | None = None,
        out_dir: Any = None,
        progress: bool = False,
    ) -> tuple[MuonHitModel, TrainResult]:
        """Fit the preprocessing on hits (N, 3) [m] and conditions (N,) or (N, k), then train the network by
        maximum likelihood (:func:`muon_hit_loss`). ``use_phi0`` (default: whether the conditions have a phi0
        column that varies) adds phi0 to the conditioning. ``key`` is split into (network init, trainer); the
        preprocessing arrays are held outside the optimised pytree."""
        h = np.asarray(hits_m, dtype=np.float64)
        c = np.asarray(conditions, dtype=np.float64)
        if h.ndim != 2 or h.shape[1] != 3 or not np.all(np.isfinite(h)):
            raise ValueError(f"hits_m must be a finite array of shape (N, 3) [m], got shape {h.shape}")
        n = h.shape[0]
        if c.shape[:1] != (n,):
            raise ValueError(f"conditions must have N = {n} rows like hits_m, got shape {c.shape}")
        if n < 8:
            raise ValueError(f"hits_m needs at least 8 tracks to fit the preprocessing, got {n}")
        if use_phi0 is None:
            use_phi0 = bool(c.ndim == 2 and c.shape[1] >= 3 and np.ptp(c[:, 2]) > 0)
        raw = _raw_features(c, use_phi0)
        mean, std = raw.mean(axis=0), raw.std(axis=0)
        if np.any(std == 0):
            raise ValueError("conditions: q/pT (and phi0 with use_phi0) must vary over the training sample")
        e = (raw - mean) / std
        design = np.concatenate([np.ones((n, 1)), e], axis=1)
        u = _to_chord(h)
        coef, *_ = np.linalg.lstsq(design, u, rcond=None)
        resid = u - design @ coef
        sd = resid.std(axis=0)
        if np.any(sd == 0):
            raise ValueError("hits_m: a chord coordinate is an exact linear function of the conditions (no noise)")
        k_init, k_train = jax.random.split(key)
        model = cls(k_init, hidden=hidden, use_phi0=use_phi0)
        model = eqx.tree_at(
            lambda m: (m.cond_mean, m.cond_std, m.baseline, m.scale),
            model,
            tuple(jnp.asarray(np.asarray(a, np.float32)) for a in (mean, std, coef, sd)),
        )
        data = {"x": (resid / sd).astype(np.float32), "cond": e.astype(np.float32)}
        result = train(
            model.net,
            _net_loss(model),
            data,
            k_train,
            train_config or TrainConfig(),
            out_dir=out_dir,
            progress=progress,
        )
        return eqx.tree_at(lambda m: m.net, model, result.model), result


@eqx.filter_jit
def _new_net(key: jax.Array, cond_dim: int, hidden: tuple[int, ...]) -> FiLMMLP:
    """A fresh ``FiLMMLP(key, C, 9, C, hidden)`` with FiLMMLP's initial distributions - every Linear weight and
    bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (equinox's default), the output layer scaled by
    ``_OUTPUT_INIT_SCALE``, FiLM zero (identity) - drawn from one uniform vector in one compiled program (FiLMMLP's
    per-layer initialisers compile one PRNG program each: ~1 s, a fifth of this model's training cost)."""
    skeleton = eqx.filter_eval_shape(FiLMMLP, key, cond_dim, 9, cond_dim, hidden)
    shapes = [s for lin in skeleton.linears for s in (lin.weight.shape, lin.bias.shape)]
    u = jax.random.uniform(key, (sum(math.prod(s) for s in shapes),), jnp.float32, -1.0, 1.0)
    values, start = [], 0
    for i, shape in enumerate(shapes):
        layer = i // 2
        lim = 1.0 / math.sqrt(skeleton.linears[layer].weight.shape[1])
        if layer == len(skeleton.linears) - 1:
            lim *= _OUTPUT_INIT_SCALE
        values.append(lim * u[start : start + math.prod(shape)].reshape(shape))
        start += math.prod(shape)
    values += [jnp.zeros(x.shape, jnp.float32) for f in skeleton.films for x in (f.linear.weight, f.linear.bias)]
    return eqx.tree_at(
        lambda m: (
            [x for lin in m.linears for x in (lin.weight, lin.bias)]
            + [x for f in m.films for x in (f.linear.weight, f.linear.bias)]
        ),
        skeleton,
        values,
    )


class _net_loss(eqx.Module):
    """loss_fn(net, batch, key) of the trainer: :func:`muon_hit_loss` with ``net`` in a fixed model."""

    model: MuonHitModel

    def __call__(self, net: FiLMMLP, batch: dict[str, jax.Array], key: jax.Array | None = None) -> jax.Array:
        return muon_hit_loss(eqx.tree_at(lambda m: m.net, self.model, net), batch, key)


def muon_hit_loss(model: MuonHitModel, batch: dict[str, jax.Array], key: jax.Array | None = None) -> jax.Array:
    """Mean negative log-likelihood (nats per track) of standardised residuals {"x": (B, 3), "cond": e (B, C)};
    ``key`` is unused."""
    del key
    return -jnp.mean(model.residual_log_prob(batch["x"], batch["cond"]))


@eqx.filter_jit
def _sample(model: MuonHitModel, key: jax.Array, e: jax.Array) -> jax.Array:
    mean, log_diag, off = model.residual_params(e)
    d = jnp.exp(log_diag)
    z = jax.random.normal(key, (e.shape[0], 3), dtype=jnp.float32)
    r = mean + jnp.stack(
        [
            d[:, 0] * z[:, 0],
            off[:, 0] * z[:, 0] + d[:, 1] * z[:, 1],
            off[:, 1] * z[:, 0] + off[:, 2] * z[:, 1] + d[:, 2] * z[:, 2],
        ],
        axis=1,
    )
    return _from_chord(model._mean(e) + model.scale * r)
