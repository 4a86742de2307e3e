"""The registry record of PKT (probabilistic knowledge transfer), with the properties its math guarantees."""

from __future__ import annotations

import numpy as np

from kdref.proof import compare
from kdref.records._shared import PERMUTATION_INVARIANT, ZERO_AT_MATCH
from kdref.reference import pkt as ref
from kdref.registry import EXACT, FD_GRADIENT, Loss, Method, Property, Tolerance
from kdref.strategies.pkt import pkt_inputs

_KNOBS = tuple(k.name for k in ref.PKT_LOSS.knobs)
_WITH_SELF = ("pkt_loss/official", "pkt_loss/kdzoo", "pkt_loss/*distill*")


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], -1)


def _smallest_kernel(x: np.ndarray) -> float:
    """The smallest off-diagonal cosine-kernel value of a batch (zero rows count as K = ½)."""
    flat = _flat(x)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    unit = flat / np.where(norms > 0, norms, 1.0)
    kernel = (np.clip(unit @ unit.T, -1.0, 1.0) + 1.0) / 2.0
    off = kernel[~np.eye(len(flat), dtype=bool)]
    return float(np.min(off, initial=1.0))


def _scale(inputs, convention) -> float:
    """The size of the summed terms (N² of them, or one for a mean over them), times the conditioning
    of their logs: a rounding error δ in a kernel value K moves log K by δ/K, so the smallest kernel
    value of either side enters."""
    n = inputs["student"].shape[0]
    knobs = ref.PKT_LOSS.resolve(convention, **{k: v for k, v in inputs.items() if k in _KNOBS})
    terms = 1.0 if knobs["reduction"] == "mean" else float(n * n)
    smallest = min(_smallest_kernel(inputs["student"]), _smallest_kernel(inputs["teacher"]))
    return terms * (1.0 + 1.0 / max(smallest, 1e-300))


def _knobs(loss, x) -> dict:
    overrides = {k: v for k, v in x.items() if k in _KNOBS}
    return dict(loss.loss.declaration.resolve(loss.convention, **overrides))


def _without(x, *keys) -> dict:
    return {k: v for k, v in x.items() if k not in keys}


def _exact_inputs(convention: str):
    """Inputs on which every convention can be evaluated with ε = 0 and without the self-pairs:
    N ≥ 2, no zero row, rows of norm ≥ 0.25."""
    return pkt_inputs("paper", gradient=True)


def _value_inputs(convention: str):
    """The value draws of the convention (duplicates, a collapsed batch, all-zero rows where ε > 0, a
    large offset, N = 1, 2, 3), without knobs: for properties that need no gradient."""
    return pkt_inputs(convention, knobs=False)


def reductions_agree(loss, x) -> float:
    """The reductions are one set of terms reduced three ways: the per-anchor KLs ("none") sum to
    "sum", and "mean" divides "sum" by the number of terms, N(N−1) without the self-pairs, N² with."""
    base = _without(x, "reduction")
    total = loss(**base, reduction="sum")
    scale = loss.scale(x)
    count = ref.pair_count(x["student"].shape[0], _knobs(loss, base)["include_self"])
    ratio = compare(np.sum(loss(**base, reduction="none")), total, EXACT, scale, '"none" summed vs "sum"')
    return max(ratio, compare(loss(**base, reduction="mean") * count, total, EXACT, scale,
                              '"mean" × number of terms vs "sum"'))


def self_pair_chain_rule(loss, x) -> float:
    """With ε = 0 the self-pair has K_ii = 1, and keeping it is the chain rule of the KL divergence:
    for each anchor, KL(P_i‖Q_i) = kl(a_i‖b_i) + (1 − a_i)·KL(p_{·|i}‖q_{·|i}), where a_i = P_ii and
    b_i = Q_ii are the self-pair probabilities, kl is the KL divergence of two coins and the last KL
    is the paper's anchor term. So the self-pair rule is no constant factor, and a loss that drops
    or keeps the self-pairs against its convention breaks the identity."""
    exact = {**_without(x, "reduction"), "eps": 0.0, "reduction": "none"}
    if _knobs(loss, x)["include_self"]:
        with_self, paper = loss(**exact), loss.variant(convention="paper")(**exact)
    else:
        with_self, paper = loss.variant(convention="official")(**exact), loss(**exact)

    def self_probability(z):
        kernel = ref.cosine_kernel(_flat(z))
        return np.diag(kernel) / np.sum(kernel, axis=1)

    a, b = self_probability(x["teacher"]), self_probability(x["student"])
    coin = a * np.log(a / b) + (1 - a) * np.log((1 - a) / (1 - b))
    return compare(with_self, coin + (1 - a) * paper, EXACT, loss.scale(x),
                   "self-pairs kept vs chain rule")


def kl_nonnegative(loss, x) -> float:
    """Each anchor's term is a KL divergence between two distributions, hence ≥ 0 (with ε = 0; the
    official ε can push a term below 0 by O(ε))."""
    value = np.min(loss(**{**_without(x, "reduction"), "eps": 0.0, "reduction": "none"}))
    if value < -EXACT.atol * loss.scale(x):
        raise AssertionError(f"negative anchor KL {value}")
    return 0.0


