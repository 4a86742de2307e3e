"""The registry record of SP (similarity-preserving KD), with the properties its math guarantees."""

from __future__ import annotations

import numpy as np

from kdref.proof import compare
from kdref.records._shared import PERMUTATION_INVARIANT, ZERO_AT_MATCH
from kdref.reference import sp as ref
from kdref.registry import EXACT, FD_GRADIENT, Loss, Method, Tolerance, guarantee
from kdref.strategies.sp import sp_inputs

#: the trace form's 2b − 2Σcos cancels, and its row norms come from a quadratic form (float64)
_TRACE = Tolerance(1e-9, 1e-12)


def _rows(x) -> list[np.ndarray]:
    return [a.reshape(a.shape[0], -1) for a in [*x["student"], *x["teacher"]]]


def _scale(inputs, convention) -> float:
    """The size of the rounding error of the loss: the entries of every G lie in [−1, 1] and each
    pair's term is at most 4/b (× b² for the "sum" reduction), summed over the pairs; an entry of G
    errs by about ε · (largest row norm / smallest non-zero row norm), since a small row is divided
    by its own squared norm."""
    worst = 1.0
    for norms in (np.linalg.norm(q, axis=1) for q in _rows(inputs)):
        if np.any(norms > 0):
            worst = max(worst, float(norms.max() / norms[norms > 0].min()))
    b = inputs["student"][0].shape[0]
    return len(inputs["student"]) * worst * (b * b if inputs.get("reduction") == "sum" else 1)


def _without(x, *knobs) -> dict:
    return {k: v for k, v in x.items() if k not in knobs}


def _values(convention: str):
    """Value draws (zero rows, collapsed batches), not the smooth gradient draws."""
    return sp_inputs(convention)


@guarantee("layer rescaling invariance")
def layer_rescaling_invariance(loss, x) -> float:
    """Each row of G is normalised, so a positive rescaling of any one layer's maps (the whole
    batch, one factor) changes nothing — hence ⟨∂L/∂Q_S, Q_S⟩ = 0 for every student layer.
    (Rescaling single samples does change the loss: row i's norm removes c_i but not the c_j.)"""
    rng = np.random.default_rng(len(x["student"]))
    scaled = {**x, **{k: [a * rng.choice([1e-3, 0.5, 7.0, 1e3]) for a in x[k]] for k in ("student", "teacher")}}
    worst = compare(loss(**scaled), loss(**x), EXACT, loss.scale(x), "loss after rescaling every layer")
    grad, start = loss.grad("student", **x), 0
    for a in x["student"]:  # the flat gradient, layer by layer
        g, start = grad[start:start + a.size].reshape(a.shape), start + a.size
        bound = FD_GRADIENT.rtol * float(np.sum(np.abs(g * a))) + FD_GRADIENT.atol * loss.scale(x)
        worst = max(worst, compare(np.sum(g * a), 0.0, Tolerance(0.0, 1.0), bound, "⟨∂L/∂Q_S, Q_S⟩ per layer"))
    return worst


@guarantee("symmetric in student and teacher", inputs=_values)
def symmetric_in_student_and_teacher(loss, x) -> float:
    """‖G_T − G_S‖² is symmetric: swapping the student's and the teacher's maps leaves the value unchanged."""
    swapped = {**x, "student": x["teacher"], "teacher": x["student"]}
    return compare(loss(**swapped), loss(**x), EXACT, loss.scale(x), "loss with student and teacher swapped")


@guarantee("0 ≤ L ≤ 4 · pairs / b", inputs=_values)
def bounded_by_four_over_b(loss, x) -> float:
    """Every row of G has ℓ2 norm 1 (or ≤ 1 for ℓ1 rows, 0 for a zero sample), so each row of
    G_T − G_S has squared norm ≤ 4 and each pair's term lies in [0, 4/b] ("batchmean")."""
    value = float(loss(**_without(x, "reduction", "layer_reduction"), layer_reduction="sum", reduction="batchmean"))
    pairs, b = len(x["student"]), x["student"][0].shape[0]
    if not -EXACT.atol * loss.scale(x) <= value <= 4.0 * pairs / b * (1 + EXACT.rtol):
        raise AssertionError(f"loss {value} outside [0, 4 · {pairs} pairs / b = {4.0 * pairs / b}]")
    return 0.0


