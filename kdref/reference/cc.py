r"""CC — Correlation Congruence for Knowledge Distillation (Peng et al., ICCV 2019), NumPy reference.

**The idea.** Ordinary distillation matches the student to the teacher one sample at a time
(*instance congruence*). CC also transfers the *relations between samples*: within a mini-batch,
how similar each pair of samples looks to the student should match how similar it looks to the
teacher. Each network turns its batch of features into an :math:`n\times n` correlation matrix
through a kernel, and the loss is the mean squared difference of the two matrices. Only relations
are compared, so the student's and the teacher's feature widths may differ.

**The equations** **[reconstructed]**: the paper's own text could not be checked; the Taylor form
and its coefficients agree with two independent implementations (KD-Zoo, torchdistill), and
:math:`\gamma=0.4`, :math:`P=2` are their values. For a mini-batch of :math:`n` samples with
(embedded) features :math:`F=[f_1,\dots,f_n]^\top`, the correlation matrix through a kernel
:math:`\varphi` is

.. math:: \psi(F) = C\in\mathbb R^{n\times n},\qquad C_{ij}=\varphi(f_i,f_j),

and the correlation congruence loss is the squared Frobenius distance between the teacher's and
the student's matrices, averaged over all :math:`n^2` entries, the diagonal included:

.. math:: \mathcal L_{CC}=\frac{1}{n^2}\big\lVert\psi(F_T)-\psi(F_S)\big\rVert_F^2 .

The kernels are the bilinear pool :math:`\varphi(x,y)=x^\top y` and the Gaussian RBF through its
order-:math:`P` Taylor series, exact as :math:`P\to\infty` only for unit-norm rows
(:math:`\lVert x-y\rVert^2 = 2-2x^\top y`), so the rows are :math:`\ell_2`-normalised first:

.. math:: \varphi(x,y)=e^{-\gamma\lVert x-y\rVert^2}=e^{-2\gamma}e^{2\gamma x^\top y}
          \approx\sum_{p=0}^{P}e^{-2\gamma}\frac{(2\gamma)^p}{p!}(x^\top y)^p .

The closed form :math:`e^{2\gamma(x^\top y-1)}` of the exact Gaussian on unit rows is **[derived]**.
The paper's total objective, :math:`\alpha\mathcal L_{CE}+(1-\alpha)\mathcal L_{KD}+\beta\mathcal
L_{CC}`, adds instance terms that are left to the caller.

The loss the authors shared with RepDistiller **[code]** is a different function, a product of
adjacent samples' residuals (:func:`cc_adjacent_residual_loss`):

.. math:: \Delta=\lvert F_S-F_T\rvert,\qquad
          \mathcal L=\frac{1}{n-1}\sum_{i=1}^{n-1}\sum_d\Delta_{i,d}\,\Delta_{i+1,d}.
"""

from __future__ import annotations

import math

import numpy as np

from kdref.declaration import Arg, Declaration, Knob
from kdref.reference._common import NUMPY, l2_normalize, pairwise_sq_distances

__all__ = [
    "CC_ADJACENT_RESIDUAL_LOSS",
    "CC_LOSS",
    "adjacent_residuals",
    "bilinear_kernel",
    "cc_adjacent_residual_loss",
    "cc_loss",
    "congruence",
    "correlation_matrix",
    "gaussian_kernel",
    "gaussian_taylor_kernel",
    "normalized_rows",
    "taylor_coefficients",
]


