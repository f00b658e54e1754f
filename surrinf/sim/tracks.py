"""Reference track-hit simulator: ionisation deposits of a charged particle in a stack of silicon sensors.

A particle of beta gamma = p / M crosses ``n_layers`` planar sensors of thickness t (default 300 um of silicon,
a pixel / strip tracker) at normal incidence. In each layer it deposits an energy Delta drawn from the Landau
straggling distribution whose most probable value and width are those of the PDG ("Passage of particles
through matter", eqs. 34.11-34.12; :func:`~surrinf.sim.bethe_bloch.most_probable_loss`)::

    Delta = Delta_p + xi (lambda - lambda_p),   lambda ~ standard Landau (CERNLIB/ROOT form), lambda_p = -0.22278

    Delta_p = xi [ ln(2 m c^2 beta^2 gamma^2 / I) + ln(xi / I) + j - beta^2 - delta(beta gamma) ],  j = 0.200
    xi = (K/2) <Z/A> z^2 rho t / beta^2

The standard Landau density (1/pi) int_0^inf exp(-u ln u - lambda u) sin(pi u) du peaks at lambda_p = -0.22278
and has a FWHM of 4.018, so the deposits have their mode at Delta_p and a FWHM of 4.02 xi, the PDG's w ~ 4 xi.
Why Landau: it is the thin-absorber limit of Vavilov's distribution for kappa = xi / W_max -> 0 (kappa < 0.01 for a
muon above beta gamma ~ 1 in 300 um Si) and, with the PDG's Delta_p (which carries the density effect and the
j term of Bichsel's fits), it is the standard "Landau-Vavilov-Bichsel" description. A Moyal distribution would
have the same mode but a too light tail (exp(-e^-x) on both sides), which is exactly what a truncated mean
estimator is sensitive to. Known limitation (PDG): for silicon this thin the measured distribution is somewhat
wider than Landau's (atomic-shell structure, Bichsel); not modelled.

Sampling: lambda is drawn exactly by the Chambers-Mallows-Stuck transform of a uniform and an exponential
variate (a Landau law is the totally skewed alpha = 1 stable law; Chambers, Mallows & Stuck, JASA 71 (1976) 340;
the CMS variate X has characteristic function exp(-|t| - (2i/pi) t ln|t|), and lambda = (pi/2) X + ln(pi/2)).
The pure Landau law has no mean (a 1/Delta^2 tail, cut in nature at W_max per collision); the estimators below
therefore use truncated means or medians.

Energy loss along the track is neglected: each layer sees the incident beta gamma. n_layers t <dE/dx> is 1.9
MeV for a minimum-ionising particle in 8 x 300 um of Si, small against the kinetic energy above beta gamma ~ 1
for muons (4 % at beta gamma = 1) and below that for heavier particles; the simulator is not meant for tracks
that range out.

Units: momenta and masses in GeV (conditions), deposits in keV (the natural unit of silicon sensors: a minimum
ionising particle leaves ~80 keV in 300 um), dE/dx estimators in keV/um or MeV cm^2/g.
"""

from __future__ import annotations

import math
from functools import lru_cache, partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .bethe_bloch import IonisationMedium, get_ionisation_medium, landau_xi, most_probable_loss

__all__ = [
    "LANDAU_FWHM",
    "LANDAU_MODE",
    "TrackHitSimulator",
    "expected_truncated_mean",
    "landau_standard",
    "truncated_mean",
]

#: Mode of the standard Landau density phi(lambda) (CERNLIB G110 / ROOT TMath::Landau convention:
#: "the most probable value is at lambda = -0.22278298").
LANDAU_MODE = -0.22278298
#: FWHM of the standard Landau density (PDG: w = 4.018 xi; the "w ~ 4 xi" of the brief).
LANDAU_FWHM = 4.018
#: Default fraction of the lowest hits kept by the truncated mean (ALICE TPC and ATLAS pixel practice: 60-70 %).
TRUNCATION_FRACTION = 0.7

_LN_HALF_PI = math.log(0.5 * math.pi)


