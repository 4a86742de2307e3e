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

import numpy as np

from kdref._scalars import check_real, check_temperature
from kdref.conventions import Conventions
from kdref.reference._common import as_float_array, check_labels, check_same_shape, log_softmax

__all__ = [
    "CONVENTIONS",
    "HINTON_CONVENTIONS",
    "TORCHDISTILL_CONVENTIONS",
    "hard_ce_per_sample",
    "hinton_kd_objective",
    "soft_ce_per_sample",
    "soft_kl_per_sample",
    "soft_target_loss",
    "softened_log_probs",
    "torchdistill_kd_loss",
]

_REDUCTIONS = ("batchmean", "mean", "sum", "none")

CONVENTIONS = Conventions(
    loss="soft_target_loss",
    defaults={"divergence": "kl", "temperature_squared": True, "reduction": "batchmean"},
    presets={
        "paper": {"divergence": "ce"},
        "kl_t2": {},
        "kl": {"temperature_squared": False},
    },
    aliases={"kdzoo": "kl_t2", "repdistiller": "kl_t2", "mdistiller": "kl_t2"},
    default="kl_t2",
    descriptions={
        "paper": "the paper's soft cross-entropy H(p, q), times T², mean over the batch",
        "kl_t2": "T² · KL(p‖q), mean over the batch: KD-Zoo, RepDistiller, mdistiller",
        "kl": "KL(p‖q) without T²: torchdistill's KDLoss when no hard-label weight is set",
    },
    choices={
        "divergence": ("kl", "ce"),
        "temperature_squared": (True, False),
        "reduction": _REDUCTIONS,
    },
)

HINTON_CONVENTIONS = Conventions(
    loss="hinton_kd_objective",
    defaults={"divergence": "ce", "reduction": "batchmean"},
    presets={"paper": {}, "kl": {"divergence": "kl"}},
    default="paper",
    descriptions={
        "paper": "w_soft · T² · H(p, q) + w_hard · CE(y, softmax(z)), as the paper's §2 describes",
        "kl": "the same with KL(p‖q) in place of H(p, q): equal gradient, zero soft term at a match",
    },
    choices={"divergence": ("kl", "ce"), "reduction": ("batchmean", "sum", "none")},
)

TORCHDISTILL_CONVENTIONS = Conventions(
    loss="torchdistill_kd_loss",
    defaults={"reduction": "batchmean"},
    presets={"torchdistill": {}},
    default="torchdistill",
    descriptions={
        "torchdistill": "torchdistill's KDLoss: α·CE + β·T²·KL, or KL alone without T² when α is unset",
    },
    choices={"reduction": ("batchmean", "mean", "sum")},
)


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


def _check_logit_pair(student, teacher) -> tuple[np.ndarray, np.ndarray]:
    student = as_float_array("student", student, ndim=2)
    teacher = as_float_array("teacher", teacher, ndim=2)
    check_same_shape("teacher", teacher, "student", student)
    return student, teacher


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


