"""The registry record of AT (activation-based attention transfer), with the properties its math guarantees."""

from __future__ import annotations

import zlib

import numpy as np

from kdref.proof import compare
from kdref.reference import at as ref
from kdref.registry import FD_GRADIENT, Loss, Method, Property, Tolerance
from kdref.strategies.at import at_inputs, at_multi_inputs

#: tighter than the registry's EXACT: AT's values are distances of unit vectors, O(β) whatever the inputs
_TIGHT = Tolerance(1e-12, 1e-14)
#: the conventions whose normaliser clamps: exactly scale invariant once ‖Q‖ > ε
_CLAMPED = tuple(f"{d.name}/{c}" for d in (ref.AT_LOSS, ref.AT_LOSS_MULTI) for c in d.conventions.names
                 if d.resolve(c)["eps_mode"] == "clamp")
_OFFICIAL = ("at_loss/official", "at_loss/torchdistill_code", "at_loss/repdistiller", "at_loss/mdistiller")


def _scale(inputs, convention) -> float:
    """AT compares unit vectors: the loss is at most 4·β per pair whatever the activations' size."""
    layers = sum(inputs["weights"]) if inputs.get("weights") is not None else len(inputs.get("fms_s", [None]))
    return max(1.0, inputs.get("beta", 1.0)) * max(1.0, layers)


# -- the inputs as layer pairs, for properties that hold for one pair and for several ---------


def _pairs(x) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x["fm_s"], x["fm_t"])] if "fm_s" in x else list(zip(x["fms_s"], x["fms_t"], strict=True))


def _with_pairs(x, pairs) -> dict:
    if "fm_s" in x:
        return {**x, "fm_s": pairs[0][0], "fm_t": pairs[0][1]}
    return {**x, "fms_s": [s for s, _ in pairs], "fms_t": [t for _, t in pairs]}


def _student(x) -> str:
    return "fm_s" if "fm_s" in x else "fms_s"


def _knobs(loss, x):
    """The knobs of the case with the drawn overrides."""
    declaration = loss.loss.declaration
    return declaration.resolve(loss.convention, **{k.name: x[k.name] for k in declaration.knobs if k.name in x})


def _rng(x) -> np.random.Generator:
    """A generator seeded by the inputs: the same draw for the same example, on both sides."""
    return np.random.default_rng(zlib.crc32(np.concatenate([s.ravel() for s, _ in _pairs(x)]).tobytes()))


# -- properties ----------------------------------------------------------------------------------


def scale_invariance(loss, x) -> float:
    """AT(c_S·A_S, c_T·A_T) = AT(A_S, A_T) for c_S, c_T > 0: the maps are normalised (c drawn
    log-uniformly in [1e-2, 1e2] with activations of size ≥ 0.5, so ‖Q‖ stays far above the ε clamp)."""
    c_s, c_t = 10.0 ** _rng(x).uniform(-2, 2, size=2)
    scaled = _with_pairs(x, [(c_s * s, c_t * t) for s, t in _pairs(x)])
    return compare(loss(**scaled), loss(**x), Tolerance(1e-9, 1e-12), loss.scale(x), "loss of scaled activations")


def euler_orthogonality(loss, x) -> float:
    """⟨∇_{A_S} L, A_S⟩ = 0: L is homogeneous of degree 0 in A_S (Euler's theorem for scale invariance)."""
    key = _student(x)
    grad = loss.grad(key, **x).ravel()
    A = np.concatenate([s.ravel() for s, _ in _pairs(x)])
    bound = 1e-6 * float(np.linalg.norm(grad) * np.linalg.norm(A)) + 1e-9 * loss.scale(x)
    return compare(float(grad @ A), 0.0, Tolerance(0.0, 1.0), bound, "⟨∇L, A_S⟩")


