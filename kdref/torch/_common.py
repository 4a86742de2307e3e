"""Pieces every torch loss shares: the torch backend of the declarations' validation, float32
accumulation, reductions, pairwise distances.

Validation itself is written once, in :mod:`kdref.declaration`; :data:`TORCH` gives it the facts
about tensors. Shape, dtype and device checks are free (metadata only). The finiteness check reads
one boolean back from the device, i.e. one synchronisation per call on CUDA; under
``torch.compile`` it is skipped (it would break the graph), the shape checks still run.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

__all__ = [
    "TORCH",
    "accumulation_dtype",
    "pairwise_sq_distances",
    "reduce_batch",
    "sqrt_or_zero",
]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _check_is_tensor(name: str, x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")



def pairwise_sq_distances(x: torch.Tensor) -> torch.Tensor:
    r"""Squared distances :math:`d^2_{ij}` of the rows of ``[N, D]`` through the Gram matrix of the
    **centred** rows, :math:`d^2_{ij}=G_{ii}+G_{jj}-2G_{ij}`, with the diagonal set to exactly 0 and
    rounding below 0 clamped.

    The distances are translation invariant, so centring is free; it is what keeps float32 exact
    enough when the rows share a large offset (post-ReLU features): the uncentred Gram of RKD's
    official ``pdist`` (and of ``torch.cdist`` beyond 25 rows) cancels catastrophically there. The
    Gram is computed in float32 at least, also under autocast. Entries within rounding of 0
    (coincident rows, the diagonal) are exactly 0, with zero gradient.
    """
    x = x.to(accumulation_dtype(x))
    with torch.autocast(x.device.type, enabled=False):
        centred = x - x.mean(dim=0, keepdim=True)
        gram = centred @ centred.T
        # BLAS need not round G_ij and G_ji alike; d²_ij = d²_ji must hold exactly (a pair's two
        # distances are one number: N = 2 normalises to exactly 1)
        gram = 0.5 * (gram + gram.T)
    # G_ii exactly as in G (a row with one non-zero entry sums exactly); not gram.diagonal(), whose
    # gradient under torch.compile (Inductor, torch 2.13) comes out wrong
    norms = (gram * torch.eye(x.shape[0], dtype=gram.dtype, device=gram.device)).sum(dim=1)
    scale = norms[:, None] + norms[None, :]
    d2 = scale - 2 * gram
    # below the Gram form's rounding level (~ε·(G_ii + G_jj)) a distance is noise: coincident rows
    # (and the diagonal) get exactly 0, so losses can treat them as the spec's degenerate entries
    return torch.where(d2 > 4 * torch.finfo(d2.dtype).eps * scale, d2, torch.zeros_like(d2))


def sqrt_or_zero(x: torch.Tensor) -> torch.Tensor:
    """√x with the zero subgradient where x = 0 (plain ``sqrt`` gives inf · 0 = NaN there)."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, 1.0).sqrt(), 0.0)


def _all_finite(x: torch.Tensor) -> bool:
    """One read-back: NaN propagates into the min and max, ±inf shows in one of them. Two
    reductions cost far less than ``isfinite(x).all()``'s full boolean copy of a large map."""
    return bool(torch.isfinite(torch.stack(torch.aminmax(x.detach()))).all())



def accumulation_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half-precision inputs (e.g. under autocast), else the input's own dtype.

    Softmax, logs and batch sums of bfloat16 values lose several digits; kdref computes them in
    float32 and returns a float32 loss.
    """
    return torch.float32 if x.dtype in _LOW_PRECISION else x.dtype


def reduce_batch(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce a per-sample loss ``[N]``: ``"mean"`` over the batch, ``"sum"``, or ``"none"``."""
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")



