"""The registry record of AT (activation-based attention transfer), with the properties its math guarantees."""

from __future__ import annotations

import zlib

import numpy as np

from kdref.proof import compare
from kdref.reference import at as ref
from kdref.registry import EXACT, FD_GRADIENT, Loss, Method, Tolerance, guarantee
from kdref.strategies.at import at_inputs, at_multi_inputs

#: tighter than the registry's EXACT: AT's values are distances of unit vectors, O(β) whatever the inputs
_TIGHT = Tolerance(1e-12, 1e-14)
#: the conventions whose normaliser clamps: exactly scale invariant once ‖Q‖ > ε
_CLAMPED = tuple(f"{d.name}/{c}" for d in (ref.AT_LOSS, ref.AT_LOSS_MULTI) for c in d.conventions.names
                 if d.resolve(c)["eps_mode"] == "clamp")


def _scale(inputs, convention) -> float:
    """AT compares unit vectors: the loss is at most 4·β per pair whatever the activations' size."""
    layers = sum(inputs["weights"]) if inputs.get("weights") is not None else len(inputs.get("fms_s", [None]))
    return max(1.0, inputs.get("beta", 1.0)) * max(1.0, layers)


def _pairs(x) -> list[tuple[np.ndarray, np.ndarray]]:
    """The inputs as layer pairs, for properties that hold for one pair and for several."""
    return [(x["fm_s"], x["fm_t"])] if "fm_s" in x else list(zip(x["fms_s"], x["fms_t"], strict=True))


def _with_pairs(x, pairs) -> dict:
    if "fm_s" in x:
        return {**x, "fm_s": pairs[0][0], "fm_t": pairs[0][1]}
    return {**x, "fms_s": [s for s, _ in pairs], "fms_t": [t for _, t in pairs]}


def _weights(x) -> list[float]:
    return x.get("weights") or [1.0] * len(_pairs(x))


def _knobs(loss, x):
    """The knobs of the case with the drawn overrides."""
    declaration = loss.loss.declaration
    return declaration.resolve(loss.convention, **{k.name: x[k.name] for k in declaration.knobs if k.name in x})


def _rng(x) -> np.random.Generator:
    """A generator seeded by the inputs: the same draw for the same example, on both sides."""
    return np.random.default_rng(zlib.crc32(np.concatenate([s.ravel() for s, _ in _pairs(x)]).tobytes()))


@guarantee("scale invariance", *_CLAMPED)
def scale_invariance(loss, x) -> float:
    """AT(c_S·A_S, c_T·A_T) = AT(A_S, A_T) for c_S, c_T > 0: the maps are normalised (c drawn
    log-uniformly in [1e-2, 1e2] with activations of size ≥ 0.5, so ‖Q‖ stays far above the ε clamp)."""
    c_s, c_t = 10.0 ** _rng(x).uniform(-2, 2, size=2)
    scaled = _with_pairs(x, [(c_s * s, c_t * t) for s, t in _pairs(x)])
    return compare(loss(**scaled), loss(**x), EXACT, loss.scale(x), "loss of scaled activations")


@guarantee("⟨∇L, A_S⟩ = 0", *_CLAMPED)
def euler_orthogonality(loss, x) -> float:
    """⟨∇_{A_S} L, A_S⟩ = 0: L is homogeneous of degree 0 in A_S (Euler's theorem for scale invariance)."""
    grad = loss.grad("fm_s" if "fm_s" in x else "fms_s", **x).ravel()
    A = np.concatenate([s.ravel() for s, _ in _pairs(x)])
    bound = 1e-6 * float(np.linalg.norm(grad) * np.linalg.norm(A)) + 1e-9 * loss.scale(x)
    return compare(float(grad @ A), 0.0, Tolerance(0.0, 1.0), bound, "⟨∇L, A_S⟩")


@guarantee("zero at a match")
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
    ratio = compare(loss(**matched), np.zeros_like(loss(**matched)), EXACT, loss.scale(x), "loss at a match")
    if knobs["distance"] != "norm" or loss.side == "torch":
        grad = loss.grad("fm_s" if "fm_s" in x else "fms_s", **matched)
        ratio = max(ratio, compare(grad, np.zeros_like(grad), FD_GRADIENT, loss.scale(x), "gradient at a match"))
    return ratio


@guarantee("symmetric")
def symmetric(loss, x) -> float:
    """The distance of normalised maps is symmetric: swapping student and teacher changes nothing."""
    swapped = _with_pairs(x, [(t, s) for s, t in _pairs(x)])
    return compare(loss(**swapped), loss(**x), _TIGHT, loss.scale(x), "loss with student and teacher swapped")


