"""The registry record of NST (neuron selectivity transfer), with the properties its math guarantees."""

from __future__ import annotations

import numpy as np

from kdref.proof import compare
from kdref.reference import nst as ref
from kdref.registry import EXACT, FD_GRADIENT, Loss, Method, Property, Tolerance, by_gradient
from kdref.strategies.nst import nst_inputs

_FULL_MMD = ("nst_loss/paper", "nst_loss/kdzoo", "nst_loss/*distiller")
_KERNEL_KNOBS = ("kernel", "c", "d", "sigma2")


def _scale(inputs, convention) -> float:
    """The size of the summed kernel values: λ · N · (k(x,x) + k(y,y) + 2|k(x,y)|), with |k| ≤ (1 + |c|)^d
    for the polynomial kernel; the Gaussian's rounding grows as 1/σ²."""
    kernel = inputs.get("kernel", "poly")
    if kernel == "poly":
        size = (1.0 + abs(inputs.get("c", 0.0))) ** inputs.get("d", 2)
    elif kernel == "gaussian":
        size = 1.0 + 1.0 / float(np.min(inputs["sigma2"]))
    else:
        size = 1.0
    return 4.0 * size * inputs.get("lam", 1.0) * inputs["student"].shape[0]


def _knobs(loss, x) -> dict:
    """The resolved knobs of the case with the drawn overrides."""
    declaration = loss.loss.declaration
    return dict(declaration.resolve(loss.convention, **{k.name: x[k.name] for k in declaration.knobs if k.name in x}))


def _with_kernel(x, **kernel) -> dict:
    """``x`` with another kernel: the drawn kernel and its parameters replaced by ``kernel``."""
    return {**{k: v for k, v in x.items() if k not in _KERNEL_KNOBS}, **kernel}


def _samples(loss, x, which: str) -> tuple[np.ndarray, np.ndarray]:
    """The normalised channel maps of ``which`` map and their weights, computed by the reference helpers."""
    knobs = _knobs(loss, x)
    t, w, s, v = ref.sample_sets(x["student"], x["teacher"], eps=knobs["eps"], eps_mode=knobs["eps_mode"],
                                 zero_channel=knobs["zero_channel"], spatial=knobs["spatial"])
    return (s, v) if which == "student" else (t, w)


def zero_when_student_is_teacher(loss, x) -> float:
    """The full MMD² is 0, with zero gradient, when the student's maps are the teacher's."""
    at_match = {**x, "teacher": x["student"].copy(), "spatial": "error"}
    ratio = compare(loss(**at_match), 0 * loss(**at_match), EXACT, loss.scale(x), "loss at a match")
    return max(ratio, compare(loss.grad("student", **at_match), 0 * x["student"], FD_GRADIENT, loss.scale(x),
                              "gradient at a match"))


def mmd2_nonnegative(loss, x) -> float:
    """MMD² = ‖mean φ(x) − mean φ(y)‖² ≥ 0 for a positive-definite kernel: linear, Gaussian, and
    polynomial with c ≥ 0 (with c < 0 it is not positive definite, and the value can be negative)."""
    x = {**x, "c": abs(x["c"])} if "c" in x else x
    value = np.min(loss(**{**x, "reduction": "none"}))
    if value < -EXACT.atol * loss.scale(x):
        raise AssertionError(f"negative MMD² {value}")
    return 0.0


def symmetric_in_student_and_teacher(loss, x) -> float:
    """The full MMD² is symmetric: swapping the student and the teacher leaves it unchanged."""
    swapped = {**x, "student": x["teacher"], "teacher": x["student"]}
    return compare(loss(**swapped), loss(**x), EXACT, loss.scale(x), "loss with student and teacher swapped")


def channel_rescaling_invariance(loss, x) -> float:
    """Each channel map is normalised, so multiplying any one channel of either map by a positive
    number changes nothing; hence ⟨∂L/∂f^j, f^j⟩ = 0 for every student channel j."""
    rng = np.random.default_rng(5)
    knobs = _knobs(loss, x)
    worst = 0.0
    for which in ("student", "teacher"):
        fm = x[which].copy()
        n, k = rng.integers(fm.shape[0]), rng.integers(fm.shape[1])
        fm[n, k] *= rng.uniform(0.5, 4.0)
        # the ε rule moves a map of norm r by about ε/r² (sqrt_add) or ε/r (add), relative; the
        # drawn maps (also resized or pooled) have norms ≥ 0.25, rescaled by ≥ 0.5
        r = 0.125
        allowance = 0.0 if knobs["eps_mode"] == "clamp" else 10 * knobs["eps"] / r**2
        worst = max(worst, compare(loss(**{**x, which: fm}), loss(**x), Tolerance(1e-9, 1e-13 + allowance),
                                   loss.scale(x), f"loss after rescaling a {which} channel"))
    grad = loss.grad("student", **x)
    terms = grad * x["student"]
    radial = np.sum(terms, axis=(2, 3))
    bound = FD_GRADIENT.rtol * float(np.max(np.sum(np.abs(terms), axis=(2, 3)))) + FD_GRADIENT.atol * loss.scale(x)
    return max(worst, compare(radial, 0 * radial, Tolerance(0.0, 1.0), bound, "⟨∂L/∂f^j, f^j⟩ per channel"))


def official_is_full_minus_teacher_term(loss, x) -> float:
    """The official value is the full MMD² minus the teacher–teacher sum Σ w_i w_i' k(x^i, x^i'),
    per example, times λ."""
    knobs = _knobs(loss, x)
    teacher, weights = _samples(loss, x, "teacher")
    kernel = {k: knobs[k] for k in ("kernel", "c", "d")}
    gram = ref.kernel_matrix(teacher, teacher, sigma2=x.get("sigma2"), **kernel)
    teacher_term = np.einsum("ni,nij,nj->n", weights, gram, weights) * x.get("lam", 1.0)
    official = loss(**{**x, "reduction": "none"})
    full = loss(**{**x, "reduction": "none", "teacher_term": True})
    return compare(official, full - teacher_term, EXACT, loss.scale(x), "official vs full MMD² − teacher term")


