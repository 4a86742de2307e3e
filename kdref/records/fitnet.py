"""The registry record of FitNet (hint-based training with a regressor), with its properties.

Two losses: the hint loss on (regressed student, teacher), and its composition with the
regressor, differentiated with respect to the student's guided features and the regressor's
weight and bias (gradient draws carry no BatchNorm; ``tests/test_fitnet.py`` checks its
parameters' gradients).
"""

from __future__ import annotations

import numpy as np

from kdref.proof import compare, max_abs
from kdref.records._shared import REDUCTIONS_AGREE
from kdref.reference import fitnet as ref
from kdref.registry import EXACT, FD_GRADIENT, Loss, Method, Property, Tolerance, by_gradient
from kdref.strategies.fitnet import fitnet_inputs, fitnet_regressed_inputs

_REGRESSOR_KEYS = ("weight", "bias", "kind", "activation", "pieces", "bn_weight", "bn_bias", "bn_eps")


def _regressor_args(x) -> dict:
    return {k: x[k] for k in _REGRESSOR_KEYS if k in x}


def _regressed(x) -> np.ndarray:
    """r(v_g) by the reference, for the teacher's shape."""
    return ref.regressor(x["v_g"], out_shape=x["u_t"].shape[1:], **_regressor_args(x))


def _scale(inputs, convention) -> float:
    """The size of what the loss sums: C·H·W squared errors of magnitude |u| + |r|.

    For the regressed loss |r| is bounded by the layer's sum of absolute terms Σ|w||v| + |b|
    (the scale of its rounding error too), amplified by BatchNorm's γ/√(σ² + ε), which is large
    for a channel of nearly constant values.
    """
    if "r_s" in inputs:
        return (1.0 + max_abs(inputs)) ** 2
    v_g, u_t = inputs["v_g"], inputs["u_t"]
    geometry = ref.regressor_geometry(v_g.shape[1:], u_t.shape[1:], inputs.get("kind", "conv_valid"),
                                       inputs.get("pieces", 1))
    absolute = {k: np.abs(inputs[k]) if inputs.get(k) is not None else None for k in ("weight", "bias")}
    size = float(np.max(ref.linear_part(np.abs(v_g), absolute["weight"], absolute["bias"], geometry)))
    if inputs.get("bn_weight") is not None:
        z = ref.linear_part(v_g, inputs.get("weight"), inputs.get("bias"), geometry)
        gain = np.abs(inputs["bn_weight"]) / np.sqrt(np.var(z, axis=(0, 2, 3)) + inputs["bn_eps"])
        size = size * float(np.max(gain)) + float(np.max(np.abs(inputs["bn_bias"])))
    return float(np.prod(u_t.shape[1:])) * (1.0 + float(np.max(np.abs(u_t))) + size) ** 2


def _shape(x) -> tuple[int, int, int, int]:
    return (x["r_s"] if "r_s" in x else x["u_t"]).shape


#: the constant c of each convention in L = c · Σ (u − r)², from N, C, H, W (spec §6)
_CONSTANT = {
    "paper": lambda n, c, h, w: 0.5 / n,
    "official_conv_c01b": lambda n, c, h, w: 0.5 / (n * c * w),
    "mse": lambda n, c, h, w: 1.0 / (n * c * h * w),
    "sum": lambda n, c, h, w: 1.0,
}


def _constant(loss, x) -> float:
    return _CONSTANT[loss.loss.conventions.canonical(loss.convention)](*_shape(x))


def _with_perfect_hint(x) -> dict:
    """The inputs with the teacher replaced by the (regressed) student."""
    if "r_s" in x:
        return {**x, "u_t": x["r_s"].copy()}
    return {**x, "u_t": _regressed(x)}


def zero_at_match_and_nonnegative(loss, x) -> float:
    """A sum of squares: ≥ 0, and 0 with zero gradient when the (regressed) student equals the teacher."""
    if float(loss(**x)) < 0:
        raise AssertionError(f"negative squared error {loss(**x)}")
    at_match = _with_perfect_hint(x)
    ratio = compare(loss(**at_match), 0.0, EXACT, loss.scale(at_match), "loss at a match")
    wrt = "r_s" if "r_s" in x else "v_g"
    return max(ratio, compare(loss.grad(wrt, **at_match), 0 * x[wrt], FD_GRADIENT, loss.scale(at_match),
                              "gradient at a match"))


def _relates_to_paper(factor):
    def check(loss, x) -> float:
        paper = loss.variant(convention="paper")
        return compare(loss(**x), paper(**x) * factor(*_shape(x)), EXACT, loss.scale(x), f"{loss.convention} vs paper")
    return check


def mse_is_paper_times_2_over_chw(loss, x) -> float:
    """F.mse_loss averages over N·C·H·W entries without the ½: exactly paper × 2/(C·H·W)."""
    return _relates_to_paper(lambda n, c, h, w: 2.0 / (c * h * w))(loss, x)


def official_is_paper_over_cw(loss, x) -> float:
    """The official conv HintCost sums over rows (c01b axis 1) and averages the rest: paper/(C·W)."""
    return _relates_to_paper(lambda n, c, h, w: 1.0 / (c * w))(loss, x)


