"""The CC record: the kernel congruence loss (paper, KD-Zoo, torchdistill) and the adjacent-residual
loss of the authors' shared code, with what the math guarantees about them."""

from __future__ import annotations

import math

import numpy as np

from kdref.proof import compare, max_abs
from kdref.records._shared import PERMUTATION_INVARIANT, ZERO_AT_MATCH
from kdref.reference import cc as ref
from kdref.registry import EXACT, FD_GRADIENT, Loss, Method, Property, Tolerance
from kdref.strategies.cc import cc_adjacent_inputs, cc_inputs

#: the cc_loss cases whose norm is squared (smooth at a match) and the one whose norm is not
_SQUARED = ("cc_loss/paper", "cc_loss/kdzoo")
_UNSQUARED = ("cc_loss/torchdistill",)


def _batch(x) -> int:
    return x["student"].shape[0]


def _correlation_scale(knobs, x) -> float:
    r"""The largest correlation entry's magnitude, as the rounding errors of :math:`C` scale: 1 for
    normalised rows (:math:`\lvert S\rvert\le1`) and for the exact Gaussian; for raw rows the kernel
    at the largest squared row norm :math:`G`, the Taylor term of degree :math:`p` weighted by
    :math:`1+p` (its relative rounding error is :math:`p` times that of :math:`G`)."""
    if knobs["normalize"] or knobs["kernel"] == "gaussian_exact":
        return 1.0
    G = max(float(np.max(np.sum(np.reshape(v, (v.shape[0], -1)) ** 2, axis=1)))
            for v in (x["student"], x["teacher"]))
    if knobs["kernel"] == "bilinear":
        return 1.0 + 2.0 * G
    return 1.0 + sum((1 + p) * a * G**p for p, a in enumerate(ref.taylor_coefficients(knobs["gamma"], knobs["P"])))


def _cc_knobs(x, convention: str):
    """The knobs ``cc_loss`` uses on ``x`` under ``convention``."""
    return ref.CC_LOSS.resolve(convention, **{k.name: x[k.name] for k in ref.CC_LOSS.knobs if k.name in x})


def _cc_scale(x, convention: str) -> float:
    knobs = _cc_knobs(x, convention)
    n = _batch(x)
    c = _correlation_scale(knobs, x)
    c = c**2 if knobs["norm"] == "fro_sq" else c
    return c * (n * n if knobs["reduction"] == "sum" else 1.0)


def _adjacent_scale(x) -> float:
    return (1.0 + max_abs(x)) ** 2 * (_batch(x) if x.get("reduction") == "sum" else 1.0)


def error_scale(x, convention: str) -> float:
    """The size of the rounding error of the loss on inputs ``x`` under ``convention``: for
    ``cc_loss`` the correlation scale ``c`` (``c²`` for the squared norm), times n² for
    ``reduction="sum"``; for the adjacent-residual loss (its only convention, ``"repdistiller"``)
    the size of a residual product, ``(1 + max|f|)²``, times n for ``"sum"``."""
    if convention in ref.CC_ADJACENT_RESIDUAL_LOSS.conventions.names:
        return _adjacent_scale(x)
    return _cc_scale(x, convention)


def _knobs(loss, x):
    """The knobs ``cc_loss`` uses on ``x`` under the subject's convention."""
    return _cc_knobs(x, loss.convention)


# ---------------------------------------------------------------------------------------------
# cc_loss


def symmetric_in_student_and_teacher(loss, x) -> float:
    """The distance between the two correlation matrices is symmetric: swapping the student and
    the teacher leaves the loss unchanged (the widths may differ)."""
    swapped = {**x, "student": x["teacher"], "teacher": x["student"]}
    return compare(loss(**swapped), loss(**x), EXACT, loss.scale(x), "loss with student and teacher swapped")


def rotation_invariant(loss, x) -> float:
    """Every kernel is a function of the samples' inner products (or distances), and normalising
    commutes with a rotation: rotating the student's feature space, F_S → F_S Q with Q orthogonal,
    leaves the loss unchanged."""
    student = x["student"].reshape(x["student"].shape[0], -1)
    d = student.shape[1]
    q, _ = np.linalg.qr(np.random.default_rng(d).standard_normal((d, d)))
    rotated = {**x, "student": student @ q}
    return compare(loss(**rotated), loss(**x), EXACT, loss.scale(x), "loss with the student's features rotated")


def row_scale_invariant(loss, x) -> float:
    """With normalised rows, rescaling one student sample by a positive factor changes nothing, in
    value and radially in gradient: ⟨∂L/∂f_i, f_i⟩ = 0 for every sample i."""
    if not _knobs(loss, x)["normalize"]:
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


def batchmean_is_sum_over_n_squared(loss, x) -> float:
    """The mean is over all n² entries of the correlation matrices, the diagonal included:
    "batchmean" × n² = "sum"."""
    n = _batch(x)
    total = loss(**{**x, "reduction": "sum"})
    scale = loss.scale({**x, "reduction": "sum"})
    return compare(loss(**{**x, "reduction": "batchmean"}) * n * n, total, EXACT, scale, '"batchmean" × n² vs "sum"')


