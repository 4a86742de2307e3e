r"""RKD — relational knowledge distillation (Park, Kim, Lu & Cho, CVPR 2019), NumPy reference.

The student is not asked to reproduce the teacher's embeddings, only the *relations* among the
embeddings of a mini-batch: how far apart two samples are (distance-wise) and which angle three
samples form (angle-wise). Both potentials are invariant to translating, rotating or uniformly
scaling a batch, so the student's embedding space may differ from the teacher's in all of these
(and in width).

With :math:`t_i` (teacher) and :math:`s_i` (student) the embeddings of sample :math:`i`, and
:math:`\ell_\delta` the Huber loss,

.. math::
   \psi_D(t_i,t_j)=\frac{\lVert t_i-t_j\rVert_2}{\mu},\qquad
   \psi_A(t_i,t_j,t_k)=\Big\langle\frac{t_i-t_j}{\lVert t_i-t_j\rVert},\frac{t_k-t_j}{\lVert t_k-t_j\rVert}\Big\rangle,

.. math::
   \mathcal L_{\text{RKD-D}}=\sum_{i\ne j}\ell_\delta\big(\psi_D(t_i,t_j),\psi_D(s_i,s_j)\big),\qquad
   \mathcal L_{\text{RKD-A}}=\sum_{i\ne j\ne k}\ell_\delta\big(\psi_A(t_i,t_j,t_k),\psi_A(s_i,s_j,s_k)\big),

where :math:`\mu` is the mean off-diagonal distance of the same network. These formulas are
**reconstructed** (from transcriptions of the paper's Sec. 3; its own text could not be checked).
Every library computes the official code's version instead: the same potentials averaged over all
:math:`N^2` pairs and :math:`N^3` triplets, degenerate ones included (the ``"official"`` convention).

**Degenerate entries.** A zero-length edge (two coincident samples) has no direction: kdref's
cosine is 0 there, as the official code's, and its gradient is 0 (the official backward is
~1e10 there). A zero distance has gradient 0 (the subgradient of the norm at 0).

Arrays are ``[N, ...]``: every axis after the batch axis is flattened into one vector per sample.
"""

from __future__ import annotations

import numpy as np

from kdref.declaration import Arg, Declaration, Knob
from kdref.reference._common import NUMPY, pairwise_sq_distances

__all__ = [
    "RKD_ANGLE_LOSS",
    "RKD_DISTANCE_LOSS",
    "RKD_LOSS",
    "angle_potential",
    "distance_potential",
    "huber",
    "rkd_angle_loss",
    "rkd_distance_loss",
    "rkd_loss",
]


def huber(a: np.ndarray, b: np.ndarray, delta: float = 1.0) -> np.ndarray:
    r""":math:`\ell_\delta(a,b)=\tfrac12(a-b)^2` for :math:`|a-b|\le\delta`, else
    :math:`\delta(|a-b|-\tfrac12\delta)` (PyTorch's ``smooth_l1_loss`` with β = 1 is δ = 1)."""
    r = np.abs(a - b)
    return np.where(r <= delta, 0.5 * r**2, delta * (r - 0.5 * delta))


def distances(x: np.ndarray, *, clamp_sq: float = 0.0, squared: bool = False) -> np.ndarray:
    r"""Pairwise distances :math:`\lVert x_i-x_j\rVert`; off the diagonal, the squared distance is
    first raised to ``clamp_sq`` (the official code's 1e-12, so coincident samples sit at 1e-6);
    ``squared`` keeps :math:`d^2` (mdistiller's option). The diagonal is 0."""
    d2 = pairwise_sq_distances(x)
    off_diagonal = ~np.eye(len(x), dtype=bool)
    d2 = np.where(off_diagonal, np.maximum(d2, clamp_sq), 0.0)
    return d2 if squared else np.sqrt(d2)


def distance_potential(x: np.ndarray, *, clamp_sq: float = 0.0, mu: str = "offdiag",
                       squared: bool = False) -> np.ndarray:
    r""":math:`\psi_D(x_i,x_j)=d_{ij}/\mu`, with :math:`\mu` the mean of the off-diagonal distances
    (``mu="offdiag"``, the paper) or of the positive ones (``"positive"``, the official code)."""
    d = distances(x, clamp_sq=clamp_sq, squared=squared)
    off_diagonal = ~np.eye(len(x), dtype=bool)
    counted = off_diagonal if mu == "offdiag" else d > 0
    mean = np.mean(d[counted]) if np.any(counted) else 0.0
    # every distance is 0 (a collapsed batch): so is every potential
    return d / mean if mean > 0 else np.zeros_like(d)