def zero_at_a_match(loss, x) -> float:
    """Zero, with zero gradient, when the teacher's normalised maps equal the student's: the
    teacher is the student times c > 0 (c = 1 with the additive ε) with an extra all-zero channel.
    For the non-squared norm the teacher is the student itself (Δ = 0 exactly) and the zero
    gradient is the subgradient kdref defines there (checked on torch: a finite difference across
    a kink is no derivative)."""
    knobs = _knobs(loss, x)
    if knobs["distance"] == "norm":  # only an exact Δ = 0 is the kink; rounding would leave Δ/‖Δ‖
        matched = _with_pairs(x, [(s, s.copy()) for s, _ in _pairs(x)])
    else:
        c = 1.0 if knobs["eps_mode"] == "add" else 10.0 ** _rng(x).uniform(-1, 1)
        matched = _with_pairs(x, [(s, np.concatenate([c * s, np.zeros_like(s[:, :1])], axis=1))
                                  for s, _ in _pairs(x)])
    ratio = compare(loss(**matched), np.zeros_like(loss(**matched)), Tolerance(0.0, 1e-12), loss.scale(x),
                    "loss at a match")
    if knobs["distance"] != "norm" or loss.side == "torch":
        grad = loss.grad(_student(x), **matched)
        ratio = max(ratio, compare(grad, np.zeros_like(grad), Tolerance(0.0, 1e-8), loss.scale(x),
                                   "gradient at a match"))
    return ratio


def symmetric(loss, x) -> float:
    """The distance of normalised maps is symmetric: swapping student and teacher changes nothing."""
    swapped = _with_pairs(x, [(t, s) for s, t in _pairs(x)])
    return compare(loss(**swapped), loss(**x), _TIGHT, loss.scale(x), "loss with student and teacher swapped")


def channels_are_a_set(loss, x) -> float:
    """F reduces over channels: reversing the student's channels and appending an all-zero one
    to each map changes nothing (exactly for the channel sum, through the normalisation for the mean)."""
    def widened(a):
        return np.concatenate([a, np.zeros_like(a[:, :1])], axis=1)

    changed = _with_pairs(x, [(widened(s[:, ::-1]), widened(t)) for s, t in _pairs(x)])
    return compare(loss(**changed), loss(**x), Tolerance(1e-9, 1e-12), loss.scale(x),
                   "loss with permuted/extra channels")


def batch_mean_of_examples(loss, x) -> float:
    """Each convention is a per-example quantity averaged over the batch: the loss of a batch is
    the mean of the losses of its examples, so its size does not depend on N."""
    n = _pairs(x)[0][0].shape[0]
    singles = [loss(**_with_pairs(x, [(s[i:i + 1], t[i:i + 1]) for s, t in _pairs(x)])) for i in range(n)]
    return compare(loss(**x), np.mean(singles), _TIGHT, loss.scale(x), "batch loss vs mean of per-example losses")


def multi_is_weighted_sum(loss, x) -> float:
    """at_loss_multi = Σ_j w_j · at_loss(pair j), divided by the number of pairs for reduce_layers='mean'."""
    single = loss.variant(loss="at_loss")
    common = {k: v for k, v in x.items() if k not in ("fms_s", "fms_t", "weights")}
    weights = x.get("weights") or [1.0] * len(x["fms_s"])
    total = sum(w * single(fm_s=s, fm_t=t, **common) for w, (s, t) in zip(weights, _pairs(x), strict=True))
    if _knobs(loss, x)["reduce_layers"] == "mean":
        total = total / len(weights)
    return compare(loss(**x), total, _TIGHT, loss.scale(x), "multi-layer loss vs weighted sum of pairs")


def kdzoo_is_official_up_to_eps(loss, x) -> float:
    """For p = 2, KD-Zoo = official (sq. mean over N·HW; official's channel mean is undone by the
    normalisation) except for the additive ε: |Q̂_add − Q̂| ≤ ε/‖Q‖ per map, so per pair the
    difference is at most (4/M)·max_n(ε/‖Q_S,n‖ + ε/‖Q_T,n‖)."""
    x = {**x, "p": 2.0}
    official = loss.variant(convention="official")
    extra = {"reduce_layers": "mean"} if "fms_s" in x else {}
    knobs = _knobs(loss, x)
    weights = x.get("weights") or [1.0] * len(_pairs(x))
    bound = 0.0
    for w, (s, t) in zip(weights, _pairs(x), strict=True):
        Q_s, Q_t = ref.attention_pair(s, t, p=2.0, channel_reduce="sum", use_abs=True, spatial=knobs["spatial"])
        norms = [np.linalg.norm(Q.reshape(len(Q), -1), axis=1) for Q in (Q_s, Q_t)]
        bound += w * 4.0 / Q_s[0].size * float(np.max(knobs["eps"] / norms[0] + knobs["eps"] / norms[1]))
    bound *= x.get("beta", 1.0) / (len(weights) if extra else 1.0)
    return compare(loss(**x), official(**x, **extra), Tolerance(0.0, 1.0), bound + 1e-12 * loss.scale(x),
                   "kdzoo vs official")


