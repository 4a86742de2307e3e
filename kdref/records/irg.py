"""The registry record of IRG (instance relationship graph), with its properties."""

from __future__ import annotations

import numpy as np

from kdref.proof import compare, fd_gradient
from kdref.records._shared import PERMUTATION_INVARIANT
from kdref.reference import irg as ref
from kdref.registry import EXACT, FD_GRADIENT, Loss, Method, Property
from kdref.strategies.irg import irg_inputs

_KNOBS = tuple(knob.name for knob in ref.IRG_LOSS.knobs)
_NO_TERMS = {"lambda1": 0.0, "lambda2": 0.0, "lambda3": 0.0}


def _knobs(x, convention: str):
    return ref.IRG_LOSS.resolve(convention, **{k: x[k] for k in _KNOBS if k in x})


def _scale(x, convention: str) -> float:
    """The loss without its cancellations: every squared difference (a − b)² replaced by a² + b²,
    reduced and weighted as the loss is. Rounding errors of the edges, transformations and logits
    are a small multiple of ε times this (the centred Gram keeps the edges' errors relative to the
    spread of the instances, not to their offset)."""
    knobs = _knobs(x, convention)
    red, normalize, eps = knobs["reduction"], knobs["normalize"], knobs["eps"]

    def prepared(a):
        return ref.normalize_by_max(a) if normalize == "max" else a

    def over_layers(values):
        return 0.0 if not values else (np.mean(values) if knobs["layer_reduction"] == "mean" else np.sum(values))

    student = [np.asarray(f, dtype=np.float64) for f in x["student_features"]]
    teacher = [np.asarray(f, dtype=np.float64) for f in x["teacher_features"]]
    flat_s, flat_t = [f.reshape(len(f), -1) for f in student], [f.reshape(len(f), -1) for f in teacher]
    total = 0.0
    if knobs["lambda1"] > 0 and x.get("student_logits") is not None:
        total += knobs["lambda1"] * ref.term_reduction(x["student_logits"] ** 2 + x["teacher_logits"] ** 2, red)
    guides = flat_t if knobs["mode"] == "one_to_one" else [flat_t[-1]] * len(flat_s)
    total += knobs["lambda2"] * over_layers([
        ref.term_reduction(prepared(ref.edge_matrix(s, eps)) ** 2 + prepared(ref.edge_matrix(t, eps)) ** 2, red)
        for s, t in zip(flat_s, guides, strict=False)])
    terms = []
    match = knobs["match"]
    for l1, l2, l3, l4 in ref.layer_quadruples(x.get("transformations") or (), len(student), len(teacher)):
        v_t = prepared(ref.transformation_vector(*ref.match_transformation(teacher[l1], teacher[l2], match), eps))
        v_s = prepared(ref.transformation_vector(*ref.match_transformation(student[l3], student[l4], match), eps))
        terms.append(ref.term_reduction((v_t ** 2 + v_s ** 2)[None, :], red))
    return 1.0 + float(total + knobs["lambda3"] * over_layers(terms))


def _at_match(x) -> dict:
    """The student as a copy of the teacher, layer for layer and logits, in one-to-one mode."""
    return {**x, "mode": "one_to_one", "student_features": [f.copy() for f in x["teacher_features"]],
            "student_logits": x["teacher_logits"].copy()}


def _gradient_at_match(loss, wrt: str, at_match) -> np.ndarray:
    """Autograd on torch; on the reference, central differences with a step of 1e-9: every term is
    a squared difference that vanishes at a match, so the differences carry no cancellation there,
    while the default step's truncation error (∝ h² / spread³) shows at closely spaced instances."""
    if loss.side != "reference":
        return loss.grad(wrt, **at_match)
    return fd_gradient(lambda **kw: loss.fn(**kw, convention=loss.convention), at_match, wrt, h=1e-9)


def zero_when_student_is_teacher(loss, x) -> float:
    """A student that is a copy of the teacher (every layer and the logits, one-to-one) has the
    teacher's vertices, edges and transformations: the loss is 0, and so is its gradient."""
    at_match = _at_match(x)
    scale = loss.scale(at_match)
    ratio = compare(loss(**at_match), 0.0, EXACT, scale, "loss at a match")
    for wrt in ("student_features", "student_logits"):
        gradient = _gradient_at_match(loss, wrt, at_match)
        ratio = max(ratio, compare(gradient, np.zeros_like(gradient), FD_GRADIENT, scale,
                                   f"d loss / d {wrt} at a match"))
    return ratio


def terms_add_up(loss, x) -> float:
    """The loss is λ1·vertex + λ2·edges + λ3·transformation: the weighted sum of the loss with one
    term switched on at weight 1."""
    knobs = _knobs(x, loss.convention)
    expected = sum(knobs[f"lambda{k}"] * loss(**{**x, **_NO_TERMS, f"lambda{k}": 1.0}) for k in (1, 2, 3))
    return compare(loss(**x), expected, EXACT, loss.scale(x), "loss vs its weighted terms")


