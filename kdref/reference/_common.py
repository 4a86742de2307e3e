"""Pieces every NumPy reference shares: stable softmax, input validation, reductions.

Each helper exists once here; the method modules import them. NumPy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "as_embeddings",
    "as_float_array",
    "check_labels",
    "check_min_batch",
    "check_same_shape",
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


def as_float_array(name: str, x, *, ndim: int | None = None) -> np.ndarray:
    """Validate one real-valued input and return it as a floating NumPy array.

    Raises ``TypeError`` for a non-floating dtype (integers are refused rather than silently
    cast: a loss on integer "logits" is almost always a mix-up with labels), and ``ValueError``
    for the wrong rank, an empty batch or a non-finite entry. ``name`` is the argument's name,
    used in the message.
    """
    if _is_torch_tensor(x):
        raise TypeError(f"{name} must be a NumPy array for kdref.reference, got {type(x).__module__}."
                        f"{type(x).__name__}; use kdref.torch for tensors")
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {x.shape}")
    if x.ndim >= 1 and x.shape[0] == 0:
        raise ValueError(f"{name} must have a non-empty batch, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be finite, found NaN or inf")
    return x


def as_embeddings(name: str, x) -> np.ndarray:
    """Validate a batch of embeddings ``[N, ...]`` (at least 2-D) and return it flattened to ``[N, D]``.

    Relational losses compare samples with each other, so every axis after the batch axis is one
    vector (as RepDistiller's ``view(N, -1)`` and torchdistill's ``flatten(1)`` do).
    """
    x = as_float_array(name, x)
    if x.ndim < 2:
        raise ValueError(f"{name} must be at least 2-D [N, D, ...] (one row per sample), got shape {x.shape}")
    return x.reshape(x.shape[0], -1)


def check_min_batch(name: str, n: int, minimum: int, why: str) -> None:
    """A relational term needs ``minimum`` samples (a pair, a triplet); fewer is refused, not NaN."""
    if n < minimum:
        raise ValueError(f"{name} must have at least {minimum} samples {why}, got {n}")


def pairwise_sq_distances(x: np.ndarray) -> np.ndarray:
    r"""Squared Euclidean distances :math:`d^2_{ij}=\lVert x_i-x_j\rVert^2` of the rows of ``[N, D]``,
    from the differences themselves (the reference's plain form; exactly 0 on the diagonal and
    between duplicate rows)."""
    diff = x[:, None, :] - x[None, :, :]
    return np.einsum("ijd,ijd->ij", diff, diff)


def _is_torch_tensor(x) -> bool:
    return type(x).__module__.startswith("torch")


def check_same_shape(name: str, x: np.ndarray, ref_name: str, ref: np.ndarray) -> None:
    """``x`` must have the shape of ``ref`` and the same floating dtype."""
    if x.shape != ref.shape:
        raise ValueError(f"{name} must have the shape of {ref_name} {ref.shape}, got {x.shape}")
    if x.dtype != ref.dtype:
        raise TypeError(f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {x.dtype}")


def check_labels(labels, n: int, num_classes: int) -> np.ndarray:
    """Integer class labels of shape ``[n]`` with values in ``[0, num_classes)``."""
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must have an integer dtype, got {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match the batch, got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got values in "
                         f"[{labels.min()}, {labels.max()}]")
    return labels


def check_sequence(name: str, xs, *, min_len: int = 1) -> list:
    """A non-empty list or tuple (not a single array) of inputs."""
    if not isinstance(xs, Sequence) or isinstance(xs, str):
        raise TypeError(f"{name} must be a list or tuple of arrays, got {type(xs).__name__}")
    if len(xs) < min_len:
        raise ValueError(f"{name} must hold at least {min_len} array(s), got {len(xs)}")
    return list(xs)


def reduce_batch(per_sample: np.ndarray, reduction: str) -> np.ndarray | float:
    """Reduce a per-sample loss ``[N]``: ``"mean"`` over the batch, ``"sum"``, or ``"none"``."""
    if reduction == "mean":
        return float(np.mean(per_sample))
    if reduction == "sum":
        return float(np.sum(per_sample))
    if reduction == "none":
        return per_sample
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def check_same_batch(name: str, x: np.ndarray, ref_name: str, ref: np.ndarray) -> None:
    """``x`` must have the batch size and the floating dtype of ``ref`` (other axes may differ)."""
    if x.shape[0] != ref.shape[0]:
        raise ValueError(f"{name} must have the batch size of {ref_name} ({ref.shape[0]}), got shape {x.shape}")
    if x.dtype != ref.dtype:
        raise TypeError(f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {x.dtype}")


def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12, eps_mode: str = "clamp") -> np.ndarray:
    r"""Divide ``x`` by its :math:`\ell_2` norm along ``axis``, with an explicit rule for tiny norms.

    ``"clamp"``: :math:`x/\max(\lVert x\rVert, \epsilon)` (PyTorch's ``F.normalize``; a zero vector
    stays 0); ``"add"``: :math:`x/(\lVert x\rVert + \epsilon)`; ``"sqrt_add"``:
    :math:`x/\sqrt{\lVert x\rVert^2 + \epsilon}` (MXNet's ``L2Normalization``).
    """
    squared = np.sum(x * x, axis=axis, keepdims=True)
    if eps_mode == "clamp":
        return x / np.maximum(np.sqrt(squared), eps)
    if eps_mode == "add":
        return x / (np.sqrt(squared) + eps)
    if eps_mode == "sqrt_add":
        return x / np.sqrt(squared + eps)
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
        return np.asarray(x)

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
