"""The generic proof: every check of kdref.proof on every method × loss × convention.

Nothing here is specific to a method; a new method gets all of these by adding its record to
kdref.records. The checks are the same functions ``kdref verify`` runs.
"""

from __future__ import annotations

import pytest

from kdref import proof
from tests.conftest import CASES, LOSSES, MAX_EXAMPLES, case_id

cases = pytest.mark.parametrize("case", CASES, ids=case_id)


def assert_ok(result: proof.Result) -> None:
    assert result.ok, f"{result.case} {result.check}:\n{result.detail}"
    assert result.examples > 0, f"{result.case} {result.check} ran no example"


@cases
@pytest.mark.parametrize("side", ["reference", "torch"])
def test_golden(case, side):
    assert_ok(proof.check_golden(case, side))


@cases
def test_agreement_float64(case):
    assert_ok(proof.check_agreement(case, "float64", max_examples=MAX_EXAMPLES))


@cases
def test_agreement_float32(case):
    assert_ok(proof.check_agreement(case, "float32", max_examples=MAX_EXAMPLES))


@cases
def test_autocast_bfloat16_accumulates_in_float32(case):
    assert_ok(proof.check_autocast(case, max_examples=MAX_EXAMPLES // 2))


@cases
def test_gradcheck(case):
    assert_ok(proof.check_gradcheck(case, max_examples=MAX_EXAMPLES // 3))


@cases
def test_gradient_matches_finite_differences_of_reference(case):
    assert_ok(proof.check_fd_gradient(case, max_examples=MAX_EXAMPLES // 2))


@cases
def test_properties(case):
    assert_ok(proof.check_properties(case, max_examples=MAX_EXAMPLES))


@cases
def test_bad_input(case):
    assert_ok(proof.check_bad_input(case))


@pytest.mark.parametrize(("method", "loss"), LOSSES, ids=[f"{m.name}:{loss.name}" for m, loss in LOSSES])
def test_torch_compile(method, loss):
    assert_ok(proof.check_compile(method, loss))
