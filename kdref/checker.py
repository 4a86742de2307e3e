"""``kdref.check``: prove someone else's implementation of a loss, and name the convention it computes.

The proof harness (:mod:`kdref.proof`) shows that kdref's torch losses compute the NumPy
reference. This module points the same inputs at a *user's* function: the spec's worked examples
and edge cases, and inputs drawn by the method's strategies (ties, zero rows, duplicated
samples, a batch of one, ...). It compares the user's value with the reference under **every**
convention of the loss, and says which ones it matches. When none does, it says how the nearest
one differs, in words a user can act on: a constant factor (named when it is T², N, C, H·W, ...),
a term that does not depend on the student (same gradients), the student and the teacher
swapped, or a difference only at some inputs (the smallest one shown). Beside the value it
checks what a training loop relies on: the gradient reaches the student and equals kdref's, no
gradient reaches the teacher, the inputs are not modified, and (in float64) ``gradcheck``.

Tolerances follow the dtype the user runs: the user's inputs are rounded to that dtype and the
reference computes on exactly the rounded values, so only the user's own arithmetic is judged::

    report = kdref.check(my_kd_loss, "st", inputs={"student_logits": 0, "teacher_logits": 1, "temperature": "T"})
    print(report)          # matches convention 'kl' ... or how the nearest one differs
    assert report.matches  # or kdref.testing.assert_matches(...)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis.errors import NoSuchExample, Unsatisfiable

from kdref.proof.checks import golden_arguments
from kdref.proof.sides import Subject, error_scale, leaves, round_inputs
from kdref.registry import Loss, Method, Tolerance

__all__ = ["TOLERANCES", "Report", "check"]

#: what a user's loss in each dtype is held to: |Δ| ≤ rtol·|kdref| + atol·(the method's error scale).
#: float32: ten times what kdref holds its own float32 losses to (a correct float32 formula that
#: differs from kdref's order of operations stays inside); half precision: a few of its ulps.
TOLERANCES = {
    "float64": Tolerance(1e-9, 1e-12),
    "float32": Tolerance(1e-4, 1e-5),
    "bfloat16": Tolerance(6e-2, 2e-2),
    "float16": Tolerance(1e-2, 3e-3),
}
_TINY = 1e-300


# ---------------------------------------------------------------------------------------------
# Calling the user's function


@dataclass(frozen=True)
class _Caller:
    """How kdref's arguments reach the user's function: by position, by the user's keyword, or not
    at all (a value fixed inside the user's code); on the user's backend, dtype and device."""

    fn: Callable[..., Any]
    positions: Mapping[str, int]
    keywords: Mapping[str, str]
    backend: str
    dtype: str
    device: str

    def convert(self, value, requires_grad: bool = False):
        if isinstance(value, (list, tuple)):
            return [self.convert(v, requires_grad) for v in value]
        if isinstance(value, Mapping):
            return {k: self.convert(v, requires_grad) for k, v in value.items()}
        if not isinstance(value, np.ndarray):
            return value
        floating = np.issubdtype(value.dtype, np.floating)
        if self.backend == "numpy":
            return value.astype(self.dtype) if floating else value
        import torch

        if not floating:
            return torch.as_tensor(value, device=self.device)
        tensor = torch.as_tensor(value, dtype=torch.float64).to(device=self.device, dtype=getattr(torch, self.dtype))
        return tensor.requires_grad_(requires_grad)

    def arguments(self, converted: Mapping[str, Any]) -> tuple[list, dict]:
        args = [None] * (max(self.positions.values(), default=-1) + 1)
        for name, position in self.positions.items():
            args[position] = converted[name]
        return args, {self.keywords[name]: converted[name] for name in self.keywords if name in converted}

    def __call__(self, converted: Mapping[str, Any]):
        args, kwargs = self.arguments(converted)
        return self.fn(*args, **kwargs)


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        value = value.double() if value.is_floating_point() else value
        return value.numpy()
    return np.asarray(value, dtype=np.float64)


def _caller(fn, loss: Loss, inputs: Mapping[str, int | str | None] | Sequence[str] | None, backend: str,
            dtype: str, device: str) -> _Caller:
    declared = [a.name for a in loss.args] + [k.name for k in loss.declaration.knobs]
    if inputs is None:  # the required arguments by position, in the declared order
        inputs = [a.name for a in loss.args if not a.optional]
    if not isinstance(inputs, Mapping):
        inputs = {name: i for i, name in enumerate(inputs)}
    unknown = [name for name in inputs if name not in declared]
    if unknown:
        raise ValueError(f"inputs names {unknown}, which {loss.name} does not take; its arguments and knobs are "
                         f"{', '.join(declared)}")
    for name, where in inputs.items():
        if where is not None and not isinstance(where, (int, str)):
            raise TypeError(f"inputs[{name!r}] must be a position (int), a keyword (str) or None, got {where!r}")
    positions = {n: w for n, w in inputs.items() if isinstance(w, int)}
    if sorted(positions.values()) != list(range(len(positions))):
        raise ValueError(f"inputs must give positions 0, 1, ... without gaps, got {sorted(positions.values())}")
    keywords = {n: w for n, w in inputs.items() if isinstance(w, str)}
    return _Caller(fn, positions, keywords, backend, dtype, device)


# ---------------------------------------------------------------------------------------------
# The inputs: the spec's examples and drawn ones


@dataclass
class _Input:
    values: dict
    origin: str  # "spec" or "drawn"


def _drawn(loss: Loss, conventions: Sequence[str], count: int, gradient: bool) -> list[dict]:
    """``count`` inputs from the loss's strategies, as many from each convention's (derandomized:
    the same inputs on every run)."""
    collected: list[dict] = []
    for convention in conventions:
        @settings(max_examples=max(1, count // len(conventions)), database=None, derandomize=True, deadline=None,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(loss.inputs(convention, gradient))
        def collect(x):
            collected.append(x)

        collect()
    return collected


def _spec_inputs(method: Method, loss: Loss) -> list[dict]:
    golden = method.golden
    return [golden_arguments(method, ex, loss) for ex in [*golden["examples"], *golden.get("edge_cases", [])]
            if ex["loss"] == loss.name and "function" not in ex]


def _shaped(loss: Loss, caller: _Caller, fixed: Mapping[str, Any], x: Mapping[str, Any]) -> dict | None:
    """``x`` as this check calls with it: the fixed values set, the knobs and optional arguments the
    user's function does not take left out (None where the input needs one the user cannot take)."""
    taken = set(caller.positions) | set(caller.keywords)
    knobs = {k.name for k in loss.declaration.knobs}
    out = {}
    for name, value in {**x, **fixed}.items():
        if name in fixed or name in taken:
            out[name] = value
        elif name not in knobs and not loss.declaration.arg(name).optional and value is not None:
            return None
    return out


# ---------------------------------------------------------------------------------------------
# The report


@dataclass
class Verdict:
    """How the user's values compare with one convention's."""

    convention: str
    aliases: tuple[str, ...]
    agree: int = 0
    total: int = 0
    worst: float = 0.0  # the largest |Δ| / tolerance
    rows: list = field(default_factory=list)  # (input, user value, kdref value, agrees)

    @property
    def label(self) -> str:
        return repr(self.convention) + (f" (= {', '.join(map(repr, self.aliases))})" if self.aliases else "")


@dataclass
class Report:
    """What :func:`check` found. ``matches`` are the conventions the user's loss equals on every
    input; ``differences`` say how the nearest one differs when none does; ``findings`` are problems
    beside the value (gradients, the teacher, the inputs)."""

    target: str
    dtype: str
    device: str
    tolerance: Tolerance
    inputs: int
    spec_inputs: int
    verdicts: list[Verdict]
    matches: list[str]
    nearest: str | None = None
    differences: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    #: remarks that do not make the check fail (inputs kdref accepts that the function refuses)
    notes: list[str] = field(default_factory=list)
    #: conventions the loss matches within a range of one argument only (``{"kl_t2": "T < 1e+08"}``)
    matches_where: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """The loss matches a convention and nothing else is wrong."""
        return bool(self.matches) and not self.findings

    def verdict(self, convention: str) -> Verdict:
        return next(v for v in self.verdicts if v.convention == convention or convention in v.aliases)

    def __str__(self) -> str:
        t = self.tolerance
        lines = [f"kdref check of your {self.target}, {self.dtype} on {self.device}: {self.inputs} inputs "
                 f"({self.spec_inputs} from the spec, the rest drawn); tolerance |Δ| ≤ {t.rtol:g}·|kdref| + "
                 f"{t.atol:g}·scale"]
        matched = [self.verdict(c) for c in self.matches]
        if len(matched) == 1:
            lines.append(f"matches convention {matched[0].label}")
        elif matched:
            lines.append("matches every one of these conventions on all the inputs (they agree there): "
                         + "; ".join(v.label for v in matched))
        elif self.matches_where:
            lines.append("matches " + "; ".join(f"convention {self.verdict(c).label} only where {where}"
                                               for c, where in self.matches_where.items()) + ":")
            lines += [f"  - {d}" for d in self.differences]
        else:
            nearest = self.verdict(self.nearest) if self.nearest else None
            lines.append("matches no convention" + (f"; the nearest is {nearest.label}, agreeing on {nearest.agree} "
                                                    f"of {nearest.total} inputs:" if nearest else ""))
            lines += [f"  - {d}" for d in self.differences]
        lines += [f"problem: {f}" for f in self.findings]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Naming what differs


def _batch(x: Mapping[str, Any]) -> int:
    first = next(leaf for v in x.values() for leaf in leaves(v) if isinstance(leaf, np.ndarray) and leaf.ndim >= 1)
    return first.shape[0]


def _first_array(x: Mapping[str, Any]) -> np.ndarray:
    return next(leaf for v in x.values() for leaf in leaves(v) if isinstance(leaf, np.ndarray) and leaf.ndim >= 2)


def _candidates(x: Mapping[str, Any]) -> dict[str, float]:
    """The sizes a constant factor is usually made of, on input ``x``."""
    a = _first_array(x)
    sizes = {"N": float(a.shape[0]), "C": float(a.shape[1]), "N·C": float(a.shape[0] * a.shape[1])}
    if a.ndim > 2:
        sizes["H·W"] = float(np.prod(a.shape[2:]))
        sizes["C·H·W"] = float(np.prod(a.shape[1:]))
        sizes["N·H·W"] = float(a.shape[0] * np.prod(a.shape[2:]))
    sizes["N²"] = sizes["N"] ** 2
    n = sizes["N"]  # an off-by-one count (only as a factor, never its power)
    sizes.update({"N/(N+1)": n / (n + 1), "(N+1)/N": (n + 1) / n})
    if n > 1:
        sizes.update({"N/(N−1)": n / (n - 1), "(N−1)/N": (n - 1) / n})
    temperature = next((v for k, v in x.items() if k in ("temperature", "T") and isinstance(v, (int, float))), None)
    if temperature:
        sizes["T"], sizes["T²"] = float(temperature), float(temperature) ** 2
    return sizes


def _name_factor(ratios: Sequence[float], inputs: Sequence[Mapping[str, Any]]) -> str | None:
    """``"T²"``, ``"1/N"``, ``"3/1000"``: the factor every ratio equals (to 1e-6), if there is one."""
    r = np.asarray(ratios)
    if np.allclose(r, r[0], rtol=1e-6, atol=0):
        fraction = Fraction(float(r[0])).limit_denominator(10000)
        if math.isclose(float(fraction), r[0], rel_tol=1e-9):
            if fraction.denominator == 1 or fraction.numerator == 1 or len(set(map(tuple, _shapes(inputs)))) == 1:
                return str(fraction)
        named = _named_factor(r, inputs)
        return named or f"{r[0]:.6g}"
    return _named_factor(r, inputs)


def _shapes(inputs: Sequence[Mapping[str, Any]]) -> list[tuple[int, ...]]:
    return [_first_array(x).shape for x in inputs]


def _named_factor(r: np.ndarray, inputs: Sequence[Mapping[str, Any]]) -> str | None:
    sizes = [_candidates(x) for x in inputs]
    for name in sizes[0]:
        if not all(name in s for s in sizes):
            continue
        values = np.array([s[name] for s in sizes])
        powers = [(1, name)] if "/" in name else [(1, name), (-1, f"1/{name}"), (2, f"({name})²"),
                                                   (-2, f"1/({name})²")]
        for power, text in powers:
            for constant in (1.0, 2.0, 0.5):
                if np.allclose(r, constant * values ** power, rtol=1e-6, atol=0) and len(set(values)) > 1:
                    return text if constant == 1 else f"{Fraction(constant)}·{text}"
    return None


def _describe(verdict: Verdict, gradients_agree: Callable[[Verdict], bool | None],
              smallest: Callable[[Verdict], Mapping[str, Any] | None]) -> list[str]:
    """How the user's values differ from ``verdict``'s convention, in words."""
    rows = [(x, u, k) for x, u, k, _ in verdict.rows if np.shape(u) == np.shape(k)]
    if len(rows) < len(verdict.rows):
        shapes = {(np.shape(u), np.shape(k)) for _, u, k, _ in verdict.rows}
        return [f"your result has another shape than kdref's ({', '.join(f'{a} vs {b}' for a, b in shapes)}): "
                "a different reduction (look at the knob 'reduction')"]
    nonzero = [(x, float(np.sum(u)), float(np.sum(k))) for x, u, k in rows
               if abs(float(np.sum(k))) > 1e-9 * (1 + abs(float(np.sum(u))))]
    if len(nonzero) >= 2 and all(np.isfinite(u) for _, u, _ in nonzero):
        ratios = [u / k for _, u, k in nonzero]
        factor = _name_factor(ratios, [x for x, _, _ in nonzero])
        if factor is not None and factor != "1":
            return [f"your value is kdref's times {factor} on every input where kdref's is not 0"]
        # the same factor below a value of one argument (at least half the inputs), the formula
        # losing its digits beyond (T²·KL from log-probabilities at a large T)
        for name, value in nonzero[0][0].items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not all(
                    isinstance(x.get(name), (int, float)) for x, _, _ in nonzero):
                continue
            for threshold in sorted({x[name] for x, _, _ in nonzero}, reverse=True):
                kept = [(x, u, k) for x, u, k in nonzero if x[name] < threshold]
                if len(kept) < max(2, len(nonzero) / 2):
                    break
                factor = _name_factor([u / k for _, u, k in kept], [x for x, _, _ in kept])
                if factor is not None and factor != "1":
                    return [f"your value is kdref's times {factor} on every input where {name} < {threshold:g} "
                            f"(and kdref's is not 0); from {name} = {threshold:g} on, it loses its digits too"]
    out = []
    same_gradient = gradients_agree(verdict)
    if same_gradient:
        out.append("your value differs by a term that does not depend on the student: the gradients are the same, "
                   "so training is unchanged (only the reported loss differs)")
    if verdict.agree >= verdict.total / 2:
        x = smallest(verdict)
        where = f"; the smallest input where it does: {_show(x)}" if x is not None else ""
        out.append(f"your value differs on {verdict.total - verdict.agree} of {verdict.total} inputs (often "
                   f"degenerate ones: ties, zero rows, duplicated samples, one sample){where}")
    elif not out:
        x, u, k = next((x, u, k) for x, u, k, ok in verdict.rows if not ok)
        out.append(f"your value differs on {verdict.total - verdict.agree} of {verdict.total} inputs, by no constant "
                   f"factor; for example {np.round(np.asarray(u, dtype=float), 8).tolist()} where kdref gives "
                   f"{np.round(np.asarray(k, dtype=float), 8).tolist()}, on {_show(x)}")
    return out


def _scalar_split(verdict: Verdict) -> tuple[str, float, bool] | None:
    """``(argument, threshold, above)`` when every input where the user's value differs has a scalar
    argument at or above (``above``) or at or below a threshold that at least half of all inputs
    stay clear of: the mark of a formula that is right in general and loses its digits at one end
    of a range (T²·KL from log-probabilities at a large T), not always there."""
    differing = [x for x, *_, ok in verdict.rows if not ok]
    agreeing = [x for x, *_, ok in verdict.rows if ok]
    if not differing or not agreeing:
        return None
    for name, value in differing[0].items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        bad = [x.get(name) for x in differing]
        good = [x.get(name) for x in agreeing]
        if any(not isinstance(v, (int, float)) for v in bad + good):
            continue
        half = len(verdict.rows) / 2
        if sum(v < min(bad) for v in good) >= half:
            return name, min(bad), True
        if sum(v > max(bad) for v in good) >= half:
            return name, max(bad), False
    return None


def _show(x: Mapping[str, Any] | None) -> str:
    """An input as the report prints it: arrays as nested lists (rounded to 6 digits)."""
    def plain(v):
        if isinstance(v, np.ndarray):
            return np.round(v, 6).tolist() if np.issubdtype(v.dtype, np.floating) else v.tolist()
        if isinstance(v, (list, tuple)):
            return [plain(u) for u in v]
        if isinstance(v, Mapping):
            return {k: plain(u) for k, u in v.items()}
        return v

    return "-" if x is None else ", ".join(f"{k}={plain(v)!r}" for k, v in x.items())


# ---------------------------------------------------------------------------------------------
# The check


def check(fn: Callable[..., Any], method: str | Method, loss: str | None = None, *,
          inputs: Mapping[str, int | str | None] | Sequence[str] | None = None, fixed: Mapping[str, Any] | None = None,
          dtype: str = "float64", device: str = "cpu", backend: str | None = None, max_examples: int = 60,
          detached: bool = True) -> Report:
    """Check ``fn`` against every convention of one loss of ``method``.

    Args:
      fn: the user's loss: a function or an ``nn.Module`` taking torch tensors (or NumPy arrays
        with ``backend="numpy"``) and returning the loss.
      method: a method's name (``"st"``) or record.
      loss: which of its losses (``"soft_target_loss"``); the method's first by default.
      inputs: how kdref's arguments and knobs reach ``fn``: ``{kdref name: position or keyword}``
        (``{"student_logits": 0, "teacher_logits": 1, "temperature": "T"}``), or kdref's names in
        ``fn``'s positional order. By default the required arguments, by position, in kdref's order.
      fixed: kdref's value of an argument or knob on every input (``{"temperature": 4.0}``), for
        values hard-coded in ``fn`` or passed to it unchanged (when ``inputs`` maps them).
      dtype: the floating dtype ``fn`` receives (``"float64"``, ``"float32"``, ``"bfloat16"``,
        ``"float16"``); the tolerance follows it (:data:`TOLERANCES`).
      device: the torch device ``fn`` runs on.
      backend: ``"torch"`` (the default) or ``"numpy"``.
      max_examples: how many inputs to draw, beside the spec's.
      detached: whether ``fn`` must itself cut the gradient to the teacher (and other constants),
        as kdref's losses do; ``False`` where the training loop computes them under ``no_grad``
        (the popular libraries' way).
    """
    from kdref import get

    record = get(method) if isinstance(method, str) else method
    the_loss = record.losses[0] if loss is None else record.loss(loss)
    if the_loss.declaration.state is not None:
        raise ValueError(f"{the_loss.name} is a step with state ({the_loss.declaration.state!r}): kdref check "
                         "compares single calls and does not yet run a sequence of steps")
    backend = backend or "torch"
    if backend not in ("torch", "numpy"):
        raise ValueError(f"backend must be 'torch' or 'numpy', got {backend!r}")
    if dtype not in TOLERANCES or (backend == "numpy" and dtype not in ("float64", "float32")):
        raise ValueError(f"dtype must be one of {', '.join(TOLERANCES)} (NumPy: float64 or float32), got {dtype!r}")
    fixed = dict(fixed or {})
    caller = _caller(fn, the_loss, inputs, backend, dtype, device)
    canonical = list(the_loss.conventions.presets)
    spec = [_shaped(the_loss, caller, fixed, x) for x in _spec_inputs(record, the_loss)]
    drawn = [_shaped(the_loss, caller, fixed, x) for x in _drawn(the_loss, canonical, max_examples, False)
             + _drawn(the_loss, canonical, max_examples // 4, True)]  # and smooth points, as gradients see
    cases = [_Input(x, "spec") for x in spec if x is not None] + [_Input(x, "drawn") for x in drawn if x is not None]
    if not cases:
        raise ValueError(f"no input fits: {the_loss.name} needs {', '.join(a.name for a in the_loss.args)}; map "
                         "each with inputs= or give its value with fixed=")
    session = _Session(record, the_loss, caller, fixed, TOLERANCES[dtype], detached)
    verdicts = [session.verdict(c, cases) for c in canonical]
    matches = [v.convention for v in verdicts if v.total and v.agree == v.total]
    session.matched = matches
    report = Report(f"{the_loss.name} ({record.name})", dtype, device, TOLERANCES[dtype], len(cases),
                    sum(c.origin == "spec" for c in cases), verdicts, matches, findings=session.findings)
    if not matches:
        nearest = max(verdicts, key=lambda v: (v.agree / max(v.total, 1), -v.worst))
        report.nearest = nearest.convention
        split = _scalar_split(nearest)
        if split is not None:  # a formula that loses its digits at large (or small) values of one argument
            name, threshold, above = split
            inside = [c for c in cases if not isinstance(c.values.get(name), (int, float))
                      or (c.values[name] < threshold if above else c.values[name] > threshold)]
            where = f"{name} {'<' if above else '>'} {threshold:g}"
            within = [session.verdict(c, inside) for c in canonical]
            report.matches_where = {v.convention: where for v in within if v.total and v.agree == v.total}
            x, u, k, _ = min(((x, u, k, ok) for x, u, k, ok in nearest.rows if not ok), key=lambda row: _size(row[0]))
            report.differences = [f"your value differs only where {name} {'≥' if above else '≤'} {threshold:g} "
                                  f"({nearest.total - nearest.agree} inputs; the smallest gives "
                                  f"{np.round(np.asarray(u, dtype=float), 8).tolist()} where kdref gives "
                                  f"{np.round(np.asarray(k, dtype=float), 8).tolist()}: {_show(x)}), as a formula "
                                  f"does that loses its digits there"]
            if not report.matches_where:
                near = max(within, key=lambda v: (v.agree / max(v.total, 1), -v.worst))
                swapped = session.swapped(canonical, inside)
                report.differences += [f"where {where}: " + d for d in (
                    [f"your loss computes convention {swapped!r} with the student and the teacher swapped"]
                    if swapped else _describe(near, session.gradients_agree, session.smallest))]
        else:
            swapped = session.swapped(canonical, cases)
            report.differences = [f"your loss computes convention {swapped!r} with the student and the teacher "
                                  "swapped"] if swapped else _describe(nearest, session.gradients_agree,
                                                                       session.smallest)
    if backend == "torch":
        report.findings += session.gradient_findings(report.matches or [report.nearest], cases)
    report.notes += session.bad_input_notes(cases[0].values)
    if session.refused:
        x, exc = min(session.refused, key=lambda item: _size(item[0]))
        report.notes.append(f"your function raised on {len(session.refused)} of {len(cases)} inputs, left out of the "
                            f"comparison; the smallest: {_show(x)} ({type(exc).__name__}: {exc})")
    if len(session.refused) == len(cases):
        report.findings.append("your function raised on every input: see the note")
    return report


def _replace(value, swap: Mapping[int, Any]):
    """``value`` (a tensor, or a list or mapping of them) with the tensors whose ids ``swap`` names replaced."""
    if isinstance(value, (list, tuple)):
        return [_replace(v, swap) for v in value]
    if isinstance(value, Mapping):
        return {k: _replace(v, swap) for k, v in value.items()}
    return swap.get(id(value), value)


def _size(x: Mapping[str, Any]) -> int:
    return sum(np.size(leaf) for v in x.values() for leaf in leaves(v) if isinstance(leaf, np.ndarray))


class _Session:
    """One check's state: the user's values computed once, the reference per convention."""

    def __init__(self, method: Method, loss: Loss, caller: _Caller, fixed: Mapping[str, Any],
                 tolerance: Tolerance, detached: bool) -> None:
        self.method, self.loss, self.caller, self.fixed, self.tolerance = method, loss, caller, fixed, tolerance
        self.detached = detached
        self.findings: list[str] = []
        self.refused: list[tuple[Mapping[str, Any], Exception]] = []  # inputs the user's function raised on
        self.matched: list[str] = []
        self._user: dict[int, Any] = {}

    # -- values ---------------------------------------------------------------------------------

    def rounded(self, x: Mapping[str, Any]) -> dict:
        if self.caller.dtype == "float64":
            return dict(x)
        import torch

        return round_inputs(x, getattr(torch, self.caller.dtype))

    def user(self, x: Mapping[str, Any]):
        """The user's value on ``x`` (rounded to their dtype), or the exception it raised."""
        key = id(x)  # the input is kept alive beside its value, so its id is not reused
        if key not in self._user:
            converted = self.caller.convert(self.rounded(x))
            snapshot = [_to_numpy(leaf).copy() for leaf in leaves(converted) if hasattr(leaf, "shape")]
            try:
                self._user[key] = (x, _to_numpy(self.caller(converted)))
            except Exception as exc:  # a user's function may raise anything: the input is left out
                self._user[key] = (x, exc)
                self.refused.append((x, exc))
            after = [_to_numpy(leaf) for leaf in leaves(converted) if hasattr(leaf, "shape")]
            if any(not np.array_equal(a, b, equal_nan=True) for a, b in zip(snapshot, after, strict=True)):
                self._note("your function modifies its inputs in place")
        return self._user[key][1]

    def reference(self, convention: str, x: Mapping[str, Any]):
        try:
            return Subject(self.method, self.loss, convention, "reference")(**self.rounded(x))
        except (ValueError, TypeError):
            return None  # this convention refuses the input (a batch too small for it)

    def agrees(self, user, kdref, x: Mapping[str, Any], convention: str) -> tuple[bool, float]:
        if np.shape(user) != np.shape(kdref):
            return False, math.inf
        if not np.all(np.isfinite(user)):
            return False, math.inf
        bound = self.tolerance.rtol * np.abs(kdref) + self.tolerance.atol * error_scale(self.method, x, convention)
        ratio = float(np.max(np.abs(user - kdref) / np.maximum(bound, _TINY), initial=0.0))
        return ratio <= 1.0, ratio

    def verdict(self, convention: str, cases: Sequence[_Input]) -> Verdict:
        aliases = tuple(a for a, target in self.loss.conventions.aliases.items() if target == convention)
        verdict = Verdict(convention, aliases)
        for case in cases:
            user, kdref = self.user(case.values), self.reference(convention, case.values)
            if kdref is None or isinstance(user, Exception):
                continue
            ok, ratio = self.agrees(user, kdref, case.values, convention)
            verdict.total += 1
            verdict.agree += ok
            verdict.worst = max(verdict.worst, ratio)
            verdict.rows.append((case.values, user, kdref, ok))
            if not np.all(np.isfinite(user)) and np.all(np.isfinite(kdref)):
                self._note(f"your function returns a non-finite value where kdref's is finite, on {_show(case.values)}")
        return verdict

    def swapped(self, conventions: Sequence[str], cases: Sequence[_Input]) -> str | None:
        """The convention the user's loss computes with the first two arguments exchanged, if any."""
        first, second = (a.name for a in self.loss.args[:2])
        for convention in conventions:
            agree = total = 0
            for case in cases:
                x = case.values
                if first not in x or second not in x or [np.shape(a) for a in leaves(x[first])] != [
                        np.shape(a) for a in leaves(x[second])]:
                    continue
                user, kdref = self.user(x), self.reference(convention, {**x, first: x[second], second: x[first]})
                if kdref is None or isinstance(user, Exception):
                    continue
                total += 1
                agree += self.agrees(user, kdref, x, convention)[0]
            straight = self.verdict(convention, cases)
            # a symmetric loss agrees either way; a convention that refuses most inputs proves nothing
            if total >= max(5, straight.total // 2) and agree == total and straight.agree < straight.total:
                return convention
        return None

    def smallest(self, verdict: Verdict) -> Mapping[str, Any] | None:
        """The smallest drawn input on which the user's value and ``verdict``'s differ (shrunk by Hypothesis)."""
        def differs(x) -> bool:
            y = _shaped(self.loss, self.caller, self.fixed, x)
            if y is None:
                return False
            user, kdref = self.user(y), self.reference(verdict.convention, y)
            if kdref is None or isinstance(user, Exception):
                return False
            return not self.agrees(user, kdref, y, verdict.convention)[0]

        try:
            found = find(self.loss.inputs(verdict.convention, False), differs,
                         settings=settings(max_examples=300, database=None, deadline=None, derandomize=True,
                                           suppress_health_check=list(HealthCheck)))
        except (NoSuchExample, Unsatisfiable):
            return next((x for x, *_, ok in verdict.rows if not ok), None)
        return _shaped(self.loss, self.caller, self.fixed, found)

    # -- gradients ------------------------------------------------------------------------------

    def _gradients(self, x: Mapping[str, Any], convention: str | None):
        """The gradient of the summed value w.r.t. every float input: the user's (a dict name -> array
        or None) and, with a convention, kdref's torch twin's in float64."""
        import torch

        from kdref.proof.sides import evaluate, to_torch

        rounded = self.rounded(x)
        names = [n for n, v in rounded.items() if any(isinstance(leaf, np.ndarray) and
                                                     np.issubdtype(leaf.dtype, np.floating) for leaf in leaves(v))]
        converted = {n: self.caller.convert(v, requires_grad=n in names) for n, v in rounded.items()}
        out = self.caller(converted)
        tensors = {n: [t for t in leaves(converted[n]) if getattr(t, "requires_grad", False)] for n in names}
        flat = [t for n in names for t in tensors[n]]
        user = None
        if getattr(out, "requires_grad", False):
            grads = iter(torch.autograd.grad(out.sum(), flat, allow_unused=True))
            user = {n: [next(grads) for _ in tensors[n]] for n in names}
        if convention is None:
            return user, None
        args = {n: to_torch(v, torch.float64, "cpu") for n, v in rounded.items()}
        wrt = {n: [t.requires_grad_(True) for t in leaves(args[n])] for n in self.loss.differentiable if n in args}
        value = evaluate(self.loss, self.loss.torch, args, convention, "torch", "losses").sum()
        grads = iter(torch.autograd.grad(value, [t for ts in wrt.values() for t in ts], allow_unused=True))
        return user, {n: [next(grads) for _ in ts] for n, ts in wrt.items()}

    def gradients_agree(self, verdict: Verdict, rows: str = "differing") -> bool | None:
        """Whether the user's gradient w.r.t. the student equals the convention's, on the inputs where
        the values differ (``rows="all"``: on the first inputs); None where it cannot tell."""
        if self.caller.backend != "torch":
            return None
        student = self.loss.differentiable[0]
        checked = 0
        differing = [x for x, _, _, ok in verdict.rows if (rows == "all" or not ok) and student in x]
        for x in differing[:8]:
            user, ref = self._gradients(x, verdict.convention)
            if user is None or user.get(student) is None or any(g is None for g in user[student]):
                return False
            mine = np.concatenate([_to_numpy(g).ravel() for g in user[student]])
            theirs = np.concatenate([_to_numpy(g).ravel() for g in ref[student]])
            scale = error_scale(self.method, x, verdict.convention)
            bound = 10 * (self.tolerance.rtol * np.abs(theirs) + self.tolerance.atol * scale)
            if mine.shape != theirs.shape or not np.all(np.abs(mine - theirs) <= bound):
                return False
            checked += 1
        return bool(checked) or None

    def gradient_findings(self, conventions: Sequence[str | None], cases: Sequence[_Input]) -> list[str]:
        """Gradients a training loop relies on: some reach the student, none the teacher."""
        findings = []
        differentiable = set(self.loss.differentiable)
        for case in itertools.islice((c for c in cases if not isinstance(self.user(c.values), Exception)), 4):
            user, _ = self._gradients(case.values, None)
            if user is None:
                return [f"your loss is not differentiable: its result has no gradient (kdref's reaches "
                        f"{', '.join(sorted(differentiable))})"]
            for name, grads in user.items():
                receives = any(g is not None and bool(np.any(_to_numpy(g) != 0)) for g in grads)
                if name not in differentiable and receives and self.detached:
                    findings.append(f"{name} receives a gradient through your loss, where kdref's treats it as a "
                                    "constant: detach it in the loss (or, if your training loop computes it under "
                                    "torch.no_grad() as the popular libraries do, pass detached=False)")
        matched = [c for c in conventions if c is not None and c in self.matched]
        if matched and not findings:
            findings += self.smooth_gradient_findings(matched[0])
        return sorted(set(findings))

    def _values_agree(self, convention: str, x: Mapping[str, Any]) -> bool:
        user, kdref = self.user(x), self.reference(convention, x)
        return kdref is not None and not isinstance(user, Exception) and self.agrees(user, kdref, x, convention)[0]

    def smooth_gradient_findings(self, convention: str) -> list[str]:
        """On the method's gradient draws (smooth points, away from ties and kinks): the user's
        gradient w.r.t. the student equals the convention's, and in float64 passes ``gradcheck``
        (the gradient is the derivative of the user's own value)."""
        import torch

        student = self.loss.differentiable[0]
        preset = self.loss.declaration.resolve(convention)
        # a draw is smooth with its own knobs: one the user's function does not take, left out with
        # another value than the convention's, may put it on a kink (CC's unsquared norm at a match,
        # drawn with normalised rows)
        smooth = [y for x in _drawn(self.loss, [convention], 6, True)
                  if (y := _shaped(self.loss, self.caller, self.fixed, x)) is not None and student in y
                  and all(x[k] == preset[k] for k in set(x) - set(y) if k in preset)]
        smooth = [y for y in smooth if self._values_agree(convention, y)]
        verdict = Verdict(convention, ())
        verdict.rows = [(y, None, None, False) for y in smooth]
        if self.gradients_agree(verdict) is False:
            return [f"your gradient w.r.t. {student} differs from convention {convention!r}'s, although the values "
                    "agree"]
        if self.caller.dtype != "float64":
            return []
        for y in smooth[:2]:
            converted = self.caller.convert(y)
            wrt = [t for t in leaves(converted[student]) if hasattr(t, "requires_grad")]

            def value(*tensors, converted=converted, wrt=wrt):
                swap = dict(zip(map(id, wrt), tensors, strict=True))
                return self.caller({n: _replace(v, swap) for n, v in converted.items()}).sum()

            inputs = tuple(t.detach().requires_grad_(True) for t in wrt)
            if not torch.autograd.gradcheck(value, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, raise_exception=False):
                return [f"your gradient w.r.t. {student} is not the derivative of your value (gradcheck fails on "
                        f"{_show(y)})"]
        return []

    def bad_input_notes(self, x: Mapping[str, Any]) -> list[str]:
        """Malformed variants of a valid input (a NaN or an infinite entry, an empty batch, an axis
        missing, in each floating array the user's function takes): kdref refuses each with a
        ValueError naming the argument; a value returned for one is worth knowing."""
        taken = set(self.caller.positions) | set(self.caller.keywords)
        silent = []
        for name, value in x.items():
            if name not in taken or not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.floating):
                continue
            nan, inf = value.copy(), value.copy()
            nan.flat[0], inf.flat[0] = np.nan, np.inf
            variants = {"a NaN entry": nan, "an infinite entry": inf, "an empty batch": value[:0],
                        "an axis missing": value[0]}
            for what, bad in variants.items():
                try:
                    out = _to_numpy(self.caller(self.caller.convert({**self.rounded(x), name: bad})))
                except Exception:  # refused: as it should be
                    continue
                silent.append(f"{name} with {what} (returns {np.asarray(out).ravel()[:3].tolist()})")
        if not silent:
            return []
        return [f"your function accepts {len(silent)} malformed inputs without an error, where kdref raises a "
                f"ValueError naming the argument: {'; '.join(silent)}"]

    def _note(self, finding: str) -> None:
        if finding not in self.findings and len(self.findings) < 20:
            self.findings.append(finding)
