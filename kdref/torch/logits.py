r"""Logits — regression on the teacher's logits (Ba & Caruana, 2014), PyTorch.

Computes the same function as :mod:`kdref.reference.logits` with the same conventions; the teacher
is detached and half-precision inputs are computed in float32.
"""

from __future__ import annotations

import torch

from kdref.reference.logits import LOGIT_REGRESSION_LOSS, SCALE_FACTORS
from kdref.torch._common import TORCH, accumulation_dtype, reduce_batch

__all__ = ["logit_regression_loss"]


@LOGIT_REGRESSION_LOSS.implement(TORCH)
def logit_regression_loss(student: torch.Tensor, teacher: torch.Tensor, *, scale: str, center: bool,
                          reduction: str) -> torch.Tensor:
    r""":math:`\frac1N\sum_n \tfrac12\lVert s_n - t_n\rVert^2` by default (paper, eq. 1).

    Arguments and conventions as :func:`kdref.reference.logits.logit_regression_loss`.

    Examples:
      >>> import torch
      >>> s = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
      >>> t = torch.tensor([[1.5, 1.0, 2.0], [0.0, 0.0, 1.0]])
      >>> logit_regression_loss(s, t).item()
      1.125
      >>> logit_regression_loss(s, t, convention="kdzoo").item()
      0.75
    """
    dtype = accumulation_dtype(student)
    residual = student.to(dtype) - teacher.detach().to(dtype)
    if center:
        # centring both inputs and subtracting equals centring the residual (a linear projection)
        residual = residual - residual.mean(dim=-1, keepdim=True)
    e = residual.square().sum(dim=-1)
    return reduce_batch(e * SCALE_FACTORS[scale](student.shape[1]), reduction)
