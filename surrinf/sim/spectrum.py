"""Incident-energy spectra written as short strings (command line, configuration files).

Forms (energies in GeV): ``log-uniform:LO,HI`` (CaloChallenge datasets 2/3 use 1,1000), ``uniform:LO,HI``,
``fixed:E`` (or just ``E``), ``discrete:E1,E2,...`` (equal probabilities; CaloChallenge dataset 1 uses powers
of two), ``power-law:LO,HI,GAMMA`` (dN/dE ~ E^-GAMMA on [LO, HI]).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .calorimeter import ENERGY_RANGE_GEV

_FORMS = "log-uniform:LO,HI | uniform:LO,HI | fixed:E | discrete:E1,E2,... | power-law:LO,HI,GAMMA (GeV)"


@dataclass(frozen=True)
class EnergySpectrum:
    """An incident-energy distribution; ``kind`` is one of the forms above, ``values`` its numbers [GeV]."""

    kind: str
    values: tuple[float, ...]

    def __str__(self) -> str:
        return f"{self.kind}:{','.join(f'{v:g}' for v in self.values)}"

    def sample(self, key: jax.Array, n: int) -> np.ndarray:
        """Draw ``n`` incident energies [GeV] (float32) with the JAX PRNG ``key``."""
        v = self.values
        u = np.asarray(jax.random.uniform(key, (int(n),), dtype=jnp.float32), dtype=np.float64)
        if self.kind == "fixed":
            e = np.full(int(n), v[0])
        elif self.kind == "uniform":
            e = v[0] + (v[1] - v[0]) * u
        elif self.kind == "log-uniform":
            e = np.exp(np.log(v[0]) + (np.log(v[1]) - np.log(v[0])) * u)
        elif self.kind == "discrete":
            e = np.asarray(v)[np.minimum((u * len(v)).astype(int), len(v) - 1)]
        else:  # power-law
            lo, hi, g = v
            if abs(g - 1.0) < 1e-12:
                e = np.exp(np.log(lo) + (np.log(hi) - np.log(lo)) * u)
            else:
                k = 1.0 - g
                e = (lo**k + (hi**k - lo**k) * u) ** (1.0 / k)
        lo, hi = (v[0], v[1]) if self.kind in ("uniform", "log-uniform", "power-law") else (min(v), max(v))
        return np.clip(e, lo, hi).astype(np.float32)  # rounding must not leave the support


def parse_energy_spec(spec: str) -> EnergySpectrum:
    """Parse an energy-spectrum string (see the module docstring); raises ValueError naming the form."""
    text = str(spec).strip()
    kind, _, rest = text.partition(":")
    if not rest:
        kind, rest = "fixed", text
    kind = kind.strip().lower()
    try:
        values = tuple(float(x) for x in rest.split(","))
    except ValueError:
        raise ValueError(f"energy spectrum {spec!r}: numbers expected, forms are {_FORMS}") from None
    arity = {"fixed": 1, "uniform": 2, "log-uniform": 2, "power-law": 3}
    if kind not in (*arity, "discrete"):
        raise ValueError(f"energy spectrum {spec!r}: unknown form {kind!r}; forms are {_FORMS}")
    if kind in arity and len(values) != arity[kind]:
        raise ValueError(f"energy spectrum {spec!r}: {kind} takes {arity[kind]} number(s); forms are {_FORMS}")
    energies = values[:2] if kind == "power-law" else values
    lo, hi = ENERGY_RANGE_GEV
    if any(not np.isfinite(x) or x < lo or x > hi for x in energies):
        raise ValueError(f"energy spectrum {spec!r}: energies must lie in [{lo}, {hi}] GeV")
    if kind in ("uniform", "log-uniform", "power-law") and not values[0] < values[1]:
        raise ValueError(f"energy spectrum {spec!r}: LO must be smaller than HI")
    if kind == "power-law" and not np.isfinite(values[2]):
        raise ValueError(f"energy spectrum {spec!r}: GAMMA must be finite")
    return EnergySpectrum(kind, values)
