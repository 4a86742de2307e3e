"""PKT tests the generic harness cannot state (the batches of two, the official coin of a pair and the
equal uniform rows of the antipodes are golden edge cases): the spec's partial rows of example A, the
official formula as the libraries write it, the refusal of a zero row with ε = 0, and the remaining
degenerate entries of pkt.md §5 in value and gradient."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdref.proof.sides import fd_gradient
from kdref.reference import pkt as ref
from kdref.registry import GOLDEN_DIR
from kdref.strategies.embeddings import embeddings
from kdref.torch import pkt as tpkt
from tests.helpers import assert_printed, t

GOLDEN = json.loads((GOLDEN_DIR / "pkt.json").read_text(encoding="utf-8"))
T_A, S_A, T_B, S_B = (np.asarray(GOLDEN["inputs"][k], dtype=np.float64) for k in ("T_A", "S_A", "T_B", "S_B"))
#: each side's kernel and conditionals, NumPy in and out
SIDES = {
    "reference": (ref.cosine_kernel, ref.conditional_probabilities),
    "torch": (lambda x, eps=0.0: tpkt.cosine_kernel(t(x), eps).numpy(),
              lambda K, include_self=False: tpkt.conditional_probabilities(t(K), include_self).numpy()),
}


def both_sides(student: np.ndarray, teacher: np.ndarray, **knobs) -> tuple[np.ndarray, np.ndarray]:
    """The loss from the reference and from torch (float64)."""
    return (np.asarray(ref.pkt_loss(student, teacher, **knobs)),
            tpkt.pkt_loss(t(student), t(teacher), **knobs).numpy())


def torch_gradient(student: np.ndarray, teacher: np.ndarray, dtype=torch.float64, **knobs) -> torch.Tensor:
    s = torch.tensor(student, dtype=dtype, requires_grad=True)
    (grad,) = torch.autograd.grad(tpkt.pkt_loss(s, torch.tensor(teacher, dtype=dtype), **knobs), s)
    return grad


@pytest.mark.parametrize("side", SIDES)
def test_intermediate_values_of_example_a(side):
    """pkt.md §8: the teacher kernel (0.5 among t0, t1, t2; 0.78867513 to t3), the paper's teacher rows
    0 and 3, the student's row 0, and the official teacher row 0 (self-pair kept, ε = 1e-7)."""
    golden, (kernel, conditionals) = GOLDEN["intermediates"], SIDES[side]
    K = kernel(T_A)
    assert_printed(K[[0, 0, 1], [1, 2, 2]], [golden["teacher_kernel_off_diagonal"]["among_t0_t1_t2"]] * 3)
    assert_printed(K[:3, 3], [golden["teacher_kernel_off_diagonal"]["to_t3"]] * 3)
    P = conditionals(K)
    assert_printed(P[[0, 3]], [golden["paper_teacher_rows"]["0"], golden["paper_teacher_rows"]["3"]])
    assert_printed(conditionals(kernel(S_A))[0], golden["paper_student_row_0"])
    assert_printed(conditionals(kernel(T_A, 1e-7), True)[0], golden["official_teacher_row_0"])


def library_formula(student: torch.Tensor, teacher: torch.Tensor, eps: float) -> torch.Tensor:
    """The official / library computation as pkt.md §3 describes it, written here in our own words:
    x/(sqrt(Σx²) + ε) with NaN → 0, (cos + 1)/2 with the diagonal kept, rows normalised over all k,
    mean over the N² entries of P·log((P + ε)/(Q + ε))."""

    def conditionals(z):
        z = torch.nan_to_num(z / (torch.sqrt(torch.sum(z**2, dim=1, keepdim=True)) + eps), nan=0.0)
        k = (z @ z.T + 1.0) / 2.0
        return k / k.sum(dim=1, keepdim=True)

    p, q = conditionals(teacher), conditionals(student)
    return torch.mean(p * torch.log((p + eps) / (q + eps)))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6).flatmap(lambda n: st.tuples(embeddings(n, 3, rectified=False), embeddings(n, 4))),
       st.sampled_from([("official", 1e-7), ("repdistiller", 1e-7), ("kdzoo", 1e-6)]))
def test_official_conventions_equal_the_library_formula(pair, convention):
    """The official code's formula (forward), zero rows included, equals kdref's "official" and "kdzoo"
    on both sides. Antipodal pairs are kept: ε caps the log there, and both compute the same ε."""
    (student, teacher), (name, eps) = pair, convention
    expected = library_formula(t(student), t(teacher), eps).item()
    for value in both_sides(student, teacher, convention=name):
        assert value == pytest.approx(expected, rel=1e-9, abs=1e-15)


@settings(max_examples=15, deadline=None)
@given(st.integers(2, 5).flatmap(lambda n: embeddings(n, 3, patterns=("zero_row",))),
       st.sampled_from(["student", "teacher"]))
