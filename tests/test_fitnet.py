"""FitNet checks the generic harness cannot state: the regressor module's geometry and its equality
with the reference through its own weights (BatchNorm included), BatchNorm's gradients, shapes no
regressor can map, ties and kinks of the activations, and the edge cases of fitnet.md §5."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kdref.proof import fd_gradient, to_numpy
from kdref.reference import fitnet as ref
from kdref.torch import fitnet as tf

# fitnet.md §7
V = np.array([[[[0.5, 1.5], [-1.0, 0.0], [2.0, -0.5]]], [[[-2.0, 0.0], [1.0, 3.0], [0.5, -1.0]]]])
W = np.array([1.0, -0.5]).reshape(2, 1, 1, 1)
B = np.array([0.0, 0.5])
R = np.array([[[[0.5, 1.5], [0.0, 0.0], [2.0, 0.0]], [[0.25, 0.0], [1.0, 0.5], [0.0, 0.75]]],
              [[[0.0, 0.0], [1.0, 3.0], [0.5, 0.0]], [[1.5, 0.5], [0.0, 0.0], [0.25, 1.0]]]])
U = np.array([[[[1.0, 1.0], [0.0, 0.5], [2.5, 0.0]], [[0.0, 0.0], [1.0, 0.5], [0.0, 1.0]]],
              [[[0.0, 0.5], [1.5, 2.0], [0.0, 0.0]], [[1.5, 0.0], [0.0, 0.0], [0.5, 1.0]]]])


def t64(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


@pytest.mark.parametrize("kind", ["conv1x1", "conv_valid", "repdistiller"])
def test_worked_example_regressor_output(kind):
    """fitnet.md §7: r(v_g) = ReLU(w_c·v_g + b_c) as printed, on both sides and through the module."""
    assert np.array_equal(ref.regressor(V, W, B, out_shape=(2, 3, 2), kind=kind), R)
    assert np.array_equal(to_numpy(tf.regressor(t64(V), t64(W), t64(B), out_shape=(2, 3, 2), kind=kind)), R)
    module = tf.HintRegressor((1, 3, 2), (2, 3, 2), kind=kind).double()
    with torch.no_grad():
        module.layer.weight.copy_(t64(W))
        module.layer.bias.copy_(t64(B))
    assert np.array_equal(to_numpy(module(t64(V))), R)
    loss = tf.RegressedHintLoss((1, 3, 2), (2, 3, 2), kind=kind, convention="mse").double()
    loss.regressor.load_state_dict(module.state_dict())
    assert loss(t64(V), t64(U)).item() == 0.1328125


@pytest.mark.parametrize(("s_hw", "t_hw", "layer", "kernel", "stride", "padding"), [
    (32, 16, nn.Conv2d, (3, 3), (2, 2), (1, 1)),
    (8, 16, nn.ConvTranspose2d, (4, 4), (2, 2), (1, 1)),
    (10, 8, nn.Conv2d, (3, 3), (1, 1), (0, 0)),
    (8, 8, nn.Conv2d, (1, 1), (1, 1), (0, 0)),
])
def test_repdistiller_convreg_geometry(s_hw, t_hw, layer, kernel, stride, padding):
    """fitnet.md §7: RepDistiller's and mdistiller's ConvReg layers for 32→16, 8→16, 10→8, 8→8, all
    with a bias, followed by BatchNorm2d(t_C) and ReLU."""
    module = tf.HintRegressor((16, s_hw, s_hw), (32, t_hw, t_hw), kind="repdistiller", batchnorm=True)
    assert type(module.layer) is layer
    assert (module.layer.in_channels, module.layer.out_channels) == (16, 32)
    assert (module.layer.kernel_size, module.layer.stride, module.layer.padding) == (kernel, stride, padding)
    assert module.layer.bias is not None
    assert type(module.bn) is nn.BatchNorm2d and module.bn.num_features == 32
    assert module.activation == "relu"
    assert module(torch.randn(2, 16, s_hw, s_hw)).shape == (2, 32, t_hw, t_hw)


_SHAPES = [
    ((3, 8, 6), (4, 4, 3), "repdistiller"),   # 3×3 stride 2 on a non-square map
    ((3, 4, 3), (4, 8, 6), "repdistiller"),   # 4×4 transposed, stride 2
    ((3, 5, 4), (4, 2, 3), "repdistiller"),   # the valid branch, kernel (4, 2)
    ((3, 5, 4), (4, 2, 3), "conv_valid"),
    ((3, 2, 3), (4, 3, 2), "fc"),
]
_MODULES = [(*shapes, activation, batchnorm) for shapes in _SHAPES for activation in ("relu", "none", "maxout")
            for batchnorm in (False, True)] + [((3, 2, 3), (3, 2, 3), "identity", "none", False)]


@pytest.mark.parametrize(("s_shape", "t_shape", "kind", "activation", "batchnorm"), _MODULES)
def test_module_equals_reference_with_its_weights(s_shape, t_shape, kind, activation, batchnorm):
    """HintRegressor (training mode) computes the reference regressor with the module's own parameters."""
    pieces = 2 if activation == "maxout" else 1
    torch.manual_seed(0)
    module = tf.HintRegressor(s_shape, t_shape, kind=kind, activation=activation, pieces=pieces,
                              batchnorm=batchnorm).double()
    if batchnorm:
        with torch.no_grad():
            module.bn.weight.uniform_(0.5, 2.0)
            module.bn.bias.uniform_(-1.0, 1.0)
    v = torch.randn(3, *s_shape, dtype=torch.float64)
    params = {}
    if module.layer is not None:
        params.update(weight=to_numpy(module.layer.weight), bias=to_numpy(module.layer.bias))
    if batchnorm:
        params.update(bn_weight=to_numpy(module.bn.weight), bn_bias=to_numpy(module.bn.bias), bn_eps=module.bn.eps)
    expected = ref.regressor(to_numpy(v), out_shape=t_shape, kind=kind, activation=activation, pieces=pieces, **params)
    np.testing.assert_allclose(to_numpy(module(v)), expected, rtol=1e-12, atol=1e-12)


