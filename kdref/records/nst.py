"""The registry record of NST (neuron selectivity transfer), with the properties its math guarantees."""

from __future__ import annotations

import dataclasses

import numpy as np

from kdref.proof import compare
from kdref.records._shared import ZERO_AT_MATCH
from kdref.reference import nst as ref
from kdref.registry import EXACT, FD_GRADIENT, Loss, Method, Tolerance, by_gradient, guarantee
from kdref.strategies.nst import nst_inputs, nst_multi_inputs

_FULL_MMD = ("nst_loss/paper", "nst_loss/kdzoo", "nst_loss/*distiller")


def _scale(inputs, convention) -> float:
    """The size of the summed kernel values: λ · N · (k(x,x) + k(y,y) + 2|k(x,y)|), with |k| ≤ (1 + |c|)^d
    for the polynomial kernel; the Gaussian's rounding grows as 1/σ²; times the summed weights of
    several layer pairs."""
    kernel = inputs.get("kernel", "poly")
    size = {"poly": lambda: (1.0 + abs(inputs.get("c", 0.0))) ** inputs.get("d", 2), "linear": lambda: 1.0,
            "gaussian": lambda: 1.0 + 1.0 / float(np.min(inputs["sigma2"]))}[kernel]()
    student = inputs["student"] if "student" in inputs else inputs["students"][0]
    layers = sum(inputs["weights"]) if inputs.get("weights") is not None else len(inputs.get("students", [None]))
    return 4.0 * size * inputs.get("lam", 1.0) * student.shape[0] * max(1.0, layers)


def _knobs(loss, x) -> dict:
    """The resolved knobs of the case with the drawn overrides."""
    declaration = loss.loss.declaration
    return dict(declaration.resolve(loss.convention, **{k.name: x[k.name] for k in declaration.knobs if k.name in x}))


def _samples(loss, x) -> tuple[np.ndarray, ...]:
    """``x, w, y, v``: the teacher's and the student's normalised channel maps and their weights."""
    knobs = _knobs(loss, x)
    return ref.sample_sets(x["student"], x["teacher"], **{k: knobs[k] for k in ("eps", "eps_mode", "zero_channel",
                                                                                 "spatial")})


def _per_example(x, **kernel) -> dict:
    """``x`` with another kernel (the drawn one and its parameters replaced), per example, λ = 1, no ½."""
    kept = {k: v for k, v in x.items() if k not in ("kernel", "c", "d", "sigma2")}
    return {**kept, **kernel, "half": False, "reduction": "none", "lam": 1.0}


@guarantee("MMD² ≥ 0", *_FULL_MMD)
def mmd2_nonnegative(loss, x) -> float:
    """MMD² = ‖mean φ(x) − mean φ(y)‖² ≥ 0 for a positive-definite kernel: linear, Gaussian, and
    polynomial with c ≥ 0 (with c < 0 it is not positive definite, and the value can be negative)."""
    x = {**x, "c": abs(x["c"])} if "c" in x else x
    value = np.min(loss(**{**x, "reduction": "none"}))
    if value < -EXACT.atol * loss.scale(x):
        raise AssertionError(f"negative MMD² {value}")
    return 0.0


@guarantee("symmetric in student and teacher", *_FULL_MMD,
           inputs=lambda convention: nst_inputs(gradient=True, spatial_rules=False))
def symmetric_in_student_and_teacher(loss, x) -> float:
    """The full MMD² is symmetric: swapping the student and the teacher leaves it unchanged."""
    swapped = {**x, "student": x["teacher"], "teacher": x["student"]}
    return compare(loss(**swapped), loss(**x), EXACT, loss.scale(x), "loss with student and teacher swapped")


@guarantee("channel-rescaling invariance", "nst_loss/*")
def channel_rescaling_invariance(loss, x) -> float:
    """Each channel map is normalised, so multiplying any one channel of either map by a positive
    number changes nothing; hence ⟨∂L/∂f^j, f^j⟩ = 0 for every student channel j."""
    rng = np.random.default_rng(5)
    # the ε rule moves a map of norm r by about ε/r² (sqrt_add) or ε/r (add), relative; the drawn
    # maps (also resized or pooled) have norms ≥ 0.25, rescaled by ≥ 0.5: r ≥ 0.125
    knobs = _knobs(loss, x)
    allowance = 0.0 if knobs["eps_mode"] == "clamp" else 10 * knobs["eps"] / 0.125**2
    worst = 0.0
    for which in ("student", "teacher"):
        fm = x[which].copy()
        fm[rng.integers(fm.shape[0]), rng.integers(fm.shape[1])] *= rng.uniform(0.5, 4.0)
        worst = max(worst, compare(loss(**{**x, which: fm}), loss(**x), Tolerance(1e-9, 1e-13 + allowance),
                                   loss.scale(x), f"loss after rescaling a {which} channel"))
    terms = loss.grad("student", **x) * x["student"]
    radial = np.sum(terms, axis=(2, 3))
    bound = FD_GRADIENT.rtol * float(np.max(np.sum(np.abs(terms), axis=(2, 3)))) + FD_GRADIENT.atol * loss.scale(x)
    return max(worst, compare(radial, 0 * radial, Tolerance(0.0, 1.0), bound, "⟨∂L/∂f^j, f^j⟩ per channel"))


@guarantee("official = full MMD² − teacher term", "nst_loss/official")
def official_is_full_minus_teacher_term(loss, x) -> float:
    """The official value is the full MMD² minus the teacher–teacher sum Σ w_i w_i' k(x^i, x^i'),
    per example, times λ."""
    knobs = _knobs(loss, x)
    teacher, weights, _, _ = _samples(loss, x)
    gram = ref.kernel_matrix(teacher, teacher, knobs["kernel"], knobs["c"], knobs["d"], x.get("sigma2"))
    teacher_term = np.einsum("ni,nij,nj->n", weights, gram, weights) * x.get("lam", 1.0)
    full = loss(**{**x, "reduction": "none", "teacher_term": True})
    return compare(loss(**{**x, "reduction": "none"}), full - teacher_term, EXACT, loss.scale(x),
                   "official vs full MMD² − teacher term")


