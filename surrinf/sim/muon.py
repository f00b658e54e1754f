"""Muon spectrometer: the sagitta of a track in a uniform field and a three-station reference spectrometer.

A particle of transverse momentum pT [GeV] and charge q = +-1 in a uniform field B [T] along z moves on a circle
of radius R = pT / (c B) [m] in the bending (x, y) plane, with c = 0.299792458 GeV / (T m) (the "0.3" of the
usual rule of thumb pT = 0.3 B R: pT = e B R with c = 2.99792458e8 m/s exactly). The sagitta of
a chord of length L is

    s_exact = R - sqrt(R^2 - L^2 / 4) = (L^2 / 4) / (R + sqrt(R^2 - L^2 / 4))      (exact circle)
    s       = L^2 / (8 R) = c B L^2 / (8 pT)                                       (small angle)

with s and L in m. The two differ by s_exact / s - 1 = (L / 4R)^2 + O((L / R)^4): 1e-3 at L / R = 0.13, e.g.
pT = 5.8 GeV for B = 0.5 T and L = 5 m; at pT >= 50 GeV it is below 1.5e-5.

:class:`MuonSpectrometer` is the reference simulator. Three measuring stations are planes x = x_1 < x_2 < x_3
with the middle one at the centre (lever arm L = x_3 - x_1); each measures the bending coordinate y of the
track. Conditions are [pT [GeV], charge, phi0 [rad]] (see :data:`MUON_CONDITION_COLUMNS`): phi0 is the angle
between the (unscattered) track and the station normal at the middle station, where the track passes y = 0;
phi0 = 0 (the default) is the symmetric track, for which the noise-free middle-point deviation from the chord is
exactly ``q * exact_sagitta_m(pT, B, L)``. The field points along +z, so a positive track bends towards -y and its
middle hit lies above the chord (positive signed sagitta). For phi0 != 0 the chord is L / cos(phi0) long and the
measured deviation is s / cos^2(phi0) (to O(phi0^2 L / R) relative; 1e-5 for phi0 = 0.05 rad).
Tracks lie in the bending plane (dip angle 0, p = pT).

Geometry is exact: a track with direction phi at (x, y) reaches x + dx at

    y' = y + (2 dx sin(phi) - k dx^2) / (sqrt(1 - (k dx - sin(phi))^2) + cos(phi)),   sin(phi') = sin(phi) - k dx

with signed curvature k = q c B / pT [1/m] (a cancellation-free form of the circle equation; k = 0 is the
straight line). Multiple scattering (optional, ``x_over_x0 > 0``): one thin scatterer of thickness x / X0 in the
middle of each of the two gaps between stations kinks the track direction by a Gaussian angle of width theta_0
from the Highland formula (PDG RPP 2024, "Passage of particles through matter", eq. 34.16; Lynch and Dahl,
NIM B 58 (1991) 6)

    theta_0 = 13.6 MeV / (beta c p) * sqrt(x / X0) * (1 + 0.038 ln(x / (X0 beta^2)))      (z = 1)

(theta_0 is the width of the projected-angle distribution, so one Gaussian kink per scatterer in the bending
plane; the Gaussian describes the central 98%, not the single-scattering tails). Each kink changes the measured
sagitta by -theta L / 8, so multiple scattering adds sigma_s = sqrt(2) theta_0 L / 8, a constant relative
momentum resolution (up to beta and the logarithm). Station resolution adds sigma_s = sigma sqrt(3/2) (middle
hit minus the mean of the outer two), a relative resolution growing linearly with pT. Energy loss is neglected:
the momentum is the same at all three stations. For scale: 0.1 X0 of iron (X0 = 1.757 cm, minimum ionisation
1.451 MeV cm^2/g x 7.874 g/cm^3 = 11.4 MeV/cm; PDG "Atomic and nuclear properties of materials") takes ~ 2 MeV,
negligible against pT >= 10 GeV and the momentum resolution.

Default numbers (ATLAS-barrel-like; ATLAS Collaboration, JINST 3 (2008) S08003, muon-spectrometer chapter): the
barrel stations sit on three cylinders at radii of about 5 m, 7.5 m and 10 m, hence L = 5 m; B = 0.5 T, the
typical barrel-toroid field; then s = 0.47 mm at 1 TeV, matching the design goal quoted there (a sagitta of about
500 um at 1 TeV, measured with a resolution of at most 50 um, for ~10% momentum resolution). The
station resolution 40 um is chosen so that the sagitta resolution sigma sqrt(3/2) = 49 um meets that design
figure. Multiple scattering is off by default (``x_over_x0 = 0``): the material between the ATLAS stations is
not a single number, so the user sets it.

All geometry runs in float64 (``jax.enable_x64`` is entered locally); track i draws its random numbers from
``jax.random.fold_in(key, i)``, so a track depends only on the key, its index and its conditions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._precision import float64
from .bethe_bloch import MUON_MASS_MEV

__all__ = [
    "C_GEV_PER_T_M",
    "MUON_CONDITION_COLUMNS",
    "MuonSpectrometer",
    "exact_sagitta_m",
    "highland_theta0",
    "measure_sagitta",
    "pt_from_sagitta_gev",
    "sagitta_m",
    "split_conditions",
]

#: pT [GeV] = C B [T] R [m]: the speed of light in units of 1e9 m/s (exact, SI definition of c).
C_GEV_PER_T_M = 0.299792458
#: Column meaning of a muon conditions array (N, k), k = 1..3: transverse momentum [GeV], charge (+-1),
#: track angle to the station normal at the middle station [rad]; missing columns default to charge +1, phi0 0.
MUON_CONDITION_COLUMNS = ("pt_gev", "charge", "phi0_rad")
#: Highland constants (PDG eq. 34.16): 13.6 MeV and the logarithmic-term coefficient.
_HIGHLAND_MEV, _HIGHLAND_LOG = 13.6, 0.038


def _concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_positive(name: str, value: Any, unit: str) -> None:
    """ValueError naming ``name`` unless every entry of a concrete ``value`` is finite and > 0."""
    if not _concrete(value):
        return
    v = np.asarray(value, dtype=np.float64)
    if v.size == 0 or not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise ValueError(f"{name} must be finite and > 0 [{unit}], got {value!r}")


def sagitta_m(pt_gev: Any, b_tesla: Any, length_m: Any) -> Any:
    """Small-angle sagitta s = c B L^2 / (8 pT) [m] of a chord of length ``length_m`` [m] of a track of transverse
    momentum ``pt_gev`` [GeV] in a field ``b_tesla`` [T] (c = :data:`C_GEV_PER_T_M`). Broadcasts; jit-able (the
    range checks run on concrete inputs)."""
    for name, v, unit in (("pt_gev", pt_gev, "GeV"), ("b_tesla", b_tesla, "T"), ("length_m", length_m, "m")):
        _check_positive(name, v, unit)
    xp = _xp(pt_gev, b_tesla, length_m)
    pt, b, length = (xp.asarray(v, dtype=np.float64) if xp is np else v for v in (pt_gev, b_tesla, length_m))
    return C_GEV_PER_T_M * b * length * length / (8.0 * pt)


def _xp(*xs: Any) -> Any:
    """numpy when every input is a plain number or numpy array (float64 results), else jax.numpy."""
    plain = all(isinstance(x, (int, float, np.ndarray, np.number, list, tuple)) for x in xs)
    return np if plain else jnp


def exact_sagitta_m(pt_gev: Any, b_tesla: Any, length_m: Any) -> Any:
    """Exact circle sagitta R - sqrt(R^2 - L^2/4) [m], R = pT / (c B), evaluated without cancellation as
    (L^2/4) / (R + sqrt(R^2 - L^2/4)). Needs R >= L/2 (the chord must fit in the circle): ValueError otherwise
    on concrete inputs. Exceeds :func:`sagitta_m` by the factor 1 + (L/4R)^2 + O((L/R)^4)."""
    for name, v, unit in (("pt_gev", pt_gev, "GeV"), ("b_tesla", b_tesla, "T"), ("length_m", length_m, "m")):
        _check_positive(name, v, unit)
    xp = _xp(pt_gev, b_tesla, length_m)
    pt, b, length = (xp.asarray(v, dtype=np.float64) if xp is np else v for v in (pt_gev, b_tesla, length_m))
    radius = pt / (C_GEV_PER_T_M * b)
    if xp is np and np.any(radius < 0.5 * length):
        raise ValueError(
            f"pt_gev too low for the chord: the radius pT / (c B) = {np.min(radius):.4g} m is below length_m / 2"
        )
    half = 0.5 * length
    return half * half / (radius + xp.sqrt(xp.maximum(radius * radius - half * half, 0.0)))


def pt_from_sagitta_gev(sagitta: Any, b_tesla: Any, length_m: Any, exact: bool = False) -> Any:
    """Inverse of :func:`sagitta_m`: pT = c B L^2 / (8 s) [GeV] from the sagitta ``sagitta`` [m] (> 0; fold in
    the charge first). ``exact=True`` inverts :func:`exact_sagitta_m` instead: R = (s^2 + L^2/4) / (2 s)."""
    for name, v, unit in (("sagitta", sagitta, "m"), ("b_tesla", b_tesla, "T"), ("length_m", length_m, "m")):
        _check_positive(name, v, unit)
    xp = _xp(sagitta, b_tesla, length_m)
    s, b, length = (xp.asarray(v, dtype=np.float64) if xp is np else v for v in (sagitta, b_tesla, length_m))
    if exact:
        return C_GEV_PER_T_M * b * (s * s + 0.25 * length * length) / (2.0 * s)
    return C_GEV_PER_T_M * b * length * length / (8.0 * s)


def highland_theta0(p_gev: Any, x_over_x0: Any, mass_gev: float = MUON_MASS_MEV / 1000.0) -> Any:
    """Highland width theta_0 [rad] of the projected multiple-scattering angle (PDG eq. 34.16, charge 1) for
    momentum ``p_gev`` [GeV], thickness ``x_over_x0`` [radiation lengths, > 0] and ``mass_gev`` (default muon)."""
    _check_positive("p_gev", p_gev, "GeV")
    _check_positive("x_over_x0", x_over_x0, "radiation lengths")
    xp = _xp(p_gev, x_over_x0)
    p = xp.asarray(p_gev, dtype=np.float64) if xp is np else p_gev
    beta = p / xp.sqrt(p * p + mass_gev * mass_gev)
    t = x_over_x0
    return _HIGHLAND_MEV * 1e-3 / (beta * p) * xp.sqrt(t) * (1.0 + _HIGHLAND_LOG * xp.log(t / (beta * beta)))


# ------------------------------------------------------------------------------------------------ geometry


def _propagate(y: jax.Array, sin_phi: jax.Array, dx: float, k: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Exact circle step: track at y with direction sin(phi) (cos > 0) moved by dx along x -> (y', sin(phi'))."""
    cos_phi = jnp.sqrt(1.0 - sin_phi * sin_phi)
    y_new = y + (2.0 * dx * sin_phi - k * dx * dx) / (jnp.sqrt(1.0 - jnp.square(k * dx - sin_phi)) + cos_phi)
    return y_new, sin_phi - k * dx


