r"""CC — Correlation Congruence for Knowledge Distillation (Peng et al., ICCV 2019), PyTorch.

Computes the same functions as :mod:`kdref.reference.cc` (proven by the test harness) with the
same conventions. Each correlation matrix is one :math:`n\times n` Gram matrix (torchdistill's
code builds it row by row in a Python loop), and the truncated Taylor series is evaluated by
Horner's rule, :math:`C=e^{-2\gamma}\big(1+\tfrac{2\gamma}{1}S\big(1+\tfrac{2\gamma}{2}S(\dots)\big)\big)`:
:math:`P` multiply-adds of :math:`n\times n` matrices and no ``pow``. The exact Gaussian takes its
squared distances from the Gram matrix of the centred rows.

The teacher is detached, half-precision inputs are computed in float32, and the Gram products run
with autocast disabled, so they accumulate in float32 (or float64) inside an autocast region too.
Nothing loops over the samples; everything works under ``torch.compile``.
"""

from __future__ import annotations

import math

import torch

from kdref.reference.cc import CC_ADJACENT_RESIDUAL_LOSS, CC_LOSS
from kdref.torch._common import TORCH, accumulation_dtype, l2_normalize

__all__ = ["cc_adjacent_residual_loss", "cc_loss", "congruence", "correlation_matrix", "normalized_rows"]


def normalized_rows(F: torch.Tensor, eps: float = 1e-12, zero_rows: str = "mask_grad") -> torch.Tensor:
    r""":math:`\hat f_i=f_i/\max(\lVert f_i\rVert,\epsilon)` (as
    :func:`kdref.reference.cc.normalized_rows`). Rows inside the :math:`\epsilon` ball keep the value
    :math:`f_i/\epsilon`; ``zero_rows="mask_grad"`` makes them constants (zero gradient), ``"keep"``
    differentiates :math:`f_i/\epsilon` as ``F.normalize`` does (a gradient of order :math:`1/\epsilon`)."""
    unit = l2_normalize(F, dim=1, eps=eps, eps_mode="clamp")  # the norm of the rows scaled by their maxima
    if zero_rows == "keep":
        return unit
    # the rows outside the ε ball: ‖f‖ ≥ ε, decided on the scaled row (‖f‖ itself may overflow)
    scale = F.detach().abs().amax(dim=1, keepdim=True)
    inside = torch.linalg.vector_norm(F.detach() / torch.where(scale > 0, scale, torch.ones_like(scale)), dim=1,
                                      keepdim=True) * scale < eps
    return torch.where(inside, unit.detach(), unit)


def _gaussian_taylor(S: torch.Tensor, gamma: float, P: int) -> torch.Tensor:
    r""":math:`\sum_{p\le P}e^{-2\gamma}\frac{(2\gamma)^p}{p!}S^p` by Horner's rule: the ratio of
    consecutive coefficients is :math:`a_p/a_{p-1}=2\gamma/p`."""
    series = torch.ones_like(S)
    for p in range(P, 0, -1):
        series = 1.0 + (2.0 * gamma / p) * S * series
    return math.exp(-2.0 * gamma) * series


def _sq_distances(F: torch.Tensor) -> torch.Tensor:
    r""":math:`\lVert f_i-f_j\rVert^2=G_{ii}+G_{jj}-2G_{ij}` from the Gram matrix of the **centred**
    rows (distances are translation invariant; centring keeps float32 exact at a large common
    offset), exactly 0 on the diagonal. Unlike :func:`kdref.torch._common.pairwise_sq_distances`
    nothing is thresholded, so the second derivative at coincident rows is right (double backward):
    there the value is 0 up to rounding, which the exponential does not mind."""
    centred = F - F.mean(dim=0, keepdim=True)
    gram = centred @ centred.T
    # G_ii exactly as in G; not gram.diagonal(), whose gradient under torch.compile (Inductor,
    # torch 2.13) comes out wrong
    norms = (gram * torch.eye(F.shape[0], dtype=gram.dtype, device=gram.device)).sum(dim=1)
    return norms[:, None] + norms[None, :] - 2 * gram


def correlation_matrix(F: torch.Tensor, *, kernel: str = "gaussian_taylor", gamma: float = 0.4, P: int = 2,
                       normalize: bool = True, eps: float = 1e-12, zero_rows: str = "mask_grad") -> torch.Tensor:
    r""":math:`\psi(F)=C`, ``[n, d]`` to ``[n, n]`` (as :func:`kdref.reference.cc.correlation_matrix`)."""
    if normalize:
        F = normalized_rows(F, eps, zero_rows)
    if kernel == "gaussian_exact":
        return torch.exp(-gamma * _sq_distances(F))
    S = F @ F.T
    return _gaussian_taylor(S, gamma, P) if kernel == "gaussian_taylor" else S


