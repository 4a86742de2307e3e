"""The registry record of FSP (flow of solution procedure matrices), with its properties."""

from __future__ import annotations

import numpy as np

from kdref.proof import compare
from kdref.reference import fsp as ref
from kdref.registry import EXACT, FD_GRADIENT, Loss, Method, Property, by_gradient
from kdref.strategies.fsp import fsp_inputs, fsp_matrix_inputs

_MAPS = ("student_first", "student_second", "teacher_first", "teacher_second")


def _peak(x: np.ndarray) -> float:
    return float(np.max(np.abs(x)))


def _scale(inputs, convention) -> float:
    """The size of what FSP sums: an entry of G is at most a = max|F¹|·max|F²|, and a term of the
    loss at most λ·(2a)² (squared distances; the column norm is smaller). Rounding in G is
    ~ε·a, so the error of a squared distance is ~ε·a² where G_S and G_T cancel."""
    if "f1" in inputs:
        return 1.0 + _peak(inputs["f1"]) * _peak(inputs["f2"])
    weights = ref.pair_weights(inputs.get("weights"), len(inputs["student_first"]))
    total = 0.0
    for i, weight in enumerate(weights):
        a = max(_peak(inputs[f"{side}_first"][i]) * _peak(inputs[f"{side}_second"][i])
                for side in ("student", "teacher"))
        total += max(1.0, weight) * (1.0 + a) ** 2
    return total


def _knob(loss, name: str):
    return loss.loss.declaration.resolve(loss.convention)[name]


def _single_pair(x: dict, i: int) -> dict:
    return {name: [x[name][i]] for name in _MAPS}


def zero_when_student_equals_teacher(loss, x) -> float:
    """Student maps equal to the teacher's give G_S = G_T: the loss is 0, and so is its gradient
    (torchdistill's column norm at 0 takes the 0 subgradient)."""
    at_match = {**x, "student_first": [t.copy() for t in x["teacher_first"]],
                "student_second": [t.copy() for t in x["teacher_second"]]}
    ratio = compare(loss(**at_match), 0.0, EXACT, loss.scale(at_match), "loss at a match")
    for wrt in ("student_first", "student_second"):
        gradient = loss.grad(wrt, **at_match)
        ratio = max(ratio, compare(gradient, np.zeros_like(gradient), FD_GRADIENT, loss.scale(at_match),
                                   f"d loss / d {wrt} at a match"))
    return ratio


def libraries_are_paper_over_mn(loss, x) -> float:
    """For one pair, KD-Zoo = RepDistiller = paper / (m·n) (their F.mse_loss divides by the
    m·n entries of G), with the same (average) pooling."""
    m, n = x["student_first"][0].shape[1], x["student_second"][0].shape[1]
    paper = loss.variant(convention="paper")(**x, pool="avg")
    return compare(loss(**x), paper / (m * n), EXACT, loss.scale(x), "kdzoo/repdistiller vs paper/(m·n)")


def kdzoo_is_repdistiller_over_pairs(loss, x) -> float:
    """KD-Zoo averages over the P pairs where RepDistiller sums: kdzoo = repdistiller / P."""
    repdistiller = loss.variant(convention="repdistiller")(**x)
    return compare(loss(**x), repdistiller / len(x["student_first"]), EXACT, loss.scale(x), "kdzoo vs repdistiller/P")


def pairs_add_up(loss, x) -> float:
    """Several pairs: the λ_i-weighted sum of the single-pair losses (KD-Zoo: their mean)."""
    weights = ref.pair_weights(x.get("weights"), len(x["student_first"]))
    singles = [w * loss(**_single_pair(x, i)) for i, w in enumerate(weights)]
    mean = _knob(loss, "pair_reduction") == "mean"
    expected = np.mean(singles, axis=0) if mean else np.sum(singles, axis=0)
    return compare(loss(**x), expected, EXACT, loss.scale(x), "multi-pair loss vs its single-pair terms")


def bilinear_scaling(loss, x) -> float:
    """G is bilinear: F¹ → αF¹ and F² → γF² (student and teacher) scale G by αγ, so the squared
    distances scale by (αγ)² and torchdistill's norm by |αγ|. α, γ > 0 where max pooling is used
    (it commutes with positive scaling only); any sign with average pooling."""
    rng = np.random.default_rng(7)
    alpha, gamma = rng.uniform(0.2, 5.0, size=2)
    if _knob(loss, "pool") == "avg":
        alpha, gamma = -alpha, gamma
    scaled = {**x, **{f"{side}_first": [alpha * f for f in x[f"{side}_first"]] for side in ("student", "teacher")},
              **{f"{side}_second": [gamma * f for f in x[f"{side}_second"]] for side in ("student", "teacher")}}
    power = 1 if _knob(loss, "distance") == "col_l2" else 2
    factor = abs(alpha * gamma) ** power
    return compare(loss(**scaled), factor * loss(**x), EXACT, loss.scale(scaled), "loss after scaling by α, γ")


def orientation_invariance(loss, x) -> float:
    """Swapping the two maps of every pair transposes every G (G[F², F¹] = G[F¹, F²]ᵀ), which
    leaves a squared (Frobenius) distance unchanged."""
    swapped = {**x, "student_first": x["student_second"], "student_second": x["student_first"],
               "teacher_first": x["teacher_second"], "teacher_second": x["teacher_first"]}
    return compare(loss(**swapped), loss(**x), EXACT, loss.scale(x), "loss with first and second maps swapped")


