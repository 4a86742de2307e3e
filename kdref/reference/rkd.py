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
:math:`N^2` pairs and :math:`N^3` triplets, degenerate ones included (see :data:`CONVENTIONS`).

**Degenerate entries.** A zero-length edge (two coincident samples) has no direction: kdref's
cosine is 0 there, as the official code's, and its gradient is 0 (the official backward is
~1e10 there). A zero distance has gradient 0 (the subgradient of the norm at 0).

Arrays are ``[N, ...]``: every axis after the batch axis is flattened into one vector per sample.
"""

from __future__ import annotations

import numpy as np

from kdref._scalars import check_real
from kdref.conventions import Conventions
from kdref.reference._common import as_embeddings, check_min_batch, check_same_batch, pairwise_sq_distances

__all__ = [
    "CONVENTIONS",
    "angle_potential",
    "distance_potential",
    "fewest_samples",
    "huber",
    "resolve_knobs",
    "rkd_angle_loss",
    "rkd_distance_loss",
    "rkd_loss",
]

CONVENTIONS = Conventions(
    loss="rkd_loss",
    defaults={"tuples": "distinct", "reduction": "sum", "clamp_sq": 0.0, "mu": "offdiag", "squared": False},
    presets={
        "paper": {},
        "official": {"tuples": "all", "reduction": "mean", "clamp_sq": 1e-12, "mu": "positive"},
    },
    aliases={"kdzoo": "official", "repdistiller": "official", "mdistiller": "official", "torchdistill": "official"},
    default="paper",
    descriptions={
        "paper": "Huber over ordered distinct pairs and distinct triplets, summed; exact distances; "
                 "μ the off-diagonal mean [reconstructed]",
        "official": "lenscloth/RKD: smooth-L1 averaged over all N² pairs and N³ triplets (degenerate ones "
                    "included); distances √max(d², 1e-12), μ the mean of the positive ones",
    },
    choices={
        "tuples": ("distinct", "all"),
        "reduction": ("sum", "mean"),
        "mu": ("offdiag", "positive"),
        "squared": (False, True),
    },
)


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


def resolve_knobs(convention: str | None, **overrides) -> dict:
    """The knobs of ``convention`` with the explicit ``overrides``, ``clamp_sq`` checked (both sides)."""
    knobs = dict(CONVENTIONS.resolve(convention, **overrides))
    knobs["clamp_sq"] = check_real("clamp_sq", knobs["clamp_sq"], low=0.0, high=1.0)
    return knobs


def fewest_samples(term: str, knobs) -> tuple[int, str]:
    """The smallest batch a term is defined for, and why: a pair for the distance term's μ; for the
    angle term three samples only when averaging over distinct triplets (a sum over none is 0)."""
    if term == "distance":
        return 2, "for a distance (μ is a mean over pairs)"
    averaged = knobs["reduction"] == "mean" and knobs["tuples"] == "distinct"
    return (3 if averaged else 1), "for a mean over distinct triplets"


def _inputs(student, teacher, term: str, knobs) -> tuple[np.ndarray, np.ndarray]:
    s = as_embeddings("student", student)
    t = as_embeddings("teacher", teacher)
    check_same_batch("teacher", t, "student", s)
    check_min_batch("student", len(s), *fewest_samples(term, knobs))
    return s, t


def rkd_distance_loss(student, teacher, *, convention: str | None = None, tuples: str | None = None,
                      reduction: str | None = None, clamp_sq: float | None = None, mu: str | None = None,
                      squared: bool | None = None) -> float:
    r"""Distance-wise RKD: :math:`\sum_{i\ne j}\ell_1(\psi_D(t_i,t_j),\psi_D(s_i,s_j))` ("paper"),
    or its mean over all :math:`N^2` pairs ("official"). Needs :math:`N\ge2` (a pair for :math:`\mu`).

    Args:
      student: student embeddings :math:`s`, ``[N, ...]`` (every axis after the batch flattened).
      teacher: teacher embeddings :math:`t`, ``[N, ...]``, a constant target; the width may differ.
      convention: ``"paper"`` (default) or ``"official"`` (aliases ``"kdzoo"``, ``"repdistiller"``,
        ``"mdistiller"``, ``"torchdistill"``).
      tuples: ``"distinct"`` pairs :math:`i\ne j` and triplets (paper) or ``"all"`` :math:`N^2` and
        :math:`N^3` entries, degenerate ones included (official).
      reduction: ``"sum"`` (paper; torchdistill's ``reduction="sum"``) or ``"mean"`` over the tuples.
      clamp_sq, mu, squared: the distance potential's floor of :math:`d^2` before the square root
        (0 or the official 1e-12), the pairs :math:`\mu` averages (``"offdiag"`` or ``"positive"``)
        and mdistiller's squared distances; they do not change the angle.
    """
    knobs = resolve_knobs(convention, tuples=tuples, reduction=reduction, clamp_sq=clamp_sq, mu=mu, squared=squared)
    s, t = _inputs(student, teacher, "distance", knobs)
    potential = {k: knobs[k] for k in ("clamp_sq", "mu", "squared")}
    terms = huber(distance_potential(t, **potential), distance_potential(s, **potential))
    return _reduce(terms, _tuples_mask(len(s), 2, knobs["tuples"]), knobs["reduction"])


def rkd_angle_loss(student, teacher, *, convention: str | None = None, tuples: str | None = None,
                   reduction: str | None = None, clamp_sq: float | None = None, mu: str | None = None,
                   squared: bool | None = None) -> float:
    r"""Angle-wise RKD: :math:`\sum_{i\ne j\ne k}\ell_1(\psi_A(t_i,t_j,t_k),\psi_A(s_i,s_j,s_k))`
    ("paper"), or its mean over all :math:`N^3` triplets ("official"). The sum over no triplet
    (:math:`N<3`) is 0; the mean over distinct triplets needs :math:`N\ge3`. The distance knobs are
    accepted (one set of knobs for the three RKD losses) and do not change the angle.

    Args:
      student: student embeddings :math:`s`, ``[N, ...]`` (every axis after the batch flattened).
      teacher: teacher embeddings :math:`t`, ``[N, ...]``, a constant target; the width may differ.
      convention: ``"paper"`` (default) or ``"official"`` (aliases ``"kdzoo"``, ``"repdistiller"``,
        ``"mdistiller"``, ``"torchdistill"``).
      tuples: ``"distinct"`` pairs :math:`i\ne j` and triplets (paper) or ``"all"`` :math:`N^2` and
        :math:`N^3` entries, degenerate ones included (official).
      reduction: ``"sum"`` (paper; torchdistill's ``reduction="sum"``) or ``"mean"`` over the tuples.
      clamp_sq, mu, squared: the distance potential's floor of :math:`d^2` before the square root
        (0 or the official 1e-12), the pairs :math:`\mu` averages (``"offdiag"`` or ``"positive"``)
        and mdistiller's squared distances; they do not change the angle.
    """
    knobs = resolve_knobs(convention, tuples=tuples, reduction=reduction, clamp_sq=clamp_sq, mu=mu, squared=squared)
    s, t = _inputs(student, teacher, "angle", knobs)
    terms = huber(angle_potential(t), angle_potential(s))
    return _reduce(terms, _tuples_mask(len(s), 3, knobs["tuples"]), knobs["reduction"])


def rkd_loss(student, teacher, *, w_dist: float = 1.0, w_angle: float = 2.0, convention: str | None = None,
             tuples: str | None = None, reduction: str | None = None, clamp_sq: float | None = None,
             mu: str | None = None, squared: bool | None = None) -> float:
    r"""RKD-DA: :math:`\lambda_D\mathcal L_{\text{RKD-D}}+\lambda_A\mathcal L_{\text{RKD-A}}`. The
    defaults 1 and 2 are the official metric-learning weights; RepDistiller, mdistiller and KD-Zoo
    use 25 and 50 for classification. A term whose weight is 0 is skipped (as torchdistill does).

    Args:
      student: student embeddings :math:`s`, ``[N, ...]`` (every axis after the batch flattened).
      teacher: teacher embeddings :math:`t`, ``[N, ...]``, a constant target; the width may differ.
      convention: ``"paper"`` (default) or ``"official"`` (aliases ``"kdzoo"``, ``"repdistiller"``,
        ``"mdistiller"``, ``"torchdistill"``).
      tuples: ``"distinct"`` pairs :math:`i\ne j` and triplets (paper) or ``"all"`` :math:`N^2` and
        :math:`N^3` entries, degenerate ones included (official).
      reduction: ``"sum"`` (paper; torchdistill's ``reduction="sum"``) or ``"mean"`` over the tuples.
      clamp_sq, mu, squared: the distance potential's floor of :math:`d^2` before the square root
        (0 or the official 1e-12), the pairs :math:`\mu` averages (``"offdiag"`` or ``"positive"``)
        and mdistiller's squared distances; they do not change the angle.
      w_dist, w_angle: the weights :math:`\lambda_D, \lambda_A \ge 0`.
    """
    w_dist = check_real("w_dist", w_dist, low=0.0)
    w_angle = check_real("w_angle", w_angle, low=0.0)
    knobs = {"convention": convention, "tuples": tuples, "reduction": reduction, "clamp_sq": clamp_sq, "mu": mu,
             "squared": squared}
    total = 0.0
    if w_dist > 0 or w_angle == 0:
        total += w_dist * rkd_distance_loss(student, teacher, **knobs)
    if w_angle > 0:
        total += w_angle * rkd_angle_loss(student, teacher, **knobs)
    return total
