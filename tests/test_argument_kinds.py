"""The argument kinds of the remaining families, each proven on a toy method (made here, not shipped).

- ``"parameters"``: a trainable part's parameters (a connector ``r(s) = W s + b``), an ``nn.Module``
  or a mapping on the torch side, arrays on the reference side; the gradient with respect to them is
  checked too.
- ``"state"``: a step ``(state, inputs) -> (loss, new_state)`` (a running mean), proven over a
  sequence of steps: values, gradients and the state after each step.
- ``"network"``: the networks' own gradients (input-gradient matching of two one-hidden-layer tanh
  nets): torch uses autograd with ``create_graph=True``, the reference the closed form.
- ``"indices"`` and ``"uniforms"``: randomness drawn by the caller (negatives sampled from a memory
  bank, and a weight per negative), so that both sides are deterministic.

For each kind the whole proof passes on the toy, and a seeded error of the kind (a connector weight
that gets no gradient, a wrong state update, a state update left in the graph, a wrong double
backward, indices drawn inside the loss) turns it red.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import strategies as hst
from hypothesis.extra import numpy as hnp

from kdref import proof
from kdref.declaration import Arg, Declaration, Knob
from kdref.reference._common import NUMPY
from kdref.registry import Loss, Method
from kdref.torch._common import TORCH, accumulation_dtype


def floats(shape, bound: float = 2.0):
    return hnp.arrays(np.float64, shape, elements=hst.floats(-bound, bound, allow_subnormal=False))


def golden(loss: str, convention: str, args: dict, value) -> dict:
    """One worked example, computed by hand (each toy's comment shows the arithmetic)."""
    return {"loss": loss, "convention": convention, "args": args, "value": value, "source": "computed by hand"}


def toy(name: str, loss: Loss, examples: list[dict], inputs: dict) -> Method:
    return Method(name=name, title=name, citation="a toy method of the test suite", family="features",
                  losses=(loss,), examples={"inputs": inputs, "examples": examples})


def torch_path(fn) -> str:
    return f"{__name__}:{fn.__name__}"


def full_proof(method: Method) -> list[proof.Result]:
    return proof.run_checks(method)


def failures(results: list[proof.Result]) -> dict[str, str]:
    return {f"{r.case} {r.check}": r.detail for r in results if not r.ok}


# ---------------------------------------------------------------------------------------------
# "parameters": a connector r(s) = W s + b, L = mean_n ½‖r(s_n) − t_n‖²
# worked example: s = 2, t = 1, W = 3, b = 0.5: r − t = 5.5, L = ½ · 30.25 = 15.125


def _connector_shapes(arguments, knobs) -> None:
    weight, student, teacher = arguments["connector"]["weight"], arguments["student"], arguments["teacher"]
    expected = (teacher.shape[1], student.shape[1])
    if tuple(weight.shape) != expected:
        raise ValueError(f"connector['weight'] must have shape {expected} (D_t, D_s), got {tuple(weight.shape)}")
    bias = arguments["connector"].get("bias")
    if bias is not None and tuple(bias.shape) != expected[:1]:
        raise ValueError(f"connector['bias'] must have shape {expected[:1]}, got {tuple(bias.shape)}")


CONNECTED = Declaration(
    name="connected_loss",
    args=(Arg("student", "embeddings", "student features :math:`s`"),
          Arg("teacher", "embeddings", "teacher features :math:`t`", like="student", match="batch"),
          Arg("connector", "parameters", "the connector :math:`r(s) = Ws + b`", like="student",
              keys=("weight",), optional_keys=("bias",))),
    knobs=(Knob("reduction", "mean", "over the batch", choices=("mean", "sum")),),
    check=_connector_shapes,
)


@CONNECTED.implement(NUMPY)
def connected_reference(student, teacher, connector, *, reduction):
    r = student @ connector["weight"].T + connector.get("bias", 0.0)
    per_sample = 0.5 * np.sum((r - teacher) ** 2, axis=1)
    return float(np.mean(per_sample) if reduction == "mean" else np.sum(per_sample))


@CONNECTED.implement(TORCH)
def connected_torch(student, teacher, connector, *, reduction):
    dtype = accumulation_dtype(student)
    with torch.autocast(student.device.type, enabled=False):  # the product in float32, not bfloat16
        r = student.to(dtype) @ connector["weight"].to(dtype).T
    if "bias" in connector:
        r = r + connector["bias"].to(dtype)
    per_sample = 0.5 * (r - teacher.detach().to(dtype)).square().sum(dim=1)
    return per_sample.mean() if reduction == "mean" else per_sample.sum()


@CONNECTED.implement(TORCH)
def connected_weight_detached(student, teacher, connector, *, reduction):
    """Seeded error: the connector's weight gets no gradient (a forgotten parameter)."""
    weight = connector["weight"].detach()
    return connected_torch(student, teacher, {**connector, "weight": weight}, reduction=reduction)


@hst.composite
def connected_inputs(draw, gradient: bool = False) -> dict:
    n, d_s, d_t = draw(hst.integers(1, 4)), draw(hst.integers(1, 3)), draw(hst.integers(1, 3))
    connector = {"weight": draw(floats((d_t, d_s)))}
    if draw(hst.booleans()):
        connector["bias"] = draw(floats((d_t,)))
    return {"student": draw(floats((n, d_s))), "teacher": draw(floats((n, d_t))), "connector": connector}


def connected_method(torch_fn=connected_torch) -> Method:
    loss = Loss(connected_reference, lambda convention, gradient: connected_inputs(gradient),
                differentiable=("student", "connector"), torch_path=torch_path(torch_fn))
    args = {"student": "$s", "teacher": "$t", "connector": {"weight": "$W", "bias": "$b"}}
    return toy("connected", loss, [golden("connected_loss", "paper", args, "15.125")],
               {"s": [[2.0]], "t": [[1.0]], "W": [[3.0]], "b": [0.5]})


def test_parameters_kind_is_proven():
    results = full_proof(connected_method())
    assert not failures(results)
    assert any(r.check == "fd_gradient" for r in results)


def test_parameters_kind_catches_a_parameter_without_gradient():
    failed = failures(full_proof(connected_method(connected_weight_detached)))
    assert any("fd_gradient" in k for k in failed), failed


def test_parameters_kind_takes_a_module():
    linear = torch.nn.Linear(3, 2).double()
    s, t = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    expected = connected_torch(s, t, {"weight": linear.weight, "bias": linear.bias})
    assert torch.equal(connected_torch(s, t, linear), expected)
    with pytest.raises(ValueError, match=r"^connector must hold 'weight'"):
        connected_torch(s, t, {"bias": linear.bias})


# ---------------------------------------------------------------------------------------------
# "state": a running mean μ ← m·μ + (1 − m)·x̄, L = ½‖x̄ − μ‖² against the incoming μ
# worked example: μ₀ = 0, x = 2 then 4, m = 0.75: L₁ = ½·2² = 2, μ₁ = ¼·2 = 0.5;
# L₂ = ½·3.5² = 6.125, μ₂ = ¾·0.5 + ¼·4 = 1.375


def _state_shape(arguments, knobs) -> None:
    mean, x = arguments["state"]["mean"], arguments["x"]
    if tuple(mean.shape) != (x.shape[1],):
        raise ValueError(f"state['mean'] must have shape ({x.shape[1]},), got {tuple(mean.shape)}")


RUNNING = Declaration(
    name="running_mean_loss",
    args=(Arg("x", "embeddings", "this step's batch"),
          Arg("state", "state", "the running mean :math:`\\mu` of the batch means", keys=("mean",))),
    knobs=(Knob("momentum", 0.9, "the weight :math:`m` of the old mean", low=0.0, high=1.0),),
    check=_state_shape,
)


@RUNNING.implement(NUMPY)
def running_reference(x, state, *, momentum):
    x_bar = np.mean(x, axis=0)
    loss = 0.5 * float(np.sum((x_bar - state["mean"]) ** 2))
    return loss, {"mean": momentum * state["mean"] + (1 - momentum) * x_bar}


@RUNNING.implement(TORCH)
def running_torch(x, state, *, momentum):
    dtype = accumulation_dtype(x)
    x_bar, mean = x.to(dtype).mean(dim=0), state["mean"].detach().to(dtype)
    loss = 0.5 * (x_bar - mean).square().sum()
    return loss, {"mean": (momentum * mean + (1 - momentum) * x_bar).detach()}


@RUNNING.implement(TORCH)
def running_momentum_swapped(x, state, *, momentum):
    """Seeded error: a wrong state update (m and 1 − m swapped)."""
    loss, _ = running_torch(x, state, momentum=momentum)
    x_bar = x.to(loss.dtype).mean(dim=0)
    return loss, {"mean": ((1 - momentum) * state["mean"] + momentum * x_bar).detach()}


@RUNNING.implement(TORCH)
def running_update_in_graph(x, state, *, momentum):
    """Seeded error: the new state is not detached, so gradients flow into earlier steps."""
    dtype = accumulation_dtype(x)
    x_bar, mean = x.to(dtype).mean(dim=0), state["mean"].to(dtype)
    loss = 0.5 * (x_bar - mean).square().sum()
    return loss, {"mean": momentum * mean + (1 - momentum) * x_bar}


@hst.composite
def running_inputs(draw, gradient: bool = False) -> dict:
    steps, n, d = draw(hst.integers(2, 3)), draw(hst.integers(1, 3)), draw(hst.integers(1, 3))
    return {"x": [draw(floats((n, d))) for _ in range(steps)], "state": {"mean": draw(floats((d,)))},
            "momentum": draw(hst.sampled_from([0.0, 0.5, 0.9, 1.0]))}


def running_method(torch_fn=running_torch) -> Method:
    loss = Loss(running_reference, lambda convention, gradient: running_inputs(gradient), differentiable=("x",),
                torch_path=torch_path(torch_fn))
    args = {"x": ["$x1", "$x2"], "state": {"mean": "$mu"}, "momentum": 0.75}
    return toy("running", loss, [golden("running_mean_loss", "paper", args, ["2", "0.5", "6.125", "1.375"])],
               {"x1": [[2.0]], "x2": [[4.0]], "mu": [0.0]})


def test_state_kind_is_proven_over_a_sequence():
    assert not failures(full_proof(running_method()))


def test_kdref_check_refuses_a_step_with_state_clearly():
    """kdref check compares single calls: a loss that is a step with state is refused by name, not
    compared call by call as if it had none."""
    from kdref.checker import check

    with pytest.raises(ValueError, match=r"^running_mean_loss is a step with state"):
        check(running_torch, running_method())


def test_state_kind_catches_a_wrong_state_update():
    failed = failures(full_proof(running_method(running_momentum_swapped)))
    assert any(k.endswith(" agreement") for k in failed), failed
    assert any("golden:torch" in k for k in failed)


def test_state_kind_catches_a_state_left_in_the_graph():
    failed = failures(full_proof(running_method(running_update_in_graph)))
    assert any("fd_gradient" in k for k in failed), failed


# ---------------------------------------------------------------------------------------------
# "network": match the input gradients of f(x) = w₂ᵀ tanh(W₁x + b₁), L = mean_n ½‖∇f_s(x_n) − ∇f_t(x_n)‖²
# worked example: x = 0, student W₁ = 1, b₁ = 0, w₂ = 2 (∇f_s = 2), teacher w₂ = 1 (∇f_t = 1): L = 0.5

_NET = ("W1", "b1", "w2")


def input_gradient(net: dict, x: np.ndarray) -> np.ndarray:
    r"""The closed form :math:`\nabla_x f(x_n) = W_1^\top\big(w_2 \odot (1 - \tanh^2(W_1x_n + b_1))\big)`."""
    h = np.tanh(x @ net["W1"].T + net["b1"])
    return (net["w2"] * (1 - h**2)) @ net["W1"]


def _net_shapes(arguments, knobs) -> None:
    for name in ("student", "teacher"):
        net = arguments[name]
        if isinstance(net, dict) and net["W1"].shape[1] != arguments["x"].shape[1]:
            raise ValueError(f"{name}['W1'] must have {arguments['x'].shape[1]} columns, got {net['W1'].shape}")


INPUT_GRADIENTS = Declaration(
    name="input_gradient_loss",
    args=(Arg("x", "embeddings", "the inputs where the gradients are matched"),
          Arg("student", "network", ":math:`f_s`", like="x", keys=_NET),
          Arg("teacher", "network", ":math:`f_t`", like="x", keys=_NET)),
    knobs=(Knob("reduction", "mean", "over the batch", choices=("mean", "sum")),),
    check=_net_shapes,
)


@INPUT_GRADIENTS.implement(NUMPY)
def input_gradient_reference(x, student, teacher, *, reduction):
    per_sample = 0.5 * np.sum((input_gradient(student, x) - input_gradient(teacher, x)) ** 2, axis=1)
    return float(np.mean(per_sample) if reduction == "mean" else np.sum(per_sample))


@INPUT_GRADIENTS.implement(TORCH)
def input_gradient_torch(x, student, teacher, *, reduction):
    x = x.detach().requires_grad_(True)
    (g_s,) = torch.autograd.grad(student(x).sum(), x, create_graph=True)  # differentiated again below
    (g_t,) = torch.autograd.grad(teacher(x).sum(), x)  # a constant target: its graph is not kept
    per_sample = 0.5 * (g_s - g_t).square().sum(dim=1)
    return per_sample.mean() if reduction == "mean" else per_sample.sum()


class TanhNet(torch.nn.Module):
    """``f(x) = w₂ᵀ tanh(W₁x + b₁)`` whose parameters are the given tensors (so that gradcheck can
    perturb them)."""

    def __init__(self, params: dict, tanh=torch.tanh) -> None:
        super().__init__()
        for name, value in params.items():
            self.register_buffer(name, value)
        self.tanh = tanh

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tanh(x @ self.W1.T + self.b1) @ self.w2


class _TanhWithDetachedBackward(torch.autograd.Function):
    """tanh whose backward is right but not itself differentiable (1 − y² from a detached y)."""

    @staticmethod
    def forward(ctx, z):
        y = torch.tanh(z)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (1 - y.detach() ** 2)


@hst.composite
def input_gradient_inputs(draw, gradient: bool = False) -> dict:
    n, d, h = draw(hst.integers(1, 3)), draw(hst.integers(1, 3)), draw(hst.integers(1, 3))

    def net():
        return {"W1": draw(floats((h, d), 1.5)), "b1": draw(floats((h,), 1.5)), "w2": draw(floats((h,), 1.5))}

    return {"x": draw(floats((n, d), 1.5)), "student": net(), "teacher": net()}


def input_gradient_method(tanh=torch.tanh) -> Method:
    def build(params):
        return TanhNet(params, tanh)

    loss = Loss(input_gradient_reference, lambda convention, gradient: input_gradient_inputs(gradient),
                torch_path=torch_path(input_gradient_torch), torch_modules={"student": build, "teacher": build},
                supports_autocast=False, supports_compile=False)
    args = {"x": "$x", "student": {"W1": "$W1", "b1": "$b1", "w2": "$w2s"},
            "teacher": {"W1": "$W1", "b1": "$b1", "w2": "$w2t"}}
    return toy("input_gradients", loss, [golden("input_gradient_loss", "paper", args, "0.5")],
               {"x": [[0.0]], "W1": [[1.0]], "b1": [0.0], "w2s": [2.0], "w2t": [1.0]})


def test_network_kind_is_proven_through_double_backward():
    results = full_proof(input_gradient_method())
    assert not failures(results)
    assert {r.check for r in results} >= {"gradcheck", "fd_gradient"}


def test_network_kind_catches_a_wrong_double_backward():
    failed = failures(full_proof(input_gradient_method(_TanhWithDetachedBackward.apply)))
    assert any("fd_gradient" in k for k in failed), failed


def test_network_kind_takes_any_module():
    x = torch.randn(5, 3, dtype=torch.float64)
    student = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    teacher = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh(), torch.nn.Linear(2, 1)).double()
    loss = input_gradient_torch(x, student, teacher)
    loss.backward()
    assert student[0].weight.grad is not None and teacher[0].weight.grad is None
    with pytest.raises(TypeError, match=r"^student\['0.weight'\] must have the dtype of x"):
        input_gradient_torch(x.float(), student, teacher)


