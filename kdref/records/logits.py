"""The registry record of Logits (Ba & Caruana's logit regression), with its properties."""

from __future__ import annotations

import numpy as np

from kdref import strategies
from kdref.proof import compare
from kdref.records._shared import REDUCTIONS_AGREE
from kdref.reference import logits as ref
from kdref.registry import EXACT, FD_GRADIENT, Loss, Method, Property, Tolerance, by_gradient


def _scale(inputs, convention) -> float:
    """Rounding errs relative to the residual s − t (a float difference rounds once, relative to
    its result), so the squared residual sets the scale, not the logits' size."""
    return (1.0 + float(np.max(np.abs(inputs["student"] - inputs["teacher"])))) ** 2


def zero_at_match_and_nonnegative(loss, x) -> float:
    """A sum of squares: ≥ 0, and 0 with zero gradient when the student equals the teacher."""
    if float(loss(**x)) < 0:
        raise AssertionError(f"negative squared error {loss(**x)}")
    at_match = {**x, "student": x["teacher"]}
    ratio = compare(loss(**at_match), 0.0, EXACT, loss.scale(x), "loss at a match")
    return max(ratio, compare(loss.grad("student", **at_match), 0 * x["teacher"], FD_GRADIENT,
                              loss.scale(x), "gradient at a match"))


def kdzoo_is_paper_times_2_over_c(loss, x) -> float:
    """F.mse_loss averages over N·C entries without the ½: exactly paper × 2/C."""
    paper = loss.variant(convention="paper")
    return compare(loss(**x), paper(**x) * 2 / x["student"].shape[1], EXACT, loss.scale(x), "kdzoo vs paper × 2/C")


def shift_cost(loss, x) -> float:
    """Shifting row n of an exact match by c_n costs C·c_n²/2 per row (paper): the loss sees the
    mean logit, which any softmax ignores."""
    c = np.random.default_rng(3).uniform(-3, 3, size=(x["teacher"].shape[0], 1))
    shifted = {**x, "student": x["teacher"] + c}
    expected = np.mean(x["teacher"].shape[1] * c[:, 0] ** 2 / 2)
    return compare(loss(**shifted), expected, Tolerance(1e-9, 1e-12), loss.scale(shifted), "cost of a row shift")


def centred_is_shift_invariant(loss, x) -> float:
    """Centring removes each row's mean, so per-row shifts of either input change nothing."""
    rng = np.random.default_rng(4)
    shifted = {k: v + rng.uniform(-3, 3, size=(v.shape[0], 1)) for k, v in x.items()}
    return compare(loss(**shifted), loss(**x), Tolerance(1e-9, 1e-12), loss.scale(shifted), "centred loss after shifts")


def gradient_is_residual(loss, x) -> float:
    """∂L/∂s = (s − t)/N at the paper's scale."""
    expected = (x["student"] - x["teacher"]) / x["student"].shape[0]
    return compare(loss.grad("student", **x), expected, FD_GRADIENT, loss.scale(x), "gradient")


METHOD = Method(
    name="logits",
    title="Logits — regression on the teacher's logits",
    citation="Ba, Caruana. Do Deep Nets Really Need to be Deep? NIPS 2014, pp. 2654–2662.",
    family="logits",
    losses=(
        Loss(ref.logit_regression_loss, by_gradient(strategies.logits_inputs)),
    ),
    properties=(
        Property("≥ 0, zero at a match", zero_at_match_and_nonnegative.__doc__, zero_at_match_and_nonnegative),
        Property("kdzoo = paper × 2/C", kdzoo_is_paper_times_2_over_c.__doc__, kdzoo_is_paper_times_2_over_c,
                 ("*/kdzoo", "*/mse", "*/torchdistill")),
        Property("row shift costs C·c²/2", shift_cost.__doc__, shift_cost, ("*/paper",)),
        Property("centred: shift invariance", centred_is_shift_invariant.__doc__, centred_is_shift_invariant,
                 ("*/center",)),
        Property("gradient = (s − t)/N", gradient_is_residual.__doc__, gradient_is_residual, ("*/paper",)),
        REDUCTIONS_AGREE,
    ),
    error_scale=_scale,
)
