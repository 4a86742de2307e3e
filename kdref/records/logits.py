"""The registry record of Logits (Ba & Caruana's logit regression), with its properties."""

from __future__ import annotations

import numpy as np

from kdref import strategies
from kdref.proof import compare
from kdref.records._shared import REDUCTIONS_AGREE, ZERO_AT_MATCH
from kdref.reference import logits as ref
from kdref.registry import EXACT, FD_GRADIENT, Loss, Method, by_gradient, guarantee


def _scale(inputs, convention) -> float:
    """Rounding errs relative to the residual s − t (a float difference rounds once, relative to
    its result), so the squared residual sets the scale, not the logits' size."""
    return (1.0 + float(np.max(np.abs(inputs["student"] - inputs["teacher"])))) ** 2


def _shifts(x: np.ndarray, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-3, 3, size=(x.shape[0], 1))


@guarantee("≥ 0")
def nonnegative(loss, x) -> float:
    """A sum of squares is never negative."""
    if float(np.min(loss(**x))) < 0:
        raise AssertionError(f"negative squared error {loss(**x)}")
    return 0.0


@guarantee("kdzoo = paper × 2/C", "*/kdzoo", "*/mse", "*/torchdistill")
def kdzoo_is_paper_times_2_over_c(loss, x) -> float:
    """F.mse_loss averages over N·C entries without the ½: exactly paper × 2/C."""
    paper = loss.variant(convention="paper")
    return compare(loss(**x), paper(**x) * 2 / x["student"].shape[1], EXACT, loss.scale(x), "kdzoo vs paper × 2/C")


@guarantee("row shift costs C·c²/2", "*/paper")
def shift_cost(loss, x) -> float:
    """Shifting row n of an exact match by c_n costs C·c_n²/2 per row (paper): the loss sees the
    mean logit, which any softmax ignores."""
    c = _shifts(x["teacher"], 3)
    shifted = {**x, "student": x["teacher"] + c}
    expected = np.mean(x["teacher"].shape[1] * c[:, 0] ** 2 / 2)
    return compare(loss(**shifted), expected, EXACT, loss.scale(shifted), "cost of a row shift")


@guarantee("centred: shift invariance", "*/center")
def centred_is_shift_invariant(loss, x) -> float:
    """Centring removes each row's mean, so per-row shifts of either input change nothing."""
    shifted = {"student": x["student"] + _shifts(x["student"], 4), "teacher": x["teacher"] + _shifts(x["teacher"], 5)}
    return compare(loss(**shifted), loss(**x), EXACT, loss.scale(shifted), "centred loss after shifts")


@guarantee("gradient = (s − t)/N", "*/paper")
def gradient_is_residual(loss, x) -> float:
    """∂L/∂s = (s − t)/N at the paper's scale."""
    expected = (x["student"] - x["teacher"]) / x["student"].shape[0]
    return compare(loss.grad("student", **x), expected, FD_GRADIENT, loss.scale(x), "gradient")


METHOD = Method(
    name="logits",
    title="Logits — regression on the teacher's logits",
    citation="Ba, Caruana. Do Deep Nets Really Need to be Deep? NIPS 2014, pp. 2654–2662.",
    family="logits",
    losses=(Loss(ref.logit_regression_loss, by_gradient(strategies.logits_inputs)),),
    properties=(ZERO_AT_MATCH, nonnegative, kdzoo_is_paper_times_2_over_c, shift_cost, centred_is_shift_invariant,
                gradient_is_residual, REDUCTIONS_AGREE),
    error_scale=_scale,
)
