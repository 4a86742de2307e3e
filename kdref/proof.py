"""The proof harness: the checks that show a torch loss computes its paper's function.

Every check takes a :class:`~kdref.registry.Case` (one loss under one convention) and returns a
:class:`Result`; nothing here is specific to a method. The pytest suite and ``kdref verify`` run
exactly these functions, so a user's machine runs the same proof as CI.

Checks:

- ``golden``: the spec's worked examples reproduce to their printed digits (reference and torch).
- ``agreement``: on Hypothesis-drawn inputs, torch equals the NumPy reference (float64, float32).
- ``autocast``: under ``torch.autocast`` with bfloat16 inputs, the loss accumulates in float32.
- ``gradcheck``: ``torch.autograd.gradcheck`` (and ``gradgradcheck`` where supported) in float64;
  constant inputs (the teacher, the peers) receive no gradient.
- ``fd_gradient``: the torch gradient equals central finite differences of the NumPy reference.
- ``properties``: what the math guarantees, on both sides.
- ``bad_input``: malformed inputs raise ``ValueError``/``TypeError`` naming the argument.
- ``compile``: ``torch.compile`` gives the reference's values (once per loss, default convention).
"""

from __future__ import annotations

import inspect
import re
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings

from kdref.registry import Case, Loss, Method, Tolerance

CHECKS = ("golden", "agreement", "float32", "autocast", "gradcheck", "fd_gradient", "properties",
          "bad_input", "compile")


@dataclass
class Result:
    """The outcome of one check on one case.

    ``worst`` is the largest error seen and ``ratio`` that error divided by the tolerance it was
    held to (a pass has ``ratio <= 1``); both are ``None`` where the check has no numeric error.
    """

    case: str
    check: str
    ok: bool
    worst: float | None = None
    ratio: float | None = None
    examples: int = 0
    detail: str = ""


class _Worst:
    """Tracks the largest error and error/tolerance ratio over many comparisons."""

    def __init__(self) -> None:
        self.error = 0.0
        self.ratio = 0.0
        self.count = 0

    def update(self, error: float, ratio: float) -> None:
        self.error = max(self.error, error)
        self.ratio = max(self.ratio, ratio)


def compare(actual, expected, tol: Tolerance, scale: float = 1.0, what: str = "value",
            worst: _Worst | None = None) -> float:
    """Assert ``|actual - expected| <= tol.rtol * |expected| + tol.atol * scale`` elementwise and
    return the largest error as a fraction of its bound."""
    a = np.asarray(actual, dtype=np.float64)
    b = np.asarray(expected, dtype=np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"{what}: shape {a.shape} != expected {b.shape}")
    if not np.all(np.isfinite(a)):
        raise AssertionError(f"{what}: non-finite result {a}")
    error = np.abs(a - b)
    bound = tol.rtol * np.abs(b) + tol.atol * scale
    ratio = float(np.max(np.where(error == 0, 0.0, error / np.where(bound > 0, bound, np.inf)), initial=0.0))
    ratio = np.inf if np.any((bound == 0) & (error > 0)) else ratio
    if worst is not None:
        worst.update(float(np.max(error, initial=0.0)), ratio)
    if ratio > 1:
        raise AssertionError(f"{what}: got {a}, expected {b} (|Δ| = {np.max(error):.3g}, "
                             f"{ratio:.3g}× the tolerance rtol={tol.rtol:g}, atol={tol.atol:g}·{scale:.3g})")
    return ratio


# ---------------------------------------------------------------------------------------------
# Moving inputs between the two sides


def to_torch(value, dtype, device):
    """NumPy inputs to torch: float arrays to ``dtype`` on ``device``, integer arrays to int64."""
    import torch

    if isinstance(value, np.ndarray):
        if np.issubdtype(value.dtype, np.floating):
            return torch.as_tensor(value, dtype=torch.float64).to(device=device, dtype=dtype)
        return torch.as_tensor(value, device=device)
    if isinstance(value, (list, tuple)):
        return [to_torch(v, dtype, device) for v in value]
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
        return v

    return {k: rounded(v) for k, v in inputs.items()}


# ---------------------------------------------------------------------------------------------
# The loss under test, on either side