def landau_standard(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """Standard Landau variates lambda (CERNLIB form: mode -0.22278, FWHM 4.018) by Chambers-Mallows-Stuck.

    X = (2/pi) [ (pi/2 + U) tan U - ln( (pi/2) W cos U / (pi/2 + U) ) ], U ~ U(-pi/2, pi/2), W ~ Exp(1) is the
    totally skewed alpha = 1 stable variate of scale 1; lambda = (pi/2) X + ln(pi/2). Same key -> same bits."""
    ku, kw = jax.random.split(key)
    half_pi = 0.5 * math.pi
    # keep U off the endpoints by one ulp so that tan and the logarithm stay finite
    eps = float(jnp.finfo(dtype).eps)
    u = jax.random.uniform(ku, shape, dtype, minval=-half_pi * (1 - eps), maxval=half_pi * (1 - eps))
    w = jax.random.exponential(kw, shape, dtype)
    a = half_pi + u
    x = (a * jnp.tan(u) - jnp.log(half_pi * w * jnp.cos(u) / a)) / half_pi
    return half_pi * x + _LN_HALF_PI


def _check_fraction(fraction: float, n: int) -> int:
    """Number of kept hits round(fraction * n), at least 1, below n (ValueError otherwise)."""
    if not (isinstance(fraction, (int, float)) and 0.0 < float(fraction) < 1.0):
        raise ValueError(f"fraction: must be a number in (0, 1), got {fraction!r}")
    k = max(1, round(float(fraction) * n))
    if k >= n:
        raise ValueError(
            f"fraction: {fraction} of {n} hits keeps all of them; the mean of Landau hits is dominated by the "
            "tail, drop at least one (n_layers >= 2 and fraction < (n - 0.5) / n)"
        )
    return k


def truncated_mean(deposits, fraction: float = TRUNCATION_FRACTION):
    """Mean of the lowest round(fraction * n) of each track's n hits: deposits (..., n) -> (...,).

    Works on NumPy (float64 result) and JAX arrays (differentiable through the sort)."""
    n = int(np.shape(deposits)[-1])
    k = _check_fraction(fraction, n)
    if isinstance(deposits, jax.Array) or isinstance(deposits, jax.core.Tracer):
        return jnp.mean(jnp.sort(deposits, axis=-1)[..., :k], axis=-1)
    d = np.asarray(deposits, dtype=np.float64)
    return np.sort(d, axis=-1)[..., :k].mean(axis=-1)


@lru_cache(maxsize=64)
def _landau_truncated_constant(n: int, k: int) -> float:
    """E[mean of the k lowest of n standard Landau variates] - LANDAU_MODE (CERNLIB form).

    E[X_(j)] = int_0^1 Q(u) Beta(u; j, n - j + 1) du with Q the Landau quantile function (scipy.stats.landau,
    scale-1 form, converted), integrated on a Gauss-Legendre grid in u refined towards both ends. Finite for
    k < n (the top order statistic of a Landau sample has no mean)."""
    from scipy import special, stats

    # composite Gauss-Legendre on [0, 1] in a logit-like variable to resolve both tails
    t, wt = np.polynomial.legendre.leggauss(400)
    s = 12.0 * t  # logit(u) in [-12, 12]
    u = special.expit(s)
    du = 12.0 * wt * u * (1.0 - u)
    q = 0.5 * math.pi * stats.landau.ppf(u) + _LN_HALF_PI
    total = 0.0
    for j in range(1, k + 1):
        dens = stats.beta.pdf(u, j, n - j + 1)
        total += float(np.sum(q * dens * du))
    return total / k - LANDAU_MODE


def expected_truncated_mean(
    beta_gamma,
    n_layers: int,
    thickness_um: float = 300.0,
    medium: str | IonisationMedium = "Si",
    fraction: float = TRUNCATION_FRACTION,
    charge: float = 1.0,
) -> np.ndarray:
    """Expected truncated mean [keV] of ``n_layers`` Landau hits: Delta_p + xi * c(n, k) (float64, (N,)).

    The Bethe-Bloch reference prediction for the estimator :func:`truncated_mean` under the straggling model of
    :class:`TrackHitSimulator`: Delta_p and xi from the PDG (:func:`~surrinf.sim.bethe_bloch.most_probable_loss`),
    c(n, k) the expected mean of the k lowest of n standard Landau order statistics above the mode (numerical
    integral, cached)."""
    k = _check_fraction(fraction, int(n_layers))
    t_cm = float(thickness_um) * 1e-4
    mpv = most_probable_loss(beta_gamma, t_cm, medium, charge)
    xi = landau_xi(beta_gamma, t_cm, medium, charge)
    return 1e3 * (mpv + xi * _landau_truncated_constant(int(n_layers), k))


@partial(jax.jit, static_argnames=("n_layers",))
def _deposits(key: jax.Array, mpv_kev: jax.Array, xi_kev: jax.Array, n_layers: int) -> jax.Array:
    lam = landau_standard(key, (mpv_kev.shape[0], n_layers))
    d = mpv_kev[:, None] + xi_kev[:, None] * (lam - LANDAU_MODE)
    # the Landau left tail is exp(-e^-lambda): Delta < Delta_p - 4 xi is never reached in float32 draws, but a
    # deposit is a positive energy whatever the draw
    return jnp.maximum(d, 1e-6 * mpv_kev[:, None])


class TrackHitSimulator(eqx.Module):
    """Per-layer ionisation deposits [keV] of charged tracks crossing ``n_layers`` sensors (see module docstring).

    Attributes:
        n_layers: number of sensor layers crossed (>= 2).
        thickness_um: sensor thickness [um] (> 0; default 300).
        medium: the sensor material (an :class:`IonisationMedium` or a name of
            :data:`~surrinf.sim.bethe_bloch.IONISATION_MEDIA`; default silicon).
        charge: the particle's charge z [e] (non-zero).
    """

    n_layers: int = eqx.field(static=True, default=8)
    thickness_um: float = eqx.field(static=True, default=300.0)
    medium: IonisationMedium = eqx.field(static=True, default="Si", converter=get_ionisation_medium)
    charge: float = eqx.field(static=True, default=1.0)

    def __check_init__(self):
        if isinstance(self.n_layers, bool) or not isinstance(self.n_layers, int) or self.n_layers < 2:
            raise ValueError(f"n_layers: must be an integer >= 2, got {self.n_layers!r}")
        if not (math.isfinite(self.thickness_um) and self.thickness_um > 0):
            raise ValueError(f"thickness_um: must be finite and > 0 [um], got {self.thickness_um!r}")
        if not math.isfinite(self.charge) or self.charge == 0:
            raise ValueError(f"charge: must be finite and non-zero [e], got {self.charge!r}")

    @property
    def thickness_cm(self) -> float:
        return self.thickness_um * 1e-4

    def landau_parameters(self, beta_gamma) -> tuple[np.ndarray, np.ndarray]:
        """(Delta_p, xi) [keV] per layer for beta gamma (N,) (float64)."""
        bg = _check_beta_gamma(beta_gamma)
        mpv = most_probable_loss(bg, self.thickness_cm, self.medium, self.charge)
        xi = landau_xi(bg, self.thickness_cm, self.medium, self.charge)
        return 1e3 * mpv, 1e3 * xi

    def deposits(self, key: jax.Array, beta_gamma) -> np.ndarray:
        """Deposits (N, n_layers) [keV, float32] for tracks of beta gamma (N,) (> 0). Same key -> same bits."""
        mpv, xi = self.landau_parameters(beta_gamma)
        return np.asarray(_deposits(key, jnp.asarray(mpv, jnp.float32), jnp.asarray(xi, jnp.float32), self.n_layers))

    def sample(self, key: jax.Array, conditions) -> np.ndarray:
        """Response-model protocol: conditions (N, 2) with columns [p [GeV/c], mass [GeV]] -> deposits (N, n_layers)
        [keV]. beta gamma = p / mass; the straggling model depends on nothing else."""
        c = np.asarray(conditions, dtype=np.float64)
        if c.ndim != 2 or c.shape[1] != 2:
            raise ValueError(f"conditions: must have shape (N, 2) = [p [GeV/c], mass [GeV]], got {c.shape}")
        if not np.all(np.isfinite(c)) or np.any(c <= 0):
            raise ValueError("conditions: momentum [GeV/c] and mass [GeV] must be finite and > 0")
        return self.deposits(key, c[:, 0] / c[:, 1])

    def dedx(self, deposits_kev, fraction: float = TRUNCATION_FRACTION, unit: str = "MeV cm2/g") -> np.ndarray:
        """Truncated-mean dE/dx per track (N,) from deposits (N, n_layers) [keV]: ``unit`` "MeV cm2/g" (divided
        by rho t) or "keV/um"."""
        tm = truncated_mean(np.asarray(deposits_kev, dtype=np.float64), fraction)
        if unit == "keV/um":
            return tm / self.thickness_um
        if unit == "MeV cm2/g":
            return 1e-3 * tm / (self.medium.density * self.thickness_cm)
        raise ValueError(f"unit: must be 'MeV cm2/g' or 'keV/um', got {unit!r}")

    def expected_dedx(self, beta_gamma, fraction: float = TRUNCATION_FRACTION, unit: str = "MeV cm2/g") -> np.ndarray:
        """The Bethe-Bloch (PDG Delta_p, xi) prediction of :meth:`dedx`'s expectation at beta gamma (N,)."""
        tm = expected_truncated_mean(
            _check_beta_gamma(beta_gamma), self.n_layers, self.thickness_um, self.medium, fraction, self.charge
        )
        if unit == "keV/um":
            return tm / self.thickness_um
        if unit == "MeV cm2/g":
            return 1e-3 * tm / (self.medium.density * self.thickness_cm)
        raise ValueError(f"unit: must be 'MeV cm2/g' or 'keV/um', got {unit!r}")


def _check_beta_gamma(beta_gamma) -> np.ndarray:
    bg = np.asarray(beta_gamma, dtype=np.float64)
    if bg.ndim != 1 or bg.size == 0:
        raise ValueError(f"beta_gamma: must be a non-empty 1-D array (N,), got shape {bg.shape}")
    if not np.all(np.isfinite(bg)) or np.any(bg <= 0):
        raise ValueError("beta_gamma: must be finite and > 0")
    return bg
