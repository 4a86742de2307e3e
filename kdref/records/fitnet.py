"""The registry record of FitNet (hint-based training with a regressor), with its properties.

Two losses: the hint loss on (regressed student, teacher), and its composition with the
regressor, differentiated with respect to the student's guided features and every parameter of
the regressor (BatchNorm's γ and β included). The worked examples name the regressor's
``weight`` and ``bias`` (``kdref/golden/fitnet.json``); they are passed here as the entries
``layer.weight`` and ``layer.bias`` of the one ``regressor`` argument.
"""

from __future__ import annotations

import json

import numpy as np

from kdref.proof import compare, max_abs
from kdref.records._shared import REDUCTIONS_AGREE
from kdref.reference import fitnet as ref
from kdref.registry import EXACT, FD_GRADIENT, GOLDEN_DIR, Loss, Method, Tolerance, by_gradient, guarantee
from kdref.strategies.fitnet import fitnet_inputs, fitnet_regressed_inputs


def _golden() -> dict:
    """The worked examples and edge cases, each ``weight`` and ``bias`` moved into the ``regressor`` mapping."""
    golden = json.loads((GOLDEN_DIR / "fitnet.json").read_text(encoding="utf-8"))
    for args in (example["args"] for example in [*golden["examples"], *golden.get("edge_cases", [])]):
        layer = {f"layer.{k}": args.pop(k) for k in ("weight", "bias") if k in args}
        args.update({"regressor": layer} if layer else {})
    return golden


def _geometry(x) -> ref.RegressorGeometry:
    return ref.regressor_geometry(x["v_g"].shape[1:], x["u_t"].shape[1:], x.get("kind", "conv_valid"),
                                  x.get("pieces", 1))


def _regressed(x) -> np.ndarray:
    """r(v_g) by the reference, for the teacher's shape."""
    knobs = {k: x[k] for k in ("kind", "activation", "pieces", "bn_eps") if k in x}
    return ref.regressor(x["v_g"], x.get("regressor"), out_shape=x["u_t"].shape[1:], **knobs)


def _scale(inputs, convention) -> float:
    """The size of what the loss sums: C·H·W squared errors of magnitude |u| + |r|.

    For the regressed loss |r| is bounded by the layer's sum of absolute terms Σ|w||v| + |b|
    (the scale of its rounding error too), amplified by BatchNorm's γ/√(σ² + ε), which is large
    for a channel of nearly constant values.
    """
    if "r_s" in inputs:
        return (1.0 + max_abs(inputs)) ** 2
    v_g, u_t, reg, geometry = inputs["v_g"], inputs["u_t"], inputs.get("regressor") or {}, _geometry(inputs)
    absolute = [np.abs(reg[k]) if k in reg else None for k in ("layer.weight", "layer.bias")]
    size = float(np.max(ref.linear_part(np.abs(v_g), *absolute, geometry)))
    if "bn.weight" in reg:
        z = ref.linear_part(v_g, reg["layer.weight"], reg.get("layer.bias"), geometry)
        gain = np.abs(reg["bn.weight"]) / np.sqrt(np.var(z, axis=(0, 2, 3)) + inputs.get("bn_eps", 1e-5))
        size = size * float(np.max(gain)) + float(np.max(np.abs(reg["bn.bias"])))
    return float(np.prod(u_t.shape[1:])) * (1.0 + float(np.max(np.abs(u_t))) + size) ** 2


#: the constant c of each convention in L = c · Σ (u − r)², from N, C, H, W (spec §6)
_CONSTANT = {
    "paper": lambda n, c, h, w: 0.5 / n,
    "official_conv_c01b": lambda n, c, h, w: 0.5 / (n * c * w),
    "mse": lambda n, c, h, w: 1.0 / (n * c * h * w),
    "sum": lambda n, c, h, w: 1.0,
}


def _constant(loss, x, convention: str | None = None) -> float:
    shape = (x["r_s"] if "r_s" in x else x["u_t"]).shape
    return _CONSTANT[loss.loss.conventions.canonical(convention or loss.convention)](*shape)


@guarantee("≥ 0, zero at a match")
def zero_at_match_and_nonnegative(loss, x) -> float:
    """A sum of squares: ≥ 0, and 0 with zero gradient when the (regressed) student equals the teacher."""
    if float(loss(**x)) < 0:
        raise AssertionError(f"negative squared error {loss(**x)}")
    wrt = "r_s" if "r_s" in x else "v_g"
    at_match = {**x, "u_t": x["r_s"].copy() if wrt == "r_s" else _regressed(x)}
    ratio = compare(loss(**at_match), 0.0, EXACT, loss.scale(at_match), "loss at a match")
    return max(ratio, compare(loss.grad(wrt, **at_match), 0 * x[wrt], FD_GRADIENT, loss.scale(at_match),
                              "gradient at a match"))


