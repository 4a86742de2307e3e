"""Checks of scalar hyper-parameters, shared by both sides (pure Python: no NumPy, no torch)."""

from __future__ import annotations

import math
import numbers


def _as_float(name: str, value: numbers.Real, allowed: str) -> float:
    """``float(value)``, or a ``ValueError`` naming the argument for an integer too large for a
    float (``10**400``), which ``float`` would refuse with a bare ``OverflowError``."""
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} must be a finite number in {allowed}, got an integer of "
                         f"{len(str(abs(int(value))))} digits") from None


def check_temperature(T) -> float:
    """The temperature must be a real number with ``0 < T < inf``."""
    if isinstance(T, bool) or not isinstance(T, numbers.Real):
        raise TypeError(f"T must be a real number, got {type(T).__name__}")
    T = _as_float("T", T, "[1e-100, 1e100]")
    if not (math.isfinite(T) and T > 0):
        raise ValueError(f"T must be finite and > 0, got {T}")
    if not 1e-100 <= T <= 1e100:  # beyond these z/T or T² leave the floating-point range
        raise ValueError(f"T must lie in [1e-100, 1e100], got {T}")
    return T


def check_real(name: str, value, *, low: float = -math.inf, high: float = math.inf) -> float:
    """A finite real number in ``[low, high]`` (a loss weight, an ε, a smoothing factor)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = _as_float(name, value, f"[{low}, {high}]")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be a finite number in [{low}, {high}], got {value}")
    return value
