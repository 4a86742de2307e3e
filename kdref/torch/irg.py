r"""IRG — knowledge distillation via instance relationship graph (Liu et al., CVPR 2019), PyTorch.

Computes the same function as :mod:`kdref.reference.irg` (proven by the test harness) with the same
conventions. Each edge matrix is the :math:`N\times N` matrix of squared distances from the Gram
matrix of the **centred** features (:func:`kdref.torch._common.pairwise_sq_distances`): translation
invariant like the distances themselves, so float32 keeps its digits when the features share a
large offset (post-ReLU maps), where the uncentred Gram expansion of KD-Zoo cancels. Nothing is
larger than :math:`N\times N` per layer beyond the inputs, and nothing loops over the batch.

The teacher is detached; half-precision inputs are computed in float32 with autocast disabled, and
the loss is returned in float32 (float64 inputs stay float64).

``caffe_gradients=True`` reproduces the backward pass of the official Caffe layers with the same
forward value: the batch maxima are constants, and the gradient through each edge matrix is
halved (``BatchEuclideanMap`` adds only the row contributions of a symmetric matrix).
"""

from __future__ import annotations

import torch

from kdref.reference.irg import IRG_LOSS, layer_quadruples
from kdref.torch._common import TORCH, accumulation_dtype, adaptive_pool2d, pairwise_sq_distances

__all__ = ["edge_matrix", "irg_loss", "normalize_by_max", "transformation_vector"]


