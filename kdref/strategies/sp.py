"""Strategies for SP: lists of student and teacher activation maps ``[b, ...]`` paired by index,
one batch size for all, widths free per map.

Value draws use :func:`kdref.strategies.embeddings.embeddings` (duplicated samples, a collapsed
batch, all-zero rows, a large common offset; b = 1, 2, 3 drawn often). A row is either exactly
zero or of norm at least :data:`MIN_ROW_NORM`: the loss jumps at an all-zero row (its normalised
row is 0, any other row has norm 1), so a row within rounding of zero has no well-defined
low-precision value. Gradient draws keep every entry's magnitude in [0.25, 3]: no zero row, the
one point where SP is not smooth.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kdref.strategies.embeddings import _with_extra_axes, embeddings, irregular

__all__ = ["MIN_ROW_NORM", "smooth_rows", "sp_inputs"]

#: rows below this norm are drawn as exactly zero
MIN_ROW_NORM = 0.1


def _snap_small_rows(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    x[np.linalg.norm(x, axis=1) < MIN_ROW_NORM] = 0.0
    return x


@st.composite
def smooth_rows(draw, n: int, d: int) -> np.ndarray:
    """``[n, d]`` with every entry's magnitude in [0.25, 3] (so no row is near zero), sometimes a
    duplicated row, sometimes a common offset of 10 with a spread of 0.1, plus a small irregular
    nudge: smooth points, where finite differences of the reference are accurate."""
    magnitudes = draw(hnp.arrays(np.float64, (n, d), elements=st.floats(0.25, 3.0)))
    signs = draw(hnp.arrays(np.float64, (n, d), elements=st.sampled_from([-1.0, 1.0])))
    # no exactly orthogonal samples: torchdistill's ℓ1 row normalisation has a kink at a zero Gram entry
    x = magnitudes * signs + 1e-2 * irregular((n, d))
    pattern = draw(st.sampled_from(["plain", "plain", "duplicate", "offset"]))
    if pattern == "duplicate" and n >= 2:
        x[n - 1] = x[0]
    elif pattern == "offset":
        x = 10.0 + 0.1 * x
    return x


@st.composite
def sp_inputs(draw, convention: str = "paper", *, gradient: bool = False, knobs: bool = True,
              max_pairs: int = 3) -> dict:
    """Keyword arguments of ``sp_loss``: ``student`` and ``teacher``, lists of 1 to ``max_pairs``
    maps ``[b, d]`` (sometimes ``[b, d, 1]`` or ``[b, 2, d/2]``), b ≤ 6 and d ≤ 5 (b ≤ 4, d ≤ 3 for
    gradients); a teacher map is sometimes the student's. With ``knobs``, sometimes an explicit
    ``zero_rows`` and ``layer_reduction``, and for ``"torchdistill"`` the ``"sum"`` reduction."""
    pairs = draw(st.sampled_from([1, 1, *range(2, max_pairs + 1)]))
    max_n, max_d = (4, 3) if gradient else (6, 5)
    n = draw(st.one_of(st.sampled_from([1, 2, 3]), st.integers(1, max_n)))

    def draw_map(d):
        return draw(smooth_rows(n, d)) if gradient else _snap_small_rows(draw(embeddings(n, d)))

    student, teacher = [], []
    for _ in range(pairs):
        d_s, d_t = draw(st.integers(1, max_d)), draw(st.integers(1, max_d))
        s = draw_map(d_s)
        t = s.copy() if d_s == d_t and draw(st.integers(0, 4)) == 0 else draw_map(d_t)
        if draw(st.integers(0, 3)) == 0:
            s = _with_extra_axes(s, draw(st.booleans()))
        student.append(s)
        teacher.append(t)
    inputs = {"student": student, "teacher": teacher}
    if not knobs:
        return inputs
    if draw(st.integers(0, 3)) == 0:
        inputs["zero_rows"] = draw(st.sampled_from(["mask_grad", "keep"]))
    if pairs > 1 and draw(st.integers(0, 3)) == 0:
        inputs["layer_reduction"] = draw(st.sampled_from(["sum", "mean"]))
    if convention == "torchdistill" and draw(st.booleans()):
        inputs["reduction"] = "sum"
    return inputs
