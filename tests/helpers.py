"""Small helpers the method test files share."""

from __future__ import annotations

import torch

from kdref.proof.compare import matches_printed


def t(x, requires_grad: bool = False, dtype=torch.float64) -> torch.Tensor:
    """A float64 (or ``dtype``) tensor of ``x``."""
    return torch.tensor(x, dtype=dtype, requires_grad=requires_grad)


def assert_printed(actual, printed) -> None:
    """``actual`` reproduces every printed digit of ``printed`` (see :func:`kdref.proof.compare.matches_printed`)."""
    matches_printed(actual, printed, "value")
