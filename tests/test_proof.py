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

PLAN = proof.plan(METHODS.values())
if os.environ.get("PYTEST_XDIST_WORKER"):  # parallel workers: the slowest checks first, for balance
    PLAN.sort(key=lambda step: step[0].name != "compile")


@pytest.mark.parametrize(("check", "target"), PLAN, ids=[f"{c.target_id(t)}-{c.name}" for c, t in PLAN])
def test_proof(check, target):
    result = check(target, thorough=THOROUGH)
    assert result.ok, f"{result.case} {result.check}:\n{result.detail}"
    assert result.examples > 0, f"{result.case} {result.check} ran no example"
