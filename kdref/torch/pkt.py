r"""PKT — Probabilistic Knowledge Transfer (Passalis & Tefas, ECCV 2018), PyTorch.

Computes the same function as :mod:`kdref.reference.pkt` (proven by the test harness) with the
same conventions. The work is two :math:`N\times N` Gram matrices of unit vectors, as in the
popular code — no tensor is larger than :math:`N\times N` — with what that code lacks:

- the norm is taken of each row divided by its largest magnitude (a detached constant, so the
  gradient is unchanged): float32 rows of size ``1e-20`` or ``1e20`` keep their direction;
- ``torch.linalg.vector_norm``, whose backward pass at a zero vector is the zero subgradient, so an
  all-zero row under ``eps > 0`` gets the finite :math:`1/\varepsilon` gradient of
  :math:`x/(\lVert x\rVert+\varepsilon)` instead of the libraries' NaN;
- the cosine clipped to :math:`[-1,1]` before the kernel (float32 Gram entries reach
  :math:`1+10^{-7}`), and :math:`p\log p` taken as 0 at :math:`p=0` without a NaN gradient;
- the teacher's side under ``no_grad`` (it is a constant), and everything computed in float32 at
  least, with autocast disabled: bfloat16 keeps about 3 digits of each cosine, coarse next to the
  differences :math:`P-Q` the loss measures.

With ``eps = 0`` an all-zero row raises ``ValueError``, which costs one read-back from the device;
under ``torch.compile`` that check is skipped and such a row gives NaN.
"""

from __future__ import annotations

import torch

from kdref.reference.pkt import PKT_LOSS, pair_count
from kdref.torch._common import TORCH, accumulation_dtype

__all__ = ["conditional_probabilities", "cosine_kernel", "pkt_loss", "unit_rows"]