@guarantee("channels are a set")
def channels_are_a_set(loss, x) -> float:
    """F reduces over channels: reversing the student's channels and appending an all-zero one
    to each map changes nothing (exactly for the channel sum, through the normalisation for the mean)."""
    def widened(a):
        return np.concatenate([a, np.zeros_like(a[:, :1])], axis=1)

    changed = _with_pairs(x, [(widened(s[:, ::-1]), widened(t)) for s, t in _pairs(x)])
    return compare(loss(**changed), loss(**x), EXACT, loss.scale(x), "loss with permuted/extra channels")


@guarantee("batch mean of examples")
def batch_mean_of_examples(loss, x) -> float:
    """Each convention is a per-example quantity averaged over the batch: the loss of a batch is
    the mean of the losses of its examples, so its size does not depend on N."""
    n = _pairs(x)[0][0].shape[0]
    singles = [loss(**_with_pairs(x, [(s[i:i + 1], t[i:i + 1]) for s, t in _pairs(x)])) for i in range(n)]
    return compare(loss(**x), np.mean(singles), _TIGHT, loss.scale(x), "batch loss vs mean of per-example losses")


@guarantee("multi = Σ w_j · pair_j", "at_loss_multi/*")
def multi_is_weighted_sum(loss, x) -> float:
    """at_loss_multi = Σ_j w_j · at_loss(pair j), divided by the number of pairs for reduce_layers='mean'."""
    single = loss.variant(loss="at_loss")
    common = {k: v for k, v in x.items() if k not in ("fms_s", "fms_t", "weights")}
    total = sum(w * single(fm_s=s, fm_t=t, **common) for w, (s, t) in zip(_weights(x), _pairs(x), strict=True))
    if _knobs(loss, x)["reduce_layers"] == "mean":
        total = total / len(_pairs(x))
    return compare(loss(**x), total, _TIGHT, loss.scale(x), "multi-layer loss vs weighted sum of pairs")


@guarantee("kdzoo = official up to ε", "*/kdzoo")
def kdzoo_is_official_up_to_eps(loss, x) -> float:
    """For p = 2, KD-Zoo = official (sq. mean over N·HW; official's channel mean is undone by the
    normalisation) except for the additive ε: |Q̂_add − Q̂| ≤ ε/‖Q‖ per map, so per pair the
    difference is at most (4/M)·max_n(ε/‖Q_S,n‖ + ε/‖Q_T,n‖)."""
    x = {**x, "p": 2.0}
    extra = {"reduce_layers": "mean"} if "fms_s" in x else {}
    knobs = _knobs(loss, x)
    bound = 0.0
    for w, (s, t) in zip(_weights(x), _pairs(x), strict=True):
        Q_s, Q_t = ref.attention_pair(s, t, p=2.0, channel_reduce="sum", use_abs=True, spatial=knobs["spatial"])
        norms = [np.linalg.norm(Q.reshape(len(Q), -1), axis=1) for Q in (Q_s, Q_t)]
        bound += w * 4.0 / Q_s[0].size * float(np.max(knobs["eps"] / norms[0] + knobs["eps"] / norms[1]))
    bound *= x.get("beta", 1.0) / (len(_pairs(x)) if extra else 1.0)
    official = loss.variant(convention="official")(**x, **extra)
    return compare(loss(**x), official, Tolerance(0.0, 1.0), bound + 1e-12 * loss.scale(x), "kdzoo vs official")


@guarantee("torchdistill_paper = paper, β = 2", "*/torchdistill_paper")
def torchdistill_paper_is_paper_beta_2(loss, x) -> float:
    """torchdistill mode='paper' is eq. 2 with β = 2 (its per-pair weight w is the paper's β = 2w), for p = 2."""
    x = {**x, "p": 2.0}
    paper = loss.variant(convention="paper")
    return compare(loss(**x), paper(**{**x, "beta": 2.0 * x.get("beta", 1.0)}), _TIGHT, loss.scale(x),
                   "torchdistill_paper vs paper with 2β")


@guarantee("official = paper² / M", "at_loss/official", "at_loss/torchdistill_code", "at_loss/*distiller")
def official_is_squared_paper_over_m(loss, x) -> float:
    """The code squares eq. 2's norm and averages it over the M positions: per example,
    official = ‖Q̂_S − Q̂_T‖₂² / M = (paper with β = 2)² / M."""
    h, w = ref.common_size(x["fm_s"].shape[2:], x["fm_t"].shape[2:], _knobs(loss, x)["spatial"])
    paper = loss.variant(convention="paper")(**{**x, "beta": 2.0, "reduction": "none"})
    official = loss(**{**x, "beta": 1.0, "reduction": "none"})
    return compare(official * h * w, paper**2, EXACT, loss.scale(x), "official·M vs paper²")


