"""The loss under test on either side: NumPy in, NumPy out, with a gradient.

Properties and checks see a :class:`Subject`, so the same property runs on the reference, on the
torch implementation and, later, on a user's own code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from kdref.proof.compare import max_abs
from kdref.registry import Case, Loss, Method


def to_torch(value, dtype, device):
    """NumPy inputs to torch: float arrays to ``dtype`` on ``device``, integer arrays to int64."""
    import torch

    if isinstance(value, np.ndarray):
        if np.issubdtype(value.dtype, np.floating):
            return torch.as_tensor(value, dtype=torch.float64).to(device=device, dtype=dtype)
        return torch.as_tensor(value, device=device)
    if isinstance(value, (list, tuple)):
        return [to_torch(v, dtype, device) for v in value]
    if isinstance(value, Mapping):
        return {k: to_torch(v, dtype, device) for k, v in value.items()}
    return value


def to_numpy(value) -> np.ndarray:
    """A tensor as a NumPy array, floats as float64."""
    value = value.detach().cpu()
    return value.double().numpy() if value.is_floating_point() else value.numpy()


def round_inputs(inputs: Mapping[str, Any], dtype) -> dict:
    """The inputs rounded to a torch dtype (e.g. float32) and back to float64 NumPy arrays, so
    that the reference sees exactly the values the low-precision torch call sees."""
    import torch

    def rounded(v):
        if isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating):
            return torch.as_tensor(v).to(dtype).double().numpy()
        if isinstance(v, (list, tuple)):
            return [rounded(x) for x in v]
        if isinstance(v, Mapping):
            return {k: rounded(x) for k, x in v.items()}
        return v

    return {k: rounded(v) for k, v in inputs.items()}


def leaves(value) -> list:
    """The arrays or tensors of an argument: itself, or the items of a (nested) list or mapping."""
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in leaves(v)]
    if isinstance(value, Mapping):
        return [leaf for v in value.values() for leaf in leaves(v)]
    return [value]


def replace_leaves(value, replacements):
    """``value`` with its leaves taken, in order, from the iterator ``replacements``."""
    if isinstance(value, (list, tuple)):
        return [replace_leaves(v, replacements) for v in value]
    if isinstance(value, Mapping):
        return {k: replace_leaves(v, replacements) for k, v in value.items()}
    return next(replacements)


def flatten_output(out):
    """A loss's result as one array or tensor: itself, or (a stateful step's ``(loss, new_state)``,
    an unrolled sequence's list of them) every leaf flattened and concatenated."""
    if not isinstance(out, (list, tuple, Mapping)):
        return out
    parts = leaves(out)
    if hasattr(parts[0], "detach"):
        import torch

        return torch.cat([torch.as_tensor(p, dtype=parts[0].dtype).reshape(-1) for p in parts])
    return np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1) for p in parts])


def run_steps(loss: Loss, fn: Callable, inputs: Mapping[str, Any], convention: str | None,
              states: list | None = None) -> list[tuple[Any, Any]]:
    """Run a stateful loss over its steps: ``[(loss_1, state_1), (loss_2, state_2), ...]``.

    Its ``inputs`` hold the initial state and, for every other array argument, a list of one value
    per step. Each step starts from the state the previous one returned, or, given ``states``,
    from ``states[k]`` (held fixed: see :func:`gradient_function`).
    """
    state_name = loss.declaration.state
    per_step = [a.name for a in loss.declaration.args if a.is_array and a.name in inputs]
    state, outputs = inputs[state_name], []
    for k in range(len(inputs[per_step[0]])):
        start = state if states is None else states[k]
        value, state = fn(**{**inputs, **{n: inputs[n][k] for n in per_step}, state_name: start},
                          convention=convention)
        outputs.append((value, state))
    return outputs


def evaluate(loss: Loss, fn: Callable, inputs: Mapping[str, Any], convention: str | None, side: str = "reference",
             outputs: str = "all"):
    """One side's function of ``loss`` on ``inputs``, its result flattened (:func:`flatten_output`).

    A stateful loss (one with a ``"state"`` argument, a step ``(state, ...) -> (loss, new_state)``)
    is run over its steps (:func:`run_steps`); its result is every step's loss and new state, in
    order, or with ``outputs="losses"`` the losses alone (what gradients are taken of). On the
    torch side, ``"network"`` arguments are built into modules first (``Loss.torch_modules``).
    """
    if side == "torch":
        inputs = as_modules(loss, inputs)
    if loss.declaration.state is None:
        return flatten_output(fn(**inputs, convention=convention))
    steps = run_steps(loss, fn, inputs, convention)
    return flatten_output([value for value, _ in steps] if outputs == "losses" else steps)


