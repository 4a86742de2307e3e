"""SP tests the generic harness cannot state (the spec's matrices and degenerate batches are golden
edge cases): the float32 zero-row value and the libraries' exploding gradient, the zero-row and
dead-teacher gradients, what is *not* an invariance, float16 inputs, the trace form on a large
batch and its limits (the check hook), layers of one batch, and ``torch.compile`` through the
zero-row mask."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kdref.proof import fd_gradient
from kdref.reference import sp as ref
from kdref.registry import GOLDEN_DIR
from kdref.torch import sp as tsp
from tests.helpers import assert_printed, t

GOLDEN = json.loads((GOLDEN_DIR / "sp.json").read_text(encoding="utf-8"))
T_A, S_A, S_A_ZERO, T_B, S_B = (np.asarray(GOLDEN["inputs"][k], dtype=np.float64)
                                for k in ("T_A", "S_A", "S_A_zero", "T_B", "S_B"))
ZERO_ROW = 2  # sp.md §5: "student row 2 zeroed", counted from 0


def torch_grad(student: list[np.ndarray], teacher: list[np.ndarray], dtype=torch.float64, **knobs) -> list:
    xs = [t(s, True, dtype) for s in student]
    value = tsp.sp_loss(xs, [t(a, dtype=dtype) for a in teacher], **knobs)
    return [g.double().numpy() for g in torch.autograd.grad(value, xs)]


def test_zero_row_value_and_the_libraries_exploding_gradient():
    """sp.md §5: example A with student row 2 zeroed gives 0.20800608 in float32 (RepDistiller's
    value: the zero row of G stays 0), whatever the gradient rule, and float64 agrees within
    float32's rounding of the inputs' products. The libraries' clamp, F.normalize(eps=1e-12), has
    Jacobian I/ε at the zero row: max |grad| ≈ 7.9e10 in float32."""
    golden = GOLDEN["zero_row"]
    for zero_rows in ("mask_grad", "keep"):
        value = tsp.sp_loss([t(S_A_ZERO, dtype=torch.float32)], [t(T_A, dtype=torch.float32)], zero_rows=zero_rows)
        assert value.dtype == torch.float32
        assert_printed(value.item(), golden["value_float32"])
        assert ref.sp_loss([S_A_ZERO], [T_A], zero_rows=zero_rows) == pytest.approx(float(golden["value_float32"]),
                                                                                   rel=1e-7)
    assert ref.similarity_matrix(S_A_ZERO)[ZERO_ROW].tolist() == [0.0] * 4
    (grad,) = torch_grad([S_A_ZERO], [T_A], dtype=torch.float32, zero_rows="keep")
    assert np.all(np.isfinite(grad))
    assert_printed(float(f"{np.max(np.abs(grad)):.2g}"), golden["max_abs_grad_clamp_float32"])
    assert np.argmax(np.max(np.abs(grad), axis=1)) == ZERO_ROW


def _frozen_row_loss(student, teacher, row: int) -> float:
    """The paper's loss with row ``row`` of G_S held at 0: what ``zero_rows="mask_grad"`` differentiates."""
    g_s = ref.similarity_matrix(student)
    g_s[row] = 0.0
    return ref.sp_pair_loss(g_s, ref.similarity_matrix(teacher))


@pytest.mark.parametrize("trace_form", [False, True])
def test_zero_row_mask_grad_gradient(trace_form):
    """kdref's rule at an all-zero sample (the default): its normalised row is a constant 0, so
    the gradient is finite — at the zero row, the finite differences of the loss with that row of
    G_S frozen at 0 (only the column route, through the other rows' normalisation, remains); at the
    other rows, the finite differences of the reference itself (smooth there). The trace form
    gives the same gradient."""
    (grad,) = torch_grad([S_A_ZERO], [T_A], trace_form=trace_form)
    frozen = fd_gradient(lambda student: _frozen_row_loss(student, T_A, ZERO_ROW), {"student": S_A_ZERO}, "student")
    np.testing.assert_allclose(grad[ZERO_ROW], frozen[ZERO_ROW], rtol=1e-6, atol=1e-9)
    assert np.max(np.abs(grad[ZERO_ROW])) > 1e-3  # the column route is not empty
    full = fd_gradient(lambda student: ref.sp_loss([student], [T_A]), {"student": S_A_ZERO}, "student")
    others = [i for i in range(len(S_A_ZERO)) if i != ZERO_ROW]
    np.testing.assert_allclose(grad[others], full[others], rtol=1e-6, atol=1e-9)