@guarantee("spatial rules are consistent", "at_loss/*", inputs=lambda c: at_inputs(c, True, spatial=False))
def spatial_rules_are_consistent(loss, x) -> float:
    """The resampling rules change nothing when there is nothing to resample: average pooling
    undoes a nearest-neighbour upsampling of the student's features by 2 (pooling features or
    maps alike), and bilinear interpolation of a 1×1 student map to the teacher's size is the
    spatially constant map of that size (so the comparison is made at the larger size)."""
    up = np.repeat(np.repeat(x["fm_s"], 2, axis=2), 2, axis=3)
    ratio = max(compare(loss(**{**x, "fm_s": up, "spatial": rule}), loss(**x), _TIGHT, loss.scale(x),
                        f"{rule} of the student upsampled ×2") for rule in ("avgpool_features", "avgpool_map"))
    point = x["fm_s"].mean(axis=(2, 3), keepdims=True)
    constant = np.broadcast_to(point, x["fm_s"].shape).copy()
    return max(ratio, compare(loss(**{**x, "fm_s": point, "spatial": "interp_map"}), loss(**{**x, "fm_s": constant}),
                              _TIGHT, loss.scale(x), "interp_map of a 1×1 student"))


@guarantee("gradient = closed form", "at_loss/*", inputs=lambda c: at_inputs(c, True, spatial=False))
def gradient_formula(loss, x) -> float:
    """∂L/∂A_S = (∂L/∂Q̂_S)·(∂Q̂/∂Q)·(∂Q/∂A) with ∂Q̂/∂Q = (I − Q̂Q̂ᵀ)/‖Q‖ (clamp) or
    I/(‖Q‖+ε) − QQᵀ/(‖Q‖(‖Q‖+ε)²) (add), ∂Q/∂A_c = p|A_c|^{p−1}sign(A_c) (÷C for the channel mean),
    and ∂L/∂Q̂_S = (factor/N)·{Δ/‖Δ‖, 2Δ, 2Δ/M} for the norm, sq_sum, sq_mean distances (spec §5)."""
    k = _knobs(loss, x)
    A, p = x["fm_s"], x["p"]
    n, c = A.shape[:2]
    Q = ref.attention_map(A, p, k["channel_reduce"], k["use_abs"]).reshape(n, -1)
    Qs_hat = ref.normalized_attention(Q.reshape(n, *A.shape[2:]), k["eps"], k["eps_mode"])
    Qt_hat = ref.normalized_attention(ref.attention_map(x["fm_t"], p, k["channel_reduce"], k["use_abs"]), k["eps"],
                                      k["eps_mode"])
    delta = Qs_hat - Qt_hat
    factor = x.get("beta", 1.0) / (2 if k["halve_beta"] else 1) / n
    if k["distance"] == "norm":
        g_hat = factor * delta / np.linalg.norm(delta, axis=1, keepdims=True)
    else:
        g_hat = factor * 2 * delta / (delta.shape[1] if k["distance"] == "sq_mean" else 1)
    norm = np.linalg.norm(Q, axis=1, keepdims=True)
    if k["eps_mode"] == "clamp":
        g_q = (g_hat - Qs_hat * np.sum(Qs_hat * g_hat, axis=1, keepdims=True)) / norm
    else:
        g_q = g_hat / (norm + k["eps"]) - Q * np.sum(Q * g_hat, axis=1, keepdims=True) / (norm * (norm + k["eps"]) ** 2)
    dQ_dA = p * np.abs(A) ** (p - 1) * np.sign(A) if k["use_abs"] else p * A ** (p - 1)
    expected = g_q.reshape(n, 1, *A.shape[2:]) * dQ_dA / (c if k["channel_reduce"] == "mean" else 1)
    bound = FD_GRADIENT.rtol * float(np.max(np.abs(expected))) + FD_GRADIENT.atol * loss.scale(x)
    return compare(loss.grad("fm_s", **x), expected, Tolerance(0.0, 1.0), bound, "gradient vs closed form")


METHOD = Method(
    name="at",
    title="AT — attention transfer (activation-based)",
    citation="Zagoruyko, Komodakis. Paying More Attention to Attention: Improving the Performance of Convolutional "
             "Neural Networks via Attention Transfer. ICLR 2017. arXiv:1612.03928.",
    family="features",
    losses=(
        Loss(ref.at_loss, at_inputs, differentiable=("fm_s",)),
        Loss(ref.at_loss_multi, at_multi_inputs, differentiable=("fms_s",)),
    ),
    properties=(scale_invariance, euler_orthogonality, zero_at_a_match, symmetric, channels_are_a_set,
                batch_mean_of_examples, multi_is_weighted_sum, kdzoo_is_official_up_to_eps,
                torchdistill_paper_is_paper_beta_2, official_is_squared_paper_over_m, spatial_rules_are_consistent,
                gradient_formula),
    error_scale=_scale,
)
