"""One declaration per loss: its arguments, its knobs and its conventions, written once.

A :class:`Declaration` sits beside the NumPy reference of a loss and says everything about the
loss's *contract*: which arguments it takes (their role, shape, dtype and constraints), which
value-changing choices ("knobs") it exposes (their allowed values and meaning), and which named
presets of those knobs ("conventions") exist. Everything else reads it:

- both implementations are wrapped by it (``@DECLARATION.implement(backend)``): the wrapper
  validates the arguments, resolves the convention and the knobs, and calls the body with checked
  arrays and one plain value per knob, so the two sides refuse the same inputs with the same words;
- the proof harness generates the bad inputs and bad knob values from it;
- the docs render the argument and knob tables from it.

Validation is written once, here, in pure Python. The few facts it needs about an array (its
shape, dtype, device, whether it is finite) come from a *backend*: ``kdref.reference._common.NUMPY``
or ``kdref.torch._common.TORCH``. This module imports neither NumPy nor torch.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from kdref._scalars import check_real, check_temperature
from kdref.conventions import Conventions

__all__ = ["ARRAY_KINDS", "MAPPING_KINDS", "SCALAR_KINDS", "STRUCTURE_KINDS", "Arg", "Backend", "Declaration", "Knob"]

#: array kinds: (rank, what the axes mean); ``None`` rank means "at least 2, flattened per sample"
ARRAY_KINDS: Mapping[str, tuple[int | None, str]] = MappingProxyType({
    "logits": (2, "[N, C]"),
    "features": (4, "[N, C, H, W]"),
    "embeddings": (None, "[N, ...]"),  # flattened to [N, D] (unless the Arg says flatten=False)
    "parameter": (None, "[...]"),  # a parameter of any shape
    "labels": (1, "[N]"),  # integer class indices
    "indices": (None, "[...]"),  # integer indices into the first axis of ``bound`` (drawn at random)
    "uniforms": (None, "[...]"),  # real numbers in [0, 1] (drawn at random)
})
#: mapping kinds: a name -> array mapping on the reference side; on the torch side an ``nn.Module``
#: (its parameters and buffers by name) or a mapping of tensors
MAPPING_KINDS: Mapping[str, str] = MappingProxyType({
    "parameters": "the parameters (and buffers) of a trainable part, by name",
    "state": "the state carried from step to step (memory banks, running estimates), by name",
    "network": "a small network by its parameters (the reference) or an ``nn.Module`` (torch)",
})
#: scalar kinds and the numbers they accept
SCALAR_KINDS: Mapping[str, str] = MappingProxyType({
    "temperature": "a real number > 0",
    "weight": "a real number ≥ 0",
    "fraction": "a real number in [0, 1]",
    "real": "a finite real number",
    # one weight for every item of a list argument, or one per item (the loss's check says how many)
    "weights": "a real number ≥ 0, or a list or tuple of them",
})
#: structure kinds: plain Python values whose form is checked here; the loss's ``check`` hook checks
#: them against the other arguments (an index against the length of a list)
STRUCTURE_KINDS: Mapping[str, str] = MappingProxyType({
    "index_tuples": "a list or tuple of tuples of integer indices",
})


@dataclass(frozen=True)
class Arg:
    """One argument of a loss.

    ``kind`` is an array kind (:data:`ARRAY_KINDS`), the same with ``"_list"`` appended (a
    non-empty list of such arrays), a mapping kind (:data:`MAPPING_KINDS`: a trainable part's
    parameters, a state, a network), a scalar kind (:data:`SCALAR_KINDS`) or a structure kind
    (:data:`STRUCTURE_KINDS`). ``like`` names the argument whose dtype and device this one shares
    (for labels: the logits they index), and ``match`` what else it shares: the whole ``"shape"``,
    the ``"batch_spatial"`` size (channel counts may differ), the ``"batch"`` size, or nothing more
    (``"dtype"``). For two lists, ``like`` holds item by item and the lists have one length.
    ``optional`` arguments may be ``None``. A scalar argument with ``per_sample`` also takes one
    value per sample of ``like``: a ``[N]`` array of the side (or a 0-d one), on its device, each
    value of the kind.
    """

    name: str
    kind: str
    doc: str = ""
    like: str | None = None
    match: str = "shape"
    optional: bool = False
    #: for a scalar kind: also one value per sample of ``like`` (a per-example bandwidth)
    per_sample: bool = False
    #: for a mapping kind: the names it must hold, and those it may hold
    keys: tuple[str, ...] = ()
    optional_keys: tuple[str, ...] = ()
    #: for ``"indices"``: the argument (``"bank"``, or ``"state.memory"`` for an entry of a
    #: mapping) whose first axis the indices point into
    bound: str | None = None
    #: for ``"embeddings"``: ``False`` keeps each array's axes (a rule of the loss reads them); the
    #: rank is still checked (at least 2)
    flatten: bool = True
    #: for a list kind: every item shares the batch size, dtype and device of item 0 (layers of one
    #: network on one batch)
    items_alike: bool = False

    def __post_init__(self) -> None:
        if self.base_kind not in ARRAY_KINDS and self.kind not in SCALAR_KINDS and self.kind not in MAPPING_KINDS \
                and self.kind not in STRUCTURE_KINDS:
            raise ValueError(f"argument {self.name!r}: unknown kind {self.kind!r}")
        if self.match not in ("shape", "batch_spatial", "batch", "dtype"):
            raise ValueError(f"argument {self.name!r}: unknown match {self.match!r}")
        if self.per_sample and (self.kind not in SCALAR_KINDS or self.like is None):
            raise ValueError(f"argument {self.name!r}: per_sample needs a scalar kind and the argument it is like")

    @property
    def is_list(self) -> bool:
        return self.kind.endswith("_list")

    @property
    def base_kind(self) -> str:
        return self.kind.removesuffix("_list")

    @property
    def is_array(self) -> bool:
        return self.base_kind in ARRAY_KINDS

    @property
    def is_mapping(self) -> bool:
        return self.kind in MAPPING_KINDS

    def describe(self) -> str:
        """The argument's kind in words, for the docs' argument table."""
        if self.is_array:
            axes = ARRAY_KINDS[self.base_kind][1]
            text = f"{'a list of ' if self.is_list else ''}``{axes}``"
            if self.base_kind == "labels" and self.like:
                text += f" in ``[0, C)`` for the C classes of ``{self.like}``, on its device"
            elif self.like:
                shared = {"shape": "the shape, ", "batch_spatial": "the batch and spatial size, ",
                          "batch": "the batch size, ", "dtype": "the "}
                text += f"; {shared[self.match]}dtype and device of ``{self.like}``"
            if self.bound:
                text += f" of integers indexing the first axis of ``{self.bound}``"
        elif self.is_mapping:
            keys = ", ".join(f"``{k}``" for k in self.keys)
            optional = ", ".join(f"``{k}``" for k in self.optional_keys)
            text = f"{MAPPING_KINDS[self.kind]}: {keys}" + (f" (optional: {optional})" if optional else "")
            if self.like:
                text += f"; the dtype and device of ``{self.like}``"
        elif self.kind in STRUCTURE_KINDS:
            text = STRUCTURE_KINDS[self.kind]
        else:
            text = SCALAR_KINDS[self.kind]
            if self.per_sample:
                text += f", or one per sample of ``{self.like}`` (a ``[N]`` array on its device)"
        return text + ("; optional" if self.optional else "")


@dataclass(frozen=True)
class Knob:
    """A value-changing choice of a loss: one of ``choices``, or a real number (an integer with
    ``integer=True``) in ``[low, high]``."""

    name: str
    default: Any
    doc: str = ""
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    #: a numeric knob that takes integers only (an order, a count)
    integer: bool = False
    #: the range excludes ``low`` itself (an ε that must be > 0)
    open_low: bool = False

    def __post_init__(self) -> None:
        if (self.choices is None) == (self.low is None and self.high is None):
            raise ValueError(f"knob {self.name!r}: give either choices or a numeric range")

    def check(self, loss: str, value: Any) -> Any:
        """``value`` if allowed, else a ``ValueError``/``TypeError`` naming the knob."""
        if self.choices is not None:
            # bool is an int: only True/False stand for a boolean choice, 1/0 do not
            if not any(value == c and type(value) is type(c) for c in self.choices):
                raise ValueError(f"{self.name} must be one of {', '.join(map(repr, self.choices))}; "
                                 f"got {value!r} ({loss})")
            return value
        low = -math.inf if self.low is None else self.low
        high = math.inf if self.high is None else self.high
        real = check_real(self.name, value, low=low, high=high)
        if self.open_low and real == low:
            raise ValueError(f"{self.name} must be > {low:g}, got {real:g} ({loss})")
        if not self.integer:
            return real
        if not isinstance(value, numbers.Integral):  # 2.0 too: an order is not a float
            raise TypeError(f"{self.name} must be an integer, got {type(value).__name__} ({loss})")
        return int(value)

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(f"``{c!r}``" for c in self.choices)
        low = "−∞" if self.low is None or self.low == -math.inf else f"{self.low:g}"
        high = "∞" if self.high is None or self.high == math.inf else f"{self.high:g}"
        opening = "(" if self.open_low or low == "−∞" else "["
        closing = ")" if high == "∞" else "]"
        return f"{'an integer' if self.integer else 'a real number'} in {opening}{low}, {high}{closing}"


class Backend(Protocol):
    """The facts about arrays that validation needs, for one side (NumPy or torch)."""

    name: str

    def as_array(self, name: str, x) -> Any: ...  # the side's array type, or TypeError naming ``name``
    def is_floating(self, x) -> bool: ...
    def is_integer(self, x) -> bool: ...
    def device(self, x) -> Any: ...  # None where there is no device
    def all_finite(self, x) -> bool | None: ...  # None where it cannot be known cheaply (compiling)
    def value_range(self, x) -> tuple[float, float] | None: ...  # (min, max), None where unknown (compiling)
    def flatten(self, x) -> Any: ...  # [N, ...] -> [N, D]
    def as_index(self, x) -> Any: ...  # integer labels as the side's index dtype
    def as_mapping(self, name: str, x) -> dict: ...  # name -> array, or TypeError naming ``name``
    def as_module(self, name: str, x) -> Any: ...  # torch: an ``nn.Module`` (a ``"network"``)


def _shape(x) -> tuple[int, ...]:
    return tuple(x.shape)


_HALF_PRECISION = ("float16", "bfloat16")


def _dtype_name(x) -> str:
    """``"float32"`` for NumPy's and torch's float32 alike."""
    return str(x.dtype).removeprefix("torch.")


#: reference module -> the declarations implemented in it (for errors that point to a sibling loss)
_SIBLINGS: dict[str, list[Declaration]] = {}


@dataclass(frozen=True)
class Declaration:
    """The contract of one loss function.

    Args:
      name: the function's name, the same on both sides.
      args: its arguments, in the order of the signature.
      knobs: its value-changing choices.
      presets: convention name -> the knobs it changes from their defaults.
      default: the convention used when none is given.
      aliases: alternative name -> preset name (e.g. ``"kdzoo" -> "kl_t2"``).
      descriptions: convention name -> one line saying where the preset comes from.
      min_batch: ``(knobs) -> (fewest samples, why)``; a smaller batch is refused.
      check: ``(arguments, knobs) -> None``, rules between arguments that no kind can state
        (written once, pure Python on shapes; raises ``ValueError`` naming the argument).
    """

    name: str
    args: tuple[Arg, ...]
    knobs: tuple[Knob, ...] = ()
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: {"paper": {}})
    default: str = "paper"
    aliases: Mapping[str, str] = field(default_factory=dict)
    descriptions: Mapping[str, str] = field(default_factory=dict)
    min_batch: Callable[[Mapping[str, Any]], tuple[int, str]] | None = None
    check: Callable[[Mapping[str, Any], Mapping[str, Any]], None] | None = None

    def __post_init__(self) -> None:
        names = [a.name for a in self.args] + [k.name for k in self.knobs]
        if len(set(names)) != len(names) or "convention" in names:
            raise ValueError(f"{self.name}: argument and knob names must be distinct, got {names}")
        for arg in self.args:
            if arg.like is not None and arg.like not in names[: len(self.args)]:
                raise ValueError(f"{self.name}: {arg.name} is like unknown argument {arg.like!r}")
        object.__setattr__(self, "conventions", Conventions(
            loss=self.name, defaults={k.name: k.default for k in self.knobs}, presets=self.presets,
            default=self.default, aliases=self.aliases, descriptions=self.descriptions,
            choices={k.name: k.choices for k in self.knobs if k.choices is not None}))

    conventions: Conventions = field(init=False, repr=False, compare=False)
    #: the reference module the loss is implemented in (set by :meth:`implement`)
    _module: str = field(default="", init=False, repr=False, compare=False)

    def derive(self, name: str, *, drop_knobs: Sequence[str] = (), **changes) -> Declaration:
        """A sibling loss: this declaration renamed, without some knobs (and their preset values)."""
        knobs = tuple(k for k in self.knobs if k.name not in drop_knobs)
        presets = {c: {k: v for k, v in p.items() if k not in drop_knobs} for c, p in self.presets.items()}
        return dataclasses.replace(self, name=name, knobs=changes.pop("knobs", knobs),
                                   presets=changes.pop("presets", presets), **changes)

    @property
    def state(self) -> str | None:
        """The name of the ``"state"`` argument of a step ``(state, ...) -> (loss, new_state)``, if any."""
        return next((a.name for a in self.args if a.kind == "state"), None)

    def arg(self, name: str) -> Arg:
        return next(a for a in self.args if a.name == name)

    def knob(self, name: str) -> Knob:
        return next(k for k in self.knobs if k.name == name)

    # -----------------------------------------------------------------------------------------
    # Knobs

    def resolve(self, convention: str | None = None, **overrides: Any) -> Mapping[str, Any]:
        """The knob values of ``convention`` with explicit non-``None`` ``overrides``, each checked.
        An unknown convention that names one of a sibling loss (a loss of the same module) points
        to it: ``"torchdistill"`` is a convention of ``torchdistill_kd_loss``, not of
        ``soft_target_loss``."""
        if isinstance(convention, str) and convention not in self.conventions.names:
            owners = [d.name for d in _SIBLINGS.get(self._module, []) if convention in d.conventions.names]
            if owners:
                raise ValueError(f"{self.name}: unknown convention {convention!r}; it is a convention of "
                                 f"{' and '.join(owners)}, which computes that library's loss; the conventions of "
                                 f"{self.name} are {', '.join(map(repr, self.conventions.names))}")
        knobs = self.conventions.resolve(convention, **overrides)
        return MappingProxyType({k.name: k.check(self.name, knobs[k.name]) for k in self.knobs})

    # -----------------------------------------------------------------------------------------
    # Arguments

    def bind(self, backend: Backend, positional: tuple, keywords: dict) -> tuple[dict, Mapping[str, Any]]:
        """Validate a call: the checked arguments by name and the resolved knobs."""
        keywords = dict(keywords)
        convention = keywords.pop("convention", None)
        if len(positional) > len(self.args):
            raise TypeError(f"{self.name} takes {len(self.args)} positional arguments "
                            f"({', '.join(a.name for a in self.args)}), got {len(positional)}")
        values = dict(zip((a.name for a in self.args), positional, strict=False))
        for arg in self.args[len(positional):]:
            if arg.name in keywords:
                values[arg.name] = keywords.pop(arg.name)
            elif arg.optional:
                values[arg.name] = None
            else:
                raise TypeError(f"{self.name} is missing the argument {arg.name!r}")
        twice = set(values) & set(keywords)
        if twice:
            raise TypeError(f"{self.name} got {sorted(twice)} both by position and by keyword")
        knobs = self.resolve(convention, **keywords)
        checked: dict[str, Any] = {}
        for arg in self.args:
            checked[arg.name] = self._check_arg(backend, arg, values[arg.name], checked)
        if self.min_batch is not None:
            first = self.args[0]
            fewest, why = self.min_batch(knobs)
            leading = checked[first.name][0] if first.is_list else checked[first.name]
            if _shape(leading)[0] < fewest:
                raise ValueError(f"{first.name} must have at least {fewest} samples {why}, "
                                 f"got {_shape(leading)[0]}")
        if self.check is not None:
            self.check(checked, knobs)
        return checked, knobs

    def _check_arg(self, backend: Backend, arg: Arg, value, checked: Mapping[str, Any]):
        if value is None and arg.optional:
            return None
        like = checked.get(arg.like) if arg.like is not None else None
        if arg.is_mapping:
            return _check_mapping(backend, arg, value, like)
        if arg.kind in STRUCTURE_KINDS:
            return _check_index_tuples(arg.name, value)
        if not arg.is_array:
            if arg.per_sample and not isinstance(value, numbers.Real):
                return _check_per_sample(backend, arg, value, like)
            return _check_scalar(arg, value)
        if not arg.is_list:
            if arg.base_kind == "labels":
                return _check_labels(backend, arg.name, value, like, arg.like)
            if arg.base_kind == "indices":
                return _check_indices(backend, arg, value, _bound(arg, checked), like)
            return _check_array(backend, arg, arg.name, value, like)
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise TypeError(f"{arg.name} must be a list or tuple of arrays, got {type(value).__name__}")
        if len(value) == 0:
            raise ValueError(f"{arg.name} must hold at least one array, got an empty {type(value).__name__}")
        if isinstance(like, list):  # item by item
            if len(value) != len(like):
                raise ValueError(f"{arg.name} must hold as many arrays as {arg.like} ({len(like)}), got {len(value)}")
            items = [_check_array(backend, arg, f"{arg.name}[{i}]", v, like[i], f"{arg.like}[{i}]")
                     for i, v in enumerate(value)]
        else:
            items = [_check_array(backend, arg, f"{arg.name}[{i}]", v, like, arg.like) for i, v in enumerate(value)]
        if arg.items_alike:  # after each item's own checks: a bad item 0 is named, not the item compared with it
            for i, item in enumerate(items[1:], start=1):
                _check_like(backend, f"{arg.name}[{i}]", item, f"{arg.name}[0]", items[0], "batch")
        return items

    # -----------------------------------------------------------------------------------------
    # Implementations

    def signature(self, returns: Any = inspect.Signature.empty) -> inspect.Signature:
        """The public signature: the arguments, then ``convention`` and every knob by keyword."""
        P = inspect.Parameter
        params = [P(a.name, P.POSITIONAL_OR_KEYWORD, default=None if a.optional else P.empty) for a in self.args]
        params.append(P("convention", P.KEYWORD_ONLY, default=None))
        params += [P(k.name, P.KEYWORD_ONLY, default=None) for k in self.knobs]
        return inspect.Signature(params, return_annotation=returns)

    def implement(self, backend: Backend) -> Callable[[Callable], Callable]:
        """Decorate the body of one side's loss.

        The body takes the arguments in declared order (checked: arrays of the side, scalars as
        floats, embeddings flattened) and every knob as a keyword-only parameter (resolved: no
        ``None``). The decorated function has the public signature of :meth:`signature`.
        """

        def decorate(body: Callable) -> Callable:
            self._check_body(body)
            if not self._module:  # the first implementation names the module (a test's mock does not)
                object.__setattr__(self, "_module", body.__module__.replace("kdref.torch.", "kdref.reference."))
                _SIBLINGS.setdefault(self._module, []).append(self)

            @functools.wraps(body)
            def loss(*args, **kwargs):
                checked, knobs = self.bind(backend, args, kwargs)
                return body(*checked.values(), **knobs)

            loss.__signature__ = self.signature(inspect.signature(body).return_annotation)
            loss.__doc__ = self.document(body.__doc__ or "")
            loss.declaration = self
            return loss

        return decorate

    def args_section(self) -> str:
        """The ``Args:`` section of both sides' docstrings, written from the declaration."""
        lines = ["Args:"]
        for arg in self.args:
            lines.append(f"  {arg.name}: {arg.doc}{'; ' if arg.doc else ''}{arg.describe()}.")
        names = [f"``{n!r}``" + (" (default)" if n == self.default else "") for n in self.presets]
        names += [f"``{a!r}`` (= ``{t!r}``)" for a, t in self.aliases.items()]
        lines.append(f"  convention: a named preset of the knobs below, one of {', '.join(names)}; an explicit "
                     "knob overrides it.")
        for knob in self.knobs:
            doc = f"{knob.doc}; " if knob.doc else ""
            lines.append(f"  {knob.name}: {doc}{knob.describe()}.")
        return "\n".join(lines)

    def document(self, docstring: str) -> str:
        """``docstring`` with the generated ``Args:`` section before its ``Returns:`` or ``Examples:``
        (the arguments are documented once, in the declaration)."""
        text = inspect.cleandoc(docstring)
        if re.search(r"^Args:", text, re.M):
            raise TypeError(f"{self.name}: document the arguments in its declaration, not in an Args: section")
        match = re.search(r"^(Returns|Examples|References):", text, re.M)
        at = match.start() if match else len(text)
        return f"{text[:at].rstrip()}\n\n{self.args_section()}\n\n{text[at:]}".rstrip() + "\n"

    def _check_body(self, body: Callable) -> None:
        """The body must take exactly the declared arguments and knobs: a knob it does not take
        would be accepted and ignored."""
        params = inspect.signature(body).parameters.values()
        positional = [p.name for p in params if p.kind == p.POSITIONAL_OR_KEYWORD]
        keyword = sorted(p.name for p in params if p.kind == p.KEYWORD_ONLY)
        if positional != [a.name for a in self.args] or keyword != sorted(k.name for k in self.knobs):
            raise TypeError(f"{body.__qualname__} must take ({', '.join(a.name for a in self.args)}, *, "
                            f"{', '.join(k.name for k in self.knobs)}) as {self.name} declares; it takes "
                            f"({', '.join(positional)}, *, {', '.join(keyword)})")


