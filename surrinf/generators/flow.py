"""Conditional normalizing flows with rational-quadratic spline transforms, FiLM-conditioned.

Two models on R^D conditioned on c in R^C, both with a standard-normal base distribution:

- :class:`CouplingFlow`: spline coupling layers (Durkan et al. 2019). Density and sampling are one pass each.
- :class:`AutoregressiveFlow`: masked autoregressive spline flow (MADE conditioner, Germain et al. 2015;
  Papamakarios et al. 2017). The density is one pass; sampling needs D conditioner passes per layer.

Conventions: ``forward`` is the normalising direction x -> z with log|det dz/dx|, ``inverse`` the generative
direction z -> x with log|det dx/dz|; ``log_prob(x, c) = log N(forward(x, c).z) + log|det dz/dx|``.
Every hidden layer of every conditioner is modulated by c with :class:`~surrinf.generators.conditioning.FiLM`.
Conditioner outputs of zero give the identity map (the derivative parameters are offset so that softplus + min
derivative = 1), and the output layers are initialised small, so a fresh flow is close to N(0, I).

Fixed permutations and MADE masks are integer / boolean array leaves (saved by ``eqx.tree_serialise_leaves``;
not differentiated because they are not inexact): optimise ``eqx.filter(model, eqx.is_inexact_array)``.

Models are built from a JSON-safe dict with :func:`build_flow`; ``model.config()`` returns that dict.
``cond_dim = 0`` gives an unconditional flow (pass c of shape (N, 0)).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from surrinf.generators.serialization import register_model

from .conditioning import FiLM
from .splines import MIN_DERIVATIVE, n_spline_params, rq_spline_forward, rq_spline_inverse, split_spline_params

#: Added to the raw derivative outputs so that a zero conditioner output gives derivative 1 (identity spline).
_DERIVATIVE_OFFSET = math.log(math.expm1(1.0 - MIN_DERIVATIVE))
#: Scale of the initial output-layer weights and biases relative to the default Linear initialisation.
_OUTPUT_INIT_SCALE = 1e-2
_LOG_2PI = math.log(2.0 * math.pi)


def _std_normal_log_prob(z: jax.Array) -> jax.Array:
    """(..., D) -> (...,) log N(z; 0, I)."""
    return -0.5 * jnp.sum(z * z, axis=-1) - 0.5 * z.shape[-1] * _LOG_2PI


class FiLMMLP(eqx.Module):
    """MLP (in,) -> (out,) whose hidden layers are h -> silu(FiLM(W h + b, c)); optional boolean weight masks
    (one (out_l, in_l) mask per linear layer) make it a MADE."""

    linears: tuple[eqx.nn.Linear, ...]
    films: tuple[FiLM, ...]
    masks: tuple[jax.Array, ...] | None

    def __init__(
        self,
        key: jax.Array,
        in_dim: int,
        out_dim: int,
        cond_dim: int,
        hidden: tuple[int, ...],
        masks: tuple[np.ndarray, ...] | None = None,
    ):
        sizes = (in_dim, *hidden, out_dim)
        keys = jax.random.split(key, 2 * len(sizes))
        linears = [eqx.nn.Linear(sizes[i], sizes[i + 1], key=keys[i]) for i in range(len(sizes) - 1)]
        last = linears[-1]
        linears[-1] = eqx.tree_at(
            lambda m: (m.weight, m.bias), last, (last.weight * _OUTPUT_INIT_SCALE, last.bias * _OUTPUT_INIT_SCALE)
        )
        self.linears = tuple(linears)
        self.films = tuple(FiLM(keys[len(sizes) + i], cond_dim, h) for i, h in enumerate(hidden))
        self.masks = None if masks is None else tuple(jnp.asarray(m, dtype=bool) for m in masks)

    def __call__(self, h: jax.Array, c: jax.Array) -> jax.Array:
        """h (in,), c (C,) -> (out,)."""
        for i, lin in enumerate(self.linears):
            w = lin.weight if self.masks is None else jnp.where(self.masks[i], lin.weight, 0.0)
            h = w @ h + lin.bias
            if i < len(self.films):
                h = jax.nn.silu(self.films[i](h, c))
        return h


def _spline_args(raw: jax.Array, n_bins: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Conditioner output (n, 3K - 1) -> widths, heights, derivatives with the identity offset applied."""
    w, h, d = split_spline_params(raw, n_bins)
    return w, h, d + _DERIVATIVE_OFFSET


