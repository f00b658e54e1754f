"""GFLASH electromagnetic shower parameterisation (pure jax.numpy functions).

G. Grindhammer and S. Peters, "The parameterized simulation of electromagnetic showers in homogeneous
and sampling calorimeters", hep-ex/0001020; numbers as in the GFlash model shipped with Geant4
(``GFlashHomoShowerParameterisation`` / ``GFlashSamplingShowerParameterisation``).

Notation: E incident energy [GeV], y = E / Ec, t depth [X0], tau = t / T, r radius [R_M].
All functions broadcast over their array arguments.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jax.scipy.special import gammainc, gammaln

from .materials import Material


class LongitudinalParams(NamedTuple):
    """Means, widths and correlation of (ln T, ln alpha) for one incident energy."""

    mean_log_t: jnp.ndarray
    mean_log_alpha: jnp.ndarray
    sigma_log_t: jnp.ndarray
    sigma_log_alpha: jnp.ndarray
    rho: jnp.ndarray


def _capped_inverse(denominator: jnp.ndarray) -> jnp.ndarray:
    """1/denominator capped at 0.5 as in Geant4 (also where the fit formula's denominator is <= 2)."""
    return jnp.where(denominator > 2.0, 1.0 / jnp.maximum(denominator, 2.0), 0.5)


def longitudinal_params(energy_gev: jnp.ndarray, material: Material) -> LongitudinalParams:
    """Parameters of the per-shower (ln T, ln alpha) bivariate normal at incident energy E [GeV]."""
    ln_y = jnp.log(energy_gev / material.Ec_GeV)
    z = material.Z_eff
    t_hom = jnp.maximum(ln_y - 0.812, 0.3)
    alpha_hom = jnp.maximum(0.81 + (0.458 + 2.26 / z) * ln_y, 0.1)
    if material.homogeneous:
        return LongitudinalParams(
            jnp.log(t_hom),
            jnp.log(alpha_hom),
            _capped_inverse(-1.4 + 1.26 * ln_y),
            _capped_inverse(-0.58 + 0.86 * ln_y),
            0.705 - 0.023 * ln_y,
        )
    t_sam = t_hom - 0.55 / material.F_s - 0.69 * (1.0 - material.e_hat)
    alpha_sam = alpha_hom - 0.476 / material.F_s
    return LongitudinalParams(
        jnp.maximum(jnp.log(jnp.maximum(t_sam, 1e-3)), 0.1),
        jnp.maximum(jnp.log(jnp.maximum(alpha_sam, 1e-3)), 0.1),
        _capped_inverse(-2.5 + 1.25 * ln_y),
        _capped_inverse(-0.82 + 0.79 * ln_y),
        0.784 - 0.023 * ln_y,
    )


def draw_t_alpha(params: LongitudinalParams, u1: jnp.ndarray, u2: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Correlated per-shower depth of maximum T [X0] and shape alpha from standard normals u1, u2.

    ln T = <ln T> + s_T (c1 u1 + c2 u2), ln alpha = <ln alpha> + s_a (c1 u1 - c2 u2) with
    c1 = sqrt((1 + rho)/2), c2 = sqrt((1 - rho)/2); Geant4 keeps T >= 1 and alpha >= 1.1.
    """
    c1 = jnp.sqrt((1.0 + params.rho) / 2.0)
    c2 = jnp.sqrt((1.0 - params.rho) / 2.0)
    t = jnp.exp(params.mean_log_t + params.sigma_log_t * (c1 * u1 + c2 * u2))
    alpha = jnp.exp(params.mean_log_alpha + params.sigma_log_alpha * (c1 * u1 - c2 * u2))
    return jnp.maximum(t, 1.0), jnp.maximum(alpha, 1.1)


def spot_t_alpha(t: jnp.ndarray, alpha: jnp.ndarray, material: Material) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Depth of maximum and shape of the spot (energy-carrier) longitudinal distribution."""
    z = material.Z_eff
    if material.homogeneous:
        return t * (0.698 + 0.00212 * z), alpha * (0.639 + 0.00334 * z)
    return t * (0.813 + 0.0019 * z), alpha * (0.844 + 0.0026 * z)


def gamma_cdf(t: jnp.ndarray, t_max: jnp.ndarray, alpha: jnp.ndarray) -> jnp.ndarray:
    """Cumulative longitudinal profile: fraction of the energy before depth t [X0] for depth of maximum
    T and shape alpha (beta = (alpha - 1) / T); ``t = inf`` gives 1."""
    beta = (alpha - 1.0) / t_max
    return gammainc(alpha, beta * jnp.maximum(t, 0.0))


def gamma_pdf(t: jnp.ndarray, t_max: jnp.ndarray, alpha: jnp.ndarray) -> jnp.ndarray:
    """Longitudinal profile (1/E) dE/dt [1/X0] = (beta t)^(alpha-1) beta exp(-beta t) / Gamma(alpha)."""
    beta = (alpha - 1.0) / t_max
    bt = beta * jnp.maximum(t, 1e-30)
    return jnp.exp((alpha - 1.0) * jnp.log(bt) - bt - gammaln(alpha)) * beta


class RadialParams(NamedTuple):
    """Core radius R_C, tail radius R_T [R_M] and core weight p of the radial profile."""

    r_core: jnp.ndarray
    r_tail: jnp.ndarray
    p_core: jnp.ndarray


def radial_params(tau: jnp.ndarray, energy_gev: jnp.ndarray, material: Material) -> RadialParams:
    """Two-component radial profile parameters at depth tau = t / T for incident energy E [GeV]."""
    z = material.Z_eff
    ln_e = jnp.log(energy_gev)
    z1 = 0.0251 + 0.00319 * ln_e
    z2 = 0.1162 - 0.000381 * z
    k1 = 0.659 - 0.00309 * z
    k2 = 0.645
    k3 = -2.59
    k4 = 0.3585 + 0.0412 * ln_e
    p1 = 2.632 - 0.00094 * z
    p2 = 0.401 + 0.00187 * z
    p3 = 1.313 - 0.0686 * ln_e
    r_core = z1 + z2 * tau
    r_tail = k1 * (jnp.exp(k3 * (tau - k2)) + jnp.exp(k4 * (tau - k2)))
    x = (p2 - tau) / p3
    p_core = p1 * jnp.exp(x - jnp.exp(x))
    if not material.homogeneous:
        one_minus_e = 1.0 - material.e_hat
        inv_fs = 1.0 / material.F_s
        r_core = r_core - 0.0203 * one_minus_e + 0.0397 * inv_fs * jnp.exp(-tau)
        r_tail = r_tail - 0.14 * one_minus_e - 0.495 * inv_fs * jnp.exp(-tau)
        p_core = p_core + one_minus_e * (0.348 - 0.642 * inv_fs * jnp.exp(-((tau - 1.0) ** 2)))
    # Keep the profile a proper density far outside the fitted range.
    return RadialParams(jnp.maximum(r_core, 1e-3), jnp.maximum(r_tail, 1e-3), jnp.clip(p_core, 0.0, 1.0))


def radial_cdf(r: jnp.ndarray, params: RadialParams) -> jnp.ndarray:
    """Fraction of the energy within radius r [R_M]: p r^2/(r^2+R_C^2) + (1-p) r^2/(r^2+R_T^2);
    ``r = inf`` gives 1."""
    r2 = jnp.square(r)
    f_core = r2 / (r2 + jnp.square(params.r_core))
    f_tail = r2 / (r2 + jnp.square(params.r_tail))
    f_core = jnp.where(jnp.isinf(r), 1.0, f_core)
    f_tail = jnp.where(jnp.isinf(r), 1.0, f_tail)
    return params.p_core * f_core + (1.0 - params.p_core) * f_tail


def radial_quantile(u: jnp.ndarray, radius: jnp.ndarray) -> jnp.ndarray:
    """Inverse CDF of one component r^2/(r^2 + R^2): r = R sqrt(u / (1 - u))."""
    return radius * jnp.sqrt(u / (1.0 - u))


def n_spots(energy_gev: jnp.ndarray, material: Material) -> jnp.ndarray:
    """Mean number of spots (energy carriers) of a shower: 10.3/a E^0.959 (sampling, a the material's
    nominal sampling term) or 93 ln(Z) E^0.876 (homogeneous)."""
    if material.homogeneous:
        return 93.0 * jnp.log(material.Z_eff) * energy_gev**0.876
    return 10.3 / material.nominal_sampling_term * energy_gev**0.959
