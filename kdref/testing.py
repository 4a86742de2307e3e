"""Assertions for your own test suite: is your loss the kdref convention you mean?

Use :func:`assert_matches` as ``torch.testing.assert_close`` is used::

    from kdref.testing import assert_matches

    def test_my_kd_loss_is_hinton_with_t_squared():
        assert_matches(my_kd_loss, "st", convention="kl_t2", inputs=["student", "teacher", "T"])

It runs :func:`kdref.check` and fails with its report: the convention your loss computes
instead, or how it differs from the nearest one (a factor such as T², a swapped student and
teacher, a difference at degenerate inputs), and any problem with its gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kdref.checker import Report, check

__all__ = ["assert_matches"]


def assert_matches(fn: Callable[..., Any], method: str, loss: str | None = None, *, convention: str | None = None,
                   **options: Any) -> Report:
    """Raise ``AssertionError`` (with :func:`kdref.check`'s report) unless ``fn`` matches
    ``convention`` of ``method``'s loss (any convention when ``None``) with no problem found.
    ``options`` are :func:`kdref.check`'s (``inputs``, ``fixed``, ``dtype``, ``device``, ...)."""
    report = check(fn, method, loss, **options)
    if convention is not None:
        names = {name for c in report.matches for name in (c, *report.verdict(c).aliases)}
        if convention not in names:
            raise AssertionError(f"expected convention {convention!r}\n{report}")
    if not report.ok:
        raise AssertionError(str(report))
    return report
