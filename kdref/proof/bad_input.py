"""Bad inputs and bad knob values, generated from a loss's declaration.

Every array argument gets malformed variants (rank, empty batch, NaN/±inf, integer dtype, and,
where it is ``like`` another, another batch, dtype, shape or device); every scalar argument values
outside its kind; every knob a value outside its choices or range; and the loss an unknown
convention and an unknown knob. Each must raise the named exception with a message about the
argument or knob at fault.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdref.declaration import Arg, Knob
from kdref.proof.sides import to_torch
from kdref.registry import Case


@dataclass(frozen=True)
class BadInput:
    """One malformed call: its arguments, the exception expected, and whom its message is about.

    An argument's message opens with its name (``"teacher must ..."``), so a message about another
    argument that merely mentions it does not pass; a knob's or convention's message names it.
    """

    description: str
    args: Mapping[str, Any]
    error: type[Exception]
    names: str
    opens_with_name: bool = True

    def message_ok(self, message: str) -> bool:
        if self.opens_with_name:
            return re.search(rf"^{re.escape(self.names)}(?!\w)", message) is not None
        return re.search(rf"(?<!\w){re.escape(self.names)}(?!\w)", message) is not None


_NOT_A_NUMBER = ("1", TypeError)
_NON_FINITE = [(float("nan"), ValueError), (float("inf"), ValueError), (float("-inf"), ValueError),
               (10**400, ValueError)]  # an integer too large for a float: not a bare OverflowError
#: bad values of each scalar kind of argument, with the exception each must raise
_BAD_SCALARS = {
    "temperature": [(0.0, ValueError), (-1.0, ValueError), *_NON_FINITE, _NOT_A_NUMBER],
    "weight": [(-1.0, ValueError), *_NON_FINITE, _NOT_A_NUMBER],
    "fraction": [(-0.1, ValueError), (1.5, ValueError), *_NON_FINITE, _NOT_A_NUMBER],
    "real": [*_NON_FINITE, _NOT_A_NUMBER],
    "weights": [(-1.0, ValueError), *_NON_FINITE, _NOT_A_NUMBER, ([-1.0], ValueError), ([float("nan")], ValueError),
                (["1"], TypeError)],
}


class _ArrayOps:
    """The few array operations the generator needs, for NumPy or torch inputs."""

    def __init__(self, side: str, device: str) -> None:
        self.side, self.device = side, device

    def convert(self, value):
        if self.side == "reference":
            return value
        import torch

        return to_torch(value, torch.float64, self.device)

    def with_value(self, x, index: int, value: float):
        y = x.copy() if self.side == "reference" else x.clone()
        y.reshape(-1)[index] = value
        return y

    def as_int(self, x):
        return x.astype(np.int64) if self.side == "reference" else x.long()

    def as_float32(self, x):
        return x.astype(np.float32) if self.side == "reference" else x.float()

    def integers(self, values: np.ndarray):
        return self.convert(values)

    def one_more_sample(self, x):
        if self.side == "reference":
            return np.concatenate([x, x[:1]])
        import torch

        return torch.cat([x, x[:1]])


def bad_inputs(case: Case, base: Mapping[str, Any], side: str, device: str = "cpu") -> list[BadInput]:
    """Malformed variants of the valid call ``base`` (NumPy arguments of the case's loss)."""
    ops = _ArrayOps(side, device)
    base = {k: ops.convert(v) for k, v in base.items()}
    declaration = case.loss.declaration
    cases = [
        BadInput("unknown convention", {**base, "convention": "no-such-convention"}, ValueError,
                 "no-such-convention", opens_with_name=False),
        BadInput("unknown knob", {**base, "no_such_knob": 1.0}, ValueError, "no_such_knob", opens_with_name=False),
    ]
    for knob in declaration.knobs:
        cases += [BadInput(f"{knob.name} = {v!r}", {**base, knob.name: v}, error, knob.name, opens_with_name=False)
                  for v, error in _bad_knob_values(knob)]
    for arg in declaration.args:
        if arg.kind in _BAD_SCALARS:
            cases += [BadInput(f"{arg.name} = {v!r}", {**base, arg.name: v}, error, arg.name)
                      for v, error in _BAD_SCALARS[arg.kind]]
        if base.get(arg.name) is None or not (arg.is_array or arg.is_mapping):
            continue
        if arg.is_mapping:
            cases += _bad_mapping(arg, base[arg.name], base, ops, names_checked=arg.kind != "network" or
                                  side == "reference")
        elif arg.base_kind == "indices":
            cases += _bad_indices(arg, base[arg.name], base, ops)
        elif arg.is_list:
            cases += _bad_list(arg, base[arg.name], base, ops)
        elif arg.base_kind == "labels":
            cases += _bad_labels(arg, base[arg.name], base, ops, side)
        else:
            cases += _bad_float_array(arg, arg.name, base[arg.name], base, ops)
    fewest = case.loss.min_batch(case.convention)
    if fewest > 1:
        first = declaration.args[0].name
        cases.append(BadInput(f"{fewest - 1} sample(s), fewer than the {fewest} the loss needs",
                              {k: _first_samples(v, fewest - 1) for k, v in base.items()}, ValueError, first))
    return cases


def _bad_mapping(arg: Arg, arrays: Mapping[str, Any], base, ops: _ArrayOps, names_checked: bool) -> list[BadInput]:
    """A mapping argument: not a mapping, an entry missing or unknown (where its names are
    declared: a torch network may be any module), a bad entry."""
    n = arg.name
    key = next(iter(arrays))
    cases = [
        BadInput(f"{n} not a mapping", {**base, n: [*arrays.values()]}, TypeError, n),
        BadInput(f"{n}[{key!r}] with NaN", {**base, n: {**arrays, key: ops.with_value(arrays[key], 0, np.nan)}},
                 ValueError, n),
        BadInput(f"{n}[{key!r}] integer dtype", {**base, n: {**arrays, key: ops.as_int(arrays[key])}}, TypeError, n),
    ]
    if names_checked:
        cases.append(BadInput(f"{n} with an unknown entry", {**base, n: {**arrays, "no_such_entry": arrays[key]}},
                              ValueError, n))
    if arg.keys and names_checked:
        missing = {k: v for k, v in arrays.items() if k != arg.keys[0]}
        cases.append(BadInput(f"{n} without {arg.keys[0]!r}", {**base, n: missing}, ValueError, n))
    if arg.like is not None:
        cases.append(BadInput(f"{n}[{key!r}] float32, {arg.like} float64",
                              {**base, n: {**arrays, key: ops.as_float32(arrays[key])}}, TypeError, n))
        if ops.side == "torch":
            cases.append(BadInput(f"{n}[{key!r}] on another device than {arg.like}",
                                  {**base, n: {**arrays, key: arrays[key].to("meta")}}, ValueError, n))
    return cases


def _bad_indices(arg: Arg, indices, base, ops: _ArrayOps) -> list[BadInput]:
    """Indices drawn outside the loss: out of range, negative, not integers."""
    n = arg.name
    shape = tuple(indices.shape)
    cases = [
        BadInput(f"negative {n}", {**base, n: ops.integers(np.full(shape, -1))}, ValueError, n),
        BadInput(f"float {n}", {**base, n: ops.convert(np.zeros(shape))}, TypeError, n),
    ]
    if arg.bound is not None:
        name, _, key = arg.bound.partition(".")
        size = (base[name][key] if key else base[name]).shape[0]
        cases.append(BadInput(f"{n} beyond {arg.bound}", {**base, n: ops.integers(np.full(shape, size))},
                              ValueError, n))
    return cases


def _bad_knob_values(knob: Knob) -> list[tuple[Any, type[Exception]]]:
    if knob.choices is not None:
        if all(isinstance(c, bool) for c in knob.choices):
            return [(1, ValueError), ("yes", ValueError)]
        integers = [c for c in knob.choices if type(c) is int and c in (0, 1)]
        if integers:  # True == 1 and False == 0: a bool must not pass for the integer choice
            return [("no-such-choice", ValueError), (bool(integers[0]), ValueError)]
        return [("no-such-choice", ValueError)]
    bad: list[tuple[Any, type[Exception]]] = [*_NON_FINITE, _NOT_A_NUMBER, (True, TypeError)]  # True is no 1
    if knob.low is not None and knob.low != -np.inf:
        bad.append((knob.low - max(1.0, abs(knob.low)), ValueError))
    if knob.open_low:
        bad.append((knob.low, ValueError))
    if knob.high is not None:
        bad.append((knob.high + max(1.0, abs(knob.high)), ValueError))
    return bad


def _first_samples(value, n: int):
    """``value`` cut to its first ``n`` samples: arrays and tensors of rank ≥ 1, and lists of them."""
    if isinstance(value, (list, tuple)):
        return [_first_samples(v, n) for v in value]
    return value[:n] if getattr(value, "ndim", 0) >= 1 else value


def _bad_float_array(arg: Arg, name: str, x, base, ops: _ArrayOps, like_name: str | None = None,
                     replace=None) -> list[BadInput]:
    """Malformed variants of one float array; ``replace(y)`` puts ``y`` where ``x`` was (an item of
    a list argument), ``name`` is what the message must open with."""
    replace = replace or (lambda y: {**base, arg.name: y})
    if arg.base_kind in ("embeddings", "parameter", "uniforms"):  # any rank (≥ 2 for embeddings)
        ranks = [BadInput(f"{name} of rank 1", replace(x.reshape(-1)), ValueError, name)] \
            if arg.base_kind == "embeddings" else []
    else:
        ranks = [BadInput(f"{name} of one rank less", replace(x[0]), ValueError, name),
                 BadInput(f"{name} of one rank more", replace(x[None]), ValueError, name)]
    if arg.base_kind == "uniforms":
        ranks = [BadInput(f"{name} above 1", replace(ops.with_value(x, 0, 1.5)), ValueError, name),
                 BadInput(f"{name} below 0", replace(ops.with_value(x, 0, -0.5)), ValueError, name)]
    cases = [
        *ranks,
        BadInput(f"{name} with NaN", replace(ops.with_value(x, 0, np.nan)), ValueError, name),
        BadInput(f"{name} with inf", replace(ops.with_value(x, -1, np.inf)), ValueError, name),
        # −inf alone (no +inf, no NaN): a finiteness check that looks only at the maximum misses it
        BadInput(f"{name} with -inf", replace(ops.with_value(x, -1, -np.inf)), ValueError, name),
        BadInput(f"{name} integer dtype", replace(ops.as_int(x)), TypeError, name),
    ]
    if arg.base_kind != "parameter":
        cases.append(BadInput(f"{name} empty batch", replace(x[:0]), ValueError, name))
    if arg.like is not None:
        like_name = like_name or arg.like
        cases.append(BadInput(f"{name} float32, {like_name} float64", replace(ops.as_float32(x)), TypeError, name))
        if arg.match != "dtype":
            cases.append(BadInput(f"{name} with another batch size than {like_name}",
                                  replace(ops.one_more_sample(x)), ValueError, name))
        if arg.match in ("shape", "batch_spatial") and x.shape[-1] > 1:
            what = "shape" if arg.match == "shape" else "spatial size"
            cases.append(BadInput(f"{name} of another {what} than {like_name}", replace(x[..., :-1]),
                                  ValueError, name))
        if ops.side == "torch":
            cases.append(BadInput(f"{name} on another device than {like_name}", replace(x.to("meta")),
                                  ValueError, name))
    return cases


def _bad_list(arg: Arg, xs, base, ops: _ArrayOps) -> list[BadInput]:
    n = arg.name
    cases = [
        BadInput(f"{n} empty", {**base, n: []}, ValueError, n),
        BadInput(f"{n} not a list", {**base, n: xs[0]}, TypeError, n),
    ]
    if arg.items_alike and len(xs) > 1:
        cases.append(BadInput(f"{n}[1] with another batch size than {n}[0]",
                              {**base, n: [xs[0], ops.one_more_sample(xs[1]), *xs[2:]]}, ValueError, f"{n}[1]"))
        cases.append(BadInput(f"{n}[1] float32, {n}[0] float64",
                              {**base, n: [xs[0], ops.as_float32(xs[1]), *xs[2:]]}, TypeError, f"{n}[1]"))
    itemwise = arg.like is not None and isinstance(base[arg.like], (list, tuple))
    if itemwise:
        cases.append(BadInput(f"{n} one item longer than {arg.like}", {**base, n: [*xs, xs[0]]}, ValueError, n))

    def replace_first(y):
        return {**base, n: [y, *xs[1:]]}

    like_name = f"{arg.like}[0]" if itemwise else arg.like
    return cases + _bad_float_array(arg, f"{n}[0]", xs[0], base, ops, like_name, replace_first)


def _bad_labels(arg: Arg, labels, base, ops: _ArrayOps, side: str) -> list[BadInput]:
    n = arg.name
    num_classes = int(base[arg.like].shape[1])
    cases = [
        BadInput(f"{n} out of range", {**base, n: ops.integers(np.full(len(labels), num_classes))}, ValueError, n),
        BadInput(f"negative {n}", {**base, n: ops.integers(np.full(len(labels), -1))}, ValueError, n),
        BadInput(f"float {n}", {**base, n: ops.convert(np.zeros(len(labels)))}, TypeError, n),
        BadInput(f"{n} of another length", {**base, n: ops.integers(np.zeros(len(labels) + 1, np.int64))},
                 ValueError, n),
    ]
    if side == "torch":
        cases.append(BadInput(f"{n} on another device", {**base, n: labels.to("meta")}, ValueError, n))
    return cases
