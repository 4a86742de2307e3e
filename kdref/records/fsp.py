"""The registry record of FSP (flow of solution procedure matrices), with its properties."""

from __future__ import annotations

import numpy as np

from kdref.proof import compare
from kdref.reference import fsp as ref
from kdref.registry import EXACT, FD_GRADIENT, Loss, Method, by_gradient, guarantee
from kdref.strategies.fsp import fsp_inputs, fsp_matrix_inputs

_SIDES = ("student", "teacher")


def _peak(x: np.ndarray) -> float:
    return float(np.max(np.abs(x)))


def _scale(inputs, convention) -> float:
    """The size of what FSP sums: an entry of G is at most a = max|F¹|·max|F²|, and a term of the
    loss at most λ·(2a)² (squared distances; the column norm is smaller). Rounding in G is
    ~ε·a, so the error of a squared distance is ~ε·a² where G_S and G_T cancel."""
    if "f1" in inputs:
        return 1.0 + _peak(inputs["f1"]) * _peak(inputs["f2"])
    weights = ref.pair_weights(inputs.get("weights"), len(inputs["student_first"]))
    return sum(max(1.0, weight) * (1.0 + max(_peak(inputs[f"{s}_first"][i]) * _peak(inputs[f"{s}_second"][i])
                                             for s in _SIDES)) ** 2 for i, weight in enumerate(weights))


def _knob(loss, name: str):
    return loss.loss.declaration.resolve(loss.convention)[name]


def _edge_cases(convention: str):
    return fsp_inputs()


@guarantee("zero when student equals teacher", "fsp_loss/*")
def zero_when_student_equals_teacher(loss, x) -> float:
    """Student maps equal to the teacher's give G_S = G_T: the loss is 0, and so is its gradient
    (torchdistill's column norm at 0 takes the 0 subgradient)."""
    at_match = {**x, **{f"student_{role}": [t.copy() for t in x[f"teacher_{role}"]] for role in ("first", "second")}}
    ratio = compare(loss(**at_match), 0.0, EXACT, loss.scale(at_match), "loss at a match")
    for wrt in ("student_first", "student_second"):
        gradient = loss.grad(wrt, **at_match)
        ratio = max(ratio, compare(gradient, np.zeros_like(gradient), FD_GRADIENT, loss.scale(at_match),
                                   f"d loss / d {wrt} at a match"))
    return ratio


@guarantee("kdzoo = repdistiller = paper/(m·n), one pair", "fsp_loss/kdzoo", "fsp_loss/repdistiller",
           inputs=lambda convention: fsp_inputs(max_pairs=1))
def libraries_are_paper_over_mn(loss, x) -> float:
    """For one pair, KD-Zoo = RepDistiller = paper / (m·n) (their F.mse_loss divides by the
    m·n entries of G), with the same (average) pooling."""
    m, n = x["student_first"][0].shape[1], x["student_second"][0].shape[1]
    paper = loss.variant(convention="paper")(**x, pool="avg")
    return compare(loss(**x), paper / (m * n), EXACT, loss.scale(x), "kdzoo/repdistiller vs paper/(m·n)")


@guarantee("kdzoo = repdistiller / P", "fsp_loss/kdzoo", inputs=_edge_cases)
def kdzoo_is_repdistiller_over_pairs(loss, x) -> float:
    """KD-Zoo averages over the P pairs where RepDistiller sums: kdzoo = repdistiller / P."""
    repdistiller = loss.variant(convention="repdistiller")(**x)
    return compare(loss(**x), repdistiller / len(x["student_first"]), EXACT, loss.scale(x), "kdzoo vs repdistiller/P")


@guarantee("pairs add up with their weights", "fsp_loss/*", inputs=_edge_cases)
def pairs_add_up(loss, x) -> float:
    """Several pairs: the λ_i-weighted sum of the single-pair losses (KD-Zoo: their mean)."""
    weights = ref.pair_weights(x.get("weights"), len(x["student_first"]))
    singles = [w * loss(**{k: [v[i]] for k, v in x.items() if k != "weights"}) for i, w in enumerate(weights)]
    expected = (np.mean if _knob(loss, "pair_reduction") == "mean" else np.sum)(singles, axis=0)
    return compare(loss(**x), expected, EXACT, loss.scale(x), "multi-pair loss vs its single-pair terms")


