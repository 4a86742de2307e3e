"""The registry record of PKT (probabilistic knowledge transfer), with the properties its math guarantees."""

from __future__ import annotations

import dataclasses

import numpy as np

from kdref.proof import compare
from kdref.records._shared import PERMUTATION_INVARIANT, ZERO_AT_MATCH
from kdref.reference import pkt as ref
from kdref.registry import EXACT, FD_GRADIENT, Loss, Method, Tolerance, guarantee
from kdref.strategies.pkt import pkt_inputs


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], -1)


def _knobs(convention: str, x) -> dict:
    return dict(ref.PKT_LOSS.resolve(convention, **{k.name: x.get(k.name) for k in ref.PKT_LOSS.knobs}))


def _scale(inputs, convention) -> float:
    """The size of the summed terms (N² of them, or one for a mean over them), times the conditioning
    of their logs: a rounding error δ in a kernel value K moves log K by δ/K, so the smallest
    off-diagonal kernel value of either side enters (a zero row counts as K = ½)."""
    terms = 1.0 if _knobs(convention, inputs)["reduction"] == "mean" else float(len(inputs["student"]) ** 2)
    smallest = min(float(np.min(ref.cosine_kernel(_flat(x), 1e-300)[~np.eye(len(x), dtype=bool)], initial=1.0))
                   for x in (inputs["student"], inputs["teacher"]))
    return terms * (1.0 + 1.0 / max(smallest, 1e-300))


def _exact_inputs(convention: str):
    """Inputs on which every convention can be evaluated with ε = 0 and without the self-pairs:
    N ≥ 2, no zero row, rows of norm ≥ 0.25."""
    return pkt_inputs("paper", gradient=True)


def _value_inputs(convention: str):
    """The value draws of the convention (duplicates, a collapsed batch, all-zero rows where ε > 0, a
    large offset, N = 1, 2, 3), without knobs: for properties that need no gradient."""
    return pkt_inputs(convention, knobs=False)


@guarantee("reductions agree", inputs=_value_inputs)
def reductions_agree(loss, x) -> float:
    """The reductions are one set of terms reduced three ways: the per-anchor KLs ("none") sum to
    "sum", and "mean" divides "sum" by the number of terms, N(N−1) without the self-pairs, N² with."""
    total, scale = loss(**{**x, "reduction": "sum"}), loss.scale(x)
    count = ref.pair_count(len(x["student"]), _knobs(loss.convention, x)["include_self"])
    ratio = compare(np.sum(loss(**{**x, "reduction": "none"})), total, EXACT, scale, '"none" summed vs "sum"')
    return max(ratio, compare(loss(**{**x, "reduction": "mean"}) * count, total, EXACT, scale,
                              '"mean" × number of terms vs "sum"'))


@guarantee("self-pair chain rule, KL ≥ 0 per anchor", inputs=_exact_inputs)
def self_pair_chain_rule(loss, x) -> float:
    """With ε = 0 each anchor's term is a KL divergence, hence ≥ 0 (the official ε can push a term
    below 0 by O(ε)), and the self-pair has K_ii = 1: keeping it is the chain rule of the KL divergence,
    KL(P_i‖Q_i) = kl(a_i‖b_i) + (1 − a_i)·KL(p_{·|i}‖q_{·|i}), where a_i = P_ii and b_i = Q_ii are
    the self-pair probabilities, kl is the KL divergence of two coins and the last KL is the paper's
    anchor term. So the self-pair rule is no constant factor, and a loss that drops or keeps the
    self-pairs against its convention breaks the identity."""
    exact = {**x, "eps": 0.0, "reduction": "none"}
    if _knobs(loss.convention, x)["include_self"]:
        with_self, paper = loss(**exact), loss.variant(convention="paper")(**exact)
    else:
        with_self, paper = loss.variant(convention="official")(**exact), loss(**exact)
    if min(np.min(with_self), np.min(paper)) < -EXACT.atol * loss.scale(x):
        raise AssertionError(f"negative anchor KL: {with_self}, {paper}")
    a, b = (np.diag(K) / np.sum(K, axis=1) for K in (ref.cosine_kernel(_flat(x[w])) for w in ("teacher", "student")))
    coin = a * np.log(a / b) + (1 - a) * np.log((1 - a) / (1 - b))
    return compare(with_self, coin + (1 - a) * paper, EXACT, loss.scale(x), "self-pairs kept vs chain rule")


