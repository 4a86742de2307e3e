"""What the specs of ST and DML state that no generic check pins (section 5 of st.md and dml.md; st.md's float64
values are golden edge cases), both sides."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdref.reference import dml as ref_dml
from kdref.reference import st as ref_st
from kdref.torch import dml as torch_dml
from kdref.torch import st as torch_st
from tests.helpers import t

ZEROS = np.zeros((3, 5))


@pytest.mark.parametrize(("s", "t_", "T", "convention", "value"), [
    ([[1000.0, -1000.0]], [[-1000.0, 1000.0]], 1.0, "kl", 2000.0),
    ([[0.0, 0.0]], [[0.0, -1e5]], 1.0, "kl", math.log(2.0)),
    (ZEROS, ZEROS, 1.0, "kl_t2", 0.0), (ZEROS, ZEROS, 4.0, "kl_t2", 0.0),
    (ZEROS, ZEROS, 1.0, "paper", math.log(5)), (ZEROS, ZEROS, 4.0, "paper", 16 * math.log(5)),
])
def test_st_spec_edge_values_in_float32(s, t_, T, convention, value):
    """st.md §5 (logits ±1000, a teacher probability that underflows, zero logits) in float32 on
    torch; the float64 values, on both sides, are golden edge cases."""
    got = torch_st.soft_target_loss(t(s, dtype=torch.float32), t(t_, dtype=torch.float32), T, convention=convention)
    assert got.item() == pytest.approx(value, rel=1e-6, abs=0)


@pytest.mark.parametrize("T", [1e3, 1e4, 1e8, 1e12, 1e20, 1e30])
def test_st_large_temperatures_in_float32(T):
    """T²·KL at a large T, computed as a difference of nearly equal log-probabilities, was 17% off in
    float32 at T = 1e3, 4.8× at 1e4 and 0 at 1e8 (float64 golden edge cases hold the reference): now
    within float32 rounding of the float64 reference on the same inputs, tending to ½·Var(t − s)."""
    torch.manual_seed(0)
    s, t_ = torch.randn(4, 5), torch.randn(4, 5)
    expected = ref_st.soft_target_loss(s.double().numpy(), t_.double().numpy(), T)
    assert torch_st.soft_target_loss(s, t_, T).item() == pytest.approx(expected, rel=1e-5)
    assert torch_st.soft_target_loss(s.double(), t_.double(), T).item() == pytest.approx(expected, rel=1e-13)
    if T >= 1e12:
        assert expected == pytest.approx(0.5 * np.var((t_.double() - s.double()).numpy(), axis=1).mean(), rel=1e-10)


def test_st_tiny_temperature_is_not_flushed_to_zero():
    """At T = 1e-30 the softmaxes are one-hot and T²·KL = T·(z_max − z_y) = 1e-30, representable in
    float32, where T² alone (1e-60) is not: T multiplies twice, never as a square."""
    s, t_ = [[0.0, 1.0]], [[1.0, 0.0]]
    assert ref_st.soft_target_loss(np.array(s), np.array(t_), 1e-30) == pytest.approx(1e-30, rel=1e-12, abs=0)
    for dtype in (torch.float32, torch.float64):
        got = torch_st.soft_target_loss(t(s, dtype=dtype), t(t_, dtype=dtype), 1e-30).item()
        assert got == pytest.approx(1e-30, rel=1e-6, abs=0)  # pytest's default abs=1e-12 would pass 0


def test_st_cross_entropy_times_t_squared_beyond_float32_is_refused():
    """The paper's cross-entropy times T² is at least T²·log C: past float32's range (T > 1.27e19 for
    three classes) it is refused with the limit, not returned as inf; float64 reaches the accepted
    T ≤ 1e100, and the KL conventions take any T (T²·KL → ½·Var)."""
    s = np.array([[0.0, 1.0, 2.0]])
    s32, t32 = t(s, dtype=torch.float32), t(s[:, ::-1].copy(), dtype=torch.float32)
    with pytest.raises(ValueError, match=r"^T must be below 1.27e\+19 for the cross-entropy times T² in float32"):
        torch_st.soft_target_loss(s32, t32, 1e20, convention="paper")
    assert np.isfinite(ref_st.soft_target_loss(s, s[:, ::-1].copy(), 1e100, convention="paper"))
    assert torch_st.soft_target_loss(s32, t32, 1e30).item() == pytest.approx(0.5 * np.var(s[0, ::-1] - s[0]), rel=1e-6)


def test_st_batch_of_one_batchmean_equals_sum():
    """st.md §5: for N = 1 the batch mean is the sum, exactly."""
    s, t_ = np.array([[1.0, 2.0, 3.0]]), np.array([[1.5, 1.0, 2.0]])
    assert ref_st.soft_target_loss(s, t_, 4.0) == ref_st.soft_target_loss(s, t_, 4.0, reduction="sum")


def test_dml_official_epsilon_formula_loses_its_gradient():
    """dml.md §3/§7: the official ε-formula saturates at -log ε (a golden edge case) and its gradient
    vanishes, where the exact KL is 60 with gradient [1, 0, -1] (both tighter than finite differences)."""
    z, peer = t([[30.0, 0.0, -30.0]], requires_grad=True), t([[-30.0, 0.0, 30.0]])
    (gradient,) = torch.autograd.grad(torch_dml.dml_mimicry_loss(z, [peer], convention="official_tf"), z)
    assert gradient.abs().max().item() < 1e-15
    (gradient,) = torch.autograd.grad(torch_dml.dml_mimicry_loss(z, [peer]), z)
    assert torch.allclose(gradient, t([[1.0, 0.0, -1.0]]), atol=1e-12)


def test_kdzoo_dml_takes_exactly_one_peer():
    """dml.md §6: KD-Zoo's DML is K = 2 only (the declaration's check= rule, which bad_input does not generate)."""
    z = np.zeros((2, 3))
    with pytest.raises(ValueError, match="exactly one peer"):
        ref_dml.dml_mimicry_loss(z, [z, z], convention="kdzoo")