@guarantee("official_conv_c01b = paper/(C·W), mse = paper × 2/(C·H·W), sum = paper · 2N", "*/[!p]*")
def conventions_are_multiples_of_paper(loss, x) -> float:
    """Each convention is the paper's value times a constant: the official conv HintCost sums over
    rows (c01b axis 1) and averages the rest, paper/(C·W); F.mse_loss averages over N·C·H·W
    entries without the ½, paper × 2/(C·H·W); MSELoss(reduction='sum') has neither the ½ nor the
    batch mean, paper · 2N."""
    factor = _constant(loss, x) / _constant(loss, x, "paper")
    paper = loss.variant(convention="paper")
    return compare(loss(**x), paper(**x) * factor, EXACT, loss.scale(x), f"{loss.convention} vs paper")


@guarantee("gradient = −(u − r)/N", "hint_loss/*")
def gradient_is_residual(loss, x) -> float:
    """∂L/∂r = −(u − r)/N (paper), and −2c·(u − r) for the constant c of every other convention."""
    expected = -2 * _constant(loss, x) * (x["u_t"] - x["r_s"])
    return compare(loss.grad("r_s", **x), expected, FD_GRADIENT, loss.scale(x), "gradient vs −(u − r)/N")


@guarantee("regressed = hint loss of r(v_g)", "regressed_hint_loss/*")
def composition_is_hint_loss_of_regressor(loss, x) -> float:
    """The regressed loss is the hint loss of r(v_g): L(v_g, u) = L_HT(r(v_g), u)."""
    plain = loss.variant(loss="hint_loss")
    return compare(loss(**x), plain(r_s=_regressed(x), u_t=x["u_t"]), Tolerance(1e-9, 1e-12), loss.scale(x),
                   "regressed loss vs hint loss of r(v_g)")


@guarantee("∂L/∂b = summed residual", "regressed_hint_loss/*")
def bias_gradient_is_summed_residual(loss, x) -> float:
    """Backpropagation through the regressor: the gradient of the last bias before the activation
    (the layer's b, or BatchNorm's β) is Σ over what each feeds of −2c·(u − r)·φ′(z), with φ′ = 1
    (no activation), 1[z > 0] (ReLU) or 1[piece is the maximum] (maxout)."""
    reg, geometry, k = x["regressor"], _geometry(x), x["pieces"]
    last = "bn.bias" if "bn.bias" in reg else "layer.bias"
    z = ref.pre_activation(x["v_g"], reg, geometry, x.get("bn_eps", 1e-5))
    dz = -2 * _constant(loss, x) * (x["u_t"] - _regressed(x))  # ∂L/∂r
    if x["activation"] == "relu":
        dz = dz * (z > 0)
    elif x["activation"] == "maxout":
        pieces = z.reshape(z.shape[0], -1, k, *z.shape[2:])
        dz = (dz[:, :, None] * (pieces == pieces.max(axis=2, keepdims=True))).reshape(z.shape)
    per_unit = last == "layer.bias" and geometry.layer == "linear"
    expected = dz.sum(axis=0).reshape(-1) if per_unit else dz.sum(axis=(0, 2, 3))
    start = sum(v.size for v in list(reg.values())[:list(reg).index(last)])  # its place in ∂L/∂regressor
    actual = loss.grad("regressor", **x)[start:start + reg[last].size]
    return compare(actual, expected, FD_GRADIENT, loss.scale(x), f"∂L/∂{last} vs summed residual")


@guarantee("conv_valid = conv1x1 at equal sizes", "regressed_hint_loss/paper")
def conv1x1_is_conv_valid_at_equal_sizes(loss, x) -> float:
    """At equal spatial sizes the paper's kernel rule gives k = N_g − N_h + 1 = 1: conv_valid = conv1x1."""
    if x["kind"] != "conv1x1":
        return 0.0
    return compare(loss(**{**x, "kind": "conv_valid"}), loss(**x), EXACT, loss.scale(x), "conv_valid vs conv1x1")


METHOD = Method(
    name="fitnet",
    title="FitNet — hints for thin deep nets",
    citation="Romero, Ballas, Kahou, Chassang, Gatta, Bengio. FitNets: Hints for Thin Deep Nets. ICLR 2015.",
    family="features",
    losses=(
        Loss(ref.hint_loss, by_gradient(fitnet_inputs), differentiable=("r_s",)),
        Loss(ref.regressed_hint_loss, by_gradient(fitnet_regressed_inputs), differentiable=("v_g", "regressor")),
    ),
    properties=(zero_at_match_and_nonnegative, REDUCTIONS_AGREE, conventions_are_multiples_of_paper,
                gradient_is_residual, composition_is_hint_loss_of_regressor, bias_gradient_is_summed_residual,
                conv1x1_is_conv_valid_at_equal_sizes),
    error_scale=_scale,
    examples=_golden(),
)