def l2_normalize(x: torch.Tensor, dim: int = -1, eps: float | torch.Tensor = 1e-12,
                 eps_mode: str = "clamp") -> torch.Tensor:
    """As :func:`kdref.reference._common.l2_normalize`: ``"clamp"``, ``"add"`` or ``"sqrt_add"``."""
    # the norm of x / max|x| (vector_norm's squares overflow in float32 from |x| ≈ 1e19): the
    # expression equals the unscaled one for any constant scale, so the scale is detached
    scale = x.detach().abs().amax(dim=dim, keepdim=True)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    y = x / scale
    # vector_norm's backward is the zero subgradient at a zero vector; sqrt(‖x‖²)'s would be NaN
    norm = torch.linalg.vector_norm(y, dim=dim, keepdim=True)
    if eps_mode == "clamp":
        return y / torch.maximum(norm, eps / scale)
    if eps_mode == "add":
        return y / (norm + eps / scale)
    if eps_mode == "sqrt_add":
        eps = torch.as_tensor(eps, dtype=norm.dtype, device=norm.device)  # a number, or one per row
        return x / torch.hypot(scale * norm, eps.sqrt())
    raise ValueError(f"eps_mode must be 'clamp', 'add' or 'sqrt_add', got {eps_mode!r}")


def adaptive_pool2d(x: torch.Tensor, out_hw: tuple[int, int], mode: str = "avg") -> torch.Tensor:
    """Adaptive average or max pooling of ``[N, C, H, W]`` (PyTorch's window rule)."""
    if mode == "avg":
        return _eager_adaptive_avg_pool2d(x, (int(out_hw[0]), int(out_hw[1])))
    return torch.nn.functional.adaptive_max_pool2d(x, tuple(out_hw))


@torch.compiler.disable
def _eager_adaptive_avg_pool2d(x: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """Run eagerly under ``torch.compile`` (a graph break): Inductor (torch 2.13) cannot lower
    adaptive average pooling once the map sizes are dynamic; max pooling compiles."""
    return torch.nn.functional.adaptive_avg_pool2d(x, out_hw)


def resize_bilinear(x: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``[N, C, H, W]``, ``align_corners=False``, no antialiasing."""
    return torch.nn.functional.interpolate(x, size=tuple(out_hw), mode="bilinear", align_corners=False)


class _TorchBackend:
    """The facts about tensors that :mod:`kdref.declaration` validates with. The finiteness and
    label-range checks read one value back from the device (one synchronisation on CUDA) and are
    skipped under ``torch.compile``, where they would break the graph; shapes are still checked."""

    name = "torch"

    @staticmethod
    def as_array(name: str, x) -> torch.Tensor:
        _check_is_tensor(name, x)
        return x

    @staticmethod
    def is_floating(x: torch.Tensor) -> bool:
        return x.is_floating_point()

    @staticmethod
    def is_integer(x: torch.Tensor) -> bool:
        return not (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool)

    @staticmethod
    def device(x: torch.Tensor) -> torch.device:
        return x.device

    @staticmethod
    def all_finite(x: torch.Tensor) -> bool | None:
        if torch.compiler.is_compiling() or x.device.type == "meta":
            return None
        return _all_finite(x)

    @staticmethod
    def value_range(x: torch.Tensor) -> tuple[int, int] | None:
        if torch.compiler.is_compiling() or x.device.type == "meta" or x.numel() == 0:
            return None
        low, high = torch.aminmax(x)
        return low.item(), high.item()

    @staticmethod
    def as_module(name: str, x) -> torch.nn.Module:
        if not isinstance(x, torch.nn.Module):
            raise TypeError(f"{name} must be an nn.Module, got {type(x).__name__}")
        return x

    @staticmethod
    def as_mapping(name: str, x) -> dict:
        if isinstance(x, torch.nn.Module):
            # BatchNorm's step counter (an integer) is bookkeeping, not an input of a loss
            buffers = {k: b for k, b in x.named_buffers() if k.rpartition(".")[2] != "num_batches_tracked"}
            return {**dict(x.named_parameters()), **buffers}
        if not isinstance(x, Mapping):
            raise TypeError(f"{name} must be an nn.Module or a mapping of names to tensors, got {type(x).__name__}")
        return dict(x)

    @staticmethod
    def flatten(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    @staticmethod
    def as_index(x: torch.Tensor) -> torch.Tensor:
        return x.long()  # gather and cross_entropy take int64 only


#: the torch side, for ``@DECLARATION.implement(TORCH)``
TORCH = _TorchBackend()
