r"""Logits — mimic learning by regressing the teacher's logits (Ba & Caruana, 2014), NumPy reference.

The student ("mimic") network is trained by L2 regression on the teacher's logits instead of on
labels or probabilities. The paper's eq. 1, as commonly transcribed (**reconstructed**),

.. math:: \mathcal L(W,\beta) = \frac{1}{2T}\sum_{t=1}^{T}\big\lVert g(x^{(t)}; W, \beta) - z^{(t)}\big\rVert_2^2,

where :math:`T` counts training examples (it is not a temperature), :math:`g` gives the student's
logits and :math:`z^{(t)}` the teacher's. Per example that is :math:`\tfrac12\lVert s_n - t_n\rVert^2`,
averaged over the batch.
"""

from __future__ import annotations

import numpy as np

from kdref.conventions import Conventions
from kdref.reference._common import as_float_array, check_same_shape, reduce_batch

__all__ = ["CONVENTIONS", "SCALE_FACTORS", "center_logits", "logit_regression_loss", "logit_regression_per_sample"]

CONVENTIONS = Conventions(
    loss="logit_regression_loss",
    defaults={"scale": "half", "center": False, "reduction": "mean"},
    presets={
        "paper": {},
        "kdzoo": {"scale": "per_class"},
        "center": {"center": True},
    },
    aliases={"torchdistill": "kdzoo", "mse": "kdzoo"},
    default="paper",
    descriptions={
        "paper": "½‖s − t‖² per example, mean over the batch (eq. 1)",
        "kdzoo": "‖s − t‖²/C per example, mean over the batch: F.mse_loss, KD-Zoo, torchdistill MSELoss",
        "center": "the paper's scale on per-row centred logits: shift-invariant, the high-T limit of ST (×C)",
    },
    choices={"scale": ("half", "per_class", "unit"), "center": (True, False), "reduction": ("mean", "sum", "none")},
)


#: the factor of the per-example squared error for each ``scale`` knob, given C
SCALE_FACTORS = {"half": lambda C: 0.5, "per_class": lambda C: 1.0 / C, "unit": lambda C: 1.0}


def center_logits(z: np.ndarray) -> np.ndarray:
    r""":math:`\tilde z_{nc} = z_{nc} - \frac1C\sum_{c'} z_{nc'}`: remove each row's mean logit."""
    return z - np.mean(z, axis=-1, keepdims=True)


def logit_regression_per_sample(student: np.ndarray, teacher: np.ndarray, *, center: bool = False) -> np.ndarray:
    r"""Squared error per example, :math:`e_n = \sum_c (s_{nc} - t_{nc})^2` (centred first if asked).

    Returns:
      ``[N]``.
    """
    if center:
        student, teacher = center_logits(student), center_logits(teacher)
    return np.sum((student - teacher) ** 2, axis=-1)


def logit_regression_loss(
    student: np.ndarray,
    teacher: np.ndarray,
    *,
    convention: str | None = None,
    scale: str | None = None,
    center: bool | None = None,
    reduction: str | None = None,
):
    r"""L2 regression of the student's logits on the teacher's.

    .. math::
        \mathcal L_{\text{paper}} = \frac1N\sum_{n=1}^{N}\frac12\sum_{c=1}^{C}(s_{nc}-t_{nc})^2,
        \qquad
        \mathcal L_{\text{kdzoo}} = \frac{1}{NC}\sum_{n,c}(s_{nc}-t_{nc})^2 = \frac2C\,\mathcal L_{\text{paper}}.

    Args:
      student: student logits, ``[N, C]``.
      teacher: teacher logits, ``[N, C]``, a constant target.
      convention: ``"paper"`` (default), ``"kdzoo"`` (aliases ``"mse"``, ``"torchdistill"``:
        ``F.mse_loss``) or ``"center"`` (paper scale on centred logits).
      scale: ``"half"`` (:math:`\tfrac12 e_n`), ``"per_class"`` (:math:`e_n / C`) or ``"unit"``
        (:math:`e_n`; with ``reduction="sum"`` this is ``F.mse_loss(reduction="sum")``).
      center: subtract each row's mean logit from both inputs first.
      reduction: ``"mean"`` over the batch, ``"sum"`` or ``"none"``.

    Returns:
      a float, or ``[N]`` for ``reduction="none"``.

    Examples:
      >>> import numpy as np
      >>> s = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
      >>> t = np.array([[1.5, 1.0, 2.0], [0.0, 0.0, 1.0]])
      >>> logit_regression_loss(s, t)
      1.125
      >>> logit_regression_loss(s, t, convention="kdzoo")
      0.75

    References:
      Ba, Caruana. *Do Deep Nets Really Need to be Deep?* NIPS 2014, §2.2.

    .. seealso:: :func:`kdref.reference.st.soft_target_loss`, whose high-temperature limit is
       the ``"center"`` convention divided by :math:`C`.
    """
    knobs = CONVENTIONS.resolve(convention, scale=scale, center=center, reduction=reduction)
    student = as_float_array("student", student, ndim=2)
    teacher = as_float_array("teacher", teacher, ndim=2)
    check_same_shape("teacher", teacher, "student", student)
    e = logit_regression_per_sample(student, teacher, center=knobs["center"])
    per_sample = e * SCALE_FACTORS[knobs["scale"]](student.shape[1])
    return reduce_batch(per_sample, knobs["reduction"])