def test_zero_row_with_eps_zero_is_refused_on_both_sides(x, which):
    """pkt.md §5: the cosine kernel of a zero vector does not exist; with ε = 0 (the paper, or any
    convention with eps=0) kdref raises a ValueError naming the argument instead of returning NaN."""
    args = {which: x, ("teacher" if which == "student" else "student"): np.ones((x.shape[0], 2))}
    for convention in ("paper", "official"):
        with pytest.raises(ValueError, match=f"^{which} must have no all-zero row"):
            ref.pkt_loss(**args, convention=convention, eps=0.0)
        with pytest.raises(ValueError, match=f"^{which} must have no all-zero row"):
            tpkt.pkt_loss(**{k: t(v) for k, v in args.items()}, convention=convention, eps=0.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("convention", ["official", "kdzoo"])
def test_zero_student_row_official_value_and_finite_gradient(convention, dtype):
    """pkt.md §5: under the official rule a zero row has x̂ = 0, so its kernel is ½ against every
    sample (the self-pair too); the value is the libraries'. Its gradient is the 1/ε branch of
    x/(‖x‖ + ε) — finite, about 1/ε times the upstream gradient — where the libraries give NaN. It
    equals a finite difference of the reference with a step far below ε."""
    student = S_B.copy()
    student[2] = 0.0
    eps = ref.PKT_LOSS.resolve(convention)["eps"]
    kernel = ref.cosine_kernel(student, eps)
    assert np.all(kernel[2] == 0.5) and np.all(kernel[:, 2] == 0.5)
    expected = library_formula(t(student), t(T_B), eps).item()
    assert ref.pkt_loss(student, T_B, convention=convention) == pytest.approx(expected, rel=1e-12)
    grad = torch_gradient(student, T_B, dtype=dtype, convention=convention)
    assert torch.isfinite(grad).all()
    fd = fd_gradient(lambda **kw: ref.pkt_loss(**kw, convention=convention), {"student": student, "teacher": T_B},
                     "student", h=1e-12)[2]
    np.testing.assert_allclose(grad[2].double().numpy(), fd, rtol=1e-4 if dtype == torch.float64 else 1e-2)
    assert 1e-3 / eps < float(grad[2].abs().max()) < 10 / eps


def test_antipodes():
    """pkt.md §5: an antipodal student pair has K = 0. Where the teacher puts mass p > 0 on it the
    paper's KL is +∞ (returned as such on both sides); the official ε caps it at about p·log(p/ε).
    An anchor whose every neighbour is its exact antipode has the 0/0 conditional; kdref makes it
    uniform over the neighbours, on both sides (with such an anchor in both networks the paper's
    term is 0: a golden edge case), with a finite gradient."""
    student, teacher = np.array([[1.0], [-1.0], [2.0]]), np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert all(value == np.inf for value in both_sides(student, teacher))
    reference, torch_value = both_sides(student, teacher, convention="official")
    assert np.isfinite(reference) and torch_value == pytest.approx(reference, rel=1e-12)
    p = ref.conditional_probabilities(ref.cosine_kernel(teacher, 1e-7), True)[0, 1]
    assert reference * 9 > p * np.log(p / 1e-7) / 2  # the capped term dominates the mean over N² = 9
    student, teacher = np.array([[1.0], [-1.0], [-2.0]]), np.array([[1.0, 0.0], [-1.0, 0.0], [-3.0, 0.0]])
    for kernel, conditionals in SIDES.values():
        np.testing.assert_array_equal(conditionals(kernel(student))[0], [0.0, 0.5, 0.5])
    assert torch.isfinite(torch_gradient(student, teacher)).all()


def test_batch_of_one():
    """pkt.md §5: N = 1 officially gives 0 (P = Q = 1) with zero gradient: exactly 0 in the reference,
    rounding in torch (the paper's refusal of N = 1 is generated from its declaration; N = 2 is golden)."""
    for convention in ("official", "kdzoo"):
        reference, torch_value = both_sides(S_A[:1], T_A[:1], convention=convention)
        assert reference == 0.0 and abs(torch_value) < 1e-15  # torch: log(K + εs) − log s − log(1 + ε), rounding
        grad = torch_gradient(S_A[:1], T_A[:1], convention=convention)
        torch.testing.assert_close(grad, torch.zeros_like(grad), rtol=0, atol=1e-15)


@pytest.mark.parametrize("n", [3, 5])
def test_collapsed_batch_gives_uniform_conditionals(n):
    """pkt.md §5: identical features give K = 1 everywhere, so P is uniform: 1/(N − 1) off the
    diagonal in the paper, 1/N with the self-pairs (ε = 0)."""
    x = np.tile([[0.3, -1.2, 2.0]], (n, 1))
    for kernel, conditionals in SIDES.values():
        np.testing.assert_allclose(conditionals(kernel(x)), (1 - np.eye(n)) / (n - 1), rtol=1e-15)
        np.testing.assert_allclose(conditionals(kernel(x), True), np.full((n, n), 1 / n), rtol=1e-15)


@pytest.mark.parametrize("factor", [1e-200, 1e200])
@pytest.mark.parametrize("convention", ["paper", "official"])
def test_rows_whose_squares_under_or_overflow_keep_their_direction(factor, convention):
    """The norm is taken of each row scaled by its largest entry: a row of size 1e-200 or 1e200 (whose
    squares leave the float64 range) keeps its direction on both sides. For the paper that is plain
    scale invariance; officially 1e-200 is far below ε, so the row acts as a zero row, and at 1e200
    ε is negligible, as it is at 1e10."""
    student, like = S_B.copy(), S_B.copy()
    student[1] *= factor
    like[1] *= 1.0 if convention == "paper" else 1e10 if factor > 1 else 0.0
    expected = ref.pkt_loss(like, T_B, convention=convention)
    for value in both_sides(student, T_B, convention=convention):
        assert value == pytest.approx(expected, rel=1e-9)
    if convention == "paper":  # in float32 the squares of 1e-20 underflow; the paper's value is unchanged
        s32, t32 = torch.tensor(S_B, dtype=torch.float32), torch.tensor(T_B, dtype=torch.float32)
        small = torch.tensor(S_B * 1e-20, dtype=torch.float32)
        assert tpkt.pkt_loss(small, t32).item() == pytest.approx(tpkt.pkt_loss(s32, t32).item(), rel=1e-5)