class Subject:
    """A loss under one convention as a NumPy-in, NumPy-out function with a gradient.

    Properties receive a ``Subject`` so that the same property runs on the reference, on the
    torch implementation and, later, on a user's own code. ``grad`` is central finite
    differences for the reference and autograd (float64) for torch. ``variant`` gives another
    loss or convention of the same method on the same side, for properties that relate two.
    """

    def __init__(self, method: Method, loss: Loss, convention: str, side: str, device: str = "cpu") -> None:
        self.method, self.loss, self.convention, self.side, self.device = method, loss, convention, side, device
        self.fn = loss.reference if side == "reference" else loss.torch

    def variant(self, loss: str | None = None, convention: str | None = None) -> Subject:
        other = self.loss if loss is None else self.method.loss(loss)
        return Subject(self.method, other, convention or self.convention, self.side, self.device)

    def __call__(self, **inputs) -> np.ndarray:
        if self.side == "reference":
            return np.asarray(self.fn(**inputs, convention=self.convention), dtype=np.float64)
        import torch

        out = self.fn(**{k: to_torch(v, torch.float64, self.device) for k, v in inputs.items()},
                      convention=self.convention)
        return to_numpy(out)

    def grad(self, wrt: str, **inputs) -> np.ndarray:
        """Gradient of the sum of the loss's output with respect to the array ``inputs[wrt]``."""
        if self.side == "reference":
            return fd_gradient(lambda **kw: self.fn(**kw, convention=self.convention), inputs, wrt)
        return torch_gradient(self.fn, {**inputs, "convention": self.convention}, wrt, self.device)


def subject(case: Case, side: str, device: str = "cpu") -> Subject:
    """The case's loss on ``side`` (``"reference"`` or ``"torch"``)."""
    return Subject(case.method, case.loss, case.convention, side, device)


def fd_gradient(f: Callable, inputs: Mapping[str, Any], wrt: str, h: float = 1e-6) -> np.ndarray:
    """Central finite differences of ``sum(f(**inputs))`` with respect to ``inputs[wrt]`` (an
    array, or a list of arrays: then the gradients are concatenated flat), with a step of ``h``
    relative to each entry's magnitude."""
    leaves = [np.asarray(x, dtype=np.float64) for x in _leaves(inputs[wrt])]
    grads = []
    for k, x in enumerate(leaves):
        grad = np.zeros_like(x)
        for index in np.ndindex(x.shape):
            step = h * max(1.0, abs(x[index]))
            values = []
            for sign in (1, -1):
                moved = x.copy()
                moved[index] += sign * step
                arg = moved if len(leaves) == 1 and not isinstance(inputs[wrt], (list, tuple)) \
                    else [moved if i == k else leaf for i, leaf in enumerate(leaves)]
                values.append(np.sum(f(**{**inputs, wrt: arg})))
            grad[index] = (values[0] - values[1]) / (2 * step)
        grads.append(grad)
    return grads[0] if not isinstance(inputs[wrt], (list, tuple)) else np.concatenate([g.ravel() for g in grads])


def torch_gradient(fn: Callable, inputs: Mapping[str, Any], wrt: str, device: str = "cpu") -> np.ndarray:
    """Autograd gradient of ``sum(fn(**inputs))`` with respect to ``inputs[wrt]``, in float64
    (flat and concatenated when ``inputs[wrt]`` is a list)."""
    import torch

    args = {k: to_torch(v, torch.float64, device) for k, v in inputs.items()}
    leaves = [t.requires_grad_(True) for t in _leaves(args[wrt])]
    grads = torch.autograd.grad(fn(**args).sum(), leaves)
    if not isinstance(inputs[wrt], (list, tuple)):
        return to_numpy(grads[0])
    return np.concatenate([to_numpy(g).ravel() for g in grads])


def _leaves(value) -> list:
    """The arrays or tensors of an argument: itself, or the items of a (nested) list."""
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def _replace_leaves(value, replacements):
    """``value`` with its leaves taken, in order, from the iterator ``replacements``."""
    if isinstance(value, (list, tuple)):
        return [_replace_leaves(v, replacements) for v in value]
    return next(replacements)


# ---------------------------------------------------------------------------------------------
# Running a check over Hypothesis-drawn inputs


def _hypothesis(strategy, body: Callable[[dict], None], max_examples: int) -> int:
    """Run ``body`` on up to ``max_examples`` draws; a failure is shrunk and re-raised."""
    count = 0

    @settings(max_examples=max_examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck),
              phases=(Phase.explicit, Phase.generate, Phase.shrink))
    @given(strategy)
    def run(inputs):
        nonlocal count
        count += 1
        body(inputs)

    run()
    return count


