"""Strategies for PKT: a student ``[N, D_s]`` and a teacher ``[N, D_t]`` whose widths may differ,
drawn with the relational patterns of :mod:`kdref.strategies.embeddings` (duplicated samples, a
collapsed batch, all-zero rows, a large common offset, N = 1, 2, 3)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from kdref.reference.pkt import PKT_LOSS
from kdref.strategies.embeddings import embedding_pairs

__all__ = ["pkt_inputs", "well_posed_rows"]


def well_posed_rows(x: np.ndarray, *, nonzero: bool, smooth: bool) -> np.ndarray:
    """``x`` (``[N, ...]``) moved away from the points where the loss is ill-conditioned, keeping its
    pattern (duplicates stay duplicates, a collapsed batch stays collapsed):

    - no two samples nearly antipodal (cosine below -0.98, so K ≥ 0.01 and float32's ~1e-7 error in
      a cosine stays a small relative error of every kernel value): such a batch is replaced by its
      absolute values (a cosine of −1 makes the paper's KL infinite and the official one ~1/ε
      sensitive to rounding; the tests check antipodes);
    - ``nonzero``: no row that is zero, or zero once rounded to float32 (the loss with ``eps = 0``
      refuses it); such a row becomes all ones;
    - ``smooth``: every row has norm ≥ 0.25 (finite differences resolve the curvature ~1/‖x‖²,
      and stay far from ε's scale); a shorter row is shifted by +0.5.
    """
    flat = x.reshape(x.shape[0], -1).copy()
    if nonzero:
        flat[np.max(np.abs(flat), axis=1) < 1e-30] = 1.0
    if smooth:
        flat[np.linalg.norm(flat, axis=1) < 0.25] += 0.5
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    unit = flat / np.where(norms > 0, norms, 1.0)
    if np.min(unit @ unit.T, initial=1.0) < -0.98:
        flat = np.abs(flat)
    return flat.reshape(x.shape)


@st.composite
def pkt_inputs(draw, convention: str = "paper", *, gradient: bool = False, min_n: int | None = None,
               max_n: int = 6, knobs: bool = True) -> dict:
    """Keyword arguments of ``pkt_loss`` for ``convention``: ``student`` ``[N, D_s]`` (sometimes
    ``[N, a, b]``) and ``teacher`` ``[N, D_t]``, ``D ≤ 5``, ``N`` from 1 (2 without the self-pairs)
    to ``max_n``, the smallest drawn often; the teacher is sometimes the student. Rows pass through
    :func:`well_posed_rows` (the official conventions keep their all-zero rows in value draws). With
    ``knobs``, sometimes a ``reduction``; ``"none"`` (a ``[N]`` result) only in value draws, since
    the properties compare whole losses."""
    preset = PKT_LOSS.resolve(convention)
    fewest = 1 if preset["include_self"] else 2
    student, teacher = draw(embedding_pairs(min_n=max(fewest, min_n or fewest), max_n=max_n, max_d=5,
                                            gradient=gradient, extra_axes=True))
    same = student.shape == teacher.shape and np.array_equal(student, teacher)
    rows = {"nonzero": preset["eps"] == 0, "smooth": gradient}
    student = well_posed_rows(student, **rows)
    inputs = {"student": student, "teacher": student.copy() if same else well_posed_rows(teacher, **rows)}
    reduction = draw(st.sampled_from([None, "sum", "mean"] + ([] if gradient else ["none"]))) if knobs else None
    return inputs if reduction is None else {**inputs, "reduction": reduction}
