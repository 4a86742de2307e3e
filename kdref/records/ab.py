"""The registry record of AB (distillation of activation boundaries), with its properties.

Two losses: the alternative (squared-hinge) loss of one layer, differentiated with respect to the
student's responses and, where one is drawn, the connector's parameters (1×1 convolution, its
optional bias, BatchNorm's γ and β); and its weighted sum over several layers.
"""

from __future__ import annotations

import numpy as np

from kdref.proof import compare
from kdref.records._shared import REDUCTIONS_AGREE
from kdref.reference import ab as ref
from kdref.registry import EXACT, FD_GRADIENT, Loss, Method, Tolerance, guarantee
from kdref.strategies.ab import ab_inputs, ab_multi_inputs


def _knobs(declaration, convention: str, x) -> dict:
    """The knobs of ``convention`` with the drawn overrides."""
    return dict(declaration.resolve(convention, **{k.name: x[k.name] for k in declaration.knobs if k.name in x}))


def _layers(x) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (student response after the connector, teacher) pairs, by the reference."""
    if "students" in x:
        return list(zip(x["students"], x["teachers"], strict=True))
    s = x["student"] if x.get("connector") is None else ref.connector(x["student"], x["connector"])
    return [(s, x["teacher"])]


def _with_layers(x, pairs) -> dict:
    if "students" in x:
        return {**x, "students": [s for s, _ in pairs], "teachers": [t for _, t in pairs]}
    return {**x, "student": pairs[0][0], "teacher": pairs[0][1]}


def _amplification(x) -> float:
    """How much the connector magnifies rounding: BatchNorm's gain γ/√(v + ε) times the size of
    the convolution's terms Σ|W||x| + |b| (0 without a connector)."""
    params = x.get("connector")
    if params is None:
        return 0.0
    absolute = ref.conv1x1(np.abs(x["student"]), np.abs(params["weight"]),
                           np.abs(params["bias"]) if "bias" in params else None)
    z = ref.conv1x1(x["student"], params["weight"], params.get("bias"))
    gain = np.abs(params["bn_weight"]) / np.sqrt(np.var(z, axis=(0, 2, 3)) + ref.BN_EPS)
    return float(np.max(gain * np.max(absolute, axis=(0, 2, 3))))


def _scale(inputs, convention) -> float:
    """The size of the loss's terms and of their rounding: per layer, C·H·W terms (μ + |s|)² (times
    N for ``"sum"``, over C·H·W for ``"mean"``), each off by 2(μ + |s|)·δs where the connector
    magnifies the rounding of s; weighted as the loss weights the layers."""
    multi = "students" in inputs
    knobs = _knobs(ref.AB_LOSS_MULTI if multi else ref.AB_LOSS, convention, inputs)
    pairs = _layers(inputs)
    weights = inputs.get("weights") or [1.0] * len(pairs)
    depth = ref.depth_weights(len(pairs)) if knobs.get("layer_weights") == "depth" else np.ones(len(pairs))
    total = 0.0
    for w, d, (s, _) in zip(weights, depth, pairs, strict=True):
        size = 1.0 + knobs["margin"] + float(np.max(np.abs(s)))
        count = {"batchmean": 1, "none": 1, "sum": s.shape[0], "mean": 1 / np.prod(s.shape[1:])}[knobs["reduction"]]
        total += w * d * np.prod(s.shape[1:]) * count * size * (size + _amplification(inputs))
    total *= knobs["factor"] / (len(pairs) if knobs.get("reduce_layers") == "mean" else 1)
    return float(total) or 1.0


# -- properties ----------------------------------------------------------------------------------


@guarantee("depends on the teacher only through ρ(t)")
def teacher_only_through_its_sign(loss, x) -> float:
    """Only the teacher's activation states ρ(t) = [t > 0] enter: a post-ReLU teacher σ(t), or the
    teacher times c > 0, gives the same value (ab.md §5: t = 0 is inactive, so post-ReLU features
    are equivalent)."""
    value, ratio = loss(**x), 0.0
    for changed in (lambda t: np.maximum(t, 0.0), lambda t: 7.0 * t, lambda t: 1e-3 * t):
        other = _with_layers(x, [(s, changed(t)) for s, t in _pairs_raw(x)])
        ratio = max(ratio, compare(loss(**other), value, EXACT, loss.scale(x), "loss with the teacher's sign kept"))
    return ratio


