"""Sphinx directives that build parts of a method page from the kdref registry.

``kdref-conventions <method>``
    For each loss of the method, a table of its conventions: the description, the knobs the
    preset sets, the loss's value on the spec's worked example computed at build time by the
    NumPy reference (``kdref.reference``), and the value the spec prints for exactly that call,
    where the spec has one.

``kdref-arguments <method>``
    For each loss of the method, its arguments and its knobs, from the loss's declaration (the one
    both sides validate with): kind and shape, what each means, the knobs' allowed values and
    defaults.

``kdref-properties <method>``
    The properties the proof harness checks for the method, with the cases they apply to.

Nothing on these tables is typed by hand, so they cannot drift from the code or the golden
files. In MyST::

    ```{kdref-conventions} st
    ```
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

import kdref
from kdref import proof
from kdref.registry import GOLDEN_DIR, Loss, Method

NOT_PRINTED = "—"


# -- docutils nodes ---------------------------------------------------------------------------

Cell = list  # the pieces of one table cell: text and inline nodes


def code(text: str) -> nodes.literal:
    return nodes.literal(text=text)


def paragraph(*parts: str | nodes.Node) -> nodes.paragraph:
    """A paragraph of text and inline nodes."""
    para = nodes.paragraph()
    para += [nodes.Text(part) if isinstance(part, str) else part for part in parts]
    return para


def joined(parts: Sequence[str | nodes.Node], separator: str = ", ") -> list[str | nodes.Node]:
    return [piece for i, part in enumerate(parts) for piece in ([separator] if i else []) + [part]]


def table(header: Sequence[str], rows: Sequence[Sequence[Cell]], widths: Sequence[int]) -> nodes.table:
    tgroup = nodes.tgroup(cols=len(header))
    tgroup += [nodes.colspec(colwidth=w) for w in widths]

    def row(cells: Sequence[Cell]) -> nodes.row:
        return nodes.row("", *(nodes.entry("", paragraph(*cell)) for cell in cells))

    tgroup += nodes.thead("", row([[text] for text in header]))
    tgroup += nodes.tbody("", *(row(cells) for cells in rows))
    return nodes.table("", tgroup, classes=["kdref-conventions"])


# -- the tables' contents ---------------------------------------------------------------------


def format_value(value: Any) -> str:
    """A loss value with 8 significant digits (the precision the specs print)."""
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        return f"{float(array):.8g}"
    return "[" + ", ".join(f"{v:.8g}" for v in array.ravel()) + "]"


def format_printed(value: str | Sequence[str]) -> str:
    return value if isinstance(value, str) else "[" + ", ".join(format_printed(v) for v in value) + "]"


def format_knobs(knobs: Mapping[str, Any]) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in knobs.items())


def format_call(loss: Loss, args: Mapping[str, Any]) -> str:
    """The example as a call, with the golden inputs by name: ``f(student=s, T=4.0)``."""

    def show(value: Any) -> str:
        if isinstance(value, str) and value.startswith("$"):
            return value[1:]
        if isinstance(value, list):
            return "[" + ", ".join(show(v) for v in value) + "]"
        return repr(value)

    return f"{loss.name}({', '.join(f'{k}={show(v)}' for k, v in args.items())}, convention=…)"


def input_names(args: Mapping[str, Any]) -> list[str]:
    """The golden inputs (``"$s"``) an example refers to, in order."""
    names: list[str] = []
    for value in args.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and item.startswith("$") and item[1:] not in names:
                names.append(item[1:])
    return names


def worked_example(method: Method, loss: Loss) -> dict[str, Any]:
    """The loss's first golden example, without the knobs (so every convention can be applied)."""
    example = next(ex for ex in method.golden["examples"] if ex["loss"] == loss.name)
    return {k: v for k, v in example["args"].items() if k not in loss.conventions.defaults}


def printed_value(method: Method, loss: Loss, convention: str, args: Mapping[str, Any]) -> str:
    """What the spec prints for exactly this call under ``convention``, or a dash."""
    for example in method.golden["examples"]:
        if example["loss"] == loss.name and example["convention"] == convention and example["args"] == args:
            return format_printed(example["value"])
    return NOT_PRINTED


