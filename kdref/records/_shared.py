"""Properties that hold for many methods, written once."""

from __future__ import annotations

import numpy as np

from kdref.proof import compare
from kdref.registry import EXACT, FD_GRADIENT, Property, Tolerance


def _batch_size(inputs) -> int:
    """The batch size: of the first array of rank ≥ 2, looking into lists of arrays too."""
    arrays = (u for v in inputs.values() for u in (v if isinstance(v, (list, tuple)) else [v]))
    return next(u.shape[0] for u in arrays if isinstance(u, np.ndarray) and u.ndim >= 2)


def _copy(value):
    """A copy of an array, or of every array of a list."""
    return [_copy(v) for v in value] if isinstance(value, (list, tuple)) else value.copy()


def _zero_gradient(value) -> np.ndarray:
    """The zero gradient with respect to an array, or to a list of arrays (flat and concatenated,
    as :meth:`kdref.proof.Subject.grad` returns it)."""
    if isinstance(value, (list, tuple)):
        return np.zeros(sum(np.size(v) for v in value))
    return 0 * value


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


def permute_batch(inputs, order: np.ndarray) -> dict:
    """``inputs`` with the samples of every batch-shaped array (and of every list of them) taken in
    ``order``; scalars and knobs unchanged."""
    n = len(order)

    def permuted(v):
        if isinstance(v, (list, tuple)):
            return [permuted(u) for u in v]
        if isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == n:
            return v[order]
        return v

    return {k: permuted(v) for k, v in inputs.items()}


def permutation_invariant(loss, x) -> float:
    """Relations between samples do not depend on their order: permuting the batch (the same
    permutation for every input) leaves the loss unchanged."""
    n = _batch_size(x)
    order = np.random.default_rng(n).permutation(n)
    if n > 1 and np.all(order == np.arange(n)):
        order = np.roll(order, 1)  # never the identity (at N = 2 a random draw often is)
    return compare(loss(**permute_batch(x, order)), loss(**x), EXACT, loss.scale(x),
                   "loss of the permuted batch")


def zero_when_student_is_teacher(loss, x) -> float:
    """A student whose relations are the teacher's own has nothing to learn: the loss and its
    gradient are 0 when the student is the teacher."""
    at_match = {**x, "student": _copy(x["teacher"])}
    scale = loss.scale(at_match)
    value = loss(**at_match)
    ratio = compare(value, 0 * value, EXACT, scale, "loss at a match")
    return max(ratio, compare(loss.grad("student", **at_match), _zero_gradient(at_match["student"]), FD_GRADIENT, scale,
                              "gradient at a match"))


PERMUTATION_INVARIANT = Property("permutation invariant", permutation_invariant.__doc__, permutation_invariant)
ZERO_AT_MATCH = Property("zero when student = teacher", zero_when_student_is_teacher.__doc__,
                         zero_when_student_is_teacher)