def torchdistill_paper_is_paper_beta_2(loss, x) -> float:
    """torchdistill mode='paper' is eq. 2 with β = 2 (its per-pair weight w is the paper's β = 2w), for p = 2."""
    x = {**x, "p": 2.0}
    paper = loss.variant(convention="paper")
    return compare(loss(**x), paper(**{**x, "beta": 2.0 * x.get("beta", 1.0)}), _TIGHT, loss.scale(x),
                   "torchdistill_paper vs paper with 2β")


def official_is_squared_paper_over_m(loss, x) -> float:
    """The code squares eq. 2's norm and averages it over the M positions: per example,
    official = ‖Q̂_S − Q̂_T‖₂² / M = (paper with β = 2)² / M."""
    knobs = _knobs(loss, x)
    size = ref.common_size(x["fm_s"].shape[2:], x["fm_t"].shape[2:], knobs["spatial"])
    paper = loss.variant(convention="paper")(**{**x, "beta": 2.0, "reduction": "none"})
    official = loss(**{**x, "beta": 1.0, "reduction": "none"})
    return compare(official * size[0] * size[1], paper**2, Tolerance(1e-9, 1e-12), loss.scale(x),
                   "official·M vs paper²")


def spatial_rules_are_consistent(loss, x) -> float:
    """The resampling rules change nothing when there is nothing to resample: average pooling
    undoes a nearest-neighbour upsampling of the student's features by 2 (pooling features or
    maps alike), and bilinear interpolation of a 1×1 student map to the teacher's size is the
    spatially constant map of that size (so the comparison is made at the larger size)."""
    up = np.repeat(np.repeat(x["fm_s"], 2, axis=2), 2, axis=3)
    ratio = 0.0
    for rule in ("avgpool_features", "avgpool_map"):
        ratio = max(ratio, compare(loss(**{**x, "fm_s": up, "spatial": rule}), loss(**x), _TIGHT, loss.scale(x),
                                   f"{rule} of the student upsampled ×2"))
    point = x["fm_s"].mean(axis=(2, 3), keepdims=True)
    constant = np.broadcast_to(point, x["fm_s"].shape).copy()
    return max(ratio, compare(loss(**{**x, "fm_s": point, "spatial": "interp_map"}), loss(**{**x, "fm_s": constant}),
                              _TIGHT, loss.scale(x), "interp_map of a 1×1 student"))


