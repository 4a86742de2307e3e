"""AB checks the generic harness cannot state (ab.md §5's values are golden edge cases): the
gradient at the margin, the post-ReLU floor, the rules of the connector's ``check`` hook (the golden
examples carry no connector, so no bad connector is generated from them), the monitor, and the
modules (ABConnector, ABLoss)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdref.proof import to_numpy
from kdref.reference import ab as ref
from kdref.torch import ab as tab

# ab.md §7
S = np.array([[[[1.0, -1.0, 0.0]], [[0.5, 2.0, -0.5]]], [[[-2.0, 0.25, 1.5]], [[-1.0, 0.0, 3.0]]]])
T = np.array([[[[0.3, -0.2, 0.0]], [[1.0, -1.0, 0.5]]], [[[0.7, 0.0, -0.1]], [[-0.4, 2.0, 0.0]]]])


def t64(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def params(c_in: int, c_out: int, seed: int = 0, bias: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    p = {"weight": rng.normal(size=(c_out, c_in, 1, 1)), "bn_weight": rng.uniform(0.5, 2.0, c_out),
         "bn_bias": rng.normal(size=c_out)}
    if bias:
        p["bias"] = rng.normal(size=c_out)
    return p


# -- ab.md §5, edge cases ------------------------------------------------------------------------


@pytest.mark.parametrize(("s", "t"), [(1.0, 0.3), (-1.0, -0.2)])
def test_student_at_the_margin_has_zero_gradient(s, t):
    """At s = ±μ on the teacher's side the gradient is exactly 0 (the value 0 is a golden edge
    case): the squared hinge is C¹, so the code's asymmetric inequalities have no effect (§5, μ = 1).
    Finite differences straddle the kink there, so this is a torch test."""
    x = torch.full((1, 1, 1, 1), s, dtype=torch.float64, requires_grad=True)
    loss = tab.ab_loss(x, torch.full((1, 1, 1, 1), t, dtype=torch.float64), reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    assert grad.item() == 0.0


def test_post_relu_student_without_connector_keeps_a_floor():
    """A post-ReLU student (s ≥ 0) cannot go below −μ: each inactive teacher neuron leaves at least
    μ² (§5); the student side must be pre-activation or pass through a connector."""
    s = np.maximum(np.random.default_rng(0).normal(size=(2, 3, 2, 2)), 0.0)
    t = -np.abs(np.random.default_rng(1).normal(size=(2, 3, 2, 2)))  # every teacher neuron inactive
    per_image = ref.ab_loss(s, t, reduction="none", margin=1.5)
    assert np.all(per_image >= 1.5**2 * 12)


@pytest.mark.parametrize("side", ["reference", "torch"])
def test_batch_of_one_refuses_a_batchnorm_connector(side):
    """§5: the loss is fine for N = 1 (a golden edge case); a BatchNorm connector with one value per
    channel is refused."""
    fn, conv = (ref.ab_loss, np.asarray) if side == "reference" else (tab.ab_loss, t64)
    s, t = conv(S[:1, :, :, :1]), conv(T[:1, :, :, :1])
    with pytest.raises(ValueError, match=r"^connector: BatchNorm with batch statistics needs more than one value"):
        fn(s, t, {k: conv(v) for k, v in params(2, 2).items()})


def test_monitor_on_the_worked_example():
    """§7: mismatches per image [2, 5], mismatch rate 0.58333333 (1 − the official "activation similarity")."""
    assert ref.activation_transfer_loss(S, T).tolist() == [2.0, 5.0]
    assert f"{ref.activation_mismatch_rate(S, T).mean():.8f}" == "0.58333333"
    rate = tab.activation_mismatch_rate(t64(S), t64(T))
    np.testing.assert_array_equal(to_numpy(rate), ref.activation_mismatch_rate(S, T))
    with pytest.raises(ValueError, match=r"^teacher must have the shape of student"):
        tab.activation_mismatch_rate(t64(S), t64(T[:, :1]))


# -- the check hook's rules ----------------------------------------------------------------------


@pytest.mark.parametrize("side", ["reference", "torch"])
def test_connector_rules(side):
    """Without a connector the widths agree; a connector has 1×1 weights [C_t, C_s, 1, 1], γ, β (and
    an optional bias) [C_t], exactly its declared entries, the student's device and dtype."""
    fn, conv = (ref.ab_loss, np.asarray) if side == "reference" else (tab.ab_loss, t64)
    s, t = conv(S), conv(np.concatenate([T, T[:, :1]], axis=1))  # 2 → 3 channels
    good = {k: conv(v) for k, v in params(2, 3, bias=True).items()}
    fn(s, t, good)
    with pytest.raises(ValueError, match=r"^teacher must have the channels of student \(2\) when no connector"):
        fn(s, t)
    for key, shape in (("weight", (3, 2, 3, 3)), ("weight", (2, 2, 1, 1)), ("bias", (2,)), ("bn_weight", (3, 1)),
                       ("bn_bias", (4,))):
        with pytest.raises(ValueError, match=rf"^connector\['{key}'\] must have shape"):
            fn(s, t, {**good, key: conv(np.ones(shape))})
    with pytest.raises(ValueError, match=r"^connector must hold 'weight', 'bn_weight', 'bn_bias'; missing 'bn_bias'"):
        fn(s, t, {k: v for k, v in good.items() if k != "bn_bias"})
    with pytest.raises(ValueError, match=r"^connector holds unknown entries \['running_mean'\]"):
        fn(s, t, {**good, "running_mean": good["bn_bias"]})
    low = good["weight"].astype(np.float32) if side == "reference" else good["weight"].float()
    with pytest.raises(TypeError, match=r"^connector\['weight'\] must have the dtype of student"):
        fn(s, t, {**good, "weight": low})
    if side == "torch":
        with pytest.raises(ValueError, match=r"^connector\['bn_weight'\] must be on the device of student"):
            fn(s, t, {**good, "bn_weight": good["bn_weight"].to("meta")})


