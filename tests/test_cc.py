"""CC tests the generic harness cannot state (the spec's correlation matrices, the batches of one,
the exact Gaussian at a zero row and a row inside ε are golden edge cases): the zero-row value and
gradients of cc.md §5, the gradients at a row inside ε, the kink of the unsquared norm (double
backward), the order dependence of the adjacent-residual loss, the rules the generated bad inputs do
not state, and float32 at a large offset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kdref.reference import cc as ref
from kdref.registry import GOLDEN_DIR
from kdref.torch import cc as tcc
from tests.helpers import assert_printed, t

GOLDEN = json.loads((GOLDEN_DIR / "cc.json").read_text(encoding="utf-8"))
S_A, T_A, T_A_TRUNC = (np.asarray(GOLDEN["inputs"][k], dtype=np.float64) for k in ("s_a", "t_a", "t_a_trunc"))
S_A_ZERO = S_A.copy()
S_A_ZERO[2] = 0.0  # cc.md §5: "example A with student row 2 zeroed" (0-based, as the value shows)
SIDES = pytest.mark.parametrize("side", ["reference", "torch"])


def on(side: str, name: str):
    """The function ``name`` of one side, taking and returning NumPy arrays or floats."""
    if side == "reference":
        return getattr(ref, name)
    return lambda *xs, **kw: np.asarray(getattr(tcc, name)(*(t(x) for x in xs), **kw).numpy())


def value_and_gradient(student, teacher=T_A, convention="paper", dtype=torch.float64) -> tuple[float, torch.Tensor]:
    """The torch loss and its gradient with respect to the student."""
    s = t(student, requires_grad=True, dtype=dtype)
    loss = tcc.cc_loss(s, t(teacher, dtype=dtype), convention=convention)
    return loss.item(), torch.autograd.grad(loss, s)[0]


def test_zero_row_value_and_gradients():
    """cc.md §5: a zero student row keeps S_i· = 0, C_i· = e^{-2γ}; the spec's 0.046851151 is KD-Zoo's
    float32 result. kdref's float64 value (both sides, both zero-row rules) is that number within
    two float32 ulps, and its float32 value within the same. Through F.normalize's clamped norm the
    zero row's gradient is ~2.05e10 (float32): "kdzoo" reproduces it in float32 and float64, the
    other rows' gradients are ordinary. "paper" (zero_rows="mask_grad") makes the zero row a
    constant: its gradient is exactly 0, every other row's is kdzoo's."""
    ulp = float(np.spacing(np.float32(0.046851151)))
    values = [ref.cc_loss(S_A_ZERO, T_A, convention=c) for c in ("paper", "kdzoo")]
    grads = {}
    for convention, dtype in (("paper", torch.float64), ("kdzoo", torch.float64), ("kdzoo", torch.float32)):
        value, grads[convention, dtype] = value_and_gradient(S_A_ZERO, convention=convention, dtype=dtype)
        values.append(value)
    assert max(abs(v - float(GOLDEN["zero_row_float32"]["value"])) for v in values) <= 2 * ulp, values
    assert len({round(v, 15) for v in values[:4]}) == 1, f"float64 values differ: {values[:4]}"
    for dtype in (torch.float32, torch.float64):
        assert_printed(grads["kdzoo", dtype][2].abs().max().item(), GOLDEN["zero_row_float32"]["gradient_magnitude"])
        assert grads["kdzoo", dtype][[0, 1, 3]].abs().max().item() < 1.0
    paper, kdzoo = grads["paper", torch.float64], grads["kdzoo", torch.float64]
    assert paper[2].abs().max().item() == 0.0 and paper.abs().max().item() > 0.0 and torch.isfinite(paper).all()
    torch.testing.assert_close(paper[[0, 1, 3]], kdzoo[[0, 1, 3]], rtol=0, atol=0)


def test_tiny_row_inside_eps_has_the_clamped_value():
    """A row with 0 < ‖f‖ < ε is f/ε under both rules (golden edge case; the value never depends on
    zero_rows); its gradient is masked under "paper" (the row is a constant), F.normalize's ~1/ε under
    "kdzoo"."""
    student = S_A.copy()
    student[2] = [3e-13, -4e-13]
    for convention, masked in (("paper", True), ("kdzoo", False)):
        value, grad = value_and_gradient(student, convention=convention)
        assert value == pytest.approx(ref.cc_loss(student, T_A, convention=convention), rel=1e-12)
        row = grad[2].abs().max().item()
        assert (row == 0.0) if masked else (row > 1e9), (convention, row)


def test_unsquared_norm_at_a_match_has_zero_first_and_finite_second_derivative():
    """The unsquared Frobenius norm at C_S = C_T: value 0, gradient the zero subgradient, and the
    gradient of that gradient finite (a plain vector_norm's double backward is NaN there)."""
    student = t(S_A, requires_grad=True)
    loss = tcc.cc_loss(student, t(S_A), convention="torchdistill")
    (grad,) = torch.autograd.grad(loss, student, create_graph=True)
    assert loss.item() == 0.0 and grad.abs().max().item() == 0.0
    (second,) = torch.autograd.grad(grad.sum(), student, allow_unused=True, materialize_grads=True)
    assert torch.isfinite(second).all()


def test_adjacent_residual_loss_depends_on_order():
    """cc.md §3: only adjacent pairs are used, so the loss depends on the batch order: swapping the
    first two samples of example A changes it (the kernel congruence is permutation invariant)."""
    order = [1, 0, 2, 3]
    for side in ("reference", "torch"):
        fn = on(side, "cc_adjacent_residual_loss")
        assert fn(S_A[order], T_A_TRUNC[order]) != pytest.approx(fn(S_A, T_A_TRUNC))


@SIDES
def test_rules_the_generated_bad_inputs_do_not_state(side):
    """The declaration's check: the residual f_S − f_T needs d_S = d_T. And P is an integer: 2.0 is
    refused (the generated bad knob values are out of range or not numbers, never fractional)."""
    with pytest.raises(ValueError, match=r"^teacher must have the width of student \(2\)"):
        on(side, "cc_adjacent_residual_loss")(S_A, T_A)
    with pytest.raises(TypeError, match=r"^P must be an integer"):
        on(side, "cc_loss")(S_A, T_A, P=2.0)


def test_exact_gaussian_of_raw_rows_at_a_large_offset_is_accurate_in_float32():
    """Post-ReLU-like rows with a common offset of 1000 and a spread of 0.1: the distances come from
    the centred Gram matrix, so float32 keeps them (the uncentred form loses ~0.3 in ‖f_i − f_j‖²)."""
    rng = np.random.default_rng(0)
    student, teacher = 1000.0 + 0.1 * rng.standard_normal((6, 5)), 1000.0 + 0.1 * rng.standard_normal((6, 4))
    student, teacher = (x.astype(np.float32).astype(np.float64) for x in (student, teacher))
    knobs = {"kernel": "gaussian_exact", "normalize": False, "gamma": 10.0}
    expected = ref.cc_loss(student, teacher, **knobs)
    actual = tcc.cc_loss(t(student, dtype=torch.float32), t(teacher, dtype=torch.float32), **knobs).item()
    assert expected > 1e-3
    assert actual == pytest.approx(expected, rel=1e-4)