# ---------------------------------------------------------------------------------------------
# "indices" and "uniforms": L = mean_n log(1 + Σ_k u_nk · exp(s_n · bank[j_nk]))
# worked example: s = 1, bank = [0, 2], j = [1], u = [0.5]: L = log(1 + ½e²) = 1.5463975856619392


NEGATIVES = Declaration(
    name="sampled_negatives_loss",
    args=(Arg("student", "embeddings", "the queries :math:`s_n`"),
          Arg("bank", "embeddings", "the memory the negatives are drawn from", like="student", match="dtype"),
          Arg("negatives", "indices", "the rows :math:`j_{nk}` of the bank each query meets, drawn by the caller",
              like="student", bound="bank"),
          Arg("weights", "uniforms", "a weight :math:`u_{nk}` per negative, drawn by the caller", like="student",
              match="batch")),
)


@NEGATIVES.implement(NUMPY)
def negatives_reference(student, bank, negatives, weights):
    scores = np.einsum("nd,nkd->nk", student, bank[negatives])
    return float(np.mean(np.log1p(np.sum(weights * np.exp(scores), axis=1))))


@NEGATIVES.implement(TORCH)
def negatives_torch(student, bank, negatives, weights):
    dtype = accumulation_dtype(student)
    with torch.autocast(student.device.type, enabled=False):
        scores = torch.einsum("nd,nkd->nk", student.to(dtype), bank.detach().to(dtype)[negatives])
    return torch.log1p((weights.detach().to(dtype) * scores.exp()).sum(dim=1)).mean()


