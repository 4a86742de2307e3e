"""Checks of scalar hyper-parameters, shared by both sides (pure Python: no NumPy, no torch)."""

from __future__ import annotations

import math
import numbers


def check_temperature(T) -> float:
    """The temperature must be a real number with ``0 < T < inf``."""
    if isinstance(T, bool) or not isinstance(T, numbers.Real):
        raise TypeError(f"T must be a real number, got {type(T).__name__}")
    T = float(T)
    if not (math.isfinite(T) and T > 0):
        raise ValueError(f"T must be finite and > 0, got {T}")
    if not 1e-100 <= T <= 1e100:  # beyond these z/T or T² leave the floating-point range
        raise ValueError(f"T must lie in [1e-100, 1e100], got {T}")
    return T


def check_real(name: str, value, *, low: float = -math.inf, high: float = math.inf) -> float:
    """A finite real number in ``[low, high]`` (a loss weight, an ε, a smoothing factor)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be a finite number in [{low}, {high}], got {value}")
    return value