def _run(case_id: str, check: str, action: Callable[[_Worst], int], numeric: bool = True) -> Result:
    """Run one check, turning an exception into a failed :class:`Result` with its explanation."""
    worst = _Worst()
    try:
        examples = action(worst)
    except Exception as exc:
        notes = "\n".join(getattr(exc, "__notes__", []))
        detail = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, AssertionError):
            detail += "\n" + "".join(traceback.format_exception(exc)[-3:])
        return Result(case_id, check, False, worst.error if numeric else None, worst.ratio if numeric else None,
                      0, f"{detail}\n{notes}".strip())
    return Result(case_id, check, True, worst.error if numeric else None, worst.ratio if numeric else None, examples)


def error_scale(method: Method, inputs: Mapping[str, Any], convention: str | None = None) -> float:
    """The method's error scale of ``inputs``; a method whose rounding error depends on the
    convention (a sum over N³ terms or their mean) declares ``error_scale(inputs, convention)``."""
    if method.error_scale is not None:
        if len(inspect.signature(method.error_scale).parameters) == 2:
            return method.error_scale(inputs, convention)
        return method.error_scale(inputs)
    return 1.0 + max_abs(inputs)


def max_abs(inputs: Mapping[str, Any] | Iterable) -> float:
    """The largest magnitude among the float arrays in ``inputs`` (nested lists included)."""
    values = inputs.values() if isinstance(inputs, Mapping) else inputs
    largest = 0.0
    for v in values:
        if isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating) and v.size:
            largest = max(largest, float(np.max(np.abs(v))))
        elif isinstance(v, (list, tuple)):
            largest = max(largest, max_abs(v))
    return largest


# ---------------------------------------------------------------------------------------------
# Golden values


def printed_tolerance(text: str) -> float:
    """Half a unit in the last printed digit of ``text`` ("0.28855901" -> 5e-9, "60" -> 0.5)."""
    exponent = Decimal(text).as_tuple().exponent
    return 0.5 * 10.0 ** exponent


def golden_arguments(method: Method, example: Mapping[str, Any]) -> dict:
    """The example's arguments with ``"$name"`` references replaced by the golden inputs."""
    named = method.golden["inputs"]

    def resolve(value):
        if isinstance(value, str) and value.startswith("$"):
            data = np.asarray(named[value[1:]])
            return data.astype(np.float64) if np.issubdtype(data.dtype, np.floating) else data.astype(np.int64)
        if isinstance(value, list) and value and all(isinstance(v, str) and v.startswith("$") for v in value):
            return [resolve(v) for v in value]
        return value

    return {k: resolve(v) for k, v in example["args"].items()}


def _matches_printed(actual, printed, what: str, worst: _Worst) -> None:
    texts = np.asarray(printed, dtype=object)
    expected = np.vectorize(float, otypes=[np.float64])(texts)
    bounds = np.vectorize(printed_tolerance, otypes=[np.float64])(texts)
    a = np.asarray(actual, dtype=np.float64)
    if a.shape != expected.shape:
        raise AssertionError(f"{what}: shape {a.shape} != printed {expected.shape}")
    # the printed value is the exact one rounded; allow float64 rounding on top of half a digit
    bounds = bounds * (1 + 1e-9) + 1e-15 * np.abs(expected)
    error = np.abs(a - expected)
    worst.update(float(np.max(error)), float(np.max(error / bounds)))
    if np.any(error > bounds):
        raise AssertionError(f"{what}: got {a}, the spec prints {printed}")


def golden_examples(case: Case) -> list[Mapping[str, Any]]:
    return [ex for ex in case.method.golden["examples"]
            if ex["loss"] == case.loss.name and ex["convention"] == case.convention]


def check_golden(case: Case, side: str, device: str = "cpu") -> Result:
    """Every worked example of the case reproduces to its printed digits on ``side``."""
    examples = golden_examples(case)

    def action(worst: _Worst) -> int:
        if not examples:
            raise AssertionError(f"no worked example in kdref/golden/{case.method.name}.json covers {case.label}")
        loss = subject(case, side, device)
        for example in examples:
            args = golden_arguments(case.method, example)
            _matches_printed(loss(**args), example["value"], example["source"], worst)
            for wrt, printed in example.get("grad", {}).items():
                _matches_printed(loss.grad(wrt, **args), printed, example["grad_source"], worst)
        return len(examples)

    return _run(case.id, f"golden:{side}", action)


