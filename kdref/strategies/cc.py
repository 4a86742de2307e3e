"""Strategies for CC: a student ``[n, d_S]`` and a teacher ``[n, d_T]`` batch from
:func:`~kdref.strategies.embeddings.embedding_pairs` (the widths may differ for
:func:`~kdref.reference.cc.cc_loss`, not for the adjacent-residual loss), with the kernel and its knobs."""

from __future__ import annotations

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kdref.reference import cc as ref
from kdref.strategies.embeddings import embedding_pairs

__all__ = ["cc_adjacent_inputs", "cc_inputs"]


def _away_from_zero_rows(x: np.ndarray) -> np.ndarray:
    """Rows of norm below 0.5 moved by +1 in every entry: the normalisation is discontinuous at a
    zero row, and finite differences need a neighbourhood where it is smooth."""
    flat = x.reshape(x.shape[0], -1)
    return np.where(np.linalg.norm(flat, axis=1, keepdims=True) < 0.5, flat + 1.0, flat).reshape(x.shape)


@st.composite
def cc_inputs(draw, convention: str = "paper", *, gradient: bool = False, knobs: bool = True) -> dict:
    """Keyword arguments of ``cc_loss`` under ``convention``: n = 1 … 6, widths 1 … 5 that may differ,
    the degenerate patterns of :func:`embedding_pairs`, sometimes extra axes. With ``gradient``:
    smooth points only — no row near zero (the normalisation jumps there) and, for the unsquared
    Frobenius norm, nothing near C_S = C_T (its kink; see :func:`_near_the_kink`).

    ``normalize`` and ``norm`` are always given, so that the error scale knows what is computed:
    the convention's values, ``normalize`` flipped in a quarter of the draws. With ``knobs``, also a
    kernel, sometimes ``gamma``, ``P`` and ``reduction="sum"``. Unnormalised rows keep ``P ≤ 2``: the
    series grows like ‖f‖^{2P} and would leave the float32 range at the offset draws.
    """
    preset = ref.CC_LOSS.resolve(convention)
    student, teacher = draw(embedding_pairs(gradient=gradient, extra_axes=True))
    if gradient:
        student, teacher = _away_from_zero_rows(student), _away_from_zero_rows(teacher)
    normalize = preset["normalize"] if not knobs or draw(st.integers(0, 3)) else not preset["normalize"]
    inputs = {"student": student, "teacher": teacher, "normalize": normalize, "norm": preset["norm"]}
    if knobs:
        inputs["kernel"] = draw(st.sampled_from(("gaussian_taylor", "gaussian_exact", "bilinear")))
        if draw(st.booleans()):
            inputs["gamma"] = draw(st.sampled_from([0.1, 0.4, 1.0]))
        if inputs["kernel"] == "gaussian_taylor" and draw(st.booleans()):
            inputs["P"] = draw(st.integers(1, 4 if normalize else 2))
        if draw(st.integers(0, 3)) == 0:
            inputs["reduction"] = "sum"
    if gradient and preset["norm"] == "fro":
        assume(not _near_the_kink(inputs, convention))
    return inputs


def _near_the_kink(inputs: dict, convention: str) -> bool:
    """The unsquared norm is not differentiable where C_S = C_T: a student equal to the teacher, or
    any two batches with the same relations (n = 1, collapsed batches, parallel rows once
    normalised). Finite differences need ‖C_S − C_T‖ well above their step, unless the student's
    correlation matrix is locally constant (normalised rows with n = 1 or a single column), where
    the loss is smooth."""
    if inputs["normalize"] and min(inputs["student"].reshape(inputs["student"].shape[0], -1).shape) == 1:
        return False
    return ref.cc_loss(**{**inputs, "reduction": "sum"}, convention=convention) < 1e-3


@st.composite
def cc_adjacent_inputs(draw, convention: str = "repdistiller", *, gradient: bool = False,
                       knobs: bool = True) -> dict:
    """Keyword arguments of ``cc_adjacent_residual_loss``: student and teacher of one width,
    n = 2 … 6 (2 and 3 often), with the patterns of :func:`embedding_pairs`. With ``gradient``:
    every residual at least 0.25 in magnitude (the absolute value has a kink at 0)."""
    ref.CC_ADJACENT_RESIDUAL_LOSS.conventions.canonical(convention)
    student, teacher = draw(embedding_pairs(min_n=2, same_width=True, gradient=gradient))
    if gradient:
        magnitude = draw(hnp.arrays(np.float64, student.shape, elements=st.floats(0.25, 2.0)))
        sign = draw(hnp.arrays(np.float64, student.shape, elements=st.sampled_from([-1.0, 1.0])))
        teacher = student - magnitude * sign
    inputs = {"student": student, "teacher": teacher}
    if knobs and draw(st.integers(0, 3)) == 0:
        inputs["reduction"] = "sum"
    return inputs
