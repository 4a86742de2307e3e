"""The generic proof: every check of the table ``kdref.proof.CHECKS`` on every target.

Nothing here is specific to a method: a new method gets all of these by adding its record to
``kdref/records/``. ``kdref verify`` walks the same table. The slowest checks (``compile``) come
first when parallel workers (pytest-xdist) run them, so that they start early; otherwise the cheap
checks come first (``pytest -x`` stops sooner).
"""

from __future__ import annotations

import os

import pytest

from kdref import proof
from kdref.records import METHODS
from tests.conftest import THOROUGH

#: ``KDREF_METHODS=st,nst`` restricts the proof to those methods, exactly (tools/mutants.py runs a
#: method's checks so; a ``-k st:`` would also select ``nst:``)
SELECTED = [name for name in os.environ.get("KDREF_METHODS", "").split(",") if name]
PLAN = proof.plan([m for m in METHODS.values() if not SELECTED or m.name in SELECTED])
if os.environ.get("PYTEST_XDIST_WORKER"):  # parallel workers: the slowest checks first, for balance
    PLAN.sort(key=lambda step: step[0].name != "compile")


@pytest.mark.parametrize(("check", "target"), PLAN, ids=[f"{c.target_id(t)}-{c.name}" for c, t in PLAN])
def test_proof(check, target):
    result = check(target, thorough=THOROUGH)
    assert result.ok, f"{result.case} {result.check}:\n{result.detail}"
    assert result.examples > 0, f"{result.case} {result.check} ran no example"
