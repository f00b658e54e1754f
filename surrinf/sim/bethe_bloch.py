"""Mean ionisation energy loss of a heavy charged particle: the Bethe-Bloch formula in its PDG form.

PDG Review of Particle Physics, "Passage of particles through matter" (eq. 34.5 in recent editions)::

    -<dE/dx> = K z^2 (Z/A) (1/beta^2) [ 1/2 ln(2 m_e c^2 beta^2 gamma^2 W_max / I^2) - beta^2 - delta(beta gamma)/2 ]

in MeV cm^2/g, with K = 4 pi N_A r_e^2 m_e c^2 = 0.307075 MeV mol^-1 cm^2 and the maximum energy transfer to a
free electron in one collision (PDG, same section)::

    W_max = 2 m_e c^2 beta^2 gamma^2 / (1 + 2 gamma m_e/M + (m_e/M)^2).

The density-effect correction delta follows Sternheimer's parameterisation (PDG eq. 34.7), with
x = log10(beta gamma)::

    delta = 2 ln10 x - C_bar                          x >= x1
    delta = 2 ln10 x - C_bar + a (x1 - x)^k           x0 <= x < x1
    delta = delta0 10^(2 (x - x0))                    x < x0  (delta0 = 0 for insulators)

Validity: about 0.1 < beta gamma < 1000 for muons and pions (the PDG's own statement of the formula's range of
validity to a few %). Below, shell corrections and the Barkas and Bloch (z^3, z^4) terms matter; above, radiative
losses take over (muon critical energy of a few hundred GeV) and W_max approaches the incident energy. None of
these corrections is included here: no shell correction, no Barkas or Bloch term, no radiative losses.

Medium constants are those of the PDG "Atomic and nuclear properties of materials" pages
(https://pdg.lbl.gov/AtomicNuclearProperties/), whose density-effect parameters are those of Sternheimer, Berger &
Seltzer, "Density effect for the ionization loss of charged particles in various substances", Atomic Data and
Nuclear Data Tables 30 (1984) 261, except where a page notes otherwise (see :data:`IONISATION_MEDIA`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

#: K = 4 pi N_A r_e^2 m_e c^2 [MeV mol^-1 cm^2] (PDG table 34.1).
K_MEV_CM2_PER_MOL = 0.307075
#: Electron mass m_e c^2 [MeV] (CODATA 2018, PDG).
ELECTRON_MASS_MEV = 0.51099895
#: Muon mass [MeV/c^2] (PDG 2024).
MUON_MASS_MEV = 105.6583755
#: Charged-pion mass [MeV/c^2] (PDG 2024).
PION_MASS_MEV = 139.57039
#: Proton mass [MeV/c^2] (PDG 2024).
PROTON_MASS_MEV = 938.27208816

_LN10 = math.log(10.0)


@dataclass(frozen=True)
class IonisationMedium:
    """A medium for the Bethe-Bloch mean energy loss.

    Attributes:
        name: identifier (a key of :data:`IONISATION_MEDIA`).
        Z_over_A: <Z/A> [mol/g].
        I_eV: mean excitation energy I [eV].
        density: [g/cm^3].
        C_bar, x0, x1, a, k, delta0: Sternheimer density-effect parameters (C_bar is the PDG's "-C", a positive
            number; delta0 = 0 for insulators and gases).
    """

    name: str
    Z_over_A: float
    I_eV: float
    density: float
    C_bar: float
    x0: float
    x1: float
    a: float
    k: float
    delta0: float


# Each row: Z/A, I, density and the Sternheimer parameters (a, k, x0, x1, I, C_bar, delta0) as printed in the
# "Sternheimer coef:" header line of the PDG muon energy-loss table of the material (Groom, Mokhov & Striganov,
# ADNDT 78 (2001) 183, as updated on https://pdg.lbl.gov/<year>/AtomicNuclearProperties/MUE/muE_<material>.txt;
# the PDG takes the parameters of the elements from Sternheimer, Berger & Seltzer, ADNDT 30 (1984) 261). The
# header lines used here were read from copies quoted verbatim in public code (PDG editions 2020-2026), not from
# the PDG server itself (no network in the session that checked them):
#   silicon_Si      0.1492  3.2546  0.2015  2.8716  173.0  4.4355  0.14
#   iron_Fe         0.1468  2.9632 -0.0012  3.1531  286.0  4.2911  0.12
#   liquid_argon    0.1956  3.0000  0.2000  3.0000  188.0  5.2146  0.00
#   water_liquid    0.0912  3.4773  0.2400  2.8004   79.7  3.5017  0.00
# The five-digit a of Si (0.14921), Fe (0.14680), LAr (0.19559) and H2O (0.09116) are Sternheimer 1984's (Geant4's
# copy of that table, G4DensityEffectData.cc, has Si 0.14921, Ar 0.19714, Pb 0.09359 and - truncated - Fe 0.146).
# Independent check (tests/test_bethe_bloch.py): Sternheimer's fits are continuous at x0, delta(x0) = delta0;
# with a = 0.14680 iron gives delta(x0) = 0.1198 (delta0 = 0.12), with Geant4's 0.146 it would give 0.096.
# Pb and argon gas are the Sternheimer 1984 rows (Pb: I = 823 eV, the PDG lead page's value). The comment is
# the PDG minimum ionisation [MeV cm^2/g] used by tests/test_bethe_bloch.py (within 2 %). * 1.519 is the
# argon-gas value; the formula gives 1.507 for the liquid, whose density effect already acts at the minimum.
SILICON = IonisationMedium("Si", 0.49848, 173.0, 2.329, 4.4355, 0.2015, 2.8716, 0.14921, 3.2546, 0.14)  # 1.664
LIQUID_ARGON = IonisationMedium("LAr", 0.45059, 188.0, 1.396, 5.2146, 0.2000, 3.0000, 0.19559, 3.0000, 0.0)  # 1.519 *
IRON = IonisationMedium("Fe", 0.46557, 286.0, 7.874, 4.2911, -0.0012, 3.1531, 0.14680, 2.9632, 0.12)  # 1.451
LEAD = IonisationMedium("Pb", 0.39575, 823.0, 11.35, 6.2018, 0.3776, 3.8073, 0.09359, 3.1608, 0.14)  # 1.122
# Liquid water: I = 79.7 eV, the value of the PDG muon table's header (the 1984 parameters were fitted for 75 eV,
# with which the PDG keeps them). With 79.7 eV the minimum is 1.979, 0.65 % below the PDG page's 1.992 (1.990
# with 75 eV): the PDG minimum may still be quoted for the older I; both are within the 2 % of the test.
WATER = IonisationMedium("H2O", 0.55509, 79.7, 1.000, 3.5017, 0.2400, 2.8004, 0.09116, 3.4773, 0.0)  # 1.992
# Argon gas at 20 C, 1 atm.
ARGON_GAS = IonisationMedium("Ar", 0.45059, 188.0, 1.662e-3, 11.9480, 1.7635, 4.4855, 0.19714, 2.9618, 0.0)  # 1.519

#: The media by name.
IONISATION_MEDIA: dict[str, IonisationMedium] = {
    m.name: m for m in (SILICON, LIQUID_ARGON, IRON, LEAD, WATER, ARGON_GAS)
}


def get_ionisation_medium(medium: str | IonisationMedium) -> IonisationMedium:
    """The medium itself, or the one of :data:`IONISATION_MEDIA` with that name (``ValueError`` if unknown)."""
    if isinstance(medium, IonisationMedium):
        return medium
    if isinstance(medium, str) and medium in IONISATION_MEDIA:
        return IONISATION_MEDIA[medium]
    raise ValueError(f"medium: unknown ionisation medium {medium!r}; known: {sorted(IONISATION_MEDIA)}")


def _is_traced(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def _check_positive(name: str, value) -> None:
    """ValueError naming the argument unless every value is finite and > 0 (skipped for traced values)."""
    if _is_traced(value):
        return
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 0:
        return
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name}: must be finite and > 0, got {value!r}")


def _density_effect(x, m: IonisationMedium, xp):
    """Sternheimer delta(x), x = log10(beta gamma) (PDG eq. 34.7)."""
    high = 2.0 * _LN10 * x - m.C_bar
    mid = high + m.a * xp.clip(m.x1 - x, 0.0, None) ** m.k
    low = m.delta0 * 10.0 ** (2.0 * xp.clip(x - m.x0, None, 0.0))
    return xp.where(x >= m.x1, high, xp.where(x >= m.x0, mid, low))


def _dedx(bg, m: IonisationMedium, charge, mass, density_effect: bool, xp):
    """The Bethe-Bloch mean stopping power [MeV cm^2/g] for beta gamma ``bg`` (array module ``xp``)."""
    bg2 = bg * bg
    gamma = xp.sqrt(1.0 + bg2)
    beta2 = bg2 / (1.0 + bg2)
    ratio = ELECTRON_MASS_MEV / mass
    w_max = 2.0 * ELECTRON_MASS_MEV * bg2 / (1.0 + 2.0 * gamma * ratio + ratio * ratio)
    i_mev = m.I_eV * 1e-6
    log_term = 0.5 * xp.log(2.0 * ELECTRON_MASS_MEV * bg2 * w_max / (i_mev * i_mev))
    delta = _density_effect(xp.log10(bg), m, xp) if density_effect else 0.0
    return K_MEV_CM2_PER_MOL * charge * charge * m.Z_over_A / beta2 * (log_term - beta2 - 0.5 * delta)


@partial(jax.jit, static_argnames=("m", "density_effect"))
def _dedx_jax(bg, m: IonisationMedium, charge, mass, density_effect: bool):
    """:func:`_dedx` in jax.numpy, compiled once per medium, shape and dtype (cheaper than op-by-op dispatch)."""
    return _dedx(bg, m, charge, mass, density_effect, jnp)


def mean_dedx(
    beta_gamma=None,
    medium: str | IonisationMedium = "Si",
    charge=1.0,
    *,
    momentum=None,
    mass=MUON_MASS_MEV,
    density_effect: bool = True,
):
    """Mean ionisation energy loss -<dE/dx> [MeV cm^2/g] (PDG Bethe-Bloch, eq. 34.5, with density effect).

    Give either ``beta_gamma`` or ``momentum`` (then beta gamma = p / M). Pure ``jax.numpy``: arrays broadcast,
    works under ``jit``/``vmap``/``grad``, and computes in the inputs' floating dtype (float64 when x64 is on).

    Args:
        beta_gamma: beta gamma = p / (M c) of the particle, > 0 (array-like).
        medium: an :class:`IonisationMedium` or a name in :data:`IONISATION_MEDIA`.
        charge: the particle's charge z in units of e (not zero).
        momentum: momentum p [MeV/c], > 0, instead of ``beta_gamma``.
        mass: the particle's mass M [MeV/c^2], > 0 (default: the muon). It enters through W_max even when
            ``beta_gamma`` is given.
        density_effect: include Sternheimer's density-effect correction delta (default); ``False`` gives the
            uncorrected formula (for comparison only).

    Returns:
        -<dE/dx> in MeV cm^2/g, with the broadcast shape of the inputs. Multiply by the density (or use
        :func:`mean_dedx_per_cm`) for MeV/cm.

    Validity: about 0.1 < beta gamma < 1000 for muons and pions, to a few %. No shell corrections, no Barkas or
    Bloch terms (they matter below beta gamma ~ 0.1 and for high charge), no radiative losses (they matter above
    a few hundred GeV for muons). Out-of-range values are not refused, only unreliable.

    Raises:
        ValueError: naming the argument, for beta_gamma / momentum / mass <= 0 or non-finite, a zero charge,
            both or neither of ``beta_gamma`` and ``momentum``, or an unknown medium.
    """
    m = get_ionisation_medium(medium)
    if (beta_gamma is None) == (momentum is None):
        raise ValueError("beta_gamma: give exactly one of beta_gamma and momentum")
    _check_positive("mass", mass)
    if not _is_traced(charge) and np.any(np.asarray(charge, dtype=np.float64) == 0):
        raise ValueError(f"charge: must be non-zero, got {charge!r}")
    if beta_gamma is None:
        _check_positive("momentum", momentum)
        bg = jnp.asarray(momentum) / mass
    else:
        _check_positive("beta_gamma", beta_gamma)
        bg = jnp.asarray(beta_gamma)
    bg = bg.astype(jnp.result_type(bg, float))
    return _dedx_jax(bg, m, charge, mass, density_effect)


def mean_dedx_per_cm(beta_gamma=None, medium: str | IonisationMedium = "Si", charge=1.0, **kwargs):
    """:func:`mean_dedx` times the medium's density: -<dE/dx> in MeV/cm (same arguments)."""
    m = get_ionisation_medium(medium)
    return mean_dedx(beta_gamma, m, charge, **kwargs) * m.density


