r"""SP — Similarity-Preserving Knowledge Distillation (Tung & Mori, ICCV 2019), NumPy reference.

Inputs that a trained teacher finds similar should look similar to the student too. SP does not
compare the two networks' activations themselves (their shapes may differ); it transfers how each
network relates the samples of a mini-batch to each other: for every layer pair, the student's
:math:`b\times b` table of pairwise similarities should match the teacher's. The tables have one
size whatever the layers' widths, so any teacher layer can be paired with any student layer, and
normalising each row removes each layer's overall scale.

The equations **[reconstructed]** (the paper's own text could not be checked; they agree with
RepDistiller's implementation, whose docstring says the paper's first author verified it). A
layer's activation map :math:`A\in\mathbb R^{b\times c\times h\times w}` is reshaped to one row
per sample, :math:`Q\in\mathbb R^{b\times chw}`; the batch similarity (Gram) matrix has every row
:math:`\ell_2`-normalised,

.. math:: \tilde G = QQ^\top,\qquad G_{[i,:]} = \tilde G_{[i,:]}\,/\,\lVert\tilde G_{[i,:]}\rVert_2 ,

and the loss over the set :math:`\mathcal I` of (teacher layer, student layer) pairs is

.. math:: \mathcal L_{SP} = \frac{1}{b^2}\sum_{(l,l')\in\mathcal I}\big\lVert G_T^{(l)}-G_S^{(l')}\big\rVert_F^2 ,

used in :math:`\mathcal L = \mathcal L_{CE} + \gamma\,\mathcal L_{SP}`. The trace form of one
pair's term, which needs no :math:`b\times b` matrix, is **[derived]**.
"""

from __future__ import annotations

import numpy as np

from kdref.declaration import Arg, Declaration, Knob
from kdref.reference._common import NUMPY

__all__ = [
    "SP_LOSS",
    "batch_gram",
    "row_normalize",
    "similarity_matrix",
    "sp_loss",
    "sp_pair_loss",
    "trace_form_pair_loss",
]


# ---------------------------------------------------------------------------------------------
# The paper's quantities: Q → G̃ = QQᵀ → G (rows normalised) → ‖G_T − G_S‖²_F / b²


def batch_gram(q: np.ndarray) -> np.ndarray:
    r"""The batch similarity matrix :math:`\tilde G = QQ^\top`: entry :math:`(i,j)` is the inner
    product of sample :math:`i`'s and sample :math:`j`'s activations, the diagonal
    :math:`\tilde G_{ii}=\lVert q_i\rVert^2`.

    Args:
      q: one flattened activation map per sample, ``[b, d]``.

    Returns:
      ``[b, b]``.
    """
    # $\tilde G = QQ^\top$
    return q @ q.T


def row_normalize(g: np.ndarray, p: int = 2, eps: float = 1e-12) -> np.ndarray:
    r"""Each row divided by its :math:`\ell_p` norm, :math:`G_{[i,:]}=\tilde G_{[i,:]}/\max(\lVert
    \tilde G_{[i,:]}\rVert_p,\epsilon)`, as PyTorch's ``F.normalize(g, p, dim=1, eps)``.

    :math:`p=2` is the paper's; :math:`p=1` is what torchdistill computes. The row of an all-zero
    sample is all zero and **stays 0** (the paper's normalisation is undefined there). kdref
    defines the gradient through such a row as 0 (``zero_rows="mask_grad"``); the libraries'
    clamp gives :math:`I/\epsilon` there (``zero_rows="keep"``, see :func:`sp_loss`).

    Returns:
      ``[b, b]``.
    """
    # $\lVert\tilde G_{[i,:]}\rVert_p$
    norms = np.sum(np.abs(g) ** p, axis=1, keepdims=True) ** (1.0 / p)
    # $G_{[i,:]} = \tilde G_{[i,:]} / \max(\lVert\tilde G_{[i,:]}\rVert_p, \epsilon)$
    return g / np.maximum(norms, eps)


def similarity_matrix(q: np.ndarray, p: int = 2, eps: float = 1e-12) -> np.ndarray:
    r"""The row-normalised batch similarity matrix :math:`G` of one layer: :func:`row_normalize`
    of :func:`batch_gram`.

    Returns:
      ``[b, b]``.
    """
    # $G = \mathrm{rownorm}(QQ^\top)$
    return row_normalize(batch_gram(q), p, eps)