def test_float32_connector_takes_half_precision_features():
    """Under autocast the features are bfloat16 while the connector stays float32: accepted, and
    computed in float32."""
    connector = tab.ABConnector(2, 3)
    s = t64(S).bfloat16()
    t = t64(np.concatenate([T, T[:, :1]], axis=1)).bfloat16()
    loss = tab.ab_loss(s, t, connector)
    assert loss.dtype == torch.float32
    with pytest.raises(TypeError, match=r"^connector\['weight'\] must have the dtype of student"):
        tab.ab_loss(t64(S), t64(T), {k: v.half() for k, v in tab.ABConnector(2, 2).named_parameters()})


@pytest.mark.parametrize("side", ["reference", "torch"])
def test_layer_weights_rules(side):
    fn, conv = (ref.ab_loss_multi, np.asarray) if side == "reference" else (tab.ab_loss_multi, t64)
    s, t = conv(S), conv(T)
    with pytest.raises(TypeError, match=r"^weights must be a list or tuple of numbers, one per layer"):
        fn([s, s], [t, t], 0.5)
    with pytest.raises(ValueError, match=r"^weights must hold one weight per layer \(2\), got 3"):
        fn([s, s], [t, t], [1.0, 1.0, 1.0])


# -- the modules -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [False, True])
def test_connector_module_is_the_reference_connector(bias):
    """ABConnector computes the reference's 1×1 convolution and BatchNorm with its own parameters,
    in training and in evaluation mode (no running statistics: always the batch's)."""
    torch.manual_seed(0)
    module = tab.ABConnector(3, 4, bias=bias).double()
    with torch.no_grad():
        module.bn_weight.uniform_(0.5, 2.0)
        module.bn_bias.uniform_(-1.0, 1.0)
    x = torch.randn(3, 3, 2, 2, dtype=torch.float64)
    mapping = {k: to_numpy(v) for k, v in module.named_parameters()}
    assert sorted(mapping) == sorted(["weight", "bn_weight", "bn_bias", *(["bias"] if bias else [])])
    expected = ref.connector(to_numpy(x), mapping)
    np.testing.assert_allclose(to_numpy(module(x)), expected, rtol=1e-12, atol=1e-12)
    module.eval()
    np.testing.assert_allclose(to_numpy(module(x)), expected, rtol=1e-12, atol=1e-12)
    # the same as nn.Conv2d(1×1) → nn.BatchNorm2d in training mode
    stack = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1, bias=bias), torch.nn.BatchNorm2d(4)).double()
    with torch.no_grad():
        stack[0].weight.copy_(module.weight)
        if bias:
            stack[0].bias.copy_(module.bias)
        stack[1].weight.copy_(module.bn_weight)
        stack[1].bias.copy_(module.bn_bias)
    torch.testing.assert_close(module(x), stack(x))


