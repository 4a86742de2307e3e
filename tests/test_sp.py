"""SP tests the generic harness cannot state: the spec's values that are not a float64 loss (the
similarity matrices, the float32 zero-row value and the libraries' exploding gradient), the
degenerate cases of sp.md §5 in value and gradient, what is *not* an invariance, float16 inputs,
the trace form's limits, and the checks of the lists and knobs."""

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


def test_similarity_matrices_of_example_a():
    """sp.md §8: the hand-check matrices G_T and G_S of example A, on both sides."""
    golden = GOLDEN["similarity"]
    assert_printed(ref.similarity_matrix(T_A), golden["G_T"])
    assert_printed(ref.similarity_matrix(S_A), golden["G_S"])
    assert_printed(tsp.similarity_matrix(t(T_A)).numpy(), golden["G_T"])
    assert_printed(tsp.similarity_matrix(t(S_A)).numpy(), golden["G_S"])


def test_zero_row_value_is_the_libraries_float32_value():
    """sp.md §5: example A with student row 2 zeroed gives 0.20800608 in float32 (RepDistiller's
    value: the zero row of G stays 0), whatever the gradient rule; float64 agrees within float32's
    rounding of the inputs' products."""
    golden = GOLDEN["zero_row"]
    for zero_rows in ("mask_grad", "keep"):
        value = tsp.sp_loss([t(S_A_ZERO, dtype=torch.float32)], [t(T_A, dtype=torch.float32)], zero_rows=zero_rows)
        assert value.dtype == torch.float32
        assert_printed(value.item(), golden["value_float32"])
        assert ref.sp_loss([S_A_ZERO], [T_A], zero_rows=zero_rows) == pytest.approx(float(golden["value_float32"]),
                                                                                   rel=1e-7)
    assert ref.similarity_matrix(S_A_ZERO)[ZERO_ROW].tolist() == [0.0] * 4


def test_zero_row_clamp_gradient_explodes_as_the_libraries():
    """sp.md §5: the libraries' clamp, F.normalize(eps=1e-12), has Jacobian I/ε at the zero row:
    max |grad| ≈ 7.9e10 in float32 on example A with row 2 zeroed."""
    (grad,) = torch_grad([S_A_ZERO], [T_A], dtype=torch.float32, zero_rows="keep")
    assert np.all(np.isfinite(grad))
    assert_printed(float(f"{np.max(np.abs(grad)):.2g}"), GOLDEN["zero_row"]["max_abs_grad_clamp_float32"])
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
    def moved(h):
        s = S_A_ZERO.copy()
        s[ZERO_ROW, 0] = h
        return ref.sp_loss([s], [T_A])

    jump = abs(moved(1e-9) - moved(0.0))
    assert jump > 1e-2


@pytest.mark.parametrize("side", ["reference", "torch"])
def test_batch_of_one_is_zero_with_zero_gradient(side):
    """sp.md §5: b = 1 gives G = [1] for both networks, so the loss is 0 (gradient 0) — exactly, on
    every kernel: see :func:`test_one_element_rows_normalise_to_exactly_one`."""
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(size=(1, 3)), rng.normal(size=(1, 5))
    if side == "reference":
        assert ref.similarity_matrix(student).tolist() == [[1.0]]
        assert ref.sp_loss([student], [teacher]) == 0.0
        return
    (grad,) = torch_grad([student], [teacher])
    assert tsp.sp_loss([t(student)], [t(teacher)]).item() == 0.0
    assert np.all(grad == 0.0)


