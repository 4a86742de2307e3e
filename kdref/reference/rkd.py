r"""RKD — relational knowledge distillation (Park, Kim, Lu & Cho, CVPR 2019), NumPy reference.

The student is not asked to reproduce the teacher's embeddings, only the *relations* among the
embeddings of a mini-batch: how far apart two samples are (distance-wise) and which angle three
samples form (angle-wise). Both relations are unchanged when a batch is translated, rotated or
uniformly scaled, so the student's embedding space may differ from the teacher's in all of these
(and in width); what it must keep is the batch's shape.

**The paper's loss [reconstructed].** With :math:`t_i` (teacher) and :math:`s_i` (student) the
embeddings of sample :math:`i`, the distance-wise potential is a distance normalised by the mean
distance :math:`\mu` over the ordered distinct pairs :math:`\mathcal X^2=\{(i,j)\mid i\ne j\}` of
the *same* network,

.. math::
   \psi_D(t_i,t_j)=\frac{1}{\mu}\lVert t_i-t_j\rVert_2,\qquad
   \mu=\frac{1}{|\mathcal X^2|}\sum_{(i,j)\in\mathcal X^2}\lVert t_i-t_j\rVert_2,

the angle-wise potential is the cosine of the angle at the middle sample,

.. math::
   \psi_A(t_i,t_j,t_k)=\langle e^{ij},e^{kj}\rangle,\qquad e^{ij}=\frac{t_i-t_j}{\lVert t_i-t_j\rVert_2},

and each loss sums the Huber loss :math:`\ell_\delta` (:math:`\delta=1`) of the two networks'
potentials over the tuples of distinct samples:

.. math::
   \mathcal L_{\text{RKD-D}}=\sum_{(i,j)\in\mathcal X^2}\ell_\delta\big(\psi_D(t_i,t_j),\psi_D(s_i,s_j)\big),\qquad
   \mathcal L_{\text{RKD-A}}=\sum_{(i,j,k)\in\mathcal X^3}\ell_\delta\big(\psi_A(t_i,t_j,t_k),\psi_A(s_i,s_j,s_k)\big).

These formulas are **reconstructed** (from transcriptions of the paper's Sec. 3; its own text
could not be checked). **[code]** Every library computes the official code's version instead: the
same potentials averaged over all :math:`N^2` pairs and :math:`N^3` triplets, degenerate ones
included (the ``"official"`` convention, which is the paper's sum divided by :math:`N^2` and
:math:`N^3` when no two samples coincide).

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
    "distances",
    "distinct_tuples",
    "huber",
    "rkd_angle_loss",
    "rkd_distance_loss",
    "rkd_loss",
]


def distances(x: np.ndarray, *, clamp_sq: float = 0.0, squared: bool = False) -> np.ndarray:
    r"""Pairwise distances :math:`\lVert x_i-x_j\rVert_2`, ``[N, N]``; off the diagonal the squared
    distance is first raised to ``clamp_sq`` (the official code's 1e-12, so coincident samples sit
    at 1e-6); ``squared`` keeps :math:`d^2` (mdistiller's option). The diagonal is 0."""
    # $d^2_{ij}=\lVert x_i-x_j\rVert_2^2$
    d2 = pairwise_sq_distances(x)
    off_diagonal = ~np.eye(len(x), dtype=bool)
    # official: $d^2_{ij}\leftarrow\max(d^2_{ij},10^{-12})$ for $i\ne j$
    d2 = np.where(off_diagonal, np.maximum(d2, clamp_sq), 0.0)
    # $d_{ij}=\sqrt{d^2_{ij}}$
    return d2 if squared else np.sqrt(d2)


def distance_potential(x: np.ndarray, *, clamp_sq: float = 0.0, mu: str = "offdiag",
                       squared: bool = False) -> np.ndarray:
    r"""The distance-wise potential :math:`\psi_D(x_i,x_j)=d_{ij}/\mu`, ``[N, N]``, with
    :math:`\mu` the mean of the off-diagonal distances (``mu="offdiag"``, the paper) or of the
    positive ones (``"positive"``, the official code)."""
    d = distances(x, clamp_sq=clamp_sq, squared=squared)
    off_diagonal = ~np.eye(len(x), dtype=bool)
    counted = off_diagonal if mu == "offdiag" else d > 0
    # $\mu=\frac{1}{|\mathcal X^2|}\sum_{(i,j)\in\mathcal X^2}d_{ij}$
    mean = np.mean(d[counted]) if np.any(counted) else 0.0
    # $\psi_D(x_i,x_j)=d_{ij}/\mu$ (every potential 0 in a collapsed batch, where $\mu=0$)
    return d / mean if mean > 0 else np.zeros_like(d)


def huber(a: np.ndarray, b: np.ndarray, delta: float = 1.0) -> np.ndarray:
    r"""The Huber loss :math:`\ell_\delta(a,b)` elementwise (PyTorch's ``smooth_l1_loss`` with
    β = 1 is δ = 1)."""
    r = np.abs(a - b)
    # $\ell_\delta(a,b)=\tfrac12(a-b)^2$ for $|a-b|\le\delta$, else $\delta(|a-b|-\tfrac12\delta)$
    return np.where(r <= delta, 0.5 * r**2, delta * (r - 0.5 * delta))


def angle_potential(x: np.ndarray) -> np.ndarray:
    r"""The angle-wise potential :math:`A_{jik}=\psi_A(x_i,x_j,x_k)`, ``[N, N, N]``: the cosine at
    the vertex :math:`x_j` (first index), 0 where an edge has length 0."""
    # $x_i-x_j$, vertex $j$ first
    edges = x[None, :, :] - x[:, None, :]
    # $\lVert x_i-x_j\rVert_2$
    lengths = np.linalg.norm(edges, axis=-1, keepdims=True)
    # $e^{ij}=(x_i-x_j)/\lVert x_i-x_j\rVert_2$, and $e^{ij}=0$ for a zero-length edge
    e = np.divide(edges, lengths, out=np.zeros_like(edges), where=lengths > 0)
    # $\psi_A(x_i,x_j,x_k)=\langle e^{ij},e^{kj}\rangle$
    return np.einsum("jid,jkd->jik", e, e)


def distinct_tuples(n: int, order: int) -> np.ndarray:
    r"""The tuples :math:`\mathcal X^{n}` of distinct samples as a mask of the ``N**order`` index
    tuples: ordered pairs :math:`i\ne j` (``order=2``), triplets :math:`i\ne j\ne k`, :math:`i\ne k`
    (``order=3``)."""
    index = np.indices((n,) * order)
    # $\mathcal X^n=\{(x_{i_1},\dots,x_{i_n})\mid i_a\ne i_b\}$
    return np.all([index[a] != index[b] for a in range(order) for b in range(a + 1, order)], axis=0)


def _reduce(terms: np.ndarray, tuples: str, reduction: str) -> float:
    """The terms summed (or averaged) over the distinct tuples, or over all of them."""
    mask = distinct_tuples(len(terms), terms.ndim) if tuples == "distinct" else np.ones(terms.shape, dtype=bool)
    total = float(np.sum(terms[mask]))
    return total if reduction == "sum" else total / np.count_nonzero(mask)


def _distance_term(s: np.ndarray, t: np.ndarray, tuples: str, reduction: str, **potential) -> float:
    # $\mathcal L_{\text{RKD-D}}=\sum_{\mathcal X^2}\ell_\delta(\psi_D(t_i,t_j),\psi_D(s_i,s_j))$
    return _reduce(huber(distance_potential(t, **potential), distance_potential(s, **potential)), tuples, reduction)


def _angle_term(s: np.ndarray, t: np.ndarray, tuples: str, reduction: str) -> float:
    # $\mathcal L_{\text{RKD-A}}=\sum_{\mathcal X^3}\ell_\delta(\psi_A(t_i,t_j,t_k),\psi_A(s_i,s_j,s_k))$
    return _reduce(huber(angle_potential(t), angle_potential(s)), tuples, reduction)


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


# ---------------------------------------------------------------------------------------------
# The losses


@RKD_DISTANCE_LOSS.implement(NUMPY)
def rkd_distance_loss(student: np.ndarray, teacher: np.ndarray, *, tuples: str, reduction: str, clamp_sq: float,
                      mu: str, squared: bool) -> float:
    r"""Distance-wise RKD [reconstructed]: the Huber loss of the normalised distances of the two
    networks, summed over the ordered distinct pairs ("paper").

    .. math:: \mathcal L_{\text{RKD-D}}=\sum_{i\ne j}\ell_1\big(\psi_D(t_i,t_j),\psi_D(s_i,s_j)\big)

    ``"official"`` averages over all :math:`N^2` pairs instead (the diagonal adds 0): the paper's
    sum divided by :math:`N^2`.

    Returns:
      a float. Needs :math:`N\ge2` (a pair for :math:`\mu`); at :math:`N=2` it is 0.

    Examples:
      >>> import numpy as np
      >>> T_A = np.array([[1.0, 0, 0], [0, 2, 0], [0, 0, 3], [1, 1, 1]])
      >>> S_A = np.array([[1.0, 0], [0, 1], [1, 1], [2, -1]])
      >>> print(f"{rkd_distance_loss(S_A, T_A):.8g}")
      2.4560696
      >>> print(f"{rkd_distance_loss(S_A, T_A, reduction='mean'):.8g}")
      0.20467246
      >>> print(f"{rkd_distance_loss(S_A, T_A, convention='official'):.8g}")
      0.15350435

    References:
      Park, Kim, Lu, Cho. *Relational Knowledge Distillation*, CVPR 2019, Sec. 3.2 (reconstructed).

    .. seealso:: :func:`rkd_angle_loss`, the same over triplets of angles; :func:`rkd_loss`, both
       weighted.
    """
    return _distance_term(student, teacher, tuples, reduction, clamp_sq=clamp_sq, mu=mu, squared=squared)


@RKD_ANGLE_LOSS.implement(NUMPY)
def rkd_angle_loss(student: np.ndarray, teacher: np.ndarray, *, tuples: str, reduction: str) -> float:
    r"""Angle-wise RKD [reconstructed]: the Huber loss of the cosines of the two networks, summed
    over the distinct triplets ("paper").

    .. math:: \mathcal L_{\text{RKD-A}}=\sum_{i\ne j\ne k}\ell_1\big(\psi_A(t_i,t_j,t_k),\psi_A(s_i,s_j,s_k)\big)

    ``"official"`` averages over all :math:`N^3` triplets instead: the paper's sum divided by
    :math:`N^3` when no two samples coincide. The distance potential's knobs (``clamp_sq``, ``mu``,
    ``squared``) do not exist here: they would not change the angle.

    Returns:
      a float. The sum over no triplet (:math:`N<3`) is 0; the mean over distinct triplets needs
      :math:`N\ge3`.

    Examples:
      >>> import numpy as np
      >>> T_A = np.array([[1.0, 0, 0], [0, 2, 0], [0, 0, 3], [1, 1, 1]])
      >>> S_A = np.array([[1.0, 0], [0, 1], [1, 1], [2, -1]])
      >>> print(f"{rkd_angle_loss(S_A, T_A):.8g}")
      11.088954
      >>> print(f"{rkd_angle_loss(S_A, T_A, reduction='mean'):.8g}")
      0.46203975
      >>> print(f"{rkd_angle_loss(S_A, T_A, convention='official'):.7g}")
      0.1732649

    References:
      Park, Kim, Lu, Cho. *Relational Knowledge Distillation*, CVPR 2019, Sec. 3.2 (reconstructed).

    .. seealso:: :func:`rkd_distance_loss`, the same over pairs of distances; :func:`rkd_loss`, both
       weighted.
    """
    return _angle_term(student, teacher, tuples, reduction)


@RKD_LOSS.implement(NUMPY)
def rkd_loss(student: np.ndarray, teacher: np.ndarray, w_dist: float | None, w_angle: float | None, *, tuples: str,
             reduction: str, clamp_sq: float, mu: str, squared: bool) -> float:
    r"""RKD-DA, the two terms weighted.

    .. math:: \lambda_D\,\mathcal L_{\text{RKD-D}}+\lambda_A\,\mathcal L_{\text{RKD-A}}

    The defaults 1 and 2 are the official metric-learning weights; RepDistiller, mdistiller and
    KD-Zoo use 25 and 50 for classification. A term whose weight is 0 is skipped (as torchdistill
    does). ``tuples`` and ``reduction`` apply to both terms, the other knobs to the distance term.

    Returns:
      a float.

    Examples:
      >>> import numpy as np
      >>> T_A = np.array([[1.0, 0, 0], [0, 2, 0], [0, 0, 3], [1, 1, 1]])
      >>> S_A = np.array([[1.0, 0], [0, 1], [1, 1], [2, -1]])
      >>> print(f"{rkd_loss(S_A, T_A, 25.0, 50.0, convention='official'):.8g}")
      12.500854
      >>> print(f"{rkd_loss(S_A, T_A, convention='official'):.8g}")
      0.50003416

    References:
      Park, Kim, Lu, Cho. *Relational Knowledge Distillation*, CVPR 2019, Sec. 3 (reconstructed); the
      weights of lenscloth/RKD's ``examples/*.sh`` and of RepDistiller.

    .. seealso:: :func:`rkd_distance_loss` and :func:`rkd_angle_loss`, the two terms.
    """
    # $\lambda_D=1$, $\lambda_A=2$ unless given
    w_dist = 1.0 if w_dist is None else w_dist
    w_angle = 2.0 if w_angle is None else w_angle
    total = 0.0
    # $\lambda_D\mathcal L_{\text{RKD-D}}+\lambda_A\mathcal L_{\text{RKD-A}}$, a term of weight 0 skipped
    if w_dist > 0 or w_angle == 0:
        total += w_dist * _distance_term(student, teacher, tuples, reduction, clamp_sq=clamp_sq, mu=mu,
                                         squared=squared)
    if w_angle > 0:
        total += w_angle * _angle_term(student, teacher, tuples, reduction)
    return total