def angle_potential(x: np.ndarray) -> np.ndarray:
    r""":math:`A_{jik}=\psi_A(x_i,x_j,x_k)=\langle e^{ij},e^{kj}\rangle`, the cosine at the vertex
    :math:`x_j` (first index), with :math:`e^{ij}=(x_i-x_j)/\lVert x_i-x_j\rVert` and
    :math:`e^{ij}=0` for a zero-length edge."""
    edges = x[None, :, :] - x[:, None, :]  # edges[j, i] = x_i − x_j
    lengths = np.linalg.norm(edges, axis=-1, keepdims=True)
    e = np.divide(edges, lengths, out=np.zeros_like(edges), where=lengths > 0)
    return np.einsum("jid,jkd->jik", e, e)


def _tuples_mask(n: int, order: int, tuples: str) -> np.ndarray:
    """Which of the ``n**order`` index tuples the loss runs over: all, or those of distinct indices."""
    if tuples == "all":
        return np.ones((n,) * order, dtype=bool)
    index = np.indices((n,) * order)
    distinct = np.ones((n,) * order, dtype=bool)
    for a in range(order):
        for b in range(a + 1, order):
            distinct &= index[a] != index[b]
    return distinct


def _reduce(terms: np.ndarray, mask: np.ndarray, reduction: str) -> float:
    total = float(np.sum(terms[mask]))
    return total if reduction == "sum" else total / np.count_nonzero(mask)


def _distance_term(s: np.ndarray, t: np.ndarray, tuples: str, reduction: str, clamp_sq: float, mu: str,
                   squared: bool) -> float:
    potential = {"clamp_sq": clamp_sq, "mu": mu, "squared": squared}
    terms = huber(distance_potential(t, **potential), distance_potential(s, **potential))
    return _reduce(terms, _tuples_mask(len(s), 2, tuples), reduction)


def _angle_term(s: np.ndarray, t: np.ndarray, tuples: str, reduction: str) -> float:
    terms = huber(angle_potential(t), angle_potential(s))
    return _reduce(terms, _tuples_mask(len(s), 3, tuples), reduction)


# ---------------------------------------------------------------------------------------------
# The contract: arguments, knobs and conventions (read by both sides, the proof and the docs)


def _distance_min_batch(knobs) -> tuple[int, str]:
    """A pair, for the distance term's μ."""
    return 2, "for a distance (μ is a mean over pairs)"


def _angle_min_batch(knobs) -> tuple[int, str]:
    """Three samples only when averaging over distinct triplets (a sum over none is 0)."""
    averaged = knobs["reduction"] == "mean" and knobs["tuples"] == "distinct"
    return (3 if averaged else 1), "for a mean over distinct triplets"


def _both_min_batch(knobs) -> tuple[int, str]:
    """The larger of the two terms' minimum batches."""
    angle, distance = _angle_min_batch(knobs), _distance_min_batch(knobs)
    return angle if angle[0] > distance[0] else distance


_PAIR = (
    Arg("student", "embeddings", "student embeddings :math:`s` (every axis after the batch flattened)"),
    Arg("teacher", "embeddings", "teacher embeddings :math:`t`, a constant target; the width may differ",
        like="student", match="batch"),
)

RKD_DISTANCE_LOSS = Declaration(
    name="rkd_distance_loss",
    args=_PAIR,
    knobs=(
        Knob("tuples", "distinct", "``\"distinct\"`` pairs :math:`i\\ne j` and triplets (paper) or ``\"all\"`` "
             ":math:`N^2` and :math:`N^3` entries, degenerate ones included (official)", choices=("distinct", "all")),
        Knob("reduction", "sum", "``\"sum\"`` (paper; torchdistill's ``reduction=\"sum\"``) or ``\"mean\"`` over "
             "the tuples", choices=("sum", "mean")),
        Knob("clamp_sq", 0.0, "the distance potential's floor of :math:`d^2` before the square root (0, or the "
             "official 1e-12)", low=0.0, high=1.0),
        Knob("mu", "offdiag", "the pairs :math:`\\mu` averages: the off-diagonal ones (``\"offdiag\"``) or the "
             "positive ones (``\"positive\"``)", choices=("offdiag", "positive")),
        Knob("squared", False, "mdistiller's squared distances in the distance potential", choices=(False, True)),
    ),
    presets={
        "paper": {},
        "official": {"tuples": "all", "reduction": "mean", "clamp_sq": 1e-12, "mu": "positive"},
    },
    aliases={"kdzoo": "official", "repdistiller": "official", "mdistiller": "official", "torchdistill": "official"},
    descriptions={
        "paper": "Huber over ordered distinct pairs and distinct triplets, summed; exact distances; "
                 "μ the off-diagonal mean [reconstructed]",
        "official": "lenscloth/RKD: smooth-L1 averaged over all N² pairs and N³ triplets (degenerate ones "
                    "included); distances √max(d², 1e-12), μ the mean of the positive ones",
    },
    min_batch=_distance_min_batch,
)

