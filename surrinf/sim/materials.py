"""Calorimeter materials: PDG constants and GFLASH effective quantities of sampling structures.

Effective quantities follow Grindhammer & Peters (hep-ex/0001020), section on sampling calorimeters:
mass fractions w_i = d_i rho_i / sum_j d_j rho_j, Z_eff = sum w_i Z_i, 1/X0_eff = sum w_i / X0_i (in
g/cm^2), 1/R_M,eff = sum w_i (Ec_i / X0_i) / E_s, Ec_eff = X0_eff sum w_i Ec_i / X0_i, sampling frequency
F_s = X0_eff / (d1 + d2) and e/mip estimate e_hat = 1 / (1 + 0.007 (Z1 - Z2)).

The visible (sampling) fraction of an electromagnetic shower is f_samp = e_hat * f_mip with
f_mip = (dE/dx)_2 d2 / ((dE/dx)_1 d1 + (dE/dx)_2 d2) from the minimum-ionising stopping powers.
Homogeneous media have f_samp = 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: Scale energy E_s = m_e c^2 sqrt(4 pi / alpha) in MeV, used in the Moliere radius.
E_S_MEV = 21.2


@dataclass(frozen=True)
class Medium:
    """A pure medium (or a compound treated with an effective Z, as GFLASH does for PbWO4).

    Attributes: Z, A [g/mol], density [g/cm^3], X0 [cm], Ec critical energy [MeV], dedx_mip minimum
    ionisation stopping power [MeV cm^2/g] (PDG).
    """

    name: str
    Z: float
    A: float
    density: float
    X0_cm: float
    Ec_MeV: float
    dedx_mip: float

    @property
    def X0_gcm2(self) -> float:
        return self.X0_cm * self.density


# PDG values (radiation length, critical energy for electrons, minimum dE/dx).
TUNGSTEN = Medium("W", 74.0, 183.84, 19.30, 0.3504, 7.97, 1.145)
LEAD = Medium("Pb", 82.0, 207.2, 11.35, 0.5612, 7.43, 1.122)
SILICON = Medium("Si", 14.0, 28.09, 2.329, 9.370, 40.19, 1.664)
LIQUID_ARGON = Medium("LAr", 18.0, 39.95, 1.396, 14.00, 32.84, 1.519)
PBWO4 = Medium("PbWO4", 68.4, 455.0, 8.30, 0.8903, 9.64, 1.255)


@dataclass(frozen=True)
class Material:
    """A calorimeter material: a sampling structure (absorber + active layer) or a homogeneous medium.

    Attributes:
        name: identifier (``"W/Si"``, ``"Pb/LAr"``, ``"PbWO4"``).
        absorber: the passive medium (the only medium for a homogeneous calorimeter).
        active: the active medium, ``None`` for homogeneous.
        d_absorber_mm, d_active_mm: thickness of each per sampling cell [mm] (active 0 if homogeneous).
        nominal_sampling_term: stochastic term a [GeV^1/2] of the material, used for the GFLASH spot count
            (N_spots = 10.3 / a E^0.959) and as the default detector parameter.
    """

    name: str
    absorber: Medium
    active: Medium | None
    d_absorber_mm: float
    d_active_mm: float
    nominal_sampling_term: float
    _derived: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_derived", self._compute())

    @property
    def homogeneous(self) -> bool:
        return self.active is None

    def _compute(self) -> dict:
        a = self.absorber
        if self.active is None:
            return {
                "Z_eff": a.Z,
                "A_eff": a.A,
                "X0_mm": a.X0_cm * 10.0,
                "RM_mm": a.X0_cm * 10.0 * E_S_MEV / a.Ec_MeV,
                "Ec_MeV": a.Ec_MeV,
                "density": a.density,
                "F_s": math.inf,
                "e_hat": 1.0,
                "f_mip": 1.0,
                "sampling_fraction": 1.0,
            }
        b = self.active
        d1, d2 = self.d_absorber_mm / 10.0, self.d_active_mm / 10.0  # cm
        m1, m2 = d1 * a.density, d2 * b.density  # g/cm^2 per cell
        w1, w2 = m1 / (m1 + m2), m2 / (m1 + m2)
        x0_g = 1.0 / (w1 / a.X0_gcm2 + w2 / b.X0_gcm2)
        density = (m1 + m2) / (d1 + d2)
        ec_over_x0 = w1 * a.Ec_MeV / a.X0_gcm2 + w2 * b.Ec_MeV / b.X0_gcm2
        rm_g = E_S_MEV / ec_over_x0
        x0_mm = x0_g / density * 10.0
        e_hat = 1.0 / (1.0 + 0.007 * (a.Z - b.Z))
        f_mip = (b.dedx_mip * m2) / (a.dedx_mip * m1 + b.dedx_mip * m2)
        return {
            "Z_eff": w1 * a.Z + w2 * b.Z,
            "A_eff": w1 * a.A + w2 * b.A,
            "X0_mm": x0_mm,
            "RM_mm": rm_g / density * 10.0,
            "Ec_MeV": x0_g * ec_over_x0,
            "density": density,
            "F_s": x0_mm / (self.d_absorber_mm + self.d_active_mm),
            "e_hat": e_hat,
            "f_mip": f_mip,
            "sampling_fraction": e_hat * f_mip,
        }

    # Effective quantities (see module docstring).
    @property
    def Z_eff(self) -> float:
        return self._derived["Z_eff"]

    @property
    def X0_mm(self) -> float:
        """Effective radiation length [mm]."""
        return self._derived["X0_mm"]

    @property
    def RM_mm(self) -> float:
        """Effective Moliere radius [mm]."""
        return self._derived["RM_mm"]

    @property
    def Ec_GeV(self) -> float:
        """Effective critical energy [GeV]."""
        return self._derived["Ec_MeV"] / 1000.0

    @property
    def F_s(self) -> float:
        """Sampling frequency X0_eff / (d1 + d2) (inf for homogeneous media)."""
        return self._derived["F_s"]

    @property
    def e_hat(self) -> float:
        """Estimated e/mip ratio (1 for homogeneous media)."""
        return self._derived["e_hat"]

    @property
    def sampling_fraction(self) -> float:
        """Visible fraction of the electromagnetic shower energy, e_hat * f_mip (1 for homogeneous)."""
        return self._derived["sampling_fraction"]

    def summary(self) -> dict[str, float | str]:
        """All effective quantities, for reports and file metadata."""
        return {"name": self.name, "nominal_sampling_term": self.nominal_sampling_term, **self._derived}


#: W/Si sampling like CaloChallenge datasets 2/3: 1.4 mm W + 0.3 mm Si per sampling cell.
W_SI = Material("W/Si", TUNGSTEN, SILICON, 1.4, 0.3, nominal_sampling_term=0.17)
#: Pb/LAr sampling, ATLAS-like: 1.5 mm Pb + 4.0 mm LAr per cell.
PB_LAR = Material("Pb/LAr", LEAD, LIQUID_ARGON, 1.5, 4.0, nominal_sampling_term=0.10)
#: Homogeneous lead-tungstate crystals (CMS-like stochastic term).
PB_WO4 = Material("PbWO4", PBWO4, None, 0.0, 0.0, nominal_sampling_term=0.03)

MATERIALS = {"W/Si": W_SI, "Pb/LAr": PB_LAR, "PbWO4": PB_WO4}


def get_material(name: str) -> Material:
    """Return a named material: ``W/Si``, ``Pb/LAr`` or ``PbWO4``."""
    try:
        return MATERIALS[name]
    except KeyError:
        raise ValueError(f"unknown material {name!r}; expected one of {', '.join(MATERIALS)}") from None