def _kink(sin_phi: jax.Array, theta: jax.Array) -> jax.Array:
    return jnp.sin(jnp.arcsin(sin_phi) + theta)


@jax.jit
def _simulate(key, pt, k, phi0, stations, sigma_m, x_over_x0, mass_gev):
    """(N,) pT [GeV], signed curvature k [1/m], phi0 [rad] -> (N, 3) hits y [m] (float64)."""
    x1, x2, x3 = stations[0], stations[1], stations[2]
    # nominal state at the first station (track through y = 0 with direction phi0 at the middle station)
    sin_mid = jnp.sin(phi0)
    y1, sin1 = _propagate(jnp.zeros_like(pt), sin_mid, x1 - x2, k)
    p1, p2 = 0.5 * (x1 + x2), 0.5 * (x2 + x3)
    use_ms = x_over_x0 > 0
    theta0 = jnp.where(use_ms, highland_theta0(pt, jnp.where(use_ms, x_over_x0, 1.0), mass_gev), 0.0)
    draws = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (5,), dtype=jnp.float64))(
        jnp.arange(pt.shape[0], dtype=jnp.uint32)
    )
    y, s = _propagate(y1, sin1, p1 - x1, k)
    s = _kink(s, theta0 * draws[:, 3])
    y2, s = _propagate(y, s, x2 - p1, k)
    y, s = _propagate(y2, s, p2 - x2, k)
    s = _kink(s, theta0 * draws[:, 4])
    y3, _ = _propagate(y, s, x3 - p2, k)
    return jnp.stack([y1, y2, y3], axis=1) + sigma_m * draws[:, :3]


