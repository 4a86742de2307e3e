"""Small helpers the method test files share."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch

from kdref.proof import printed_tolerance


def t(x, requires_grad: bool = False, dtype=torch.float64) -> torch.Tensor:
    """A float64 (or ``dtype``) tensor of ``x``."""
    return torch.tensor(x, dtype=dtype, requires_grad=requires_grad)


def assert_printed(actual, printed) -> None:
    """``actual`` reproduces every printed digit of ``printed`` (a string or nested lists of them, as
    in the golden files); a fraction such as ``"1/3"`` is exact."""
    texts = np.asarray(printed, dtype=object)
    expected = np.vectorize(lambda v: float(Fraction(v)), otypes=[np.float64])(texts)
    bounds = np.vectorize(lambda v: 0.0 if "/" in v else printed_tolerance(v), otypes=[np.float64])(texts)
    error = np.abs(np.asarray(actual, dtype=np.float64) - expected)
    assert np.all(error <= bounds * (1 + 1e-9) + 1e-15 * np.abs(expected)), f"got {actual}, the spec prints {printed}"
