"""Properties that hold for many methods, written once."""

from __future__ import annotations

import numpy as np

from kdref.proof import compare
from kdref.registry import Property, Tolerance


def _batch_size(inputs) -> int:
    return next(v.shape[0] for v in inputs.values() if isinstance(v, np.ndarray) and v.ndim >= 2)


def reductions_agree(loss, x) -> float:
    """The reductions are one per-sample loss reduced three ways: "none" sums to "sum", and the
    batch mean is "sum" / N."""
    choices = loss.loss.conventions.choices["reduction"]
    total = loss(**{**x, "reduction": "sum"})
    scale = 1.0 + float(np.abs(total))
    ratio = 0.0
    if "none" in choices:
        per_sample = loss(**{**x, "reduction": "none"})
        ratio = compare(np.sum(per_sample), total, Tolerance(1e-9, 1e-12), scale, '"none" summed vs "sum"')
    mean = "batchmean" if "batchmean" in choices else "mean"
    return max(ratio, compare(loss(**{**x, "reduction": mean}) * _batch_size(x), total, Tolerance(1e-9, 1e-12),
                              scale, f'"{mean}" × N vs "sum"'))


REDUCTIONS_AGREE = Property("reductions agree", reductions_agree.__doc__, reductions_agree)