@guarantee("bilinearity: (αγ)² scaling", "fsp_loss/*", inputs=_edge_cases)
def bilinear_scaling(loss, x) -> float:
    """G is bilinear: F¹ → αF¹ and F² → γF² (student and teacher) scale G by αγ, so the squared
    distances scale by (αγ)² and torchdistill's norm by |αγ|. α, γ > 0 where max pooling is used
    (it commutes with positive scaling only); any sign with average pooling."""
    alpha, gamma = np.random.default_rng(7).uniform(0.2, 5.0, size=2)
    alpha = -alpha if _knob(loss, "pool") == "avg" else alpha
    scaled = {**x, **{f"{s}_first": [alpha * f for f in x[f"{s}_first"]] for s in _SIDES},
              **{f"{s}_second": [gamma * f for f in x[f"{s}_second"]] for s in _SIDES}}
    factor = abs(alpha * gamma) ** (1 if _knob(loss, "distance") == "col_l2" else 2)
    return compare(loss(**scaled), factor * loss(**x), EXACT, loss.scale(scaled), "loss after scaling by α, γ")


@guarantee("orientation invariance", "fsp_loss/paper", "fsp_loss/kdzoo", "fsp_loss/repdistiller", inputs=_edge_cases)
def orientation_invariance(loss, x) -> float:
    """Swapping the two maps of every pair transposes every G (G[F², F¹] = G[F¹, F²]ᵀ), which
    leaves a squared (Frobenius) distance unchanged; the larger map of a pair is pooled whichever it is."""
    swapped = {**x, **{f"{s}_first": x[f"{s}_second"] for s in _SIDES},
               **{f"{s}_second": x[f"{s}_first"] for s in _SIDES}}
    return compare(loss(**swapped), loss(**x), EXACT, loss.scale(x), "loss with first and second maps swapped")


@guarantee("‖ΔG‖_F ≤ column norms ≤ √n·‖ΔG‖_F", "fsp_loss/torchdistill",
           inputs=lambda convention: fsp_inputs(max_pairs=1, with_weights=False))
def column_norm_between_frobenius_bounds(loss, x) -> float:
    """Per example and pair, ‖ΔG‖_F ≤ Σ_j ‖ΔG[:, j]‖ ≤ √n·‖ΔG‖_F: torchdistill's ℓ2,1 norm lies
    between the square root of the paper's term and √n times it."""
    per_example = loss(**x, reduction="none")
    frobenius = np.sqrt(loss.variant(convention="paper")(**x, reduction="none"))
    n, slack = x["student_second"][0].shape[1], 1e-9 * loss.scale(x)
    if np.any(per_example < frobenius - slack) or np.any(per_example > np.sqrt(n) * frobenius + slack):
        raise AssertionError(f"column norms {per_example} outside [‖ΔG‖_F, √n·‖ΔG‖_F] = "
                             f"[{frobenius}, {np.sqrt(n) * frobenius}]")
    return 0.0


@guarantee("G is bilinear", "fsp_matrix/*", inputs=lambda convention: fsp_matrix_inputs())
def matrix_is_bilinear(loss, x) -> float:
    """G(αF¹, γF²) = αγ·G(F¹, F²) for any real α, γ."""
    alpha, gamma = -1.7, 0.3
    return compare(loss(f1=alpha * x["f1"], f2=gamma * x["f2"]), alpha * gamma * loss(**x), EXACT, loss.scale(x),
                   "G after scaling by α, γ")


@guarantee("G transposes when the maps swap", "fsp_matrix/*", inputs=lambda convention: fsp_matrix_inputs())
def matrix_transposes_when_maps_swap(loss, x) -> float:
    """G(F², F¹) = G(F¹, F²)ᵀ: the orientation [m × n] vs [n × m] holds the same entries."""
    return compare(loss(f1=x["f2"], f2=x["f1"]), np.swapaxes(loss(**x), 1, 2), EXACT, loss.scale(x), "G transposed")


@guarantee("G is a spatial mean", "fsp_matrix/*", inputs=lambda convention: fsp_matrix_inputs())
def matrix_is_a_spatial_mean(loss, x) -> float:
    """Eq. (1) divides by h·w: repeating every position 2×3 times (a 2h × 3w map) leaves G unchanged."""
    f1, f2 = (np.repeat(np.repeat(x[k], 2, axis=2), 3, axis=3) for k in ("f1", "f2"))
    return compare(loss(f1=f1, f2=f2), loss(**x), EXACT, loss.scale(x), "G of the upsampled maps")


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
    properties=(zero_when_student_equals_teacher, libraries_are_paper_over_mn, kdzoo_is_repdistiller_over_pairs,
                pairs_add_up, bilinear_scaling, orientation_invariance, column_norm_between_frobenius_bounds,
                matrix_is_bilinear, matrix_transposes_when_maps_swap, matrix_is_a_spatial_mean),
    error_scale=_scale,
)