def sp_pair_loss(g_s: np.ndarray, g_t: np.ndarray, reduction: str = "batchmean") -> float:
    r"""One layer pair's term: the squared Frobenius distance of the two similarity matrices over
    all :math:`b^2` entries (diagonal included, each off-diagonal pair counted twice),

    .. math:: \frac{1}{b^2}\big\lVert G_T - G_S\big\rVert_F^2\quad(\texttt{"batchmean"}),\qquad
              \big\lVert G_T - G_S\big\rVert_F^2\quad(\texttt{"sum"}).
    """
    # $\lVert G_T - G_S\rVert_F^2$
    total = float(np.sum((g_t - g_s) ** 2))
    # $\frac{1}{b^2}\lVert G_T - G_S\rVert_F^2$
    return total / g_s.shape[0] ** 2 if reduction == "batchmean" else total


def trace_form_pair_loss(q_s: np.ndarray, q_t: np.ndarray, eps: float = 1e-12, reduction: str = "batchmean") -> float:
    r"""The same term as :func:`sp_pair_loss` with :math:`p=2`, without any :math:`b\times b`
    matrix **[derived]**: with :math:`r_i^2=\lVert\tilde G_{[i,:]}\rVert^2=q_i^\top(Q^\top Q)\,q_i`
    and :math:`m_i=\max(r_i,\epsilon)`, expanding the squares row by row gives

    .. math:: \big\lVert G_T-G_S\big\rVert_F^2=\sum_i\Big(\frac{r_{T,i}^2}{m_{T,i}^2}
              +\frac{r_{S,i}^2}{m_{S,i}^2}-2\,\frac{q_{T,i}^\top(Q_T^\top Q_S)\,q_{S,i}}{m_{T,i}\,m_{S,i}}\Big),

    i.e. :math:`2b-2\sum_i\cos_i` when no row is zero, at :math:`O(b\,(d_T^2+d_S^2+d_Td_S))`. It
    cancels when the loss is small, so kdref offers it in float64 only.
    """
    def row_norms_sq(q):
        # $r_i^2 = q_i^\top(Q^\top Q)\,q_i$
        return np.maximum(np.einsum("id,de,ie->i", q, q.T @ q, q), 0.0)

    r_t, r_s = np.sqrt(row_norms_sq(q_t)), np.sqrt(row_norms_sq(q_s))
    # $m_i = \max(r_i, \epsilon)$
    m_t, m_s = np.maximum(r_t, eps), np.maximum(r_s, eps)
    # $q_{T,i}^\top(Q_T^\top Q_S)\,q_{S,i}$
    cross = np.einsum("id,de,ie->i", q_t, q_t.T @ q_s, q_s)
    # $\sum_i r_{T,i}^2/m_{T,i}^2 + r_{S,i}^2/m_{S,i}^2 - 2\,q_{T,i}^\top(Q_T^\top Q_S)\,q_{S,i}/(m_{T,i}m_{S,i})$
    total = float(np.sum((r_t / m_t) ** 2 + (r_s / m_s) ** 2 - 2.0 * cross / (m_t * m_s)))
    return total / q_s.shape[0] ** 2 if reduction == "batchmean" else total


# ---------------------------------------------------------------------------------------------
# The contract: arguments, knobs and conventions (read by both sides, the proof and the docs)


def _check_trace_form(arguments, knobs) -> None:
    """What no kind states: the trace form only with ``p = 2``, ``zero_rows="mask_grad"`` and
    float64 inputs."""
    if knobs["trace_form"]:
        if knobs["p"] != 2:
            raise ValueError("trace_form=True needs p=2: an L1 row norm has no trace form")
        if knobs["zero_rows"] != "mask_grad":
            raise ValueError("trace_form=True supports zero_rows='mask_grad' only")
        first = arguments["student"][0]
        if str(first.dtype).removeprefix("torch.") != "float64":
            raise ValueError(f"trace_form=True needs float64 inputs (its 2b − 2Σcos cancels in lower precision), "
                             f"got {first.dtype}")


