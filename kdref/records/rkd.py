"""The registry record of RKD (relational knowledge distillation), with the properties its math guarantees."""

from __future__ import annotations

import dataclasses

import numpy as np

from kdref.proof import compare
from kdref.records._shared import PERMUTATION_INVARIANT, ZERO_AT_MATCH
from kdref.reference import rkd as ref
from kdref.registry import EXACT, Loss, Method, Property, Tolerance
from kdref.strategies.rkd import conditioning, rkd_inputs

#: every knob of the RKD losses (the distance term's; the angle term has a subset)
_KNOBS = tuple(k.name for k in ref.RKD_LOSS.knobs)


def _knobs(x, convention) -> dict:
    return dict(ref.RKD_LOSS.resolve(convention, **{k: v for k, v in x.items() if k in _KNOBS}))


def _accepted(loss, x) -> dict:
    """``x`` without the knobs ``loss`` does not declare (the angle term has no distance knobs)."""
    declared = {a.name for a in loss.loss.args} | {k.name for k in loss.loss.declaration.knobs}
    return {k: v for k, v in x.items() if k in declared}


def _scale(inputs, convention) -> float:
    """Rounding error of the loss, per unit of ε: each Huber term is off by about κ·ε (κ: how much
    closer two samples are to each other than to the batch mean, see :func:`conditioning`), and a
    sum adds up to N³ of them (a mean, one); the weights of ``rkd_loss`` multiply."""
    knobs = _knobs(inputs, convention)
    n = len(inputs["student"])
    terms = float(n) ** 3 if knobs["reduction"] == "sum" else 1.0
    weights = inputs.get("w_dist", 1.0) + inputs.get("w_angle", 2.0)
    kappa = max(conditioning(inputs["student"]), conditioning(inputs["teacher"]))
    return (1.0 + weights) * terms * kappa


def _rotation(d: int, rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def invariant_to_similarity_transforms(loss, x) -> float:
    """Both potentials are unchanged by translating, rotating or uniformly scaling either batch, so
    the loss is too (with exact distances: the official clamp puts coincident samples 1e-6 apart, a
    length that scaling moves). The batch is centred, rotated and scaled, then shifted by a few times its spread."""
    x = _accepted(loss, {**x, "clamp_sq": 0.0})
    rng = np.random.default_rng(len(x["student"]))
    expected = loss(**x)
    scale = loss.scale(x)
    worst = 0.0
    for which in ("student", "teacher"):
        flat = x[which].reshape(len(x[which]), -1)
        # a shift of a few spreads: a shift far beyond the spread rounds the differences away
        centred = flat - flat.mean(axis=0)
        shift = np.max(np.abs(centred)) * rng.uniform(-5, 5, flat.shape[1])
        moved = rng.uniform(0.5, 4.0) * centred @ _rotation(flat.shape[1], rng) + shift
        worst = max(worst, compare(loss(**{**x, which: moved}), expected, Tolerance(1e-8, 1e-12), scale,
                                   f"loss after moving the {which} batch by a similarity transform"))
    return worst


def official_is_paper_over_n_power(loss, x) -> float:
    """With no coincident samples, the official mean over all N² pairs / N³ triplets is the paper's
    sum divided by N² / N³: the extra entries are 0 in both networks (i = j) or 1 in both (i = k)."""
    n = len(x["student"])
    power = 2 if loss.loss.name == "rkd_distance_loss" else 3
    plain = {k: v for k, v in x.items() if k not in _KNOBS}
    paper = loss.variant(convention="paper")
    return compare(loss(**plain), paper(**plain) / n**power, EXACT, paper.scale(plain) / n**power,
                   f"official vs paper / N^{power}")


def weighted_sum_of_the_terms(loss, x) -> float:
    """``rkd_loss`` is ``w_dist · rkd_distance_loss + w_angle · rkd_angle_loss`` with the same knobs."""
    knobs = {k: v for k, v in x.items() if k not in ("w_dist", "w_angle")}
    w_dist, w_angle = x.get("w_dist", 1.0), x.get("w_angle", 2.0)
    distance, angle = loss.variant("rkd_distance_loss"), loss.variant("rkd_angle_loss")
    expected = w_dist * distance(**knobs)
    if w_angle > 0:
        expected = expected + w_angle * angle(**_accepted(angle, knobs))
    return compare(loss(**x), expected, EXACT, loss.scale(x), "rkd_loss vs its weighted terms")


def _inputs(name: str, min_n: int):
    return lambda convention, gradient: rkd_inputs(name, convention, min_n=min_n, gradient=gradient)


def _smooth(name: str, min_n: int):
    """Draws without coincident samples: the points where a gradient exists and where the
    conventions differ only by their reductions."""
    return lambda convention: rkd_inputs(name, convention, min_n=min_n, gradient=True)


METHOD = Method(
    name="rkd",
    title="RKD — relational knowledge distillation",
    citation="Park, Kim, Lu, Cho. Relational Knowledge Distillation. CVPR 2019, pp. 3967–3976. arXiv:1904.05068.",
    family="relations",
    losses=(
        Loss(ref.rkd_distance_loss, _inputs("rkd_distance_loss", 2)),
        Loss(ref.rkd_angle_loss, _inputs("rkd_angle_loss", 1)),
        Loss(ref.rkd_loss, _inputs("rkd_loss", 2)),
    ),
    properties=(
        PERMUTATION_INVARIANT,
        *(dataclasses.replace(ZERO_AT_MATCH, cases=(f"{name}/*",), inputs=_smooth(name, min_n))
          for name, min_n in (("rkd_distance_loss", 2), ("rkd_angle_loss", 1), ("rkd_loss", 2))),
        Property("invariant to translation, rotation and scaling", invariant_to_similarity_transforms.__doc__,
                 invariant_to_similarity_transforms),
        Property("official = paper / N² (distance)", official_is_paper_over_n_power.__doc__,
                 official_is_paper_over_n_power, ("rkd_distance_loss/official", "rkd_distance_loss/*distiller"),
                 inputs=_smooth("rkd_distance_loss", 2)),
        Property("official = paper / N³ (angle)", official_is_paper_over_n_power.__doc__,
                 official_is_paper_over_n_power, ("rkd_angle_loss/official", "rkd_angle_loss/kdzoo"),
                 inputs=_smooth("rkd_angle_loss", 1)),
        Property("rkd_loss = weighted terms", weighted_sum_of_the_terms.__doc__, weighted_sum_of_the_terms,
                 ("rkd_loss/*",)),
    ),
    error_scale=_scale,
)