def soft_target_loss(
    student: np.ndarray,
    teacher: np.ndarray,
    T: float,
    *,
    convention: str | None = None,
    divergence: str | None = None,
    temperature_squared: bool | None = None,
    reduction: str | None = None,
):
    r"""Soft-target distillation loss: the teacher's softened probabilities as targets.

    .. math::
        \mathcal L = T^2 \cdot \frac1N \sum_{n=1}^{N} \mathrm{KL}\big(p_n^{(T)} \,\Vert\, q_n^{(T)}\big)
        \quad\text{(default, ``"kl_t2"``)},\qquad
        \mathcal L_{\text{paper}} = T^2 \cdot \frac1N \sum_{n=1}^{N} \mathcal H\big(p_n^{(T)}, q_n^{(T)}\big).

    Args:
      student: student logits :math:`z`, ``[N, C]``.
      teacher: teacher logits :math:`v`, ``[N, C]``, a constant target.
      T: temperature, ``T > 0``.
      convention: ``"kl_t2"`` (default; aliases ``"kdzoo"``, ``"repdistiller"``,
        ``"mdistiller"``), ``"paper"`` (cross-entropy form) or ``"kl"`` (no :math:`T^2`).
      divergence: ``"kl"`` or ``"ce"``; overrides the convention.
      temperature_squared: multiply by :math:`T^2`; overrides the convention.
      reduction: ``"batchmean"`` (sum over classes, mean over samples), ``"mean"`` (mean over all
        :math:`N\cdot C` entries, as PyTorch's ``kl_div(reduction="mean")``), ``"sum"`` or ``"none"``.

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
    knobs = CONVENTIONS.resolve(
        convention, divergence=divergence, temperature_squared=temperature_squared, reduction=reduction
    )
    T = check_temperature(T)
    student, teacher = _check_logit_pair(student, teacher)
    loss = _soft_term(student, teacher, T, knobs["divergence"], knobs["reduction"])
    return loss * T**2 if knobs["temperature_squared"] else loss


def hinton_kd_objective(
    student: np.ndarray,
    teacher: np.ndarray,
    labels: np.ndarray,
    T: float,
    *,
    soft_weight: float,
    hard_weight: float,
    convention: str | None = None,
    divergence: str | None = None,
    reduction: str | None = None,
):
    r"""The paper's full objective: a weighted sum of the soft term and the hard-label term.

    .. math::
        \mathcal L_n = w_{\text{soft}}\,T^2\,\mathcal H\big(p_n^{(T)}, q_n^{(T)}\big)
        + w_{\text{hard}}\,\big(-\log q^{(1)}_{n,y_n}\big),

    reduced over the batch. The paper gives no numbers for the weights, only that the hard term
    should weigh "considerably lower".

    Args:
      student, teacher: logits, ``[N, C]``.
      labels: integer class labels, ``[N]``.
      T: temperature of the soft term (the hard term is always at :math:`T=1`).
      soft_weight, hard_weight: :math:`w_{\text{soft}}` and :math:`w_{\text{hard}}`.
      convention: ``"paper"`` (cross-entropy soft term) or ``"kl"`` (KL soft term).
      divergence: ``"ce"`` or ``"kl"``; overrides the convention.
      reduction: ``"batchmean"``, ``"sum"`` or ``"none"``.

    Examples:
      >>> import numpy as np
      >>> s = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
      >>> t = np.array([[1.5, 1.0, 2.0], [0.0, 0.0, 1.0]])
      >>> y = np.array([2, 0])
      >>> print(f"{hinton_kd_objective(s, t, y, T=4.0, soft_weight=1.0, hard_weight=0.5):.8g}")
      18.303759

    .. seealso:: :func:`soft_target_loss`, the soft term alone.
    """
    knobs = HINTON_CONVENTIONS.resolve(convention, divergence=divergence, reduction=reduction)
    T = check_temperature(T)
    student, teacher = _check_logit_pair(student, teacher)
    labels = check_labels(labels, *student.shape)
    soft_weight = check_real("soft_weight", soft_weight, low=0.0)
    hard_weight = check_real("hard_weight", hard_weight, low=0.0)
    soft = _soft_term(student, teacher, T, knobs["divergence"], "none")
    per_sample = soft_weight * T**2 * soft + hard_weight * hard_ce_per_sample(student, labels)
    if knobs["reduction"] == "none":
        return per_sample
    return float(np.sum(per_sample) if knobs["reduction"] == "sum" else np.mean(per_sample))


def torchdistill_kd_loss(
    student: np.ndarray,
    teacher: np.ndarray,
    T: float,
    labels: np.ndarray | None = None,
    *,
    alpha: float | None = None,
    beta: float | None = None,
    convention: str | None = None,
    reduction: str | None = None,
) -> float:
    r"""torchdistill's ``KDLoss``, value for value (a compatibility function, not the paper).

    With a hard-label weight :math:`\alpha` (not ``None``, not 0) and labels:

    .. math:: \mathcal L = \alpha\,\mathrm{CE}(z, y) + \beta\,T^2\,\mathrm{KL}_{\text{red}}(p\Vert q),
        \qquad \beta = 1-\alpha \text{ unless given};

    otherwise the soft term alone, **without** :math:`T^2`. Note that :math:`\alpha` weighs the
    hard-label term.

    Args:
      student, teacher: logits, ``[N, C]``.
      T: temperature, ``T > 0``.
      labels: integer class labels ``[N]``, or ``None`` for the soft term alone.
      alpha: weight of the hard-label cross-entropy; ``None`` or 0 drops it (and :math:`T^2`).
      beta: weight of the soft term; ``1 - alpha`` when ``None``.
      convention: ``"torchdistill"``, the only preset.
      reduction: the KL's reduction, ``"batchmean"``, ``"mean"`` (over :math:`N\cdot C`) or
        ``"sum"``; the cross-entropy is averaged over the batch for the first two, summed for ``"sum"``.

    Examples:
      >>> import numpy as np
      >>> s = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
      >>> t = np.array([[1.5, 1.0, 2.0], [0.0, 0.0, 1.0]])
      >>> print(f"{torchdistill_kd_loss(s, t, 4.0, np.array([2, 0]), alpha=0.5):.8g}")
      0.68150882
    """
    knobs = TORCHDISTILL_CONVENTIONS.resolve(convention, reduction=reduction)
    T = check_temperature(T)
    student, teacher = _check_logit_pair(student, teacher)
    kl = _soft_term(student, teacher, T, "kl", knobs["reduction"])
    alpha = None if alpha is None else check_real("alpha", alpha)
    beta = None if beta is None else check_real("beta", beta)
    if alpha is None or alpha == 0 or labels is None:
        return kl
    labels = check_labels(labels, *student.shape)
    beta = 1.0 - alpha if beta is None else beta
    hard = hard_ce_per_sample(student, labels)
    hard = float(np.sum(hard) if knobs["reduction"] == "sum" else np.mean(hard))
    return alpha * hard + beta * T**2 * kl
