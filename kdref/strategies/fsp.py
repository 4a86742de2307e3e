"""Strategies for FSP: layer pairs of feature maps for student and teacher, and single pairs of
maps for the FSP matrix.

The draws cover what FSP implementations disagree on or break at: one to three layer pairs with
their own channel counts, maps of a pair with different spatial sizes (integer and non-integer
ratios, non-square, either map the larger, or larger in one direction only), a single spatial
position, all-zero maps and channels, negative and very large activations, a teacher equal to the
student, and per-pair weights.

With ``gradient=True`` the values are moderate and stay away from every non-smooth point: the
entries of each map are at least 0.5 apart, so max pooling has a unique arg-max in every window,
and each column of :math:`G^S - G^T` has a norm of at least 0.05, where torchdistill's column norm
is smooth (at a zero column its second derivative is undefined, so the teacher is never the
student there).
"""

from __future__ import annotations

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kdref.reference.fsp import fsp_matrix, match_spatial_pair
from kdref.strategies.features import feature_maps

__all__ = ["fsp_inputs", "fsp_matrix_inputs"]

_MAPS = ("student_first", "student_second", "teacher_first", "teacher_second")


@st.composite
def _distinct_maps(draw, shape: tuple[int, int, int, int]) -> np.ndarray:
    """Moderate values whose entries differ by at least 0.5 within each ``[h, w]`` map."""
    n, c, h, w = shape
    u = draw(hnp.arrays(np.float64, (n, c, h * w), elements=st.floats(-1, 1, allow_subnormal=False)))
    ranks = np.argsort(np.argsort(u, axis=-1, kind="stable"), axis=-1, kind="stable")
    offset = draw(hnp.arrays(np.float64, (n, c, 1), elements=st.floats(-1, 1, allow_subnormal=False)))
    # ranks are distinct and ordered like u, so neighbours in value differ by >= 0.5
    return (0.5 * (ranks - (h * w - 1) / 2) + 0.2 * u + offset).reshape(shape)


def _sizes(draw, max_hw: int, same_size: bool) -> tuple[tuple[int, int], tuple[int, int]]:
    first = (draw(st.integers(1, max_hw)), draw(st.integers(1, max_hw)))
    if same_size or draw(st.booleans()):
        return first, first
    return first, (draw(st.integers(1, max_hw)), draw(st.integers(1, max_hw)))


def _smooth_columns(inputs: dict) -> bool:
    """Every column of every G_S − G_T, max- or average-pooled, has a norm >= 0.05."""
    for i in range(len(inputs["student_first"])):
        g = [fsp_matrix(*match_spatial_pair(inputs[f"{side}_first"][i], inputs[f"{side}_second"][i], pool))
             for side in ("student", "teacher") for pool in ("max", "avg")]
        if any(np.any(np.sqrt(np.sum(delta**2, axis=1)) < 0.05) for delta in (g[0] - g[2], g[1] - g[3])):
            return False
    return True


@st.composite
def fsp_inputs(draw, *, gradient: bool = False, max_pairs: int = 3, max_n: int = 3, max_c: int = 4,
               max_hw: int = 4, same_size: bool = False, with_weights: bool = True) -> dict:
    """Keyword arguments of :func:`kdref.reference.fsp.fsp_loss`: the four lists of maps (one map per
    layer pair, at most ``max_pairs`` pairs, ``max_n`` examples, ``max_c`` channels and ``max_hw``
    rows and columns) and, if ``with_weights``, sometimes ``weights`` (one number or one per pair).
    ``gradient``: moderate, tie-free values (see the module docstring) and at most 2 pairs, 2
    examples and 2 channels, so that finite differences stay cheap; ``same_size``: the two maps of
    each pair share their spatial size (for ``pool="error"``)."""
    if gradient:
        max_pairs, max_n, max_c = min(max_pairs, 2), min(max_n, 2), min(max_c, 2)
    maps = _distinct_maps if gradient else feature_maps
    num_pairs, n = draw(st.integers(1, max_pairs)), draw(st.integers(1, max_n))
    teacher_is_student = not gradient and draw(st.integers(0, 3)) == 0
    inputs: dict = {name: [] for name in _MAPS}
    for _ in range(num_pairs):
        m, c2 = draw(st.integers(1, max_c)), draw(st.integers(1, max_c))
        s1, s2 = _sizes(draw, max_hw, same_size)
        s_first, s_second = draw(maps((n, m, *s1))), draw(maps((n, c2, *s2)))
        if teacher_is_student:
            t_first, t_second = s_first.copy(), s_second.copy()
        else:
            t1, t2 = (s1, s2) if draw(st.booleans()) else _sizes(draw, max_hw, same_size)
            t_first, t_second = draw(maps((n, m, *t1))), draw(maps((n, c2, *t2)))
        for name, x in zip(_MAPS, (s_first, s_second, t_first, t_second), strict=True):
            inputs[name].append(x)
    if gradient:
        assume(_smooth_columns(inputs))
    if with_weights:
        weight = st.floats(0.0, 2.0, allow_subnormal=False)
        weights = draw(st.one_of(st.none(), weight, st.lists(weight, min_size=num_pairs, max_size=num_pairs)))
        if weights is not None:
            inputs["weights"] = weights
    return inputs


@st.composite
def fsp_matrix_inputs(draw, *, gradient: bool = False, max_n: int = 3, max_c: int = 4, max_hw: int = 4) -> dict:
    """``f1`` ``[N, m, h, w]`` and ``f2`` ``[N, n, h, w]`` for :func:`kdref.reference.fsp.fsp_matrix`
    (moderate values and at most 2 examples and 3 channels with ``gradient=True``; Eq. (1) is
    bilinear, smooth everywhere)."""
    if gradient:
        max_n, max_c = min(max_n, 2), min(max_c, 3)
    n, h, w = draw(st.integers(1, max_n)), draw(st.integers(1, max_hw)), draw(st.integers(1, max_hw))
    f1, f2 = (draw(feature_maps((n, draw(st.integers(1, max_c)), h, w), gradient=gradient)) for _ in range(2))
    return {"f1": f1, "f2": f2}