def column_norm_between_frobenius_bounds(loss, x) -> float:
    """Per example and pair, ‖ΔG‖_F ≤ Σ_j ‖ΔG[:, j]‖ ≤ √n·‖ΔG‖_F: torchdistill's ℓ2,1 norm lies
    between the square root of the paper's term and √n times it."""
    per_example = loss(**x, reduction="none")
    frobenius = np.sqrt(loss.variant(convention="paper")(**x, reduction="none"))
    n = x["student_second"][0].shape[1]
    slack = 1e-9 * loss.scale(x)
    if np.any(per_example < frobenius - slack) or np.any(per_example > np.sqrt(n) * frobenius + slack):
        raise AssertionError(f"column norms {per_example} outside [‖ΔG‖_F, √n·‖ΔG‖_F] = "
                             f"[{frobenius}, {np.sqrt(n) * frobenius}]")
    return 0.0


def matrix_is_bilinear(loss, x) -> float:
    """G(αF¹, γF²) = αγ·G(F¹, F²) for any real α, γ."""
    alpha, gamma = -1.7, 0.3
    return compare(loss(f1=alpha * x["f1"], f2=gamma * x["f2"]), alpha * gamma * loss(**x), EXACT, loss.scale(x),
                   "G after scaling by α, γ")


def matrix_transposes_when_maps_swap(loss, x) -> float:
    """G(F², F¹) = G(F¹, F²)ᵀ: the orientation [m × n] vs [n × m] holds the same entries."""
    return compare(loss(f1=x["f2"], f2=x["f1"]), np.swapaxes(loss(**x), 1, 2), EXACT, loss.scale(x),
                   "G transposed")


def matrix_is_a_spatial_mean(loss, x) -> float:
    """Eq. (1) divides by h·w: repeating every position 2×3 times (a 2h × 3w map) leaves G unchanged."""
    def repeat(f):
        return np.repeat(np.repeat(f, 2, axis=2), 3, axis=3)
    return compare(loss(f1=repeat(x["f1"]), f2=repeat(x["f2"])), loss(**x), EXACT, loss.scale(x),
                   "G of the upsampled maps")


def _edge_cases(convention: str):
    return fsp_inputs()


def _matrices(convention: str):
    return fsp_matrix_inputs()


def _one_pair(convention: str):
    return fsp_inputs(max_pairs=1)


def _one_pair_unweighted(convention: str):
    return fsp_inputs(max_pairs=1, with_weights=False)


METHOD = Method(
    name="fsp",
    title="FSP — flow of solution procedure matrices",
    citation="Yim, Joo, Bae, Kim. A Gift from Knowledge Distillation: Fast Optimization, Network Minimization "
             "and Transfer Learning. CVPR 2017, pp. 4133–4141.",
    family="features",
    losses=(
        Loss(ref.fsp_loss, by_gradient(fsp_inputs), differentiable=("student_first", "student_second")),
        Loss(ref.fsp_matrix, by_gradient(fsp_matrix_inputs), differentiable=("f1", "f2")),
    ),
    properties=(
        Property("zero when student equals teacher", zero_when_student_equals_teacher.__doc__,
                 zero_when_student_equals_teacher, ("fsp_loss/*",)),
        Property("kdzoo = repdistiller = paper/(m·n), one pair", libraries_are_paper_over_mn.__doc__,
                 libraries_are_paper_over_mn, ("fsp_loss/kdzoo", "fsp_loss/repdistiller"), inputs=_one_pair),
        Property("kdzoo = repdistiller / P", kdzoo_is_repdistiller_over_pairs.__doc__,
                 kdzoo_is_repdistiller_over_pairs, ("fsp_loss/kdzoo",), inputs=_edge_cases),
        Property("pairs add up with their weights", pairs_add_up.__doc__, pairs_add_up, ("fsp_loss/*",),
                 inputs=_edge_cases),
        Property("bilinearity: (αγ)² scaling", bilinear_scaling.__doc__, bilinear_scaling, ("fsp_loss/*",),
                 inputs=_edge_cases),
        Property("orientation invariance", orientation_invariance.__doc__, orientation_invariance,
                 ("fsp_loss/paper", "fsp_loss/kdzoo", "fsp_loss/repdistiller"), inputs=_edge_cases),
        Property("‖ΔG‖_F ≤ column norms ≤ √n·‖ΔG‖_F", column_norm_between_frobenius_bounds.__doc__,
                 column_norm_between_frobenius_bounds, ("fsp_loss/torchdistill",), inputs=_one_pair_unweighted),
        Property("G is bilinear", matrix_is_bilinear.__doc__, matrix_is_bilinear, ("fsp_matrix/*",), inputs=_matrices),
        Property("G transposes when the maps swap", matrix_transposes_when_maps_swap.__doc__,
                 matrix_transposes_when_maps_swap, ("fsp_matrix/*",), inputs=_matrices),
        Property("G is a spatial mean", matrix_is_a_spatial_mean.__doc__, matrix_is_a_spatial_mean,
                 ("fsp_matrix/*",), inputs=_matrices),
    ),
    error_scale=_scale,
)