def edge_matrix(f: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    r""":math:`A(i,j)=\lVert f_i-f_j\rVert_2^2` of ``[N, d]`` from the centred Gram matrix (diagonal
    and coincident rows exactly 0, with zero gradient), off-diagonal entries clamped at
    :math:`\epsilon` when ``eps > 0``."""
    A = pairwise_sq_distances(f)
    if eps > 0:
        off_diagonal = ~torch.eye(A.shape[0], dtype=torch.bool, device=A.device)
        A = torch.where(off_diagonal, A.clamp_min(eps), torch.zeros_like(A))
    return A


def normalize_by_max(a: torch.Tensor, detach: bool = False) -> torch.Tensor:
    r""":math:`a/\max a`; 0 (zero gradient) where the maximum is 0. The gradient flows through the
    maximum (split evenly at ties) unless ``detach`` (Caffe's constant normaliser)."""
    M = a.amax()
    if detach:
        M = M.detach()
    return a / torch.where(M > 0, M, torch.ones_like(M))


def _power_of_two_scale(*xs: torch.Tensor) -> torch.Tensor:
    r"""A constant power of two :math:`2^e` near :math:`\max|x|` (1 for all-zero inputs). Dividing by it
    is exact, keeps squared distances of tiny or huge features inside the float range (in float32,
    features of 1e-24 have squared distances of 0), and leaves a max-normalised matrix unchanged."""
    peak = torch.stack([x.detach().abs().amax() for x in xs]).amax()
    _, exponent = torch.frexp(peak)
    return torch.ldexp(torch.ones_like(peak), exponent)


def _halve_gradient(a: torch.Tensor) -> torch.Tensor:
    """The value of ``a`` with half its gradient (Caffe's ``BatchEuclideanMap`` backward)."""
    return 0.5 * a + 0.5 * a.detach()


def _match_transformation(f1: torch.Tensor, f2: torch.Tensor, rule: str) -> tuple[torch.Tensor, torch.Tensor]:
    """As :func:`kdref.reference.irg.match_transformation`."""
    if rule == "kdzoo":
        f1 = f1[:, :, None, None] if f1.dim() == 2 else f1
        f2 = f2[:, :, None, None] if f2.dim() == 2 else f2
        if f1.shape[2] > f2.shape[2]:
            f1 = adaptive_pool2d(f1, (f2.shape[2], f2.shape[3]), "avg")
        if f1.shape[1] < f2.shape[1] and f2.shape[1] == 2 * f1.shape[1]:
            f2 = (f2[:, 0::2] + f2[:, 1::2]) / 2.0
    return f1.flatten(1), f2.flatten(1)


def transformation_vector(f1: torch.Tensor, f2: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    r""":math:`\Lambda(i,i)=\lVert f_{1,i}-f_{2,i}\rVert_2^2` of two matched ``[N, d]`` layers, ``[N]``
    (direct differences: a common offset of the two layers cancels exactly)."""
    v = (f1 - f2).square().sum(dim=1)
    return v.clamp_min(eps) if eps > 0 else v


def _reduce(squared_differences: torch.Tensor, reduction: str, num: int) -> torch.Tensor:
    """``"sum"``, ``"mean"`` over the entries, or Caffe's ``EuclideanLoss`` Σ / (2·num)."""
    total = squared_differences.sum()
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / squared_differences.numel()
    return total / (2.0 * num)


@IRG_LOSS.implement(TORCH)
def irg_loss(student_features: list[torch.Tensor], teacher_features: list[torch.Tensor],
             student_logits: torch.Tensor | None, teacher_logits: torch.Tensor | None, transformations, *,
             lambda1: float, lambda2: float, lambda3: float, mode: str, normalize: str, eps: float,
             reduction: str, layer_reduction: str, match: str, caffe_gradients: bool) -> torch.Tensor:
    r"""The IRG loss, :math:`\lambda_1\sum_i\lVert z^T_i-z^S_i\rVert^2
    +\lambda_2\sum_{l_M}\lVert A^T_L-A^S_{l_M}\rVert_F^2+\lambda_3\sum\lVert\Lambda^T-\Lambda^S\rVert^2`
    by default.

    Arguments, conventions and result as :func:`kdref.reference.irg.irg_loss`; inputs are lists of
    tensors ``[N, ...]`` (and ``[N, K]`` logits) on one device and of one dtype; the result is a
    0-d tensor. ``caffe_gradients=True`` changes the backward pass only (see the module).

    Examples:
      >>> import torch
      >>> s1 = torch.tensor([[1., 0], [0, 1], [1, 1]], dtype=torch.float64)
      >>> s2 = torch.tensor([[2., 0], [0, 1], [1, 3]], dtype=torch.float64)
      >>> t1 = torch.tensor([[0., 1], [2, 0], [1, 2]], dtype=torch.float64)
      >>> t2 = torch.tensor([[1., 1], [2, 2], [0, 3]], dtype=torch.float64)
      >>> print(f"{irg_loss([s2], [t2], transformations=[], convention='official').item():.8g}")
      0.00043333333
      >>> loss = irg_loss([s1, s2], [t1, t2], transformations=[(0, 1)], lambda2=0.0, convention="official")
      >>> print(f"{loss.item():.8g}")
      0.003125
    """
    student, teacher = student_features, teacher_features
    ref = student[0]
    pairs = layer_quadruples(transformations or (), len(student), len(teacher))
    dtype = accumulation_dtype(ref)
    n = ref.shape[0]

    def normalized(a: torch.Tensor) -> torch.Tensor:
        return normalize_by_max(a, detach=caffe_gradients) if normalize == "max" else a

    # a max-normalised matrix or vector is scale invariant (without a clamp): compute it from
    # features rescaled by a power of two, so that its squared distances neither under- nor overflow
    rescale = normalize == "max" and eps == 0

    def edges(f: torch.Tensor) -> torch.Tensor:
        f = f.flatten(1)
        return edge_matrix(f / _power_of_two_scale(f) if rescale else f, eps)

    def transformation(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        # Λ(i,i) does not change when one number is added to every entry of both layers of instance
        # i (pooling and the channel-pair mean are averages): removing each instance's mean keeps
        # float32 pooling accurate when the layers share a large offset (post-ReLU maps)
        offset = f2.flatten(1).mean(dim=1).detach().reshape(-1, *[1] * (f2.dim() - 1))
        f1, f2 = f1 - offset.reshape(-1, *[1] * (f1.dim() - 1)), f2 - offset
        a, b = _match_transformation(f1, f2, match)
        if rescale:
            scale = _power_of_two_scale(a, b)
            a, b = a / scale, b / scale
        return normalized(transformation_vector(a, b, eps))

    def over_layers(values: list[torch.Tensor]) -> torch.Tensor:
        total = torch.stack(values).sum()
        return total / len(values) if layer_reduction == "mean" else total

    # autocast would run the Gram products in bfloat16/float16; kdref accumulates in float32
    with torch.autocast(device_type=ref.device.type, enabled=False):
        student = [f.to(dtype) for f in student]
        teacher = [f.detach().to(dtype) for f in teacher]
        total = torch.zeros((), dtype=dtype, device=ref.device)
        if student_logits is not None:
            z_s, z_t = student_logits.to(dtype), teacher_logits.detach().to(dtype)
            total = total + lambda1 * _reduce((z_t - z_s).square(), reduction, n)
        if mode == "one_to_one":
            guides = [normalized(edges(f)) for f in teacher]
        else:  # the teacher's last layer guides every student layer
            guides = [normalized(edges(teacher[-1]))] * len(student)
        terms = []
        for f_s, A_guide in zip(student, guides, strict=True):
            A_s = edges(f_s)
            A_s = normalized(_halve_gradient(A_s) if caffe_gradients else A_s)
            terms.append(_reduce((A_guide - A_s).square(), reduction, n))
        total = total + lambda2 * over_layers(terms)
        if pairs:
            terms = []
            for l1, l2, l3, l4 in pairs:
                v_t, v_s = transformation(teacher[l1], teacher[l2]), transformation(student[l3], student[l4])
                terms.append(_reduce((v_t - v_s).square(), reduction, 1))
            total = total + lambda3 * over_layers(terms)
    return total