def _as_cond(c: jax.Array, n: int | None, cond_dim: int) -> jax.Array:
    """Accept (N, C) (or (N,) when C == 1) conditions; return float32 (N, C)."""
    c = jnp.asarray(c, dtype=jnp.float32)
    if c.ndim == 1 and cond_dim == 1:
        c = c[:, None]
    if c.ndim != 2 or c.shape[1] != cond_dim or (n is not None and c.shape[0] != n):
        raise ValueError(f"conditions must have shape (N={n}, C={cond_dim}), got {c.shape}")
    return c


def _perm_arrays(perms: list[np.ndarray]) -> tuple[jax.Array, jax.Array]:
    """(n_layers, D) int32 permutations and their inverses."""
    return jnp.asarray(np.stack(perms), dtype=jnp.int32), jnp.asarray(
        np.stack([np.argsort(p) for p in perms]), dtype=jnp.int32
    )


class _FlowBase(eqx.Module):
    """Shared batch API; subclasses define per-sample ``forward`` (x -> z) and ``inverse`` (z -> x)."""

    dim: int = eqx.field(static=True)
    cond_dim: int = eqx.field(static=True)
    n_layers: int = eqx.field(static=True)
    hidden: tuple[int, ...] = eqx.field(static=True)
    n_bins: int = eqx.field(static=True)
    bound: float = eqx.field(static=True)

    def _init_hyper(self, dim, cond_dim, n_layers, hidden, n_bins, bound) -> tuple[int, ...]:
        """Check and store the hyperparameters shared by every flow (called from ``__init__``)."""
        hidden = tuple(int(h) for h in hidden)
        _check_hyper(dim, cond_dim, n_layers, hidden, n_bins, bound)
        self.dim, self.cond_dim, self.n_layers = int(dim), int(cond_dim), int(n_layers)
        self.hidden, self.n_bins, self.bound = hidden, int(n_bins), float(bound)
        return hidden

    def forward(self, x: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
        raise NotImplementedError

    def inverse(self, z: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
        raise NotImplementedError

    def _check_x(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x, dtype=jnp.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (N, D={self.dim}), got {x.shape}")
        return x

    def log_prob(self, x: jax.Array, c: jax.Array) -> jax.Array:
        """x (N, D), c (N, C) -> (N,) exact log density log p(x | c)."""
        x = self._check_x(x)
        z, logdet = jax.vmap(self.forward)(x, _as_cond(c, x.shape[0], self.cond_dim))
        return _std_normal_log_prob(z) + logdet

    def sample_and_log_prob(self, key: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
        """key, c (N, C) -> samples (N, D), their log density (N,). One sample per row of c."""
        c = _as_cond(c, None, self.cond_dim)
        z = jax.random.normal(key, (c.shape[0], self.dim), dtype=jnp.float32)
        x, logdet = jax.vmap(self.inverse)(z, c)
        return x, _std_normal_log_prob(z) - logdet

    def sample(self, key: jax.Array, c: jax.Array) -> jax.Array:
        """key, c (N, C) -> samples (N, D). Deterministic for a given key."""
        return self.sample_and_log_prob(key, c)[0]

    def config(self) -> dict[str, Any]:
        """JSON-safe hyperparameters; ``build_flow(model.config(), key)`` rebuilds the architecture."""
        return {
            "type": _TYPE_NAMES[type(self)],
            "dim": self.dim,
            "cond_dim": self.cond_dim,
            "n_layers": self.n_layers,
            "hidden": list(self.hidden),
            "n_bins": self.n_bins,
            "bound": self.bound,
        }


def _check_hyper(dim: int, cond_dim: int, n_layers: int, hidden: tuple[int, ...], n_bins: int, bound: float) -> None:
    if dim < 1 or cond_dim < 0 or n_layers < 1 or n_bins < 2 or bound <= 0 or any(h < 1 for h in hidden):
        raise ValueError(
            f"invalid flow hyperparameters: dim={dim}, cond_dim={cond_dim}, n_layers={n_layers}, hidden={hidden}, "
            f"n_bins={n_bins}, bound={bound}"
        )


class CouplingFlow(_FlowBase):
    """Conditional RQ-spline coupling flow on R^D.

    Layer l permutes x with a fixed permutation, then transforms the last D - D//2 entries elementwise by splines
    whose parameters are an MLP (FiLM-modulated by c) of the first D//2 entries. Even layers use a random
    permutation (fixed from the key), odd layers reverse the order, so each pair of layers transforms every
    dimension once. Density and sampling cost one pass each; log-det is exact.
    """

    conditioners: tuple[FiLMMLP, ...]
    perms: jax.Array  # (n_layers, D) int32: layer input = x[perm]
    inv_perms: jax.Array  # (n_layers, D) int32

    def __init__(
        self,
        key: jax.Array,
        dim: int,
        cond_dim: int,
        n_layers: int = 6,
        hidden: tuple[int, ...] | list[int] = (128, 128),
        n_bins: int = 8,
        bound: float = 5.0,
    ):
        hidden = self._init_hyper(dim, cond_dim, n_layers, hidden, n_bins, bound)
        k_perm, k_net = jax.random.split(key)
        d_id = dim // 2
        perm_keys = jax.random.split(k_perm, n_layers)
        perms = [
            np.asarray(jax.random.permutation(perm_keys[i], dim)) if i % 2 == 0 else np.arange(dim)[::-1]
            for i in range(n_layers)
        ]
        self.perms, self.inv_perms = _perm_arrays(perms)
        # D = 1: the conditioner sees a constant input of size 1 (the spline then depends on c only).
        self.conditioners = tuple(
            FiLMMLP(k, max(d_id, 1), (dim - d_id) * n_spline_params(n_bins), cond_dim, hidden)
            for k in jax.random.split(k_net, n_layers)
        )

    def _params(self, layer: int, x_id: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        inp = x_id if x_id.shape[0] > 0 else jnp.zeros((1,), x_id.dtype)
        raw = self.conditioners[layer](inp, c).reshape(self.dim - self.dim // 2, n_spline_params(self.n_bins))
        return _spline_args(raw, self.n_bins)

    def forward(self, x: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One sample: x (D,), c (C,) -> z (D,), log|det dz/dx| ()."""
        d_id = self.dim // 2
        logdet = jnp.zeros((), x.dtype)
        for layer in range(self.n_layers):
            x = x[self.perms[layer]]
            x_id, x_tr = x[:d_id], x[d_id:]
            y, ld = rq_spline_forward(x_tr, *self._params(layer, x_id, c), self.bound)
            x = jnp.concatenate([x_id, y])
            logdet = logdet + jnp.sum(ld)
        return x, logdet

    def inverse(self, z: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One sample: z (D,), c (C,) -> x (D,), log|det dx/dz| ()."""
        d_id = self.dim // 2
        logdet = jnp.zeros((), z.dtype)
        for layer in reversed(range(self.n_layers)):
            z_id, z_tr = z[:d_id], z[d_id:]
            y, ld = rq_spline_inverse(z_tr, *self._params(layer, z_id, c), self.bound)
            z = jnp.concatenate([z_id, y])[self.inv_perms[layer]]
            logdet = logdet + jnp.sum(ld)
        return z, logdet


def _made_masks(dim: int, hidden: tuple[int, ...], n_params: int) -> tuple[np.ndarray, ...]:
    """MADE masks (out_l, in_l) for inputs of degree 1..D, hidden degrees spread over 0..D-1 (degree 0 units see
    only c through FiLM), and n_params outputs per dimension i of degree i (outputs laid out as (D, n_params))."""
    deg_in = np.arange(1, dim + 1)
    degrees = [deg_in] + [(np.arange(h) * dim) // h for h in hidden]
    masks = [degrees[i + 1][:, None] >= degrees[i][None, :] for i in range(len(hidden))]
    deg_out = np.repeat(deg_in, n_params)
    masks.append(deg_out[:, None] > degrees[-1][None, :])
    return tuple(masks)


class AutoregressiveFlow(_FlowBase):
    """Conditional masked autoregressive RQ-spline flow on R^D.

    Layer l permutes x with a fixed random permutation, then maps every entry x_i by a spline whose parameters
    are a MADE (FiLM-modulated by c) of x_{<i}. ``forward``/``log_prob`` is one pass. ``inverse``/``sample`` is
    sequential: per layer, D fixed-point sweeps x <- spline^-1(z; MADE(x)) (after sweep t the first t entries
    are exact), i.e. n_layers * D conditioner passes - cost O(D) times a density evaluation, fine for small D
    (D = 360, hidden (128, 128): ~20 s per 256 samples on 2 CPU cores, vs ~0.05 s for the coupling flow).
    Hidden widths below D cannot realise every dependency x_<i -> x_i (MADE needs units of every degree
    0..D-1): construction warns; use hidden >= D for a full autoregressive model.
    """

    conditioners: tuple[FiLMMLP, ...]
    perms: jax.Array  # (n_layers, D) int32
    inv_perms: jax.Array  # (n_layers, D) int32

    def __init__(
        self,
        key: jax.Array,
        dim: int,
        cond_dim: int,
        n_layers: int = 6,
        hidden: tuple[int, ...] | list[int] = (128, 128),
        n_bins: int = 8,
        bound: float = 5.0,
    ):
        hidden = self._init_hyper(dim, cond_dim, n_layers, hidden, n_bins, bound)
        k_perm, k_net = jax.random.split(key)
        perms = [np.asarray(jax.random.permutation(k, dim)) for k in jax.random.split(k_perm, n_layers)]
        self.perms, self.inv_perms = _perm_arrays(perms)
        if any(h < dim for h in hidden):
            warnings.warn(
                f"AutoregressiveFlow: hidden widths {hidden} below dim={dim}; MADE degrees then skip values and some "
                "x_i lose access to some x_<i (reduced capacity). Use hidden >= dim for a full autoregressive model.",
                UserWarning,
                stacklevel=4,
            )
        n_par = n_spline_params(n_bins)
        masks = _made_masks(dim, hidden, n_par)
        self.conditioners = tuple(
            FiLMMLP(k, dim, dim * n_par, cond_dim, hidden, masks) for k in jax.random.split(k_net, n_layers)
        )

    def _params(self, layer: int, x: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        raw = self.conditioners[layer](x, c).reshape(self.dim, n_spline_params(self.n_bins))
        return _spline_args(raw, self.n_bins)

    def forward(self, x: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One sample: x (D,), c (C,) -> z (D,), log|det dz/dx| (). One conditioner pass per layer."""
        logdet = jnp.zeros((), x.dtype)
        for layer in range(self.n_layers):
            x = x[self.perms[layer]]
            x, ld = rq_spline_forward(x, *self._params(layer, x, c), self.bound)
            logdet = logdet + jnp.sum(ld)
        return x, logdet

    def inverse(self, z: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One sample: z (D,), c (C,) -> x (D,), log|det dx/dz| (). D conditioner passes per layer (fori_loop)."""
        logdet = jnp.zeros((), z.dtype)
        for layer in reversed(range(self.n_layers)):

            def sweep(_, carry, layer=layer, z=z):
                x, _ld = carry
                return rq_spline_inverse(z, *self._params(layer, x, c), self.bound)

            x, ld = jax.lax.fori_loop(0, self.dim, sweep, (jnp.zeros_like(z), jnp.zeros_like(z)))
            z = x[self.inv_perms[layer]]
            logdet = logdet + jnp.sum(ld)
        return z, logdet


_TYPES: dict[str, type[_FlowBase]] = {"coupling": CouplingFlow, "autoregressive": AutoregressiveFlow}
_TYPE_NAMES: dict[type, str] = {v: k for k, v in _TYPES.items()}
_CONFIG_KEYS = ("type", "dim", "cond_dim", "n_layers", "hidden", "n_bins", "bound")


class TwoStageFlow(eqx.Module):
    """p(x | c) = p1(x[:n_first] | c) p2(x[n_first:] | c, x[:n_first]) with two coupling flows (CaloFlow's
    "flow I / flow II" split, Krause and Shih 2021): on showers the first block is the layer energies
    ln(E_l / E), so the energy response gets a flow of its own and the shape flow sees the exact layer
    energies. Same batch API as the other flows (``log_prob``, ``sample``, per-row ``forward``/``inverse``)."""

    first: CouplingFlow
    second: CouplingFlow
    n_first: int = eqx.field(static=True)

    def __init__(self, key: jax.Array, dim: int, cond_dim: int, n_first: int, first: dict, second: dict):
        if not (1 <= int(n_first) < int(dim)):
            raise ValueError(f"n_first must be in [1, dim={dim}), got {n_first}")
        k1, k2 = jax.random.split(key)
        self.n_first = int(n_first)
        self.first = CouplingFlow(k1, self.n_first, cond_dim, **_hyper(first))
        self.second = CouplingFlow(k2, int(dim) - self.n_first, int(cond_dim) + self.n_first, **_hyper(second))

    @property
    def dim(self) -> int:
        return self.first.dim + self.second.dim

    @property
    def cond_dim(self) -> int:
        return self.first.cond_dim

    def forward(self, x: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
        x1, x2 = x[: self.n_first], x[self.n_first :]
        z1, ld1 = self.first.forward(x1, c)
        z2, ld2 = self.second.forward(x2, jnp.concatenate([c, x1]))
        return jnp.concatenate([z1, z2]), ld1 + ld2

    def inverse(self, z: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
        x1, ld1 = self.first.inverse(z[: self.n_first], c)
        x2, ld2 = self.second.inverse(z[self.n_first :], jnp.concatenate([c, x1]))
        return jnp.concatenate([x1, x2]), ld1 + ld2

    def log_prob(self, x: jax.Array, c: jax.Array) -> jax.Array:
        """x (N, D), c (N, C) -> (N,) exact log density."""
        x = jnp.asarray(x, dtype=jnp.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (N, D={self.dim}), got {x.shape}")
        c = _as_cond(c, x.shape[0], self.cond_dim)
        x1 = x[:, : self.n_first]
        return self.first.log_prob(x1, c) + self.second.log_prob(x[:, self.n_first :], jnp.concatenate([c, x1], 1))

    def sample(self, key: jax.Array, c: jax.Array) -> jax.Array:
        """key, c (N, C) -> samples (N, D)."""
        c = _as_cond(c, None, self.cond_dim)
        z = jax.random.normal(key, (c.shape[0], self.dim), dtype=jnp.float32)
        return jax.vmap(self.inverse)(z, c)[0]

    def config(self) -> dict[str, Any]:
        strip = ("type", "dim", "cond_dim")
        return {
            "type": "two_stage",
            "dim": self.dim,
            "cond_dim": self.cond_dim,
            "n_first": self.n_first,
            "first": {k: v for k, v in self.first.config().items() if k not in strip},
            "second": {k: v for k, v in self.second.config().items() if k not in strip},
        }


def _hyper(d: dict) -> dict[str, Any]:
    """Coupling-flow hyperparameters of a two-stage block (n_layers, hidden, n_bins, bound)."""
    unknown = set(d) - set(_CONFIG_KEYS[3:])
    if unknown:
        raise ValueError(f"unknown two-stage block keys {sorted(unknown)}; allowed: {_CONFIG_KEYS[3:]}")
    return {k: tuple(v) if k == "hidden" else v for k, v in d.items()}


def build_flow(config: dict[str, Any], key: jax.Array) -> CouplingFlow | AutoregressiveFlow | TwoStageFlow:
    """Build a flow from a JSON-safe dict {type: "coupling" | "autoregressive", dim, cond_dim, and optionally
    n_layers, hidden, n_bins, bound} or {type: "two_stage", dim, cond_dim, n_first, first: {...},
    second: {...}}; ``build_flow(m.config(), key)`` has the architecture (treedef) of m."""
    if config.get("type") == "two_stage":
        unknown = set(config) - {"type", "dim", "cond_dim", "n_first", "first", "second"}
        if unknown:
            raise ValueError(f"unknown two-stage flow config keys {sorted(unknown)}")
        return TwoStageFlow(
            key, config["dim"], config["cond_dim"], config["n_first"], config.get("first", {}), config.get("second", {})
        )
    unknown = set(config) - set(_CONFIG_KEYS)
    if unknown:
        raise ValueError(f"unknown flow config keys {sorted(unknown)}; allowed: {_CONFIG_KEYS}")
    kind = config.get("type", "coupling")
    if kind not in _TYPES:
        raise ValueError(f"unknown flow type {kind!r}; known: {sorted(_TYPES)}")
    kwargs = {k: config[k] for k in _CONFIG_KEYS[1:] if k in config}
    if "hidden" in kwargs:
        kwargs["hidden"] = tuple(kwargs["hidden"])
    return _TYPES[kind](key, **kwargs)


def flow_loss(model: _FlowBase, batch: dict[str, jax.Array], key: jax.Array | None = None) -> jax.Array:
    """Mean negative log-likelihood of batch {"x": (B, D), "cond": (B, C)} (nats per event); ``key`` is unused."""
    del key
    return -jnp.mean(model.log_prob(batch["x"], batch["cond"]))


# Model types for surrinf.generators.serialization (save/load): the stored config is model.config().
register_model("coupling_flow", build_flow, model_class=CouplingFlow)
register_model("autoregressive_flow", build_flow, model_class=AutoregressiveFlow)
