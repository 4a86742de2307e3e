"""Strategies for the logit family (ST, Logits, DML): logits with ties, teacher = student,
per-row shifts and magnitudes up to ±1e4; a batch of one, two classes."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

__all__ = ["dml_inputs", "hinton_inputs", "labels", "logit_pairs", "logits", "logits_inputs", "st_inputs",
           "temperatures", "torchdistill_inputs"]

#: scales of the [-10, 10] base values: logits up to ±10, ±0.01, ±300 and ±1e4
_MAGNITUDES = (1.0, 1e-3, 30.0, 1e3)


def logits(n: int, c: int, *, max_magnitude: float = 1e4) -> st.SearchStrategy[np.ndarray]:
    """Float64 logits ``[n, c]``: values in [-10, 10] times a scale up to ``max_magnitude``,
    sometimes rounded to integers so that ties are common."""
    base = hnp.arrays(np.float64, (n, c), elements=st.floats(-10, 10, allow_subnormal=False))
    scales = st.sampled_from([m for m in _MAGNITUDES if m * 10 <= max_magnitude])
    return st.builds(lambda z, scale, tie: (np.round(z) if tie else z) * scale, base, scales, st.booleans())


@st.composite
def logit_pairs(draw, *, min_n: int = 1, max_n: int = 8, min_c: int = 2, max_c: int = 8,
                max_magnitude: float = 1e4) -> tuple[np.ndarray, np.ndarray]:
    """A student and a teacher of one shape. The teacher is independent, equal to the student,
    the student shifted by a per-row constant, or the student plus a small perturbation."""
    n, c = draw(st.integers(min_n, max_n)), draw(st.integers(min_c, max_c))
    student = draw(logits(n, c, max_magnitude=max_magnitude))
    teacher = draw(st.one_of(
        logits(n, c, max_magnitude=max_magnitude),  # independent
        st.just(student.copy()),  # equal
        hnp.arrays(np.float64, (n, 1), elements=st.floats(-5, 5)).map(lambda shift: student + shift),
        hnp.arrays(np.float64, (n, c), elements=st.floats(-1e-3, 1e-3)).map(lambda noise: student + noise),
    ))
    return student, teacher


def temperatures(*, gradient: bool = False) -> st.SearchStrategy[float]:
    """Temperatures the literature uses, arbitrary ones in [0.1, 50], and, in value draws, the
    extremes: 1e-3 to 1e-30 (a one-hot softmax) and 1e3 to 1e12 (where
    T²·KL is a difference of nearly equal log-probabilities unless computed with care)."""
    usual = st.one_of(st.sampled_from([0.5, 1.0, 2.0, 4.0, 20.0]), st.floats(0.5 if gradient else 0.1, 50.0))
    if gradient:
        return usual
    # (beyond 1e12 the cross-entropy times T² leaves float32's range: tests/test_edge_cases.py)
    extreme = st.sampled_from([1e-30, 1e-8, 1e-3, 1e3, 1e4, 1e6, 1e8, 1e12])
    return st.one_of(usual, usual, extreme)


def labels(n: int, c: int) -> st.SearchStrategy[np.ndarray]:
    """Integer labels ``[n]`` in ``[0, c)``."""
    return hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1))


def _max_magnitude(gradient: bool) -> float:
    return 10.0 if gradient else 1e4


def logits_inputs(*, gradient: bool = False) -> st.SearchStrategy[dict]:
    """``student`` and ``teacher`` for :func:`kdref.reference.logits.logit_regression_loss`."""
    return logit_pairs(max_magnitude=_max_magnitude(gradient)).map(lambda p: {"student": p[0], "teacher": p[1]})


def st_inputs(*, gradient: bool = False) -> st.SearchStrategy[dict]:
    """``student``, ``teacher`` and ``T`` for :func:`kdref.reference.st.soft_target_loss`."""
    return st.builds(lambda x, T: {**x, "T": T}, logits_inputs(gradient=gradient), temperatures(gradient=gradient))


@st.composite
def hinton_inputs(draw, *, gradient: bool = False) -> dict:
    """:func:`st_inputs` plus ``labels``, ``soft_weight`` and ``hard_weight``."""
    inputs = draw(st_inputs(gradient=gradient))
    weights = st.floats(0.0, 2.0)
    return {**inputs, "labels": draw(labels(*inputs["student"].shape)), "soft_weight": draw(weights),
            "hard_weight": draw(weights)}


@st.composite
def torchdistill_inputs(draw, *, gradient: bool = False) -> dict:
    """:func:`st_inputs` plus the optional ``labels``, ``alpha`` and ``beta`` of torchdistill's KDLoss."""
    inputs = draw(st_inputs(gradient=gradient))
    if draw(st.booleans()):
        inputs["labels"] = draw(labels(*inputs["student"].shape))
    return {**inputs, "alpha": draw(st.sampled_from([None, 0.0, 0.1, 0.5, 0.9])),
            "beta": draw(st.one_of(st.none(), st.floats(0.0, 1.0)))}


@st.composite
def dml_inputs(draw, *, gradient: bool = False, with_labels: bool = False, max_peers: int = 3) -> dict:
    """``z_self`` and ``z_peers`` (1 to ``max_peers`` peers), plus ``labels`` if asked."""
    z_self, first_peer = draw(logit_pairs(max_magnitude=_max_magnitude(gradient)))
    more = draw(st.lists(logits(*z_self.shape, max_magnitude=_max_magnitude(gradient)), max_size=max_peers - 1))
    inputs = {"z_self": z_self, "z_peers": [first_peer, *more]}
    return {**inputs, "labels": draw(labels(*z_self.shape))} if with_labels else inputs