# ---------------------------------------------------------------------------------------------
# The rules, written once for both sides


def _check_scalar(arg: Arg, value) -> float:
    if arg.kind == "temperature":
        if arg.name == "T":
            return check_temperature(value)
        real = check_real(arg.name, value)  # finite, or a ValueError naming it
        if not real > 0:
            raise ValueError(f"{arg.name} must be finite and > 0, got {real}")
        return real
    if arg.kind == "weights" and isinstance(value, (list, tuple)):
        return [check_real(f"{arg.name}[{i}]", w, low=0.0) for i, w in enumerate(value)]
    low, high = {"weight": (0.0, math.inf), "weights": (0.0, math.inf), "fraction": (0.0, 1.0),
                 "real": (-math.inf, math.inf)}[arg.kind]
    return check_real(arg.name, value, low=low, high=high)


def _check_per_sample(backend: Backend, arg: Arg, x, like):
    """One value of a scalar kind per sample of ``like``: a floating ``[N]`` (or 0-d) array of the
    side, on the device of ``like`` (its dtype may differ: the loss casts it)."""
    x = backend.as_array(arg.name, x)
    if not backend.is_floating(x):
        raise TypeError(f"{arg.name} must be a real number or a floating array, got dtype {x.dtype}")
    n = _shape(like)[0]
    if _shape(x) not in ((), (n,)):
        raise ValueError(f"{arg.name} must be a number or have shape ({n},), one per sample of {arg.like}; "
                         f"got shape {_shape(x)}")
    if backend.device(x) != backend.device(like):
        raise ValueError(f"{arg.name} must be on the device of {arg.like} ({backend.device(like)}), "
                         f"got {backend.device(x)}")
    finite = backend.all_finite(x)
    if finite is False:
        raise ValueError(f"{arg.name} must be finite, found NaN or inf")
    if finite:  # the values are read where finiteness could be (not while compiling): min and max suffice
        each = dataclasses.replace(arg, per_sample=False)
        for value in (x.min().item(), x.max().item()):  # .item(): NumPy and torch alike
            _check_scalar(each, value)
    return x