def unit_rows(x: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    r""":math:`\hat x_i = x_i/(\lVert x_i\rVert_2+\varepsilon)`, ``[N, D]`` (as
    :func:`kdref.reference.pkt.unit_rows`)."""
    largest = x.detach().abs().amax(dim=1, keepdim=True)
    largest = torch.where(largest > 0, largest, torch.ones_like(largest))
    norm = largest * torch.linalg.vector_norm(x / largest, dim=1, keepdim=True)
    return x / (norm + eps) if eps > 0 else x / norm


def cosine_kernel(x: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    r""":math:`K_{ij}=\frac12(\hat x_i^\top\hat x_j+1)`, the cosine clipped to :math:`[-1,1]`, ``[N, N]``.

    One fused ``addmm`` (:math:`\frac12+\frac12\hat X\hat X^\top`) and one clamp: two passes over the
    :math:`N\times N` matrix instead of four."""
    x_hat = unit_rows(x, eps)
    return torch.addmm(x_hat.new_full((1, 1), 0.5), x_hat, x_hat.T, alpha=0.5).clamp(0.0, 1.0)


def conditional_probabilities(K: torch.Tensor, include_self: bool = False) -> torch.Tensor:
    r"""Row-normalised kernel, :math:`p_{j|i}=K_{ij}/\sum_{k\ne i}K_{ik}` (or over all :math:`k` with
    ``include_self``); a row with kernel sum 0 is uniform over the other samples (as
    :func:`kdref.reference.pkt.conditional_probabilities`)."""
    n = K.shape[0]
    if include_self:
        return K / K.sum(dim=1, keepdim=True)  # K_ii > 0: the sum is positive
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=K.device)
    K = torch.where(off_diagonal, K, torch.zeros_like(K))
    total = K.sum(dim=1, keepdim=True)
    positive = total > 0
    uniform = off_diagonal.to(K.dtype) / max(n - 1, 1)
    return torch.where(positive, K / torch.where(positive, total, torch.ones_like(total)), uniform)


def _teacher_entropy_terms(P: torch.Tensor, eps: float) -> torch.Tensor:
    r""":math:`\sum_jP_{ij}\log(P_{ij}+\varepsilon)` per anchor, :math:`0\log0=0`, ``[N]`` (no gradient needed)."""
    return torch.linalg.vecdot(P, torch.log(P + eps)) if eps > 0 else torch.xlogy(P, P).sum(dim=1)


def _student_cross_terms(P: torch.Tensor, K: torch.Tensor, include_self: bool, eps: float) -> torch.Tensor:
    r""":math:`\sum_jP_{ij}\log(q_{j|i}+\varepsilon)` per anchor, ``[N]``, without forming :math:`Q`:

    .. math:: \log(q_{j|i}+\varepsilon) = \log(K_{ij}+\varepsilon s_i) - \log s_i,\qquad
              s_i=\textstyle\sum_{k(\ne i)}K_{ik},

    so the second term is :math:`r_i\log s_i` with :math:`r_i=\sum_jP_{ij}`. The diagonal of
    :math:`K` needs no mask without the self-pairs: :math:`P_{ii}=0` weighs it out, and
    :math:`s_i` subtracts it. A row with :math:`s_i=0` (every neighbour antipodal) becomes the
    uniform row (kernel 1, :math:`s_i=N-1`), as in :func:`conditional_probabilities`.
    """
    n = K.shape[0]
    s = K.sum(dim=1)
    if not include_self:
        s = s - K.reshape(-1)[:: n + 1]  # the diagonal (a strided view; Inductor's lowering of diagonal() warns)
        degenerate = s <= 0
        K = torch.where(degenerate.unsqueeze(1), torch.ones_like(K), K)
        s = torch.where(degenerate, torch.full_like(s, max(n - 1, 1)), s)
    if eps > 0:
        inner = torch.log(K + eps * s.unsqueeze(1))
    else:  # where p = 0 the term is 0: K is replaced by 1 there, so that no log 0 · 0 reaches the gradient
        inner = torch.log(torch.where(P > 0, K, torch.ones_like(K)))
    return torch.linalg.vecdot(P, inner) - P.sum(dim=1) * torch.log(s)


def _check_no_zero_row(name: str, x: torch.Tensor) -> None:
    if torch.compiler.is_compiling() or x.device.type == "meta":
        return
    zero = (x == 0).all(dim=1)
    if bool(zero.any()):
        sample = int(zero.nonzero()[0, 0])
        raise ValueError(f"{name} must have no all-zero row when eps = 0 (the cosine kernel of a zero vector is "
                         f"undefined), got one at sample {sample}; pass eps > 0 for the official rule, "
                         "which gives a zero row the kernel value 1/2 against every sample")


@PKT_LOSS.implement(TORCH)
def pkt_loss(student: torch.Tensor, teacher: torch.Tensor, *, include_self: bool, eps: float,
             reduction: str) -> torch.Tensor:
    r"""The PKT loss, :math:`\sum_i\sum_{j\ne i}p_{j|i}\log(p_{j|i}/q_{j|i})` by default.

    Arguments, conventions and result as :func:`kdref.reference.pkt.pkt_loss`; ``student`` and
    ``teacher`` are tensors ``[N, ...]`` on one device with the same batch size and dtype (their
    widths may differ), the teacher is detached, and the result is a 0-d tensor (``[N]`` for
    ``"none"``), float32 for half-precision inputs.

    Examples:
      >>> import torch
      >>> T_A = torch.tensor([[1.0, 0, 0], [0, 2, 0], [0, 0, 3], [1, 1, 1]], dtype=torch.float64)
      >>> S_A = torch.tensor([[1.0, 0], [0, 1], [1, 1], [2, -1]], dtype=torch.float64)
      >>> print(f"{pkt_loss(S_A, T_A).item():.8g}")
      0.42136287
      >>> print(f"{pkt_loss(S_A, T_A, convention='repdistiller').item():.8g}")
      0.018755931
      >>> print(f"{pkt_loss(S_A, T_A, convention='kdzoo').item():.8g}")
      0.018755761
    """
    y, x = student, teacher
    n = y.shape[0]
    if eps == 0:
        _check_no_zero_row("student", y)
        _check_no_zero_row("teacher", x)
    dtype = accumulation_dtype(y)
    include = include_self
    # autocast would run the Gram products in bfloat16; kdref accumulates in float32
    with torch.autocast(device_type=y.device.type, enabled=False):
        with torch.no_grad():
            P = conditional_probabilities(cosine_kernel(x.detach().to(dtype), eps), include)
            entropy = _teacher_entropy_terms(P, eps)
        per_anchor = entropy - _student_cross_terms(P, cosine_kernel(y.to(dtype), eps), include, eps)
        if reduction == "none":
            return per_anchor
        total = per_anchor.sum()
        return total / pair_count(n, include) if reduction == "mean" else total
