"""The specs' edge-case lists (section 5 of st.md, logits.md, dml.md), one test each, both sides.

The generic harness draws such inputs too; these pin the values the specs state.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdref.reference import dml as ref_dml
from kdref.reference import st as ref_st
from kdref.torch import dml as torch_dml
from kdref.torch import st as torch_st

BIG_S = np.array([[1000.0, -1000.0]])
BIG_T = np.array([[-1000.0, 1000.0]])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_st_logits_of_1000_give_the_exact_kl_of_2000(dtype):
    """st.md §5: with logits ±1000 the exact KL is 2000; a naive log(softmax) gives -inf."""
    assert ref_st.soft_target_loss(BIG_S, BIG_T, 1.0, convention="kl") == pytest.approx(2000.0, rel=1e-12)
    value = torch_st.soft_target_loss(torch.tensor(BIG_S, dtype=dtype), torch.tensor(BIG_T, dtype=dtype), 1.0,
                                      convention="kl")
    assert value.item() == pytest.approx(2000.0, rel=1e-6)


def test_st_teacher_probabilities_that_underflow_contribute_zero():
    """st.md §5: a teacher probability that underflows to 0 contributes 0·log 0 = 0, not NaN."""
    s, t = np.array([[0.0, 0.0]]), np.array([[0.0, -1e5]])
    expected = math.log(2.0)  # p = [1, 0], q uniform: KL = log 2
    assert ref_st.soft_target_loss(s, t, 1.0, convention="kl") == pytest.approx(expected, rel=1e-12)
    got = torch_st.soft_target_loss(torch.tensor(s), torch.tensor(t), 1.0, convention="kl")
    assert got.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_st_zero_logits_give_uniform_distributions(T):
    """st.md §5: zero vectors: KL = 0, the paper's CE = T²·log C."""
    z = np.zeros((3, 5))
    assert ref_st.soft_target_loss(z, z, T) == 0.0
    assert ref_st.soft_target_loss(z, z, T, convention="paper") == pytest.approx(T**2 * math.log(5), rel=1e-12)
    zt = torch.zeros(3, 5, dtype=torch.float64)
    assert torch_st.soft_target_loss(zt, zt, T, convention="paper").item() == pytest.approx(T**2 * math.log(5))


def test_st_batch_of_one_batchmean_equals_sum():
    """st.md §5: for N = 1 the batch mean is the sum."""
    s, t = np.array([[1.0, 2.0, 3.0]]), np.array([[1.5, 1.0, 2.0]])
    assert ref_st.soft_target_loss(s, t, 4.0) == ref_st.soft_target_loss(s, t, 4.0, reduction="sum")


def test_dml_direction_matters():
    """dml.md §5: network k minimises KL(p_peer ‖ p_k); the two directions differ (0.2039253 vs 0.14094046)."""
    z1 = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
    z2 = np.array([[1.5, 1.0, 2.0], [0.0, 0.0, 1.0]])
    assert ref_dml.dml_mimicry_loss(z1, [z2]) != pytest.approx(ref_dml.dml_mimicry_loss(z2, [z1]), rel=0.1)


def test_dml_official_epsilon_formula_saturates_and_loses_its_gradient():
    """dml.md §3/§7: the official ε-formula saturates at -log ε and its gradient vanishes, where the
    exact KL is 60 with gradient [1, 0, -1]."""
    z = torch.tensor([[30.0, 0.0, -30.0]], dtype=torch.float64, requires_grad=True)
    peer = torch.tensor([[-30.0, 0.0, 30.0]], dtype=torch.float64)
    official = torch_dml.dml_mimicry_loss(z, [peer], convention="official_tf")
    (gradient,) = torch.autograd.grad(official, z)
    assert official.item() == pytest.approx(-math.log(1e-8), rel=1e-9)
    assert gradient.abs().max().item() < 1e-15
    exact = torch_dml.dml_mimicry_loss(z, [peer])
    (gradient,) = torch.autograd.grad(exact, z)
    assert torch.allclose(gradient, torch.tensor([[1.0, 0.0, -1.0]], dtype=torch.float64), atol=1e-12)
