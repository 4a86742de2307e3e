"""Pieces every NumPy reference shares: stable softmax, input validation, reductions.

Each helper exists once here; the method modules import them. NumPy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "as_float_array",
    "check_labels",
    "check_same_shape",
    "log_softmax",
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
