"""Monotone rational-quadratic splines (Durkan et al. 2019, "Neural Spline Flows", arXiv:1906.04032).

Elementwise bijection of R: a K-bin rational-quadratic spline on [-B, B] and the identity outside. The spline
is parameterised by unnormalised bin widths (K), bin heights (K) and interior knot derivatives (K - 1):

- widths  = min_bin_width  + (1 - K min_bin_width)  softmax(w), knots x_k = -B + 2B cumsum(widths);
- heights = min_bin_height + (1 - K min_bin_height) softmax(h), knots y_k likewise;
- interior derivatives = min_derivative + softplus(d); the two boundary derivatives are 1 (matching the
  identity tails, so the map is C^1 at +-B).

With w = h = 0 and softplus(d) + min_derivative = 1 the spline is the identity.

Export note: the bin search is a comparison-and-sum and the bin parameters are gathered with a one-hot
product, not ``jnp.searchsorted`` / fancy indexing, so the functions vmap and export to ONNX.
All functions broadcast: ``x`` has shape (...,), the parameters (..., K), (..., K), (..., K - 1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MIN_BIN_WIDTH = 1e-3
MIN_BIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3


def n_spline_params(n_bins: int) -> int:
    """Number of unnormalised parameters of one K-bin spline: K widths + K heights + (K - 1) derivatives."""
    return 3 * n_bins - 1


def split_spline_params(params: jax.Array, n_bins: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(..., 3K - 1) -> widths (..., K), heights (..., K), derivatives (..., K - 1)."""
    return params[..., :n_bins], params[..., n_bins : 2 * n_bins], params[..., 2 * n_bins :]


