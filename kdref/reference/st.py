r"""ST — soft targets (Hinton, Vinyals & Dean, 2015), NumPy reference.

The teacher's class probabilities, softened by a temperature :math:`T`, are the targets for the
student's softened probabilities. Eq. 1 of the paper is the softmax with temperature,

.. math:: q_i = \frac{\exp(z_i/T)}{\sum_j \exp(z_j/T)},

applied to the student logits :math:`z` (giving :math:`q`) and the teacher logits :math:`v`
(giving :math:`p`). The paper's soft term is the cross-entropy :math:`\mathcal H(p, q)`, multiplied
by :math:`T^2` so that its gradient, which scales as :math:`1/T^2` (eq. 2), stays comparable to the
hard-label term. Every popular library uses :math:`\mathrm{KL}(p\Vert q) = \mathcal H(p,q) - \mathcal H(p)`
instead: same gradient, zero at a perfect match. Both are available here as conventions.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kdref.declaration import Arg, Declaration, Knob
from kdref.reference._common import NUMPY, log_softmax

__all__ = [
    "HINTON_KD_OBJECTIVE",
    "SOFT_TARGET_LOSS",
    "TORCHDISTILL_KD_LOSS",
    "hard_ce_per_sample",
    "hinton_kd_objective",
    "soft_ce_per_sample",
    "soft_kl_per_sample",
    "soft_target_loss",
    "softened_log_probs",
    "torchdistill_kd_loss",
]

def softened_log_probs(z: np.ndarray, T: float) -> np.ndarray:
    r"""Eq. 1 in log space: :math:`\log q_i = z_i/T - \log\sum_j \exp(z_j/T)`.

    Args:
      z: logits, ``[N, C]``.
      T: temperature, ``T > 0``.

    Returns:
      log-probabilities, ``[N, C]``.
    """
    return log_softmax(z / T, axis=-1)


def soft_kl_per_sample(student: np.ndarray, teacher: np.ndarray, T: float) -> np.ndarray:
    r""":math:`\mathrm{KL}(p_n\Vert q_n) = \sum_i p_{ni}\,(\log p_{ni} - \log q_{ni})` per sample.

    :math:`p` is the teacher's and :math:`q` the student's softened distribution. Both logs come
    from :func:`softened_log_probs`, so a teacher probability that underflows to 0 contributes
    :math:`0\cdot\log 0 = 0`.

    Returns:
      ``[N]``.
    """
    log_p = softened_log_probs(teacher, T)
    log_q = softened_log_probs(student, T)
    return np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)


def soft_ce_per_sample(student: np.ndarray, teacher: np.ndarray, T: float) -> np.ndarray:
    r"""The paper's soft cross-entropy :math:`\mathcal H(p_n, q_n) = -\sum_i p_{ni}\log q_{ni}`.

    Returns:
      ``[N]``.
    """
    p = np.exp(softened_log_probs(teacher, T))
    return -np.sum(p * softened_log_probs(student, T), axis=-1)


def hard_ce_per_sample(student: np.ndarray, labels: np.ndarray) -> np.ndarray:
    r"""Cross-entropy with the correct labels at :math:`T = 1`: :math:`-\log q^{(1)}_{n,y_n}`.

    Returns:
      ``[N]``.
    """
    return -np.take_along_axis(log_softmax(student, axis=-1), labels[:, None], axis=-1)[:, 0]


def _soft_term(student, teacher, T, divergence: str, reduction: str):
    """The soft divergence per sample, reduced; ``"mean"`` divides by N·C like PyTorch's KL."""
    per_sample = (soft_kl_per_sample if divergence == "kl" else soft_ce_per_sample)(student, teacher, T)
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return float(np.sum(per_sample))
    if reduction == "mean":
        return float(np.sum(per_sample) / student.size)
    return float(np.mean(per_sample))


# ---------------------------------------------------------------------------------------------
# The contract: arguments, knobs and conventions (read by both sides, the proof and the docs)

