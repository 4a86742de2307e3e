"""Shared pytest set-up: the registry's cases as parameters."""

from __future__ import annotations

import os

import torch

from kdref.records import METHODS

# The proof's inputs are tiny (a few hundred numbers): intra-op threads only add overhead there.
torch.set_num_threads(1)

#: Hypothesis examples per randomized check; KDREF_MAX_EXAMPLES raises it for a deeper run.
MAX_EXAMPLES = int(os.environ.get("KDREF_MAX_EXAMPLES", "20"))

CASES = [case for method in METHODS.values() for case in method.cases()]
LOSSES = [(method, loss) for method in METHODS.values() for loss in method.losses]


def case_id(case) -> str:
    return case.id
