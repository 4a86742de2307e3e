"""The registry record of RKD (relational knowledge distillation), with the properties its math guarantees."""

from __future__ import annotations

import numpy as np

from kdref.proof import compare
from kdref.records._shared import PERMUTATION_INVARIANT, ZERO_AT_MATCH
from kdref.reference import rkd as ref
from kdref.registry import EXACT, Loss, Method, Tolerance, guarantee
from kdref.strategies.rkd import conditioning, rkd_inputs


def _scale(inputs, convention) -> float:
    """Rounding error of the loss, per unit of ε: each Huber term is off by about κ·ε (κ: how much
    closer two samples are to each other than to the batch mean, see :func:`conditioning`), and a
    sum adds up to N³ of them (a mean, one); the weights of ``rkd_loss`` multiply."""
    reduction = inputs.get("reduction") or ref.RKD_LOSS.resolve(convention)["reduction"]
    terms = float(len(inputs["student"])) ** 3 if reduction == "sum" else 1.0
    weights = inputs.get("w_dist", 1.0) + inputs.get("w_angle", 2.0)
    return (1.0 + weights) * terms * max(conditioning(inputs["student"]), conditioning(inputs["teacher"]))


def _declared(loss, x) -> dict:
    """``x`` without the knobs ``loss`` does not declare (the angle term has no distance knobs)."""
    return {k: v for k, v in x.items() if k in {a.name for a in loss.loss.args} | set(loss.loss.conventions.defaults)}


@guarantee("invariant to translation, rotation and scaling")
def invariant_to_similarity_transforms(loss, x) -> float:
    """Both potentials are unchanged by translating, rotating or uniformly scaling either batch, so
    the loss is too (with exact distances: the official clamp puts coincident samples 1e-6 apart, a
    length that scaling moves). The batch is centred, rotated and scaled, then shifted by a few times its spread."""
    x = _declared(loss, {**x, "clamp_sq": 0.0})
    rng = np.random.default_rng(len(x["student"]))
    expected, scale, worst = loss(**x), loss.scale(x), 0.0
    for which in ("student", "teacher"):
        flat = x[which].reshape(len(x[which]), -1)
        # a shift of a few spreads: a shift far beyond the spread rounds the differences away
        centred = flat - flat.mean(axis=0)
        shift = np.max(np.abs(centred)) * rng.uniform(-5, 5, flat.shape[1])
        q, r = np.linalg.qr(rng.standard_normal((flat.shape[1],) * 2))
        moved = rng.uniform(0.5, 4.0) * centred @ (q * np.sign(np.diag(r))) + shift
        worst = max(worst, compare(loss(**{**x, which: moved}), expected, Tolerance(1e-8, 1e-12), scale,
                                   f"loss after moving the {which} batch by a similarity transform"))
    return worst


@guarantee("official = paper / N² (distance), / N³ (angle)",
           *(f"rkd_{term}_loss/{c}" for term in ("distance", "angle") for c in ("official", "kdzoo", "*distill*")))
def official_is_paper_over_n_power(loss, x) -> float:
    """With no coincident samples (the gradient draws), the official mean over all N² pairs / N³
    triplets is the paper's sum divided by N² / N³: the extra entries are 0 in both networks (i = j)
    or 1 in both (i = k)."""
    power = 2 if loss.loss.name == "rkd_distance_loss" else 3
    n_power, plain = len(x["student"]) ** power, {"student": x["student"], "teacher": x["teacher"]}
    paper = loss.variant(convention="paper")
    return compare(loss(**plain), paper(**plain) / n_power, EXACT, paper.scale(plain) / n_power,
                   f"official vs paper / N^{power}")


@guarantee("rkd_loss = weighted terms", "rkd_loss/*")
def weighted_sum_of_the_terms(loss, x) -> float:
    """``rkd_loss`` is ``w_dist · rkd_distance_loss + w_angle · rkd_angle_loss`` with the same knobs."""
    knobs = {k: v for k, v in x.items() if k not in ("w_dist", "w_angle")}
    w_dist, w_angle = x.get("w_dist", 1.0), x.get("w_angle", 2.0)
    distance, angle = loss.variant("rkd_distance_loss"), loss.variant("rkd_angle_loss")
    expected = w_dist * distance(**knobs)
    if w_angle > 0:
        expected = expected + w_angle * angle(**_declared(angle, knobs))
    return compare(loss(**x), expected, EXACT, loss.scale(x), "rkd_loss vs its weighted terms")


def _loss(fn) -> Loss:
    return Loss(fn, lambda convention, gradient: rkd_inputs(fn.__name__, convention, gradient=gradient))


METHOD = Method(
    name="rkd",
    title="RKD — relational knowledge distillation",
    citation="Park, Kim, Lu, Cho. Relational Knowledge Distillation. CVPR 2019, pp. 3967–3976. arXiv:1904.05068.",
    family="relations",
    losses=tuple(_loss(fn) for fn in (ref.rkd_distance_loss, ref.rkd_angle_loss, ref.rkd_loss)),
    properties=(
        PERMUTATION_INVARIANT,
        ZERO_AT_MATCH,
        invariant_to_similarity_transforms,
        official_is_paper_over_n_power,
        weighted_sum_of_the_terms,
    ),
    error_scale=_scale,
)
