"""Strategies for AT (attention transfer): student/teacher feature maps and the AT hyper-parameters.

The draws lean on AT's edge cases: all-zero maps and channels (the normaliser's ε region), a
single spatial position (every normalised map is then 1 or 0), negative activations (odd ``p``
without ``abs`` changes the map), very large and very small activations (AT is scale invariant
outside ε), channel counts that differ between student and teacher, and — with a spatial rule —
spatial sizes that differ, non-square and non-integer ratios included.

With ``gradient=True`` the activations have magnitudes in [0.5, 2] (no kink of ``|A|^p`` at 0,
norms far from ε), are non-negative where a sign could cancel a map towards 0 (odd ``p`` without
``abs``; features that are average-pooled), the maps are at most 3 × 3 with 3 channels (gradcheck
costs a pass per entry), and, for the non-squared distance, student and teacher maps stay apart
(``‖Δ_n‖ ≥ 0.05``, away from the norm's non-smooth point ``Δ = 0``; ``H = W = 1`` would make
every normalised map 1, so ``H ≥ 2`` there).
"""

from __future__ import annotations

import numpy as np
from hypothesis import reject
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kdref.reference import at as ref
from kdref.strategies.features import feature_maps

__all__ = ["at_inputs", "at_multi_inputs"]

#: ‖Δ_n‖ below this is too close to the norm's kink for finite differences
_KINK_MARGIN = 0.05


def _moderate_maps(shape: tuple[int, ...], signed: bool) -> st.SearchStrategy[np.ndarray]:
    """Magnitudes in [0.5, 2], of either sign if ``signed``."""
    elements = st.floats(0.5, 2.0)
    return hnp.arrays(np.float64, shape, elements=st.one_of(elements, st.floats(-2.0, -0.5)) if signed else elements)


@st.composite
def _pair(draw, n: int, knobs, p: float, spatial: str | None, gradient: bool, max_hw: int = 4):
    """One student/teacher pair of feature maps, of equal spatial size unless ``spatial`` is a rule."""
    min_hw = 2 if gradient and knobs["distance"] == "norm" else 1
    max_hw, max_c = (min(max_hw, 3), 3) if gradient else (max_hw, 4)
    h, w = draw(st.integers(min_hw, max_hw)), draw(st.integers(1, max_hw))
    c_s, c_t = draw(st.integers(1, max_c)), draw(st.integers(1, max_c))
    h_t, w_t = (draw(st.integers(min_hw, max_hw)), draw(st.integers(1, max_hw))) if spatial else (h, w)
    if gradient:  # averaging activations of both signs can cancel to a zero map: pool non-negative ones
        signed = (knobs["use_abs"] or p % 2 == 0) and spatial != "avgpool_features"
        return draw(_moderate_maps((n, c_s, h, w), signed)), draw(_moderate_maps((n, c_t, h_t, w_t), signed))
    student = draw(feature_maps((n, c_s, h, w)))
    if c_t == c_s and (h_t, w_t) == (h, w) and draw(st.integers(0, 4)) == 0:
        return student, student * draw(st.sampled_from([1.0, 3.0, 1e-3]))
    return student, draw(feature_maps((n, c_t, h_t, w_t)))


def _far_from_kink(fm_s, fm_t, knobs, inputs) -> bool:
    """Every example's ‖Δ_n‖ is at least the margin (only the non-squared norm has a kink)."""
    if knobs["distance"] != "norm":
        return True
    distance = ref.at_loss(fm_s, fm_t, p=inputs["p"], beta=1.0, halve_beta=False, reduction="none",
                           **{k: v for k, v in inputs.items() if k in ("spatial", "p_norm")},
                           **{k: knobs[k] for k in ("channel_reduce", "use_abs", "eps", "eps_mode", "distance")})
    return bool(np.min(distance) >= _KINK_MARGIN)


@st.composite
def _draw(draw, convention: str, gradient: bool, spatial: bool, pairs: int, max_hw: int) -> tuple[dict, list]:
    """The knobs (``p``, sometimes ``spatial``, ``p_norm``, ``beta``) and 1 to ``pairs`` layer pairs
    of one batch size. ``p`` is mostly 2, an integer when the convention takes ``A^p`` without ``abs``."""
    knobs = ref.AT_LOSS_MULTI.resolve(convention)
    exponents = [2.0, 2.0, 1.0, 1.5, 3.0, 4.0] if knobs["use_abs"] else [2.0, 2.0, 1.0, 3.0] + [4.0] * (not gradient)
    inputs = {"p": draw(st.sampled_from(exponents))}
    if spatial and draw(st.integers(0, 3)) == 0:
        inputs["spatial"] = draw(st.sampled_from(ref.SPATIAL_RULES[1:]))
    if knobs["distance"] == "norm" and not gradient and draw(st.integers(0, 3)) == 0:
        inputs["p_norm"] = draw(st.sampled_from([1.0, 3.0]))
    if draw(st.booleans()):
        inputs["beta"] = draw(st.sampled_from([0.5, 2.0, 1000.0]))
    n = draw(st.integers(1, 2 if gradient else 3))
    pair = _pair(n, knobs, inputs["p"], inputs.get("spatial"), gradient, max_hw)
    drawn = draw(st.lists(pair, min_size=1, max_size=min(pairs, 2) if gradient else pairs))
    if gradient and not all(_far_from_kink(s, t, knobs, inputs) for s, t in drawn):
        reject()
    return inputs, drawn


@st.composite
def at_inputs(draw, convention: str = "paper", gradient: bool = False, *, spatial: bool = True) -> dict:
    """``fm_s``, ``fm_t`` and ``p`` (sometimes ``beta``, ``p_norm`` and a ``spatial`` rule with
    maps of different sizes) for :func:`kdref.reference.at.at_loss` under ``convention``."""
    inputs, [(fm_s, fm_t)] = draw(_draw(convention, gradient, spatial, 1, 4))
    return {"fm_s": fm_s, "fm_t": fm_t, **inputs}


@st.composite
def at_multi_inputs(draw, convention: str = "paper", gradient: bool = False, *, spatial: bool = True,
                    max_layers: int = 3) -> dict:
    """``fms_s``, ``fms_t`` (1 to ``max_layers`` pairs of one batch size, each of its own
    channels and size), ``p`` and sometimes ``weights``, ``beta``, ``p_norm`` and a spatial rule,
    for :func:`kdref.reference.at.at_loss_multi`."""
    inputs, pairs = draw(_draw(convention, gradient, spatial, max_layers, 3))
    if draw(st.booleans()):
        inputs["weights"] = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0]), min_size=len(pairs),
                                          max_size=len(pairs)))
    return {"fms_s": [s for s, _ in pairs], "fms_t": [t for _, t in pairs], **inputs}
