"""The registry: one declarative record per method drives the tests, ``kdref verify`` and the docs.

Like PyTorch's OpInfo, a :class:`Method` declares everything the generic proof harness
(:mod:`kdref.proof`) needs: the paired reference and torch functions of each loss, their
conventions, the roles of their arguments (from which bad inputs are generated), a Hypothesis
strategy of valid inputs, the properties the math guarantees, and tolerances per dtype. The
worked examples are data: ``kdref/golden/<method>.json``, copied by hand from the specs and
never written by code.

The records themselves live in :mod:`kdref.records`; this module only defines their shape.
This module imports neither torch nor Hypothesis; torch functions are named as
``"module:function"`` and resolved on first use.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from kdref.conventions import Conventions
from kdref.declaration import Arg, Declaration

GOLDEN_DIR = Path(__file__).parent / "golden"
#: the families of methods, in the order of the docs and of ``kdref list``
FAMILIES = ("logits", "features", "relations")


@dataclass(frozen=True)
class Tolerance:
    """``|actual - expected| <= rtol * |expected| + atol * scale``, where ``scale`` is the method's
    error scale of the inputs (rounding error grows with the inputs' magnitude, not the loss's)."""

    rtol: float
    atol: float


#: Tolerances for losses on logits-sized inputs: float64 agreement at ~1e-10 relative (atol is
#: per unit of the method's error scale), float32 and bfloat16-under-autocast (accumulated in
#: float32) at ~100 float32 ulps, and finite differences of the reference (``fd``).
STANDARD_TOLERANCES = {
    "float64": Tolerance(1e-10, 1e-14),
    "float32": Tolerance(1e-5, 1e-6),
    "bfloat16": Tolerance(1e-5, 1e-6),
    "fd": Tolerance(1e-6, 1e-8),
}


#: rounding-level agreement of two evaluations of one float64 loss (per unit of the error scale),
#: for properties that relate two values the math says are equal
EXACT = Tolerance(1e-9, 1e-13)
#: a gradient from the reference side is a central finite difference: its error is ~ε·scale/h
FD_GRADIENT = Tolerance(1e-6, 1e-8)


def by_gradient(strategy: Callable[..., Any]) -> Callable[[str, bool], Any]:
    """A loss's ``inputs`` from a strategy that depends only on ``gradient`` (most do)."""
    return lambda convention, gradient: strategy(gradient=gradient)


@dataclass(frozen=True)
class Loss:
    """One loss function of a method, implemented on both sides.

    Its name, arguments, knobs and conventions come from the declaration the reference function
    carries (:mod:`kdref.declaration`); its torch twin is the function of the same name in the
    mirroring module of :mod:`kdref.torch`. A record states only what the declaration cannot:
    how to draw valid inputs, which arguments are differentiable, and whether double backward is.
    """

    reference: Callable[..., Any]
    inputs: Callable[[str, bool], Any]  # (convention, gradient) -> Hypothesis strategy of kwargs dicts
    differentiable: tuple[str, ...] = ("student",)
    supports_gradgrad: bool = True
    #: False where low precision is the caller's choice, not the loss's (a user's network under
    #: autocast runs in bfloat16 whatever the loss does)
    supports_autocast: bool = True
    #: False where torch.compile cannot run the loss (double backward through autograd.grad:
    #: "torch.compile with aot_autograd does not currently support double backward", torch 2.13)
    supports_compile: bool = True
    #: ``"module:function"`` of the torch twin, when it is not the mirror of the reference
    torch_path: str | None = None
    #: argument -> ``(parameters) -> nn.Module``: for a ``"network"`` argument, the module the torch
    #: side is called with, built from the parameters the reference takes
    torch_modules: Mapping[str, Callable[[Mapping[str, Any]], Any]] = field(default_factory=dict)

    @property
    def declaration(self) -> Declaration:
        return self.reference.declaration

    @property
    def name(self) -> str:
        return self.declaration.name

    @property
    def conventions(self) -> Conventions:
        return self.declaration.conventions

    @property
    def args(self) -> tuple[Arg, ...]:
        return self.declaration.args

    def min_batch(self, convention: str) -> int:
        """The fewest samples the loss is defined for under ``convention`` (a pair, a triplet)."""
        if self.declaration.min_batch is None:
            return 1
        return self.declaration.min_batch(self.declaration.resolve(convention))[0]

    @property
    def torch(self) -> Callable[..., Any]:
        path = self.torch_path or f"{self.reference.__module__.replace('kdref.reference', 'kdref.torch')}:{self.name}"
        module, function = path.split(":")
        return getattr(importlib.import_module(module), function)