@guarantee("a batch of two is 0 without self-pairs",
           inputs=lambda convention: pkt_inputs("paper", gradient=True, min_n=2, max_n=2))
def batch_of_two_is_zero(loss, x) -> float:
    """Without the self-pairs a batch of two has one neighbour per anchor, with p = q = 1: the loss
    and its gradient are 0 whatever the embeddings, under every ε."""
    two, scale = {**x, "include_self": False}, loss.scale(x)
    ratio = compare(loss(**two), 0 * loss(**two), EXACT, scale, "loss of a batch of two")
    return max(ratio, compare(loss.grad("student", **two), 0 * x["student"], FD_GRADIENT, scale,
                              "gradient for a batch of two"))


@guarantee("zero at a match (ε > 0)", "pkt_loss/official", "pkt_loss/kdzoo", "pkt_loss/*distill*")
def zero_at_match_with_eps(loss, x) -> float:
    """Student = teacher gives P = Q: the loss is 0 under the convention's own ε. Its gradient is
    O(ε) there (the weights P/(P+ε) do not sum to 1), and exactly 0 once ε = 0."""
    at_match = {**x, "student": x["teacher"].copy()}
    scale = loss.scale(at_match)
    ratio = compare(loss(**at_match), 0 * loss(**at_match), EXACT, scale, "loss at a match")
    return max(ratio, compare(loss.grad("student", **at_match, eps=0.0), 0 * at_match["student"], FD_GRADIENT, scale,
                              "gradient at a match, ε = 0"))


def _each_side(loss, x, move, what: str) -> float:
    """The worst deviation of the loss after ``move(flat array, which)`` of the student, then of the teacher."""
    expected = loss(**x)
    return max(compare(loss(**{**x, which: move(x[which], which)}), expected, EXACT, loss.scale(x),
                       f"loss after {what} of the {which}") for which in ("student", "teacher"))


@guarantee("isometry invariant", inputs=_value_inputs)
def isometry_invariant(loss, x) -> float:
    """Only inner products between the samples of one side enter the kernel: mapping either side
    isometrically into a wider space, z ↦ [z, 0]·R with R orthogonal, leaves the loss unchanged."""
    rng = np.random.default_rng(7)

    def isometry(z, which):
        flat = _flat(z)
        rotation, _ = np.linalg.qr(rng.normal(size=(flat.shape[1] + 1, flat.shape[1] + 1)))
        return np.concatenate([flat, np.zeros((flat.shape[0], 1))], axis=1) @ rotation

    return _each_side(loss, x, isometry, "an isometry")


@guarantee("per-sample rescaling invariant", "pkt_loss/paper")
def rescaling_invariant(loss, x) -> float:
    """The exact cosine kernel sees directions only: multiplying each sample of either side by its
    own positive number changes nothing, hence ⟨∂L/∂y_i, y_i⟩ = 0 for every student sample."""
    rng = np.random.default_rng(11)
    worst = _each_side(loss, x, lambda z, which: z * rng.uniform(0.2, 5.0, size=(len(z),) + (1,) * (z.ndim - 1)),
                       "rescaling each sample")
    terms = _flat(loss.grad("student", **x) * x["student"])
    radial = np.sum(terms, axis=1)
    bound = FD_GRADIENT.rtol * float(np.max(np.sum(np.abs(terms), axis=1))) + FD_GRADIENT.atol * loss.scale(x)
    return max(worst, compare(radial, 0 * radial, Tolerance(0.0, 1.0), bound, "⟨∂L/∂y_i, y_i⟩ per sample"))


METHOD = Method(
    name="pkt",
    title="PKT — probabilistic knowledge transfer",
    citation="Passalis, Tefas. Learning Deep Representations with Probabilistic Knowledge Transfer. ECCV 2018.",
    family="relations",
    losses=(Loss(ref.pkt_loss, lambda convention, gradient: pkt_inputs(convention, gradient=gradient)),),
    properties=(
        dataclasses.replace(PERMUTATION_INVARIANT, inputs=_value_inputs),
        dataclasses.replace(ZERO_AT_MATCH, cases=("pkt_loss/paper",)),
        zero_at_match_with_eps,
        reductions_agree,
        self_pair_chain_rule,
        batch_of_two_is_zero,
        isometry_invariant,
        rescaling_invariant,
    ),
    error_scale=_scale,
)
