"""Strategies for RKD: embedding pairs with RKD's knobs, and how well separated the samples are.

The Gram form of the distances (kdref.torch) is accurate to about ε·κ with
κ = max (‖c_i‖² + ‖c_j‖²) / d²_ij over the distinct, non-coincident pairs of centred rows: two
samples much closer to each other than to the batch mean are where it loses digits. The value
draws therefore make samples either coincident or at least 1e-2 of the spread apart (κ ≤ ~1e4);
the gradient draws keep every pair apart (κ ≤ 1e3), away from the kinks at coincident samples,
and have unit spread and no large offset. Entries below 1e-6 in magnitude are flushed to 0: their float32 squares
underflow (kdref does not rescale the batch before forming the Gram matrix).
"""

from __future__ import annotations

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from kdref.reference.rkd import RKD_ANGLE_LOSS
from kdref.strategies.embeddings import PATTERNS, embedding_pairs, irregular

__all__ = ["conditioning", "rkd_inputs"]

_LOSSES = ("rkd_distance_loss", "rkd_angle_loss", "rkd_loss")


def conditioning(x: np.ndarray, *, coincident: bool = True) -> float:
    """κ of the rows of ``x`` (flattened): the worst ratio of squared norm (after centring) to squared
    distance over the pairs at a positive distance (1 when there is none); with
    ``coincident=False``, any two coincident rows make it infinite."""
    c = x.reshape(len(x), -1)
    c = c - c.mean(axis=0)
    sq = np.sum(c * c, axis=1)
    d2 = np.sum((c[:, None] - c[None]) ** 2, axis=-1)
    distinct = ~np.eye(len(x), dtype=bool)
    positive = d2 > 0
    if not coincident and np.any(distinct & ~positive):
        return np.inf
    if not np.any(positive):
        return 1.0
    return float(max(1.0, np.max(((sq[:, None] + sq[None, :]) / np.where(positive, d2, 1.0))[positive])))


def _planar(x: np.ndarray) -> np.ndarray:
    """``x`` flattened to ``[N, D]``, with a second column of irregular values if ``D = 1``."""
    flat = x.reshape(len(x), -1)
    return np.hstack([flat, irregular((len(x), 1))[::-1]]) if flat.shape[1] == 1 else flat


def _unit_spread(x: np.ndarray) -> np.ndarray:
    """``x`` divided by the largest distance of a row from the batch mean (unless that is 0)."""
    flat = x.reshape(len(x), -1)
    spread = np.sqrt(np.max(np.sum((flat - flat.mean(axis=0)) ** 2, axis=1)))
    return x / spread if spread > 0 else x


def _snap(x: np.ndarray, fraction: float) -> np.ndarray:
    """Rows closer than ``fraction`` of the batch's spread to an earlier row become copies of it."""
    flat = x.reshape(len(x), -1).copy()
    spread = np.sqrt(np.max(np.sum((flat - flat.mean(axis=0)) ** 2, axis=1), initial=0.0))
    for j in range(1, len(flat)):
        gaps = np.linalg.norm(flat[:j] - flat[j], axis=1)
        close = np.flatnonzero(gaps < fraction * spread)
        if close.size:
            flat[j] = flat[close[0]]
    return flat.reshape(x.shape)


@st.composite
def rkd_inputs(draw, loss: str = "rkd_loss", convention: str = "paper", *, min_n: int = 1, max_n: int = 6,
               max_d: int = 4, gradient: bool = False, knobs: bool = True) -> dict:
    """Keyword arguments of ``loss`` (one of ``rkd_distance_loss``, ``rkd_angle_loss``, ``rkd_loss``)
    under ``convention``:
    student ``[N, D_s]`` (sometimes ``[N, a, b]``), teacher ``[N, D_t]``, N ≥ ``min_n``, and with
    ``knobs`` sometimes an explicit reduction, tuple set, clamp, μ rule or squared distances (and
    the weights of ``rkd_loss``)."""
    if loss not in _LOSSES:
        raise ValueError(f"loss must be one of {_LOSSES}, got {loss!r}")
    # a large common offset costs finite differences ε·offset/h: the gradient draws leave it out
    student, teacher = draw(embedding_pairs(min_n=min_n, max_n=max_n, max_d=max_d, gradient=gradient,
                                            extra_axes=True, patterns=("plain",) if gradient else PATTERNS))
    # float32 squares of magnitudes below ~1e-19 underflow: entries are 0 or at least 1e-6 in size
    student, teacher = (np.where(np.abs(x) < 1e-6, 0.0, x) for x in (student, teacher))
    if gradient:
        # unit spread (the loss is scale invariant): finite differences see curvature of order 1;
        # an irregular nudge keeps simple coordinates off the Huber kink |Δψ| = 1 (no second derivative)
        # and a second axis for 1-D embeddings, whose cosines are all ±1 (the angle term is flat there
        # and its computed gradient is rounding noise)
        student, teacher = (_unit_spread(_planar(x) + 1e-2 * irregular(_planar(x).shape))
                            for x in (student, teacher))
        assume(max(conditioning(student, coincident=False), conditioning(teacher, coincident=False)) <= 1e3)
    else:
        student, teacher = _snap(student, 1e-2), _snap(teacher, 1e-2)
    x = {"student": student, "teacher": teacher}
    if knobs and draw(st.booleans()):
        x["reduction"] = draw(st.sampled_from(["sum", "mean"]))
        x["tuples"] = draw(st.sampled_from(["distinct", "all"]))
        if loss != "rkd_angle_loss":
            x["clamp_sq"] = draw(st.sampled_from([0.0, 1e-12]))
            x["mu"] = draw(st.sampled_from(["offdiag", "positive"]))
            x["squared"] = draw(st.booleans())
    if loss == "rkd_loss" and knobs and draw(st.booleans()):
        x["w_dist"] = draw(st.sampled_from([1.0, 25.0]))
        x["w_angle"] = draw(st.sampled_from([0.0, 2.0, 50.0]))
    angle = RKD_ANGLE_LOSS.resolve(convention, **{k.name: x.get(k.name) for k in RKD_ANGLE_LOSS.knobs})
    if loss != "rkd_distance_loss" and len(student) < RKD_ANGLE_LOSS.min_batch(angle)[0]:
        x["reduction"] = "sum"  # no distinct triplet to average over
    return x