@jax.jit
def _deviation(hits, stations):
    x1, x2, x3 = stations[0], stations[1], stations[2]
    y1, y2, y3 = hits[:, 0], hits[:, 1], hits[:, 2]
    dx, dy = x3 - x1, y3 - y1
    return (dx * (y2 - y1) - dy * (x2 - x1)) / jnp.sqrt(dx * dx + dy * dy)


def _check_stations(stations_m: Any) -> np.ndarray:
    st = np.asarray(stations_m, dtype=np.float64)
    if st.shape != (3,) or not np.all(np.isfinite(st)) or not (st[0] < st[1] < st[2]):
        raise ValueError(f"stations_m must be 3 increasing finite positions [m], got {stations_m!r}")
    return st


def _check_hits(hits_m: Any) -> np.ndarray:
    h = np.asarray(hits_m, dtype=np.float64)
    if h.ndim != 2 or h.shape[1] != 3:
        raise ValueError(f"hits_m must have shape (N, 3) (bending coordinate [m] at the three stations), got {h.shape}")
    if not np.all(np.isfinite(h)):
        raise ValueError("hits_m must be finite")
    return h


def _check_charge(charge: Any, n: int) -> np.ndarray:
    q = np.asarray(charge, dtype=np.float64)
    if q.ndim == 0:
        q = np.full(n, float(q))
    if q.shape != (n,):
        raise ValueError(f"charge must be a scalar or have shape ({n},), got {q.shape}")
    if not np.all(np.abs(q) == 1.0):
        raise ValueError("charge must be +1 or -1 (muon charge in units of e)")
    return q


