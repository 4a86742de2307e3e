r"""AT — activation-based attention transfer (Zagoruyko & Komodakis, 2017), PyTorch.

Computes the same functions as :mod:`kdref.reference.at` (proven by the test harness) with the
same conventions. The only large tensors are the activations ``[N, C, H, W]``; everything after
the attention map is ``[N, H·W]``. So the work that counts is the channel reduction, and for the
usual :math:`p = 2` kdref's backward is one elementwise product, :math:`\partial F/\partial A =
2A\,g` (:class:`_SquareSum`), where autograd of the usual ``A.pow(2).mean(1)`` builds several
``[N, C, H, W]`` temporaries. The teacher is detached, half-precision inputs are reduced in
float32 (without a float32 copy of the activations), and nothing loops over the batch.
"""

from __future__ import annotations

import torch

from kdref.reference.at import AT_LOSS, AT_LOSS_MULTI, beta_factor, common_size
from kdref.torch._common import TORCH, accumulation_dtype, adaptive_pool2d, l2_normalize, reduce_batch, resize_bilinear

__all__ = ["at_distance", "at_loss", "at_loss_multi", "attention_map", "attention_pair", "normalized_attention"]


def _channel_square_sum(A: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    r""":math:`\sum_c A_c^2` over dim 1, accumulated in ``dtype``.

    Half-precision inputs go through ``vector_norm(dtype=float32)``, which accumulates in float32
    without a float32 copy of :math:`A` (squaring in bfloat16 would round every term). Otherwise
    square and sum: on CPU that runs several times faster than ``vector_norm``'s strided
    reduction over the channel axis, and the square is freed at once.
    """
    if A.dtype != dtype:
        return torch.linalg.vector_norm(A, ord=2, dim=1, dtype=dtype).square()
    return A.square().sum(dim=1)


class _SquareSum(torch.autograd.Function):
    r""":math:`F(A) = \sum_c A_c^2` over dim 1, computed in ``dtype``; backward :math:`2A\,g`.

    Autograd of ``A.pow(2).mean(1)`` builds several ``[N, C, H, W]`` temporaries in the backward
    (the broadcast gradient of the mean, then the power's derivative :math:`2A^{1}` in pieces)
    before the product; this is the product alone. The backward is written with differentiable
    operations, so double backward works.
    """

    @staticmethod
    def forward(ctx, A: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        ctx.save_for_backward(A)
        return _channel_square_sum(A, dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (A,) = ctx.saved_tensors
        return (A * (2 * grad).unsqueeze(1)).to(A.dtype), None


def attention_map(A: torch.Tensor, p: float = 2.0, channel_reduce: str = "sum", use_abs: bool = True) -> torch.Tensor:
    r""":math:`F(A) = \sum_c |A_c|^p` (or the channel mean, or :math:`A_c^p`), ``[N, C, H, W] -> [N, H, W]``.

    As :func:`kdref.reference.at.attention_map`; computed in float32 for half-precision inputs.
    """
    dtype = accumulation_dtype(A)
    if p == 2:  # |A|² = A²: the backward is one product
        Q = _SquareSum.apply(A, dtype) if A.requires_grad else _channel_square_sum(A, dtype)
    else:
        A = A.to(dtype)
        Q = (A.abs() if use_abs else A).pow(p).sum(dim=1)
    return Q / A.shape[1] if channel_reduce == "mean" else Q


def normalized_attention(Q: torch.Tensor, eps: float = 1e-12, eps_mode: str = "clamp") -> torch.Tensor:
    r""":math:`\hat Q = \mathrm{vec}(Q)/\lVert\mathrm{vec}(Q)\rVert` per example, ``[N, H, W] -> [N, H·W]``;
    as :func:`kdref.reference.at.normalized_attention`."""
    return l2_normalize(Q.flatten(1), dim=1, eps=eps, eps_mode=eps_mode)


def attention_pair(
    fm_s: torch.Tensor, fm_t: torch.Tensor, *, p: float, channel_reduce: str, use_abs: bool, spatial: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both attention maps at one spatial size; as :func:`kdref.reference.at.attention_pair`."""
    size = common_size(tuple(fm_s.shape[2:]), tuple(fm_t.shape[2:]), spatial)
    if spatial == "avgpool_features":
        # pool in the accumulation dtype: bfloat16 pooling would round the averages
        fm_s, fm_t = (x if tuple(x.shape[2:]) == size else adaptive_pool2d(x.to(accumulation_dtype(x)), size)
                      for x in (fm_s, fm_t))
    Q_s, Q_t = (attention_map(x, p, channel_reduce, use_abs) for x in (fm_s, fm_t))
    if spatial in ("avgpool_map", "interp_map"):
        resample = adaptive_pool2d if spatial == "avgpool_map" else resize_bilinear
        Q_s, Q_t = (Q if tuple(Q.shape[1:]) == size else resample(Q.unsqueeze(1), size).squeeze(1)
                    for Q in (Q_s, Q_t))
    return Q_s, Q_t


def at_distance(Qs_hat: torch.Tensor, Qt_hat: torch.Tensor, distance: str = "norm",
                p_norm: float = 2.0) -> torch.Tensor:
    r"""Per-example distance of normalised maps, ``[N]``; as :func:`kdref.reference.at.at_distance`.

    ``vector_norm``'s backward returns 0 where :math:`\Delta_n = 0`: kdref's zero subgradient of
    the non-squared norm at a perfect match.
    """
    delta = Qs_hat - Qt_hat
    if distance == "norm":
        return torch.linalg.vector_norm(delta, ord=p_norm, dim=1)
    squared = delta.square().sum(dim=1)
    return squared / delta.shape[1] if distance == "sq_mean" else squared


def _pair_distance(fm_s: torch.Tensor, fm_t: torch.Tensor, *, p: float, channel_reduce: str, use_abs: bool,
                   eps: float, eps_mode: str, distance: str, p_norm: float, spatial: str) -> torch.Tensor:
    """One layer pair's distance per example, ``[N]``; the teacher is detached (a constant)."""
    Q_s, Q_t = attention_pair(fm_s, fm_t.detach(), p=p, channel_reduce=channel_reduce, use_abs=use_abs,
                              spatial=spatial)
    Qs_hat, Qt_hat = (normalized_attention(Q, eps, eps_mode) for Q in (Q_s, Q_t))
    return at_distance(Qs_hat, Qt_hat, distance, p_norm)


@AT_LOSS.implement(TORCH)
def at_loss(fm_s: torch.Tensor, fm_t: torch.Tensor, *, p: float, beta: float, channel_reduce: str, use_abs: bool,
            eps: float, eps_mode: str, distance: str, p_norm: float, halve_beta: bool, spatial: str,
            reduction: str) -> torch.Tensor:
    r"""Attention-transfer loss of one layer pair; by default eq. 2,
    :math:`\frac\beta2\cdot\frac1N\sum_n\lVert\hat Q_{S,n}-\hat Q_{T,n}\rVert_2`.

    Arguments, conventions and result as :func:`kdref.reference.at.at_loss`; inputs are tensors
    ``[N, C_S, H, W]`` and ``[N, C_T, H, W]`` on one device, and the result is a 0-d tensor
    (``[N]`` for ``reduction="none"``).

    Examples:
      >>> import torch
      >>> FS = torch.tensor([[[[1, 2], [0, -1]], [[0.5, 0], [1, 2]]],
      ...                    [[[0, 0], [3, 1]], [[2, -1], [0, 0.5]]]], dtype=torch.float64)
      >>> FT = torch.tensor([[[[2, 1], [0, 0]], [[1, 1], [1, 1]], [[0, -2], [1, 0.5]]],
      ...                    [[[1, 0], [2, 2]], [[0, 1], [0, 3]], [[-1, 0], [0.5, 1]]]], dtype=torch.float64)
      >>> print(f"{at_loss(FS, FT, beta=2.0).item():.8f}")
      0.90739762
      >>> print(f"{at_loss(FS, FT, convention='official').item():.8f}")
      0.21164738
    """
    per_example = _pair_distance(fm_s, fm_t, p=p, channel_reduce=channel_reduce, use_abs=use_abs, eps=eps,
                                 eps_mode=eps_mode, distance=distance, p_norm=p_norm, spatial=spatial)
    return beta_factor(beta, halve_beta) * reduce_batch(per_example, reduction)


@AT_LOSS_MULTI.implement(TORCH)
def at_loss_multi(fms_s: list[torch.Tensor], fms_t: list[torch.Tensor], weights: list[float] | None, *, p: float,
                  beta: float, channel_reduce: str, use_abs: bool, eps: float, eps_mode: str, distance: str,
                  p_norm: float, halve_beta: bool, spatial: str, reduction: str, reduce_layers: str) -> torch.Tensor:
    r"""Attention transfer at several layer pairs, :math:`\frac\beta2\cdot\frac1N\sum_n\sum_j w_j
    \lVert\hat Q^j_{S,n}-\hat Q^j_{T,n}\rVert_2` by default.

    As :func:`kdref.reference.at.at_loss_multi`; ``fms_s`` and ``fms_t`` are lists of tensors.

    Examples:
      >>> import torch
      >>> FS = torch.tensor([[[[1, 2], [0, -1]], [[0.5, 0], [1, 2]]],
      ...                    [[[0, 0], [3, 1]], [[2, -1], [0, 0.5]]]], dtype=torch.float64)
      >>> FT = torch.tensor([[[[2, 1], [0, 0]], [[1, 1], [1, 1]], [[0, -2], [1, 0.5]]],
      ...                    [[[1, 0], [2, 2]], [[0, 1], [0, 3]], [[-1, 0], [0.5, 1]]]], dtype=torch.float64)
      >>> print(f"{at_loss_multi([FS], [FT], convention='kdzoo').item():.8f}")
      0.21164734
    """
    weights = [1.0] * len(fms_s) if weights is None else weights
    total = None
    for w, fm_s, fm_t in zip(weights, fms_s, fms_t, strict=True):
        term = w * _pair_distance(fm_s, fm_t, p=p, channel_reduce=channel_reduce, use_abs=use_abs, eps=eps,
                                  eps_mode=eps_mode, distance=distance, p_norm=p_norm, spatial=spatial)
        total = term if total is None else total + term
    if reduce_layers == "mean":
        total = total / len(fms_s)
    return beta_factor(beta, halve_beta) * reduce_batch(total, reduction)
