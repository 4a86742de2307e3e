r"""ST — soft targets (Hinton, Vinyals & Dean, 2015), NumPy reference.

**The idea.** A trained classifier's output distribution says more than its top class: the small
probabilities it gives the wrong classes tell how alike the classes look to it. Dividing the logits
by a temperature :math:`T > 1` before the softmax softens the distribution and brings these
secondary probabilities out. The student is trained to match the teacher's softened distribution
at the same :math:`T`, usually together with the ordinary cross-entropy on the labels; what is
transferred is the teacher's whole distribution over classes, not only its answer. The soft term's
gradient shrinks as :math:`1/T^2`, so it is multiplied by :math:`T^2` to keep both terms on the
same scale.

**The paper's equations.** Eq. 1 **[paper]**, the softmax with temperature, applied to the
student logits :math:`z` (giving :math:`q`) and to the teacher logits :math:`v` (giving :math:`p`):

.. math:: q_i = \frac{\exp(z_i/T)}{\sum_j \exp(z_j/T)}.

The objective **[paper]** (§2, in prose; the formula is a transcription of it): a weighted sum of
the cross-entropy with the soft targets at temperature :math:`T` and the cross-entropy with the
correct labels at :math:`T = 1`, the soft term multiplied by :math:`T^2`,

.. math:: \mathcal L = w_{\text{soft}}\,T^2\,\mathcal H\big(p^{(T)}, q^{(T)}\big)
    + w_{\text{hard}}\,\big(-\log q^{(1)}_y\big),\qquad
    \mathcal H(p, q) = -\sum_i p_i \log q_i,\qquad w_{\text{hard}} \ll w_{\text{soft}}.

Eq. 2 **[paper]**, the gradient of the soft cross-entropy :math:`C` with respect to a student logit,
:math:`\partial C/\partial z_i = (q_i - p_i)/T` (a property the proof checks, not a line of code).
Every popular library **[code]** uses :math:`\mathrm{KL}(p\Vert q) = \mathcal H(p, q) - \mathcal H(p)`
instead of :math:`\mathcal H(p, q)`: the same gradient, zero at a perfect match. Both are
conventions here.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from kdref.declaration import Arg, Declaration, Knob
from kdref.reference._common import NUMPY, log_softmax

__all__ = [
    "DIRECT_UP_TO",
    "HINTON_KD_OBJECTIVE",
    "SOFT_TARGET_LOSS",
    "TORCHDISTILL_KD_LOSS",
    "exp_remainder_ratio",
    "hard_ce_per_sample",
    "hinton_kd_objective",
    "scaled_kl_per_sample",
    "scaled_soft_per_sample",
    "soft_ce_per_sample",
    "soft_kl_per_sample",
    "soft_target_loss",
    "softened_entropy",
    "softened_log_probs",
    "torchdistill_kd_loss",
]

# ---------------------------------------------------------------------------------------------
# The paper's math, in equation order


def softened_log_probs(z: np.ndarray, T: float) -> np.ndarray:
    r"""Eq. 1 in log space: :math:`\log q_i = z_i/T - \log\sum_j \exp(z_j/T)` (log-sum-exp, finite
    for logits of any size).

    Args:
      z: logits, ``[N, C]``.
      T: temperature, ``T > 0``.

    Returns:
      log-probabilities, ``[N, C]``.
    """
    # $\log q_i = \log\big(\exp(z_i/T) / \sum_j \exp(z_j/T)\big)$  (eq. 1)
    return log_softmax(z / T, axis=-1)


def soft_ce_per_sample(z: np.ndarray, v: np.ndarray, T: float) -> np.ndarray:
    r"""The paper's soft term (§2): :math:`\mathcal H(p_n, q_n) = -\sum_i p_{ni}\log q_{ni}` per sample.

    :math:`q` is the student's softened distribution (logits :math:`z`), :math:`p` the teacher's
    (logits :math:`v`).

    Returns:
      ``[N]``.
    """
    # $p_i = \exp(v_i/T) / \sum_j \exp(v_j/T)$  (eq. 1, the teacher)
    p = np.exp(softened_log_probs(v, T))
    # $\mathcal H(p, q) = -\sum_i p_i \log q_i$
    return -np.sum(p * softened_log_probs(z, T), axis=-1)


def hard_ce_per_sample(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    r"""The paper's hard term (§2): the cross-entropy with the correct labels at :math:`T = 1`,
    :math:`-\log q^{(1)}_{n,y_n}`.

    Returns:
      ``[N]``.
    """
    # $-\log q^{(1)}_y$
    return -np.take_along_axis(log_softmax(z, axis=-1), y[:, None], axis=-1)[:, 0]


def soft_kl_per_sample(z: np.ndarray, v: np.ndarray, T: float) -> np.ndarray:
    r"""The libraries' soft term: :math:`\mathrm{KL}(p_n\Vert q_n) = \sum_i p_{ni}\,(\log p_{ni} - \log q_{ni})`
    per sample, :math:`= \mathcal H(p_n, q_n) - \mathcal H(p_n)`.

    Both logs come from :func:`softened_log_probs`, so a teacher probability that underflows to 0
    contributes :math:`0\cdot\log 0 = 0`.

    Returns:
      ``[N]``.
    """
    # $\log p_i$, $\log q_i$  (eq. 1, teacher and student)
    log_p = softened_log_probs(v, T)
    log_q = softened_log_probs(z, T)
    # $\mathrm{KL}(p\Vert q) = \sum_i p_i (\log p_i - \log q_i)$
    return np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)


# ---------------------------------------------------------------------------------------------
# The same quantities, computed so that they are right at every temperature


#: up to this temperature the direct form's rounding, about ε·T²·log C, is no larger than the logits'
#: own: ``kdref.torch`` computes the direct form there (the series form costs several times more), and
#: the proof's error scale allows for it
DIRECT_UP_TO = 20.0

#: a sample whose centred log-ratio stays within this bound is computed by :func:`scaled_kl_per_sample`'s
#: series form (no exponential overflows there); beyond it the log-ratios are large and so is the KL
_SERIES_BOUND = 30.0


def exp_remainder_ratio(d: np.ndarray) -> np.ndarray:
    r""":math:`h(\delta) = (e^\delta - 1 - \delta)/\delta^2`, accurate for every :math:`\delta`:
    its Taylor series :math:`\tfrac12 + \tfrac\delta6 + \tfrac{\delta^2}{24} + \dots` where
    :math:`|\delta| < 10^{-2}` (there ``expm1(δ) − δ`` would lose the digits the KL is made of;
    the truncation error is below :math:`10^{-16}`), ``(expm1(δ) − δ)/δ²`` elsewhere."""
    small = np.abs(d) < 1e-2
    safe = np.where(small, 1.0, d)
    series = 1 / 2 + d * (1 / 6 + d * (1 / 24 + d * (1 / 120 + d * (1 / 720 + d / 5040))))
    return np.where(small, series, (np.expm1(safe) - safe) / safe**2)


def scaled_kl_per_sample(z: np.ndarray, v: np.ndarray, T: float, temperature_squared: bool = True) -> np.ndarray:
    r""":math:`T^2\,\mathrm{KL}(p_n\Vert q_n)` per sample (``temperature_squared=False``: the KL
    alone), right at every temperature.

    :math:`\log p_i - \log q_i` is a difference of nearly equal numbers when :math:`T` is large
    (both are about :math:`-\log C`), and :math:`T^2` multiplies what is left of it: at
    :math:`T = 10^{12}` the direct form of :func:`soft_kl_per_sample` is negative in float64.
    With :math:`u = (v - z) - \mathbb E_q[v - z]` (the centred logit difference, so that
    :math:`\mathbb E_q u = 0`), :math:`\delta = u/T` and :math:`h` of :func:`exp_remainder_ratio`,
    :math:`\log p_i - \log q_i = \delta_i - \log Z` with :math:`Z = \mathbb E_q e^\delta = 1 + A`,
    :math:`A = \mathbb E_q[\delta^2 h(\delta)]`, and exactly

    .. math:: T^2\,\mathrm{KL}(p\Vert q) = \frac{\mathbb E_q\big[u^2\,(1 + \delta h(\delta))\big]}{1 + A}
              - \mathbb E_q\big[u^2 h(\delta)\big]\,\frac{\log(1 + A)}{A},

    two terms of the same sign and about the same size (:math:`\mathrm{Var}_q(u)` and half of it):
    nothing cancels, and as :math:`T\to\infty` it tends to :math:`\tfrac12\mathrm{Var}(v - z)`
    over the classes. The form needs :math:`u` well above its rounding, :math:`\epsilon\,|v - z|`
    (:math:`\mathbb E_q u = 0` to rounding): where :math:`T` is below a million times that
    rounding, :math:`u/T` would be made of it, and the direct form is used (the softmaxes are then
    one-hot or equal). A sample with a centred log-ratio beyond :data:`_SERIES_BOUND` has a large
    KL, which the direct form computes well. Each form is scaled from what it computes (the first
    gives :math:`T^2\,\mathrm{KL}`, the second the KL) by :math:`T` twice, so that :math:`T^2`
    cannot overflow or underflow on its own.

    Returns:
      ``[N]``.
    """
    log_q = softened_log_probs(z, T)
    q = np.exp(log_q)
    # $u = (v - z) - \mathbb E_q[v - z]$, centred twice (the second pass removes the first's rounding)
    u = v - z
    for _ in range(2):
        u = u - np.sum(q * u, axis=-1, keepdims=True)
    d = u / T
    # the series form where the log-ratios are small and $u$ well above its rounding
    noise = np.finfo(np.float64).eps * (1.0 + np.max(np.abs(v - z), axis=-1))
    series = (np.max(np.abs(d), axis=-1) <= _SERIES_BOUND) & (T >= 1e6 * noise)
    d_safe = np.where(series[:, None], d, 0.0)
    h = exp_remainder_ratio(d_safe)
    u_safe = np.where(series[:, None], u, 0.0)
    # $T^2 A = \mathbb E_q[u^2 h(\delta)]$ and $A$
    t2_a = np.sum(q * u_safe**2 * h, axis=-1)
    a = t2_a / T / T
    log1p_ratio = np.where(a < 1e-8, 1 - a / 2, np.log1p(a) / np.where(a < 1e-8, 1.0, a))
    # $\mathbb E_q[u^2(1 + \delta h)]/(1 + A) - T^2 A\,\log(1 + A)/A$
    scaled = np.sum(q * u_safe**2 * (1 + d_safe * h), axis=-1) / (1 + a) - t2_a * log1p_ratio
    direct = soft_kl_per_sample(z, v, T)
    if temperature_squared:
        return np.where(series, scaled, direct * T * T)
    return np.where(series, scaled / T / T, direct)


def softened_entropy(v: np.ndarray, T: float) -> np.ndarray:
    r"""The teacher's entropy :math:`\mathcal H(p_n) = -\sum_i p_{ni}\log p_{ni}` per sample, so that
    :math:`\mathcal H(p, q) = \mathrm{KL}(p\Vert q) + \mathcal H(p)`.

    Returns:
      ``[N]``.
    """
    log_p = softened_log_probs(v, T)
    return -np.sum(np.exp(log_p) * log_p, axis=-1)


def scaled_soft_per_sample(z: np.ndarray, v: np.ndarray, T: float, divergence: str) -> np.ndarray:
    r""":math:`T^2\,\mathrm{KL}(p_n\Vert q_n)` (:func:`scaled_kl_per_sample`) or
    :math:`T^2\,\mathcal H(p_n, q_n) = T^2\,\mathrm{KL} + T^2\,\mathcal H(p_n)` per sample."""
    scaled = scaled_kl_per_sample(z, v, T)
    return scaled if divergence == "kl" else scaled + softened_entropy(v, T) * T * T


def _reduce(per_sample: np.ndarray, reduction: str, num_classes: int):
    """``"mean"`` divides by N·C like PyTorch's KL; ``"batchmean"`` is the mean over the transfer cases."""
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return float(np.sum(per_sample))
    if reduction == "mean":
        return float(np.sum(per_sample) / (per_sample.size * num_classes))
    # $\frac1N \sum_n$, the mean over the transfer cases
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

