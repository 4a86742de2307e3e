"""kdref.reference — the NumPy oracle: one module per method, written to read like the paper.

Imports NumPy only, never torch, so it serves as a correctness oracle for code in any framework.
"""

import importlib
import pkgutil

#: one module per method, found in this package (no list to edit when a method is added)
__all__ = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def __getattr__(name: str):
    # ``kdref.reference.st`` after ``import kdref.reference``: each method's module is imported on first use
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