def conventions_rows(method: Method, loss: Loss) -> list[list[Cell]]:
    """One row per convention name: name, description, knobs set, computed value, printed value."""
    conventions = loss.conventions
    args = worked_example(method, loss)
    inputs = proof.golden_arguments(method, {"args": args}, loss)
    rows = []
    for name in conventions.names:
        preset = conventions.canonical(name)
        label: Cell = [code(name)] + ([" (default)"] if name == conventions.default else [])
        description: Cell = [conventions.descriptions.get(preset, "")]
        if name != preset:
            description = ["alias of ", code(preset), ": ", *description]
        knobs = format_knobs(conventions.presets[preset])
        try:
            computed = format_value(loss.reference(**inputs, convention=name))
        except (ValueError, TypeError) as exc:  # a convention that refuses this example
            computed = f"{type(exc).__name__}: {exc}"
        rows.append([label, description, [code(knobs)] if knobs else ["none (the defaults)"], [computed],
                     [printed_value(method, loss, name, args)]])
    return rows


# -- directives ------------------------------------------------------------------------------


class MethodDirective(SphinxDirective):
    """A directive whose one argument names a registered method."""

    required_arguments = 1

    def method(self) -> Method:
        method = kdref.get(self.arguments[0])
        # rebuild the page when the golden file or a reference module changes
        self.env.note_dependency(str(GOLDEN_DIR / f"{method.name}.json"))
        for loss in method.losses:
            self.env.note_dependency(inspect.unwrap(loss.reference).__code__.co_filename)
        return method


class ConventionsDirective(MethodDirective):
    def run(self) -> list[nodes.Node]:
        method = self.method()
        out: list[nodes.Node] = []
        for loss in method.losses:
            args = worked_example(method, loss)
            section = nodes.container(classes=["kdref-loss"])
            shown = "; ".join(f"{name} = {method.golden['inputs'][name]}" for name in input_names(args))
            section += paragraph(nodes.strong(text=loss.name), " — knobs and their defaults: ",
                                 code(format_knobs(loss.conventions.defaults)), ". Worked example: ",
                                 code(format_call(loss, args)), " with ", code(shown), ".")
            section += table(
                ["convention", "what it computes", "knobs it sets", "value (reference, computed)",
                 "value printed in the spec"],
                conventions_rows(method, loss), widths=[14, 40, 20, 13, 13],
            )
            out.append(section)
        return out


class ArgumentsDirective(MethodDirective):
    def rst_text(self, text: str) -> list[nodes.Node]:
        """A declaration's doc (reStructuredText inline markup: ``code``, :math:`x`) as nodes of the
        page's own parser; on a MyST page a role is written {math}`x`."""
        if type(self.state).__module__.startswith("myst_parser"):
            text = re.sub(r":(\w+):`", r"{\1}`", text)
        parsed, messages = self.state.inline_text(text, self.lineno)
        return [*parsed, *messages]

    def run(self) -> list[nodes.Node]:
        rst_text = self.rst_text
        out: list[nodes.Node] = []
        for loss in self.method().losses:
            declaration = loss.declaration
            section = nodes.container(classes=["kdref-loss"])
            section += paragraph(nodes.strong(text=loss.name), " — arguments, then knobs (keywords; each "
                                 "overrides the convention):")
            rows = [[[code(arg.name)], rst_text(arg.describe()), rst_text(arg.doc or "")] for arg in declaration.args]
            rows += [[[code(knob.name)], rst_text(f"{knob.describe()}; default ``{knob.default!r}``"),
                      rst_text(knob.doc or "")] for knob in declaration.knobs]
            section += table(["name", "kind and allowed values", "meaning"], rows, widths=[16, 40, 44])
            out.append(section)
        return out


