"""kdref — the reference implementation of the classic knowledge-distillation losses.

``kdref.reference`` holds the NumPy oracle, ``kdref.torch`` the optimized PyTorch losses,
``kdref.strategies`` Hypothesis strategies of valid inputs, and ``kdref.proof`` the checks that
prove the two sides equal. ``methods()`` lists the implemented methods, ``get(name)`` returns
one registry record.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "check", "get", "methods"]


def methods() -> list[str]:
    """Names of the implemented methods."""
    from kdref.records import METHODS

    return list(METHODS)


def get(name: str):
    """The registry record (:class:`kdref.registry.Method`) of one method (importing it alone)."""
    from kdref.records import method

    return method(name)


def check(fn, method, loss=None, **options):
    """Check your own implementation ``fn`` of ``method``'s loss against every kdref convention and
    name the one it computes: see :func:`kdref.checker.check`."""
    from kdref.checker import check as run

    return run(fn, method, loss, **options)
