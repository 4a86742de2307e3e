r"""PKT — Probabilistic Knowledge Transfer (Passalis & Tefas, ECCV 2018), NumPy reference.

PKT does not ask the student to reproduce the teacher's features; it asks the student to reproduce
how the teacher's samples **relate to each other**. Within a mini-batch of :math:`N` samples, the
teacher's representations :math:`x_i\in\mathbb R^{D_t}` define, for every anchor :math:`i`, a
probability distribution over the other samples (a kernel density estimate: how likely :math:`x_j`
is the neighbour of :math:`x_i`); the student's :math:`y_i\in\mathbb R^{D_s}` define another. The
loss is the KL divergence from the teacher's conditional distributions to the student's. Only
similarities inside each space are compared, so :math:`D_s` and :math:`D_t` may differ, and the
length of each sample does not matter, only its direction.

**The paper's loss [reconstructed].** The kernel is the cosine-similarity kernel, which has no
bandwidth to tune,

.. math:: K(a,b) = \frac12\Big(\frac{a^\top b}{\lVert a\rVert_2\lVert b\rVert_2}+1\Big)\in[0,1],

the conditionals are normalised over the *other* samples (:math:`p_{i|i}` is not defined),

.. math:: p_{j|i} = \frac{K(x_j,x_i)}{\sum_{k\ne i}K(x_k,x_i)},\qquad
          q_{j|i} = \frac{K(y_j,y_i)}{\sum_{k\ne i}K(y_k,y_i)}\qquad(j\ne i),

and the loss sums the KL divergence of every anchor, with no :math:`1/N` factor:

.. math:: \mathcal L_{\text{PKT}} = \sum_{i=1}^{N}\sum_{j\ne i}p_{j|i}\log\frac{p_{j|i}}{q_{j|i}}.

These formulas are **reconstructed** (the paper's own text could not be checked).

**The official code [code]** and every library keep the self-pairs :math:`j=i` in the
normalisation and the sum, average over the :math:`N^2` entries, and add an :math:`\varepsilon`
to the norm and inside the log: the ``"official"`` convention, which is not a constant multiple of
the paper's loss.
"""

from __future__ import annotations

import numpy as np

from kdref.declaration import Arg, Declaration, Knob
from kdref.reference._common import NUMPY

__all__ = [
    "PKT_LOSS",
    "conditional_probabilities",
    "cosine_kernel",
    "kl_per_anchor",
    "pair_count",
    "pkt_loss",
    "unit_rows",
]

def unit_rows(x: np.ndarray, eps: float = 0.0) -> np.ndarray:
    r"""Each sample divided by its length, :math:`\hat x_i = x_i/(\lVert x_i\rVert_2+\varepsilon)`, ``[N, D]``.

    ``eps = 0`` is the paper's exact :math:`x_i/\lVert x_i\rVert_2`; a zero row has no direction
    then (:func:`pkt_loss` refuses it). ``eps > 0`` is the official code's rule: a zero row stays
    0. The norm is taken of the row divided by its largest magnitude and scaled back, so rows
    whose squares under- or overflow (``1e-200``, ``1e200``) keep their direction.
    """
    largest = np.max(np.abs(x), axis=1, keepdims=True)
    largest = np.where(largest > 0, largest, 1.0)
    # $\lVert x_i\rVert_2$, as $m_i\lVert x_i/m_i\rVert_2$ with $m_i=\max_d|x_{id}|$
    norm = largest * np.linalg.norm(x / largest, axis=1, keepdims=True)
    if eps == 0:
        # $\hat x_i=x_i/\lVert x_i\rVert_2$
        return x / norm
    # official: $\hat x_i=x_i/(\lVert x_i\rVert_2+\varepsilon)$
    return x / (norm + eps)


def cosine_kernel(x: np.ndarray, eps: float = 0.0) -> np.ndarray:
    r"""The cosine-similarity kernel :math:`K_{ij}=K(x_i,x_j)` between every pair of samples,
    ``[N, N]``, with :math:`\hat x` from :func:`unit_rows`.

    The cosine is clipped to :math:`[-1, 1]`, where it lies in exact arithmetic, so rounding cannot
    make a kernel value negative. The diagonal is :math:`(\lVert\hat x_i\rVert^2+1)/2`: 1 with
    ``eps = 0``, slightly less with ``eps > 0``, and ½ for a zero row.
    """
    x_hat = unit_rows(x, eps)
    # $K(x_i,x_j)=\frac12\big(\hat x_i^\top\hat x_j+1\big)\in[0,1]$
    return (np.clip(x_hat @ x_hat.T, -1.0, 1.0) + 1.0) / 2.0