def test_finite_differences_at_a_zero_row_are_not_a_gradient():
    """Why kdref has to choose: the loss jumps when a zero row moves (its normalised row goes from
    0 to a unit vector), so difference quotients there grow as 1/h."""
    moved = S_A_ZERO.copy()
    moved[ZERO_ROW, 0] = 1e-9
    assert abs(ref.sp_loss([moved], [T_A]) - ref.sp_loss([S_A_ZERO], [T_A])) > 1e-2


@pytest.mark.parametrize("side", ["reference", "torch"])
@pytest.mark.parametrize("p", [1, 2])
def test_one_element_rows_normalise_to_exactly_one(side, p):
    """Why b = 1 is exact (the golden edge case G = [1]) whatever the kernels: the 1×1 Gram
    ‖q‖² = x comes out of the matmul rounded either way (its summation order, FMA or not, depends on
    the CPU's vector width and the BLAS), but its row [x] has norm |x| exactly — |x| for p = 1, and
    √fl(x²) = |x| in binary floating point for p = 2 (x² neither overflows nor underflows here) —
    and x / |x| = 1 is exact.
    x = 0.4434009546022054 is the b = 1 test's student ‖q‖² one ulp up, as an FMA chain rounds it:
    multiplying by fl(1/x) instead of dividing gave 1 − 2⁻⁵³ there, the reported loss (2⁻⁵³)² ≈ 1.2326e-32."""
    rng = np.random.default_rng(8)
    dtypes = [np.float64] if side == "reference" else [torch.float64, torch.float32]
    for dtype in dtypes:
        top = 150 if dtype in (np.float64, torch.float64) else 18  # x² < the largest finite float
        x = np.concatenate([[0.4434009546022054], 10.0 ** rng.uniform(-11, top, 5000)])[:, None]  # x ≥ ε
        if side == "reference":
            assert np.all(ref.row_normalize(x, p) == 1.0)
            continue
        for zero_rows in ("mask_grad", "keep"):
            g = tsp.row_normalize(t(x, dtype=dtype), p, zero_rows=zero_rows)
            assert torch.equal(g, torch.ones_like(g)), (dtype, zero_rows)


@pytest.mark.parametrize("b", [2, 3, 5])
def test_dead_teacher_layer_gives_zero_gradient(b):
    """sp.md §5: a dead teacher layer (G_T = 0) costs 1/b (golden edge case), constant in the
    student, since every row of G_S has norm 1: its gradient is 0, to rounding (tighter than the
    reference's finite differences can say)."""
    student, dead = np.random.default_rng(b).normal(size=(b, 3)), np.zeros((b, 6))
    np.testing.assert_allclose(torch_grad([student], [dead])[0], 0.0, atol=1e-15)


def test_not_invariant_to_per_sample_scaling_or_translation():
    """sp.md §2: only a global positive rescaling of a layer leaves the loss unchanged. Row i's
    normalisation removes sample i's own scale c_i, not the scales c_j of the other samples in the
    row, so rescaling single samples changes the loss; a common offset changes it too."""
    value = ref.sp_loss([S_B], [T_B])
    per_sample = np.array([[1.0], [2.0], [0.5], [3.0], [1.0], [0.25]])
    assert abs(ref.sp_loss([S_B * per_sample], [T_B]) - value) > 1e-3
    assert abs(ref.sp_loss([S_B + 1.0], [T_B]) - value) > 1e-3
    assert ref.sp_loss([S_B * 13.0], [T_B * 0.01]) == pytest.approx(value, rel=1e-13)


