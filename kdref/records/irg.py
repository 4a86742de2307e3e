"""The registry record of IRG (instance relationship graph), with its properties."""

from __future__ import annotations

import numpy as np

from kdref.proof import compare, fd_gradient
from kdref.records._shared import PERMUTATION_INVARIANT
from kdref.reference import irg as ref
from kdref.registry import EXACT, FD_GRADIENT, Loss, Method, guarantee
from kdref.strategies.irg import irg_inputs

_NO_TERMS = {"lambda1": 0.0, "lambda2": 0.0, "lambda3": 0.0}


def _knobs(x, convention: str):
    return ref.IRG_LOSS.resolve(convention, **{k.name: x[k.name] for k in ref.IRG_LOSS.knobs if k.name in x})


def _scale(x, convention: str) -> float:
    """The loss without its cancellations: every squared difference (a − b)² replaced by a² + b²,
    reduced and weighted as the loss is. Rounding errors of the edges, transformations and logits
    are a small multiple of ε times this (the centred Gram keeps the edges' errors relative to the
    spread of the instances, not to their offset)."""
    k = _knobs(x, convention)

    def norm(a):
        return ref.normalize_by_max(a) if k["normalize"] == "max" else a

    def term(a, b):  # (a − b)² → a² + b², reduced as the loss reduces it
        return ref.term_reduction(a**2 + b**2, k["reduction"])

    def over_layers(values):
        return 0.0 if not values else (np.mean(values) if k["layer_reduction"] == "mean" else np.sum(values))

    def A(f):
        return norm(ref.edge_matrix(f.reshape(len(f), -1), k["eps"]))

    def Lambda(layers, i, j):  # a [1, N] blob (see term_reduction)
        f1, f2 = ref.match_transformation(layers[i], layers[j], k["match"])
        return norm(ref.transformation_vector(f1, f2, k["eps"]))[None]

    s, t = x["student_features"], x["teacher_features"]
    guides = t if k["mode"] == "one_to_one" else [t[-1]] * len(s)
    quadruples = ref.layer_quadruples(x.get("transformations") or (), len(s), len(t))
    vertex = term(x["student_logits"], x["teacher_logits"]) if x.get("student_logits") is not None else 0.0
    edges = over_layers([term(A(a), A(b)) for a, b in zip(s, guides, strict=False)])
    transformation = over_layers([term(Lambda(t, l1, l2), Lambda(s, l3, l4)) for l1, l2, l3, l4 in quadruples])
    return 1.0 + float(k["lambda1"] * vertex + k["lambda2"] * edges + k["lambda3"] * transformation)


@guarantee("zero when student = teacher")
def zero_when_student_is_teacher(loss, x) -> float:
    """A student that is a copy of the teacher (every layer and the logits, one-to-one) has the
    teacher's vertices, edges and transformations: the loss is 0, and so is its gradient. On the
    reference the gradient is central differences with a step of 1e-9: every term is a squared
    difference that vanishes at a match, so the differences carry no cancellation there, while the
    default step's truncation error (∝ h² / spread³) shows at closely spaced instances."""
    at_match = {**x, "mode": "one_to_one", "student_features": [f.copy() for f in x["teacher_features"]],
                "student_logits": x["teacher_logits"].copy()}
    scale = loss.scale(at_match)
    ratio = compare(loss(**at_match), 0.0, EXACT, scale, "loss at a match")
    for wrt in ("student_features", "student_logits"):
        gradient = loss.grad(wrt, **at_match) if loss.side != "reference" else \
            fd_gradient(lambda **kw: loss.fn(**kw, convention=loss.convention), at_match, wrt, h=1e-9)
        ratio = max(ratio, compare(gradient, np.zeros_like(gradient), FD_GRADIENT, scale,
                                   f"d loss / d {wrt} at a match"))
    return ratio


@guarantee("terms add up with their weights")
def terms_add_up(loss, x) -> float:
    """The loss is λ1·vertex + λ2·edges + λ3·transformation: the weighted sum of the loss with one
    term switched on at weight 1."""
    knobs = _knobs(x, loss.convention)
    expected = sum(knobs[f"lambda{k}"] * loss(**{**x, **_NO_TERMS, f"lambda{k}": 1.0}) for k in (1, 2, 3))
    return compare(loss(**x), expected, EXACT, loss.scale(x), "loss vs its weighted terms")