# ---------------------------------------------------------------------------------------------
# Agreement of torch with the reference


def check_agreement(case: Case, dtype: str = "float64", device: str = "cpu", max_examples: int = 30) -> Result:
    """torch in ``dtype`` equals the reference on the same (rounded) inputs, within tolerance."""
    import torch

    torch_dtype = getattr(torch, dtype)
    tol = case.method.tolerances[dtype]

    def action(worst: _Worst) -> int:
        def body(inputs):
            inputs = round_inputs(inputs, torch_dtype)
            expected = subject(case, "reference")(**inputs)
            args = {k: to_torch(v, torch_dtype, device) for k, v in inputs.items()}
            actual = case.loss.torch(**args, convention=case.convention)
            if actual.dtype != torch_dtype:
                raise AssertionError(f"result dtype {actual.dtype}, expected {torch_dtype}")
            scale = error_scale(case.method, inputs, case.convention)
            compare(to_numpy(actual), expected, tol, scale, "torch vs reference", worst)

        return _hypothesis(case.loss.inputs(case.convention, gradient=False), body, max_examples)

    return _run(case.id, "agreement" if dtype == "float64" else dtype, action)


def check_autocast(case: Case, device: str = "cpu", max_examples: int = 15) -> Result:
    """Under ``torch.autocast`` with bfloat16 inputs the loss is computed and returned in float32."""
    import torch

    tol = case.method.tolerances["bfloat16"]

    def action(worst: _Worst) -> int:
        def body(inputs):
            inputs = round_inputs(inputs, torch.bfloat16)
            expected = subject(case, "reference")(**inputs)
            args = {k: to_torch(v, torch.bfloat16, device) for k, v in inputs.items()}
            with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
                actual = case.loss.torch(**args, convention=case.convention)
            if actual.dtype != torch.float32:
                raise AssertionError(f"result dtype {actual.dtype}: bfloat16 inputs must accumulate in float32")
            scale = error_scale(case.method, inputs, case.convention)
            compare(to_numpy(actual), expected, tol, scale, "autocast vs reference", worst)

        return _hypothesis(case.loss.inputs(case.convention, gradient=False), body, max_examples)

    return _run(case.id, "autocast", action)


# ---------------------------------------------------------------------------------------------
# Gradients


def check_gradcheck(case: Case, device: str = "cpu", max_examples: int = 8) -> Result:
    """gradcheck (and gradgradcheck where declared) w.r.t. the differentiable inputs; every
    other float input is a constant and must receive no gradient."""
    import torch

    loss = case.loss

    def action(worst: _Worst) -> int:
        def body(inputs):
            args = {k: to_torch(v, torch.float64, device) for k, v in inputs.items()}
            wrt = tuple(t.requires_grad_(True) for name in loss.differentiable for t in _leaves(args[name]))

            def f(*xs):
                leaves = iter(xs)
                replaced = {name: _replace_leaves(args[name], leaves) for name in loss.differentiable}
                return loss.torch(**{**args, **replaced}, convention=case.convention)

            torch.autograd.gradcheck(f, wrt, raise_exception=True)
            if loss.supports_gradgrad:
                torch.autograd.gradgradcheck(f, wrt, raise_exception=True)
            _check_constants(loss, inputs, case.convention, device)

        return _hypothesis(loss.inputs(case.convention, gradient=True), body, max_examples)

    return _run(case.id, "gradcheck", action, numeric=False)


def _float_tensors(value) -> list:
    """The floating-point tensors in an argument (a tensor, or a list of them)."""
    return [t for t in _leaves(value) if hasattr(t, "is_floating_point") and t.is_floating_point()]


def _check_constants(loss: Loss, inputs: Mapping[str, Any], convention: str, device: str) -> None:
    """Inputs outside ``loss.differentiable`` (teacher, peers) are constants: no gradient reaches them."""
    import torch

    args = {k: to_torch(v, torch.float64, device) for k, v in inputs.items()}
    constants = []
    for name, value in args.items():
        for tensor in _float_tensors(value):
            tensor.requires_grad_(True)
            if name not in loss.differentiable:
                constants.append((name, tensor))
    if not constants:
        return
    out = loss.torch(**args, convention=convention).sum()
    grads = torch.autograd.grad(out, [t for _, t in constants], allow_unused=True)
    leaking = sorted({name for (name, _), g in zip(constants, grads, strict=True)
                      if g is not None and bool((g != 0).any())})
    if leaking:
        raise AssertionError(f"{', '.join(leaking)} received a gradient: a constant input must be detached")


