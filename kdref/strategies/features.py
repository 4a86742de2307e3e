"""Strategies for feature maps ``[N, C, H, W]``: the inputs of AT, FitNet, FSP, NST and their kin.

The draws lean on the cases where feature losses break: all-zero maps and all-zero channels
(post-ReLU features have many), a single spatial position (H = W = 1), negative activations,
very large activations, and a teacher equal to the student.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

__all__ = ["feature_maps", "feature_pairs"]

_SCALES = (1.0, 1e-3, 1e3)


@st.composite
def feature_maps(draw, shape: tuple[int, int, int, int], *, gradient: bool = False,
                 allow_zero: bool = True) -> np.ndarray:
    """Float64 feature maps of ``shape``: values in [-3, 3] times a scale in {1, 1e-3, 1e3}
    (1 only with ``gradient=True``), sometimes rectified (post-ReLU) and, unless
    ``allow_zero=False``, sometimes with all-zero channels or an all-zero map."""
    x = draw(hnp.arrays(np.float64, shape, elements=st.floats(-3, 3, allow_subnormal=False)))
    x = x * (1.0 if gradient else draw(st.sampled_from(_SCALES)))
    if draw(st.booleans()):
        x = np.maximum(x, 0.0)
    if allow_zero:
        pattern = draw(st.sampled_from(["none", "none", "zero_channel", "zero_map"]))
        if pattern == "zero_channel":
            x[:, draw(st.integers(0, shape[1] - 1))] = 0.0
        elif pattern == "zero_map":
            x[draw(st.integers(0, shape[0] - 1))] = 0.0
    return x


@st.composite
def feature_pairs(draw, *, max_n: int = 3, max_c: int = 4, max_hw: int = 4, same_channels: bool = False,
                  gradient: bool = False, allow_zero: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A student ``[N, C_s, H, W]`` and a teacher ``[N, C_t, H, W]`` (``C_s = C_t`` if
    ``same_channels``); H = W = 1 is among the draws. The teacher is sometimes the student."""
    n = draw(st.integers(1, max_n))
    h = draw(st.integers(1, max_hw))
    w = draw(st.integers(1, max_hw))
    c_s = draw(st.integers(1, max_c))
    c_t = c_s if same_channels else draw(st.integers(1, max_c))
    student = draw(feature_maps((n, c_s, h, w), gradient=gradient, allow_zero=allow_zero))
    if c_t == c_s and draw(st.integers(0, 4)) == 0:
        return student, student.copy()
    return student, draw(feature_maps((n, c_t, h, w), gradient=gradient, allow_zero=allow_zero))
