"""Strategies for FitNet: hint pairs for the hint loss, and guided maps, teacher hints and
regressors (every kind and activation, with or without bias and BatchNorm) for the regressed hint loss.

The draws include all-zero maps and channels, a single spatial position, negative and very large
activations, a teacher equal to the regressed student, and BatchNorm's running statistics (which
the loss leaves alone). With ``gradient=True`` the values stay moderate, the layers small, every
regressor has a bias, BatchNorm only channels of spread ≥ 0.1, and the last bias (β with
BatchNorm) is nudged so that no pre-activation lies within ``KINK_MARGIN`` of a kink (ReLU at 0,
a tie between maxout pieces): finite differences are accurate there.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kdref.reference.fitnet import pre_activation, regressor, regressor_geometry
from kdref.strategies.embeddings import irregular
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


def _params(draw, shape, low: float, high: float) -> np.ndarray:
    return draw(hnp.arrays(np.float64, shape, elements=st.floats(low, high, allow_subnormal=False)))


def _nearest_outside(centres: np.ndarray, margin: float) -> float:
    """The shift ``s`` nearest 0 with ``|s - c| >= margin`` for every centre ``c``."""
    candidates = np.concatenate([[0.0], centres - 1.5 * margin, centres + 1.5 * margin])
    return float(min((s for s in candidates if np.all(np.abs(s - centres) >= margin)), key=abs))


def avoid_kinks(pre: np.ndarray, bias: np.ndarray, pieces: int, activation: str, per_unit: bool,
                margin: float = KINK_MARGIN) -> np.ndarray:
    """``bias`` (one per channel, or per output unit with ``per_unit``) shifted so that ``pre + bias``
    (the pre-activation ``[N, C·k, H, W]``) stays ``margin`` away from ReLU's kink at 0 and from ties
    between maxout pieces: each piece is shifted in turn ``margin`` away from the running maximum of
    the pieces before it (ReLU is maxout with a constant zero piece)."""
    if activation == "none":
        return bias
    n, units, h, w = pre.shape
    k, c = pieces, units // pieces
    if per_unit:  # group over the batch only
        z = pre.reshape(n, c, k, h * w).transpose(1, 3, 2, 0).reshape(c * h * w, k, n)
        b = bias.reshape(c, k, h * w).transpose(0, 2, 1).reshape(c * h * w, k).copy()
    else:  # group over the batch and the positions
        z = pre.reshape(n, c, k, h * w).transpose(1, 2, 0, 3).reshape(c, k, n * h * w)
        b = bias.reshape(c, k).copy()
    for g in range(z.shape[0]):
        running = np.zeros(z.shape[2]) if activation == "relu" else None
        for j in range(k):
            if running is not None:
                b[g, j] += _nearest_outside(running - z[g, j] - b[g, j], margin)
            piece = z[g, j] + b[g, j]
            running = piece if running is None else np.maximum(running, piece)
    return b.reshape(c, h * w, k).transpose(0, 2, 1).reshape(-1) if per_unit else b.reshape(-1)


@st.composite
def fitnet_regressed_inputs(draw, *, gradient: bool = False, kinds=("conv_valid", "conv1x1", "repdistiller", "fc"),
                            max_n: int = 3, max_c: int = 4, max_hw: int = 4) -> dict:
    """``v_g``, ``u_t``, the ``regressor``'s parameters (named as ``HintRegressor``'s), ``kind``,
    ``activation``, ``pieces`` and, with BatchNorm, ``bn_eps``, for
    :func:`kdref.reference.fitnet.regressed_hint_loss`. The teacher is sometimes the regressed student."""
    if gradient:  # finite differences and gradgradcheck visit every weight: keep the layers small
        max_n, max_c, max_hw = min(max_n, 2), min(max_c, 2), min(max_hw, 3)
    kind = draw(st.sampled_from(kinds))
    activation = draw(st.sampled_from(["relu", "none", "maxout"]))
    pieces = draw(st.integers(2, 2 if gradient else 3)) if activation == "maxout" else 1
    n, c_s, c_t = draw(st.integers(1, max_n)), draw(st.integers(1, max_c)), draw(st.integers(1, max_c))
    h_s, w_s = draw(st.integers(1, max_hw)), draw(st.integers(1, max_hw))
    # the teacher sizes (up to 2·max_hw: RepDistiller upsamples by 2) the kind maps to, with few weights for gradients
    sizes, largest = {}, max_hw if kind == "fc" else 2 * max_hw
    for h_t in range(1, largest + 1):
        for w_t in range(1, largest + 1):
            try:
                sizes[h_t, w_t] = regressor_geometry((c_s, h_s, w_s), (c_t, h_t, w_t), kind, pieces)
            except ValueError:
                continue
    if gradient:
        small = [hw for hw, g in sizes.items() if np.prod(g.weight_shape) <= MAX_GRADIENT_WEIGHTS]
        sizes = {hw: sizes[hw] for hw in small or [min(sizes, key=lambda hw: abs(h_s * w_s - hw[0] * hw[1]))]}
    h_t, w_t = draw(st.sampled_from(sorted(sizes)))
    geometry = sizes[h_t, w_t]
    v_g = draw(feature_maps((n, c_s, h_s, w_s), gradient=gradient))
    weight = _params(draw, geometry.weight_shape, -2.0, 2.0) / np.sqrt(np.prod(geometry.weight_shape[1:]))
    params = {"layer.weight": weight}
    inputs = {"v_g": v_g, "regressor": params, "kind": kind, "activation": activation, "pieces": pieces}
    if gradient or draw(st.booleans()):
        params["layer.bias"] = _params(draw, geometry.bias_shape, -1.0, 1.0)
    c = geometry.out_channels
    if n * h_t * w_t > 1 and draw(st.booleans()):
        params.update({"bn.weight": _params(draw, (c,), -2.0, 2.0), "bn.bias": _params(draw, (c,), -1.0, 1.0)})
        inputs["bn_eps"] = draw(st.sampled_from([1e-5, 1e-3, 0.1]))
        if gradient:  # BatchNorm's gain 1/σ: channels of spread < 0.1 are too steep for finite differences
            inputs["v_g"] = v_g = v_g + irregular(v_g.shape)
            params["layer.weight"] = weight = weight + irregular(weight.shape) / np.sqrt(weight[0].size)
            if np.min(np.std(pre_activation(v_g, {"layer.weight": weight}, geometry), axis=(0, 2, 3))) < 0.1:
                del params["bn.weight"], params["bn.bias"], inputs["bn_eps"]
        elif draw(st.booleans()):
            params.update({"bn.running_mean": _params(draw, (c,), -1.0, 1.0),
                           "bn.running_var": _params(draw, (c,), 0.5, 2.0)})
    if gradient:  # the last bias before the activation: β with BatchNorm, else the layer's
        last = "bn.bias" if "bn.bias" in params else "layer.bias"
        pre = pre_activation(v_g, {**params, last: 0 * params[last]}, geometry, inputs.get("bn_eps", 1e-5))
        params[last] = avoid_kinks(pre, params[last], pieces, activation, last == "layer.bias" and kind == "fc")
    if draw(st.integers(0, 4)) == 0:
        knobs = {k: v for k, v in inputs.items() if k in ("kind", "activation", "pieces", "bn_eps")}
        inputs["u_t"] = regressor(v_g, params, out_shape=(c_t, h_t, w_t), **knobs)
    else:
        inputs["u_t"] = draw(feature_maps((n, c_t, h_t, w_t), gradient=gradient))
    return inputs