def check_fd_gradient(case: Case, device: str = "cpu", max_examples: int = 10) -> Result:
    """The torch gradient equals central finite differences of the NumPy reference."""
    tol = case.method.tolerances["fd"]

    def action(worst: _Worst) -> int:
        def body(inputs):
            reference = subject(case, "reference")
            scale = error_scale(case.method, inputs, case.convention)
            for wrt in case.loss.differentiable:
                expected = reference.grad(wrt, **inputs)
                actual = torch_gradient(case.loss.torch, {**inputs, "convention": case.convention}, wrt, device)
                # finite differences err relative to the largest gradient entry (truncation) and
                # to the size of the summed terms (cancellation), not to each entry
                bound = tol.rtol * float(np.max(np.abs(expected))) + tol.atol * scale
                compare(actual, expected, Tolerance(0.0, 1.0), bound,
                        f"d loss / d {wrt}: torch vs finite differences of the reference", worst)

        return _hypothesis(case.loss.inputs(case.convention, gradient=True), body, max_examples)

    return _run(case.id, "fd_gradient", action)


# ---------------------------------------------------------------------------------------------
# Properties


def check_properties(case: Case, device: str = "cpu", max_examples: int = 20) -> Result:
    """Every property of the method that applies to the case, on the reference and on torch."""
    properties = [p for p in case.method.properties if p.applies_to(case)]

    def action(worst: _Worst) -> int:
        total = 0
        for prop in properties:
            strategy = prop.inputs(case.convention) if prop.inputs else case.loss.inputs(case.convention, gradient=True)
            for side in ("reference", "torch"):
                loss = subject(case, side, device)

                def body(inputs, prop=prop, loss=loss):
                    try:
                        worst.update(0.0, prop.check(loss, inputs))
                    except AssertionError as exc:
                        raise AssertionError(f"{prop.name} ({loss.side}): {exc}") from None

                total += _hypothesis(strategy, body, max_examples)
        return total

    result = _run(case.id, "properties", action)
    result.detail = result.detail or ", ".join(p.name for p in properties)
    return result


# ---------------------------------------------------------------------------------------------
# Bad input


@dataclass(frozen=True)
class BadInput:
    """One malformed input: the arguments, the exception expected, and a word its message must hold."""

    description: str
    args: Mapping[str, Any]
    error: type[Exception]
    names: str


def bad_inputs(case: Case, side: str, device: str = "cpu") -> list[BadInput]:
    """Malformed variants of the case's first worked example, generated from the argument roles."""
    base = golden_arguments(case.method, golden_examples(case)[0])
    ops = _ArrayOps(side, device)
    base = {k: ops.convert(v) for k, v in base.items()}
    cases: list[BadInput] = [BadInput("unknown convention", {**base, "convention": "no-such-convention"},
                                      ValueError, "no-such-convention")]
    for arg in case.loss.args:
        if arg.kind in _BAD_SCALARS:
            cases += [BadInput(f"{arg.name} = {v!r}", {**base, arg.name: v}, error, arg.name)
                      for v, error in _BAD_SCALARS[arg.kind]]
        if arg.name not in base:
            continue
        x = base[arg.name]
        if arg.kind in ("logits", "features", "embeddings"):
            cases += _bad_float_array(arg, x, base, ops)
        elif arg.kind.endswith("_list"):
            n = arg.name
            cases += [
                BadInput(f"{n} empty", {**base, n: []}, ValueError, n),
                BadInput(f"{n} not a list", {**base, n: x[0]}, TypeError, n),
                BadInput(f"{n}[0] of another rank", {**base, n: [x[0][0], *x[1:]]}, ValueError, f"{n}[0]"),
                BadInput(f"{n}[0] non-finite", {**base, n: [ops.with_nan(x[0]), *x[1:]]}, ValueError, f"{n}[0]"),
            ]
        elif arg.kind == "labels":
            n_classes = int(next(v for v in base.values() if getattr(v, "ndim", 0) == 2).shape[1])
            cases += [
                BadInput("labels out of range", {**base, arg.name: ops.convert(np.full(len(x), n_classes))},
                         ValueError, arg.name),
                BadInput("negative labels", {**base, arg.name: ops.convert(np.full(len(x), -1))},
                         ValueError, arg.name),
                BadInput("float labels", {**base, arg.name: ops.convert(np.zeros(len(x)))}, TypeError, arg.name),
                BadInput("labels of another length",
                         {**base, arg.name: ops.convert(np.zeros(len(x) + 1, np.int64))}, ValueError, arg.name),
            ]
            if side == "torch":
                cases.append(BadInput("labels on another device", {**base, arg.name: x.to("meta")},
                                      ValueError, arg.name))
    fewest = case.loss.min_batch(case.convention)
    if fewest > 1:
        first = case.loss.args[0].name
        cases.append(BadInput(f"{fewest - 1} sample(s), fewer than the {fewest} the loss needs",
                              {k: _first_samples(v, fewest - 1) for k, v in base.items()}, ValueError, first))
    return cases