def test_connector_module_as_the_loss_argument():
    """ab_loss(x, t, module) = ab_loss(module(x), t), and the gradient reaches every parameter; the
    conv bias's is 0 up to rounding (batch-statistics BatchNorm subtracts each channel's mean, which
    cancels a per-channel bias exactly): a sum of N·H·W terms, each at most max |∂L/∂z|."""
    torch.manual_seed(1)
    module = tab.ABConnector(2, 3, bias=True).double()
    x = t64(S)
    t = t64(np.concatenate([T, -T[:, :1]], axis=1))
    loss = tab.ab_loss(x, t, module, convention="official")
    torch.testing.assert_close(loss, tab.ab_loss(module(x), t, convention="official"))
    z = torch.nn.functional.conv2d(x, module.weight, module.bias).detach().requires_grad_(True)
    (upstream,) = torch.autograd.grad(tab.ab_loss(z, t, {"weight": torch.eye(3, dtype=torch.float64)[:, :, None, None],
                                                         "bn_weight": module.bn_weight, "bn_bias": module.bn_bias},
                                                  convention="official"), z)
    loss.backward()
    assert all(p.grad is not None and bool((p.grad != 0).any()) for name, p in module.named_parameters()
               if name != "bias")
    bound = z[:, 0].numel() * torch.finfo(torch.float64).eps * upstream.abs().max()
    assert module.bias.grad is not None and bool((module.bias.grad.abs() <= bound).all())


def test_connector_module_initialisation():
    """"he": the official normal init, standard deviation √(2/C_t) (k = 1), γ = 1, β = 0, no bias."""
    torch.manual_seed(2)
    module = tab.ABConnector(256, 512)
    assert module.bias is None and module.weight.shape == (512, 256, 1, 1)
    assert abs(module.weight.std().item() / math.sqrt(2 / 512) - 1) < 0.02
    assert torch.equal(module.bn_weight, torch.ones(512)) and torch.equal(module.bn_bias, torch.zeros(512))
    with pytest.raises(ValueError, match=r"^init must be 'he' or 'default'"):
        tab.ABConnector(2, 3, init="xavier")


def test_ab_loss_module_is_the_official_objective():
    """ABLoss: a connector where the widths differ, none where they agree, then ab_loss_multi; with
    convention="official" the CIFAR objective 3/1000·(L₃/N + L₂/(2N) + L₁/(4N))."""
    torch.manual_seed(3)
    crit = tab.ABLoss([2, 4, 8], [4, 4, 16], convention="official").double()
    assert isinstance(crit.connectors[1], torch.nn.Identity)
    students = [torch.randn(3, c, 4, 4, dtype=torch.float64) for c in (2, 4, 8)]
    teachers = [torch.randn(3, c, 4, 4, dtype=torch.float64) for c in (4, 4, 16)]
    r = [c(s) for c, s in zip(crit.connectors, students, strict=True)]
    summed = [ref.ab_loss(to_numpy(ri), to_numpy(ti), reduction="sum") for ri, ti in zip(r, teachers, strict=True)]
    expected = 3 / 1000 * (summed[2] / 3 + summed[1] / (2 * 3) + summed[0] / (4 * 3))
    assert crit(students, teachers).item() == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match=r"^students must hold one map per layer \(3\), got 2"):
        crit(students[:2], teachers[:2])


def test_ab_loss_module_under_autocast():
    """Under bfloat16 autocast a connector layer returns float32 and an identity layer bfloat16:
    every layer is compared in float32, and the loss is float32."""
    crit = tab.ABLoss([2, 4], [4, 4])
    students = [torch.randn(3, 2, 4, 4).bfloat16(), torch.randn(3, 4, 4, 4).bfloat16()]
    teachers = [torch.randn(3, 4, 4, 4).bfloat16(), torch.randn(3, 4, 4, 4).bfloat16()]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = crit(students, teachers)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
