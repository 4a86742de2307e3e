"""Strategies for RKD: embedding pairs with RKD's knobs, drawn where the Gram form of the distances
(kdref.torch) is accurate to about ε·κ (:func:`conditioning`): samples coincident or at least 1e-2 of
the spread apart in value draws (κ ≤ ~1e4), every pair apart in gradient draws (κ ≤ 1e3)."""

from __future__ import annotations

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from kdref.reference._common import pairwise_sq_distances
from kdref.reference.rkd import RKD_ANGLE_LOSS, RKD_DISTANCE_LOSS
from kdref.strategies.embeddings import PATTERNS, embedding_pairs, irregular

__all__ = ["conditioning", "rkd_inputs"]


def conditioning(x: np.ndarray, *, coincident: bool = True) -> float:
    """κ = max (‖c_i‖² + ‖c_j‖²) / d²_ij over the pairs of centred rows ``c`` of ``x`` (flattened) at a
    positive distance, at least 1: two samples much closer to each other than to the batch mean are
    where the Gram form loses digits. With ``coincident=False`` two coincident rows make it infinite."""
    c = x.reshape(len(x), -1)
    c = c - c.mean(axis=0)
    sq, d2 = np.sum(c * c, axis=1), pairwise_sq_distances(c)
    positive = d2 > 0
    if not coincident and np.any(~np.eye(len(x), dtype=bool) & ~positive):
        return np.inf
    return float(max(1.0, np.max(((sq[:, None] + sq[None, :]) / np.where(positive, d2, 1.0))[positive], initial=1.0)))


def _spread(flat: np.ndarray) -> float:
    """The largest distance of a row from the batch mean."""
    return float(np.sqrt(np.max(np.sum((flat - flat.mean(axis=0)) ** 2, axis=1), initial=0.0)))


def _smooth(x: np.ndarray) -> np.ndarray:
    """``x`` flattened (with a second, irregular column if ``D = 1``: 1-D cosines are all ±1, where the
    angle term is flat and its computed gradient rounding noise), nudged off the Huber kink
    |Δψ| = 1 (no second derivative there), and scaled to unit spread (the loss is scale invariant:
    finite differences see curvature of order 1)."""
    flat = x.reshape(len(x), -1)
    flat = np.hstack([flat, irregular((len(x), 1))[::-1]]) if flat.shape[1] == 1 else flat
    flat = flat + 1e-2 * irregular(flat.shape)
    return flat / _spread(flat) if _spread(flat) > 0 else flat


def _snap(x: np.ndarray, fraction: float = 1e-2) -> np.ndarray:
    """Rows closer than ``fraction`` of the batch's spread to an earlier row become copies of it."""
    flat = x.reshape(len(x), -1).copy()
    spread = _spread(flat)
    for j in range(1, len(flat)):
        close = np.flatnonzero(np.linalg.norm(flat[:j] - flat[j], axis=1) < fraction * spread)
        if close.size:
            flat[j] = flat[close[0]]
    return flat.reshape(x.shape)


@st.composite
def rkd_inputs(draw, loss: str = "rkd_loss", convention: str = "paper", *, max_n: int = 6, max_d: int = 4,
               gradient: bool = False, knobs: bool = True) -> dict:
    """Keyword arguments of ``loss`` (``rkd_distance_loss``, ``rkd_angle_loss`` or ``rkd_loss``) under
    ``convention``: student ``[N, D_s]`` (sometimes ``[N, a, b]``), teacher ``[N, D_t]``, N ≥ 2 (≥ 1
    for the angle term), and with ``knobs`` sometimes an explicit reduction, tuple set, clamp, μ rule
    or squared distances (and the weights of ``rkd_loss``)."""
    # a large common offset costs finite differences ε·offset/h: the gradient draws leave it out, and
    # keep away from the kinks at coincident samples
    student, teacher = draw(embedding_pairs(min_n=1 if loss == "rkd_angle_loss" else 2, max_n=max_n, max_d=max_d,
                                            gradient=gradient, extra_axes=True,
                                            patterns=("plain",) if gradient else PATTERNS))
    # float32 squares of magnitudes below ~1e-19 underflow (kdref does not rescale the batch before
    # forming the Gram matrix): entries are 0 or at least 1e-6 in size
    student, teacher = (np.where(np.abs(x) < 1e-6, 0.0, x) for x in (student, teacher))
    if gradient:
        student, teacher = _smooth(student), _smooth(teacher)
        assume(max(conditioning(student, coincident=False), conditioning(teacher, coincident=False)) <= 1e3)
    else:
        student, teacher = _snap(student), _snap(teacher)
    x = {"student": student, "teacher": teacher}
    if knobs and draw(st.booleans()):  # every knob the loss declares; a clamp of 0 or the official 1e-12
        declared = (RKD_ANGLE_LOSS if loss == "rkd_angle_loss" else RKD_DISTANCE_LOSS).knobs
        x.update({k.name: draw(st.sampled_from(k.choices or (0.0, 1e-12))) for k in declared})
    if loss == "rkd_loss" and knobs and draw(st.booleans()):
        x["w_dist"], x["w_angle"] = draw(st.sampled_from([1.0, 25.0])), draw(st.sampled_from([0.0, 2.0, 50.0]))
    angle = RKD_ANGLE_LOSS.resolve(convention, **{k: x.get(k) for k in ("reduction", "tuples")})
    if loss != "rkd_distance_loss" and len(student) < RKD_ANGLE_LOSS.min_batch(angle)[0]:
        x["reduction"] = "sum"  # no distinct triplet to average over
    return x