def conditional_probabilities(K: np.ndarray, include_self: bool = False) -> np.ndarray:
    r"""The conditional distributions of the kernel density estimate, one row per anchor :math:`i`,
    ``[N, N]``, each row summing to 1: :math:`p_{j|i}` over the other samples (the paper), or with
    ``include_self`` (the official code) :math:`P_{ij}` over all :math:`j` including :math:`j=i`.

    A row whose kernel sum is 0 — every other sample is the anchor's exact antipode (cosine
    :math:`-1`), possible only without the self-pair — has no distribution (0/0); kdref gives it
    the uniform distribution over the other samples. That is the limit for :math:`N=2`, where the
    single neighbour always has :math:`p=1`, and for :math:`N\ge3` the only choice symmetric in
    the neighbours, which then all point the same way.
    """
    n = K.shape[0]
    off_diagonal = 1.0 - np.eye(n)
    if not include_self:
        # $p_{i|i}=0$: the anchor is no neighbour of itself
        K = K * off_diagonal
    # $\sum_{k\ne i}K(x_k,x_i)$ (official: $\sum_k K_{ik}$)
    total = np.sum(K, axis=1, keepdims=True)
    uniform = off_diagonal / max(n - 1, 1) if not include_self else np.full((n, n), 1.0 / n)
    # $p_{j|i}=K(x_j,x_i)/\sum_{k\ne i}K(x_k,x_i)$
    return np.where(total > 0, K / np.where(total > 0, total, 1.0), uniform)


def kl_per_anchor(P: np.ndarray, Q: np.ndarray, eps: float = 0.0) -> np.ndarray:
    r"""The KL divergence :math:`\mathrm{KL}(P_i\Vert Q_i)` of each anchor's conditional
    distribution, teacher first, ``[N]``.

    A term with :math:`p=0` is 0 (:math:`0\log0=0`); with ``eps = 0`` a term with :math:`p>0`
    and :math:`q=0` is :math:`+\infty`, as the KL divergence is there.
    """
    positive = P > 0
    with np.errstate(divide="ignore"):
        # $\log\frac{p_{j|i}}{q_{j|i}}$ (official: $\log\frac{P_{ij}+\varepsilon}{Q_{ij}+\varepsilon}$)
        ratio = np.log(np.where(positive, P, 1.0) + eps) - np.log(np.where(positive, Q, 1.0) + eps)
    # $\mathrm{KL}(P_i\Vert Q_i)=\sum_j p_{j|i}\log\frac{p_{j|i}}{q_{j|i}}$
    return np.sum(np.where(positive, P * ratio, 0.0), axis=1)


def pair_count(n: int, include_self: bool) -> int:
    r"""How many terms the loss sums: :math:`N(N-1)` pairs :math:`j\ne i`, or :math:`N^2` with the self-pairs."""
    return n * n if include_self else n * (n - 1)


# ---------------------------------------------------------------------------------------------
# The contract: arguments, knobs and conventions (read by both sides, the proof and the docs)


def _min_batch(knobs) -> tuple[int, str]:
    """Two samples without the self-pairs (one neighbour per anchor), one with them."""
    if knobs["include_self"]:
        return 1, "with the self-pairs"
    return 2, "without the self-pairs (p_{j|i} is normalised over the other samples)"


def _check_no_zero_row(name: str, x: np.ndarray) -> None:
    """With ``eps = 0`` the cosine kernel of a zero vector is undefined: such a row is refused."""
    zero = np.flatnonzero(np.all(x == 0, axis=1))
    if zero.size:
        raise ValueError(f"{name} must have no all-zero row when eps = 0 (the cosine kernel of a zero vector is "
                         f"undefined), got one at sample {int(zero[0])}; pass eps > 0 for the official rule, "
                         "which gives a zero row the kernel value 1/2 against every sample")


