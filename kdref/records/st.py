"""The registry record of ST (soft targets), with the properties its math guarantees."""

from __future__ import annotations

import numpy as np

from kdref import strategies
from kdref.proof import compare, max_abs
from kdref.records._shared import REDUCTIONS_AGREE
from kdref.reference import st as ref
from kdref.reference._common import softmax
from kdref.registry import EXACT, FD_GRADIENT, Loss, Method, Tolerance, by_gradient, guarantee


def _scale(inputs, convention) -> float:
    """The size of the terms a soft-target loss sums: T²·log p with log p ≈ log C + |z|/T."""
    T, num_classes = inputs["T"], inputs["student"].shape[1]
    return T**2 * (1.0 + np.log(num_classes)) + max(1.0, T) * (1.0 + max_abs(inputs))


def _shift_rows(x: np.ndarray, seed: int) -> np.ndarray:
    return x + np.random.default_rng(seed).uniform(-3, 3, size=(x.shape[0], 1))


@guarantee("KL ≥ 0, zero at a match", "soft_target_loss/kl*", "soft_target_loss/kdzoo", "soft_target_loss/*distiller")
def kl_nonnegative_and_zero_at_match(loss, x) -> float:
    """KL ≥ 0, and 0 (value and gradient) when the student equals the teacher up to a row shift."""
    value = float(np.sum(loss(**x)))
    if value < -EXACT.atol * loss.scale(x):
        raise AssertionError(f"KL form is negative: {value}")
    at_match = {**x, "student": _shift_rows(x["teacher"], 0)}
    ratio = compare(loss(**at_match), np.zeros_like(loss(**at_match)), EXACT, loss.scale(at_match), "loss at a match")
    return max(ratio, compare(loss.grad("student", **at_match), 0 * at_match["teacher"], FD_GRADIENT,
                              loss.scale(at_match), "gradient at a match"))


@guarantee("CE smallest at the teacher", "soft_target_loss/paper")
def ce_minimised_at_teacher(loss, x) -> float:
    """Gibbs' inequality: H(p, q) ≥ H(p, p), so the CE form is smallest at student = teacher."""
    at_match = loss(**{**x, "student": x["teacher"]})
    value = loss(**x)
    if value < at_match - EXACT.atol * loss.scale(x):
        raise AssertionError(f"cross-entropy {value} below its value at the teacher {at_match}")
    return 0.0


@guarantee("row-shift invariance")
def shift_invariance(loss, x) -> float:
    """Adding a constant to each row of either input leaves every soft-target loss unchanged."""
    shifted = {**x, "student": _shift_rows(x["student"], 1), "teacher": _shift_rows(x["teacher"], 2)}
    return compare(loss(**shifted), loss(**x), Tolerance(1e-9, 1e-12), loss.scale(shifted), "loss after row shifts")


@guarantee("gradient = eq. 2", "soft_target_loss/*")
def gradient_is_eq2(loss, x) -> float:
    r"""∂L/∂z = (T/N)(q − p) for T²·KL or T²·CE, (q − p)/(NT) without T² (eq. 2 × the constant)."""
    T, n = x["T"], x["student"].shape[0]
    q, p = softmax(x["student"] / T), softmax(x["teacher"] / T)
    factor = T / n if loss.convention != "kl" else 1.0 / (n * T)
    expected = factor * (q - p)
    return compare(loss.grad("student", **x), expected, FD_GRADIENT, loss.scale(x), "gradient vs eq. 2")


@guarantee("T² gradient scaling", "soft_target_loss/kl_t2", "soft_target_loss/kdzoo", "soft_target_loss/*distiller")
def temperature_squared_scaling(loss, x) -> float:
    """The T² convention is exactly T² times the plain KL, in value and in gradient."""
    plain = loss.variant(convention="kl")
    ratio = compare(loss(**x), x["T"] ** 2 * plain(**x), Tolerance(1e-9, 1e-12), loss.scale(x), "T²·KL vs KL")
    return max(ratio, compare(loss.grad("student", **x), x["T"] ** 2 * plain.grad("student", **x),
                              FD_GRADIENT, loss.scale(x) * x["T"] ** 2, "gradient T² scaling"))


@guarantee("α·CE + β·T²·KL", "torchdistill_kd_loss/*")
def torchdistill_composition(loss, x) -> float:
    """torchdistill's KDLoss is α·CE + β·T²·KL with β = 1 − α unless given (CE and KL reduced as
    the docstring says), or KL alone without T² when α is unset or 0 or no labels are passed."""
    reduction = "batchmean"
    kl = loss.variant(loss="soft_target_loss", convention="kl")
    pair = {"student": x["student"], "teacher": x["teacher"], "T": x["T"]}
    soft = kl(**pair, reduction=reduction)
    if x.get("alpha") in (None, 0.0) or x.get("labels") is None:
        expected = soft
    else:
        beta = 1.0 - x["alpha"] if x.get("beta") is None else x["beta"]
        log_q = np.log(softmax(x["student"]))
        hard = -np.mean(log_q[np.arange(len(x["labels"])), x["labels"]])
        expected = x["alpha"] * hard + beta * x["T"] ** 2 * soft
    return compare(loss(**x), expected, Tolerance(1e-9, 1e-12), loss.scale(x), "α·CE + β·T²·KL")


@guarantee("hard term = cross-entropy", "hinton_kd_objective/*")
def hard_term_is_cross_entropy(loss, x) -> float:
    """With w_soft = 0 the objective is w_hard times the ordinary cross-entropy with the labels."""
    hard_only = float(loss(**{**x, "soft_weight": 0.0, "hard_weight": 1.0}))
    log_q = np.log(softmax(x["student"]))
    expected = -np.mean(log_q[np.arange(len(x["labels"])), x["labels"]])
    return compare(hard_only, expected, Tolerance(1e-9, 1e-12), 1.0 + max_abs(x), "hard-label term")


METHOD = Method(
    name="st",
    title="ST — soft targets (knowledge distillation)",
    citation="Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural Network. arXiv:1503.02531, 2015.",
    family="logits",
    losses=(
        Loss(ref.soft_target_loss, by_gradient(strategies.st_inputs)),
        Loss(ref.hinton_kd_objective, by_gradient(strategies.hinton_inputs)),
        Loss(ref.torchdistill_kd_loss, by_gradient(strategies.torchdistill_inputs)),
    ),
    properties=(
        kl_nonnegative_and_zero_at_match,
        ce_minimised_at_teacher,
        shift_invariance,
        gradient_is_eq2,
        temperature_squared_scaling,
        hard_term_is_cross_entropy,
        torchdistill_composition,
        REDUCTIONS_AGREE,
    ),
    error_scale=_scale,
)
