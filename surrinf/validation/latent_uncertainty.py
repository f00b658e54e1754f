"""Propagation of a VAE's latent posterior q(z | x) = N(mu, diag sigma^2) to observables y = g(z) of the decoded shower.

Two estimates of the mean and covariance of y under q, for a batch of B posteriors at once:

- :func:`taylor_propagation`, first order (the "delta method"): E[y] ~ g(mu), Cov[y] ~ J diag(sigma^2) J^T with
  J = dg/dz at mu (n_obs, K). J comes from forward-mode differentiation, :func:`jax.jacfwd`: its cost is K
  Jacobian-vector products whatever the number of observables, where reverse mode costs n_obs vector-Jacobian
  products plus the stored activations of the decoder's forward pass. The latent space of a shower VAE is small
  (8-32) and fixed by the model, while observables are many as soon as per-layer features are propagated (15 layers x
  several features), so forward mode is the one whose cost does not grow with the observables; it also needs no
  tape and nests inside ``vmap`` over the batch without extra memory. (For a handful of observables and a large
  latent space, ``jax.jacrev`` would be the cheaper choice.) Exact for a linear g.
- :func:`mc_propagation`: n draws z = mu + sigma * eps per posterior, y = g(z), the sample mean and the sample
  covariance (ddof = 1) accumulated in float64, with the standard error of each sample variance from the sample's
  fourth central moment m4: Var(s^2) = (m4 - (n - 3) / (n - 1) s^4) / n (for Gaussian y: 2 s^4 / (n - 1)).

The first-order Taylor variance misses the curvature of g: for g = exp and z ~ N(mu, s^2), Var y = (e^{s^2} - 1)
e^{2 mu + s^2} (lognormal), while the Taylor value is e^{2 mu} s^2 -- smaller by e^{2 mu} ((e^{s^2} - 1) e^{s^2} - s^2)
= e^{2 mu} (3 s^4 / 2 + O(s^6)). :func:`vae_propagation` applies both to a trained
:class:`~surrinf.generators.vae.VAESurrogate`: posterior of each shower, decoder mean, preprocessor back to showers in
GeV, then an observable function such as :class:`~surrinf.validation.disentanglement.ShowerObservables`;
:func:`propagation_table` reports Taylor against Monte Carlo per observable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_positive_int
from ..report import Measurement, Table

__all__ = [
    "LatentPropagation",
    "Propagation",
    "mc_propagation",
    "propagation_table",
    "taylor_propagation",
    "vae_mean_showers",
    "vae_posterior",
    "vae_propagation",
]

#: Latent samples (rows x draws) evaluated per compiled call of :func:`mc_propagation` (bounds the memory).
_SAMPLES_PER_CALL = 1 << 15


@dataclass(frozen=True)
class Propagation:
    """Mean (B, n_obs) and covariance (B, n_obs, n_obs) of y = g(z) under B Gaussian posteriors (float64).

    method: ``"taylor"`` or ``"mc"``; n_samples: draws per posterior (0 for Taylor); var_stderr: (B, n_obs) standard
    error of the Monte Carlo variances (zeros for Taylor, which has no sampling error)."""

    method: str
    mean: np.ndarray
    cov: np.ndarray
    n_samples: int
    var_stderr: np.ndarray

    @property
    def var(self) -> np.ndarray:
        """(B, n_obs) variances."""
        return np.diagonal(self.cov, axis1=1, axis2=2).copy()

    @property
    def std(self) -> np.ndarray:
        """(B, n_obs) standard deviations."""
        return np.sqrt(self.var)


def _check_posterior(mu: Any, sigma: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    """(mu, sigma) as float32 (B, K) and whether a single (K,) posterior was given."""
    m = np.asarray(mu, dtype=np.float64)
    s = np.asarray(sigma, dtype=np.float64)
    single = m.ndim == 1
    if m.ndim not in (1, 2) or m.shape[-1] < 1:
        raise ValueError(f"mu must be a posterior mean (K,) or a batch (B, K), got shape {m.shape}")
    if s.shape != m.shape:
        raise ValueError(f"sigma must have the shape of mu {m.shape} (posterior standard deviations), got {s.shape}")
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(s))):
        raise ValueError("mu and sigma must be finite")
    if np.any(s < 0):
        raise ValueError("sigma must be >= 0 (posterior standard deviations, not log-variances)")
    m, s = np.atleast_2d(m), np.atleast_2d(s)
    return m.astype(np.float32), s.astype(np.float32), single


def _check_context(context: Any, b: int) -> Any:
    if context is None:
        return None
    leaves = jax.tree_util.tree_leaves(context)
    if not leaves or any(np.ndim(x) < 1 or np.shape(x)[0] != b for x in leaves):
        raise ValueError(f"context must be a pytree of arrays with leading dimension B = {b} (one row per posterior)")
    return jax.tree_util.tree_map(jnp.asarray, context)


def _call(g: Callable, z: jax.Array, c: Any) -> jax.Array:
    y = g(z) if c is None else g(z, c)
    return jnp.atleast_1d(jnp.asarray(y))


def _pad(a: Any, size: int) -> Any:
    """Rows of the pytree ``a`` padded to ``size`` by repeating the last row."""
    return jax.tree_util.tree_map(lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], size - x.shape[0], 0)]), a)


def _chunks(b: int, per_row: int) -> tuple[int, range]:
    rows = max(1, min(b, _SAMPLES_PER_CALL // max(per_row, 1)))
    return rows, range(0, b, rows)


def _finite(a: np.ndarray, what: str) -> np.ndarray:
    bad = ~np.all(np.isfinite(a.reshape(a.shape[0], -1)), axis=1)
    if np.any(bad):
        raise ValueError(f"g returned non-finite {what} for posterior rows {np.flatnonzero(bad)[:10].tolist()}")
    return a


def taylor_propagation(g: Callable[..., Any], mu: Any, sigma: Any, *, context: Any = None) -> Propagation:
    """First-order propagation: mean g(mu), covariance J diag(sigma^2) J^T with J = jax.jacfwd(g)(mu).

    g: z (K,) -> y (n_obs,) (or ``g(z, c)`` with ``c`` one row of ``context``, a pytree with leading dimension B);
    mu, sigma: (K,) or (B, K) posterior means and standard deviations. Evaluated in float32 (the decoder's
    precision), assembled in float64; returns a :class:`Propagation` with batch dimension B (1 for a single
    posterior)."""
    m, s, _ = _check_posterior(mu, sigma)
    ctx = _check_context(context, m.shape[0])

    @jax.jit
    def one_chunk(mc: jax.Array, cc: Any) -> tuple[jax.Array, jax.Array]:
        def row(z: jax.Array, c: Any) -> tuple[jax.Array, jax.Array]:
            return _call(g, z, c), jax.jacfwd(lambda zz: _call(g, zz, c))(z)

        return jax.vmap(row)(mc, cc) if cc is not None else jax.vmap(lambda z: row(z, None))(mc)

    rows, starts = _chunks(m.shape[0], m.shape[1])
    ys, js = [], []
    for i in starts:
        n = min(rows, m.shape[0] - i)
        sl = slice(i, i + n)
        cc = None if ctx is None else _pad(jax.tree_util.tree_map(lambda x: x[sl], ctx), rows)  # noqa: B023
        y, jac = one_chunk(_pad(jnp.asarray(m[sl]), rows), cc)
        ys.append(np.asarray(y, dtype=np.float64)[:n])
        js.append(np.asarray(jac, dtype=np.float64)[:n])
    y = _finite(np.concatenate(ys), "observables")
    jac = _finite(np.concatenate(js), "Jacobians")
    cov = np.einsum("bok,bk,bpk->bop", jac, s.astype(np.float64) ** 2, jac)
    return Propagation("taylor", y, cov, 0, np.zeros_like(y))


def mc_propagation(
    g: Callable[..., Any], mu: Any, sigma: Any, key: jax.Array, n: int, *, context: Any = None
) -> Propagation:
    """Monte Carlo propagation: ``n`` draws z = mu + sigma * eps per posterior, y = g(z); sample mean, sample
    covariance (ddof = 1) and the standard error of each sample variance, in float64. Row b draws from
    ``fold_in(key, b)``, so the draws do not depend on the batching (g's float32 rounding may, at ~1e-7).
    Arguments as :func:`taylor_propagation`; ``n >= 2``."""
    m, s, _ = _check_posterior(mu, sigma)
    n = check_positive_int(n, "n", minimum=2)
    ctx = _check_context(context, m.shape[0])
    k = m.shape[1]

    @jax.jit
    def one_chunk(idx: jax.Array, mc: jax.Array, sc: jax.Array, cc: Any) -> jax.Array:
        def row(i: jax.Array, mu_r: jax.Array, s_r: jax.Array, c: Any) -> jax.Array:
            eps = jax.random.normal(jax.random.fold_in(key, i), (n, k), dtype=jnp.float32)
            return jax.vmap(lambda e: _call(g, mu_r + s_r * e, c))(eps)

        if cc is None:
            return jax.vmap(lambda i, a, b: row(i, a, b, None))(idx, mc, sc)
        return jax.vmap(row)(idx, mc, sc, cc)

    rows, starts = _chunks(m.shape[0], n)
    means, covs, ses = [], [], []
    for i in starts:
        nr = min(rows, m.shape[0] - i)
        sl = slice(i, i + nr)
        idx = _pad(jnp.arange(i, i + nr, dtype=jnp.uint32), rows)
        cc = None if ctx is None else _pad(jax.tree_util.tree_map(lambda x: x[sl], ctx), rows)  # noqa: B023
        y = np.asarray(one_chunk(idx, _pad(jnp.asarray(m[sl]), rows), _pad(jnp.asarray(s[sl]), rows), cc))
        y = _finite(y.astype(np.float64)[:nr], "observables")  # (rows, n, n_obs)
        mean = y.mean(axis=1)
        d = y - mean[:, None, :]
        cov = np.einsum("bno,bnp->bop", d, d) / (n - 1)
        var = np.diagonal(cov, axis1=1, axis2=2)
        m4 = np.mean(d**4, axis=1)
        se2 = (m4 - (n - 3.0) / (n - 1.0) * var**2) / n
        means.append(mean)
        covs.append(cov)
        ses.append(np.sqrt(np.maximum(se2, 0.0)))
    return Propagation("mc", np.concatenate(means), np.concatenate(covs), n, np.concatenate(ses))


# ------------------------------------------------------------------------------------------------ VAE helpers


def vae_mean_showers(model: Any, z: Any, conditions: Any) -> jax.Array:
    """Decoder-mean showers (N, V) [GeV] of a :class:`~surrinf.generators.vae.VAESurrogate` for latents z (N, latent)
    and conditions (N,) or (N, k) (E [GeV], theta...): ``preprocessor.inverse(decoder_mean(z, c), E)`` (clipped to
    the training support and zero-suppressed like every generated shower; no observation noise)."""
    c = model.encoder.check(conditions)
    zz = jnp.asarray(z, dtype=jnp.float32)
    if zz.ndim != 2 or zz.shape != (c.shape[0], model.latent):
        raise ValueError(f"z must have shape (N, latent) = ({c.shape[0]}, {model.latent}), got {tuple(zz.shape)}")
    return _mean_showers(model, zz, c)


@eqx.filter_jit
def _mean_showers(model: Any, z: jax.Array, c: jax.Array) -> jax.Array:
    return model.preprocessor.inverse(model.decoder_mean(z, model.encoder(c)), c[:, 0])


def vae_posterior(
    model: Any, showers_gev: Any, conditions: Any, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and standard deviations (N, latent) of q(z | x, c) of a
    :class:`~surrinf.generators.vae.VAESurrogate` for showers (N, V) [GeV] at conditions (N,) or (N, k), in batches
    of ``batch_size`` rows."""
    c = model.encoder.check(conditions)
    s = np.asarray(showers_gev, dtype=np.float32)
    if s.ndim != 2 or s.shape != (c.shape[0], model.preprocessor.dim):
        raise ValueError(
            f"showers_gev must have shape (N, {model.preprocessor.dim}) with N = {c.shape[0]} like conditions, "
            f"got {s.shape}"
        )
    batch_size = check_positive_int(batch_size, "batch_size")
    mus, sds = [], []
    for i in range(0, c.shape[0], batch_size):
        _, mu, sd = _posterior(model, jnp.asarray(s[i : i + batch_size]), c[i : i + batch_size])
        mus.append(np.asarray(mu, dtype=np.float64))
        sds.append(np.asarray(sd, dtype=np.float64))
    return np.concatenate(mus), np.concatenate(sds)


@eqx.filter_jit
def _posterior(model: Any, showers: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(encoded conditions, posterior mean, posterior std) (B, .) of showers (B, V) [GeV] at checked conditions."""
    enc = model.encoder(c)
    x, _ = model.preprocessor.forward(showers, c[:, 0])
    mu, logvar = model.posterior(x, enc)
    return enc, mu, jnp.exp(0.5 * logvar)


@dataclass(frozen=True)
class LatentPropagation:
    """Taylor and Monte Carlo propagation of B showers' posteriors to observables ``names``; ``mu_z``, ``sigma_z``
    (B, latent) the posterior means and standard deviations."""

    taylor: Propagation
    mc: Propagation
    names: tuple[str, ...]
    mu_z: np.ndarray
    sigma_z: np.ndarray

    def table(self, title: str | None = None, units: Sequence[str] | None = None) -> Table:
        """See :func:`propagation_table`."""
        return propagation_table(self.taylor, self.mc, self.names, title=title, units=units)


def vae_propagation(
    model: Any,
    showers_gev: Any,
    conditions: Any,
    observables: Callable[[jax.Array, jax.Array], jax.Array],
    key: jax.Array,
    *,
    n_mc: int = 1000,
    names: Sequence[str] | None = None,
) -> LatentPropagation:
    """Propagate q(z | x, c) of each shower (B, V) [GeV] at conditions (B,) or (B, k) to observables of the
    decoder-mean shower (:func:`vae_mean_showers`), by first-order Taylor and by Monte Carlo (``n_mc`` draws).

    ``observables(showers (N, V) [GeV], energies (N,) [GeV]) -> (N, n_obs)`` must accept JAX arrays (it is
    differentiated), e.g. :class:`~surrinf.validation.disentanglement.ShowerObservables`; ``names`` default to its
    ``names`` attribute."""
    c = model.encoder.check(conditions)
    s = jnp.asarray(showers_gev, dtype=jnp.float32)
    if s.ndim != 2 or s.shape != (c.shape[0], model.preprocessor.dim):
        raise ValueError(
            f"showers_gev must have shape (B, {model.preprocessor.dim}) with B = {c.shape[0]} like conditions, "
            f"got {tuple(s.shape)}"
        )
    enc, mu, sigma = _posterior(model, s, c)
    mu, sigma = np.asarray(mu), np.asarray(sigma)

    def g(z: jax.Array, ctx: tuple[jax.Array, jax.Array]) -> jax.Array:
        cr, er = ctx
        shower = model.preprocessor.inverse(model.decoder_net(z, cr)[None], er[None])
        return observables(shower, er[None])[0]

    context = (enc, c[:, 0])
    tay = taylor_propagation(g, mu, sigma, context=context)
    mc = mc_propagation(g, mu, sigma, key, n_mc, context=context)
    if names is None:
        names = getattr(observables, "names", None) or tuple(f"obs{j}" for j in range(tay.mean.shape[1]))
    names = tuple(map(str, names))
    if len(names) != tay.mean.shape[1]:
        raise ValueError(f"names must name the {tay.mean.shape[1]} observables, got {len(names)}")
    return LatentPropagation(tay, mc, names, mu.astype(np.float64), sigma.astype(np.float64))


def propagation_table(
    taylor: Propagation,
    mc: Propagation,
    names: Sequence[str],
    *,
    title: str | None = None,
    units: Sequence[str] | None = None,
) -> Table:
    """Taylor vs Monte Carlo per observable over B posteriors: the mean Taylor and MC standard deviations, the
    variance ratio R = sum_b var_T / sum_b var_MC - 1 with its MC standard error, and the mean shift
    <(mean_T - mean_MC) / std_MC> (the first-order mean g(mu) ignores the curvature of g)."""
    if taylor.mean.shape != mc.mean.shape:
        raise ValueError(f"taylor and mc must cover the same posteriors, got {taylor.mean.shape} and {mc.mean.shape}")
    if len(names) != taylor.mean.shape[1]:
        raise ValueError(f"names must name the {taylor.mean.shape[1]} observables, got {len(names)}")
    units = [""] * len(names) if units is None else [f" [{u}]" for u in units]
    rows = []
    vt, vm = taylor.var, mc.var
    for j, name in enumerate(names):
        st, sm = vt[:, j].sum(), vm[:, j].sum()
        ok = sm > 0
        ratio = st / sm if ok else float("nan")
        err = ratio * np.sqrt(np.sum(mc.var_stderr[:, j] ** 2)) / sm if ok else float("nan")
        std_mc = np.sqrt(vm[:, j])
        good = std_mc > 0
        shift = np.mean((taylor.mean[good, j] - mc.mean[good, j]) / std_mc[good]) if np.any(good) else float("nan")
        rows.append(
            [
                name + units[j],
                float(np.mean(np.sqrt(vt[:, j]))),
                float(np.mean(std_mc)),
                Measurement(float(ratio - 1.0), float(err)),
                float(shift),
            ]
        )
    return Table(
        title
        or f"Latent uncertainty: first-order Taylor vs Monte Carlo ({mc.n_samples} draws), B = {mc.mean.shape[0]}",
        ["observable", "mean std (Taylor)", "mean std (MC)", "var Taylor / var MC - 1", "mean shift / std MC"],
        rows,
    )