def minimum_ionisation(
    medium: str | IonisationMedium, *, mass=MUON_MASS_MEV, charge=1.0, bounds=(0.5, 50.0)
) -> tuple[float, float]:
    """(beta gamma at the minimum, minimum -<dE/dx> [MeV cm^2/g]) for a particle of ``mass`` in ``medium``.

    Bounded 1-D minimisation (scipy's ``minimize_scalar``, method ``"bounded"``) over log10(beta gamma) within
    ``bounds``, evaluated in float64 NumPy whatever JAX's precision setting.
    """
    from scipy.optimize import minimize_scalar

    m = get_ionisation_medium(medium)
    _check_positive("mass", mass)
    lo, hi = bounds
    _check_positive("bounds", np.asarray(bounds))
    if not lo < hi:
        raise ValueError(f"bounds: need lower < upper, got {bounds!r}")

    def f(t: float) -> float:
        return float(_dedx(np.float64(10.0**t), m, float(charge), float(mass), True, np))

    res = minimize_scalar(f, bounds=(math.log10(lo), math.log10(hi)), method="bounded", options={"xatol": 1e-7})
    return float(10.0**res.x), float(res.fun)


# --------------------------------------------------------------------------- straggling: Landau xi and MPV

#: The PDG's j in the most probable loss (Bichsel; PDG "Passage of particles through matter", eq. 34.12).
LANDAU_J = 0.200


