r"""SP — Similarity-Preserving Knowledge Distillation (Tung & Mori, ICCV 2019), PyTorch.

Computes the same functions as :mod:`kdref.reference.sp` (proven by the test harness) with the
same conventions. Each layer pair costs two :math:`b\times b` Gram matrices
:math:`\tilde G=QQ^\top` (:math:`O(b^2d)` time, :math:`O(b^2)` memory) — never a
:math:`[b, b, d]` broadcast; with ``trace_form=True`` (float64) no :math:`b\times b` matrix at
all, :math:`O(b\,(d_T^2+d_S^2+d_Td_S))`.

The teacher is detached. Half-precision inputs are computed in float32 and the products run with
autocast disabled: :math:`\tilde G_{ii}=\lVert q_i\rVert^2` grows with the width and overflows
float16 (65504) at ordinary activation sizes. The row of an all-zero sample is 0 in value; its
gradient is 0 (``zero_rows="mask_grad"``) or the libraries' :math:`1/\epsilon` (``"keep"``).
Nothing loops over the batch; the loop over layer pairs is a loop over the list.
"""

from __future__ import annotations

import torch

from kdref.reference.sp import SP_LOSS
from kdref.torch._common import TORCH, accumulation_dtype, sqrt_or_zero

__all__ = ["batch_gram", "row_normalize", "similarity_matrix", "sp_loss", "sp_pair_loss", "trace_form_pair_loss"]


def batch_gram(q: torch.Tensor) -> torch.Tensor:
    r""":math:`\tilde G = QQ^\top`, ``[b, d]`` → ``[b, b]`` (as :func:`kdref.reference.sp.batch_gram`)."""
    return q @ q.T


def row_normalize(g: torch.Tensor, p: int = 2, eps: float = 1e-12, zero_rows: str = "mask_grad") -> torch.Tensor:
    r"""Each row divided by :math:`\max(\lVert\tilde G_{[i,:]}\rVert_p,\epsilon)`; an all-zero row
    stays 0. ``zero_rows="mask_grad"`` makes such a row a constant (zero gradient);
    ``"keep"`` keeps ``F.normalize``'s gradient there, :math:`I/\epsilon`."""
    norms = torch.linalg.vector_norm(g, ord=p, dim=1, keepdim=True)
    divisors = norms.clamp_min(eps)
    if zero_rows == "mask_grad":
        # a zero row stays 0 whatever its divisor; an infinite one makes the row a constant, so its
        # gradient is 0 rather than 1/ε (masking the [b, 1] divisors, not the [b, b] rows, is free)
        divisors = torch.where(norms > 0, divisors, torch.full_like(divisors, torch.inf))
    if g.shape[1] == 1:  # b = 1: ‖[x]‖ = |x| exactly and x / |x| = 1, where x · fl(1/x) can be 1 − 2⁻⁵³
        return g / divisors
    return g * (1.0 / divisors)  # b reciprocals and b² products: cheaper than b² divisions


def similarity_matrix(q: torch.Tensor, p: int = 2, eps: float = 1e-12, zero_rows: str = "mask_grad") -> torch.Tensor:
    r"""The row-normalised batch similarity matrix :math:`G` of one layer, ``[b, b]``."""
    return row_normalize(batch_gram(q), p, eps, zero_rows)


def sp_pair_loss(g_s: torch.Tensor, g_t: torch.Tensor, reduction: str = "batchmean") -> torch.Tensor:
    r""":math:`\lVert G_T-G_S\rVert_F^2`, divided by :math:`b^2` for ``"batchmean"``."""
    total = (g_t - g_s).square().sum()
    return total / g_s.shape[0] ** 2 if reduction == "batchmean" else total


def _row_norms_sq(q: torch.Tensor) -> torch.Tensor:
    """:math:`r_i^2 = q_i^\\top(Q^\\top Q)\\,q_i = \\lVert\\tilde G_{[i,:]}\\rVert^2` from a d × d Gram."""
    return ((q @ (q.T @ q)) * q).sum(dim=1).clamp_min(0.0)


def trace_form_pair_loss(q_s: torch.Tensor, q_t: torch.Tensor, eps: float = 1e-12,
                         reduction: str = "batchmean") -> torch.Tensor:
    r"""As :func:`kdref.reference.sp.trace_form_pair_loss`: the pair's term from :math:`d\times d`
    Gram matrices only. The terms of an all-zero row are 0 with zero gradient (``"mask_grad"``)."""
    r_t, r_s = sqrt_or_zero(_row_norms_sq(q_t)), sqrt_or_zero(_row_norms_sq(q_s))
    m_t, m_s = r_t.clamp_min(eps), r_s.clamp_min(eps)
    cross = ((q_t @ (q_t.T @ q_s)) * q_s).sum(dim=1)
    both = (r_t > 0) & (r_s > 0)
    cosine = torch.where(both, cross / (m_t * m_s), torch.zeros_like(cross))
    total = ((r_t / m_t).square() + (r_s / m_s).square() - 2.0 * cosine).sum()
    return total / q_s.shape[0] ** 2 if reduction == "batchmean" else total


@SP_LOSS.implement(TORCH)
def sp_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], *, p: int, eps: float, reduction: str,
            layer_reduction: str, zero_rows: str, trace_form: bool) -> torch.Tensor:
    r"""The SP loss, :math:`\frac{1}{b^2}\sum_k\lVert G_T^{(k)}-G_S^{(k)}\rVert_F^2` by default.

    Arguments, conventions and result as :func:`kdref.reference.sp.sp_loss`; ``student`` and
    ``teacher`` are lists of tensors ``[b, ...]`` on one device, and the result is a 0-d tensor
    (float32 for half-precision inputs).

    Examples:
      >>> import torch
      >>> T_A = torch.tensor([[1., 0, 0], [0, 2, 0], [0, 0, 3], [1, 1, 1]], dtype=torch.float64)
      >>> S_A = torch.tensor([[1., 0], [0, 1], [1, 1], [2, -1]], dtype=torch.float64)
      >>> print(f"{sp_loss([S_A], [T_A]).item():.8g}")
      0.1706263
      >>> print(f"{sp_loss([S_A], [T_A], trace_form=True).item():.8g}")
      0.1706263
      >>> print(f"{sp_loss([S_A], [T_A], convention='torchdistill').item():.8g}")
      0.076180556
    """
    q_s, q_t = student, teacher
    dtype = accumulation_dtype(q_s[0])
    terms = []
    # autocast would run the Gram products in bfloat16/float16; kdref accumulates in float32
    with torch.autocast(device_type=q_s[0].device.type, enabled=False):
        for s, t in zip(q_s, q_t, strict=True):
            s, t = s.to(dtype), t.detach().to(dtype)
            if trace_form:
                terms.append(trace_form_pair_loss(s, t, eps, reduction))
            else:
                g_s = similarity_matrix(s, p, eps, zero_rows)
                g_t = similarity_matrix(t, p, eps, zero_rows)
                terms.append(sp_pair_loss(g_s, g_t, reduction))
        total = torch.stack(terms).sum()
        return total / len(terms) if layer_reduction == "mean" else total
