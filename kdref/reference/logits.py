r"""Logits — mimic learning by regressing the teacher's logits (Ba & Caruana, 2014), NumPy reference.

**The idea.** The student ("mimic") network learns the teacher's logits, the values before the
softmax, by L2 regression, instead of learning labels or probabilities with a cross-entropy
**[paper]**: what is transferred is the teacher's logit vector itself, on which the softmax would
squash the relative sizes of the small probabilities. It is the high-temperature limit of soft
targets (Hinton et al.) without their per-sample centring.

**The paper's equation.** Eq. 1 **[reconstructed]** (as commonly transcribed; the paper's own
typeset form could not be checked),

.. math:: \mathcal L(W,\beta) = \frac{1}{2T}\sum_{t=1}^{T}\big\lVert g(x^{(t)}; W, \beta) - z^{(t)}\big\rVert_2^2,

where :math:`T` counts training examples (it is not a temperature), :math:`g` gives the student's
logits and :math:`z^{(t)}` the teacher's. With :math:`s_n` the student's and :math:`t_n` the
teacher's logits of example :math:`n`, that is

.. math:: \mathcal L_{\text{paper}} = \frac1N\sum_{n=1}^{N}\frac12\sum_{c=1}^{C}(s_{nc}-t_{nc})^2 .

The limit **[derived]**: :math:`\lim_{T\to\infty} T^2\,\mathrm{KL}\big(\mathrm{softmax}(t/T)\Vert
\mathrm{softmax}(s/T)\big) = \frac{1}{2C}\sum_c(\tilde s_c - \tilde t_c)^2` with
:math:`\tilde z = z - \frac1C\sum_c z_c` the centred logits (the ``"center"`` convention, ×C).
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

# ---------------------------------------------------------------------------------------------
# The paper's math, in equation order


def logit_regression_per_sample(s: np.ndarray, t: np.ndarray, *, center: bool = False) -> np.ndarray:
    r"""Eq. 1's squared error per example, :math:`e_n = \sum_c (s_{nc} - t_{nc})^2` (centred first if asked).

    Returns:
      ``[N]``.
    """
    if center:
        # $\tilde s = s - \frac1C\sum_c s_c$, $\tilde t = t - \frac1C\sum_c t_c$
        s, t = center_logits(s), center_logits(t)
    # $e_n = \lVert s_n - t_n\rVert_2^2 = \sum_c (s_{nc} - t_{nc})^2$
    return np.sum((s - t) ** 2, axis=-1)


#: the factor of the per-example squared error for each ``scale`` knob, given C: eq. 1's ½, the
#: 1/C of ``F.mse_loss`` (KD-Zoo), or 1
SCALE_FACTORS = {"half": lambda C: 0.5, "per_class": lambda C: 1.0 / C, "unit": lambda C: 1.0}


def center_logits(z: np.ndarray) -> np.ndarray:
    r"""The centring of the high-temperature limit: :math:`\tilde z_{nc} = z_{nc} - \frac1C\sum_{c'} z_{nc'}`."""
    # $\tilde z_{nc} = z_{nc} - \frac1C\sum_{c'} z_{nc'}$
    return z - np.mean(z, axis=-1, keepdims=True)


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


# ---------------------------------------------------------------------------------------------
# The public loss


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
      >>> print(f"{logit_regression_loss(s, t, convention='center'):.8g}")
      0.91666667

    References:
      Ba, Caruana. *Do Deep Nets Really Need to be Deep?* NIPS 2014, §2.2.

    .. seealso:: :func:`kdref.reference.st.soft_target_loss`, whose high-temperature limit is
       the ``"center"`` convention divided by :math:`C`.
    """
    # $e_n = \sum_c (s_{nc} - t_{nc})^2$
    e = logit_regression_per_sample(student, teacher, center=center)
    # $\frac1N\sum_n \frac12 e_n$ (paper), $\frac1N\sum_n e_n / C$ (kdzoo)
    return reduce_batch(e * SCALE_FACTORS[scale](student.shape[1]), reduction)
