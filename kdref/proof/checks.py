"""The checks, and the one table of them that ``kdref verify`` and pytest both walk.

Every check takes a target (a :class:`~kdref.registry.Case`: one loss under one convention, or
for per-loss checks a ``(method, loss)`` pair), an example budget and a device, and returns a
:class:`~kdref.proof.compare.Result`; nothing here is specific to a method.
"""

from __future__ import annotations

import importlib
import inspect
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings

from kdref.proof.bad_input import bad_inputs
from kdref.proof.compare import Result, Worst, compare, matches_printed
from kdref.proof.sides import (
    as_modules,
    error_scale,
    evaluate,
    gradient_function,
    leaves,
    replace_leaves,
    round_inputs,
    subject,
    to_numpy,
    to_torch,
    torch_gradient,
)
from kdref.registry import Case, Loss, Method, Tolerance

# ---------------------------------------------------------------------------------------------
# Running a check


def run_examples(strategy, body: Callable[[dict], None], max_examples: int) -> int:
    """Run ``body`` on up to ``max_examples`` Hypothesis draws; a failure is shrunk and re-raised."""
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


def _run(target: str, check: str, action: Callable[[Worst], int], numeric: bool = True) -> Result:
    """Run one check, turning an exception into a failed :class:`Result` with its explanation."""
    worst = Worst()
    start = time.perf_counter()
    try:
        examples = action(worst)
    except Exception as exc:
        notes = "\n".join(getattr(exc, "__notes__", []))
        detail = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, AssertionError):
            detail += "\n" + "".join(traceback.format_exception(exc)[-3:])
        return Result(target, check, False, worst.error if numeric else None, worst.ratio if numeric else None,
                      0, f"{detail}\n{notes}".strip(), time.perf_counter() - start)
    return Result(target, check, True, worst.error if numeric else None, worst.ratio if numeric else None,
                  examples, seconds=time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------
# Golden values


def golden_arguments(method: Method, example: Mapping[str, Any], loss: Loss | None = None) -> dict:
    """The example's arguments as arrays: ``"$name"`` references replaced by the golden inputs,
    and numbers written out in the example (nested lists) made arrays where ``loss`` declares an
    array argument, or everywhere for an intermediate function (``"function"``)."""
    named = method.golden["inputs"]
    kinds = {a.name: a for a in loss.args} if loss is not None else {}

    def is_ref(value) -> bool:
        return isinstance(value, str) and value.startswith("$")

    def array(value, arg):
        data = np.asarray(named[value[1:]] if is_ref(value) else value)
        if arg is not None:
            integer = arg.base_kind in ("labels", "indices")
        else:  # an intermediate's argument, or a call the docs show: as the golden input is stored
            integer = is_ref(value) and np.issubdtype(data.dtype, np.integer)
        return data.astype(np.int64 if integer else np.float64)

    def resolve(name, value):
        arg = kinds.get(name)
        if isinstance(value, dict):  # a mapping argument (parameters, state)
            return {k: resolve(None, v) for k, v in value.items()}
        if (arg is not None and arg.is_list) or (isinstance(value, list) and value and all(map(is_ref, value))):
            return [array(v, arg) for v in value]
        if is_ref(value) or (isinstance(value, list) and (arg.is_array if arg else "function" in example)):
            return array(value, arg)
        return value

    return {k: resolve(k, v) for k, v in example["args"].items()}


def golden_examples(case: Case) -> list[Mapping[str, Any]]:
    """The spec's worked examples and edge cases (``"examples"``, ``"edge_cases"``) of the case."""
    golden = case.method.golden
    return [ex for ex in [*golden["examples"], *golden.get("edge_cases", [])]
            if ex["loss"] == case.loss.name and ex["convention"] == case.convention]


def intermediate(case: Case, side: str, name: str, args: Mapping[str, Any], device: str = "cpu"):
    """An intermediate quantity of the case's loss (``similarity_matrix``), the function of that
    name in the loss's module on ``side``, as NumPy arrays (a tuple of them for several)."""
    reference = inspect.getmodule(inspect.unwrap(case.loss.reference))
    if side == "reference":
        out = getattr(reference, name)(**args)
    else:
        import torch

        module = importlib.import_module(reference.__name__.replace("kdref.reference", "kdref.torch"))
        out = getattr(module, name)(**{k: to_torch(v, torch.float64, device) for k, v in args.items()})
        out = tuple(to_numpy(o) for o in out) if isinstance(out, tuple) else to_numpy(out)
    return out


def check_golden(case: Case, side: str, device: str = "cpu") -> Result:
    """Every worked example and edge case of the case reproduces to its printed digits on ``side``:
    the loss's value and gradients, or an intermediate quantity (``"function"``)."""
    examples = golden_examples(case)

    def action(worst: Worst) -> int:
        if not examples:
            raise AssertionError(f"no worked example in kdref/golden/{case.method.name}.json covers {case.label}")
        loss = subject(case, side, device)
        for example in examples:
            where = f"{example['source']} ({side})"
            if "function" in example:
                out = intermediate(case, side, example["function"], golden_arguments(case.method, example), device)
                pairs = zip(out, example["value"], strict=True) if isinstance(out, tuple) else [(out, example["value"])]
                for value, printed in pairs:
                    matches_printed(value, printed, f"{example['function']}, {where}", worst)
                continue
            args = golden_arguments(case.method, example, case.loss)
            matches_printed(loss(**args), example["value"], where, worst)
            for wrt, printed in example.get("grad", {}).items():
                matches_printed(loss.grad(wrt, **args), printed, f"{example.get('grad_source', example['source'])} "
                                f"(∂/∂{wrt}, {side})", worst)
        return len(examples)

    return _run(case.id, f"golden:{side}", action)


# ---------------------------------------------------------------------------------------------
# Agreement of torch with the reference


def check_agreement(case: Case, dtype: str = "float64", device: str = "cpu", max_examples: int = 30) -> Result:
    """torch in ``dtype`` equals the reference on the same (rounded) inputs, within tolerance."""
    import torch

    torch_dtype = getattr(torch, dtype)
    tol = case.method.tolerances[dtype]

    def action(worst: Worst) -> int:
        def body(inputs):
            inputs = round_inputs(inputs, torch_dtype)
            expected = subject(case, "reference")(**inputs)
            args = {k: to_torch(v, torch_dtype, device) for k, v in inputs.items()}
            actual = evaluate(case.loss, case.loss.torch, args, case.convention, "torch")
            if actual.dtype != torch_dtype:
                raise AssertionError(f"result dtype {actual.dtype}, expected {torch_dtype}")
            scale = error_scale(case.method, inputs, case.convention)
            compare(to_numpy(actual), expected, tol, scale, "torch vs reference", worst)

        return run_examples(case.loss.inputs(case.convention, False), body, max_examples)

    return _run(case.id, "agreement" if dtype == "float64" else dtype, action)


def check_autocast(case: Case, device: str = "cpu", max_examples: int = 15) -> Result:
    """Under ``torch.autocast`` with bfloat16 inputs the loss is computed and returned in float32."""
    import torch

    tol = case.method.tolerances["bfloat16"]

    def action(worst: Worst) -> int:
        def body(inputs):
            inputs = round_inputs(inputs, torch.bfloat16)
            expected = subject(case, "reference")(**inputs)
            args = {k: to_torch(v, torch.bfloat16, device) for k, v in inputs.items()}
            with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
                actual = evaluate(case.loss, case.loss.torch, args, case.convention, "torch")
            if actual.dtype != torch.float32:
                raise AssertionError(f"result dtype {actual.dtype}: bfloat16 inputs must accumulate in float32")
            scale = error_scale(case.method, inputs, case.convention)
            compare(to_numpy(actual), expected, tol, scale, "autocast vs reference", worst)

        return run_examples(case.loss.inputs(case.convention, False), body, max_examples)

    return _run(case.id, "autocast", action)


# ---------------------------------------------------------------------------------------------
# Gradients


def differentiable_given(loss: Loss, inputs: Mapping[str, Any]) -> tuple[str, ...]:
    """The differentiable arguments that ``inputs`` holds: an optional one (a connector) may be
    absent or ``None`` in a draw, and then has no gradient to check."""
    return tuple(name for name in loss.differentiable if inputs.get(name) is not None)


def check_gradcheck(case: Case, device: str = "cpu", max_examples: int = 8) -> Result:
    """gradcheck (and gradgradcheck where declared) w.r.t. the differentiable inputs; every
    other float input is a constant and must receive no gradient."""
    import torch

    loss = case.loss

    def action(worst: Worst) -> int:
        def body(inputs):
            args = {k: to_torch(v, torch.float64, device) for k, v in inputs.items()}
            given = differentiable_given(loss, inputs)
            wrt = tuple(t.requires_grad_(True) for name in given for t in leaves(args[name]))

            g = gradient_function(loss, loss.torch, args, case.convention, "torch")

            def f(*xs):
                replacements = iter(xs)
                replaced = {name: replace_leaves(args[name], replacements) for name in given}
                return g(**{**args, **replaced})

            torch.autograd.gradcheck(f, wrt, raise_exception=True)
            if loss.supports_gradgrad:
                torch.autograd.gradgradcheck(f, wrt, raise_exception=True)
            _check_constants(loss, inputs, case.convention, device)

        return run_examples(loss.inputs(case.convention, True), body, max_examples)

    return _run(case.id, "gradcheck", action, numeric=False)


def _check_constants(loss: Loss, inputs: Mapping[str, Any], convention: str, device: str) -> None:
    """Inputs outside ``loss.differentiable`` (teacher, peers) are constants: no gradient reaches them."""
    import torch

    args = {k: to_torch(v, torch.float64, device) for k, v in inputs.items()}
    constants = []
    for name, value in args.items():
        for tensor in leaves(value):
            if hasattr(tensor, "is_floating_point") and tensor.is_floating_point():
                tensor.requires_grad_(True)
                if name not in loss.differentiable:
                    constants.append((name, tensor))
    if not constants:
        return
    out = evaluate(loss, loss.torch, args, convention, "torch", "losses").sum()
    grads = torch.autograd.grad(out, [t for _, t in constants], allow_unused=True)
    leaking = sorted({name for (name, _), g in zip(constants, grads, strict=True)
                      if g is not None and bool((g != 0).any())})
    if leaking:
        raise AssertionError(f"{', '.join(leaking)} received a gradient: a constant input must be detached")


def check_fd_gradient(case: Case, device: str = "cpu", max_examples: int = 10) -> Result:
    """The torch gradient equals central finite differences of the NumPy reference."""
    tol = case.method.tolerances["fd"]

    def action(worst: Worst) -> int:
        def body(inputs):
            reference = subject(case, "reference")
            scale = error_scale(case.method, inputs, case.convention)
            for wrt in differentiable_given(case.loss, inputs):
                expected = reference.grad(wrt, **inputs)
                actual = torch_gradient(case.loss, case.loss.torch, inputs, case.convention, wrt, device)
                # finite differences err relative to the largest gradient entry (truncation) and
                # to the size of the summed terms (cancellation), not to each entry
                bound = tol.rtol * float(np.max(np.abs(expected))) + tol.atol * scale
                compare(actual, expected, Tolerance(0.0, 1.0), bound,
                        f"d loss / d {wrt}: torch vs finite differences of the reference", worst)

        return run_examples(case.loss.inputs(case.convention, True), body, max_examples)

    return _run(case.id, "fd_gradient", action)


# ---------------------------------------------------------------------------------------------
# Properties


def check_properties(case: Case, device: str = "cpu", max_examples: int = 20) -> Result:
    """Every property of the method that applies to the case, on the reference and on torch."""
    properties = [p for p in case.method.properties if p.applies_to(case)]

    def action(worst: Worst) -> int:
        total = 0
        for prop in properties:
            strategy = prop.inputs(case.convention) if prop.inputs else case.loss.inputs(case.convention, True)
            for side in ("reference", "torch"):
                loss = subject(case, side, device)

                def body(inputs, prop=prop, loss=loss):
                    try:
                        worst.update(0.0, prop.check(loss, inputs))
                    except AssertionError as exc:
                        raise AssertionError(f"{prop.name} ({loss.side}): {exc}") from None

                total += run_examples(strategy, body, max_examples)
        return total if properties else 1

    result = _run(case.id, "properties", action)
    result.detail = result.detail or ", ".join(p.name for p in properties) or "(no property applies)"
    return result


# ---------------------------------------------------------------------------------------------
# Bad input


def first_step(loss: Loss, inputs: Mapping[str, Any]) -> dict:
    """The arguments of a stateful loss's first step (the inputs of any other loss unchanged)."""
    if loss.declaration.state is None:
        return dict(inputs)
    per_step = {a.name for a in loss.declaration.args if a.is_array}
    return {k: v[0] if k in per_step else v for k, v in inputs.items()}


def check_bad_input(case: Case, device: str = "cpu") -> Result:
    """Each malformed argument, knob or convention raises the expected exception, whose message
    names what is at fault."""

    def action(worst: Worst) -> int:
        base = first_step(case.loss, golden_arguments(case.method, golden_examples(case)[0], case.loss))
        failures, total = [], 0
        for side in ("reference", "torch"):
            fn = case.loss.reference if side == "reference" else case.loss.torch
            for bad in bad_inputs(case, base, side, device):
                total += 1
                args = as_modules(case.loss, bad.args) if side == "torch" else dict(bad.args)
                convention = args.pop("convention", case.convention)
                try:
                    fn(**args, convention=convention)
                except bad.error as exc:
                    if not bad.message_ok(str(exc)):
                        where = "open with" if bad.opens_with_name else "name"
                        failures.append(f"{side}, {bad.description}: message does not {where} {bad.names!r}: {exc}")
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


def check_compile(target: tuple[Method, Loss], device: str = "cpu", max_examples: int = 1) -> Result:
    """``torch.compile`` of the loss (default convention), fresh for each of the first
    ``max_examples`` worked examples and called with the differentiable inputs requiring grad
    (as in training), gives the reference's value and the eager gradient."""
    import torch

    method, loss = target
    convention = loss.conventions.default
    case = Case(method, loss, convention)
    tol = method.tolerances["float64"]

    def value_and_gradients(fn, args: dict) -> tuple[np.ndarray, list[np.ndarray]]:
        tensors = {k: to_torch(v, torch.float64, device) for k, v in args.items()}
        wrt = [t.requires_grad_(True) for name in differentiable_given(loss, tensors) for t in leaves(tensors[name])]
        value = evaluate(loss, fn, tensors, convention, "torch")
        losses = evaluate(loss, fn, tensors, convention, "torch", "losses") if loss.declaration.state else value
        grads = torch.autograd.grad(losses.sum(), wrt) if wrt else ()
        return to_numpy(value), [to_numpy(g) for g in grads]

    def action(worst: Worst) -> int:
        examples = [ex for ex in golden_examples(case) if "function" not in ex][:max_examples]
        for example in examples:
            args = golden_arguments(method, example, loss)
            scale = error_scale(method, args, convention)
            torch._dynamo.reset()
            value, grads = value_and_gradients(torch.compile(loss.torch), args)
            compare(value, subject(case, "reference")(**args), tol, scale, "torch.compile vs reference", worst)
            _, eager = value_and_gradients(loss.torch, args)
            for g, e in zip(grads, eager, strict=True):
                compare(g, e, tol, scale, "torch.compile gradient vs eager", worst)
        return len(examples)

    return _run(f"{method.name}:{loss.name}", "compile", action)


# ---------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True)
class Check:
    """One check of the proof, as both ``kdref verify`` and pytest run it.

    ``examples`` is the Hypothesis budget of the default run and ``thorough`` of the deep one
    (``kdref verify --thorough``, ``KDREF_THOROUGH=1`` for pytest); ``None`` for a deterministic
    check. ``per`` says what one run covers: a ``"case"`` (a loss under one convention) or a
    ``"loss"`` (its default convention).
    """

    name: str
    description: str
    run: Callable[..., Result]
    examples: int | None = None
    thorough: int | None = None
    per: str = "case"
    #: which targets it applies to (every one unless said)
    applies: Callable[[Any], bool] = lambda target: True
    #: typical seconds per target at the default budget on one core (weighs the time-left estimate;
    #: measured by ``kdref verify``'s "seconds by check" line on a fresh clone, 2 cores, December)
    cost: float = 0.1

    def targets(self, method: Method) -> list:
        targets = [(method, loss) for loss in method.losses] if self.per == "loss" else method.cases()
        return [t for t in targets if self.applies(t)]

    def __call__(self, target, device: str = "cpu", thorough: bool = False) -> Result:
        if self.examples is None:
            return self.run(target, device=device)
        return self.run(target, device=device, max_examples=self.thorough if thorough else self.examples)

    @staticmethod
    def target_id(target) -> str:
        return target.id if isinstance(target, Case) else f"{target[0].name}:{target[1].name}"


def _golden(side: str) -> Callable[..., Result]:
    return lambda case, device="cpu": check_golden(case, side, device)


def _agreement(dtype: str) -> Callable[..., Result]:
    return lambda case, device="cpu", max_examples=30: check_agreement(case, dtype, device, max_examples)


CHECKS: tuple[Check, ...] = (
    Check("golden:reference", "each worked example of the spec reproduces to its printed digits (NumPy)",
          _golden("reference"), cost=0.005),
    Check("golden:torch", "the same worked examples on the torch side", _golden("torch"), cost=0.005),
    Check("agreement", "torch float64 equals the float64 reference on drawn inputs", _agreement("float64"), 20, 100,
          cost=0.07),
    Check("float32", "torch float32 equals the reference on the same rounded inputs", _agreement("float32"), 20, 100,
          cost=0.08),
    Check("autocast", "bfloat16 under torch.autocast is accumulated and returned in float32", check_autocast, 6, 30,
          applies=lambda case: case.loss.supports_autocast, cost=0.03),
    Check("gradcheck", "gradcheck and gradgradcheck in float64; constant inputs get no gradient",
          check_gradcheck, 4, 20, cost=0.11),
    Check("fd_gradient", "the torch gradient equals finite differences of the NumPy reference",
          check_fd_gradient, 6, 30, cost=0.04),
    Check("properties", "what the math guarantees, on both sides", check_properties, 10, 60, cost=0.4),
    Check("bad_input", "malformed arguments, knobs and conventions raise errors naming them", check_bad_input,
          cost=0.005),
    Check("compile", "torch.compile gives the reference's values and the eager gradient", check_compile, 1, 100,
          per="loss", applies=lambda target: target[1].supports_compile, cost=4.0),
)

CHECK_NAMES = tuple(c.name for c in CHECKS)


def check(name: str) -> Check:
    """The check called ``name`` (``golden`` selects both golden checks in :func:`select`)."""
    return next(c for c in CHECKS if c.name == name)


def select(names: Iterable[str] | None = None) -> tuple[Check, ...]:
    """The checks named (``"golden"`` stands for both sides), in table order; all by default."""
    if names is None:
        return CHECKS
    wanted = set(names)
    unknown = wanted - set(CHECK_NAMES) - {"golden"}
    if unknown:
        raise ValueError(f"unknown check(s) {sorted(unknown)}; valid: golden, {', '.join(CHECK_NAMES)}")
    return tuple(c for c in CHECKS if c.name in wanted or c.name.split(":")[0] in wanted)


def plan(methods: Iterable[Method], checks: Iterable[Check] = CHECKS) -> list[tuple[Check, Any]]:
    """Every (check, target) pair of ``methods``, method by method, in table order."""
    return [(c, target) for method in methods for c in checks for target in c.targets(method)]


def run_checks(method: Method, device: str = "cpu", checks: Iterable[str] | None = None, thorough: bool = False,
               progress: Callable[[Result], None] | None = None) -> list[Result]:
    """All (selected) checks of ``method``; ``progress`` is called after each."""
    results = []
    for c, target in plan([method], select(checks)):
        results.append(c(target, device=device, thorough=thorough))
        if progress is not None:
            progress(results[-1])
    return results
