"""The proof harness must be able to fail: each check is shown a broken loss and must say so.

A check that cannot fail proves nothing. Each mutant below breaks one thing the way a real bug
would (a dropped T², a swapped argument, a missing detach, no input validation) and the check
that guards against it must turn red.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from kdref import proof
from kdref.records.st import METHOD as ST
from kdref.reference import st as ref_st
from kdref.reference._common import NUMPY
from kdref.registry import Case
from kdref.torch import st as torch_st

SOFT = ST.loss("soft_target_loss")


def torch_without_t2(student, teacher, T, **kw):
    return torch_st.soft_target_loss(student, teacher, T, **kw) / T**2


def torch_without_detach(student, teacher, T, *, convention=None):
    log_q = torch.log_softmax(student / T, dim=-1)
    log_p = torch.log_softmax(teacher / T, dim=-1)
    return T**2 * (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def torch_without_validation(student, teacher, T, *, convention=None):
    return torch_without_detach(student, teacher.detach(), T)


def torch_with_wrong_gradient(student, teacher, T, **kw):
    value = torch_st.soft_target_loss(student, teacher, T, **kw)
    return value + 0.1 * (student - student.detach()).sum()


def torch_ignoring_knobs(student, teacher, T, *, convention=None, **ignored):
    """Accepts any knob and ignores it: the silent variant kdref exists to prevent."""
    return torch_st.soft_target_loss(student, teacher, T, convention=convention)


# reference mutants are other implementations of the same declaration
@ref_st.SOFT_TARGET_LOSS.implement(NUMPY)
def reference_swapped(student, teacher, T, *, divergence, temperature_squared, reduction):
    return ref_st.soft_target_loss(teacher, student, T, divergence=divergence,
                                   temperature_squared=temperature_squared, reduction=reduction)


@ref_st.SOFT_TARGET_LOSS.implement(NUMPY)
def reference_not_shift_invariant(student, teacher, T, *, divergence, temperature_squared, reduction):
    value = ref_st.soft_target_loss(student, teacher, T, divergence=divergence,
                                    temperature_squared=temperature_squared, reduction=reduction)
    return value + 1e-3 * float(np.mean(student))


def mutant_case(convention="kl_t2", properties=ST.properties, **replacements) -> Case:
    loss = dataclasses.replace(SOFT, **replacements)
    method = dataclasses.replace(ST, losses=(loss,), properties=properties)
    return Case(method, loss, convention)


def torch_path(fn) -> str:
    return f"{__name__}:{fn.__name__}"


def test_golden_catches_a_dropped_t2():
    case = mutant_case(torch_path=torch_path(torch_without_t2))
    assert not proof.check_golden(case, "torch").ok
    assert not proof.check_agreement(case, max_examples=20).ok


def test_golden_catches_swapped_student_and_teacher():
    assert not proof.check_golden(mutant_case(reference=reference_swapped), "reference").ok


def test_gradcheck_catches_a_missing_detach():
    result = proof.check_gradcheck(mutant_case(torch_path=torch_path(torch_without_detach)), max_examples=3)
    assert not result.ok and "detached" in result.detail


def test_finite_differences_catch_a_wrong_gradient():
    case = mutant_case(torch_path=torch_path(torch_with_wrong_gradient))
    assert not proof.check_fd_gradient(case, max_examples=5).ok


def test_bad_input_catches_missing_validation():
    result = proof.check_bad_input(mutant_case(torch_path=torch_path(torch_without_validation)))
    assert not result.ok and "torch, student with NaN: no error" in result.detail


def test_bad_input_catches_an_ignored_knob():
    result = proof.check_bad_input(mutant_case(torch_path=torch_path(torch_ignoring_knobs)))
    assert not result.ok
    assert "torch, unknown knob: no error" in result.detail
    assert "torch, reduction = 'no-such-choice': no error" in result.detail


def test_a_body_must_take_every_declared_knob():
    with pytest.raises(TypeError, match="must take"):
        @ref_st.SOFT_TARGET_LOSS.implement(NUMPY)
        def soft_target_loss(student, teacher, T, *, divergence, reduction):  # temperature_squared dropped
            return 0.0


def test_properties_catch_a_broken_invariance():
    shift = [p for p in ST.properties if p.name == "row-shift invariance"]
    case = mutant_case(reference=reference_not_shift_invariant, properties=tuple(shift))
    result = proof.check_properties(case, max_examples=20)
    assert not result.ok and "row-shift invariance (reference)" in result.detail


@pytest.mark.parametrize(("printed", "tolerance"), [("0.28855901", 5e-9), ("60", 0.5), ("17.76653", 5e-6),
                                                    ("1.75e-18", 5e-21)])
def test_printed_tolerance_is_half_the_last_digit(printed, tolerance):
    assert proof.printed_tolerance(printed) == pytest.approx(tolerance)