def gradient_formula(loss, x) -> float:
    """∂L/∂A_S = (∂L/∂Q̂_S)·(∂Q̂/∂Q)·(∂Q/∂A) with ∂Q̂/∂Q = (I − Q̂Q̂ᵀ)/‖Q‖ (clamp) or
    I/(‖Q‖+ε) − QQᵀ/(‖Q‖(‖Q‖+ε)²) (add), ∂Q/∂A_c = p|A_c|^{p−1}sign(A_c) (÷C for the channel mean),
    and ∂L/∂Q̂_S = (factor/N)·{Δ/‖Δ‖, 2Δ, 2Δ/M} for the norm, sq_sum, sq_mean distances (spec §5)."""
    knobs = _knobs(loss, x)
    A, p = x["fm_s"], x["p"]
    n, c = A.shape[:2]
    Q = ref.attention_map(A, p, knobs["channel_reduce"], knobs["use_abs"]).reshape(n, -1)
    Qs_hat = ref.normalized_attention(Q.reshape(n, *A.shape[2:]), knobs["eps"], knobs["eps_mode"])
    Qt_hat = ref.normalized_attention(ref.attention_map(x["fm_t"], p, knobs["channel_reduce"], knobs["use_abs"]),
                                      knobs["eps"], knobs["eps_mode"])
    delta = Qs_hat - Qt_hat
    m = delta.shape[1]
    factor = x.get("beta", 1.0) * (0.5 if knobs["halve_beta"] else 1.0) / n
    if knobs["distance"] == "norm":
        g_hat = factor * delta / np.linalg.norm(delta, axis=1, keepdims=True)
    else:
        g_hat = factor * 2 * delta / (m if knobs["distance"] == "sq_mean" else 1)
    norm = np.linalg.norm(Q, axis=1, keepdims=True)
    if knobs["eps_mode"] == "clamp":
        g_q = (g_hat - Qs_hat * np.sum(Qs_hat * g_hat, axis=1, keepdims=True)) / norm
    else:
        g_q = g_hat / (norm + knobs["eps"]) - Q * np.sum(Q * g_hat, axis=1, keepdims=True) / (
            norm * (norm + knobs["eps"]) ** 2)
    dQ_dA = p * np.abs(A) ** (p - 1) * np.sign(A) if knobs["use_abs"] else p * A ** (p - 1)
    if knobs["channel_reduce"] == "mean":
        dQ_dA = dQ_dA / c
    expected = g_q.reshape(n, 1, *A.shape[2:]) * dQ_dA
    bound = FD_GRADIENT.rtol * float(np.max(np.abs(expected))) + FD_GRADIENT.atol * loss.scale(x)
    return compare(loss.grad("fm_s", **x), expected, Tolerance(0.0, 1.0), bound, "gradient vs closed form")


def _single(convention: str, gradient: bool):
    return at_inputs(convention, gradient=gradient)


def _multi(convention: str, gradient: bool):
    return at_multi_inputs(convention, gradient=gradient)

METHOD = Method(
    name="at",
    title="AT — attention transfer (activation-based)",
    citation="Zagoruyko, Komodakis. Paying More Attention to Attention: Improving the Performance of Convolutional "
             "Neural Networks via Attention Transfer. ICLR 2017. arXiv:1612.03928.",
    family="features",
    losses=(
        Loss(ref.at_loss, _single, differentiable=("fm_s",)),
        Loss(ref.at_loss_multi, _multi, differentiable=("fms_s",)),
    ),
    properties=(
        Property("scale invariance", scale_invariance.__doc__, scale_invariance, _CLAMPED),
        Property("⟨∇L, A_S⟩ = 0", euler_orthogonality.__doc__, euler_orthogonality, _CLAMPED),
        Property("zero at a match", zero_at_a_match.__doc__, zero_at_a_match),
        Property("symmetric", symmetric.__doc__, symmetric),
        Property("channels are a set", channels_are_a_set.__doc__, channels_are_a_set),
        Property("batch mean of examples", batch_mean_of_examples.__doc__, batch_mean_of_examples),
        Property("multi = Σ w_j · pair_j", multi_is_weighted_sum.__doc__, multi_is_weighted_sum, ("at_loss_multi/*",)),
        Property("kdzoo = official up to ε", kdzoo_is_official_up_to_eps.__doc__, kdzoo_is_official_up_to_eps,
                 ("*/kdzoo",)),
        Property("torchdistill_paper = paper, β = 2", torchdistill_paper_is_paper_beta_2.__doc__,
                 torchdistill_paper_is_paper_beta_2, ("*/torchdistill_paper",)),
        Property("official = paper² / M", official_is_squared_paper_over_m.__doc__, official_is_squared_paper_over_m,
                 _OFFICIAL),
        Property("spatial rules are consistent", spatial_rules_are_consistent.__doc__, spatial_rules_are_consistent,
                 ("at_loss/*",), inputs=lambda convention: at_inputs(convention, gradient=True, spatial=False)),
        Property("gradient = closed form", gradient_formula.__doc__, gradient_formula, ("at_loss/*",),
                 inputs=lambda convention: at_inputs(convention, gradient=True, spatial=False)),
    ),
    error_scale=_scale,
)