@float64
def measure_sagitta(hits_m: Any, stations_m: Any, charge: Any | None = None) -> np.ndarray:
    """Signed sagitta [m] (N,) from hits (N, 3) [m] at stations x = ``stations_m`` (3,) [m].

    The perpendicular distance of the middle hit from the chord through the outer two (exact geometry), positive
    when the middle hit lies on the +y side of the chord (travelling towards +x): a positive track in B along +z.
    With ``charge`` (scalar or (N,), +-1) the result is multiplied by it: the charge-folded sagitta, positive on
    average for every true charge and equal to the unsigned sagitta of a noise-free track."""
    h = _check_hits(hits_m)
    st = _check_stations(stations_m)
    d = np.asarray(_deviation(jnp.asarray(h), jnp.asarray(st)))
    return d if charge is None else d * _check_charge(charge, h.shape[0])


def split_conditions(conditions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Conditions (N,) or (N, k), k = 1..3, columns :data:`MUON_CONDITION_COLUMNS` -> float64 (pT, charge, phi0),
    each (N,), with the defaults charge +1 and phi0 0; ValueError naming the bad column."""
    c = np.asarray(conditions, dtype=np.float64)
    if c.ndim == 1:
        c = c[:, None]
    if c.ndim != 2 or not (1 <= c.shape[1] <= 3) or c.shape[0] == 0:
        raise ValueError(
            f"conditions must have shape (N,) or (N, k), k = 1..3 [pT GeV, charge, phi0 rad], got {c.shape}"
        )
    pt = c[:, 0]
    if not np.all(np.isfinite(pt)) or np.any(pt <= 0):
        raise ValueError("conditions column 0 (pt_gev) must be finite and > 0 [GeV]")
    q = c[:, 1] if c.shape[1] > 1 else np.ones_like(pt)
    if not np.all(np.abs(q) == 1.0):
        raise ValueError("conditions column 1 (charge) must be +1 or -1")
    phi0 = c[:, 2] if c.shape[1] > 2 else np.zeros_like(pt)
    if not np.all(np.isfinite(phi0)) or np.any(np.abs(phi0) >= 0.5 * math.pi):
        raise ValueError("conditions column 2 (phi0_rad) must be finite with |phi0| < pi/2 [rad]")
    return pt, q, phi0


@dataclass(frozen=True)
class MuonSpectrometer:
    """Three-station reference spectrometer in a uniform field along z; see the module docstring.

    b_tesla: field [T]; first_station_m: position of the first station [m]; length_m: lever arm L [m] (stations at
    first, first + L/2, first + L); sigma_m: per-station hit resolution [m] (Gaussian; 0 = perfect);
    x_over_x0: thickness of each of the two scatterers (one per gap) [radiation lengths] (0 = no multiple
    scattering); mass_gev: particle mass for beta in the Highland formula (default the muon, PDG 2024).
    Implements the response-model protocol: ``sample(key, conditions) -> hits (N, 3)`` [m]."""

    b_tesla: float = 0.5
    first_station_m: float = 5.0
    length_m: float = 5.0
    sigma_m: float = 40e-6
    x_over_x0: float = 0.0
    mass_gev: float = MUON_MASS_MEV / 1000.0

    def __post_init__(self) -> None:
        for name, unit in (("b_tesla", "T"), ("length_m", "m"), ("mass_gev", "GeV")):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise ValueError(f"{name} must be a number > 0 [{unit}], got {v!r}")
            _check_positive(name, v, unit)
        for name, unit in (("sigma_m", "m"), ("x_over_x0", "radiation lengths")):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise ValueError(f"{name} must be a number >= 0 [{unit}], got {v!r}")
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be finite and >= 0 [{unit}], got {v!r}")
        if not math.isfinite(self.first_station_m):
            raise ValueError(f"first_station_m must be finite [m], got {self.first_station_m!r}")

    @property
    def stations_m(self) -> np.ndarray:
        """Station positions x_1, x_2, x_3 [m], (3,)."""
        return self.first_station_m + self.length_m * np.array([0.0, 0.5, 1.0])

    @property
    def sagitta_slope_gev_m(self) -> float:
        """b = c B L^2 / 8 [GeV m]: the sagitta is b / pT."""
        return C_GEV_PER_T_M * self.b_tesla * self.length_m**2 / 8.0

    def sagitta_m(self, pt_gev: Any) -> Any:
        """Small-angle sagitta [m] at ``pt_gev`` [GeV]."""
        return sagitta_m(pt_gev, self.b_tesla, self.length_m)

    def expected_resolution(self, pt_gev: Any) -> tuple[np.ndarray, np.ndarray]:
        """(resolution term, multiple-scattering term) of sigma(pT)/pT at ``pt_gev`` [GeV] to first order:
        sigma sqrt(3/2) pT / b and sqrt(2) theta_0(pT) L / 8 * pT / b; the total is their quadrature sum."""
        pt = np.asarray(pt_gev, dtype=np.float64)
        _check_positive("pt_gev", pt, "GeV")
        b = self.sagitta_slope_gev_m
        res = self.sigma_m * math.sqrt(1.5) * pt / b
        ms = np.zeros_like(pt)
        if self.x_over_x0 > 0:
            ms = math.sqrt(2.0) * highland_theta0(pt, self.x_over_x0, self.mass_gev) * self.length_m / 8.0 * pt / b
        return res, ms

    @float64
    def sample(self, key: jax.Array, conditions: Any) -> jax.Array:
        """Hits (N, 3) [m, float64]: bending coordinate y at the three stations for conditions (N,) or (N, k)
        [pT GeV, charge, phi0 rad] (defaults charge +1, phi0 0), with resolution and multiple scattering."""
        pt, q, phi0 = split_conditions(conditions)
        k = q * C_GEV_PER_T_M * self.b_tesla / pt
        # the track must cross all three stations moving forward: |sin(phi)| < 1 from station 1 to station 3
        half = 0.5 * self.length_m
        reach = np.abs(np.sin(phi0)) + np.abs(k) * half
        if np.any(reach >= 1.0):
            raise ValueError(
                "conditions: pt_gev too low (or |phi0| too large) for the track to cross all stations; need "
                f"|sin(phi0)| + c B (L/2) / pT < 1, got up to {reach.max():.3g}"
            )
        return _simulate(
            key,
            jnp.asarray(pt),
            jnp.asarray(k),
            jnp.asarray(phi0),
            jnp.asarray(self.stations_m),
            jnp.asarray(self.sigma_m, dtype=jnp.float64),
            jnp.asarray(self.x_over_x0, dtype=jnp.float64),
            jnp.asarray(self.mass_gev, dtype=jnp.float64),
        )

    def measure_sagitta(self, hits_m: Any, charge: Any | None = None) -> np.ndarray:
        """:func:`measure_sagitta` at this spectrometer's stations."""
        return measure_sagitta(hits_m, self.stations_m, charge)
