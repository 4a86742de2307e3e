"""Hypothesis strategies of valid inputs for every method (public API).

Each ``<method>_inputs`` strategy draws a dict of keyword arguments (NumPy arrays and numbers)
that the method's loss accepts, so another project can test its own loss with them::

    from hypothesis import given
    from kdref import strategies
    from kdref.reference.st import soft_target_loss

    @given(strategies.st_inputs())
    def test_my_kd_loss(inputs):
        assert abs(my_kd_loss(**inputs) - soft_target_loss(**inputs)) < 1e-6

The draws lean on the edge cases where implementations part ways: for logits, ties, teacher
equal to the student (or equal up to a per-row shift), magnitudes up to ±1e4, a batch of one,
two classes; for feature maps, all-zero maps and channels, a single spatial position, negative
and very large activations. With ``gradient=True`` the magnitudes stay moderate, where finite
differences are accurate enough to check a gradient against.

One module per family or method (``kdref/strategies/<name>.py``); everything public is
re-exported here.
"""

from __future__ import annotations

import importlib
import pkgutil

_MODULES = [importlib.import_module(f"{__name__}.{info.name}") for info in pkgutil.iter_modules(__path__)]
# re-exported after every import, so that a function wins over a module of its name (``logits``)
for _module in _MODULES:
    globals().update({name: getattr(_module, name) for name in _module.__all__})

__all__ = sorted(name for module in _MODULES for name in module.__all__)
