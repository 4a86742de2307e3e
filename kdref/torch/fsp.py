r"""FSP — flow of solution procedure matrices (Yim et al., CVPR 2017), PyTorch.

Computes the same functions as :mod:`kdref.reference.fsp` (proven by the test harness) with the
same conventions. The FSP matrix is one batched matrix product of the ``[N, m, hw]`` and
``[N, n, hw]`` views of the two maps, :math:`O(N\,m\,n\,hw)` time and only ``[N, m, n]`` extra
memory; the popular broadcast ``(F1[:, None] * F2[:, :, None]).mean(-1)`` materialises
``[N, n, m, hw]`` (and another of that size in the backward pass). The teacher is detached,
half-precision inputs are computed in float32 (the product runs with autocast off, which would
otherwise cast it back to bfloat16), and nothing loops over the batch; the loop over layer pairs
is a Python loop over a handful of tensors.
"""

from __future__ import annotations

import torch

from kdref.reference.fsp import _PAIR_OF_MAPS, FSP_LOSS, FSP_MATRIX, _spatial_mismatch, pair_weights
from kdref.torch._common import TORCH, accumulation_dtype, adaptive_pool2d, reduce_batch

__all__ = ["fsp_distance", "fsp_loss", "fsp_matrix", "match_spatial_pair"]


