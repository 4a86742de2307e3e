"""Strategies for FitNet: hint pairs for the hint loss, and guided maps, teacher hints and
regressor weights (every regressor kind and activation) for the regressed hint loss.

The draws include all-zero maps and channels, a single spatial position, negative and very large
activations, a teacher equal to the (regressed) student, bias-free regressors and BatchNorm. With
``gradient=True`` the values stay moderate, every regressor has a bias (it is differentiated)
and no BatchNorm, and the biases are nudged so that no pre-activation lies within ``margin`` of
a kink (ReLU at 0, a tie between maxout pieces): finite differences are accurate there.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kdref.reference.fitnet import linear_part, regressor, regressor_geometry
from kdref.strategies.features import feature_maps, feature_pairs

__all__ = ["fitnet_inputs", "fitnet_regressed_inputs"]

#: how far the gradient draws keep every pre-activation from a kink (finite-difference steps are ~1e-6)
KINK_MARGIN = 1e-2
#: the most regressor weights a gradient draw has (finite differences and gradgradcheck visit each)
MAX_GRADIENT_WEIGHTS = 36


@st.composite
def fitnet_inputs(draw, *, gradient: bool = False) -> dict:
    """``r_s`` and ``u_t`` of one shape ``[N, C, H, W]`` for :func:`kdref.reference.fitnet.hint_loss`."""
    r_s, u_t = draw(feature_pairs(same_channels=True, gradient=gradient))
    return {"r_s": r_s, "u_t": u_t}


def _teacher_sizes(kind: str, h_s: int, w_s: int, max_hw: int) -> list[tuple[int, int]]:
    """The teacher spatial sizes (up to ``2·max_hw``, as RepDistiller upsamples by 2) the kind can map to."""
    sizes = []
    for h_t in range(1, 2 * max_hw + 1):
        for w_t in range(1, 2 * max_hw + 1):
            if kind == "fc" and (h_t > max_hw or w_t > max_hw):
                continue
            try:
                regressor_geometry((1, h_s, w_s), (1, h_t, w_t), kind)
            except ValueError:
                continue
            sizes.append((h_t, w_t))
    return sizes


def _params(draw, shape, low: float, high: float) -> np.ndarray:
    return draw(hnp.arrays(np.float64, shape, elements=st.floats(low, high, allow_subnormal=False)))


def _nearest_outside(centres: np.ndarray, margin: float) -> float:
    """The shift ``s`` nearest 0 with ``|s - c| >= margin`` for every centre ``c``."""
    candidates = np.concatenate([[0.0], centres - 1.5 * margin, centres + 1.5 * margin])
    valid = [s for s in candidates if np.all(np.abs(s - centres) >= margin)]
    return float(min(valid, key=abs))


def avoid_kinks(pre: np.ndarray, bias: np.ndarray, geometry, activation: str,
                margin: float = KINK_MARGIN) -> np.ndarray:
    """``bias`` shifted so that ``pre + bias`` (the regressor's pre-activation, ``[N, C·k, H, W]``)
    stays ``margin`` away from ReLU's kink at 0 and from ties between maxout pieces.

    Each maxout piece is shifted in turn so that it is ``margin`` away from the running maximum
    of the pieces before it (ReLU is maxout with a constant zero piece): then the largest and
    second largest pieces are at least ``margin`` apart everywhere.
    """
    if activation == "none":
        return bias
    n, units, h, w = pre.shape
    k = geometry.pieces
    c = units // k
    if geometry.layer == "linear":  # one bias per output unit: group over the batch only
        z = pre.reshape(n, c, k, h * w).transpose(1, 3, 2, 0).reshape(c * h * w, k, n)
        b = bias.reshape(c, k, h * w).transpose(0, 2, 1).reshape(c * h * w, k).copy()
    else:  # one bias per channel: group over the batch and the positions
        z = pre.reshape(n, c, k, h * w).transpose(1, 2, 0, 3).reshape(c, k, n * h * w)
        b = bias.reshape(c, k).copy()
    for g in range(z.shape[0]):
        running = np.zeros(z.shape[2]) if activation == "relu" else None
        for j in range(k):
            if running is not None:
                b[g, j] += _nearest_outside(running - z[g, j] - b[g, j], margin)
            piece = z[g, j] + b[g, j]
            running = piece if running is None else np.maximum(running, piece)
    if geometry.layer == "linear":
        return b.reshape(c, h * w, k).transpose(0, 2, 1).reshape(-1)
    return b.reshape(-1)


@st.composite
def fitnet_regressed_inputs(draw, *, gradient: bool = False, kinds=("conv_valid", "conv1x1", "repdistiller", "fc"),
                            max_n: int = 3, max_c: int = 4, max_hw: int = 4) -> dict:
    """``v_g``, ``u_t``, the regressor's ``weight`` and ``bias``, ``kind``, ``activation``, ``pieces``
    and, sometimes (not with ``gradient=True``), ``bn_weight``/``bn_bias``/``bn_eps``, for
    :func:`kdref.reference.fitnet.regressed_hint_loss`.

    The teacher is sometimes the regressed student itself (a perfect hint).
    """
    if gradient:  # finite differences and gradgradcheck visit every weight: keep the layers small
        max_n, max_c, max_hw = min(max_n, 2), min(max_c, 2), min(max_hw, 3)
    kind = draw(st.sampled_from(kinds))
    activation = draw(st.sampled_from(["relu", "none", "maxout"]))
    pieces = draw(st.integers(2, 2 if gradient else 3)) if activation == "maxout" else 1
    n = draw(st.integers(1, max_n))
    c_s, c_t = draw(st.integers(1, max_c)), draw(st.integers(1, max_c))
    h_s, w_s = draw(st.integers(1, max_hw)), draw(st.integers(1, max_hw))
    sizes = _teacher_sizes(kind, h_s, w_s, max_hw)
    if gradient:
        small = [(h, w) for h, w in sizes if np.prod(regressor_geometry(
            (c_s, h_s, w_s), (c_t, h, w), kind, pieces).weight_shape) <= MAX_GRADIENT_WEIGHTS]
        sizes = small or [min(sizes, key=lambda hw: abs(h_s * w_s - hw[0] * hw[1]))]
    h_t, w_t = draw(st.sampled_from(sizes))
    geometry = regressor_geometry((c_s, h_s, w_s), (c_t, h_t, w_t), kind, pieces)
    v_g = draw(feature_maps((n, c_s, h_s, w_s), gradient=gradient))
    fan_in = int(np.prod(geometry.weight_shape[1:]))
    weight = _params(draw, geometry.weight_shape, -2.0, 2.0) / np.sqrt(fan_in)
    inputs = {"v_g": v_g, "weight": weight, "kind": kind, "activation": activation, "pieces": pieces}
    if gradient or draw(st.booleans()):
        bias = _params(draw, geometry.bias_shape, -1.0, 1.0)
        if gradient:
            bias = avoid_kinks(linear_part(v_g, weight, None, geometry), bias, geometry, activation)
        inputs["bias"] = bias
    if not gradient and n * h_t * w_t > 1 and draw(st.booleans()):
        inputs["bn_weight"] = _params(draw, (geometry.out_channels,), -2.0, 2.0)
        inputs["bn_bias"] = _params(draw, (geometry.out_channels,), -1.0, 1.0)
        inputs["bn_eps"] = draw(st.sampled_from([1e-5, 1e-3, 0.1]))
    if draw(st.integers(0, 4)) == 0:
        params = {k: v for k, v in inputs.items() if k != "v_g"}
        inputs["u_t"] = regressor(v_g, out_shape=(c_t, h_t, w_t), **params)
    else:
        inputs["u_t"] = draw(feature_maps((n, c_t, h_t, w_t), gradient=gradient))
    return inputs