def _check_array(backend: Backend, arg: Arg, name: str, x, like=None, like_name: str | None = None):
    x = backend.as_array(name, x)
    shape = _shape(x)
    if not backend.is_floating(x):
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    rank, axes = ARRAY_KINDS[arg.base_kind]
    if rank is not None and len(shape) != rank:
        raise ValueError(f"{name} must be {rank}-D {axes}, got shape {shape}")
    if rank is None and arg.base_kind == "embeddings" and len(shape) < 2:
        raise ValueError(f"{name} must be at least 2-D [N, D, ...] (one row per sample), got shape {shape}")
    if arg.base_kind != "parameter" and shape and shape[0] == 0:
        raise ValueError(f"{name} must have a non-empty batch, got shape {shape}")
    if math.prod(shape) == 0:
        raise ValueError(f"{name} must not be empty, got shape {shape}")
    if backend.all_finite(x) is False:
        raise ValueError(f"{name} must be finite, found NaN or inf")
    if arg.base_kind == "uniforms":
        extremes = backend.value_range(x)
        if extremes is not None and (extremes[0] < 0 or extremes[1] > 1):
            raise ValueError(f"{name} must lie in [0, 1], got values in [{extremes[0]}, {extremes[1]}]")
    if arg.base_kind == "embeddings" and arg.flatten:
        x = backend.flatten(x)  # before the comparison with ``like``, which is flattened too
    if like is not None:
        _check_like(backend, name, x, like_name or arg.like, like, arg.match)
    return x