@pytest.mark.parametrize("side", ["reference", "torch"])
@pytest.mark.parametrize("p", [1, 2])
def test_one_element_rows_normalise_to_exactly_one(side, p):
    """Why b = 1 is exact whatever the kernels: the 1×1 Gram ‖q‖² = x comes out of the matmul
    rounded either way (its summation order, FMA or not, depends on the CPU's vector width and the
    BLAS), but its row [x] has norm |x| exactly — |x| for p = 1, and √fl(x²) = |x| in binary
    floating point for p = 2 (x² neither overflows nor underflows here) — and x / |x| = 1 is exact.
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


def test_batch_of_two_is_informative():
    """sp.md §5: at b = 2 the rows [‖q_1‖², q_1ᵀq_2] are normalised, so the loss is not trivially 0."""
    student, teacher = np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[1.0, 0.0], [0.0, 1.0]])
    assert ref.sp_loss([student], [teacher]) > 0.01
    assert tsp.sp_loss([t(student)], [t(teacher)]).item() == pytest.approx(ref.sp_loss([student], [teacher]),
                                                                          rel=1e-12)


@pytest.mark.parametrize("b", [2, 3, 5])
def test_collapsed_batch_rows_are_uniform(b):
    """sp.md §5: all rows identical makes every row of G equal to b^(−1/2) · 1 (both sides)."""
    q = np.tile(np.array([[0.3, -2.0, 1.5]]), (b, 1))
    expected = np.full((b, b), b ** -0.5)
    np.testing.assert_allclose(ref.similarity_matrix(q), expected, rtol=1e-15)
    np.testing.assert_allclose(tsp.similarity_matrix(t(q)).numpy(), expected, rtol=1e-15)


def test_all_zero_teacher_layer():
    """A teacher layer that is all zero (dead post-ReLU map) has G_T = 0, so each student row adds
    its squared norm 1: the term is b / b² = 1/b, with a finite gradient of 0 (‖G_S[i]‖ = 1 is constant)."""
    rng = np.random.default_rng(3)
    student, teacher = rng.normal(size=(4, 3)), np.zeros((4, 6))
    assert ref.sp_loss([student], [teacher]) == pytest.approx(0.25, rel=1e-14)
    assert tsp.sp_loss([t(student)], [t(teacher)]).item() == pytest.approx(0.25, rel=1e-14)
    (grad,) = torch_grad([student], [teacher])
    np.testing.assert_allclose(grad, 0.0, atol=1e-15)


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
    student = 3.0 + rng.uniform(0, 1, size=(4, 16384))
    teacher = 3.0 + rng.uniform(0, 1, size=(4, 8192))
    s16, t16 = torch.tensor(student, dtype=torch.float16), torch.tensor(teacher, dtype=torch.float16)
    naive_gram = s16 @ s16.T
    assert not torch.isfinite(naive_gram).all()
    value = tsp.sp_loss([s16], [t16])
    assert value.dtype == torch.float32
    expected = ref.sp_loss([s16.double().numpy()], [t16.double().numpy()])
    assert value.item() == pytest.approx(expected, rel=1e-4, abs=1e-8)


def test_float32_inputs_under_autocast_keep_float32_products():
    """Inside an autocast region the Gram products still run in float32: the value is the one
    computed without autocast, not a bfloat16 approximation."""
    rng = np.random.default_rng(5)
    student = [t(rng.normal(size=(8, 4, 3, 3)), dtype=torch.float32), t(rng.normal(size=(8, 20)), dtype=torch.float32)]
    teacher = [t(rng.normal(size=(8, 7, 3, 3)), dtype=torch.float32), t(rng.normal(size=(8, 3)), dtype=torch.float32)]
    plain = tsp.sp_loss(student, teacher)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        under_autocast = tsp.sp_loss(student, teacher)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, plain, rtol=1e-6, atol=1e-7)


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
def test_knob_checks(side):
    """p is 1 or 2, eps > 0, the reductions are named, and the trace form needs p = 2, the
    mask_grad rule and float64 inputs."""
    loss = ref.sp_loss if side == "reference" else tsp.sp_loss
    s, tt = ([S_A], [T_A]) if side == "reference" else ([t(S_A)], [t(T_A)])
    s32 = [S_A.astype(np.float32)] if side == "reference" else [t(S_A, dtype=torch.float32)]
    tt32 = [T_A.astype(np.float32)] if side == "reference" else [t(T_A, dtype=torch.float32)]
    cases = [
        ({"p": 3}, ValueError, "p must be one of"),
        ({"eps": 0.0}, ValueError, "eps must be > 0"),
        ({"eps": "1"}, TypeError, "eps must be a real number"),
        ({"reduction": "mean"}, ValueError, "reduction must be one of"),
        ({"layer_reduction": "max"}, ValueError, "layer_reduction must be one of"),
        ({"zero_rows": "drop"}, ValueError, "zero_rows must be one of"),
        ({"gamma": 3000.0}, ValueError, "unknown knob.*gamma"),
        ({"trace_form": 1}, ValueError, "^trace_form must be one of False, True"),
        ({"trace_form": True, "p": 1}, ValueError, "^trace_form=True needs p=2"),
        ({"trace_form": True, "convention": "torchdistill"}, ValueError, "^trace_form=True needs p=2"),
        ({"trace_form": True, "zero_rows": "keep"}, ValueError, "^trace_form=True supports"),
    ]
    for knobs, error, message in cases:
        with pytest.raises(error, match=message):
            loss(s, tt, **knobs)
    with pytest.raises(ValueError, match=r"^trace_form=True needs float64"):
        loss(s32, tt32, trace_form=True)


@pytest.mark.parametrize("side", ["reference", "torch"])
def test_layer_list_checks(side):
    """One teacher map per student map; every student map with the batch size and dtype of
    student[0], every teacher map with those of its student map (widths free); each message opens
    with the offending argument."""
    loss = ref.sp_loss if side == "reference" else tsp.sp_loss
    conv = (lambda x: x) if side == "reference" else t
    a4, b4, a5 = conv(np.ones((4, 3))), conv(np.ones((4, 2, 2))), conv(np.ones((5, 3)))
    a4_32 = np.ones((4, 3), np.float32) if side == "reference" else torch.ones(4, 3)
    cases = [
        ([a4, b4], [a4], ValueError, r"^teacher must hold as many arrays as student \(2\), got 1"),
        ([a4, a5], [a4, a5], ValueError, r"^student\[1\] must have the batch size of student\[0\]"),
        ([a4, a5], [a4, a4], ValueError, r"^teacher\[1\] must have the batch size of student\[1\]"),
        ([a4, b4], [a4, a5], ValueError, r"^teacher\[1\] must have the batch size of student\[1\]"),
        ([a4, a4_32], [a4, a4_32], TypeError, r"^student\[1\] must have the dtype of student\[0\]"),
        ([a4], [a4_32], TypeError, r"^teacher\[0\] must have the dtype of student\[0\]"),
        ((a4,), a4, TypeError, r"^teacher must be a list or tuple"),
    ]
    if side == "torch":
        cases.append(([a4], [a4.to("meta")], ValueError, r"^teacher\[0\] must be on the device of student\[0\]"))
        cases.append(([a4, a4.to("meta")], [a4, a4.to("meta")], ValueError,
                      r"^student\[1\] must be on the device of student\[0\]"))
    for student, teacher, error, message in cases:
        with pytest.raises(error, match=message):
            loss(student, teacher)
    assert loss((a4, b4), (b4, a4)) == pytest.approx(loss([a4, b4], [b4, a4]))  # tuples are lists


def test_teacher_is_detached():
    """The teacher is a constant: no gradient reaches it, even when it requires one."""
    student, teacher = t(S_A, requires_grad=True), t(T_A, requires_grad=True)
    value = tsp.sp_loss([student], [teacher])
    grads = torch.autograd.grad(value, [student, teacher], allow_unused=True)
    assert grads[1] is None or bool((grads[1] == 0).all())


def test_compiled_forward_and_backward_match_eager():
    """torch.compile with a zero row (the where-mask) and several pairs: the value and gradient of
    eager mode."""
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
