"""surrinf: surrogate-assisted statistical inference for particle physics.

Modules: :mod:`surrinf.sim` (reference simulators), :mod:`surrinf.data` (geometries, CaloChallenge files,
features, preprocessing), :mod:`surrinf.validation` (metrics), :mod:`surrinf.report` (tables, figures,
reports). Energies are in GeV unless a file format says otherwise (CaloChallenge files are MeV).

Precision policy: generators and the reference simulator run in float32; statistics code that needs float64
enables it explicitly and locally (see docs/architecture.md). Importing surrinf never changes
``jax_enable_x64``. Importing surrinf appends one XLA CPU flag to ``XLA_FLAGS`` (a scheduler deadlock workaround,
see :mod:`surrinf._xla`).
"""

from importlib.metadata import PackageNotFoundError, version

from . import _xla  # noqa: F401  (first: sets an XLA CPU flag before any JAX backend starts, see _xla.py)
from .response import CONDITION_COLUMNS, ResponseModel, make_conditions

try:
    __version__ = version("surrinf")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["CONDITION_COLUMNS", "ResponseModel", "__version__", "make_conditions"]