def gradient_function(loss: Loss, fn: Callable, inputs: Mapping[str, Any], convention: str | None,
                      side: str = "reference") -> Callable:
    """The function to take numerical derivatives of at ``inputs`` (finite differences of the
    reference, gradcheck of torch): the loss, or for a stateful loss its step losses with each
    step's incoming state held at its value at ``inputs``.

    A state is carried outside the graph (a memory bank is not differentiated through), so the
    torch gradient of the steps run as they are must equal these derivatives: a new state left in
    the graph turns the gradient check red.
    """
    if loss.declaration.state is None:
        return lambda **kw: evaluate(loss, fn, kw, convention, side, "losses")

    def step(**kw):
        return fn(**as_modules(loss, kw)) if side == "torch" else fn(**kw)

    starts = [inputs[loss.declaration.state]] + [state for _, state in run_steps(loss, step, inputs, convention)]
    return lambda **kw: flatten_output([value for value, _ in run_steps(loss, step, kw, convention, starts)])


def as_modules(loss: Loss, inputs: Mapping[str, Any]) -> dict:
    """The torch side's arguments with its ``"network"`` parameters built into modules
    (``Loss.torch_modules``); anything else, a bad input included, as it is."""
    return {k: loss.torch_modules[k](v) if k in loss.torch_modules and isinstance(v, Mapping) else v
            for k, v in inputs.items()}


def error_scale(method: Method, inputs: Mapping[str, Any], convention: str) -> float:
    """The size of the rounding errors a method's loss makes on ``inputs`` (``1 + max |x|`` unless
    the record says otherwise)."""
    if method.error_scale is not None:
        return method.error_scale(inputs, convention)
    return 1.0 + max_abs(inputs)


class Subject:
    """A loss under one convention as a NumPy-in, NumPy-out function with a gradient.

    ``grad`` is central finite differences for the reference and autograd (float64) for torch.
    ``variant`` gives another loss or convention of the same method on the same side, for
    properties that relate two; ``scale`` the method's error scale of some inputs.
    """

    def __init__(self, method: Method, loss: Loss, convention: str, side: str, device: str = "cpu") -> None:
        self.method, self.loss, self.convention, self.side, self.device = method, loss, convention, side, device
        self.fn = loss.reference if side == "reference" else loss.torch

    def variant(self, loss: str | None = None, convention: str | None = None) -> Subject:
        other = self.loss if loss is None else self.method.loss(loss)
        return Subject(self.method, other, convention or self.convention, self.side, self.device)

    def scale(self, inputs: Mapping[str, Any]) -> float:
        return error_scale(self.method, inputs, self.convention)

    def __call__(self, **inputs) -> np.ndarray:
        if self.side == "reference":
            return np.asarray(evaluate(self.loss, self.fn, inputs, self.convention), dtype=np.float64)
        import torch

        args = {k: to_torch(v, torch.float64, self.device) for k, v in inputs.items()}
        return to_numpy(evaluate(self.loss, self.fn, args, self.convention, "torch"))

    def grad(self, wrt: str, **inputs) -> np.ndarray:
        """Gradient of the sum of the loss's output with respect to the array ``inputs[wrt]``."""
        if self.side == "reference":
            return fd_gradient(gradient_function(self.loss, self.fn, inputs, self.convention), inputs, wrt)
        return torch_gradient(self.loss, self.fn, inputs, self.convention, wrt, self.device)


def subject(case: Case, side: str, device: str = "cpu") -> Subject:
    """The case's loss on ``side`` (``"reference"`` or ``"torch"``)."""
    return Subject(case.method, case.loss, case.convention, side, device)


def fd_gradient(f: Callable, inputs: Mapping[str, Any], wrt: str, h: float = 1e-6) -> np.ndarray:
    """Central finite differences of ``sum(f(**inputs))`` with respect to ``inputs[wrt]`` (an
    array, or a list of arrays: then the gradients are concatenated flat), with a step of ``h``
    relative to each entry's magnitude."""
    arrays = [np.asarray(x, dtype=np.float64) for x in leaves(inputs[wrt])]
    structured = not isinstance(inputs[wrt], np.ndarray)
    grads = []
    for k, x in enumerate(arrays):
        grad = np.zeros_like(x)
        for index in np.ndindex(x.shape):
            step = h * max(1.0, abs(x[index]))
            values = []
            for sign in (1, -1):
                moved = x.copy()
                moved[index] += sign * step
                arg = replace_leaves(inputs[wrt], iter([moved if i == k else a for i, a in enumerate(arrays)])) \
                    if structured else moved
                values.append(np.sum(f(**{**inputs, wrt: arg})))
            grad[index] = (values[0] - values[1]) / (2 * step)
        grads.append(grad)
    return np.concatenate([g.ravel() for g in grads]) if structured else grads[0]


def torch_gradient(loss: Loss, fn: Callable, inputs: Mapping[str, Any], convention: str | None, wrt: str,
                   device: str = "cpu") -> np.ndarray:
    """Autograd gradient of the sum of ``fn``'s result with respect to ``inputs[wrt]``, in float64
    (flat and concatenated when ``inputs[wrt]`` is a list or a mapping)."""
    import torch

    args = {k: to_torch(v, torch.float64, device) for k, v in inputs.items()}
    wrt_leaves = [t.requires_grad_(True) for t in leaves(args[wrt])]
    grads = torch.autograd.grad(evaluate(loss, fn, args, convention, "torch", "losses").sum(), wrt_leaves)
    if isinstance(inputs[wrt], np.ndarray):
        return to_numpy(grads[0])
    return np.concatenate([to_numpy(g).ravel() for g in grads])