@NEGATIVES.implement(TORCH)
def negatives_drawn_inside(student, bank, negatives, weights):
    """Seeded error: the loss draws its own negatives instead of using the given ones."""
    generator = torch.Generator(device=student.device).manual_seed(0)
    own = torch.randint(0, bank.shape[0], tuple(negatives.shape), generator=generator, device=student.device)
    return negatives_torch(student, bank, own, weights)


@hst.composite
def negatives_inputs(draw, gradient: bool = False) -> dict:
    n, m, k, d = (draw(hst.integers(lo, hi)) for lo, hi in ((1, 3), (2, 5), (1, 3), (1, 3)))
    return {"student": draw(floats((n, d), 1.0)), "bank": draw(floats((m, d), 1.0)),
            "negatives": draw(hnp.arrays(np.int64, (n, k), elements=hst.integers(0, m - 1))),
            "weights": draw(hnp.arrays(np.float64, (n, k), elements=hst.floats(0, 1)))}


def negatives_method(torch_fn=negatives_torch) -> Method:
    loss = Loss(negatives_reference, lambda convention, gradient: negatives_inputs(gradient),
                torch_path=torch_path(torch_fn))
    args = {"student": "$s", "bank": "$bank", "negatives": "$j", "weights": "$u"}
    return toy("negatives", loss, [golden("sampled_negatives_loss", "paper", args, "1.5463975856619392")],
               {"s": [[1.0]], "bank": [[0.0], [2.0]], "j": [[1]], "u": [[0.5]]})


def test_random_inputs_are_proven():
    assert not failures(full_proof(negatives_method()))


def test_random_inputs_catch_a_loss_that_draws_its_own():
    failed = failures(full_proof(negatives_method(negatives_drawn_inside)))
    assert any(k.endswith(" agreement") for k in failed), failed


def test_random_inputs_are_validated():
    s, bank = torch.zeros(2, 3, dtype=torch.float64), torch.zeros(4, 3, dtype=torch.float64)
    weights = torch.full((2, 1), 0.5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^negatives must lie in \[0, 4\)"):
        negatives_torch(s, bank, torch.tensor([[4], [0]]), weights)
    with pytest.raises(ValueError, match=r"^weights must lie in \[0, 1\]"):
        negatives_torch(s, bank, torch.tensor([[1], [0]]), weights * 3)
