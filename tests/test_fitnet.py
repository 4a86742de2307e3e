"""FitNet checks the generic harness cannot state: the regressor module's geometry, its equality with
the reference through its own parameters (BatchNorm included) and its use as the loss's ``regressor``
argument, evaluation mode, shapes no regressor can map and the other rules of the check hook, ties
and kinks of the activations, and the edge cases of fitnet.md §5 (zero and 1×1 maps: golden edge cases)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kdref.proof import to_numpy
from kdref.reference import fitnet as ref
from kdref.torch import fitnet as tf
from tests.helpers import t

# fitnet.md §7
V = np.array([[[[0.5, 1.5], [-1.0, 0.0], [2.0, -0.5]]], [[[-2.0, 0.0], [1.0, 3.0], [0.5, -1.0]]]])
P = {"layer.weight": np.array([1.0, -0.5]).reshape(2, 1, 1, 1), "layer.bias": np.array([0.0, 0.5])}
R = np.array([[[[0.5, 1.5], [0.0, 0.0], [2.0, 0.0]], [[0.25, 0.0], [1.0, 0.5], [0.0, 0.75]]],
              [[[0.0, 0.0], [1.0, 3.0], [0.5, 0.0]], [[1.5, 0.5], [0.0, 0.0], [0.25, 1.0]]]])
U = np.array([[[[1.0, 1.0], [0.0, 0.5], [2.5, 0.0]], [[0.0, 0.0], [1.0, 0.5], [0.0, 1.0]]],
              [[[0.0, 0.5], [1.5, 2.0], [0.0, 0.0]], [[1.5, 0.0], [0.0, 0.0], [0.5, 1.0]]]])


def tensors(params: dict) -> dict:
    return {k: t(v) for k, v in params.items()}


def arrays(module: nn.Module) -> dict:
    """A module's parameters as the reference takes them."""
    return {k: to_numpy(p) for k, p in module.named_parameters()}


@pytest.mark.parametrize("kind", ["conv1x1", "conv_valid", "repdistiller"])
def test_worked_example_regressor_output(kind):
    """fitnet.md §7: r(v_g) = ReLU(w_c·v_g + b_c) as printed, on both sides and through the module,
    which is also the loss's regressor argument as it is."""
    assert np.array_equal(ref.regressor(V, P, out_shape=(2, 3, 2), kind=kind), R)
    assert np.array_equal(to_numpy(tf.regressor(t(V), tensors(P), out_shape=(2, 3, 2), kind=kind)), R)
    module = tf.HintRegressor((1, 3, 2), (2, 3, 2), kind=kind).double()
    module.load_state_dict(tensors(P))
    assert np.array_equal(to_numpy(module(t(V))), R)
    assert tf.regressed_hint_loss(t(V), t(U), module, kind=kind, convention="mse").item() == 0.1328125
    loss = tf.RegressedHintLoss((1, 3, 2), (2, 3, 2), kind=kind, convention="mse").double()
    loss.regressor.load_state_dict(module.state_dict())
    assert loss(t(V), t(U)).item() == 0.1328125


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
    expected = ref.regressor(to_numpy(v), arrays(module) or None, out_shape=t_shape, kind=kind,
                             activation=activation, pieces=pieces)
    np.testing.assert_allclose(to_numpy(module(v)), expected, rtol=1e-12, atol=1e-12)


def test_module_matches_a_plain_conv_bn_relu_stack_in_both_modes():
    """With BatchNorm the module is nn.Conv2d → nn.BatchNorm2d → ReLU: the same running statistics in
    training mode and the same output in evaluation mode (which uses them); the loss, given the module,
    uses the batch's statistics and leaves the running ones alone."""
    torch.manual_seed(1)
    module = tf.HintRegressor((4, 6, 6), (8, 3, 3), kind="repdistiller", batchnorm=True).double()
    stack = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU()).double()
    stack[0].load_state_dict(module.layer.state_dict())
    v, u = torch.randn(5, 4, 6, 6, dtype=torch.float64), torch.randn(5, 8, 3, 3, dtype=torch.float64)
    loss = tf.regressed_hint_loss(v, u, module, kind="repdistiller")
    assert torch.equal(module.bn.running_mean, torch.zeros(8, dtype=torch.float64))
    outputs = [module(v) for _ in range(2)]
    for output in outputs:
        torch.testing.assert_close(output, stack(v))
    torch.testing.assert_close(loss, tf.hint_loss(outputs[0], u))
    torch.testing.assert_close(module.bn.running_mean, stack[1].running_mean)
    torch.testing.assert_close(module.bn.running_var, stack[1].running_var)
    module.eval()
    stack.eval()
    torch.testing.assert_close(module(v), stack(v))


def test_maxout_tie_gives_the_gradient_to_the_first_piece():
    """fitnet.md §5: at a tie between maxout pieces the gradient goes to the first maximal piece."""
    b = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    params = {"layer.weight": torch.ones(2, 1, 1, 1, dtype=torch.float64), "layer.bias": b}
    loss = tf.regressed_hint_loss(t([[[[1.0]]]]), t([[[[0.0]]]]), params, kind="conv1x1", activation="maxout",
                                  pieces=2)
    assert torch.autograd.grad(loss, b)[0].tolist() == [1.0, 0.0]