def test_module_matches_a_plain_conv_bn_relu_stack_in_both_modes():
    """With BatchNorm the module is nn.Conv2d → nn.BatchNorm2d → ReLU: the same running statistics in
    training mode and the same output in evaluation mode (which uses them)."""
    torch.manual_seed(1)
    module = tf.HintRegressor((4, 6, 6), (8, 3, 3), kind="repdistiller", batchnorm=True).double()
    stack = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU()).double()
    stack[0].load_state_dict(module.layer.state_dict())
    v = torch.randn(5, 4, 6, 6, dtype=torch.float64)
    for _ in range(2):
        torch.testing.assert_close(module(v), stack(v))
    torch.testing.assert_close(module.bn.running_mean, stack[1].running_mean)
    torch.testing.assert_close(module.bn.running_var, stack[1].running_var)
    module.eval()
    stack.eval()
    torch.testing.assert_close(module(v), stack(v))


def _bn_inputs(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"v_g": rng.normal(size=(3, 2, 3, 3)), "u_t": rng.normal(size=(3, 3, 2, 2)),
            "weight": rng.normal(size=(3, 2, 2, 2)) / 3, "bias": rng.normal(size=3),
            "bn_weight": rng.uniform(0.5, 2.0, size=3), "bn_bias": rng.normal(size=3)}


@pytest.mark.parametrize("activation", ["none", "relu"])
def test_batchnorm_gradients(activation):
    """gradcheck through BatchNorm, and the torch gradient of every argument (γ and β included)
    against finite differences of the reference (the harness's gradient draws have no BatchNorm)."""
    x = _bn_inputs(2)
    knobs = {"kind": "conv_valid", "activation": activation, "convention": "paper"}
    wrt = list(x)
    tensors = {k: t64(v).requires_grad_(k != "u_t") for k, v in x.items()}
    grads = torch.autograd.grad(tf.regressed_hint_loss(**tensors, **knobs), [tensors[k] for k in wrt if k != "u_t"])
    for name, grad in zip([k for k in wrt if k != "u_t"], grads, strict=True):
        expected = fd_gradient(lambda **kw: ref.regressed_hint_loss(**kw, **knobs), x, name)
        np.testing.assert_allclose(to_numpy(grad), expected, rtol=1e-6, atol=1e-8)

    def f(v_g, weight, bias, bn_weight, bn_bias):
        return tf.regressed_hint_loss(v_g, tensors["u_t"], weight, bias, bn_weight=bn_weight, bn_bias=bn_bias, **knobs)

    inputs = tuple(t64(x[k]).requires_grad_() for k in ("v_g", "weight", "bias", "bn_weight", "bn_bias"))
    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)


