"""The CC record: the kernel congruence loss (paper, KD-Zoo, torchdistill) and the adjacent-residual
loss of the authors' shared code, with what the math guarantees about them."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from kdref.proof import compare, max_abs
from kdref.records._shared import PERMUTATION_INVARIANT, ZERO_AT_MATCH
from kdref.reference import cc as ref
from kdref.registry import EXACT, FD_GRADIENT, Loss, Method, Tolerance, guarantee
from kdref.strategies.cc import cc_adjacent_inputs, cc_inputs

_ADJACENT = "cc_adjacent_residual_loss/*"


def _knobs(x, convention: str):
    """The knobs ``cc_loss`` uses on ``x`` under ``convention``."""
    return ref.CC_LOSS.resolve(convention, **{k.name: x[k.name] for k in ref.CC_LOSS.knobs if k.name in x})


def _correlation_scale(knobs, x) -> float:
    r"""The largest correlation entry's magnitude, as the rounding errors of :math:`C` scale: 1 for
    normalised rows (:math:`\lvert S\rvert\le1`) and for the exact Gaussian; for raw rows the kernel
    at the largest squared row norm :math:`G`, the Taylor term of degree :math:`p` weighted by
    :math:`1+p` (its relative rounding error is :math:`p` times that of :math:`G`)."""
    if knobs["normalize"] or knobs["kernel"] == "gaussian_exact":
        return 1.0
    G = max(float(np.max(np.sum(v.reshape(v.shape[0], -1) ** 2, axis=1))) for v in (x["student"], x["teacher"]))
    if knobs["kernel"] == "bilinear":
        return 1.0 + 2.0 * G
    return 1.0 + sum((1 + p) * a * G**p for p, a in enumerate(ref.taylor_coefficients(knobs["gamma"], knobs["P"])))


def error_scale(x, convention: str) -> float:
    """The size of the rounding error of the loss on inputs ``x`` under ``convention``: for
    ``cc_loss`` the correlation scale ``c`` (``c²`` for the squared norm), times n² for
    ``reduction="sum"``; for the adjacent-residual loss (its only convention, ``"repdistiller"``)
    the size of a residual product, ``(1 + max|f|)²``, times n for ``"sum"``."""
    n = x["student"].shape[0]
    if convention in ref.CC_ADJACENT_RESIDUAL_LOSS.conventions.names:
        return (1.0 + max_abs(x)) ** 2 * (n if x.get("reduction") == "sum" else 1.0)
    knobs = _knobs(x, convention)
    c = _correlation_scale(knobs, x) ** (2 if knobs["norm"] == "fro_sq" else 1)
    return c * (n * n if knobs["reduction"] == "sum" else 1.0)


# cc_loss
@guarantee("symmetric in student and teacher", "cc_loss/*")
def symmetric_in_student_and_teacher(loss, x) -> float:
    """The distance between the two correlation matrices is symmetric: swapping the student and
    the teacher leaves the loss unchanged (the widths may differ)."""
    swapped = {**x, "student": x["teacher"], "teacher": x["student"]}
    return compare(loss(**swapped), loss(**x), EXACT, loss.scale(x), "loss with student and teacher swapped")


@guarantee("rotation invariant", "cc_loss/*")
def rotation_invariant(loss, x) -> float:
    """Every kernel is a function of the samples' inner products (or distances), and normalising
    commutes with a rotation: rotating the student's feature space, F_S → F_S Q with Q orthogonal,
    leaves the loss unchanged."""
    student = x["student"].reshape(x["student"].shape[0], -1)
    q, _ = np.linalg.qr(np.random.default_rng(student.shape[1]).standard_normal((student.shape[1],) * 2))
    return compare(loss(**{**x, "student": student @ q}), loss(**x), EXACT, loss.scale(x),
                   "loss with the student's features rotated")


@guarantee("row-scale invariant (normalised rows)", "cc_loss/*")
def row_scale_invariant(loss, x) -> float:
    """With normalised rows, rescaling one student sample by a positive factor changes nothing, in
    value and radially in gradient: ⟨∂L/∂f_i, f_i⟩ = 0 for every sample i."""
    if not _knobs(x, loss.convention)["normalize"]:
        return 0.0
    student = x["student"].reshape(x["student"].shape[0], -1)
    scaled = student.copy()
    scaled[0] *= 7.5
    worst = compare(loss(**{**x, "student": scaled}), loss(**{**x, "student": student}), EXACT, loss.scale(x),
                    "loss with student sample 0 scaled by 7.5")
    terms = loss.grad("student", **{**x, "student": student}) * student
    bound = FD_GRADIENT.rtol * float(np.max(np.sum(np.abs(terms), axis=1))) + FD_GRADIENT.atol * loss.scale(x)
    radial = np.sum(terms, axis=1)
    return max(worst, compare(radial, 0 * radial, Tolerance(0.0, 1.0), bound, "⟨∂L/∂f_i, f_i⟩ per sample"))


@guarantee("batchmean = sum / n²", "cc_loss/*")
def batchmean_is_sum_over_n_squared(loss, x) -> float:
    """The mean is over all n² entries of the correlation matrices, the diagonal included:
    "batchmean" × n² = "sum"."""
    n, total = x["student"].shape[0], {**x, "reduction": "sum"}
    return compare(loss(**{**x, "reduction": "batchmean"}) * n * n, loss(**total), EXACT, loss.scale(total),
                   '"batchmean" × n² vs "sum"')


@guarantee("Taylor series → exact Gaussian as P grows", "cc_loss/*")
def taylor_tends_to_exact_gaussian(loss, x) -> float:
    r"""On unit rows, the order-P series differs from the exact Gaussian by at most
    R_P = (2γ)^{P+1}/(P+1)! per entry (Lagrange remainder of e^{2γ(s−1)}, |s| ≤ 1), so for
    P = 1 … 8 the loss is within 4R_P(1 + R_P) of the exact kernel's (2R_P/n for the unsquared
    norm): the series converges to the Gaussian RBF as P grows."""
    gamma = x.get("gamma", 0.4)
    unit = {k: v for k, v in x.items() if k != "P"} | {"normalize": True, "reduction": "batchmean", "gamma": gamma}
    exact = loss(**{**unit, "kernel": "gaussian_exact"})
    worst = 0.0
    for P in range(1, 9):
        R = (2 * gamma) ** (P + 1) / math.factorial(P + 1)
        bound = 4 * R * (1 + R) if _knobs(x, loss.convention)["norm"] == "fro_sq" else 2 * R / x["student"].shape[0]
        worst = max(worst, compare(loss(**{**unit, "kernel": "gaussian_taylor", "P": P}), exact, Tolerance(0.0, 1.0),
                                   bound + 1e-12, f"loss of the order-{P} series vs the exact Gaussian's"))
    return worst


@guarantee("fro_sq = n² · fro²", "cc_loss/torchdistill")
def paper_is_n2_times_torchdistill_squared(loss, x) -> float:
    """The same correlation matrices under the squared and the unsquared norm:
    L_fro_sq = n² · L_fro², and ∇L_fro_sq = 2n² L_fro ∇L_fro."""
    n = x["student"].shape[0]
    squared, plain = ({**x, "norm": norm, "reduction": "batchmean"} for norm in ("fro_sq", "fro"))
    value, scale = loss(**plain), loss.scale(squared)
    worst = compare(loss(**squared), n * n * value**2, EXACT, scale, "fro_sq loss vs n² · fro loss²")
    return max(worst, compare(loss.grad("student", **squared), 2 * n * n * value * loss.grad("student", **plain),
                              FD_GRADIENT, scale, "fro_sq gradient vs 2n² · L_fro · fro gradient"))


@guarantee("zero at a match, zero subgradient", "cc_loss/torchdistill")
def zero_at_match_with_zero_subgradient(loss, x) -> float:
    """The unsquared norm at a student equal to the teacher: the value is 0, its minimum, and
    kdref's torch gradient there is the zero subgradient (torch.dist's choice). The reference has no
    gradient at this kink (its central differences are O(h), not 0), so it is held to the value."""
    at_match = {**x, "student": x["teacher"].copy()}
    worst = compare(loss(**at_match), 0.0, EXACT, loss.scale(at_match), "loss at a match")
    if loss.side != "torch":
        return worst
    return max(worst, compare(loss.grad("student", **at_match), 0 * at_match["student"], Tolerance(0.0, 0.0), 1.0,
                              "gradient at a match (the zero subgradient)"))


# cc_adjacent_residual_loss: its properties on value draws (the degenerate patterns included)
def _plain(convention):
    return cc_adjacent_inputs(convention)


@guarantee("reversal invariant", _ADJACENT, inputs=_plain)
def reversal_invariant(loss, x) -> float:
    """Reversing the batch order maps the adjacent pairs onto themselves: the loss is unchanged
    (a permutation in general changes it)."""
    reversed_ = {**x, "student": x["student"][::-1].copy(), "teacher": x["teacher"][::-1].copy()}
    return compare(loss(**reversed_), loss(**x), EXACT, loss.scale(x), "loss of the reversed batch")


@guarantee("zero when every other sample matches", _ADJACENT, inputs=_plain)
def vanishes_when_every_other_sample_matches(loss, x) -> float:
    """The residuals enter only as products of neighbours: when every other student sample equals
    its teacher, each adjacent pair has a zero factor, and the loss is 0."""
    student = x["student"].copy()
    student[::2] = x["teacher"][::2]
    return compare(loss(**{**x, "student": student}), 0.0, EXACT, loss.scale(x),
                   "loss with every other sample matched")


METHOD = Method(
    name="cc",
    title="CC — correlation congruence",
    citation="Peng, Jin, Liu, Li, Wu, Liu, Zhou, Zhang. Correlation Congruence for Knowledge Distillation. "
             "ICCV 2019. arXiv:1904.01802.",
    family="relations",
    losses=(
        Loss(ref.cc_loss, lambda convention, gradient: cc_inputs(convention, gradient=gradient)),
        Loss(ref.cc_adjacent_residual_loss,
             lambda convention, gradient: cc_adjacent_inputs(convention, gradient=gradient)),
    ),
    properties=(
        dataclasses.replace(PERMUTATION_INVARIANT, cases=("cc_loss/*",)),
        dataclasses.replace(ZERO_AT_MATCH, cases=("cc_loss/paper", "cc_loss/kdzoo", _ADJACENT)),
        zero_at_match_with_zero_subgradient,
        symmetric_in_student_and_teacher,
        dataclasses.replace(symmetric_in_student_and_teacher, name="symmetric in student and teacher (residuals)",
                            description="|f_S − f_T| = |f_T − f_S|: swapping the student and the teacher leaves "
                                        "the loss unchanged.", cases=(_ADJACENT,), inputs=_plain),
        rotation_invariant,
        row_scale_invariant,
        batchmean_is_sum_over_n_squared,
        taylor_tends_to_exact_gaussian,
        paper_is_n2_times_torchdistill_squared,
        reversal_invariant,
        vanishes_when_every_other_sample_matches,
    ),
    error_scale=error_scale,
)