def _check_index_tuples(name: str, value) -> tuple[tuple[int, ...], ...]:
    """A list or tuple of tuples of integers (which indices are valid is the loss's ``check``)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list or tuple of tuples of integer indices, got {type(value).__name__}")
    for k, item in enumerate(value):
        if not isinstance(item, (list, tuple)) or not all(
                isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in item):
            raise TypeError(f"{name}[{k}] must be a tuple of integer indices, got {item!r}")
    return tuple(tuple(int(i) for i in item) for item in value)


def _check_like(backend: Backend, name: str, x, like_name: str, like, match: str) -> None:
    if backend.device(x) != backend.device(like):
        raise ValueError(f"{name} must be on the device of {like_name} ({backend.device(like)}), "
                         f"got {backend.device(x)}")
    shape, ref = _shape(x), _shape(like)
    if match == "shape" and shape != ref:
        raise ValueError(f"{name} must have the shape of {like_name} {ref}, got {shape}")
    if match != "dtype" and shape[0] != ref[0]:
        raise ValueError(f"{name} must have the batch size of {like_name} ({ref[0]}), got shape {shape}")
    if match == "batch_spatial" and shape[2:] != ref[2:]:
        raise ValueError(f"{name} must have the spatial size of {like_name} {ref[2:]}, got {shape[2:]}")
    if x.dtype != like.dtype:
        raise TypeError(f"{name} must have the dtype of {like_name} ({like.dtype}), got {x.dtype}")


def _check_mapping(backend: Backend, arg: Arg, value, like):
    """A mapping of named float arrays (a trainable part's parameters, a step's state); a network
    is checked by its parameters and passed on as it is (a module on the torch side)."""
    if arg.kind == "network" and backend.name == "torch":
        # any model: its own parameters, whatever their names, share the inputs' dtype and device
        module = backend.as_module(arg.name, value)
        _check_entries(backend, arg, backend.as_mapping(arg.name, module), like)
        return module
    arrays = backend.as_mapping(arg.name, value)
    _check_keys(arg, arrays)
    return _check_entries(backend, arg, arrays, like)


def _check_keys(arg: Arg, arrays: dict) -> None:
    missing = [k for k in arg.keys if k not in arrays]
    if missing:
        raise ValueError(f"{arg.name} must hold {', '.join(map(repr, arg.keys))}; "
                         f"missing {', '.join(map(repr, missing))}")
    unknown = sorted(set(arrays) - set(arg.keys) - set(arg.optional_keys))
    if unknown:
        raise ValueError(f"{arg.name} holds unknown entries {unknown}; it may hold "
                         f"{', '.join(map(repr, arg.keys + arg.optional_keys))}")


def _check_entries(backend: Backend, arg: Arg, arrays: dict, like) -> dict:
    checked = {}
    for key, x in arrays.items():
        name = f"{arg.name}[{key!r}]"
        x = backend.as_array(name, x)
        if not backend.is_floating(x):
            raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
        if backend.all_finite(x) is False:
            raise ValueError(f"{name} must be finite, found NaN or inf")
        if like is not None:
            if backend.device(x) != backend.device(like):
                raise ValueError(f"{name} must be on the device of {arg.like} ({backend.device(like)}), "
                                 f"got {backend.device(x)}")
            if x.dtype != like.dtype and not (_dtype_name(x) == "float32" and _dtype_name(like) in _HALF_PRECISION):
                # (a float32 module meets half-precision inputs under autocast)
                raise TypeError(f"{name} must have the dtype of {arg.like} ({like.dtype}), got {x.dtype}")
        checked[key] = x
    return checked


def _bound(arg: Arg, checked: Mapping[str, Any]) -> int | None:
    """The length of the first axis that ``arg``'s indices point into."""
    if arg.bound is None:
        return None
    name, _, key = arg.bound.partition(".")
    target = checked[name][key] if key else checked[name]
    return _shape(target)[0]