def _first_samples(value, n: int):
    """``value`` cut to its first ``n`` samples: arrays and tensors of rank ≥ 1, and lists of them."""
    if isinstance(value, (list, tuple)):
        return [_first_samples(v, n) for v in value]
    return value[:n] if getattr(value, "ndim", 0) >= 1 else value


_NOT_A_NUMBER = ("1", TypeError)
_NON_FINITE = [(float("nan"), ValueError), (float("inf"), ValueError)]
#: bad values of each scalar kind of argument, with the exception each must raise
_BAD_SCALARS = {
    "temperature": [(0.0, ValueError), (-1.0, ValueError), *_NON_FINITE, _NOT_A_NUMBER],
    "weight": [(-1.0, ValueError), *_NON_FINITE, _NOT_A_NUMBER],
    "fraction": [(-0.1, ValueError), (1.5, ValueError), *_NON_FINITE, _NOT_A_NUMBER],
    "real": [*_NON_FINITE, _NOT_A_NUMBER],
}


class _ArrayOps:
    """The few array operations the bad-input generator needs, for NumPy or torch inputs."""

    def __init__(self, side: str, device: str) -> None:
        self.side, self.device = side, device

    def convert(self, value):
        if self.side == "reference":
            return value
        import torch

        if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating):
            return torch.as_tensor(value, dtype=torch.float64, device=self.device)
        return to_torch(value, torch.float64, self.device)

    def with_nan(self, x):
        y = x.copy() if self.side == "reference" else x.clone()
        y.reshape(-1)[0] = np.nan
        return y

    def with_inf(self, x):
        y = x.copy() if self.side == "reference" else x.clone()
        y.reshape(-1)[-1] = np.inf
        return y

    def as_int(self, x):
        return x.astype(np.int64) if self.side == "reference" else x.long()

    def as_float32(self, x):
        return x.astype(np.float32) if self.side == "reference" else x.float()

    def one_more_sample(self, x):
        if self.side == "reference":
            return np.concatenate([x, x[:1]])
        import torch

        return torch.cat([x, x[:1]])


def _bad_float_array(arg, x, base, ops: _ArrayOps) -> list[BadInput]:
    n = arg.name
    if arg.kind == "embeddings":  # [N, ...] of any rank ≥ 2: one rank more is another valid batch
        ranks = [BadInput(f"{n} of rank 1", {**base, n: x.reshape(-1)}, ValueError, n)]
    else:
        ranks = [BadInput(f"{n} of one rank less", {**base, n: x[0]}, ValueError, n),
                 BadInput(f"{n} of one rank more", {**base, n: x[None]}, ValueError, n)]
    cases = [
        *ranks,
        BadInput(f"{n} empty batch", {**base, n: x[:0]}, ValueError, n),
        BadInput(f"{n} with NaN", {**base, n: ops.with_nan(x)}, ValueError, n),
        BadInput(f"{n} with inf", {**base, n: ops.with_inf(x)}, ValueError, n),
        BadInput(f"{n} integer dtype", {**base, n: ops.as_int(x)}, TypeError, n),
    ]
    if arg.like is not None:
        cases += [
            BadInput(f"{n} with another batch size than {arg.like}", {**base, n: ops.one_more_sample(x)},
                     ValueError, n),
            BadInput(f"{n} float32, {arg.like} float64", {**base, n: ops.as_float32(x)}, TypeError, n),
        ]
        if arg.match in ("shape", "batch_spatial") and x.shape[-1] > 1:
            what = "shape" if arg.match == "shape" else "spatial size"
            cases.append(BadInput(f"{n} of another {what} than {arg.like}", {**base, n: x[..., :-1]}, ValueError, n))
        if ops.side == "torch":
            cases.append(BadInput(f"{n} on another device than {arg.like}", {**base, n: x.to("meta")}, ValueError, n))
    return cases