#: the largest finite number of the dtype a loss is computed in (half-precision inputs in float32)
_LARGEST = {"float64": 1.7976931348623157e308, "float32": 3.4028234663852886e38}


def _check_cross_entropy_range(arguments, knobs) -> None:
    """T²·H(p, q) is at least T²·H(p), about T²·log C: with ``temperature_squared`` (always in the
    full objective) it must be finite in the dtype it is computed in. The KL has no such limit
    (T²·KL tends to half a variance of the logit differences)."""
    if knobs["divergence"] != "ce" or not knobs.get("temperature_squared", True):
        return
    student, T = arguments["student"], arguments["T"]
    dtype = "float64" if str(student.dtype).endswith("float64") else "float32"
    largest = math.sqrt(_LARGEST[dtype] / (1.0 + math.log(student.shape[1])))
    if T >= largest:
        raise ValueError(f"T must be below {largest:.3g} for the cross-entropy times T² in {dtype}: T²·H(p) ≈ "
                         f"T²·log C would overflow; got T = {T:g} (the KL conventions take any T)")


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
    check=_check_cross_entropy_range,
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
    check=_check_cross_entropy_range,
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


# ---------------------------------------------------------------------------------------------
# The public losses


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
      >>> print(f"{soft_target_loss(s, t, T=4.0, convention='kl'):.8g}")
      0.018034938

    References:
      Hinton, Vinyals, Dean. *Distilling the Knowledge in a Neural Network*, arXiv:1503.02531, §2.

    .. seealso:: :func:`hinton_kd_objective` adds the hard-label term;
       :func:`torchdistill_kd_loss` reproduces torchdistill's ``KDLoss``.
    """
    # $T^2\,\mathrm{KL}(p_n\Vert q_n)$ per sample, or the KL alone
    per_sample = scaled_kl_per_sample(student, teacher, T, temperature_squared)
    if divergence == "ce":  # $\mathcal H(p, q) = \mathrm{KL}(p\Vert q) + \mathcal H(p)$, "paper"
        entropy = softened_entropy(teacher, T)
        per_sample = per_sample + (entropy * T * T if temperature_squared else entropy)
    # $\frac1N\sum_n$
    return _reduce(per_sample, reduction, student.shape[1])


@HINTON_KD_OBJECTIVE.implement(NUMPY)
def hinton_kd_objective(student: np.ndarray, teacher: np.ndarray, labels: np.ndarray, T: float, soft_weight: float,
                        hard_weight: float, *, divergence: str, reduction: str):
    r"""The paper's full objective: a weighted sum of the soft term and the hard-label term.

    .. math::
        \mathcal L_n = w_{\text{soft}}\,T^2\,\mathcal H\big(p_n^{(T)}, q_n^{(T)}\big)
        + w_{\text{hard}}\,\big(-\log q^{(1)}_{n,y_n}\big),

    reduced over the batch. The paper gives no numbers for the weights, only that the hard term
    should weigh "considerably lower".

    Returns:
      a float, or ``[N]`` for ``reduction="none"``.

    Examples:
      >>> import numpy as np
      >>> s = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
      >>> t = np.array([[1.5, 1.0, 2.0], [0.0, 0.0, 1.0]])
      >>> y = np.array([2, 0])
      >>> print(f"{hinton_kd_objective(s, t, y, T=4.0, soft_weight=1.0, hard_weight=0.5):.8g}")
      18.303759

    References:
      Hinton, Vinyals, Dean. *Distilling the Knowledge in a Neural Network*, arXiv:1503.02531, §2.

    .. seealso:: :func:`soft_target_loss`, the soft term alone.
    """
    # $T^2\,\mathcal H(p_n, q_n)$ (or $T^2\,\mathrm{KL}(p_n\Vert q_n)$ for "kl")
    soft = scaled_soft_per_sample(student, teacher, T, divergence)
    # $\mathcal L_n = w_{\text{soft}}\,T^2\,\mathcal H(p_n, q_n) + w_{\text{hard}}\,(-\log q^{(1)}_{n,y_n})$
    per_sample = soft_weight * soft + hard_weight * hard_ce_per_sample(student, labels)
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

    Returns:
      a float.

    Examples:
      >>> import numpy as np
      >>> s = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
      >>> t = np.array([[1.5, 1.0, 2.0], [0.0, 0.0, 1.0]])
      >>> print(f"{torchdistill_kd_loss(s, t, 4.0, np.array([2, 0]), alpha=0.5):.8g}")
      0.68150882
      >>> print(f"{torchdistill_kd_loss(s, t, 4.0, None, None, beta=1.0):.8g}")
      0.018034938

    References:
      torchdistill ``torchdistill/losses/mid_level.py``, ``KDLoss`` (snapshot ``3e4373c``).

    .. seealso:: :func:`soft_target_loss` with ``convention="kl_t2"``, the soft term with :math:`T^2`.
    """
    # $T^2\,\mathrm{KL}_{\text{red}}(p\Vert q)$, reduced as torchdistill's KL-divergence module does
    if alpha is None or alpha == 0 or labels is None:
        return _reduce(scaled_kl_per_sample(student, teacher, T, False), reduction, student.shape[1])
    scaled_kl = _reduce(scaled_kl_per_sample(student, teacher, T), reduction, student.shape[1])
    # $\beta = 1 - \alpha$ unless given
    beta = 1.0 - alpha if beta is None else beta
    # $\mathrm{CE}(z, y)$, averaged unless reduction="sum"
    hard = hard_ce_per_sample(student, labels)
    hard = float(np.sum(hard) if reduction == "sum" else np.mean(hard))
    # $\alpha\,\mathrm{CE} + \beta\,T^2\,\mathrm{KL}$
    return alpha * hard + beta * scaled_kl