def _check_indices(backend: Backend, arg: Arg, x, bound: int | None, like):
    """Integer indices (drawn at random outside the loss) into an axis of length ``bound``."""
    x = backend.as_array(arg.name, x)
    if not backend.is_integer(x):
        raise TypeError(f"{arg.name} must have an integer dtype, got {x.dtype}")
    if like is not None:
        if backend.device(x) != backend.device(like):
            raise ValueError(f"{arg.name} must be on the device of {arg.like} ({backend.device(like)}), "
                             f"got {backend.device(x)}")
        if _shape(x)[:1] != _shape(like)[:1]:
            raise ValueError(f"{arg.name} must have the batch size of {arg.like} ({_shape(like)[0]}), "
                             f"got shape {_shape(x)}")
    extremes = backend.value_range(x)
    if bound is not None and extremes is not None and (extremes[0] < 0 or extremes[1] >= bound):
        raise ValueError(f"{arg.name} must lie in [0, {bound}) (the first axis of {arg.bound}), got values in "
                         f"[{extremes[0]}, {extremes[1]}]")
    return backend.as_index(x)


def _check_labels(backend: Backend, name: str, labels, logits, logits_name: str | None):
    labels = backend.as_array(name, labels)
    if not backend.is_integer(labels):
        raise TypeError(f"{name} must have an integer dtype, got {labels.dtype}")
    n, num_classes = _shape(logits)[:2] if logits is not None else (None, None)
    if _shape(labels) != (n,) and n is not None:
        raise ValueError(f"{name} must have shape ({n},) to match the batch of {logits_name}, "
                         f"got {_shape(labels)}")
    if logits is not None and backend.device(labels) != backend.device(logits):
        raise ValueError(f"{name} must be on the device of {logits_name} ({backend.device(logits)}), "
                         f"got {backend.device(labels)}")
    extremes = backend.value_range(labels)
    if extremes is not None and num_classes is not None and (extremes[0] < 0 or extremes[1] >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes}), got values in [{extremes[0]}, {extremes[1]}]")
    return backend.as_index(labels)