def test_float16_inputs_accumulate_in_float32():
    """sp.md §5: ‖q_i‖² overflows float16 (65504) at chw = 16384 with activations of 3; kdref forms
    the Gram in float32 and stays finite and right, where a float16 Gram is inf and normalises to NaN."""
    rng = np.random.default_rng(4)
    s16 = torch.tensor(3.0 + rng.uniform(0, 1, size=(4, 16384)), dtype=torch.float16)
    t16 = torch.tensor(3.0 + rng.uniform(0, 1, size=(4, 8192)), dtype=torch.float16)
    assert not torch.isfinite(s16 @ s16.T).all()
    value = tsp.sp_loss([s16], [t16])
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(ref.sp_loss([s16.double().numpy()], [t16.double().numpy()]), rel=1e-4,
                                         abs=1e-8)


def test_trace_form_on_many_samples_and_few_features():
    """The trace form (d ≪ b) equals the Gram form in float64, in value and gradient, with a zero
    row and duplicated samples in the batch."""
    rng = np.random.default_rng(6)
    student, teacher = rng.normal(size=(300, 4)), np.maximum(rng.normal(size=(300, 6)), 0)
    student[7] = 0.0
    student[9] = student[8]
    teacher[11] = 0.0
    direct, trace = (tsp.sp_loss([t(student)], [t(teacher)], trace_form=f).item() for f in (False, True))
    assert trace == pytest.approx(direct, rel=1e-11)
    assert trace == pytest.approx(ref.sp_loss([student], [teacher], trace_form=True), rel=1e-11)
    np.testing.assert_allclose(torch_grad([student], [teacher], trace_form=True)[0],
                               torch_grad([student], [teacher])[0], rtol=1e-8, atol=1e-14)


@pytest.mark.parametrize("side", ["reference", "torch"])
def test_trace_form_limits_and_layers_of_one_batch(side):
    """The check hook: the trace form needs p = 2, the mask_grad rule and float64 inputs. The
    declaration: every student map shares the batch size, dtype and device of student[0] (the
    generic bad inputs have one layer pair); tuples are lists."""
    loss = ref.sp_loss if side == "reference" else tsp.sp_loss
    conv = (lambda x: x) if side == "reference" else t
    a4, b4, a5, a4_32 = conv(np.ones((4, 3))), conv(np.ones((4, 2, 2))), conv(np.ones((5, 3))), conv(np.ones((4, 3)))
    a4_32 = a4_32.astype(np.float32) if side == "reference" else a4_32.float()
    cases = [
        ([a4], [a4], {"trace_form": True, "p": 1}, ValueError, "^trace_form=True needs p=2"),
        ([a4], [a4], {"trace_form": True, "convention": "torchdistill"}, ValueError, "^trace_form=True needs p=2"),
        ([a4], [a4], {"trace_form": True, "zero_rows": "keep"}, ValueError, "^trace_form=True supports"),
        ([a4_32], [a4_32], {"trace_form": True}, ValueError, "^trace_form=True needs float64"),
        ([a4, a5], [a4, a5], {}, ValueError, r"^student\[1\] must have the batch size of student\[0\]"),
        ([a4, a4_32], [a4, a4_32], {}, TypeError, r"^student\[1\] must have the dtype of student\[0\]"),
    ]
    if side == "torch":
        cases.append(([a4, a4.to("meta")], [a4, a4.to("meta")], {}, ValueError,
                      r"^student\[1\] must be on the device of student\[0\]"))
    for student, teacher, knobs, error, message in cases:
        with pytest.raises(error, match=message):
            loss(student, teacher, **knobs)
    assert loss((a4, b4), (b4, a4)) == pytest.approx(loss([a4, b4], [b4, a4]))


def test_compiled_forward_and_backward_match_eager():
    """torch.compile with a zero row (the where-mask) and several pairs: the value and gradient of
    eager mode (the generic compile check runs one pair without a zero row)."""
    rng = np.random.default_rng(7)
    students = [rng.normal(size=(5, 3, 2)), rng.normal(size=(5, 4))]
    students[0][1] = 0.0
    teachers = [rng.normal(size=(5, 7)), rng.normal(size=(5, 2, 2))]
    results = []
    for fn in (tsp.sp_loss, torch.compile(tsp.sp_loss)):
        xs = [t(s, True) for s in students]
        value = fn(xs, [t(a) for a in teachers], convention="kdzoo")
        results.append((value.detach(), *torch.autograd.grad(value, xs)))
    torch.testing.assert_close(results[1], results[0], rtol=1e-12, atol=1e-14)
