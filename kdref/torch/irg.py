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

from kdref.reference.irg import (
    CONVENTIONS,
    check_eps,
    check_match,
    check_match_shapes,
    check_transformations,
    check_weights,
)
from kdref.torch._common import (
    accumulation_dtype,
    adaptive_pool2d,
    check_float_tensor,
    check_same_batch,
    check_same_like,
    check_sequence,
    pairwise_sq_distances,
)

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


def _layers(name: str, fs) -> list[torch.Tensor]:
    layers = check_sequence(name, fs)
    checked = [check_float_tensor(f"{name}[{i}]", f) for i, f in enumerate(layers)]
    for i, f in enumerate(checked):
        if f.dim() < 2:
            raise ValueError(f"{name}[{i}] must be at least 2-D [N, D, ...] (one row per sample), "
                             f"got shape {tuple(f.shape)}")
    return checked


def _check_logits(student_logits, teacher_logits, ref: torch.Tensor, lam1: float):
    if student_logits is None or teacher_logits is None:
        if lam1 > 0:
            missing = "student_logits" if student_logits is None else "teacher_logits"
            raise ValueError(f"{missing} is required for the vertex term (lambda1 = {lam1:g} > 0)")
        if student_logits is None and teacher_logits is None:
            return None
        given = "teacher_logits" if student_logits is None else "student_logits"
        raise ValueError(f"{given} was given without its counterpart; pass both logits or neither")
    z_s = check_float_tensor("student_logits", student_logits, ndim=2)
    z_t = check_float_tensor("teacher_logits", teacher_logits, ndim=2)
    check_same_batch("student_logits", z_s, "student_features[0]", ref)
    check_same_like("teacher_logits", z_t, "student_logits", z_s)
    return z_s, z_t


