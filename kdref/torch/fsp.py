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

from collections.abc import Sequence

import torch

from kdref.reference.fsp import CONVENTIONS, MATRIX_CONVENTIONS, POOLS, check_pair_weights, check_pairs
from kdref.torch._common import (
    accumulation_dtype,
    adaptive_pool2d,
    check_float_tensor,
    check_same_batch,
    check_sequence,
    reduce_batch,
)

__all__ = ["fsp_distance", "fsp_loss", "fsp_matrix", "match_spatial_pair"]



def _gram(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """Eq. (1) as one batched matmul ``[N, m, hw] @ [N, hw, n] / hw``, in the inputs' dtype."""
    n, m, h, w = f1.shape
    with torch.autocast(device_type=f1.device.type, enabled=False):
        return torch.bmm(f1.reshape(n, m, h * w), f2.reshape(n, f2.shape[1], h * w).transpose(1, 2)) / (h * w)


def fsp_matrix(f1: torch.Tensor, f2: torch.Tensor, *, convention: str | None = None) -> torch.Tensor:
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
    MATRIX_CONVENTIONS.resolve(convention)
    check_float_tensor("f1", f1, ndim=4)
    check_float_tensor("f2", f2, ndim=4)
    check_same_batch("f2", f2, "f1", f1)
    if f2.shape[2:] != f1.shape[2:]:
        raise ValueError(f"f2 must have the spatial size of f1 {tuple(f1.shape[2:])} (Eq. (1) sums over one h×w "
                         f"grid), got shape {tuple(f2.shape)}; pool the larger map first (match_spatial_pair)")
    dtype = accumulation_dtype(f1)
    return _gram(f1.to(dtype), f2.to(dtype))


def _match_spatial(f1: torch.Tensor, f2: torch.Tensor, pool: str, names: tuple[str, str]):
    """Both maps at ``(min h, min w)``: only a map larger than that is pooled."""
    if f1.shape[2:] == f2.shape[2:]:
        return f1, f2
    if pool == "error":
        raise ValueError(f"{names[1]} has spatial size {tuple(f2.shape[2:])} but {names[0]} has "
                         f"{tuple(f1.shape[2:])}: Eq. (1) needs one size per pair; choose pool='max' (paper) or "
                         "pool='avg' to pool the larger map")
    size = (min(f1.shape[2], f2.shape[2]), min(f1.shape[3], f2.shape[3]))
    return tuple(x if tuple(x.shape[2:]) == size else adaptive_pool2d(x, size, pool) for x in (f1, f2))


def match_spatial_pair(f1: torch.Tensor, f2: torch.Tensor, pool: str = "max") -> tuple[torch.Tensor, torch.Tensor]:
    """Pool the larger map of a pair to ``(min h, min w)``, as :func:`kdref.reference.fsp.match_spatial_pair`."""
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {', '.join(map(repr, POOLS))}; got {pool!r}")
    check_float_tensor("f1", f1, ndim=4)
    check_float_tensor("f2", f2, ndim=4)
    check_same_batch("f2", f2, "f1", f1)
    return _match_spatial(f1, f2, pool, ("f1", "f2"))


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


def fsp_loss(
    student_first: Sequence[torch.Tensor],
    student_second: Sequence[torch.Tensor],
    teacher_first: Sequence[torch.Tensor],
    teacher_second: Sequence[torch.Tensor],
    *,
    weights: float | Sequence[float] | None = None,
    convention: str | None = None,
    pool: str | None = None,
    distance: str | None = None,
    pair_reduction: str | None = None,
    reduction: str | None = None,
) -> torch.Tensor:
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
    knobs = CONVENTIONS.resolve(convention, pool=pool, distance=distance, pair_reduction=pair_reduction,
                                reduction=reduction)
    pairs = check_pairs({"student_first": student_first, "student_second": student_second,
                         "teacher_first": teacher_first, "teacher_second": teacher_second},
                        as_array=check_float_tensor, same_batch=check_same_batch, sequence=check_sequence)
    lambdas = check_pair_weights(weights, len(pairs))
    dtype = accumulation_dtype(pairs[0]["student_first"])
    terms = []
    for i, (pair, lam) in enumerate(zip(pairs, lambdas, strict=True)):
        g = {}
        for side in ("student", "teacher"):
            f1, f2 = pair[f"{side}_first"].to(dtype), pair[f"{side}_second"].to(dtype)
            if side == "teacher":
                f1, f2 = f1.detach(), f2.detach()
            f1, f2 = _match_spatial(f1, f2, knobs["pool"], (f"{side}_first[{i}]", f"{side}_second[{i}]"))
            g[side] = _gram(f1, f2)
        terms.append(lam * fsp_distance(g["student"], g["teacher"], knobs["distance"]))
    per_example = torch.stack(terms).sum(dim=0) if knobs["pair_reduction"] == "sum" else torch.stack(terms).mean(dim=0)
    return reduce_batch(per_example, knobs["reduction"])