def spline_knots(
    widths: jax.Array,
    heights: jax.Array,
    derivatives: jax.Array,
    bound: float,
    min_bin_width: float = MIN_BIN_WIDTH,
    min_bin_height: float = MIN_BIN_HEIGHT,
    min_derivative: float = MIN_DERIVATIVE,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Unnormalised (..., K), (..., K), (..., K - 1) -> knots x (..., K + 1), y (..., K + 1), derivatives (..., K + 1).

    The first and last knots are exactly -bound and +bound; the boundary derivatives are exactly 1."""
    n_bins = widths.shape[-1]
    if heights.shape[-1] != n_bins or derivatives.shape[-1] != n_bins - 1:
        raise ValueError(
            f"need K widths, K heights and K-1 derivatives, got {widths.shape[-1]}, {heights.shape[-1]}, "
            f"{derivatives.shape[-1]}"
        )
    if min_bin_width * n_bins >= 1.0 or min_bin_height * n_bins >= 1.0:
        raise ValueError("min_bin_width and min_bin_height must be below 1 / n_bins")

    def knots(u: jax.Array, min_size: float) -> jax.Array:
        size = min_size + (1.0 - min_size * n_bins) * jax.nn.softmax(u, axis=-1)
        inner = -bound + 2.0 * bound * jnp.cumsum(size[..., :-1], axis=-1)
        edge = jnp.full((*u.shape[:-1], 1), bound, dtype=inner.dtype)
        return jnp.concatenate([-edge, inner, edge], axis=-1)

    d_inner = min_derivative + jax.nn.softplus(derivatives)
    one = jnp.ones((*derivatives.shape[:-1], 1), dtype=d_inner.dtype)
    return knots(widths, min_bin_width), knots(heights, min_bin_height), jnp.concatenate([one, d_inner, one], axis=-1)


def _clamp(v: jax.Array, lo: float, hi: float) -> jax.Array:
    """Clip with derivative 1 at the ends (``jnp.clip`` gives 1/2 at a tie, e.g. exactly on a knot)."""
    return jnp.where(v < lo, lo, jnp.where(v > hi, hi, v))


def _bin_params(v: jax.Array, knots: jax.Array, *others: jax.Array) -> list[jax.Array]:
    """Locate v (...,) in the bins of ``knots`` (..., K + 1) and gather [left, right] of knots and of each other
    (..., K + 1) array: returns [knots_k, knots_k+1, other_k, other_k+1, ...], each (...,).

    Bin index = number of interior knots <= v (comparison-and-sum), gathered by a one-hot product."""
    n_bins = knots.shape[-1] - 1
    idx = jnp.sum(v[..., None] >= knots[..., 1:-1], axis=-1)
    onehot = (idx[..., None] == jnp.arange(n_bins)).astype(knots.dtype)
    out = []
    for a in (knots, *others):
        out.append(jnp.sum(onehot * a[..., :-1], axis=-1))
        out.append(jnp.sum(onehot * a[..., 1:], axis=-1))
    return out


def rq_spline_forward(
    x: jax.Array,
    widths: jax.Array,
    heights: jax.Array,
    derivatives: jax.Array,
    bound: float,
    min_bin_width: float = MIN_BIN_WIDTH,
    min_bin_height: float = MIN_BIN_HEIGHT,
    min_derivative: float = MIN_DERIVATIVE,
) -> tuple[jax.Array, jax.Array]:
    """x (...,) -> y (...,), log|dy/dx| (...,). Identity (log-det 0) outside [-bound, bound]."""
    xk_all, yk_all, dk_all = spline_knots(
        widths, heights, derivatives, bound, min_bin_width, min_bin_height, min_derivative
    )
    inside = (x >= -bound) & (x <= bound)
    xc = jnp.where(inside, x, 0.0)  # outside values never reach the spline formulas (finite gradients)
    xk, xk1, yk, yk1, dk, dk1 = _bin_params(xc, xk_all, yk_all, dk_all)
    wk, hk = xk1 - xk, yk1 - yk
    sk = hk / wk
    t = (xc - xk) / wk  # in [0, 1]: xk <= xc <= xk1 by the bin search
    t1t = t * (1.0 - t)
    den = sk + (dk1 + dk - 2.0 * sk) * t1t
    y = yk + hk * (sk * t * t + dk * t1t) / den
    dnum = sk * sk * (dk1 * t * t + 2.0 * sk * t1t + dk * (1.0 - t) ** 2)
    logdet = jnp.log(dnum) - 2.0 * jnp.log(den)
    y = _clamp(y, -bound, bound)
    return jnp.where(inside, y, x), jnp.where(inside, logdet, 0.0)


def rq_spline_inverse(
    y: jax.Array,
    widths: jax.Array,
    heights: jax.Array,
    derivatives: jax.Array,
    bound: float,
    min_bin_width: float = MIN_BIN_WIDTH,
    min_bin_height: float = MIN_BIN_HEIGHT,
    min_derivative: float = MIN_DERIVATIVE,
) -> tuple[jax.Array, jax.Array]:
    """y (...,) -> x (...,), log|dx/dy| (...,). Identity (log-det 0) outside [-bound, bound].

    Solves the quadratic a t^2 + b t + c = 0 for the bin coordinate t in the stable form t = 2c / (-b - sqrt(b^2 -
    4ac)) (Durkan et al. eq. 6-8)."""
    xk_all, yk_all, dk_all = spline_knots(
        widths, heights, derivatives, bound, min_bin_width, min_bin_height, min_derivative
    )
    inside = (y >= -bound) & (y <= bound)
    yc = jnp.where(inside, y, 0.0)
    yk, yk1, xk, xk1, dk, dk1 = _bin_params(yc, yk_all, xk_all, dk_all)
    wk, hk = xk1 - xk, yk1 - yk
    sk = hk / wk
    dy = yc - yk
    s_term = dy * (dk1 + dk - 2.0 * sk)
    a = hk * (sk - dk) + s_term
    b = hk * dk - s_term
    c = -sk * dy
    disc = jnp.maximum(b * b - 4.0 * a * c, 0.0)
    t = _clamp(2.0 * c / (-b - jnp.sqrt(disc)), 0.0, 1.0)
    x = _clamp(xk + t * wk, -bound, bound)
    t1t = t * (1.0 - t)
    den = sk + (dk1 + dk - 2.0 * sk) * t1t
    dnum = sk * sk * (dk1 * t * t + 2.0 * sk * t1t + dk * (1.0 - t) ** 2)
    logdet = 2.0 * jnp.log(den) - jnp.log(dnum)
    return jnp.where(inside, x, y), jnp.where(inside, logdet, 0.0)