def taylor_tends_to_exact_gaussian(loss, x) -> float:
    r"""On unit rows, the order-P series differs from the exact Gaussian by at most
    R_P = (2γ)^{P+1}/(P+1)! per entry (Lagrange remainder of e^{2γ(s−1)}, |s| ≤ 1), so for
    P = 1 … 8 the loss is within 4R_P(1 + R_P) of the exact kernel's (2R_P/n for the unsquared
    norm): the series converges to the Gaussian RBF as P grows."""
    gamma = x.get("gamma", 0.4)
    unit = {**x, "normalize": True, "reduction": "batchmean", "gamma": gamma}
    unit.pop("P", None)
    exact = loss(**{**unit, "kernel": "gaussian_exact"})
    n = _batch(x)
    worst = 0.0
    for P in range(1, 9):
        R = (2 * gamma) ** (P + 1) / math.factorial(P + 1)
        bound = 4 * R * (1 + R) if _knobs(loss, x)["norm"] == "fro_sq" else 2 * R / n
        taylor = loss(**{**unit, "kernel": "gaussian_taylor", "P": P})
        worst = max(worst, compare(taylor, exact, Tolerance(0.0, 1.0), bound + 1e-12,
                                   f"loss of the order-{P} series vs the exact Gaussian's"))
    return worst


def paper_is_n2_times_torchdistill_squared(loss, x) -> float:
    """The same correlation matrices under the squared and the unsquared norm:
    L_fro_sq = n² · L_fro², and ∇L_fro_sq = 2n² L_fro ∇L_fro."""
    n = _batch(x)
    squared = {**x, "norm": "fro_sq", "reduction": "batchmean"}
    plain = {**x, "norm": "fro", "reduction": "batchmean"}
    value = loss(**plain)
    scale = loss.scale(squared)
    worst = compare(loss(**squared), n * n * value**2, EXACT, scale, "fro_sq loss vs n² · fro loss²")
    expected = 2 * n * n * value * loss.grad("student", **plain)
    return max(worst, compare(loss.grad("student", **squared), expected, FD_GRADIENT, scale,
                              "fro_sq gradient vs 2n² · L_fro · fro gradient"))


def zero_at_match_with_zero_subgradient(loss, x) -> float:
    """The unsquared norm at a student equal to the teacher: the value is 0, its minimum, and
    kdref's torch gradient there is the zero subgradient (torch.dist's choice). The reference has no
    gradient at this kink (its central differences are O(h), not 0), so it is held to the value."""
    at_match = {**x, "student": x["teacher"].copy()}
    scale = loss.scale(at_match)
    worst = compare(loss(**at_match), 0 * loss(**at_match), EXACT, scale, "loss at a match")
    if loss.side != "torch":
        return worst
    return max(worst, compare(loss.grad("student", **at_match), 0 * at_match["student"], Tolerance(0.0, 0.0), 1.0,
                              "gradient at a match (the zero subgradient)"))


# ---------------------------------------------------------------------------------------------
# cc_adjacent_residual_loss


def reversal_invariant(loss, x) -> float:
    """Reversing the batch order maps the adjacent pairs onto themselves: the loss is unchanged
    (a permutation in general changes it)."""
    reversed_ = {**x, "student": x["student"][::-1].copy(), "teacher": x["teacher"][::-1].copy()}
    return compare(loss(**reversed_), loss(**x), EXACT, loss.scale(x), "loss of the reversed batch")


def vanishes_when_every_other_sample_matches(loss, x) -> float:
    """The residuals enter only as products of neighbours: when every other student sample equals
    its teacher, each adjacent pair has a zero factor, and the loss is 0."""
    student = x["student"].copy()
    student[::2] = x["teacher"][::2]
    return compare(loss(**{**x, "student": student}), 0.0, EXACT, loss.scale(x),
                   "loss with every other sample matched")


def adjacent_symmetric(loss, x) -> float:
    """|f_S − f_T| = |f_T − f_S|: swapping the student and the teacher leaves the loss unchanged."""
    swapped = {**x, "student": x["teacher"], "teacher": x["student"]}
    return compare(loss(**swapped), loss(**x), EXACT, loss.scale(x), "loss with student and teacher swapped")


def _adjacent_plain(convention):
    return cc_adjacent_inputs(convention, gradient=False)


def _pair(name: str, fn, cases, inputs=None) -> Property:
    return Property(name, fn.__doc__, fn, cases, inputs)


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
        Property(PERMUTATION_INVARIANT.name, PERMUTATION_INVARIANT.description, PERMUTATION_INVARIANT.check,
                 ("cc_loss/*",)),
        Property(ZERO_AT_MATCH.name, ZERO_AT_MATCH.description, ZERO_AT_MATCH.check,
                 (*_SQUARED, "cc_adjacent_residual_loss/*")),
        _pair("zero at a match, zero subgradient", zero_at_match_with_zero_subgradient, _UNSQUARED),
        _pair("symmetric in student and teacher", symmetric_in_student_and_teacher, ("cc_loss/*",)),
        _pair("rotation invariant", rotation_invariant, ("cc_loss/*",)),
        _pair("row-scale invariant (normalised rows)", row_scale_invariant, ("cc_loss/*",)),
        _pair("batchmean = sum / n²", batchmean_is_sum_over_n_squared, ("cc_loss/*",)),
        _pair("Taylor series → exact Gaussian as P grows", taylor_tends_to_exact_gaussian, ("cc_loss/*",)),
        _pair("fro_sq = n² · fro²", paper_is_n2_times_torchdistill_squared, _UNSQUARED),
        _pair("reversal invariant", reversal_invariant, ("cc_adjacent_residual_loss/*",),
              inputs=_adjacent_plain),
        _pair("zero when every other sample matches", vanishes_when_every_other_sample_matches,
              ("cc_adjacent_residual_loss/*",), inputs=_adjacent_plain),
        _pair("symmetric in student and teacher (residuals)", adjacent_symmetric,
              ("cc_adjacent_residual_loss/*",), inputs=_adjacent_plain),
    ),
    error_scale=error_scale,
)