@guarantee("paper = kdzoo / 2", "nst_loss/paper")
def paper_is_half_of_kdzoo(loss, x) -> float:
    """The paper's λ/2 · MMD² is half the libraries' λ · MMD², in value and gradient."""
    kdzoo = loss.variant(convention="kdzoo")
    ratio = compare(loss(**x), kdzoo(**x) / 2, EXACT, loss.scale(x), "paper vs kdzoo / 2")
    return max(ratio, compare(loss.grad("student", **x), kdzoo.grad("student", **x) / 2, FD_GRADIENT, loss.scale(x),
                              "gradient paper vs kdzoo / 2"))


@guarantee("official gradient = N · kdzoo gradient", "nst_loss/official")
def official_gradient_is_n_times_kdzoo(loss, x) -> float:
    """The dropped teacher term is a constant: the official gradient is N · the batch-mean full MMD²'s
    (the ε rules differ by ~ε/‖f‖², invisible at these norms)."""
    expected = loss.variant(convention="kdzoo").grad("student", **x) * x["student"].shape[0]
    return compare(loss.grad("student", **x), expected, FD_GRADIENT, loss.scale(x), "official gradient vs N · kdzoo")


@guarantee("linear kernel = mean-map distance", *_FULL_MMD)
def linear_kernel_is_mean_map_distance(loss, x) -> float:
    """Linear kernel: MMD² = ‖Σ w_i x^i − Σ v_j y^j‖², the distance of the mean normalised maps."""
    linear = _per_example(x, kernel="linear")
    t, w, s, v = _samples(loss, linear)
    expected = np.sum((np.einsum("ni,nim->nm", w, t) - np.einsum("nj,njm->nm", v, s)) ** 2, axis=-1)
    return compare(loss(**linear), expected, EXACT, loss.scale(linear), "linear MMD² vs mean-map distance")


@guarantee("poly-2 = spatial Gram distance", *_FULL_MMD)
def poly2_is_spatial_gram_distance(loss, x) -> float:
    """Polynomial kernel d = 2, c = 0: MMD² = ‖G_T − G_S‖²_F with the HW × HW Gram matrices
    G = Σ_i w_i x^i x^iᵀ (G_T/C_T and G_S/C_S for the plain means)."""
    poly = _per_example(x, kernel="poly", c=0.0, d=2)
    t, w, s, v = _samples(loss, poly)
    g_t, g_s = np.einsum("ni,nim,nil->nml", w, t, t), np.einsum("nj,njm,njl->nml", v, s, s)
    return compare(loss(**poly), np.sum((g_t - g_s) ** 2, axis=(1, 2)), EXACT, loss.scale(poly),
                   "poly-2 MMD² vs ‖G_T − G_S‖²")


@guarantee("batch of examples", "nst_loss/*")
def batch_of_examples(loss, x) -> float:
    """MMD² is a statistic of each example alone: the per-example losses of a batch are the losses
    of its examples on their own (a batch of one is fine)."""
    def alone(i):
        sigma2 = x.get("sigma2")
        one = {"sigma2": sigma2[i:i + 1]} if isinstance(sigma2, np.ndarray) else {}
        return loss(**{**x, "student": x["student"][i:i + 1], "teacher": x["teacher"][i:i + 1], **one})

    singles = np.concatenate([np.reshape(alone(i), 1) for i in range(x["student"].shape[0])])
    return compare(loss(**{**x, "reduction": "none"}), singles, EXACT, loss.scale(x),
                   "per-example losses vs losses of single examples (mean or sum of one)")


@guarantee("drop a zero channel = delete it", "nst_loss/*")
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


@guarantee("multi = Σ w_j · pair_j", "nst_loss_multi/*")
def multi_is_weighted_sum(loss, x) -> float:
    """nst_loss_multi = Σ_j w_j · nst_loss(pair j), every knob applied to every pair."""
    single = loss.variant(loss="nst_loss")
    common = {k: v for k, v in x.items() if k not in ("students", "teachers", "weights")}
    weights = x.get("weights") or [1.0] * len(x["students"])
    total = sum(w * single(student=s, teacher=t, **common)
                for w, s, t in zip(weights, x["students"], x["teachers"], strict=True))
    return compare(loss(**x), total, EXACT, loss.scale(x), "multi-layer loss vs weighted sum of pairs")


METHOD = Method(
    name="nst",
    title="NST — neuron selectivity transfer",
    citation="Huang, Wang. Like What You Like: Knowledge Distill via Neuron Selectivity Transfer. "
             "arXiv:1707.01219, 2017.",
    family="features",
    losses=(Loss(ref.nst_loss, by_gradient(nst_inputs)),
            Loss(ref.nst_loss_multi, by_gradient(nst_multi_inputs), differentiable=("students",))),
    properties=(dataclasses.replace(ZERO_AT_MATCH, cases=_FULL_MMD), mmd2_nonnegative,
                symmetric_in_student_and_teacher, channel_rescaling_invariance, official_is_full_minus_teacher_term,
                paper_is_half_of_kdzoo, official_gradient_is_n_times_kdzoo, linear_kernel_is_mean_map_distance,
                poly2_is_spatial_gram_distance, batch_of_examples, dropping_a_zero_channel_is_deleting_it,
                multi_is_weighted_sum),
    error_scale=_scale,
)
