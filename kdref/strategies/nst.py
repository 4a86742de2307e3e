"""Strategies for NST: a student and a teacher feature map whose channel counts may differ, with
the kernel and its parameters, the zero-channel rule and the spatial rule drawn as knobs."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kdref.strategies.features import feature_maps, feature_pairs

__all__ = ["nst_inputs", "nst_kernels", "nst_multi_inputs", "well_conditioned_maps"]

_KERNELS = ("poly", "linear", "gaussian")


@st.composite
def well_conditioned_maps(draw, shape: tuple[int, int, int, int], *, same_sign: bool = False) -> np.ndarray:
    """Feature maps whose entries have magnitudes in [0.25, 3], so every channel's norm is at
    least 0.25: far from the normalisation's ε and from the kink at an all-zero channel, where
    finite differences are accurate. ``same_sign`` gives each channel one sign, so that pooling
    or resizing cannot cancel a channel either."""
    magnitudes = draw(hnp.arrays(np.float64, shape, elements=st.floats(0.25, 3.0)))
    sign_shape = (*shape[:2], 1, 1) if same_sign else shape
    signs = draw(hnp.arrays(np.float64, sign_shape, elements=st.sampled_from([-1.0, 1.0])))
    return magnitudes * signs


def nst_kernels(n: int, *, kernels: tuple[str, ...] = _KERNELS) -> st.SearchStrategy[dict]:
    """A kernel with its parameters as knobs: ``poly`` with c in [-1, 2] and d in {1, 2, 3} (or the
    defaults), ``linear``, or ``gaussian`` with σ² in [0.25, 4], one number or one per example."""
    sigma2 = st.one_of(st.floats(0.25, 4.0), hnp.arrays(np.float64, (n,), elements=st.floats(0.25, 4.0)))
    options = {
        "poly": st.one_of(st.just({}), st.fixed_dictionaries({"c": st.floats(-1.0, 2.0), "d": st.integers(1, 3)})),
        "linear": st.just({"kernel": "linear"}),
        "gaussian": st.fixed_dictionaries({"kernel": st.just("gaussian"), "sigma2": sigma2}),
    }
    return st.one_of(*(options[k] for k in kernels))


@st.composite
def nst_inputs(draw, *, gradient: bool = False, knobs: bool = True, spatial_rules: bool = True,
               kernels: tuple[str, ...] = _KERNELS) -> dict:
    """Keyword arguments of ``nst_loss``: ``student`` ``[N, C_S, H, W]``, ``teacher`` ``[N, C_T, H', W']``.

    Without ``gradient``: the feature-map draws of :func:`feature_pairs` (all-zero maps and
    channels, H = W = 1, post-ReLU, negative values, scales 1e-3 to 1e3, the teacher equal to the
    student), sometimes one map scaled by 1e6 (NST must not care). With ``gradient``:
    :func:`well_conditioned_maps`. With ``knobs``, also a kernel (:func:`nst_kernels`), sometimes
    ``lam`` and ``zero_channel="drop"``, and with ``spatial_rules`` sometimes a teacher of
    another spatial size with ``spatial="interpolate"`` or ``"avgpool"``.
    """
    mismatch = knobs and spatial_rules and draw(st.integers(0, 3)) == 0
    if gradient:
        # smaller than the value draws: gradgradcheck's cost grows as the square of the size
        n, c_s, c_t = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
        h, w = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        student = draw(well_conditioned_maps((n, c_s, h, w), same_sign=mismatch))
        if c_s == c_t and not mismatch and draw(st.integers(0, 4)) == 0:
            teacher = student.copy()
        else:
            teacher = draw(well_conditioned_maps((n, c_t, h, w), same_sign=mismatch))
    else:
        student, teacher = draw(feature_pairs())
        n, c_t, h, w = teacher.shape
        if draw(st.integers(0, 5)) == 0:  # one of the two scaled by 1e6
            scale_s, scale_t = draw(st.sampled_from([(1e6, 1.0), (1.0, 1e6)]))
            student, teacher = student * scale_s, teacher * scale_t
    inputs = {"student": student, "teacher": teacher}
    if not knobs:
        return inputs
    if mismatch:
        largest = 3 if gradient else 4
        shape = (n, c_t, draw(st.integers(1, largest)), draw(st.integers(1, largest)))
        inputs["teacher"] = draw(well_conditioned_maps(shape, same_sign=True) if gradient else feature_maps(shape))
        inputs["spatial"] = draw(st.sampled_from(["interpolate", "avgpool"]))
    inputs.update(draw(nst_kernels(n, kernels=kernels)))
    if draw(st.booleans()):
        inputs["lam"] = draw(st.sampled_from([0.5, 10.0, 50.0]))
    if draw(st.integers(0, 2)) == 0:
        inputs["zero_channel"] = "drop"
    return inputs


@st.composite
def nst_multi_inputs(draw, *, gradient: bool = False, max_pairs: int = 3) -> dict:
    """Keyword arguments of ``nst_loss_multi``: ``students`` and ``teachers``, 1 to ``max_pairs``
    layer pairs of one batch size, the first as :func:`nst_inputs` draws a pair (with its knobs, but
    not the Gaussian kernel, whose bandwidth is per pair), the others of their own channels and size
    (another teacher size under a spatial rule); sometimes ``weights`` (0 included)."""
    first = draw(nst_inputs(gradient=gradient, kernels=("poly", "linear")))
    pairs = [(first.pop("student"), first.pop("teacher"))]
    n = pairs[0][0].shape[0]
    for _ in range(draw(st.integers(0, max_pairs - 1))):
        c_s, c_t, h, w = (draw(st.integers(1, 3)) for _ in range(4))
        t_hw = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if "spatial" in first else (h, w)
        if gradient:
            pairs.append((draw(well_conditioned_maps((n, c_s, h, w), same_sign=True)),
                          draw(well_conditioned_maps((n, c_t, *t_hw), same_sign=True))))
        else:
            pairs.append((draw(feature_maps((n, c_s, h, w))), draw(feature_maps((n, c_t, *t_hw)))))
    inputs = {"students": [s for s, _ in pairs], "teachers": [t for _, t in pairs], **first}
    if draw(st.booleans()):
        inputs["weights"] = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0]), min_size=len(pairs),
                                          max_size=len(pairs)))
    return inputs