class ApiDirective(SphinxDirective):
    """``automodule`` of every registered method's module on one side (``reference`` or ``torch``),
    in the registry's order, without the declarations (their tables are on the method pages): a
    new method's API is documented without editing this page. Use it inside ``eval-rst``."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        from docutils.statemachine import StringList

        from kdref.declaration import Declaration
        from kdref.records import METHODS

        lines: list[str] = []
        for method in METHODS.values():
            module = importlib.import_module(f"kdref.{self.arguments[0]}.{method.name}")
            declared = sorted(name for name, value in vars(module).items() if isinstance(value, Declaration))
            lines += [f".. automodule:: {module.__name__}", "   :members:", "   :ignore-module-all:"]
            lines += [f"   :exclude-members: {', '.join(declared)}"] if declared else []
            lines.append("")
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="kdref-api"), self.content_offset, container)
        return container.children


class StrategiesDirective(SphinxDirective):
    """For every loss: the keyword arguments its strategy draws (found by drawing, so the table
    cannot drift from the code), how to call it, and the public strategy modules' ``automodule``."""

    def run(self) -> list[nodes.Node]:
        from docutils.statemachine import StringList
        from hypothesis import HealthCheck, Phase, given, settings

        from kdref.records import METHODS

        rows = []
        for method in METHODS.values():
            for loss in method.losses:
                draws: list[dict] = []

                @settings(max_examples=30, database=None, derandomize=True, deadline=None, phases=[Phase.generate],
                          suppress_health_check=list(HealthCheck))
                @given(loss.inputs(loss.conventions.default, False))
                def collect(x):
                    draws.append(x)  # noqa: B023 - called right here, in this iteration

                collect()
                total = len(draws)
                drawn = {name: sum(name in x for x in draws) for x in draws for name in x}
                args = {a.name for a in loss.args}
                always = [n for n, k in drawn.items() if k == total]
                sometimes = [n for n, k in drawn.items() if k < total]
                cell: Cell = [code(", ".join(always))]
                if sometimes:
                    knobs = [n for n in sometimes if n not in args]
                    optional = [n for n in sometimes if n in args]
                    cell += [" and sometimes "] + ([code(", ".join(optional))] if optional else []) + \
                        ([" (arguments)" if knobs else ""] if optional else []) + \
                        ([", " if optional else "", code(", ".join(knobs)), " (knobs)"] if knobs else [])
                rows.append([[code(method.name)], [code(loss.name)], cell])
        out: list[nodes.Node] = [table(["method", "loss", "the keyword arguments a draw holds"], rows,
                                       widths=[10, 26, 64])]
        lines = []
        strategies = importlib.import_module("kdref.strategies")
        for name in sorted(strategies.__all__):
            kind = "autofunction" if callable(getattr(strategies, name)) else "autodata"
            lines.append(f".. {kind}:: kdref.strategies.{name}")
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="kdref-strategies"), self.content_offset, container)
        return out + container.children


class ChecksDirective(SphinxDirective):
    """The table of checks the proof runs, with their example budgets."""

    def run(self) -> list[nodes.Node]:
        def budget(n: int | None) -> str:
            return "deterministic" if n is None else str(n)

        rows = [[[code(c.name)], [c.description], [f"per {c.per}"], [budget(c.examples)], [budget(c.thorough)]]
                for c in proof.CHECKS]
        return [table(["check", "what it shows", "runs", "examples", "--thorough"], rows, widths=[16, 52, 10, 11, 11])]


class PropertiesDirective(MethodDirective):
    def run(self) -> list[nodes.Node]:
        items = nodes.bullet_list()
        for prop in self.method().properties:
            description = " ".join((prop.description or "").split())
            cases = ["every loss and convention"] if prop.cases == ("*",) else [code(c) for c in prop.cases]
            items += nodes.list_item("", paragraph(nodes.strong(text=prop.name), ": ", description,
                                                   " Checked on: ", *joined(cases), "."))
        return [items]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("kdref-conventions", ConventionsDirective)
    app.add_directive("kdref-properties", PropertiesDirective)
    app.add_directive("kdref-arguments", ArgumentsDirective)
    app.add_directive("kdref-checks", ChecksDirective)
    app.add_directive("kdref-api", ApiDirective)
    app.add_directive("kdref-strategies", StrategiesDirective)
    return {"version": kdref.__version__, "parallel_read_safe": True, "parallel_write_safe": True}