def check_bad_input(case: Case, device: str = "cpu") -> Result:
    """Each malformed input raises the expected exception, whose message names the argument."""

    def action(worst: _Worst) -> int:
        failures, total = [], 0
        for side in ("reference", "torch"):
            fn = case.loss.reference if side == "reference" else case.loss.torch
            for bad in bad_inputs(case, side, device):
                total += 1
                args = dict(bad.args)
                convention = args.pop("convention", case.convention)
                try:
                    fn(**args, convention=convention)
                except bad.error as exc:
                    # an argument's error opens with its name ("teacher must ..."), so a message about
                    # another argument that merely mentions it does not pass
                    pattern = re.escape(bad.names) if bad.description == "unknown convention" \
                        else rf"^{re.escape(bad.names)}(?!\w)"
                    if not re.search(pattern, str(exc)):
                        failures.append(f"{side}, {bad.description}: message does not open with {bad.names!r}: {exc}")
                except Exception as exc:
                    failures.append(f"{side}, {bad.description}: raised {type(exc).__name__}: {exc}; "
                                    f"expected {bad.error.__name__}")
                else:
                    failures.append(f"{side}, {bad.description}: no error, expected {bad.error.__name__}")
        if failures:
            raise AssertionError("\n".join(failures))
        return total

    return _run(case.id, "bad_input", action, numeric=False)


# ---------------------------------------------------------------------------------------------
# torch.compile


def check_compile(method: Method, loss: Loss, device: str = "cpu") -> Result:
    """``torch.compile`` of the loss (default convention) gives the reference's golden values, and
    its backward pass the eager gradient."""
    import torch

    convention = loss.conventions.default
    case = Case(method, loss, convention)

    def action(worst: _Worst) -> int:
        torch._dynamo.reset()
        compiled = torch.compile(loss.torch)
        examples = golden_examples(case)
        for example in examples:
            args = golden_arguments(method, example)
            expected = subject(case, "reference")(**args)
            actual = compiled(**{k: to_torch(v, torch.float64, device) for k, v in args.items()},
                              convention=convention)
            scale = error_scale(method, args, None)
            compare(to_numpy(actual), expected, method.tolerances["float64"], scale, "torch.compile vs reference",
                    worst)
            for wrt in (w for w in loss.differentiable if w in args):
                # a fresh compile, as in training where the inputs require grad from the first call
                torch._dynamo.reset()
                inputs = {**args, "convention": convention}
                compare(torch_gradient(torch.compile(loss.torch), inputs, wrt, device),
                        torch_gradient(loss.torch, inputs, wrt, device), method.tolerances["float64"], scale,
                        f"torch.compile gradient wrt {wrt} vs eager", worst)
        return len(examples)

    return _run(f"{method.name}:{loss.name}", "compile", action)


# ---------------------------------------------------------------------------------------------
# Everything for a method


def run_checks(method: Method, device: str = "cpu", max_examples: int = 30,
               checks: Iterable[str] = CHECKS, progress: Callable[[Result], None] | None = None) -> list[Result]:
    """All checks of ``method`` on every case; ``progress`` is called after each."""
    checks = set(checks)
    results = []

    def record(result: Result) -> None:
        results.append(result)
        if progress is not None:
            progress(result)

    few = max(2, max_examples // 3)
    for case in method.cases():
        if "golden" in checks:
            record(check_golden(case, "reference"))
            record(check_golden(case, "torch", device))
        if "agreement" in checks:
            record(check_agreement(case, "float64", device, max_examples))
        if "float32" in checks:
            record(check_agreement(case, "float32", device, max_examples))
        if "autocast" in checks:
            record(check_autocast(case, device, few))
        if "gradcheck" in checks:
            record(check_gradcheck(case, device, few))
        if "fd_gradient" in checks:
            record(check_fd_gradient(case, device, few))
        if "properties" in checks:
            record(check_properties(case, device, max_examples))
        if "bad_input" in checks:
            record(check_bad_input(case, device))
    if "compile" in checks:
        for loss in method.losses:
            record(check_compile(method, loss, device))
    return results