@guarantee("layer terms add up", inputs=_values)
def layer_terms_add_up(loss, x) -> float:
    """Layer pairs are independent terms: the loss is the sum of the single-pair losses
    (``layer_reduction="sum"``) or their mean ("mean"), each pair (teacher[k], student[k])."""
    base = _without(x, "layer_reduction", "student", "teacher")
    singles = [loss(**base, student=[s], teacher=[t]) for s, t in zip(x["student"], x["teacher"], strict=True)]
    both = {"student": x["student"], "teacher": x["teacher"]}
    worst = compare(loss(**base, **both, layer_reduction="sum"), np.sum(singles), EXACT, loss.scale(x),
                    "sum over pairs vs the single-pair losses")
    return max(worst, compare(loss(**base, **both, layer_reduction="mean"), np.mean(singles), EXACT, loss.scale(x),
                              "mean over pairs vs the single-pair losses"))


@guarantee("kdzoo = paper / pairs", "sp_loss/kdzoo")
def kdzoo_is_paper_over_pairs(loss, x) -> float:
    """KD-Zoo averages the pair terms that the paper sums: kdzoo = paper / (number of pairs), in
    value and gradient."""
    y = _without(x, "layer_reduction")
    paper, pairs = loss.variant(convention="paper"), len(x["student"])
    worst = compare(loss(**y), paper(**y) / pairs, EXACT, loss.scale(x), "kdzoo vs paper / pairs")
    return max(worst, compare(loss.grad("student", **y), paper.grad("student", **y) / pairs, FD_GRADIENT,
                              loss.scale(x), "gradient kdzoo vs paper / pairs"))


@guarantee('"sum" = b² × "batchmean"', inputs=_values)
def sum_is_b_squared_batchmean(loss, x) -> float:
    """torchdistill's two reductions: "sum" is b² × "batchmean"."""
    y, b = _without(x, "reduction"), x["student"][0].shape[0]
    return compare(loss(**y, reduction="sum"), b * b * loss(**y, reduction="batchmean"), EXACT,
                   b * b * loss.scale(x), '"sum" vs b² × "batchmean"')


@guarantee("trace form = Gram form", "sp_loss/paper", "sp_loss/kdzoo", "sp_loss/*distiller", inputs=_values)
def trace_form_is_gram_form(loss, x) -> float:
    """The trace form b²L = Σ_i (1 + 1 − 2 cos_i) (zero rows contributing their 0 norms) equals the
    Gram form in float64, in value and gradient."""
    y = _without(x, "zero_rows")
    worst = compare(loss(**y, trace_form=True), loss(**y), _TRACE, loss.scale(x) ** 2, "trace form vs Gram form")
    if any(np.any(np.linalg.norm(q, axis=1) == 0) for q in _rows(x)):
        return worst  # the reference's gradient is a finite difference: undefined at a zero row
    return max(worst, compare(loss.grad("student", **y, trace_form=True), loss.grad("student", **y), FD_GRADIENT,
                              loss.scale(x), "gradient trace form vs Gram form"))


METHOD = Method(
    name="sp",
    title="SP — similarity-preserving knowledge distillation",
    citation="Tung, Mori. Similarity-Preserving Knowledge Distillation. ICCV 2019. arXiv:1907.09682.",
    family="relations",
    losses=(Loss(ref.sp_loss, lambda convention, gradient: sp_inputs(convention, gradient=gradient)),),
    properties=(PERMUTATION_INVARIANT, ZERO_AT_MATCH, layer_rescaling_invariance, symmetric_in_student_and_teacher,
                bounded_by_four_over_b, layer_terms_add_up, kdzoo_is_paper_over_pairs, sum_is_b_squared_batchmean,
                trace_form_is_gram_form),
    error_scale=_scale,
)