def normalized_rows(F: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    r""":math:`\hat f_i = f_i/\max(\lVert f_i\rVert_2,\epsilon)`: each sample's feature on the unit
    sphere (PyTorch's ``F.normalize``). An all-zero row stays 0.

    Args:
      F: features ``[n, d]``.

    Returns:
      ``[n, d]``.
    """
    # $\hat f_i = f_i / \max(\lVert f_i\rVert_2, \epsilon)$
    return l2_normalize(F, axis=1, eps=eps, eps_mode="clamp")


def correlation_matrix(F: np.ndarray, *, kernel: str = "gaussian_taylor", gamma: float = 0.4, P: int = 2,
                       normalize: bool = True, eps: float = 1e-12) -> np.ndarray:
    r"""The correlation matrix :math:`\psi(F)=C`, :math:`C_{ij}=\varphi(\hat f_i,\hat f_j)`, with
    :math:`\hat f_i` the normalised rows (``normalize=True``) or the rows as given.

    Args:
      F: features ``[n, d]``.
      kernel: ``"gaussian_taylor"`` (:func:`gaussian_taylor_kernel`), ``"gaussian_exact"``
        (:func:`gaussian_kernel`) or ``"bilinear"`` (:func:`bilinear_kernel`).

    Returns:
      ``[n, n]``.
    """
    if normalize:
        # $\hat f_i = f_i / \lVert f_i\rVert$
        F = normalized_rows(F, eps)
    if kernel == "gaussian_taylor":
        # $C_{ij} = \sum_{p=0}^{P} e^{-2\gamma}\frac{(2\gamma)^p}{p!}\,(f_i^\top f_j)^p$
        return gaussian_taylor_kernel(F, gamma, P)
    if kernel == "gaussian_exact":
        # $C_{ij} = e^{-\gamma\lVert f_i - f_j\rVert_2^2}$
        return gaussian_kernel(F, gamma)
    # $C_{ij} = f_i^\top f_j$
    return bilinear_kernel(F)


def taylor_coefficients(gamma: float, P: int) -> np.ndarray:
    r"""The Taylor coefficients of :math:`e^{-2\gamma}e^{2\gamma s}` in :math:`s`:

    .. math:: a_p = e^{-2\gamma}\,\frac{(2\gamma)^p}{p!},\qquad p = 0,\dots,P.

    Returns:
      ``[P + 1]``.
    """
    # $a_p = e^{-2\gamma}\,(2\gamma)^p / p!$
    return np.array([math.exp(-2.0 * gamma) * (2.0 * gamma) ** p / math.factorial(p) for p in range(P + 1)])


def gaussian_taylor_kernel(F: np.ndarray, gamma: float = 0.4, P: int = 2) -> np.ndarray:
    r"""The Gaussian RBF through its order-:math:`P` Taylor series in the dot product:

    .. math:: C_{ij}=\sum_{p=0}^{P}e^{-2\gamma}\,\frac{(2\gamma)^p}{p!}\,(f_i^\top f_j)^p .

    For unit-norm rows this tends to :math:`e^{-\gamma\lVert f_i-f_j\rVert^2}` as :math:`P` grows;
    for raw rows (torchdistill) it is a degree-:math:`P` polynomial kernel.

    Returns:
      ``[n, n]``.
    """
    # $S_{ij} = f_i^\top f_j$
    S = bilinear_kernel(F)
    # $C_{ij} = \sum_{p=0}^{P} a_p\,S_{ij}^p$
    return sum(a_p * S**p for p, a_p in enumerate(taylor_coefficients(gamma, P)))


def gaussian_kernel(F: np.ndarray, gamma: float = 0.4) -> np.ndarray:
    r"""The exact Gaussian RBF :math:`C_{ij}=e^{-\gamma\lVert f_i-f_j\rVert_2^2}`.

    On unit-norm rows this is :math:`e^{2\gamma(f_i^\top f_j-1)}`, the limit of
    :func:`gaussian_taylor_kernel`. It is the Gaussian of the rows as given, so an all-zero row
    (which stays 0 under normalisation) has :math:`C_{ii}=1` and :math:`C_{ij}=e^{-\gamma}` to a
    unit row, where the truncated series gives :math:`e^{-2\gamma}` for both.

    Returns:
      ``[n, n]``.
    """
    # $C_{ij} = e^{-\gamma\lVert f_i - f_j\rVert_2^2}$
    return np.exp(-gamma * pairwise_sq_distances(F))


def bilinear_kernel(F: np.ndarray) -> np.ndarray:
    r"""The bilinear-pool correlation :math:`C_{ij}=f_i^\top f_j`, i.e. :math:`C = FF^\top`.

    Returns:
      ``[n, n]``.
    """
    # $C = F F^\top$
    return F @ F.T


def congruence(C_S: np.ndarray, C_T: np.ndarray, *, norm: str = "fro_sq", reduction: str = "batchmean") -> float:
    r"""The distance between the two correlation matrices:

    .. math:: \frac{1}{n^2}\lVert C_T-C_S\rVert_F^2\ (\text{``fro_sq''}),\qquad
              \frac{1}{n^2}\lVert C_T-C_S\rVert_F\ (\text{``fro''}),

    over all :math:`n^2` entries, the diagonal included; ``reduction="sum"`` leaves out the
    :math:`1/n^2`.
    """
    # $\psi(F_T) - \psi(F_S) = C_T - C_S$
    difference = C_T - C_S
    # $\lVert C_T - C_S\rVert_F^2 = \sum_{i,j} (C_{T,ij} - C_{S,ij})^2$
    squared = float(np.sum(difference**2))
    # $\lVert\cdot\rVert_F^2$ (the paper) or $\lVert\cdot\rVert_F$ (torchdistill)
    distance = squared if norm == "fro_sq" else math.sqrt(squared)
    # $\frac{1}{n^2}$: the mean over all $n^2$ entries
    return distance / difference.size if reduction == "batchmean" else distance


def adjacent_residuals(F_S: np.ndarray, F_T: np.ndarray) -> np.ndarray:
    r"""The products of neighbouring samples' absolute residuals, one per adjacent pair:

    .. math:: \Delta=\lvert F_S-F_T\rvert,\qquad r_i=\sum_d\Delta_{i,d}\,\Delta_{i+1,d},
              \quad i=1,\dots,n-1.

    Returns:
      ``[n - 1]``.
    """
    # $\Delta = \lvert F_S - F_T\rvert$
    delta = np.abs(F_S - F_T)
    # $r_i = \sum_d \Delta_{i,d}\,\Delta_{i+1,d}$
    return np.sum(delta[:-1] * delta[1:], axis=1)


# ---------------------------------------------------------------------------------------------
# The contract: arguments, knobs and conventions (read by both sides, the proof and the docs)


def _check_equal_widths(arguments, knobs) -> None:
    """The residual f_S − f_T pairs each student entry with a teacher entry (the flattened widths)."""
    student, teacher = arguments["student"], arguments["teacher"]
    if teacher.shape[1] != student.shape[1]:
        raise ValueError(f"teacher must have the width of student ({student.shape[1]}) for the residual "
                         f"f_S − f_T, got {teacher.shape[1]}")


CC_LOSS = Declaration(
    name="cc_loss",
    args=(
        Arg("student", "embeddings", "student features :math:`F_S` (every axis after the first is one vector "
            "per sample)"),
        Arg("teacher", "embeddings", "teacher features :math:`F_T`, a constant target; its width may differ "
            "from the student's", like="student", match="batch"),
    ),
    knobs=(
        Knob("kernel", "gaussian_taylor", "the kernel :math:`\\varphi` (see :func:`correlation_matrix`)",
             choices=("gaussian_taylor", "gaussian_exact", "bilinear")),
        Knob("gamma", 0.4, "the Gaussian's :math:`\\gamma`", low=0.0, open_low=True),
        Knob("P", 2, "the Taylor order (:math:`P=0` would be a constant kernel)", low=1, integer=True),
        Knob("normalize", True, ":math:`\\ell_2`-normalise each row before the kernel", choices=(True, False)),
        Knob("norm", "fro_sq", "``\"fro_sq\"`` (squared Frobenius, the paper) or ``\"fro\"`` (torchdistill); "
             "``\"fro\"`` is not differentiable where :math:`C_T=C_S`, and kdref's torch gradient there is 0 "
             "(a valid subgradient: the loss is at its minimum), as ``torch.dist``'s is",
             choices=("fro_sq", "fro")),
        Knob("reduction", "batchmean", "``\"batchmean\"`` (:math:`\\div n^2`, over all entries) or ``\"sum\"``",
             choices=("batchmean", "sum")),
        Knob("eps", 1e-12, "the normalisation's :math:`\\epsilon` in :math:`f/\\max(\\lVert f\\rVert,\\epsilon)`",
             low=0.0, open_low=True),
        Knob("zero_rows", "mask_grad", "the gradient at a row with :math:`\\lVert f_i\\rVert<\\epsilon` (where "
             "the normalised row is :math:`f_i/\\epsilon\\approx 0` and the paper's :math:`f/\\lVert f\\rVert` is "
             "undefined); the value is the same either way. ``\"mask_grad\"`` treats the row as a constant (zero "
             "gradient), ``\"keep\"`` differentiates :math:`f_i/\\epsilon`, a gradient :math:`1/\\epsilon` times "
             "the upstream one, as ``F.normalize`` does. Only the torch side has gradients",
             choices=("mask_grad", "keep")),
    ),
    presets={
        "paper": {},
        "kdzoo": {"zero_rows": "keep"},
        "torchdistill": {"normalize": False, "norm": "fro"},
    },
    descriptions={
        "paper": "rows L2-normalised, Gaussian RBF as its Taylor series (γ = 0.4, P = 2), squared Frobenius "
                 "distance ÷ n² (reconstructed); an all-zero row gets zero gradient",
        "kdzoo": "KD-Zoo CC: the paper's value; F.normalize's clamped norm, so an all-zero row's gradient is "
                 "~1/ε (1e12) times its upstream",
        "torchdistill": "torchdistill CCKDLoss: no normalisation (the series is a polynomial kernel of raw dot "
                        "products), Frobenius norm not squared, ÷ n² (batchmean)",
    },
)

CC_ADJACENT_RESIDUAL_LOSS = Declaration(
    name="cc_adjacent_residual_loss",
    args=(
        Arg("student", "embeddings", "student embeddings, :math:`n \\ge 2` (one adjacent pair)"),
        Arg("teacher", "embeddings", "teacher embeddings of the student's width, a constant target",
            like="student", match="batch"),
    ),
    knobs=(Knob("reduction", "mean", "``\"mean\"`` over the :math:`n-1` pairs (RepDistiller) or ``\"sum\"``",
                choices=("mean", "sum")),),
    presets={"repdistiller": {}},
    default="repdistiller",
    descriptions={
        "repdistiller": "the authors' code as relayed by RepDistiller (Correlation): mean over the n − 1 adjacent "
                        "pairs of ⟨|f_i^S − f_i^T|, |f_{i+1}^S − f_{i+1}^T|⟩",
    },
    min_batch=lambda knobs: (2, "(one adjacent pair)"),
    check=_check_equal_widths,
)


@CC_LOSS.implement(NUMPY)
def cc_loss(student: np.ndarray, teacher: np.ndarray, *, kernel: str, gamma: float, P: int, normalize: bool,
            norm: str, reduction: str, eps: float, zero_rows: str) -> float:
    r"""The correlation congruence loss between the student's and the teacher's batch:

    .. math:: \mathcal L_{CC}=\frac{1}{n^2}\big\lVert\psi(F_T)-\psi(F_S)\big\rVert_F^2
              \quad\text{(default, ``"paper"``)}.

    The formula is **[reconstructed]** (see the module). The instance terms of the paper's
    objective, :math:`\alpha\mathcal L_{CE}+(1-\alpha)\mathcal L_{KD}`, and the weight
    :math:`\beta` are left to the caller.

    Returns:
      a float.

    Raises:
      ValueError: for ``convention="repdistiller"``, which is :func:`cc_adjacent_residual_loss`.

    Examples:
      The spec's example A (γ = 0.4, P = 2; the exact Gaussian; torchdistill's raw rows and
      unsquared norm):

      >>> import numpy as np
      >>> s = np.array([[1.0, 0], [0, 1], [1, 1], [2, -1]])
      >>> t = np.array([[1.0, 0, 0], [0, 2, 0], [0, 0, 3], [1, 1, 1]])
      >>> print(f"{cc_loss(s, t):.8g}")
      0.051474637
      >>> print(f"{cc_loss(s, t, kernel='gaussian_exact'):.8g}")
      0.056655141
      >>> print(f"{cc_loss(s, t, convention='torchdistill'):.8g}")
      0.92284337

    References:
      Peng et al. *Correlation Congruence for Knowledge Distillation*, ICCV 2019, arXiv:1904.01802,
      Sec. 3 (reconstructed); KD-Zoo ``kd_losses/cc.py``; torchdistill ``CCKDLoss``.

    .. seealso:: :func:`cc_adjacent_residual_loss`, the loss of the authors' shared code.
    """
    correlation = {"kernel": kernel, "gamma": gamma, "P": P, "normalize": normalize, "eps": eps}
    # $C_S = \psi(F_S)$
    C_S = correlation_matrix(student, **correlation)
    # $C_T = \psi(F_T)$
    C_T = correlation_matrix(teacher, **correlation)
    # $\mathcal L_{CC} = \frac{1}{n^2}\lVert C_T - C_S\rVert_F^2$
    return congruence(C_S, C_T, norm=norm, reduction=reduction)


@CC_ADJACENT_RESIDUAL_LOSS.implement(NUMPY)
def cc_adjacent_residual_loss(student: np.ndarray, teacher: np.ndarray, *, reduction: str) -> float:
    r"""The loss of the CC code the authors shared with RepDistiller (``Correlation``):

    .. math:: \mathcal L=\frac{1}{n-1}\sum_{i=1}^{n-1}\sum_d\lvert f^S_{i,d}-f^T_{i,d}\rvert\,
              \lvert f^S_{i+1,d}-f^T_{i+1,d}\rvert .

    It is **not** the kernel congruence of :func:`cc_loss`: it has no correlation matrix, compares
    each sample's student and teacher features directly (so the widths must be equal) and uses only
    the :math:`n-1` adjacent pairs, so it depends on the order of the batch. It vanishes whenever,
    in every dimension, one of each two neighbours matches exactly. :math:`\lvert\cdot\rvert` is
    not differentiable at 0; kdref's torch gradient there is 0 (``abs``'s subgradient).

    Returns:
      a float.

    Examples:
      The spec's example A, the teacher truncated to the student's two columns:

      >>> import numpy as np
      >>> s = np.array([[1.0, 0], [0, 1], [1, 1], [2, -1]])
      >>> t = np.array([[1.0, 0], [0, 2], [0, 0], [1, 1]])
      >>> print(f"{cc_adjacent_residual_loss(s, t):.8g}")
      1.3333333

    References:
      HobbitLong/RepDistiller @b84f547 ``distiller_zoo/CC.py`` (``Correlation``), the authors' code
      as relayed there **[code]**.

    .. seealso:: :func:`cc_loss`, the correlation congruence of the paper.
    """
    # $r_i = \sum_d \Delta_{i,d}\,\Delta_{i+1,d}$, $\Delta = \lvert F_S - F_T\rvert$
    residuals = adjacent_residuals(student, teacher)
    # $\frac{1}{n-1}\sum_{i=1}^{n-1} r_i$
    return float(np.mean(residuals)) if reduction == "mean" else float(np.sum(residuals))