def test_relu_subgradient_at_zero_is_zero():
    """fitnet.md §5: ReLU at 0 passes no gradient (PyTorch's choice)."""
    params = {"layer.weight": t([[[[1.0]]]], True), "layer.bias": t([-1.0], True)}
    loss = tf.regressed_hint_loss(t([[[[1.0]]]]), t([[[[1.0]]]]), params, kind="conv1x1")
    assert loss.item() == 0.5
    assert [g.item() for g in torch.autograd.grad(loss, list(params.values()))] == [0.0, 0.0]


@pytest.mark.parametrize(("s_shape", "t_shape", "kind", "words"), [
    ((2, 3, 3), (2, 4, 4), "conv_valid", "at least as large"),
    ((2, 4, 2), (2, 3, 3), "conv_valid", "at least as large"),
    ((2, 3, 3), (2, 2, 2), "conv1x1", "equal spatial sizes"),
    ((2, 3, 3), (3, 3, 3), "identity", "equal shapes"),
    ((2, 3, 3), (2, 5, 5), "repdistiller", "at least as large"),
    ((2, 8, 5), (2, 4, 5), "repdistiller", "not the teacher's 4×5"),
    ((2, 2, 3), (2, 4, 3), "repdistiller", "not the teacher's 4×3"),
])
def test_shapes_no_regressor_can_map_raise(s_shape, t_shape, kind, words):
    """fitnet.md §5: shapes a regressor kind cannot map raise a ValueError that says why, on both
    sides and in the module (the check hook's first rule)."""
    v, u, params = np.ones((2, *s_shape)), np.ones((2, *t_shape)), {"layer.weight": np.ones(1)}
    with pytest.raises(ValueError, match=words):
        ref.regressed_hint_loss(v, u, params, kind=kind)
    with pytest.raises(ValueError, match=words):
        tf.regressed_hint_loss(t(v), t(u), tensors(params), kind=kind)
    with pytest.raises(ValueError, match=words):
        tf.HintRegressor(s_shape, t_shape, kind=kind)


_BN = {"bn.weight": np.ones(2), "bn.bias": np.ones(2)}


@pytest.mark.parametrize(("change", "error", "words"), [
    ({"regressor": {**P, "layer.weight": np.ones((2, 1, 3, 3))}}, ValueError,
     r"^regressor\['layer.weight'\] must have shape \(2, 1, 1, 1\) for a conv1x1 regressor"),
    ({"regressor": None}, ValueError, r"^regressor is required for a conv1x1 regressor"),
    ({"regressor": {**P, "bn.weight": np.ones(2)}}, ValueError, r"^regressor must hold both 'bn.weight' and 'bn.bias'"),
    ({"v_g": V[:1], "u_t": U[:1, :, :1, :1], "kind": "conv_valid",
      "regressor": {"layer.weight": np.ones((2, 1, 3, 2)), **_BN}}, ValueError, "more than one value per channel"),
    ({"activation": "maxout"}, ValueError, "^pieces must be ≥ 2 with activation='maxout' and 1 otherwise"),
    ({"v_g": R, "kind": "identity"}, ValueError, "^regressor must be None for an identity regressor"),
])
def test_check_hook_rules(change, error, words):
    """The rules between arguments that the declaration's kinds cannot state, on both sides: the
    parameters the kind's layer has, with its shapes (their dtype and device are the declaration's
    ``like``, broken by the generated bad inputs), BatchNorm's γ with β and its batch statistics,
    maxout's pieces, an identity regressor without parameters."""
    args = {"v_g": V, "u_t": U, "regressor": P, "kind": "conv1x1", **change}
    with pytest.raises(error, match=words):
        ref.regressed_hint_loss(**args)
    torch_args = {k: {n: torch.tensor(a) for n, a in v.items()} if isinstance(v, dict) else
                  torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in args.items()}
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
    with pytest.raises(ValueError, match="kind must be one of"):
        tf.HintRegressor((2, 4, 4), (3, 4, 4), kind="conv2d")


def test_batch_of_one_with_batchnorm_raises_like_pytorch():
    """fitnet.md §5: BatchNorm in training mode with one value per channel is refused (PyTorch raises too)."""
    module = tf.HintRegressor((2, 1, 1), (3, 1, 1), kind="conv1x1", batchnorm=True)
    with pytest.raises(ValueError, match="more than one value per channel"):
        module(torch.ones(1, 2, 1, 1))
    module.eval()
    assert module(torch.ones(1, 2, 1, 1)).shape == (1, 3, 1, 1)


def test_autocast_runs_the_regressor_in_float32():
    """Under bfloat16 autocast a float32 module meets bfloat16 features: the regressor and the loss
    are computed in float32."""
    module = tf.RegressedHintLoss((4, 4, 4), (8, 4, 4), kind="conv1x1", batchnorm=True)
    v = torch.randn(2, 4, 4, 4).bfloat16()
    u = torch.randn(2, 8, 4, 4).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert module.regressor(v).dtype == torch.float32
        loss = module(v, u)
    assert loss.dtype == torch.float32
    expected = ref.regressed_hint_loss(to_numpy(v), to_numpy(u), arrays(module.regressor), kind="conv1x1")
    assert loss.item() == pytest.approx(expected, rel=1e-5)