def congruence(C_S: torch.Tensor, C_T: torch.Tensor, *, norm: str = "fro_sq",
               reduction: str = "batchmean") -> torch.Tensor:
    r""":math:`\frac{1}{n^2}\lVert C_T-C_S\rVert_F^2` (``"fro_sq"``) or :math:`\frac{1}{n^2}\lVert
    C_T-C_S\rVert_F` (``"fro"``; its gradient at :math:`C_T=C_S` is the zero subgradient)."""
    difference = C_T - C_S
    squared = difference.square().sum()
    if norm == "fro_sq":
        distance = squared
    else:
        # √ of a safe argument where the matrices agree: value 0, gradient 0 and a finite second
        # derivative there (vector_norm's double backward is NaN at 0)
        matched = squared == 0
        distance = torch.where(matched, squared, torch.where(matched, torch.ones_like(squared), squared).sqrt())
    return distance / difference.numel() if reduction == "batchmean" else distance


@CC_LOSS.implement(TORCH)
def cc_loss(student: torch.Tensor, teacher: torch.Tensor, *, kernel: str, gamma: float, P: int, normalize: bool,
            norm: str, reduction: str, eps: float, zero_rows: str) -> torch.Tensor:
    r"""The correlation congruence loss, :math:`\frac{1}{n^2}\lVert\psi(F_T)-\psi(F_S)\rVert_F^2`
    by default.

    Arguments, conventions and result as :func:`kdref.reference.cc.cc_loss`; inputs are tensors
    ``[n, ...]`` on one device, and the result is a 0-d tensor (float32 for half-precision inputs).

    Examples:
      >>> import torch
      >>> s = torch.tensor([[1.0, 0], [0, 1], [1, 1], [2, -1]], dtype=torch.float64)
      >>> t = torch.tensor([[1.0, 0, 0], [0, 2, 0], [0, 0, 3], [1, 1, 1]], dtype=torch.float64)
      >>> print(f"{cc_loss(s, t).item():.8g}")
      0.051474637
      >>> print(f"{cc_loss(s, t, convention='torchdistill', kernel='bilinear').item():.8g}")
      0.60595998
    """
    dtype = accumulation_dtype(student)
    correlation = {"kernel": kernel, "gamma": gamma, "P": P, "normalize": normalize, "eps": eps,
                   "zero_rows": zero_rows}
    # autocast would run the Gram products in bfloat16/float16; kdref accumulates in float32
    with torch.autocast(device_type=student.device.type, enabled=False):
        C_S = correlation_matrix(student.to(dtype), **correlation)
        C_T = correlation_matrix(teacher.detach().to(dtype), **correlation)
        return congruence(C_S, C_T, norm=norm, reduction=reduction)


@CC_ADJACENT_RESIDUAL_LOSS.implement(TORCH)
def cc_adjacent_residual_loss(student: torch.Tensor, teacher: torch.Tensor, *, reduction: str) -> torch.Tensor:
    r"""The loss of the authors' shared CC code (RepDistiller's ``Correlation``), the mean over the
    :math:`n-1` adjacent pairs of :math:`\langle\lvert f^S_i-f^T_i\rvert,\lvert f^S_{i+1}-f^T_{i+1}\rvert\rangle`.

    As :func:`kdref.reference.cc.cc_adjacent_residual_loss`; the gradient at a zero residual is
    ``abs``'s zero subgradient.

    Examples:
      >>> import torch
      >>> s = torch.tensor([[1.0, 0], [0, 1], [1, 1], [2, -1]], dtype=torch.float64)
      >>> t = torch.tensor([[1.0, 0], [0, 2], [0, 0], [1, 1]], dtype=torch.float64)
      >>> print(f"{cc_adjacent_residual_loss(s, t).item():.8g}")
      1.3333333
    """
    dtype = accumulation_dtype(student)
    with torch.autocast(device_type=student.device.type, enabled=False):
        delta = (student.to(dtype) - teacher.detach().to(dtype)).abs()
        residuals = (delta[:-1] * delta[1:]).sum(dim=1)
        return residuals.mean() if reduction == "mean" else residuals.sum()
