"""The registry record of ST (soft targets), with the properties its math guarantees."""

from __future__ import annotations

import numpy as np

from kdref import strategies
from kdref.proof import compare, max_abs
from kdref.records._shared import REDUCTIONS_AGREE
from kdref.reference import st as ref
from kdref.reference._common import softmax
from kdref.registry import EXACT, FD_GRADIENT, Loss, Method, by_gradient, guarantee


def _scale(inputs, convention) -> float:
    """The size of a soft-target loss's rounding errors. T²·KL is computed without cancelling
    (:func:`kdref.reference.st.scaled_kl_per_sample`): from the logit differences where they are
    small against T (errors of ε·|Δ|·|z|, |Δ| ≤ 2|z|), directly where they are not (then T < |z|/15,
    errors of ε·T²·(|z|/T + log C)). The cross-entropy adds T²·H(p), of size T²·log C, and the
    torch side computes the direct form up to a moderate T (:data:`kdref.reference.st.DIRECT_UP_TO`)."""
    T, num_classes = inputs["T"], inputs["student"].shape[1]
    z = 1.0 + max_abs(inputs)
    scale = z * (1.0 + min(T, 2.0 * z)) * (2.0 + np.log(num_classes))
    divergence = inputs.get("divergence") or ("ce" if convention == "paper" else "kl")
    # the torch side's direct form up to DIRECT_UP_TO (ε·T²·log C), and the cross-entropy's T²·H(p)
    direct = divergence == "ce" or T <= ref.DIRECT_UP_TO
    scale += T * T * (1.0 + np.log(num_classes)) if direct else 0.0
    # all of the above is the size of T²·(the soft term); without T², divided by it
    if "soft_weight" in inputs:  # the full objective always multiplies by T²
        squared = True
    elif convention == "torchdistill":  # T² only with a hard-label weight and labels
        squared = bool(inputs.get("alpha")) and inputs.get("labels") is not None
    else:
        squared = inputs.get("temperature_squared", convention != "kl")
    return scale if squared else scale / T / T


def _shift_rows(x: np.ndarray, seed: int) -> np.ndarray:
    return x + np.random.default_rng(seed).uniform(-3, 3, size=(x.shape[0], 1))


def _hard_ce(x) -> float:
    """The mean cross-entropy of the student's softmax with the labels."""
    return -np.mean(np.log(softmax(x["student"]))[np.arange(len(x["labels"])), x["labels"]])


@guarantee("smallest at the teacher", "soft_target_loss/*")
def minimised_at_teacher(loss, x) -> float:
    """Gibbs' inequality, H(p, q) ≥ H(p, p) and KL(p‖q) ≥ KL(p‖p) = 0: every form is smallest, with
    zero gradient, where the student equals the teacher up to a row shift; the KL forms are 0 there."""
    at_match = {**x, "student": _shift_rows(x["teacher"], 0)}
    value, smallest, scale = float(loss(**x)), loss(**at_match), loss.scale(at_match)
    floor = float(smallest) if loss.convention == "paper" else 0.0
    if value < floor - EXACT.atol * loss.scale(x):
        raise AssertionError(f"{value} below its value at the teacher, {floor}")
    ratio = compare(loss.grad("student", **at_match), 0 * x["teacher"], FD_GRADIENT, scale, "gradient at a match")
    if loss.convention != "paper":
        ratio = max(ratio, compare(smallest, 0 * smallest, EXACT, scale, "loss at a match"))
    return ratio


@guarantee("row-shift invariance")
def shift_invariance(loss, x) -> float:
    """Adding a constant to each row of either input leaves every soft-target loss unchanged."""
    shifted = {**x, "student": _shift_rows(x["student"], 1), "teacher": _shift_rows(x["teacher"], 2)}
    return compare(loss(**shifted), loss(**x), EXACT, loss.scale(shifted), "loss after row shifts")


@guarantee("gradient = eq. 2", "soft_target_loss/*")
def gradient_is_eq2(loss, x) -> float:
    r"""∂L/∂z = (T/N)(q − p) for T²·KL or T²·CE, (q − p)/(NT) without T² (eq. 2 × the constant)."""
    T, n = x["T"], x["student"].shape[0]
    q, p = softmax(x["student"] / T), softmax(x["teacher"] / T)
    factor = T / n if loss.convention != "kl" else 1.0 / (n * T)
    return compare(loss.grad("student", **x), factor * (q - p), FD_GRADIENT, loss.scale(x), "gradient vs eq. 2")


@guarantee("T² gradient scaling", "soft_target_loss/kl_t2", "soft_target_loss/kdzoo", "soft_target_loss/*distiller")
def temperature_squared_scaling(loss, x) -> float:
    """The T² convention is exactly T² times the plain KL, in value and in gradient."""
    plain, T2 = loss.variant(convention="kl"), x["T"] ** 2
    return max(compare(loss(**x), T2 * plain(**x), EXACT, loss.scale(x), "T²·KL vs KL"),
               compare(loss.grad("student", **x), T2 * plain.grad("student", **x), FD_GRADIENT, loss.scale(x) * T2,
                       "gradient T² scaling"))


@guarantee("α·CE + β·T²·KL", "torchdistill_kd_loss/*")
def torchdistill_composition(loss, x) -> float:
    """torchdistill's KDLoss is α·CE + β·T²·KL with β = 1 − α unless given (CE and KL reduced as
    the docstring says), or KL alone without T² when α is unset or 0 or no labels are passed."""
    kl = loss.variant(loss="soft_target_loss", convention="kl")
    expected = kl(student=x["student"], teacher=x["teacher"], T=x["T"], reduction="batchmean")
    if x.get("alpha") not in (None, 0.0) and x.get("labels") is not None:
        beta = 1.0 - x["alpha"] if x.get("beta") is None else x["beta"]
        expected = x["alpha"] * _hard_ce(x) + beta * x["T"] ** 2 * expected
    return compare(loss(**x), expected, EXACT, loss.scale(x), "α·CE + β·T²·KL")


@guarantee("hard term = cross-entropy", "hinton_kd_objective/*")
def hard_term_is_cross_entropy(loss, x) -> float:
    """With w_soft = 0 the objective is w_hard times the ordinary cross-entropy with the labels."""
    hard_only = float(loss(**{**x, "soft_weight": 0.0, "hard_weight": 1.0}))
    return compare(hard_only, _hard_ce(x), EXACT, 1.0 + max_abs(x), "hard-label term")


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
    properties=(minimised_at_teacher, shift_invariance, gradient_is_eq2, temperature_squared_scaling,
                hard_term_is_cross_entropy, torchdistill_composition, REDUCTIONS_AGREE),
    error_scale=_scale,
)
