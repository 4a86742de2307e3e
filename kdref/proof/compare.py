"""Comparing a result with what it should be: tolerances, printed digits, the worst error seen."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np

from kdref.registry import Tolerance


@dataclass
class Result:
    """The outcome of one check on one case.

    ``worst`` is the largest error seen and ``ratio`` that error divided by the tolerance it was
    held to (a pass has ``ratio <= 1``); both are ``None`` where the check has no numeric error.
    """

    case: str
    check: str
    ok: bool
    worst: float | None = None
    ratio: float | None = None
    examples: int = 0
    detail: str = ""
    seconds: float = 0.0


class Worst:
    """Tracks the largest error and error/tolerance ratio over many comparisons."""

    def __init__(self) -> None:
        self.error = 0.0
        self.ratio = 0.0

    def update(self, error: float, ratio: float) -> None:
        self.error = max(self.error, error)
        self.ratio = max(self.ratio, ratio)


def compare(actual, expected, tol: Tolerance, scale: float = 1.0, what: str = "value",
            worst: Worst | None = None) -> float:
    """Assert ``|actual - expected| <= tol.rtol * |expected| + tol.atol * scale`` elementwise and
    return the largest error as a fraction of its bound."""
    a = np.asarray(actual, dtype=np.float64)
    b = np.asarray(expected, dtype=np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"{what}: shape {a.shape} != expected {b.shape}")
    if not np.all(np.isfinite(a)):
        raise AssertionError(f"{what}: non-finite result {a}")
    error = np.abs(a - b)
    bound = tol.rtol * np.abs(b) + tol.atol * scale
    ratio = float(np.max(np.where(error == 0, 0.0, error / np.where(bound > 0, bound, np.inf)), initial=0.0))
    ratio = np.inf if np.any((bound == 0) & (error > 0)) else ratio
    if worst is not None:
        worst.update(float(np.max(error, initial=0.0)), ratio)
    if ratio > 1:
        raise AssertionError(f"{what}: got {a}, expected {b} (|Δ| = {np.max(error):.3g}, "
                             f"{ratio:.3g}× the tolerance rtol={tol.rtol:g}, atol={tol.atol:g}·{scale:.3g})")
    return ratio


def max_abs(inputs: Mapping[str, Any] | Iterable) -> float:
    """The largest magnitude among the float arrays in ``inputs`` (nested lists included)."""
    values = inputs.values() if isinstance(inputs, Mapping) else inputs
    largest = 0.0
    for v in values:
        if isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating) and v.size:
            largest = max(largest, float(np.max(np.abs(v))))
        elif isinstance(v, (list, tuple, Mapping)):
            largest = max(largest, max_abs(v))
    return largest


def printed_tolerance(text: str) -> float:
    """Half a unit in the last printed digit of ``text`` ("0.28855901" -> 5e-9, "60" -> 0.5)."""
    exponent = Decimal(text).as_tuple().exponent
    return 0.5 * 10.0 ** exponent


def printed_values(printed) -> tuple[np.ndarray, np.ndarray]:
    """The numbers ``printed`` stands for (a string or nested lists of them, as in the golden
    files) and the error each may have: half a unit in its last digit, or 0 for a fraction such as
    ``"1/3"`` (an exact value)."""
    texts = np.asarray(printed, dtype=object)
    expected = np.vectorize(lambda v: float(Fraction(v)), otypes=[np.float64])(texts)
    bounds = np.vectorize(lambda v: 0.0 if "/" in v else printed_tolerance(v), otypes=[np.float64])(texts)
    return expected, bounds


def matches_printed(actual, printed, what: str, worst: Worst | None = None) -> None:
    """``actual`` reproduces every printed digit of ``printed``; one printed number stands for every
    entry of an array (``"0.000000"`` for a whole gradient)."""
    expected, bounds = printed_values(printed)
    a = np.asarray(actual, dtype=np.float64)
    if expected.ndim == 0:
        expected, bounds = np.broadcast_to(expected, a.shape), np.broadcast_to(bounds, a.shape)
    if a.shape != expected.shape:
        raise AssertionError(f"{what}: shape {a.shape} != printed {expected.shape}")
    # the printed value is the exact one rounded; allow float64 rounding on top of half a digit
    bounds = bounds * (1 + 1e-9) + 1e-15 * np.abs(expected)
    error = np.abs(a - expected)
    if worst is not None and error.size:
        ratios = np.where(error == 0, 0.0, error / np.where(bounds > 0, bounds, np.inf))
        worst.update(float(np.max(error)), float(np.max(ratios)))
    if np.any(error > bounds):
        raise AssertionError(f"{what}: got {a}, the spec prints {printed}")