def paper_is_half_of_kdzoo(loss, x) -> float:
    """The paper's λ/2 · MMD² is half the libraries' λ · MMD², in value and gradient."""
    kdzoo = loss.variant(convention="kdzoo")
    ratio = compare(loss(**x), kdzoo(**x) / 2, EXACT, loss.scale(x), "paper vs kdzoo / 2")
    return max(ratio, compare(loss.grad("student", **x), kdzoo.grad("student", **x) / 2, FD_GRADIENT, loss.scale(x),
                              "gradient paper vs kdzoo / 2"))


def official_gradient_is_n_times_kdzoo(loss, x) -> float:
    """The dropped teacher term is a constant: the official gradient is N · the batch-mean full MMD²'s
    (the ε rules differ by ~ε/‖f‖², invisible at these norms)."""
    kdzoo = loss.variant(convention="kdzoo")
    expected = kdzoo.grad("student", **x) * x["student"].shape[0]
    return compare(loss.grad("student", **x), expected, FD_GRADIENT, loss.scale(x), "official gradient vs N · kdzoo")


def linear_kernel_is_mean_map_distance(loss, x) -> float:
    """Linear kernel: MMD² = ‖Σ w_i x^i − Σ v_j y^j‖², the distance of the mean normalised maps."""
    linear = _with_kernel(x, kernel="linear", half=False, reduction="none", lam=1.0)
    (t, wt), (s, ws) = _samples(loss, linear, "teacher"), _samples(loss, linear, "student")
    expected = np.sum((np.einsum("ni,nim->nm", wt, t) - np.einsum("nj,njm->nm", ws, s)) ** 2, axis=-1)
    return compare(loss(**linear), expected, EXACT, loss.scale(linear), "linear MMD² vs mean-map distance")


def poly2_is_spatial_gram_distance(loss, x) -> float:
    """Polynomial kernel d = 2, c = 0: MMD² = ‖G_T − G_S‖²_F with the HW × HW Gram matrices
    G = Σ_i w_i x^i x^iᵀ (G_T/C_T and G_S/C_S for the plain means)."""
    poly = _with_kernel(x, kernel="poly", c=0.0, d=2, half=False, reduction="none", lam=1.0)
    (t, wt), (s, ws) = _samples(loss, poly, "teacher"), _samples(loss, poly, "student")
    g_t, g_s = np.einsum("ni,nim,nil->nml", wt, t, t), np.einsum("nj,njm,njl->nml", ws, s, s)
    expected = np.sum((g_t - g_s) ** 2, axis=(1, 2))
    return compare(loss(**poly), expected, EXACT, loss.scale(poly), "poly-2 MMD² vs ‖G_T − G_S‖²")


def dropping_a_zero_channel_is_deleting_it(loss, x) -> float:
    """With zero_channel="drop", a student channel that is zero in every example weighs nothing:
    the loss equals the loss with that channel deleted."""
    if x["student"].shape[1] < 2:
        return 0.0
    zeroed = x["student"].copy()
    zeroed[:, 0] = 0.0
    drop = {**x, "zero_channel": "drop"}
    return compare(loss(**{**drop, "student": zeroed}), loss(**{**drop, "student": x["student"][:, 1:]}), EXACT,
                   loss.scale(x), "dropped zero channel vs deleted channel")


METHOD = Method(
    name="nst",
    title="NST — neuron selectivity transfer",
    citation="Huang, Wang. Like What You Like: Knowledge Distill via Neuron Selectivity Transfer. "
             "arXiv:1707.01219, 2017.",
    family="features",
    losses=(
        Loss(ref.nst_loss, by_gradient(nst_inputs)),
    ),
    properties=(
        Property("zero when student = teacher", zero_when_student_is_teacher.__doc__, zero_when_student_is_teacher,
                 _FULL_MMD),
        Property("MMD² ≥ 0", mmd2_nonnegative.__doc__, mmd2_nonnegative, _FULL_MMD),
        Property("symmetric in student and teacher", symmetric_in_student_and_teacher.__doc__,
                 symmetric_in_student_and_teacher, _FULL_MMD,
                 inputs=lambda convention: nst_inputs(gradient=True, spatial_rules=False)),
        Property("channel-rescaling invariance", channel_rescaling_invariance.__doc__, channel_rescaling_invariance),
        Property("official = full MMD² − teacher term", official_is_full_minus_teacher_term.__doc__,
                 official_is_full_minus_teacher_term, ("nst_loss/official",)),
        Property("paper = kdzoo / 2", paper_is_half_of_kdzoo.__doc__, paper_is_half_of_kdzoo, ("nst_loss/paper",)),
        Property("official gradient = N · kdzoo gradient", official_gradient_is_n_times_kdzoo.__doc__,
                 official_gradient_is_n_times_kdzoo, ("nst_loss/official",)),
        Property("linear kernel = mean-map distance", linear_kernel_is_mean_map_distance.__doc__,
                 linear_kernel_is_mean_map_distance, _FULL_MMD),
        Property("poly-2 = spatial Gram distance", poly2_is_spatial_gram_distance.__doc__,
                 poly2_is_spatial_gram_distance, _FULL_MMD),
        Property("drop a zero channel = delete it", dropping_a_zero_channel_is_deleting_it.__doc__,
                 dropping_a_zero_channel_is_deleting_it),
    ),
    error_scale=_scale,
)