def sum_is_paper_times_2n(loss, x) -> float:
    """MSELoss(reduction='sum') has neither the ½ nor the batch mean: paper · 2N."""
    return _relates_to_paper(lambda n, c, h, w: 2.0 * n)(loss, x)


def gradient_is_residual(loss, x) -> float:
    """∂L/∂r = −(u − r)/N (paper), and −2c·(u − r) for the constant c of every other convention."""
    expected = -2 * _constant(loss, x) * (x["u_t"] - x["r_s"])
    return compare(loss.grad("r_s", **x), expected, FD_GRADIENT, loss.scale(x), "gradient vs −(u − r)/N")


def composition_is_hint_loss_of_regressor(loss, x) -> float:
    """The regressed loss is the hint loss of r(v_g): L(v_g, u) = L_HT(r(v_g), u)."""
    plain = loss.variant(loss="hint_loss")
    return compare(loss(**x), plain(r_s=_regressed(x), u_t=x["u_t"]), Tolerance(1e-9, 1e-12), loss.scale(x),
                   "regressed loss vs hint loss of r(v_g)")


def bias_gradient_is_summed_residual(loss, x) -> float:
    """Backpropagation through the regressor: ∂L/∂b = Σ over what each bias feeds of −2c·(u − r)·φ′(z),
    with φ′ = 1 (no activation), 1[z > 0] (ReLU) or 1[piece is the maximum] (maxout)."""
    geometry = ref.regressor_geometry(x["v_g"].shape[1:], x["u_t"].shape[1:], x["kind"], x["pieces"])
    z = ref.linear_part(x["v_g"], x["weight"], x["bias"], geometry)
    upstream = -2 * _constant(loss, x) * (x["u_t"] - _regressed(x))  # ∂L/∂r
    if x["activation"] == "relu":
        dz = upstream * (z > 0)
    elif x["activation"] == "maxout":
        n, units, h, w = z.shape
        pieces = z.reshape(n, units // x["pieces"], x["pieces"], h, w)
        winner = pieces == pieces.max(axis=2, keepdims=True)
        dz = (upstream[:, :, None] * winner).reshape(z.shape)
    else:
        dz = upstream
    expected = dz.sum(axis=0).reshape(-1) if geometry.layer == "linear" else dz.sum(axis=(0, 2, 3))
    return compare(loss.grad("bias", **x), expected, FD_GRADIENT, loss.scale(x), "∂L/∂b vs summed residual")


def conv1x1_is_conv_valid_at_equal_sizes(loss, x) -> float:
    """At equal spatial sizes the paper's kernel rule gives k = N_g − N_h + 1 = 1: conv_valid = conv1x1."""
    if x["kind"] != "conv1x1":
        return 0.0
    return compare(loss(**{**x, "kind": "conv_valid"}), loss(**x), EXACT, loss.scale(x), "conv_valid vs conv1x1")


_MSE = ("*/mse", "*/kdzoo", "*/repdistiller", "*/mdistiller")

METHOD = Method(
    name="fitnet",
    title="FitNet — hints for thin deep nets",
    citation="Romero, Ballas, Kahou, Chassang, Gatta, Bengio. FitNets: Hints for Thin Deep Nets. ICLR 2015.",
    family="features",
    losses=(
        Loss(ref.hint_loss, by_gradient(fitnet_inputs), differentiable=("r_s",)),
        Loss(ref.regressed_hint_loss, by_gradient(fitnet_regressed_inputs), differentiable=("v_g", "weight", "bias")),
    ),
    properties=(
        Property("≥ 0, zero at a match", zero_at_match_and_nonnegative.__doc__, zero_at_match_and_nonnegative),
        REDUCTIONS_AGREE,
        Property("mse = paper × 2/(C·H·W)", mse_is_paper_times_2_over_chw.__doc__, mse_is_paper_times_2_over_chw,
                 _MSE),
        Property("official_conv_c01b = paper/(C·W)", official_is_paper_over_cw.__doc__, official_is_paper_over_cw,
                 ("*/official_conv_c01b",)),
        Property("sum = paper · 2N", sum_is_paper_times_2n.__doc__, sum_is_paper_times_2n, ("*/sum",)),
        Property("gradient = −(u − r)/N", gradient_is_residual.__doc__, gradient_is_residual, ("hint_loss/*",)),
        Property("regressed = hint loss of r(v_g)", composition_is_hint_loss_of_regressor.__doc__,
                 composition_is_hint_loss_of_regressor, ("regressed_hint_loss/*",)),
        Property("∂L/∂b = summed residual", bias_gradient_is_summed_residual.__doc__,
                 bias_gradient_is_summed_residual, ("regressed_hint_loss/*",)),
        Property("conv_valid = conv1x1 at equal sizes", conv1x1_is_conv_valid_at_equal_sizes.__doc__,
                 conv1x1_is_conv_valid_at_equal_sizes, ("regressed_hint_loss/paper",)),
    ),
    error_scale=_scale,
)
