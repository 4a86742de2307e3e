"""Named presets of a loss's value-changing knobs.

Implementations of "the same" distillation loss disagree on reduction, constant factors, the
divergence used, epsilons and more. kdref makes each such choice an explicit keyword argument
("knob") of the loss function, and a *convention* is a named preset of those knobs:
``convention="paper"`` reproduces the paper's formula, ``convention="kdzoo"`` the value of
Knowledge-Distillation-Zoo, and so on. Presets are defined once per method, next to the NumPy
reference, and both sides (``kdref.reference`` and ``kdref.torch``) resolve them here, so the two
can never drift apart.

An explicit knob overrides the preset. An unknown convention or knob raises a ``ValueError``
that lists the valid ones. This module is pure Python: it needs neither NumPy nor torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Conventions:
    """The presets of one loss function.

    Args:
      loss: the function's name, used in error messages.
      defaults: every knob with its default value (the value of the default convention).
      presets: convention name -> the knobs it changes from ``defaults``.
      aliases: alternative name -> preset name (e.g. ``"kdzoo" -> "kl_t2"``).
      default: the convention used when none is given.
      descriptions: convention name -> one line saying where the preset comes from.
      choices: knob -> its allowed values, for knobs that take one of a few values.
    """

    loss: str
    defaults: Mapping[str, Any]
    presets: Mapping[str, Mapping[str, Any]]
    default: str
    aliases: Mapping[str, str] = field(default_factory=dict)
    descriptions: Mapping[str, str] = field(default_factory=dict)
    choices: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, knobs in self.presets.items():
            unknown = set(knobs) - set(self.defaults)
            if unknown:
                raise ValueError(f"{self.loss}: preset {name!r} sets unknown knobs {sorted(unknown)}")
        for alias, target in self.aliases.items():
            if target not in self.presets:
                raise ValueError(f"{self.loss}: alias {alias!r} points to unknown preset {target!r}")
        if self.default not in self.presets:
            raise ValueError(f"{self.loss}: default convention {self.default!r} is not a preset")

    @property
    def names(self) -> tuple[str, ...]:
        """Every accepted convention name: the presets, then the aliases."""
        return tuple(self.presets) + tuple(self.aliases)

    def canonical(self, convention: str) -> str:
        """The preset a convention name stands for (an alias resolves to its preset)."""
        if not isinstance(convention, str):
            raise TypeError(f"convention must be a str, got {type(convention).__name__}")
        if convention in self.presets:
            return convention
        if convention in self.aliases:
            return self.aliases[convention]
        raise ValueError(
            f"{self.loss}: unknown convention {convention!r}; valid conventions are "
            + ", ".join(repr(n) for n in self.names)
        )

    def resolve(self, convention: str | None, **overrides: Any) -> Mapping[str, Any]:
        """The knob values for ``convention``, with explicit non-``None`` overrides applied.

        A knob passed as ``None`` means "take it from the convention"; any other value wins.
        """
        preset = self.presets[self.canonical(self.default if convention is None else convention)]
        unknown = set(overrides) - set(self.defaults)
        if unknown:
            raise ValueError(
                f"{self.loss}: unknown knob(s) {sorted(unknown)}; valid knobs are {sorted(self.defaults)}"
            )
        knobs = {**self.defaults, **preset}
        knobs.update({k: v for k, v in overrides.items() if v is not None})
        for knob, allowed in self.choices.items():
            if knobs[knob] not in allowed:
                raise ValueError(
                    f"{self.loss}: {knob} must be one of {', '.join(map(repr, allowed))}; got {knobs[knob]!r}"
                )
        return MappingProxyType(knobs)