def one_to_many_is_one_to_one_with_the_last_teacher_layer(loss, x) -> float:
    """One-to-many mode compares every student layer with the teacher's last layer: it equals
    one-to-one mode against a teacher list that repeats its last layer."""
    edges = {**x, **_NO_TERMS, "lambda2": 1.0, "transformations": ()}
    repeated = [x["teacher_features"][-1]] * len(x["student_features"])
    expected = loss(**{**edges, "mode": "one_to_one", "teacher_features": repeated})
    return compare(loss(**{**edges, "mode": "one_to_many"}), expected, EXACT, loss.scale(edges),
                   "one-to-many vs one-to-one against the last teacher layer")


def feature_scaling(loss, x) -> float:
    """Scaling every feature of both networks by c scales the squared distances by c²: the edge and
    transformation terms by c⁴ without normalisation, not at all when divided by their batch max."""
    c = 1.7
    no_vertex = {**x, "lambda1": 0.0}
    scaled = {**no_vertex, "student_features": [c * f for f in x["student_features"]],
              "teacher_features": [c * f for f in x["teacher_features"]]}
    factor = 1.0 if _knobs(x, loss.convention)["normalize"] == "max" else c ** 4
    return compare(loss(**scaled), factor * loss(**no_vertex), EXACT, loss.scale(scaled),
                   f"loss of the features × {c}")


def edges_are_translation_invariant(loss, x) -> float:
    """Edges are distances between the instances of one layer: adding one vector to every
    instance of a layer (a different one per layer and network) leaves the edge term unchanged."""
    rng = np.random.default_rng(3)
    edges = {**x, **_NO_TERMS, "lambda2": 1.0}
    shifted = {**edges, **{name: [f + rng.uniform(-5, 5, size=(1, *f.shape[1:])) for f in x[name]]
                           for name in ("student_features", "teacher_features")}}
    return compare(loss(**shifted), loss(**edges), EXACT, loss.scale(shifted),
                   "edge term after translating each layer")


def kdzoo_vertex_is_paper_over_nk(loss, x) -> float:
    """KD-Zoo's vertex term is F.mse_loss: the paper's Σ‖z_T − z_S‖² divided by the N·K logits."""
    vertex = {**x, **_NO_TERMS, "lambda1": 1.0}
    n, k = x["student_logits"].shape
    paper = loss.variant(convention="paper")(**vertex)
    return compare(loss(**vertex), paper / (n * k), EXACT, loss.scale(vertex),
                   "kdzoo vertex vs paper/(N·K)")


def official_is_paper_normalised_with_caffe_factors(loss, x) -> float:
    """Caffe's EuclideanLoss on the max-normalised blobs: the edge term is the paper's
    (normalize="max", one-to-one) divided by 2N, the transformation term the paper's divided by 2."""
    n = len(x["student_features"][0])
    paper = loss.variant(convention="paper")
    same = {"normalize": "max", "mode": "one_to_one", "layer_reduction": "sum"}
    edges = {**x, **_NO_TERMS, "lambda2": 1.0}
    transformation = {**x, **_NO_TERMS, "lambda3": 1.0}
    ratio = compare(loss(**edges), paper(**edges, **same) / (2 * n), EXACT, loss.scale(edges),
                    "official edges vs paper (max-normalised) / 2N")
    return max(ratio, compare(loss(**transformation), paper(**transformation, **same) / 2, EXACT,
                              loss.scale(transformation),
                              "official transformation vs paper (max-normalised) / 2"))


def _inputs(convention: str, gradient: bool = True):
    return irg_inputs(convention, gradient=gradient)


def _without_knob_draws(convention: str):
    """Property draws that leave the convention's knobs as they are (the relations name their own)."""
    return irg_inputs(convention, gradient=True, knobs=False)


METHOD = Method(
    name="irg",
    title="IRG — instance relationship graph",
    citation="Liu, Cao, Li, Yuan, Hu, Li, Duan. Knowledge Distillation via Instance Relationship Graph. "
             "CVPR 2019, pp. 7096–7104.",
    family="relations",
    losses=(
        Loss(ref.irg_loss, lambda convention, gradient: irg_inputs(convention, gradient=gradient),
             differentiable=("student_features", "student_logits")),
    ),
    properties=(
        PERMUTATION_INVARIANT,
        Property("zero when student = teacher", zero_when_student_is_teacher.__doc__, zero_when_student_is_teacher),
        Property("terms add up with their weights", terms_add_up.__doc__, terms_add_up),
        Property("one-to-many = one-to-one against the last teacher layer",
                 one_to_many_is_one_to_one_with_the_last_teacher_layer.__doc__,
                 one_to_many_is_one_to_one_with_the_last_teacher_layer),
        Property("feature scaling: ×c⁴, or ×1 when max-normalised", feature_scaling.__doc__, feature_scaling),
        Property("edges are translation invariant", edges_are_translation_invariant.__doc__,
                 edges_are_translation_invariant),
        Property("kdzoo vertex = paper vertex / (N·K)", kdzoo_vertex_is_paper_over_nk.__doc__,
                 kdzoo_vertex_is_paper_over_nk, ("irg_loss/kdzoo",)),
        Property("official = max-normalised paper / 2N (edges), / 2 (transformation)",
                 official_is_paper_normalised_with_caffe_factors.__doc__,
                 official_is_paper_normalised_with_caffe_factors, ("irg_loss/official",),
                 inputs=_without_knob_draws),
    ),
    error_scale=_scale,
)