_PAIR = (
    Arg("student", "logits", "student logits :math:`z`"),
    Arg("teacher", "logits", "teacher logits :math:`v`, a constant target", like="student"),
)
_T = Arg("T", "temperature", "temperature :math:`T` of the softmax (eq. 1)")
_LABELS = Arg("labels", "labels", "the correct classes :math:`y`", like="student")
_DIVERGENCE = Knob("divergence", "kl", "KL(p‖q) (``\"kl\"``) or the paper's cross-entropy H(p, q) (``\"ce\"``)",
                   choices=("kl", "ce"))

SOFT_TARGET_LOSS = Declaration(
    name="soft_target_loss",
    args=(*_PAIR, _T),
    knobs=(
        _DIVERGENCE,
        Knob("temperature_squared", True, "multiply by :math:`T^2`", choices=(True, False)),
        Knob("reduction", "batchmean", "``\"batchmean\"`` (sum over classes, mean over samples), ``\"mean\"`` "
             "(over all N·C entries, as ``kl_div(reduction=\"mean\")``), ``\"sum\"`` or ``\"none\"``",
             choices=("batchmean", "mean", "sum", "none")),
    ),
    presets={"paper": {"divergence": "ce"}, "kl_t2": {}, "kl": {"temperature_squared": False}},
    aliases={"kdzoo": "kl_t2", "repdistiller": "kl_t2", "mdistiller": "kl_t2"},
    default="kl_t2",
    descriptions={
        "paper": "the paper's soft cross-entropy H(p, q), times T², mean over the batch",
        "kl_t2": "T² · KL(p‖q), mean over the batch: KD-Zoo, RepDistiller, mdistiller",
        "kl": "KL(p‖q) without T²: torchdistill's KDLoss when no hard-label weight is set",
    },
)

HINTON_KD_OBJECTIVE = Declaration(
    name="hinton_kd_objective",
    args=(*_PAIR, _LABELS, _T, Arg("soft_weight", "weight", ":math:`w_{\\text{soft}}`"),
          Arg("hard_weight", "weight", ":math:`w_{\\text{hard}}`")),
    knobs=(dataclasses.replace(_DIVERGENCE, default="ce"),
           Knob("reduction", "batchmean", "over the batch", choices=("batchmean", "sum", "none"))),
    presets={"paper": {}, "kl": {"divergence": "kl"}},
    descriptions={
        "paper": "w_soft · T² · H(p, q) + w_hard · CE(y, softmax(z)), as the paper's §2 describes",
        "kl": "the same with KL(p‖q) in place of H(p, q): equal gradient, zero soft term at a match",
    },
)

TORCHDISTILL_KD_LOSS = Declaration(
    name="torchdistill_kd_loss",
    args=(*_PAIR, _T, dataclasses.replace(_LABELS, optional=True),
          Arg("alpha", "real", "weight of the hard-label cross-entropy; ``None`` or 0 drops it (and T²)",
              optional=True),
          Arg("beta", "real", "weight of the soft term; ``1 - alpha`` when ``None``", optional=True)),
    knobs=(Knob("reduction", "batchmean", "the KL's reduction; the cross-entropy is averaged for the first two",
                choices=("batchmean", "mean", "sum")),),
    presets={"torchdistill": {}},
    default="torchdistill",
    descriptions={
        "torchdistill": "torchdistill's KDLoss: α·CE + β·T²·KL, or KL alone without T² when α is unset",
    },
)