def irg_loss(
    student_features,
    teacher_features,
    student_logits: torch.Tensor | None = None,
    teacher_logits: torch.Tensor | None = None,
    *,
    transformations=(),
    match: str = "none",
    convention: str | None = None,
    lambda1: float | None = None,
    lambda2: float | None = None,
    lambda3: float | None = None,
    mode: str | None = None,
    normalize: str | None = None,
    eps: float | None = None,
    reduction: str | None = None,
    layer_reduction: str | None = None,
    caffe_gradients: bool = False,
) -> torch.Tensor:
    r"""The IRG loss, :math:`\lambda_1\sum_i\lVert z^T_i-z^S_i\rVert^2
    +\lambda_2\sum_{l_M}\lVert A^T_L-A^S_{l_M}\rVert_F^2+\lambda_3\sum\lVert\Lambda^T-\Lambda^S\rVert^2`
    by default.

    Arguments, conventions and result as :func:`kdref.reference.irg.irg_loss`; inputs are lists of
    tensors ``[N, ...]`` (and ``[N, K]`` logits) on one device and of one dtype; the result is a
    0-d tensor.

    Args:
      caffe_gradients: the official Caffe layers' backward pass (the value is unchanged): the batch
        maxima are constants and the gradient through each edge matrix is halved. Needs
        ``normalize="max"``.

    Examples:
      >>> import torch
      >>> s1 = torch.tensor([[1., 0], [0, 1], [1, 1]], dtype=torch.float64)
      >>> s2 = torch.tensor([[2., 0], [0, 1], [1, 3]], dtype=torch.float64)
      >>> t1 = torch.tensor([[0., 1], [2, 0], [1, 2]], dtype=torch.float64)
      >>> t2 = torch.tensor([[1., 1], [2, 2], [0, 3]], dtype=torch.float64)
      >>> print(f"{irg_loss([s2], [t2], convention='official').item():.8g}")
      0.00043333333
      >>> loss = irg_loss([s1, s2], [t1, t2], transformations=[(0, 1)], lambda2=0.0, convention="official")
      >>> print(f"{loss.item():.8g}")
      0.003125
    """
    knobs = CONVENTIONS.resolve(
        convention, lambda1=lambda1, lambda2=lambda2, lambda3=lambda3, mode=mode, normalize=normalize, eps=eps,
        reduction=reduction, layer_reduction=layer_reduction,
    )
    check_match(match)
    lam1, lam2, lam3 = check_weights(knobs)
    eps = check_eps(knobs)
    if not isinstance(caffe_gradients, bool):
        raise TypeError(f"caffe_gradients must be a bool, got {type(caffe_gradients).__name__}")
    if caffe_gradients and knobs["normalize"] != "max":
        raise ValueError("caffe_gradients reproduces the backward pass of Caffe's max-normalising layers; "
                         f"it needs normalize='max', got {knobs['normalize']!r}")
    student = _layers("student_features", student_features)
    teacher = _layers("teacher_features", teacher_features)
    ref = student[0]
    for i, f in enumerate(student[1:], 1):
        check_same_batch(f"student_features[{i}]", f, "student_features[0]", ref)
    for i, f in enumerate(teacher):
        check_same_batch(f"teacher_features[{i}]", f, "student_features[0]", ref)
    logits = _check_logits(student_logits, teacher_logits, ref, lam1)
    pairs = check_transformations(transformations, len(student), len(teacher))
    if knobs["mode"] == "one_to_one" and len(teacher) != len(student):
        raise ValueError(f"teacher_features must hold as many layers as student_features ({len(student)}) for "
                         f"mode='one_to_one', got {len(teacher)}")
    for l1, l2, l3, l4 in pairs:
        check_match_shapes("teacher_features", tuple(teacher[l1].shape), tuple(teacher[l2].shape), l1, l2,
                           match)
        check_match_shapes("student_features", tuple(student[l3].shape), tuple(student[l4].shape), l3, l4,
                           match)

    dtype = accumulation_dtype(ref)
    n = ref.shape[0]
    normalize, reduction = knobs["normalize"], knobs["reduction"]

    def normalized(a: torch.Tensor) -> torch.Tensor:
        return normalize_by_max(a, detach=caffe_gradients) if normalize == "max" else a

    # a max-normalised matrix or vector is scale invariant (without a clamp): compute it from
    # features rescaled by a power of two, so that its squared distances neither under- nor overflow
    rescale = normalize == "max" and eps == 0

    def edges(f: torch.Tensor) -> torch.Tensor:
        f = f.flatten(1)
        return edge_matrix(f / _power_of_two_scale(f) if rescale else f, eps)

    def transformation(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        a, b = _match_transformation(f1, f2, match)
        if rescale:
            scale = _power_of_two_scale(a, b)
            a, b = a / scale, b / scale
        return normalized(transformation_vector(a, b, eps))

    def over_layers(values: list[torch.Tensor]) -> torch.Tensor:
        total = torch.stack(values).sum()
        return total / len(values) if knobs["layer_reduction"] == "mean" else total

    # autocast would run the Gram products in bfloat16/float16; kdref accumulates in float32
    with torch.autocast(device_type=ref.device.type, enabled=False):
        student = [f.to(dtype) for f in student]
        teacher = [f.detach().to(dtype) for f in teacher]
        total = torch.zeros((), dtype=dtype, device=ref.device)
        if logits is not None:
            z_s, z_t = logits[0].to(dtype), logits[1].detach().to(dtype)
            total = total + lam1 * _reduce((z_t - z_s).square(), reduction, n)
        if knobs["mode"] == "one_to_one":
            guides = [normalized(edges(f)) for f in teacher]
        else:  # the teacher's last layer guides every student layer
            guides = [normalized(edges(teacher[-1]))] * len(student)
        terms = []
        for f_s, A_guide in zip(student, guides, strict=True):
            A_s = edges(f_s)
            A_s = normalized(_halve_gradient(A_s) if caffe_gradients else A_s)
            terms.append(_reduce((A_guide - A_s).square(), reduction, n))
        total = total + lam2 * over_layers(terms)
        if pairs:
            terms = []
            for l1, l2, l3, l4 in pairs:
                v_t, v_s = transformation(teacher[l1], teacher[l2]), transformation(student[l3], student[l4])
                terms.append(_reduce((v_t - v_s).square(), reduction, 1))
            total = total + lam3 * over_layers(terms)
    return total
