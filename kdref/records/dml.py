"""The registry record of DML (Deep Mutual Learning), with its properties."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as hst

from kdref import strategies
from kdref.proof import compare, max_abs
from kdref.records._shared import REDUCTIONS_AGREE
from kdref.reference import dml as ref
from kdref.reference._common import log_softmax, softmax
from kdref.registry import EXACT, FD_GRADIENT, Loss, Method, Tolerance, guarantee


def _scale(inputs, convention) -> float:
    return (1.0 + max_abs(inputs)) * len(inputs["z_peers"])


def _loss(fn, with_labels: bool = False) -> Loss:
    def inputs(convention: str, gradient: bool):
        single = fn.declaration.resolve(convention).get("single_peer", False)
        return strategies.dml_inputs(gradient=gradient, with_labels=with_labels, max_peers=1 if single else 3)
    return Loss(fn, inputs, differentiable=("z_self",))


def _epsilon_allowance(loss, x) -> float:
    """How far the official formula's ε terms move a KL: Σ_c p_c[log(p_c+ε) − log(q_c+ε)] differs from
    Σ_c p_c log(p_c/q_c) by ≈ ε Σ_c (1 − p_c/q_c), so by at most ε Σ_c (1 + p_c/q_c + q_c/p_c) per
    sample and peer (either network's probabilities in either role); twice that, summed over the
    peers, at the worst sample."""
    epsilon = loss.loss.declaration.resolve(loss.convention).get("epsilon", 0.0)  # DML_e has no ε
    q = softmax(x["z_self"])
    bound = sum(np.max(np.sum(1 + p / q + q / p, axis=1)) for p in (softmax(z) for z in x["z_peers"]))
    return 2 * epsilon * float(bound)


@guarantee("zero when peers agree")
def zero_when_peers_equal_self(loss, x) -> float:
    """Peers that predict what the network predicts add nothing: the mimicry term is 0."""
    agreeing = {**x, "z_peers": [x["z_self"].copy() for _ in x["z_peers"]]}
    bound = 1e-12 * loss.scale(x) + _epsilon_allowance(loss, x)
    if loss.loss.name == "dml_network_loss":
        cross_entropy = loss(**{**x, "z_peers": [x["z_self"]]})
        return compare(loss(**agreeing), cross_entropy, Tolerance(1e-9, 1.0), bound, "CE + zero mimicry")
    return compare(loss(**agreeing), 0.0, Tolerance(0, 1.0), bound, "mimicry with agreeing peers")


@guarantee("gradient = (p_k − p̄)/B", "dml_mimicry_loss/paper", "dml_mimicry_loss/kdzoo")
def mimicry_gradient(loss, x) -> float:
    """∂/∂z_k of the batch-mean eq. 6 term is (p_k − mean_l p_l)/B: peers are constants."""
    p_peers = np.mean([softmax(z) for z in x["z_peers"]], axis=0)
    expected = (softmax(x["z_self"]) - p_peers) / x["z_self"].shape[0]
    return compare(loss.grad("z_self", **x), expected, FD_GRADIENT, loss.scale(x), "gradient")


@guarantee("K = 2: kdzoo = paper", "*/kdzoo")
def two_networks_equal_paper(loss, x) -> float:
    """With one peer (K = 2) KD-Zoo's DML is eq. 6 exactly."""
    return compare(loss(**x), loss.variant(convention="paper")(**x), Tolerance(1e-12, 1e-14), loss.scale(x),
                   "kdzoo vs paper")


_MODERATE = strategies.logits(4, 5, max_magnitude=10).map(lambda z: z * 0.3)


@guarantee("official = (K−1) × paper", "dml_mimicry_loss/official_tf", inputs=lambda convention: hst.fixed_dictionaries(
    {"z_self": _MODERATE, "z_peers": hst.lists(_MODERATE, min_size=1, max_size=3)}))
def official_sums_over_peers(loss, x) -> float:
    """Away from ε-saturation the official code is (K − 1) × eq. 6: it sums where the paper averages."""
    paper = loss.variant(convention="paper")
    return compare(loss(**x), len(x["z_peers"]) * paper(**x), Tolerance(1e-6, 1.0),
                   1e-9 + _epsilon_allowance(loss, x), "official vs (K−1)·paper")


@guarantee("DML_e ≤ mean over peers", "dml_ensemble_mimicry_loss/*")
def ensemble_below_average(loss, x) -> float:
    """KL is convex in its first argument, so KL(mean_l p_l ‖ p_k) ≤ mean_l KL(p_l ‖ p_k)."""
    average, value = loss.variant(loss="dml_mimicry_loss", convention="paper")(**x), loss(**x)
    if value > average + 1e-12 * loss.scale(x):
        raise AssertionError(f"DML_e {value} exceeds the mean over peers {average}")
    return 0.0


@guarantee("network = CE + mimicry", "dml_network_loss/*")
def network_is_ce_plus_mimicry(loss, x) -> float:
    """L_Θk = L_Ck + mimicry: the network loss is eq. 2's cross-entropy (batch mean) plus the
    mimicry term of the same convention."""
    mimicry = loss.variant(loss="dml_mimicry_loss")(z_self=x["z_self"], z_peers=x["z_peers"])
    cross_entropy = -np.mean(log_softmax(x["z_self"])[np.arange(len(x["labels"])), x["labels"]])
    return compare(loss(**x), cross_entropy + mimicry, EXACT, loss.scale(x), "CE + mimicry")


METHOD = Method(
    name="dml",
    title="DML — deep mutual learning",
    citation="Zhang, Xiang, Hospedales, Lu. Deep Mutual Learning. CVPR 2018, pp. 4320–4328.",
    family="logits",
    losses=(_loss(ref.dml_mimicry_loss), _loss(ref.dml_network_loss, with_labels=True),
            _loss(ref.dml_ensemble_mimicry_loss)),
    properties=(zero_when_peers_equal_self, mimicry_gradient, two_networks_equal_paper, official_sums_over_peers,
                ensemble_below_average, network_is_ce_plus_mimicry, REDUCTIONS_AGREE),
    error_scale=_scale,
)