def _gram(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """Eq. (1) as one batched matmul ``[N, m, hw] @ [N, hw, n] / hw``, in the inputs' dtype."""
    n, m, h, w = f1.shape
    with torch.autocast(device_type=f1.device.type, enabled=False):
        return torch.bmm(f1.reshape(n, m, h * w), f2.reshape(n, f2.shape[1], h * w).transpose(1, 2)) / (h * w)


@FSP_MATRIX.implement(TORCH)
def fsp_matrix(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    r"""Eq. (1): :math:`G = F^1 {F^2}^\top/(h w)`, ``[N, m, n]``.

    Arguments and result as :func:`kdref.reference.fsp.fsp_matrix`; half-precision inputs give a
    float32 matrix.

    Examples:
      >>> import torch
      >>> f1 = torch.tensor([[[[1.0, 0.0], [2.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]]], dtype=torch.float64)
      >>> f2 = torch.tensor([[[[1.0, 1.0], [0.0, 2.0]], [[0.0, 0.0], [1.0, 1.0]], [[2.0, 0.0], [0.0, 1.0]]]],
      ...                   dtype=torch.float64)
      >>> fsp_matrix(f1, f2)
      tensor([[[0.7500, 0.7500, 0.7500],
               [0.2500, 0.2500, 0.0000]]], dtype=torch.float64)
    """
    dtype = accumulation_dtype(f1)
    return _gram(f1.to(dtype), f2.to(dtype))


def _match_spatial(f1: torch.Tensor, f2: torch.Tensor, pool: str, names: tuple[str, str]):
    """Both maps at ``(min h, min w)``: only a map larger than that is pooled."""
    if f1.shape[2:] == f2.shape[2:]:
        return f1, f2
    if pool == "error":
        raise _spatial_mismatch(f1, f2, names)
    size = (min(f1.shape[2], f2.shape[2]), min(f1.shape[3], f2.shape[3]))
    return tuple(x if tuple(x.shape[2:]) == size else adaptive_pool2d(x, size, pool) for x in (f1, f2))


def match_spatial_pair(f1: torch.Tensor, f2: torch.Tensor, pool: str = "max") -> tuple[torch.Tensor, torch.Tensor]:
    """Pool the larger map of a pair to ``(min h, min w)``, as :func:`kdref.reference.fsp.match_spatial_pair`."""
    maps, knobs = _PAIR_OF_MAPS.bind(TORCH, (f1, f2), {"pool": pool})
    return _match_spatial(maps["f1"], maps["f2"], knobs["pool"], ("f1", "f2"))


def fsp_distance(g_s: torch.Tensor, g_t: torch.Tensor, kind: str = "sq_frobenius") -> torch.Tensor:
    r"""Per-example distance ``[N]`` of two ``[N, m, n]`` FSP matrices, as
    :func:`kdref.reference.fsp.fsp_distance`.

    ``"col_l2"`` uses ``torch.linalg.vector_norm``, whose gradient at a zero column is the 0
    subgradient (a hand-written ``sqrt`` of a sum of squares would give NaN there).
    """
    delta = g_t - g_s
    if kind == "sq_frobenius":
        return delta.square().sum(dim=(1, 2))
    if kind == "mse":
        return delta.square().mean(dim=(1, 2))
    if kind == "col_l2":
        return torch.linalg.vector_norm(delta, dim=1).sum(dim=1)
    raise ValueError(f"kind must be one of 'sq_frobenius', 'mse', 'col_l2'; got {kind!r}")


@FSP_LOSS.implement(TORCH)
def fsp_loss(student_first: list[torch.Tensor], student_second: list[torch.Tensor],
             teacher_first: list[torch.Tensor], teacher_second: list[torch.Tensor],
             weights: float | list[float] | None, *, pool: str, distance: str, pair_reduction: str,
             reduction: str) -> torch.Tensor:
    r"""Eq. (2): :math:`\frac1N\sum_x\sum_i\lambda_i\Vert G_i^T-G_i^S\Vert_F^2` by default.

    Arguments, conventions and result as :func:`kdref.reference.fsp.fsp_loss`; the maps are
    tensors on one device with one dtype, the teacher's are detached, and the result is a 0-d
    tensor (``[N]`` for ``reduction="none"``), float32 for half-precision inputs.

    Examples:
      The spec's example 1:

      >>> import torch
      >>> S1 = torch.tensor([[[[1, 0], [2, 1]], [[0, 1], [1, 0]]], [[[2, 1], [0, 0]], [[1, 1], [0, 2]]]],
      ...                   dtype=torch.float64, requires_grad=True)
      >>> S2 = torch.tensor([[[[1, 1], [0, 2]], [[0, 0], [1, 1]], [[2, 0], [0, 1]]],
      ...                    [[[0, 1], [1, 0]], [[1, 2], [0, 0]], [[0, 0], [2, 1]]]], dtype=torch.float64)
      >>> T1 = torch.tensor([[[[2, 0], [1, 1]], [[0, 1], [0, 1]]], [[[1, 1], [1, 0]], [[0, 2], [1, 1]]]],
      ...                   dtype=torch.float64)
      >>> T2 = torch.tensor([[[[1, 0], [1, 2]], [[1, 0], [0, 1]], [[1, 1], [0, 0]]],
      ...                    [[[0, 2], [1, 0]], [[1, 1], [1, 0]], [[0, 1], [1, 1]]]], dtype=torch.float64)
      >>> fsp_loss([S1], [S2], [T1], [T2]).item()
      1.125
      >>> fsp_loss([S1], [S2], [T1], [T2], convention="repdistiller").item()
      0.1875
      >>> print(f"{fsp_loss([S1], [S2], [T1], [T2], convention='torchdistill').item():.8g}")
      1.4938556
    """
    lambdas = pair_weights(weights, len(student_first))
    dtype = accumulation_dtype(student_first[0])
    terms = []
    for i, lam in enumerate(lambdas):
        g = {}
        for side, firsts, seconds in (("student", student_first, student_second),
                                      ("teacher", teacher_first, teacher_second)):
            f1, f2 = firsts[i].to(dtype), seconds[i].to(dtype)
            if side == "teacher":
                f1, f2 = f1.detach(), f2.detach()
            f1, f2 = _match_spatial(f1, f2, pool, (f"{side}_first[{i}]", f"{side}_second[{i}]"))
            g[side] = _gram(f1, f2)
        terms.append(lam * fsp_distance(g["student"], g["teacher"], distance))
    per_example = torch.stack(terms).sum(dim=0) if pair_reduction == "sum" else torch.stack(terms).mean(dim=0)
    return reduce_batch(per_example, reduction)
