"""A value with its (symmetric, one standard deviation) uncertainty, and the number formatting shared by reports."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Measurement:
    """A value with a symmetric one-sigma uncertainty, rendered as ``"v ± e"`` in tables."""

    value: float
    error: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "error", float(self.error))

    def __str__(self) -> str:
        value, error, exponent = measurement_parts(self.value, self.error)
        return f"{value} ± {error}" if exponent is None else f"({value} ± {error})e{exponent:+03d}"

    @property
    def relative_error(self) -> float:
        """``error / |value|`` (inf for a zero value)."""
        return self.error / abs(self.value) if self.value != 0 else math.inf


def format_sig(x: float, sig: int = 4) -> str:
    """Format ``x`` with ``sig`` significant digits, trailing zeros dropped.

    Fixed notation for magnitudes in [1e-3, 1e6), scientific (``1.235e-05``) outside; ``nan``/``inf``/``-inf``.
    """
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    sig = max(int(sig), 1)
    exponent = math.floor(math.log10(abs(x)))
    if -3 <= exponent < 6:
        text = f"{x:.{max(sig - 1 - exponent, 0)}f}"
        return _strip_zeros(text)
    mantissa, exp = f"{x:.{sig - 1}e}".split("e")
    return f"{_strip_zeros(mantissa)}e{int(exp):+03d}"


def measurement_parts(value: float, error: float, error_digits: int = 2) -> tuple[str, str, int | None]:
    """Round ``value`` and ``error`` to the precision of the error (``error_digits`` significant digits).

    Returns ``(value_text, error_text, exponent)``; ``exponent`` is None for fixed notation, otherwise both texts are
    mantissas of a common power of ten (used for very small or large numbers). A non-positive or non-finite error
    falls back to :func:`format_sig` for both numbers.
    """
    value, error = float(value), float(error)
    if not (math.isfinite(value) and math.isfinite(error)) or error <= 0:
        return format_sig(value), format_sig(error), None
    digits = max(int(error_digits), 1)
    last = math.floor(math.log10(error)) - (digits - 1)  # decimal position of the last significant error digit
    error = round(error, -last)
    last = math.floor(math.log10(error)) - (digits - 1)  # rounding may have added a digit (0.0996 -> 0.10)
    magnitude = math.floor(math.log10(max(abs(value), error)))
    if -3 <= magnitude < 6 and last >= -6:
        decimals = max(-last, 0)
        return _fixed(round(value, -last), decimals), _fixed(error, decimals), None
    decimals = max(magnitude - last, 0)
    scale = 10.0**magnitude
    return _fixed(value / scale, decimals), _fixed(error / scale, decimals), magnitude


def _fixed(x: float, decimals: int) -> str:
    text = f"{x:.{decimals}f}"
    return "0" + text[2:] if text.startswith("-0") and float(text) == 0 else text  # no "-0.00"


def _strip_zeros(text: str) -> str:
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text
