"""CC tests the generic harness cannot state: the spec's correlation matrices (not a loss), the
zero-row value and gradients of cc.md §5, the batches of one, the kink of the unsquared norm
(double backward), the order dependence of the adjacent-residual loss, and checks of the knobs."""

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


@pytest.mark.parametrize("side", ["reference", "torch"])
def test_taylor_correlation_matrices_of_example_a(side):
    """cc.md §8: C_T and C_S of example A (γ = 0.4, P = 2, normalised rows); the diagonal is
    e^{-0.8}(1 + 0.8 + 0.32) = 0.9525774 and orthogonal samples give e^{-0.8} = 0.44932896."""
    golden = GOLDEN["correlation_matrices"]
    if side == "reference":
        c_t, c_s = ref.correlation_matrix(T_A), ref.correlation_matrix(S_A)
    else:
        c_t, c_s = tcc.correlation_matrix(t(T_A)).numpy(), tcc.correlation_matrix(t(S_A)).numpy()
    assert_printed(c_t, golden["C_T"])
    assert_printed(c_s, golden["C_S"])


def _zero_row_gradient(convention: str, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    student = t(S_A_ZERO, requires_grad=True, dtype=dtype)
    loss = tcc.cc_loss(student, t(T_A, dtype=dtype), convention=convention)
    (grad,) = torch.autograd.grad(loss, student)
    return loss.detach(), grad


def test_zero_row_value_is_the_spec_float32_value():
    """cc.md §5: a zero student row keeps S_i· = 0, C_i· = e^{-2γ}; the spec's 0.046851151 is KD-Zoo's
    float32 result. kdref's float64 value (both sides, both zero-row rules) is that number within
    two float32 ulps, and its float32 value within the same."""
    ulp = float(np.spacing(np.float32(0.046851151)))
    expected = float(GOLDEN["zero_row_float32"]["value"])
    values = [ref.cc_loss(S_A_ZERO, T_A, convention=c) for c in ("paper", "kdzoo")]
    values += [_zero_row_gradient(c)[0].item() for c in ("paper", "kdzoo")]
    values.append(_zero_row_gradient("kdzoo", torch.float32)[0].item())
    assert max(abs(v - expected) for v in values) <= 2 * ulp, values
    assert len({round(v, 15) for v in values[:4]}) == 1, f"float64 values differ: {values[:4]}"


def test_zero_row_gradient_kdzoo_is_one_over_eps():
    """cc.md §5: through F.normalize's clamped norm the zero row's gradient is ~2.05e10 (float32);
    kdzoo reproduces it (float32 and float64), the other rows' gradients are ordinary."""
    printed = GOLDEN["zero_row_float32"]["gradient_magnitude"]
    for dtype in (torch.float32, torch.float64):
        _, grad = _zero_row_gradient("kdzoo", dtype)
        assert_printed(grad[2].abs().max().item(), printed)
        assert grad[[0, 1, 3]].abs().max().item() < 1.0


def test_zero_row_gradient_paper_is_masked():
    """"paper" (zero_rows="mask_grad"): the zero row is a constant, its gradient exactly 0; every
    other row's gradient is kdzoo's."""
    _, paper = _zero_row_gradient("paper")
    _, kdzoo = _zero_row_gradient("kdzoo")
    assert paper[2].abs().max().item() == 0.0
    assert torch.isfinite(paper).all()
    torch.testing.assert_close(paper[[0, 1, 3]], kdzoo[[0, 1, 3]], rtol=0, atol=0)
    assert paper.abs().max().item() > 0.0


def _loss_with_row(F: np.ndarray) -> float:
    """The paper's loss with the student's rows used as given for row 2 and normalised otherwise."""
    rows = ref.normalized_rows(F)
    rows[2] = F[2]
    C_S = ref.gaussian_taylor_kernel(rows)
    C_T = ref.gaussian_taylor_kernel(ref.normalized_rows(T_A))
    return ref.congruence(C_S, C_T)


def test_tiny_row_inside_eps_has_the_clamped_value():
    """A row with 0 < ‖f‖ < ε is f/ε under both rules (the value never depends on zero_rows)."""
    student = S_A.copy()
    student[2] = [3e-13, -4e-13]
    for convention in ("paper", "kdzoo"):
        expected = ref.cc_loss(student, T_A, convention=convention)
        actual = tcc.cc_loss(t(student), t(T_A), convention=convention).item()
        assert actual == pytest.approx(expected, rel=1e-12)
    # f/ε = [0.3, -0.4]: a row of norm 0.5, not a unit row
    shrunk = S_A.copy()
    shrunk[2] = [0.3, -0.4]
    assert ref.cc_loss(student, T_A) == pytest.approx(_loss_with_row(shrunk), rel=1e-9)
    # and its gradient: masked under "paper" (the row is a constant), F.normalize's ~1/ε under "kdzoo"
    for convention, masked in (("paper", True), ("kdzoo", False)):
        s = t(student).requires_grad_(True)
        tcc.cc_loss(s, t(T_A), convention=convention).backward()
        row = s.grad[2].abs().max().item()
        assert (row == 0.0) if masked else (row > 1e9), (convention, row)


@pytest.mark.parametrize("side", ["reference", "torch"])
def test_exact_gaussian_on_a_zero_row(side):
    """gaussian_exact is the RBF of the normalised rows as they are: a zero row has C_ii = 1 and
    C_ij = e^{-γ} to a unit row (the truncated series gives e^{-2γ} for both)."""
    F = np.array([[0.0, 0.0], [3.0, 4.0]])
    C = ref.correlation_matrix(F, kernel="gaussian_exact") if side == "reference" else \
        tcc.correlation_matrix(t(F), kernel="gaussian_exact").numpy()
    np.testing.assert_allclose(C, [[1.0, np.exp(-0.4)], [np.exp(-0.4), 1.0]], rtol=1e-15)


def test_batch_of_one():
    """cc.md §5: n = 1 under the normalised conventions gives 0 (both 1×1 matrices are the series at
    s = 1), gradient 0. Under torchdistill the rows are not normalised, so the 1×1 matrices are
    φ(‖f_S‖²) and φ(‖f_T‖²), and the loss is |φ(‖f_S‖²) − φ(‖f_T‖²)| — not 0 as the spec's table says."""
    s, teacher = np.array([[1.0, 2.0]]), np.array([[0.5, 0.5, 0.5]])
    student = t(s, requires_grad=True)
    loss = tcc.cc_loss(student, t(teacher))
    (grad,) = torch.autograd.grad(loss, student)
    assert abs(loss.item()) < 1e-30 and abs(ref.cc_loss(s, teacher)) < 1e-30
    assert grad.abs().max().item() < 1e-15

    def phi(g):
        return np.exp(-0.8) * (1 + 0.8 * g + 0.32 * g**2)

    expected = abs(phi(5.0) - phi(0.75))
    assert ref.cc_loss(s, teacher, convention="torchdistill") == pytest.approx(expected, rel=1e-14)
    assert tcc.cc_loss(t(s), t(teacher), convention="torchdistill").item() == pytest.approx(expected, rel=1e-14)


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
    """cc.md §3: only adjacent pairs are used, so the loss depends on the batch order (1.3333333 on
    A; swapping the first two samples changes it), unlike the kernel congruence."""
    order = [1, 0, 2, 3]
    value = ref.cc_adjacent_residual_loss(S_A, T_A_TRUNC)
    permuted = ref.cc_adjacent_residual_loss(S_A[order], T_A_TRUNC[order])
    assert_printed(value, "1.3333333")
    assert permuted != pytest.approx(value)
    assert tcc.cc_adjacent_residual_loss(t(S_A[order]), t(T_A_TRUNC[order])).item() == pytest.approx(permuted)
    assert ref.cc_loss(S_A[order], T_A[order]) == pytest.approx(ref.cc_loss(S_A, T_A), rel=1e-14)


@pytest.mark.parametrize("side", ["reference", "torch"])
def test_adjacent_residual_loss_needs_equal_widths_and_a_pair(side):
    """The residual f_S − f_T needs d_S = d_T; a batch of one has no adjacent pair (RepDistiller: NaN)."""
    fn = ref.cc_adjacent_residual_loss if side == "reference" else tcc.cc_adjacent_residual_loss
    conv = (lambda x: x) if side == "reference" else t
    with pytest.raises(ValueError, match=r"^teacher must have the width of student \(2\)"):
        fn(conv(S_A), conv(T_A))
    with pytest.raises(ValueError, match=r"^student must have at least 2 samples \(one adjacent pair\), got 1"):
        fn(conv(S_A[:1]), conv(T_A_TRUNC[:1]))


@pytest.mark.parametrize("side", ["reference", "torch"])
def test_knob_checks(side):
    fn = ref.cc_loss if side == "reference" else tcc.cc_loss
    s, teacher = (S_A, T_A) if side == "reference" else (t(S_A), t(T_A))
    # "repdistiller" names the other loss of the method (cc_adjacent_residual_loss), not a preset of this one
    with pytest.raises(ValueError, match=r"^cc_loss: unknown convention 'repdistiller'"):
        fn(s, teacher, convention="repdistiller")
    with pytest.raises(ValueError, match=r"^P must be a finite number in \[1, inf\], got 0"):
        fn(s, teacher, P=0)
    with pytest.raises(TypeError, match=r"^P must be an integer"):
        fn(s, teacher, P=2.0)
    with pytest.raises(ValueError, match=r"^gamma must be > 0"):
        fn(s, teacher, gamma=0.0)
    with pytest.raises(ValueError, match=r"^gamma must be a finite number"):
        fn(s, teacher, gamma=float("inf"))
    with pytest.raises(ValueError, match=r"^eps must be > 0"):
        fn(s, teacher, eps=0.0)
    with pytest.raises(ValueError, match=r"kernel must be one of 'gaussian_taylor', 'gaussian_exact', 'bilinear'"):
        fn(s, teacher, kernel="gaussian")
    with pytest.raises(ValueError, match=r"norm must be one of 'fro_sq', 'fro'"):
        fn(s, teacher, norm="l1")


def test_float32_inputs_under_autocast_accumulate_in_float32():
    """Inside a bfloat16 autocast region, float32 inputs still give the float32 value (the Gram
    products are not run in bfloat16)."""
    s, teacher = t(S_A, dtype=torch.float32), t(T_A, dtype=torch.float32)
    plain = tcc.cc_loss(s, teacher, convention="torchdistill")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = tcc.cc_loss(s, teacher, convention="torchdistill")
    assert inside.dtype == torch.float32
    assert inside.item() == plain.item()


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
