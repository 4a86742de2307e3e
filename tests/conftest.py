"""Shared pytest set-up: the registry's cases and the proof's plan as parameters."""

from __future__ import annotations

import os

import torch

from kdref.records import METHODS

# The proof's inputs are tiny (a few hundred numbers): intra-op threads only add overhead there.
torch.set_num_threads(1)

#: KDREF_THOROUGH=1 runs every check with its deep example budget (as ``kdref verify --thorough``)
THOROUGH = os.environ.get("KDREF_THOROUGH", "") not in ("", "0")

CASES = [case for method in METHODS.values() for case in method.cases()]
LOSSES = [(method, loss) for method in METHODS.values() for loss in method.losses]


def case_id(case) -> str:
    return case.id
