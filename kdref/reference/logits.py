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

from kdref.declaration import Arg, Declaration, Knob
from kdref.reference._common import NUMPY, reduce_batch

__all__ = [
    "LOGIT_REGRESSION_LOSS",
    "SCALE_FACTORS",
    "center_logits",
    "logit_regression_loss",
    "logit_regression_per_sample",
]

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


# ---------------------------------------------------------------------------------------------
# The contract: arguments, knobs and conventions (read by both sides, the proof and the docs)

LOGIT_REGRESSION_LOSS = Declaration(
    name="logit_regression_loss",
    args=(Arg("student", "logits", "student logits :math:`s`"),
          Arg("teacher", "logits", "teacher logits :math:`t`, a constant target", like="student")),
    knobs=(
        Knob("scale", "half", "the factor of e_n: ``\"half\"`` (½), ``\"per_class\"`` (1/C) or ``\"unit\"`` (1)",
             choices=("half", "per_class", "unit")),
        Knob("center", False, "subtract each row's mean logit from both inputs first", choices=(True, False)),
        Knob("reduction", "mean", "``\"mean\"`` over the batch, ``\"sum\"`` or ``\"none\"``",
             choices=("mean", "sum", "none")),
    ),
    presets={"paper": {}, "kdzoo": {"scale": "per_class"}, "center": {"center": True}},
    aliases={"torchdistill": "kdzoo", "mse": "kdzoo"},
    descriptions={
        "paper": "½‖s − t‖² per example, mean over the batch (eq. 1)",
        "kdzoo": "‖s − t‖²/C per example, mean over the batch: F.mse_loss, KD-Zoo, torchdistill MSELoss",
        "center": "the paper's scale on per-row centred logits: shift-invariant, the high-T limit of ST (×C)",
    },
)


@LOGIT_REGRESSION_LOSS.implement(NUMPY)
def logit_regression_loss(student: np.ndarray, teacher: np.ndarray, *, scale: str, center: bool, reduction: str):
    r"""L2 regression of the student's logits on the teacher's.

    .. math::
        \mathcal L_{\text{paper}} = \frac1N\sum_{n=1}^{N}\frac12\sum_{c=1}^{C}(s_{nc}-t_{nc})^2,
        \qquad
        \mathcal L_{\text{kdzoo}} = \frac{1}{NC}\sum_{n,c}(s_{nc}-t_{nc})^2 = \frac2C\,\mathcal L_{\text{paper}}.

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
    e = logit_regression_per_sample(student, teacher, center=center)
    return reduce_batch(e * SCALE_FACTORS[scale](student.shape[1]), reduction)