#: the angle term has no distance knobs: its potential is a cosine, with no clamp, μ or square
RKD_ANGLE_LOSS = RKD_DISTANCE_LOSS.derive(
    "rkd_angle_loss",
    drop_knobs=("clamp_sq", "mu", "squared"),
    descriptions={
        "paper": "Huber over distinct triplets, summed; exact cosines [reconstructed]",
        "official": "lenscloth/RKD: smooth-L1 averaged over all N³ triplets (degenerate ones included)",
    },
    min_batch=_angle_min_batch,
)

RKD_LOSS = RKD_DISTANCE_LOSS.derive(
    "rkd_loss",
    args=(*_PAIR,
          Arg("w_dist", "weight", "the distance weight :math:`\\lambda_D`, 1 when ``None``", optional=True),
          Arg("w_angle", "weight", "the angle weight :math:`\\lambda_A`, 2 when ``None``", optional=True)),
    min_batch=_both_min_batch,
)


@RKD_DISTANCE_LOSS.implement(NUMPY)
def rkd_distance_loss(student: np.ndarray, teacher: np.ndarray, *, tuples: str, reduction: str, clamp_sq: float,
                      mu: str, squared: bool) -> float:
    r"""Distance-wise RKD: :math:`\sum_{i\ne j}\ell_1(\psi_D(t_i,t_j),\psi_D(s_i,s_j))` ("paper"),
    or its mean over all :math:`N^2` pairs ("official"). Needs :math:`N\ge2` (a pair for :math:`\mu`).
    """
    return _distance_term(student, teacher, tuples, reduction, clamp_sq, mu, squared)


@RKD_ANGLE_LOSS.implement(NUMPY)
def rkd_angle_loss(student: np.ndarray, teacher: np.ndarray, *, tuples: str, reduction: str) -> float:
    r"""Angle-wise RKD: :math:`\sum_{i\ne j\ne k}\ell_1(\psi_A(t_i,t_j,t_k),\psi_A(s_i,s_j,s_k))`
    ("paper"), or its mean over all :math:`N^3` triplets ("official"). The sum over no triplet
    (:math:`N<3`) is 0; the mean over distinct triplets needs :math:`N\ge3`. The distance
    potential's knobs (``clamp_sq``, ``mu``, ``squared``) do not exist here: they would not change
    the angle.
    """
    return _angle_term(student, teacher, tuples, reduction)


@RKD_LOSS.implement(NUMPY)
def rkd_loss(student: np.ndarray, teacher: np.ndarray, w_dist: float | None, w_angle: float | None, *, tuples: str,
             reduction: str, clamp_sq: float, mu: str, squared: bool) -> float:
    r"""RKD-DA: :math:`\lambda_D\mathcal L_{\text{RKD-D}}+\lambda_A\mathcal L_{\text{RKD-A}}`. The
    defaults 1 and 2 are the official metric-learning weights; RepDistiller, mdistiller and KD-Zoo
    use 25 and 50 for classification. A term whose weight is 0 is skipped (as torchdistill does).
    The knobs are those of :func:`rkd_distance_loss`; ``tuples`` and ``reduction`` apply to both
    terms, the others to the distance term only.
    """
    w_dist = 1.0 if w_dist is None else w_dist
    w_angle = 2.0 if w_angle is None else w_angle
    total = 0.0
    if w_dist > 0 or w_angle == 0:
        total += w_dist * _distance_term(student, teacher, tuples, reduction, clamp_sq, mu, squared)
    if w_angle > 0:
        total += w_angle * _angle_term(student, teacher, tuples, reduction)
    return total
