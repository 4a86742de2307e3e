"""The table of methods, found automatically: every module of this package that defines a
``METHOD`` record is a method, in the order of the families, then of the papers' years.

Adding a method means adding ``kdref/records/<method>.py``; no shared list to edit.
"""

from __future__ import annotations

import importlib
import pkgutil

from kdref.registry import FAMILIES, Method

__all__ = ["METHODS", "method", "names"]


def names() -> list[str]:
    """The modules of this package that are records, without importing them."""
    return sorted(info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_"))


def method(name: str) -> Method:
    """The record of one method, importing its module alone."""
    if name.lower() not in names():
        raise ValueError(f"unknown method {name!r}; implemented: {', '.join(names())}")
    record = importlib.import_module(f"{__name__}.{name.lower()}").METHOD
    if record.name != name.lower():
        raise ValueError(f"kdref/records/{name.lower()}.py declares method {record.name!r}")
    return record


def _discover() -> dict[str, Method]:
    found = [method(name) for name in names()]
    return {m.name: m for m in sorted(found, key=lambda m: (FAMILIES.index(m.family), m.year, m.name))}


def __getattr__(name: str):
    # found on first use, so that importing one record does not import them all
    if name == "METHODS":
        globals()["METHODS"] = _discover()
        return globals()["METHODS"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