@SOFT_TARGET_LOSS.implement(NUMPY)
def soft_target_loss(student: np.ndarray, teacher: np.ndarray, T: float, *, divergence: str,
                     temperature_squared: bool, reduction: str):
    r"""Soft-target distillation loss: the teacher's softened probabilities as targets.

    .. math::
        \mathcal L = T^2 \cdot \frac1N \sum_{n=1}^{N} \mathrm{KL}\big(p_n^{(T)} \,\Vert\, q_n^{(T)}\big)
        \quad\text{(default, ``"kl_t2"``)},\qquad
        \mathcal L_{\text{paper}} = T^2 \cdot \frac1N \sum_{n=1}^{N} \mathcal H\big(p_n^{(T)}, q_n^{(T)}\big).

    Returns:
      a float, or ``[N]`` for ``reduction="none"``.

    Examples:
      >>> import numpy as np
      >>> s = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
      >>> t = np.array([[1.5, 1.0, 2.0], [0.0, 0.0, 1.0]])
      >>> print(f"{soft_target_loss(s, t, T=4.0):.8g}")
      0.28855901
      >>> print(f"{soft_target_loss(s, t, T=4.0, convention='paper'):.7g}")
      17.76653

    References:
      Hinton, Vinyals, Dean. *Distilling the Knowledge in a Neural Network*, arXiv:1503.02531, §2.

    .. seealso:: :func:`hinton_kd_objective` adds the hard-label term;
       :func:`torchdistill_kd_loss` reproduces torchdistill's ``KDLoss``.
    """
    loss = _soft_term(student, teacher, T, divergence, reduction)
    return loss * T**2 if temperature_squared else loss


@HINTON_KD_OBJECTIVE.implement(NUMPY)
def hinton_kd_objective(student: np.ndarray, teacher: np.ndarray, labels: np.ndarray, T: float, soft_weight: float,
                        hard_weight: float, *, divergence: str, reduction: str):
    r"""The paper's full objective: a weighted sum of the soft term and the hard-label term.

    .. math::
        \mathcal L_n = w_{\text{soft}}\,T^2\,\mathcal H\big(p_n^{(T)}, q_n^{(T)}\big)
        + w_{\text{hard}}\,\big(-\log q^{(1)}_{n,y_n}\big),

    reduced over the batch. The paper gives no numbers for the weights, only that the hard term
    should weigh "considerably lower".

    Examples:
      >>> import numpy as np
      >>> s = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
      >>> t = np.array([[1.5, 1.0, 2.0], [0.0, 0.0, 1.0]])
      >>> y = np.array([2, 0])
      >>> print(f"{hinton_kd_objective(s, t, y, T=4.0, soft_weight=1.0, hard_weight=0.5):.8g}")
      18.303759

    .. seealso:: :func:`soft_target_loss`, the soft term alone.
    """
    soft = _soft_term(student, teacher, T, divergence, "none")
    per_sample = soft_weight * T**2 * soft + hard_weight * hard_ce_per_sample(student, labels)
    if reduction == "none":
        return per_sample
    return float(np.sum(per_sample) if reduction == "sum" else np.mean(per_sample))


@TORCHDISTILL_KD_LOSS.implement(NUMPY)
def torchdistill_kd_loss(student: np.ndarray, teacher: np.ndarray, T: float, labels: np.ndarray | None,
                         alpha: float | None, beta: float | None, *, reduction: str) -> float:
    r"""torchdistill's ``KDLoss``, value for value (a compatibility function, not the paper).

    With a hard-label weight :math:`\alpha` (not ``None``, not 0) and labels:

    .. math:: \mathcal L = \alpha\,\mathrm{CE}(z, y) + \beta\,T^2\,\mathrm{KL}_{\text{red}}(p\Vert q),
        \qquad \beta = 1-\alpha \text{ unless given};

    otherwise the soft term alone, **without** :math:`T^2`. Note that :math:`\alpha` weighs the
    hard-label term.

    Examples:
      >>> import numpy as np
      >>> s = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
      >>> t = np.array([[1.5, 1.0, 2.0], [0.0, 0.0, 1.0]])
      >>> print(f"{torchdistill_kd_loss(s, t, 4.0, np.array([2, 0]), alpha=0.5):.8g}")
      0.68150882
    """
    kl = _soft_term(student, teacher, T, "kl", reduction)
    if alpha is None or alpha == 0 or labels is None:
        return kl
    beta = 1.0 - alpha if beta is None else beta
    hard = hard_ce_per_sample(student, labels)
    hard = float(np.sum(hard) if reduction == "sum" else np.mean(hard))
    return alpha * hard + beta * T**2 * kl