def test_maxout_tie_gives_the_gradient_to_the_first_piece():
    """fitnet.md §5: at a tie between maxout pieces the gradient goes to the first maximal piece."""
    v = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    w = torch.ones(2, 1, 1, 1, dtype=torch.float64)
    b = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    u = torch.zeros(1, 1, 1, 1, dtype=torch.float64)
    loss = tf.regressed_hint_loss(v, u, w, b, kind="conv1x1", activation="maxout", pieces=2)
    (grad,) = torch.autograd.grad(loss, b)
    assert grad.tolist() == [1.0, 0.0]


def test_relu_subgradient_at_zero_is_zero():
    """fitnet.md §5: ReLU at 0 passes no gradient (PyTorch's choice)."""
    v = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    w = torch.ones(1, 1, 1, 1, dtype=torch.float64, requires_grad=True)
    b = torch.full((1,), -1.0, dtype=torch.float64, requires_grad=True)
    loss = tf.regressed_hint_loss(v, torch.ones(1, 1, 1, 1, dtype=torch.float64), w, b, kind="conv1x1")
    assert loss.item() == 0.5
    assert [g.item() for g in torch.autograd.grad(loss, (w, b))] == [0.0, 0.0]


@pytest.mark.parametrize(("s_shape", "t_shape", "kind", "words"), [
    ((2, 3, 3), (2, 4, 4), "conv_valid", "at least as large"),
    ((2, 4, 2), (2, 3, 3), "conv_valid", "at least as large"),
    ((2, 3, 3), (2, 2, 2), "conv1x1", "equal spatial sizes"),
    ((2, 3, 3), (3, 3, 3), "identity", "equal shapes"),
    ((2, 3, 3), (2, 5, 5), "repdistiller", "at least as large"),
    ((2, 8, 5), (2, 4, 5), "repdistiller", "not the teacher's 4×5"),
    ((2, 2, 3), (2, 4, 3), "repdistiller", "not the teacher's 4×3"),
    ((2, 3, 3), (2, 3, 3), "conv2d", "kind must be one of"),
])
def test_shapes_no_regressor_can_map_raise(s_shape, t_shape, kind, words):
    """fitnet.md §5: shapes a regressor kind cannot map raise a ValueError that says why, on both
    sides and in the module."""
    v = np.ones((2, *s_shape))
    u = np.ones((2, *t_shape))
    with pytest.raises(ValueError, match=words):
        ref.regressed_hint_loss(v, u, np.ones((1,)), kind=kind)
    with pytest.raises(ValueError, match=words):
        tf.regressed_hint_loss(t64(v), t64(u), t64(np.ones((1,))), kind=kind)
    with pytest.raises(ValueError, match=words):
        tf.HintRegressor(s_shape, t_shape, kind=kind)


_GOOD = {"v_g": V, "u_t": U, "weight": W, "bias": B, "kind": "conv1x1"}


@pytest.mark.parametrize(("change", "error", "words"), [
    ({"weight": np.ones((2, 1, 3, 3))}, ValueError, "weight must have shape"),
    ({"weight": None}, ValueError, "weight is required"),
    ({"bias": np.ones(3)}, ValueError, "bias must have shape"),
    ({"bias": np.array([0.0, np.nan])}, ValueError, "bias must be finite"),
    ({"bias": np.ones(2, dtype=np.float32)}, TypeError, "bias must have the dtype of v_g"),
    ({"bn_weight": np.ones(2)}, ValueError, "bn_weight and bn_bias"),
    ({"bn_weight": np.ones(2), "bn_bias": np.ones(3)}, ValueError, "bn_bias must have shape"),
    ({"bn_weight": np.ones(2), "bn_bias": np.ones(2), "bn_eps": 0.0}, ValueError, "bn_eps must be finite and > 0"),
    ({"v_g": V[:1], "u_t": U[:1, :, :1, :1], "kind": "conv_valid", "weight": np.ones((2, 1, 3, 2)),
      "bn_weight": np.ones(2), "bn_bias": np.ones(2)}, ValueError, "more than one value per channel"),
    ({"activation": "maxout"}, ValueError, "pieces must be ≥ 2"),
    ({"pieces": 2}, ValueError, "pieces must be ≥ 2"),
    ({"activation": "tanh"}, ValueError, "activation must be one of"),
    ({"u_t": U[:1]}, ValueError, "u_t must have the batch size of v_g"),
    ({"v_g": V[0]}, ValueError, "v_g must be 4-D"),
    ({"kind": "identity"}, ValueError, "equal shapes"),
    ({"v_g": R, "kind": "identity"}, ValueError, "weight must be None for an identity regressor"),
])
def test_bad_regressor_arguments_raise(change, error, words):
    """Bad regressor parameters raise, naming the argument, on both sides."""
    args = {**_GOOD, **change}
    with pytest.raises(error, match=words):
        ref.regressed_hint_loss(**args)
    torch_args = {k: t64(v) if isinstance(v, np.ndarray) and v.dtype == np.float64
                  else torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in args.items()}
    with pytest.raises(error, match=words):
        tf.regressed_hint_loss(**torch_args)


