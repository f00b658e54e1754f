"""ONNX export of a surrogate's sampler (needs the ``onnx`` extra: ``pip install 'surrinf[onnx]'``).

What is exported is the deterministic sampler :meth:`~surrinf.generators.base.ShowerSurrogate.generate`:

    inputs  ``noise``      float32 (B, latent_dim)  standard-normal noise (flow: V, VAE: latent [+ V], GAN: latent)
            ``conditions`` float32 (B, 1 + n_theta) incident energy [GeV] and theta, as for ``sample``
    output  ``showers``    float32 (B, V)           voxel energies [GeV], >= 0

with a dynamic batch axis, so a C++/ONNX Runtime client draws its own noise and reproduces JAX's
``model.generate(noise, conditions)``. The conversion is done by jax2onnx (the spline bin search in the
flows is written without ``jnp.searchsorted`` so that it converts under vmap). The ONNX graph carries the
model type, latent size, condition columns, geometry name and units as metadata. Samplers that integrate
an ODE with an adaptive loop may not convert; the flow, the VAE decoder and the GAN generator do.

Float32 agreement: ONNX Runtime and XLA order floating-point operations differently, so outputs differ at
the level of float32 rounding amplified by the exponentials of the preprocessing; :func:`onnx_agreement`
measures the largest deviation relative to each shower's largest voxel (the tests require < 1e-5).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from .._atomic import atomic_write_bytes
from .base import ShowerSurrogate
from .serialization import model_type_of

__all__ = ["export_onnx", "onnx_agreement", "run_onnx"]

_EXTRA_HINT = "ONNX export needs the 'onnx' extra: pip install 'surrinf[onnx]' (jax2onnx and onnxruntime)"


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError as err:
        raise ImportError(f"{_EXTRA_HINT}; could not import {module!r}: {err}") from err


def export_onnx(model: ShowerSurrogate, path: str | os.PathLike, *, opset: int = 21) -> Path:
    """Write the sampler of ``model`` as an ONNX file at ``path`` (atomically); returns the path."""
    if not isinstance(model, ShowerSurrogate):
        raise TypeError(f"model must be a surrinf ShowerSurrogate, got {type(model).__name__}")
    _require("onnx")
    jax2onnx = _require("jax2onnx")
    from surrinf import __version__

    latent, n_cond = model.latent_dim(), model.encoder.n_columns

    def sampler(noise: jax.Array, conditions: jax.Array) -> jax.Array:
        return model.generate(noise, conditions)

    proto = jax2onnx.to_onnx(
        sampler,
        [("B", latent), ("B", n_cond)],
        model_name=type(model).__name__,
        opset=opset,
        input_names=["noise", "conditions"],
        output_names=["showers"],
    )
    try:
        model_type = model_type_of(model)
    except ValueError:
        model_type = type(model).__name__
    meta = {
        "surrinf_version": __version__,
        "model_type": model_type,
        "latent_dim": str(latent),
        "condition_columns": json.dumps(["energy_gev"] + [f"theta_{i}" for i in range(model.n_theta)]),
        "geometry": model.geometry.name,
        "units": "conditions[:, 0] and showers in GeV; noise ~ N(0, I)",
    }
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    return atomic_write_bytes(path, proto.SerializeToString())


def run_onnx(path: str | os.PathLike, noise: Any, conditions: Any) -> np.ndarray:
    """Run an exported sampler in ONNX Runtime (CPU): noise (B, latent), conditions (B, k) -> showers (B, V)."""
    ort = _require("onnxruntime")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    c = np.asarray(conditions, dtype=np.float32)
    feeds = {"noise": np.asarray(noise, dtype=np.float32), "conditions": c[:, None] if c.ndim == 1 else c}
    return sess.run(["showers"], feeds)[0]


def onnx_agreement(model: ShowerSurrogate, path: str | os.PathLike, noise: Any, conditions: Any) -> float:
    """Largest |ONNX - JAX| over voxels, divided by that shower's largest |JAX| voxel, maximised over showers."""
    ref = np.asarray(model.generate(noise, conditions))
    out = run_onnx(path, noise, conditions)
    if out.shape != ref.shape:
        raise ValueError(f"ONNX output shape {out.shape} differs from the JAX output shape {ref.shape}")
    scale = np.maximum(np.abs(ref).max(axis=1, keepdims=True), np.finfo(np.float32).tiny)
    return float(np.max(np.abs(out - ref) / scale))