@guarantee("one-to-many = one-to-one against the last teacher layer")
def one_to_many_is_one_to_one_with_the_last_teacher_layer(loss, x) -> float:
    """One-to-many mode compares every student layer with the teacher's last layer: it equals
    one-to-one mode against a teacher list that repeats its last layer."""
    edges = {**x, **_NO_TERMS, "lambda2": 1.0, "transformations": ()}
    repeated = [x["teacher_features"][-1]] * len(x["student_features"])
    expected = loss(**{**edges, "mode": "one_to_one", "teacher_features": repeated})
    return compare(loss(**{**edges, "mode": "one_to_many"}), expected, EXACT, loss.scale(edges),
                   "one-to-many vs one-to-one against the last teacher layer")


@guarantee("feature scaling: ×c⁴, or ×1 when max-normalised")
def feature_scaling(loss, x) -> float:
    """Scaling every feature of both networks by c scales the squared distances by c²: the edge and
    transformation terms by c⁴ without normalisation, not at all when divided by their batch max."""
    c, no_vertex = 1.7, {**x, "lambda1": 0.0}
    scaled = {**no_vertex, **{k: [c * f for f in x[k]] for k in ("student_features", "teacher_features")}}
    factor = 1.0 if _knobs(x, loss.convention)["normalize"] == "max" else c ** 4
    return compare(loss(**scaled), factor * loss(**no_vertex), EXACT, loss.scale(scaled), f"loss of the features × {c}")


@guarantee("edges are translation invariant")
def edges_are_translation_invariant(loss, x) -> float:
    """Edges are distances between the instances of one layer: adding one vector to every
    instance of a layer (a different one per layer and network) leaves the edge term unchanged."""
    rng = np.random.default_rng(3)
    edges = {**x, **_NO_TERMS, "lambda2": 1.0}
    shifted = {**edges, **{k: [f + rng.uniform(-5, 5, size=(1, *f.shape[1:])) for f in x[k]]
                           for k in ("student_features", "teacher_features")}}
    return compare(loss(**shifted), loss(**edges), EXACT, loss.scale(shifted), "edge term after translating each layer")


@guarantee("kdzoo vertex = paper vertex / (N·K)", "irg_loss/kdzoo")
def kdzoo_vertex_is_paper_over_nk(loss, x) -> float:
    """KD-Zoo's vertex term is F.mse_loss: the paper's Σ‖z_T − z_S‖² divided by the N·K logits."""
    vertex = {**x, **_NO_TERMS, "lambda1": 1.0}
    paper = loss.variant(convention="paper")(**vertex)
    return compare(loss(**vertex), paper / x["student_logits"].size, EXACT, loss.scale(vertex),
                   "kdzoo vertex vs paper/(N·K)")


@guarantee("official = max-normalised paper / 2N (edges), / 2 (transformation)", "irg_loss/official",
           inputs=lambda convention: irg_inputs(convention, gradient=True, knobs=False))
def official_is_paper_normalised_with_caffe_factors(loss, x) -> float:
    """Caffe's EuclideanLoss on the max-normalised blobs: the edge term is the paper's
    (normalize="max", one-to-one) divided by 2N, the transformation term the paper's divided by 2.
    (Drawn without knob draws: the relations name their own knobs.)"""
    paper, n = loss.variant(convention="paper"), len(x["student_features"][0])
    same = {"normalize": "max", "mode": "one_to_one", "layer_reduction": "sum"}
    ratio = 0.0
    for term, divisor in (("lambda2", 2 * n), ("lambda3", 2)):
        one = {**x, **_NO_TERMS, term: 1.0}
        ratio = max(ratio, compare(loss(**one), paper(**one, **same) / divisor, EXACT, loss.scale(one),
                                   f"official {term} term vs paper (max-normalised) / {divisor}"))
    return ratio


METHOD = Method(
    name="irg",
    title="IRG — instance relationship graph",
    citation="Liu, Cao, Li, Yuan, Hu, Li, Duan. Knowledge Distillation via Instance Relationship Graph. "
             "CVPR 2019, pp. 7096–7104.",
    family="relations",
    losses=(Loss(ref.irg_loss, lambda convention, gradient: irg_inputs(convention, gradient=gradient),
                 differentiable=("student_features", "student_logits")),),
    properties=(
        PERMUTATION_INVARIANT,
        zero_when_student_is_teacher,
        terms_add_up,
        one_to_many_is_one_to_one_with_the_last_teacher_layer,
        feature_scaling,
        edges_are_translation_invariant,
        kdzoo_vertex_is_paper_over_nk,
        official_is_paper_normalised_with_caffe_factors,
    ),
    error_scale=_scale,
)