SP_LOSS = Declaration(
    name="sp_loss",
    args=(
        Arg("student", "embeddings_list", "the student's activation maps, one per layer pair, on one batch",
            items_alike=True),
        Arg("teacher", "embeddings_list", "the teacher's activation maps, one per student map, a constant target; "
            "widths may differ between the two networks and between layers", like="student", match="batch"),
    ),
    knobs=(
        Knob("p", 2, "the row normalisation's norm, 2 (the paper) or 1 (torchdistill)", choices=(1, 2)),
        Knob("eps", 1e-12, r"the normalisation's floor, :math:`G_{[i,:]}=\tilde G_{[i,:]}/\max(\lVert\cdot\rVert_p,"
             r"\epsilon)`", low=0.0, open_low=True),
        Knob("reduction", "batchmean", "per layer pair, ``\"batchmean\"`` (:math:`\\div b^2`) or ``\"sum\"``",
             choices=("batchmean", "sum")),
        Knob("layer_reduction", "sum", "over the pairs, ``\"sum\"`` or ``\"mean\"`` (KD-Zoo)", choices=("sum", "mean")),
        Knob("zero_rows", "mask_grad", "the gradient through the row of an all-zero sample, whose normalised row is "
             "0: ``\"mask_grad\"`` (0: the row is a constant) or ``\"keep\"`` (the libraries' :math:`1/\\epsilon`); "
             "the value is the same", choices=("mask_grad", "keep")),
        Knob("trace_form", False, "compute each pair with :func:`trace_form_pair_loss` (no :math:`b\\times b` "
             "matrix; ``p=2``, ``zero_rows=\"mask_grad\"`` and float64 only); the value is the same up to rounding",
             choices=(False, True)),
    ),
    presets={
        "paper": {},
        "kdzoo": {"layer_reduction": "mean"},
        "torchdistill": {"p": 1},
    },
    aliases={"repdistiller": "paper", "mdistiller": "paper"},
    descriptions={
        "paper": "row-wise L2-normalised batch Gram, ‖G_T − G_S‖²_F / b² per layer pair, summed over the pairs "
                 "(reconstructed; = RepDistiller, mdistiller)",
        "kdzoo": "as paper, averaged over the layer pairs instead of summed (KD-Zoo)",
        "torchdistill": "row-wise L1 normalisation (torchdistill passes p=1 to F.normalize); "
                        "reduction 'batchmean' (/ b²) or 'sum'",
    },
    check=_check_trace_form,
)


@SP_LOSS.implement(NUMPY)
def sp_loss(student: list[np.ndarray], teacher: list[np.ndarray], *, p: int, eps: float, reduction: str,
            layer_reduction: str, zero_rows: str, trace_form: bool) -> float:
    r"""The SP loss over layer pairs ``(teacher[k], student[k])``:

    .. math:: \mathcal L_{SP}=\frac{1}{b^2}\sum_{k}\big\lVert G_T^{(k)}-G_S^{(k)}\big\rVert_F^2
              \quad\text{(default, ``"paper"``)}.

    The cross-entropy and the weight :math:`\gamma` (3000 in every library recipe) of the paper's
    objective :math:`\mathcal L_{CE}+\gamma\mathcal L_{SP}` are left to the caller.

    Returns:
      a float.

    Examples:
      >>> import numpy as np
      >>> T_A = np.array([[1., 0, 0], [0, 2, 0], [0, 0, 3], [1, 1, 1]])
      >>> S_A = np.array([[1., 0], [0, 1], [1, 1], [2, -1]])
      >>> print(f"{sp_loss([S_A], [T_A]):.8g}")
      0.1706263
      >>> print(f"{sp_loss([S_A], [T_A], convention='torchdistill'):.8g}")
      0.076180556
      >>> print(f"{sp_loss([S_A], [T_A], convention='torchdistill', reduction='sum'):.8g}")
      1.2188889

    References:
      Tung, Mori. *Similarity-Preserving Knowledge Distillation.* ICCV 2019, arXiv:1907.09682
      (the equations reconstructed; RepDistiller's author-verified ``Similarity`` agrees).

    .. seealso:: :func:`similarity_matrix` for one layer's :math:`G`, and :func:`trace_form_pair_loss`
       for the form without a :math:`b\times b` matrix.
    """
    # zero_rows changes the gradient only (the torch side's); the value is the same either way
    # $Q_S^{(l')}$, $Q_T^{(l)}$: one row per sample
    q_s = [q.astype(np.float64) for q in student]
    q_t = [q.astype(np.float64) for q in teacher]
    if trace_form:
        terms = [trace_form_pair_loss(s, t, eps, reduction) for s, t in zip(q_s, q_t, strict=True)]
    else:
        # $\frac{1}{b^2}\lVert G_T^{(l)} - G_S^{(l')}\rVert_F^2$ for each pair $(l, l')$
        terms = [sp_pair_loss(similarity_matrix(s, p, eps), similarity_matrix(t, p, eps), reduction)
                 for s, t in zip(q_s, q_t, strict=True)]
    # $\sum_{(l,l')\in\mathcal I}$
    total = float(np.sum(terms))
    return total / len(terms) if layer_reduction == "mean" else total