@dataclass(frozen=True)
class Case:
    """One loss under one convention: the unit every check runs on."""

    method: Method
    loss: Loss
    convention: str

    @property
    def label(self) -> str:
        return f"{self.loss.name}/{self.convention}"

    @property
    def id(self) -> str:
        return f"{self.method.name}:{self.label}"


@dataclass(frozen=True)
class Property:
    """A guarantee of the math, checked on both sides.

    ``check(subject, inputs)`` receives a :class:`kdref.proof.Subject` (the loss under test, with
    its convention bound) and drawn inputs; it raises ``AssertionError`` when the property fails
    and returns the worst relative deviation it saw. ``cases`` are glob patterns over case labels
    (``"soft_target_loss/*"``).
    """

    name: str
    description: str
    check: Callable[..., float]
    cases: tuple[str, ...] = ("*",)
    inputs: Callable[..., Any] | None = None  # a strategy of its own, else the loss's

    def applies_to(self, case: Case) -> bool:
        return any(fnmatch.fnmatchcase(case.label, pattern) for pattern in self.cases)


def guarantee(name: str, *cases: str, inputs: Callable[..., Any] | None = None) -> Callable[..., Property]:
    """Decorate a property's check: it becomes the :class:`Property` ``name``, described by its
    docstring, on the cases matching ``cases`` (all by default)::

        @guarantee("row-shift invariance", "soft_target_loss/*")
        def shift_invariance(loss, x) -> float:
            \"\"\"Adding a constant to each row of either input leaves the loss unchanged.\"\"\"
    """
    return lambda check: Property(name, check.__doc__ or "", check, cases or ("*",), inputs)


@dataclass(frozen=True)
class Method:
    """Everything kdref knows about one distillation method."""

    name: str
    title: str
    citation: str
    family: str
    losses: tuple[Loss, ...]
    properties: tuple[Property, ...] = ()
    tolerances: Mapping[str, Tolerance] = field(default_factory=lambda: dict(STANDARD_TOLERANCES))
    #: ``(inputs, convention) -> float``: the size of rounding errors (default ``1 + max |x|``)
    error_scale: Callable[[Mapping[str, Any], str], float] | None = None
    #: the worked examples, where they are not a file of ``kdref/golden/`` (a method made in a test)
    examples: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"{self.name}: unknown family {self.family!r}; known: {', '.join(FAMILIES)}")

    @property
    def year(self) -> int:
        """The year of the paper, from its citation (methods are listed in the order they appeared)."""
        years = re.findall(r"(?<![\d.:])(?:19|20)\d\d(?!\.?\d)", self.citation)  # not an arXiv number
        return int(years[0]) if years else 0

    @property
    def spec(self) -> str:
        return f"specs/{self.name}.md"

    def loss(self, name: str) -> Loss:
        for loss in self.losses:
            if loss.name == name:
                return loss
        raise KeyError(f"{self.name} has no loss {name!r}; it has {[l.name for l in self.losses]}")

    def cases(self) -> list[Case]:
        """Every loss under every accepted convention name (aliases included)."""
        return [Case(self, loss, c) for loss in self.losses for c in loss.conventions.names]

    @cached_property
    def golden(self) -> Mapping[str, Any]:
        """The worked examples of the spec, from ``kdref/golden/<name>.json`` (or ``examples``)."""
        if self.examples is not None:
            return self.examples
        return json.loads((GOLDEN_DIR / f"{self.name}.json").read_text(encoding="utf-8"))