PKT_LOSS = Declaration(
    name="pkt_loss",
    args=(
        Arg("student", "embeddings", "student embeddings :math:`y`; every axis after the first is flattened into "
            "one vector per sample"),
        Arg("teacher", "embeddings", "teacher embeddings :math:`x`, a constant target; :math:`D_t` may differ "
            "from :math:`D_s`", like="student", match="batch"),
    ),
    knobs=(
        Knob("include_self", False, "keep the self-pairs :math:`j=i` in the normalisation and the sum (the "
             "official code) — not a constant factor: see :func:`conditional_probabilities`", choices=(True, False)),
        Knob("eps", 0.0, r":math:`\varepsilon` in the normalisation :math:`x/(\lVert x\rVert+\varepsilon)` and in "
             r"the log :math:`\log\frac{P+\varepsilon}{Q+\varepsilon}` (0 in the paper, 1e-7 officially, 1e-6 in "
             "KD-Zoo); with ``eps = 0`` an all-zero row is a ``ValueError``", low=0.0),
        Knob("reduction", "sum", "``\"sum\"`` over the terms (the paper), ``\"mean\"`` over them (divided by "
             ":func:`pair_count`: :math:`N(N-1)`, or :math:`N^2` with the self-pairs), or ``\"none\"``: the KL of "
             "each anchor, ``[N]``", choices=("sum", "mean", "none")),
    ),
    presets={
        "paper": {},
        "official": {"include_self": True, "eps": 1e-7, "reduction": "mean"},
        "kdzoo": {"include_self": True, "eps": 1e-6, "reduction": "mean"},
    },
    aliases={"repdistiller": "official", "mdistiller": "official", "torchdistill": "official"},
    descriptions={
        "paper": "cosine kernel, self-pairs excluded, KL(P‖Q) summed over the N(N−1) pairs i ≠ j, exact "
                 "normalisation and log (reconstructed)",
        "official": "official code (passalis/probabilistic_kt), RepDistiller, mdistiller, torchdistill: self-pairs "
                    "kept, mean over the N² entries, x/(‖x‖+1e-7) and log((P+1e-7)/(Q+1e-7))",
        "kdzoo": "KD-Zoo's PKTCosSim: the official formula with ε = 1e-6",
    },
    min_batch=_min_batch,
)


@PKT_LOSS.implement(NUMPY)
def pkt_loss(student: np.ndarray, teacher: np.ndarray, *, include_self: bool, eps: float, reduction: str):
    r"""The PKT loss: the KL divergence from the teacher's conditional distributions to the
    student's, summed over the anchors.

    .. math:: \mathcal L_{\mathrm{PKT}} = \sum_{i=1}^{N}\sum_{j\ne i}p_{j|i}\log\frac{p_{j|i}}{q_{j|i}}
              \quad\text{(default, "paper"; reconstructed)}.

    Returns:
      a float, or ``[N]`` for ``reduction="none"``. Without the self-pairs at least 2 samples
      are needed (with exactly 2 the loss is 0).

    Examples:
      >>> import numpy as np
      >>> T_A = np.array([[1.0, 0, 0], [0, 2, 0], [0, 0, 3], [1, 1, 1]])
      >>> S_A = np.array([[1.0, 0], [0, 1], [1, 1], [2, -1]])
      >>> print(f"{pkt_loss(S_A, T_A):.8g}")
      0.42136287
      >>> print(f"{pkt_loss(S_A, T_A, reduction='mean'):.8g}")
      0.035113572
      >>> print(f"{pkt_loss(S_A, T_A, convention='official'):.8g}")
      0.018755931
      >>> print(f"{pkt_loss(S_A, T_A, convention='kdzoo'):.8g}")
      0.018755761

    References:
      Passalis, Tefas. *Learning Deep Representations with Probabilistic Knowledge Transfer*,
      ECCV 2018, Sec. 3 (reconstructed formula); passalis/probabilistic_kt, ``nn/pkt.py`` (official).

    .. seealso:: ``convention="official"`` (= ``"repdistiller"``, ``"mdistiller"``,
       ``"torchdistill"``) keeps the self-pairs, averages over the :math:`N^2` entries and adds
       :math:`\varepsilon=10^{-7}`; ``"kdzoo"`` the same with :math:`\varepsilon=10^{-6}`. Neither
       is a multiple of the paper's loss. The steps: :func:`cosine_kernel`,
       :func:`conditional_probabilities`, :func:`kl_per_anchor`.
    """
    y, x = student, teacher
    if eps == 0:
        _check_no_zero_row("student", y)
        _check_no_zero_row("teacher", x)
    # $p_{j|i}$ from the teacher's kernel $K(x_j,x_i)$
    P = conditional_probabilities(cosine_kernel(x, eps), include_self)
    # $q_{j|i}$ from the student's kernel $K(y_j,y_i)$
    Q = conditional_probabilities(cosine_kernel(y, eps), include_self)
    # $\mathrm{KL}(P_i\Vert Q_i)$ for every anchor $i$
    per_anchor = kl_per_anchor(P, Q, eps)
    if reduction == "none":
        return per_anchor
    # $\mathcal L_{\text{PKT}}=\sum_i\mathrm{KL}(P_i\Vert Q_i)$
    total = float(np.sum(per_anchor))
    if reduction == "mean":
        return total / pair_count(y.shape[0], include_self)
    return total
