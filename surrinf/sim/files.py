"""Simulate reference showers straight into a CaloChallenge HDF5 file (MeV), chunk by chunk."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from surrinf.data import ShowerData, ShowerWriter
from surrinf.sim.calorimeter import Calorimeter

__all__ = ["simulate_to_file"]


def simulate_to_file(
    cal: Calorimeter,
    key: jax.Array,
    energies_gev: np.ndarray,
    path: Path,
    theta: np.ndarray | None = None,
    offset_mm: np.ndarray | None = None,
    progress: bool = True,
    chunk_size: int | None = None,
) -> Path:
    """Simulate showers chunk by chunk into a CaloChallenge HDF5 file (MeV), atomically; memory stays
    bounded by one chunk. theta and the impact offset are stored per shower."""
    n = len(energies_gev)
    theta_arr = np.broadcast_to(np.asarray(cal.default_theta() if theta is None else theta, np.float32), (n, 3))
    offset_arr = np.broadcast_to(
        np.zeros(2, np.float32) if offset_mm is None else np.asarray(offset_mm, np.float32), (n, 2)
    )
    attrs = {"material": cal.material.name, "particle": "electron", "simulator": "surrinf GFLASH reference"}
    chunk = int(chunk_size or min(cal.auto_chunk_size(bool(np.any(offset_arr != 0))), 4096))
    with (
        ShowerWriter(path, cal.geometry, with_theta=True, with_offset=True, attrs=attrs) as writer,
        tqdm(total=n, desc="simulate", unit="shower", disable=not progress, file=sys.stderr) as bar,
    ):
        start = 0
        for batch in cal.iter_simulate(key, energies_gev, theta_arr, offset_arr, chunk_size=chunk):
            stop = start + batch.showers.shape[0]
            writer.append(
                ShowerData.from_gev(
                    energies_gev[start:stop],
                    batch.showers,
                    theta=theta_arr[start:stop],
                    impact_offset_mm=offset_arr[start:stop],
                    geometry=cal.geometry,
                )
            )
            bar.update(stop - start)
            start = stop
    return path
