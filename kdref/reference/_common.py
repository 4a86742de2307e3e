"""Pieces every NumPy reference shares: stable softmax, reductions, pairwise distances, pooling,
and :data:`NUMPY`, the NumPy backend of the declarations' validation (written once, in
:mod:`kdref.declaration`).

Each helper exists once here; the method modules import them. NumPy only.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = [
    "NUMPY",
    "log_softmax",
    "pairwise_sq_distances",
    "reduce_batch",
    "softmax",
]


def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    r"""Stable :math:`\log\mathrm{softmax}(z)_i = z_i - \log\sum_j e^{z_j}` along ``axis``.

    The row maximum is subtracted before exponentiating (log-sum-exp), so logits of any finite
    size give finite log-probabilities; ``log(softmax(z))`` would underflow to ``-inf``.
    """
    shifted = z - np.max(z, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    r""":math:`\mathrm{softmax}(z)_i = e^{z_i}/\sum_j e^{z_j}`, computed as ``exp(log_softmax(z))``."""
    return np.exp(log_softmax(z, axis=axis))



def pairwise_sq_distances(x: np.ndarray) -> np.ndarray:
    r"""Squared Euclidean distances :math:`d^2_{ij}=\lVert x_i-x_j\rVert^2` of the rows of ``[N, D]``,
    from the differences themselves (the reference's plain form; exactly 0 on the diagonal and
    between duplicate rows)."""
    diff = x[:, None, :] - x[None, :, :]
    return np.einsum("ijd,ijd->ij", diff, diff)


def _is_torch_tensor(x) -> bool:
    return type(x).__module__.startswith("torch")



def reduce_batch(per_sample: np.ndarray, reduction: str) -> np.ndarray | float:
    """Reduce a per-sample loss ``[N]``: ``"mean"`` over the batch, ``"sum"``, or ``"none"``."""
    if reduction == "mean":
        return float(np.mean(per_sample))
    if reduction == "sum":
        return float(np.sum(per_sample))
    if reduction == "none":
        return per_sample
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")



def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12, eps_mode: str = "clamp") -> np.ndarray:
    r"""Divide ``x`` by its :math:`\ell_2` norm along ``axis``, with an explicit rule for tiny norms.

    ``"clamp"``: :math:`x/\max(\lVert x\rVert, \epsilon)` (PyTorch's ``F.normalize``; a zero vector
    stays 0); ``"add"``: :math:`x/(\lVert x\rVert + \epsilon)`; ``"sqrt_add"``:
    :math:`x/\sqrt{\lVert x\rVert^2 + \epsilon}` (MXNet's ``L2Normalization``). The norm is taken
    of ``x`` divided by its largest entry, so that squares overflow for no ``x`` whose norm is finite.
    """
    # the norm of x / max|x|, whose squares cannot overflow (nor all underflow): ‖x‖ = scale · norm
    scale = np.max(np.abs(x), axis=axis, keepdims=True)
    scale = np.where(scale > 0, scale, 1.0)
    y = x / scale
    norm = np.sqrt(np.sum(y * y, axis=axis, keepdims=True))
    if eps_mode == "clamp":  # $x/\max(\lVert x\rVert, \epsilon)$
        return y / np.maximum(norm, eps / scale)
    if eps_mode == "add":  # $x/(\lVert x\rVert + \epsilon)$
        return y / (norm + eps / scale)
    if eps_mode == "sqrt_add":  # $x/\sqrt{\lVert x\rVert^2 + \epsilon}$
        return x / np.hypot(scale * norm, np.sqrt(eps))
    raise ValueError(f"eps_mode must be 'clamp', 'add' or 'sqrt_add', got {eps_mode!r}")


def _adaptive_windows(size_in: int, size_out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive-pooling windows: ``[floor(i·in/out), ceil((i+1)·in/out))``."""
    return [((i * size_in) // size_out, -((-(i + 1) * size_in) // size_out)) for i in range(size_out)]


def adaptive_pool2d(x: np.ndarray, out_hw: tuple[int, int], mode: str = "avg") -> np.ndarray:
    """Adaptive average or max pooling of ``[N, C, H, W]`` to ``[N, C, *out_hw]``, with PyTorch's
    window rule (windows overlap when the ratio is not an integer)."""
    reduce = {"avg": np.mean, "max": np.max}[mode]
    rows = _adaptive_windows(x.shape[2], out_hw[0])
    cols = _adaptive_windows(x.shape[3], out_hw[1])
    out = np.empty(x.shape[:2] + tuple(out_hw), dtype=x.dtype)
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            out[:, :, i, j] = reduce(x[:, :, r0:r1, c0:c1], axis=(2, 3))
    return out


def _bilinear_weights(size_in: int, size_out: int) -> np.ndarray:
    """``[size_out, size_in]`` interpolation matrix of PyTorch's bilinear rule with
    ``align_corners=False``: source coordinate ``(i + 0.5)·in/out − 0.5``, clamped at 0."""
    weights = np.zeros((size_out, size_in))
    for i in range(size_out):
        src = max((i + 0.5) * size_in / size_out - 0.5, 0.0)
        i0 = min(int(np.floor(src)), size_in - 1)
        i1 = min(i0 + 1, size_in - 1)
        frac = src - i0
        weights[i, i0] += 1.0 - frac
        weights[i, i1] += frac
    return weights


def resize_bilinear(x: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``[N, C, H, W]`` to ``[N, C, *out_hw]`` (= ``F.interpolate(mode="bilinear",
    align_corners=False)``, no antialiasing)."""
    rows = _bilinear_weights(x.shape[2], out_hw[0])
    cols = _bilinear_weights(x.shape[3], out_hw[1])
    return np.einsum("ih,nchw,jw->ncij", rows, x, cols)


class _NumpyBackend:
    """The facts about NumPy arrays that :mod:`kdref.declaration` validates with."""

    name = "reference"

    @staticmethod
    def as_array(name: str, x) -> np.ndarray:
        if _is_torch_tensor(x):
            raise TypeError(f"{name} must be a NumPy array for kdref.reference, got {type(x).__module__}."
                            f"{type(x).__name__}; use kdref.torch for tensors")
        try:
            return np.asarray(x)
        except ValueError:  # a ragged nested list: NumPy's own message would not name the argument
            raise ValueError(f"{name} must be an array (a nested list of one shape), got a ragged "
                             f"{type(x).__name__}") from None

    @staticmethod
    def is_floating(x: np.ndarray) -> bool:
        return np.issubdtype(x.dtype, np.floating)

    @staticmethod
    def is_integer(x: np.ndarray) -> bool:
        return np.issubdtype(x.dtype, np.integer)

    @staticmethod
    def device(x: np.ndarray) -> None:
        return None

    @staticmethod
    def all_finite(x: np.ndarray) -> bool:
        return bool(np.all(np.isfinite(x)))

    @staticmethod
    def value_range(x: np.ndarray) -> tuple[float, float] | None:
        return (x.min().item(), x.max().item()) if x.size else None

    @staticmethod
    def as_mapping(name: str, x) -> dict:
        if not isinstance(x, Mapping):
            raise TypeError(f"{name} must be a mapping of names to arrays, got {type(x).__name__}")
        return dict(x)

    @staticmethod
    def flatten(x: np.ndarray) -> np.ndarray:
        return x.reshape(x.shape[0], -1)

    @staticmethod
    def as_index(x: np.ndarray) -> np.ndarray:
        return x


#: the NumPy side, for ``@DECLARATION.implement(NUMPY)``
NUMPY = _NumpyBackend()


def check_item_weights(weights, count: int, item: str = "layer pair") -> None:
    """One weight per item of a list argument, as a list (the ``"weights"`` kind also takes one
    number for all, which a loss with one weight per item refuses)."""
    if weights is not None and not isinstance(weights, list):
        raise TypeError(f"weights must be a list or tuple of numbers, one per {item}, got {type(weights).__name__}")
    if weights is not None and len(weights) != count:
        raise ValueError(f"weights must hold one weight per {item} ({count}), got {len(weights)}")