def batch_of_two_is_zero(loss, x) -> float:
    """Without the self-pairs a batch of two has one neighbour per anchor, with p = q = 1: the loss
    and its gradient are 0 whatever the embeddings, under every ε."""
    two = {**x, "include_self": False}
    scale = loss.scale(x)
    ratio = compare(loss(**two), 0 * loss(**two), EXACT, scale, "loss of a batch of two")
    return max(ratio, compare(loss.grad("student", **two), 0 * x["student"], FD_GRADIENT, scale,
                              "gradient for a batch of two"))


def zero_at_match_with_eps(loss, x) -> float:
    """Student = teacher gives P = Q: the loss is 0 under the convention's own ε. Its gradient is
    O(ε) there (the weights P/(P+ε) do not sum to 1), and exactly 0 once ε = 0."""
    at_match = {**x, "student": x["teacher"].copy()}
    scale = loss.scale(at_match)
    ratio = compare(loss(**at_match), 0 * loss(**at_match), EXACT, scale, "loss at a match")
    return max(ratio, compare(loss.grad("student", **at_match, eps=0.0), 0 * at_match["student"], FD_GRADIENT, scale,
                              "gradient at a match, ε = 0"))


def isometry_invariant(loss, x) -> float:
    """Only inner products between the samples of one side enter the kernel: mapping either side
    isometrically into a wider space, z ↦ [z, 0]·R with R orthogonal, leaves the loss unchanged."""
    rng = np.random.default_rng(7)
    worst = 0.0
    expected = loss(**x)
    for which in ("student", "teacher"):
        flat = _flat(x[which])
        rotation, _ = np.linalg.qr(rng.normal(size=(flat.shape[1] + 1, flat.shape[1] + 1)))
        moved = np.concatenate([flat, np.zeros((flat.shape[0], 1))], axis=1) @ rotation
        worst = max(worst, compare(loss(**{**x, which: moved}), expected, EXACT, loss.scale(x),
                                   f"loss after an isometry of the {which}"))
    return worst


def rescaling_invariant(loss, x) -> float:
    """The exact cosine kernel sees directions only: multiplying each sample of either side by its
    own positive number changes nothing, hence ⟨∂L/∂y_i, y_i⟩ = 0 for every student sample."""
    rng = np.random.default_rng(11)
    n = x["student"].shape[0]
    worst = 0.0
    expected = loss(**x)
    for which in ("student", "teacher"):
        factors = rng.uniform(0.2, 5.0, size=(n,) + (1,) * (x[which].ndim - 1))
        worst = max(worst, compare(loss(**{**x, which: x[which] * factors}), expected, EXACT,
                                   loss.scale(x), f"loss after rescaling each {which} sample"))
    terms = _flat(loss.grad("student", **x) * x["student"])
    radial = np.sum(terms, axis=1)
    bound = FD_GRADIENT.rtol * float(np.max(np.sum(np.abs(terms), axis=1))) + FD_GRADIENT.atol * loss.scale(x)
    return max(worst, compare(radial, 0 * radial, Tolerance(0.0, 1.0), bound, "⟨∂L/∂y_i, y_i⟩ per sample"))


METHOD = Method(
    name="pkt",
    title="PKT — probabilistic knowledge transfer",
    citation="Passalis, Tefas. Learning Deep Representations with Probabilistic Knowledge Transfer. ECCV 2018.",
    family="relations",
    losses=(
        Loss(ref.pkt_loss, lambda convention, gradient: pkt_inputs(convention, gradient=gradient)),
    ),
    properties=(
        Property(PERMUTATION_INVARIANT.name, PERMUTATION_INVARIANT.description, PERMUTATION_INVARIANT.check,
                 inputs=_value_inputs),
        Property(ZERO_AT_MATCH.name, ZERO_AT_MATCH.description, ZERO_AT_MATCH.check, ("pkt_loss/paper",)),
        Property("zero at a match (ε > 0)", zero_at_match_with_eps.__doc__, zero_at_match_with_eps, _WITH_SELF),
        Property("reductions agree", reductions_agree.__doc__, reductions_agree, inputs=_value_inputs),
        Property("self-pair chain rule", self_pair_chain_rule.__doc__, self_pair_chain_rule,
                 inputs=_exact_inputs),
        Property("KL ≥ 0 per anchor", kl_nonnegative.__doc__, kl_nonnegative, inputs=_exact_inputs),
        Property("a batch of two is 0 without self-pairs", batch_of_two_is_zero.__doc__, batch_of_two_is_zero,
                 inputs=lambda convention: pkt_inputs("paper", gradient=True, min_n=2, max_n=2)),
        Property("isometry invariant", isometry_invariant.__doc__, isometry_invariant, inputs=_value_inputs),
        Property("per-sample rescaling invariant", rescaling_invariant.__doc__, rescaling_invariant,
                 ("pkt_loss/paper",)),
    ),
    error_scale=_scale,
)
