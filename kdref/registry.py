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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from kdref.conventions import Conventions

GOLDEN_DIR = Path(__file__).parent / "golden"


@dataclass(frozen=True)
class Arg:
    """One argument of a loss and its role, from which bad inputs are generated.

    ``kind`` is one of ``"logits"`` (a float ``[N, C]`` array), ``"features"`` (a float
    ``[N, C, H, W]`` array), ``"embeddings"`` (a float ``[N, ...]`` array of rank ≥ 2, one flattened
    row per sample, as relational losses take), ``"logits_list"`` / ``"features_list"`` /
    ``"embeddings_list"`` (a list of them),
    ``"labels"`` (integer ``[N]``), ``"temperature"`` (a real number > 0), ``"weight"``
    (a real number ≥ 0), ``"fraction"`` (a real number in [0, 1]) or ``"real"`` (any finite
    real number). ``like`` names the argument whose batch size, dtype and device this one must
    share, and ``match`` what else: the whole ``"shape"``, the spatial size (``"batch_spatial"``,
    when no spatial rule is chosen) or nothing more (``"batch"``, e.g. channel counts may differ).
    """

    name: str
    kind: str
    like: str | None = None
    match: str = "shape"


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


@dataclass(frozen=True)
class Loss:
    """One loss function of a method, implemented on both sides."""

    name: str
    reference: Callable[..., Any]
    torch_path: str
    conventions: Conventions
    args: tuple[Arg, ...]
    inputs: Callable[..., Any]  # (gradient: bool) -> Hypothesis strategy of kwargs dicts
    differentiable: tuple[str, ...] = ("student",)
    supports_gradgrad: bool = True
    #: the fewest samples the loss is defined for under a convention (a pair, a triplet); a batch
    #: one smaller must raise ``ValueError`` naming the first argument
    min_batch: Callable[[str], int] = lambda convention: 1

    @property
    def torch(self) -> Callable[..., Any]:
        module, function = self.torch_path.split(":")
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
    #: ``(inputs) -> float`` or ``(inputs, convention) -> float``: the size of rounding errors
    error_scale: Callable[..., float] | None = None

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
        """The worked examples of the spec, from ``kdref/golden/<name>.json``."""
        return json.loads((GOLDEN_DIR / f"{self.name}.json").read_text(encoding="utf-8"))