def test_module_refuses_other_input_shapes():
    module = tf.HintRegressor((2, 4, 4), (3, 4, 4), kind="conv1x1")
    with pytest.raises(ValueError, match=r"v_g must have shape \[N, 2, 4, 4\]"):
        module(torch.ones(1, 2, 5, 5))
    loss = tf.RegressedHintLoss((2, 4, 4), (3, 4, 4), kind="conv1x1")
    with pytest.raises(ValueError, match=r"u_t must have shape \[N, 3, 4, 4\]"):
        loss(torch.ones(1, 2, 4, 4), torch.ones(1, 3, 2, 2))
    with pytest.raises(ValueError, match="unknown convention"):
        tf.RegressedHintLoss((2, 4, 4), (3, 4, 4), convention="l2")


def test_zero_maps_and_a_single_position():
    """fitnet.md §5: nothing is normalised, so zero maps and 1×1 maps need no special case."""
    zero = np.zeros((2, 3, 1, 1))
    u = np.arange(6.0).reshape(2, 3, 1, 1)
    assert ref.hint_loss(zero, u) == 0.5 * np.sum(u**2) / 2
    assert tf.hint_loss(t64(zero), t64(u)).item() == 0.5 * np.sum(u**2) / 2
    assert ref.regressed_hint_loss(zero, u, np.ones((3, 3, 1, 1)), kind="conv1x1", activation="none") \
        == ref.hint_loss(zero, u)


def test_batch_of_one_with_batchnorm_raises_like_pytorch():
    """fitnet.md §5: BatchNorm in training mode with one value per channel is refused (PyTorch raises too)."""
    module = tf.HintRegressor((2, 1, 1), (3, 1, 1), kind="conv1x1", batchnorm=True)
    with pytest.raises(ValueError, match="more than one value per channel"):
        module(torch.ones(1, 2, 1, 1))
    module.eval()
    assert module(torch.ones(1, 2, 1, 1)).shape == (1, 3, 1, 1)


def test_autocast_runs_the_regressor_in_float32():
    """Under bfloat16 autocast the regressor and the loss are computed in float32."""
    module = tf.RegressedHintLoss((4, 4, 4), (8, 4, 4), kind="conv1x1", batchnorm=True)
    v = torch.randn(2, 4, 4, 4).bfloat16()
    u = torch.randn(2, 8, 4, 4).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert module.regressor(v).dtype == torch.float32
        loss = module(v, u)
    assert loss.dtype == torch.float32
    expected = ref.regressed_hint_loss(
        to_numpy(v), to_numpy(u), to_numpy(module.regressor.layer.weight), to_numpy(module.regressor.layer.bias),
        kind="conv1x1", bn_weight=to_numpy(module.regressor.bn.weight), bn_bias=to_numpy(module.regressor.bn.bias))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_geometry_weight_shapes():
    """The parameter shapes each kind needs, as PyTorch's layers hold them."""
    g = ref.regressor_geometry((16, 8, 8), (32, 16, 16), "repdistiller")
    assert (g.layer, g.weight_shape, g.bias_shape) == ("conv_transpose", (16, 32, 4, 4), (32,))
    g = ref.regressor_geometry((3, 5, 4), (2, 2, 3), "conv_valid", pieces=2)
    assert (g.layer, g.kernel, g.weight_shape, g.bias_shape) == ("conv", (4, 2), (4, 3, 4, 2), (4,))
    g = ref.regressor_geometry((3, 2, 2), (2, 3, 1), "fc")
    assert (g.weight_shape, g.bias_shape) == ((6, 12), (6,))
    assert ref.regressor_geometry((3, 2, 2), (3, 2, 2), "identity").weight_shape is None