def _xi_mpv(bg, x_g_cm2, m: IonisationMedium, charge, density_effect: bool, xp):
    """(xi, Delta_p) [MeV] for beta gamma ``bg`` and a layer of ``x_g_cm2`` [g/cm^2] (array module ``xp``)."""
    bg2 = bg * bg
    beta2 = bg2 / (1.0 + bg2)
    xi = 0.5 * K_MEV_CM2_PER_MOL * m.Z_over_A * charge * charge * x_g_cm2 / beta2
    i_mev = m.I_eV * 1e-6
    delta = _density_effect(xp.log10(bg), m, xp) if density_effect else 0.0
    mpv = xi * (xp.log(2.0 * ELECTRON_MASS_MEV * bg2 / i_mev) + xp.log(xi / i_mev) + LANDAU_J - beta2 - delta)
    return xi, mpv


def landau_xi(beta_gamma, thickness_cm, medium: str | IonisationMedium = "Si", charge=1.0) -> np.ndarray:
    """Landau's xi = (K/2) <Z/A> z^2 (rho x / beta^2) [MeV] for a layer ``thickness_cm`` [cm] thick (PDG).

    The Landau FWHM of the energy-loss distribution is w ~ 4 xi (PDG). float64 NumPy; arrays broadcast."""
    m = get_ionisation_medium(medium)
    _check_positive("beta_gamma", beta_gamma)
    _check_positive("thickness_cm", thickness_cm)
    bg = np.asarray(beta_gamma, dtype=np.float64)
    return _xi_mpv(bg, np.asarray(thickness_cm, np.float64) * m.density, m, float(charge), True, np)[0]