def _pairs_raw(x) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (student argument, teacher) pairs as passed (before any connector)."""
    if "students" in x:
        return list(zip(x["students"], x["teachers"], strict=True))
    return [(x["student"], x["teacher"])]


@guarantee("zero beyond the margin")
def zero_beyond_the_margin(loss, x) -> float:
    """Zero, with zero gradient, when every response is beyond the margin on its teacher's side:
    s ≥ μ where t > 0 and s ≤ −μ where t ≤ 0 (the student moved there; with a connector, the
    teacher made the connector's output and μ half its smallest magnitude)."""
    knobs = _knobs(loss.loss.declaration, loss.convention, x)
    if x.get("connector") is not None:
        r = ref.connector(x["student"], x["connector"])
        if np.min(np.abs(r)) < 0.02:
            return 0.0  # a response at 0 cannot be beyond a margin > 0 on both sides
        beyond = {**x, "teacher": r, "margin": 0.5 * float(np.min(np.abs(r)))}
    else:
        # 0.1 past the margin: finite differences do not reach the kink
        beyond = _with_layers(x, [(np.where(t > 0, 1.0, -1.0) * (knobs["margin"] + 0.1 + np.abs(s)), t)
                                  for s, t in _pairs_raw(x)])
    value = loss(**beyond)
    ratio = compare(value, 0 * value, Tolerance(0.0, 0.0), 1.0, "loss beyond the margin")
    wrt = "students" if "students" in x else "student"
    for name in (wrt, "connector"):
        if beyond.get(name) is not None:
            grad = loss.grad(name, **beyond)
            ratio = max(ratio, compare(grad, 0 * grad, FD_GRADIENT, loss.scale(beyond), f"d loss / d {name}"))
    return ratio


@guarantee("≥ μ² × the activation transfer loss", "ab_loss/*")
def bounds_the_indicator_loss(loss, x) -> float:
    """The alternative loss bounds the paper's indicator loss: a neuron whose state differs from
    the teacher's costs at least μ² (s ≤ 0 under an active teacher: σ(μ − s)² ≥ μ²; s > 0 under an
    inactive one: σ(μ + s)² > μ²), so per image L(I) ≥ μ²·‖ρ(T(I)) − ρ(S(I))‖₁ [derived]."""
    knobs = _knobs(loss.loss.declaration, loss.convention, x)
    per_image = loss(**{**x, "reduction": "none", "factor": 1.0})
    (s, t), = _layers(x)
    bound = knobs["margin"] ** 2 * ref.activation_transfer_loss(s, t)
    slack = EXACT.rtol * np.abs(bound) + EXACT.atol * loss.scale(x)
    if np.any(per_image < bound - slack):
        raise AssertionError(f"per-image loss {per_image} below μ²·mismatches {bound}")
    return 0.0


@guarantee('"mean" = "batchmean" / (C·H·W)', "ab_loss/*")
def mean_is_batchmean_over_neurons(loss, x) -> float:
    """KD-Zoo's mean over all N·C·H·W elements is the per-image sum's batch mean divided by the
    number of neurons C·H·W of the teacher's map."""
    neurons = np.prod(x["teacher"].shape[1:])
    return compare(loss(**{**x, "reduction": "mean"}) * neurons, loss(**{**x, "reduction": "batchmean"}), EXACT,
                   loss.scale(x), '"mean" × C·H·W vs "batchmean"')


@guarantee("official = paper × 3/1000", "ab_loss/official", "ab_loss/repdistiller")
def official_is_paper_times_3_over_1000(loss, x) -> float:
    """For one layer and the same μ the official code and RepDistiller's ABLoss are the paper's
    value times 3/1000 [derived]."""
    paper = loss.variant(convention="paper")
    return compare(loss(**x), paper(**x) * 3 / 1000, EXACT, loss.scale(x), "official vs paper · 3/1000")


@guarantee("kdzoo = paper(μ = 2) / (C·H·W)", "ab_loss/kdzoo")
def kdzoo_is_paper_over_neurons(loss, x) -> float:
    """For one layer KD-Zoo's value is the paper's at KD-Zoo's margin, divided by C·H·W [derived]."""
    margin = _knobs(loss.loss.declaration, loss.convention, x)["margin"]
    paper = loss.variant(convention="paper")
    neurons = np.prod(x["teacher"].shape[1:])
    return compare(loss(**x), paper(**{**x, "margin": margin}) / neurons, EXACT, loss.scale(x),
                   "kdzoo vs paper / (C·H·W)")


@guarantee("gradient = ab.md §2", "ab_loss/*")
def gradient_is_the_squared_hinges(loss, x) -> float:
    """Without a connector, ∂L/∂s_k = c·(−2σ(μ − s_k)) where t_k > 0 and c·2σ(μ + s_k) where
    t_k ≤ 0, for the constant c = factor / (N, N·C·H·W or 1) of the reduction (ab.md §2,
    [derived])."""
    if x.get("connector") is not None:
        return 0.0
    knobs = _knobs(loss.loss.declaration, loss.convention, x)
    s, t, mu = x["student"], x["teacher"], knobs["margin"]
    c = knobs["factor"] / {"batchmean": s.shape[0], "mean": s.size, "sum": 1, "none": 1}[knobs["reduction"]]
    expected = c * np.where(t > 0, -2 * np.maximum(mu - s, 0.0), 2 * np.maximum(mu + s, 0.0))
    return compare(loss.grad("student", **x), expected, FD_GRADIENT, loss.scale(x), "gradient vs §2")


@guarantee("with a connector = the loss of r(student)", "ab_loss/paper", "ab_loss/kdzoo")
def connector_composes(loss, x) -> float:
    """The connector replaces S(I) by r(S(I)): ab_loss(x, t, connector) = ab_loss(r(x), t), r the
    reference's 1×1 convolution and BatchNorm."""
    if x.get("connector") is None:
        return 0.0
    plain = {k: v for k, v in x.items() if k != "connector"}
    (r, _), = _layers(x)
    return compare(loss(**x), loss(**{**plain, "student": r}), Tolerance(1e-9, 1e-12), loss.scale(x),
                   "loss with the connector vs loss of r(x)")


@guarantee("multi = weighted sum of layers", "ab_loss_multi/*")
def multi_is_weighted_sum(loss, x) -> float:
    """ab_loss_multi = factor · Σ_k w_k d_k ab_loss(layer k), d_k = 2^-(K-k) for the official depth
    weights, divided by K for reduce_layers='mean'; the official three-layer CIFAR objective is
    3/1000 · (L₃/N + L₂/(2N) + L₁/(4N))."""
    knobs = _knobs(loss.loss.declaration, loss.convention, x)
    single = loss.variant(loss="ab_loss")
    pairs = _pairs_raw(x)
    weights = x.get("weights") or [1.0] * len(pairs)
    depth = ref.depth_weights(len(pairs)) if knobs["layer_weights"] == "depth" else np.ones(len(pairs))
    total = sum(w * d * single(student=s, teacher=t, margin=knobs["margin"], reduction=knobs["reduction"], factor=1.0)
                for w, d, (s, t) in zip(weights, depth, pairs, strict=True))
    total = total / len(pairs) if knobs["reduce_layers"] == "mean" else total
    return compare(loss(**x), knobs["factor"] * total, Tolerance(1e-9, 1e-12), loss.scale(x),
                   "multi vs weighted sum of one-layer losses")


METHOD = Method(
    name="ab",
    title="AB — distillation of activation boundaries",
    citation="Heo, Lee, Yun, Choi. Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden "
             "Neurons. AAAI 2019.",
    family="features",
    losses=(
        Loss(ref.ab_loss, ab_inputs, differentiable=("student", "connector")),
        Loss(ref.ab_loss_multi, ab_multi_inputs, differentiable=("students",)),
    ),
    properties=(
        teacher_only_through_its_sign,
        zero_beyond_the_margin,
        REDUCTIONS_AGREE,
        bounds_the_indicator_loss,
        mean_is_batchmean_over_neurons,
        official_is_paper_times_3_over_1000,
        kdzoo_is_paper_over_neurons,
        gradient_is_the_squared_hinges,
        connector_composes,
        multi_is_weighted_sum,
    ),
    error_scale=_scale,
)