def most_probable_loss(
    beta_gamma, thickness_cm, medium: str | IonisationMedium = "Si", charge=1.0, *, density_effect: bool = True
) -> np.ndarray:
    """Most probable energy loss Delta_p [MeV] in a layer ``thickness_cm`` [cm] thick (PDG eq. 34.12)::

        Delta_p = xi [ ln(2 m_e c^2 beta^2 gamma^2 / I) + ln(xi / I) + j - beta^2 - delta(beta gamma) ],  j = 0.200

    with xi from :func:`landau_xi`. Unlike the mean it does not depend on W_max (hence not on the particle's
    mass at fixed beta gamma) and it reaches a Fermi plateau at high beta gamma, where the density effect cancels
    the logarithmic rise (PDG: "the most probable loss ... is the better-behaved quantity"). Valid, like the
    Landau-Vavilov-Bichsel description it belongs to, for kappa = xi / W_max below ~0.01-0.1 (beta gamma >~ 1 in a
    few hundred um of silicon); for very thin silicon the real distribution is wider than Landau's (PDG, Bichsel).
    float64 NumPy; arrays broadcast; ValueError naming the argument for non-positive inputs."""
    m = get_ionisation_medium(medium)
    _check_positive("beta_gamma", beta_gamma)
    _check_positive("thickness_cm", thickness_cm)
    if np.any(np.asarray(charge, dtype=np.float64) == 0):
        raise ValueError(f"charge: must be non-zero, got {charge!r}")
    bg = np.asarray(beta_gamma, dtype=np.float64)
    x = np.asarray(thickness_cm, np.float64) * m.density
    return _xi_mpv(bg, x, m, float(charge), density_effect, np)[1]
