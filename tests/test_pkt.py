"""PKT tests the generic harness cannot state: the spec's intermediate values (kernel entries and
conditionals of example A), the degenerate entries of pkt.md §5 in value and gradient (zero rows,
antipodes, N = 1 and 2, a collapsed batch, rows whose squares under- or overflow), the official
formula as the libraries write it, and checks of the knobs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdref.reference import pkt as ref
from kdref.registry import GOLDEN_DIR
from kdref.strategies.embeddings import embeddings
from kdref.torch import pkt as tpkt
from tests.helpers import assert_printed, t

GOLDEN = json.loads((GOLDEN_DIR / "pkt.json").read_text(encoding="utf-8"))
T_A, S_A, T_B, S_B = (np.asarray(GOLDEN["inputs"][k], dtype=np.float64) for k in ("T_A", "S_A", "T_B", "S_B"))
CONVENTIONS = ("paper", "official", "kdzoo")


def both_sides(student: np.ndarray, teacher: np.ndarray, **knobs) -> tuple[np.ndarray, np.ndarray]:
    """The loss from the reference and from torch (float64)."""
    return (np.asarray(ref.pkt_loss(student, teacher, **knobs)),
            tpkt.pkt_loss(t(student), t(teacher), **knobs).numpy())


def torch_gradient(student: np.ndarray, teacher: np.ndarray, dtype=torch.float64, **knobs) -> torch.Tensor:
    s = torch.tensor(student, dtype=dtype, requires_grad=True)
    (grad,) = torch.autograd.grad(tpkt.pkt_loss(s, torch.tensor(teacher, dtype=dtype), **knobs), s)
    return grad


@pytest.mark.parametrize("side", ["reference", "torch"])
def test_intermediate_values_of_example_a(side):
    """pkt.md §8: the teacher kernel (0.5 among t0, t1, t2; 0.78867513 to t3), the paper's teacher rows
    0 and 3, the student's row 0, and the official teacher row 0 (self-pair kept, ε = 1e-7)."""
    golden = GOLDEN["intermediates"]
    module = ref if side == "reference" else tpkt

    def run(fn, x, *args):
        out = fn(x if side == "reference" else t(x), *args)
        return np.asarray(out if side == "reference" else out.numpy())

    kernel = run(module.cosine_kernel, T_A)
    assert_printed(kernel[[0, 0, 1], [1, 2, 2]], [golden["teacher_kernel_off_diagonal"]["among_t0_t1_t2"]] * 3)
    assert_printed(kernel[:3, 3], [golden["teacher_kernel_off_diagonal"]["to_t3"]] * 3)
    P = module.conditional_probabilities(kernel if side == "reference" else t(kernel), False)
    P = np.asarray(P if side == "reference" else P.numpy())
    assert_printed(P[0], golden["paper_teacher_rows"]["0"])
    assert_printed(P[3], golden["paper_teacher_rows"]["3"])
    Q = module.conditional_probabilities(run(module.cosine_kernel, S_A) if side == "reference"
                                         else t(run(module.cosine_kernel, S_A)), False)
    assert_printed(np.asarray(Q if side == "reference" else Q.numpy())[0], golden["paper_student_row_0"])
    official = module.conditional_probabilities(
        run(module.cosine_kernel, T_A, 1e-7) if side == "reference" else t(run(module.cosine_kernel, T_A, 1e-7)), True)
    assert_printed(np.asarray(official if side == "reference" else official.numpy())[0],
                   golden["official_teacher_row_0"])


def library_formula(student: torch.Tensor, teacher: torch.Tensor, eps: float) -> torch.Tensor:
    """The official / library computation as pkt.md §3 describes it, written here in our own words:
    x/(sqrt(Σx²) + ε) with NaN → 0, (cos + 1)/2 with the diagonal kept, rows normalised over all k,
    mean over the N² entries of P·log((P + ε)/(Q + ε))."""

    def conditionals(z):
        z = z / (torch.sqrt(torch.sum(z**2, dim=1, keepdim=True)) + eps)
        z = torch.nan_to_num(z, nan=0.0)
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
    student, teacher = pair
    name, eps = convention
    expected = library_formula(t(student), t(teacher), eps).item()
    reference, torch_value = both_sides(student, teacher, convention=name)
    assert reference == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert torch_value == pytest.approx(expected, rel=1e-9, abs=1e-15)


@settings(max_examples=15, deadline=None)
@given(st.integers(2, 5).flatmap(lambda n: embeddings(n, 3, patterns=("zero_row",))),
       st.sampled_from(["student", "teacher"]))
def test_zero_row_with_eps_zero_is_refused_on_both_sides(x, which):
    """pkt.md §5: the cosine kernel of a zero vector does not exist; with ε = 0 (the paper, or any
    convention with eps=0) kdref raises a ValueError naming the argument instead of returning NaN."""
    other = np.ones((x.shape[0], 2))
    args = {"student": x, "teacher": other} if which == "student" else {"student": other, "teacher": x}
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
    h = 1e-12
    fd = np.array([(ref.pkt_loss(student + h * e, T_B, convention=convention)
                    - ref.pkt_loss(student - h * e, T_B, convention=convention)) / (2 * h)
                   for e in np.eye(3)[:, None, :] * (np.arange(6) == 2)[None, :, None]])
    np.testing.assert_allclose(grad[2].double().numpy(), fd, rtol=1e-4 if dtype == torch.float64 else 1e-2)
    assert 1e-3 / eps < float(grad[2].abs().max()) < 10 / eps


def test_antipodal_student_pair():
    """pkt.md §5: an antipodal student pair has K = 0. Where the teacher puts mass p > 0 on it the
    paper's KL is +∞ (returned as such on both sides); the official ε caps it at about p·log(p/ε)."""
    student = np.array([[1.0], [-1.0], [2.0]])
    teacher = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    for value in both_sides(student, teacher):
        assert value == np.inf
    reference, torch_value = both_sides(student, teacher, convention="official")
    assert np.isfinite(reference) and torch_value == pytest.approx(reference, rel=1e-12)
    p = ref.conditional_probabilities(ref.cosine_kernel(teacher, 1e-7), True)[0, 1]
    assert reference * 9 > p * np.log(p / 1e-7) / 2  # the capped term dominates the mean over N² = 9


def test_batch_of_two_is_zero_even_when_antipodal():
    """pkt.md §5: with N = 2 the paper's loss is 0 (each anchor has one neighbour, p = q = 1), also for an
    antipodal pair, where kdref takes the 0/0 conditional as its limit 1; the gradient is 0."""
    student = np.array([[1.0, 0.0], [-3.0, 0.0]])
    teacher = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 2.0]])
    assert both_sides(student, teacher) == (0.0, 0.0)
    grad = torch_gradient(student, teacher)
    assert torch.equal(grad, torch.zeros_like(grad))


def test_official_batch_of_two_is_not_zero():
    """pkt.md §3: with the self-pairs row i is [1, k]/(1 + k), so the official loss of a pair is the
    KL of two such coins, averaged over the N² = 4 entries (ε = 0 here)."""
    student = np.array([[1.0, 0.0], [1.0, 1.0]])
    teacher = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    k_s, k_t = (np.sqrt(0.5) + 1) / 2, 0.5
    a, b = 1 / (1 + k_t), 1 / (1 + k_s)
    coin = a * np.log(a / b) + (1 - a) * np.log((1 - a) / (1 - b))
    for value in both_sides(student, teacher, convention="official", eps=0.0):
        assert value == pytest.approx(2 * coin / 4, rel=1e-12)


def test_every_neighbour_antipodal_gives_the_uniform_row():
    """An anchor whose every neighbour is its exact antipode has the 0/0 conditional; kdref makes it
    uniform over the neighbours (which then all point the same way), on both sides."""
    K = ref.cosine_kernel(np.array([[1.0], [-1.0], [-2.0]]))
    expected = np.array([0.0, 0.5, 0.5])
    np.testing.assert_array_equal(ref.conditional_probabilities(K)[0], expected)
    np.testing.assert_array_equal(tpkt.conditional_probabilities(t(K)).numpy()[0], expected)


def test_every_neighbour_antipodal_in_the_loss():
    """The uniform rule inside the loss (torch never forms Q): sample 0 has only antipodal neighbours
    on both sides, so p_{·|0} and q_{·|0} are both uniform and the paper's loss is 0 — the uniform
    rows must be equal, not merely row-stochastic — with a finite gradient."""
    student = np.array([[1.0], [-1.0], [-2.0]])
    teacher = np.array([[1.0, 0.0], [-1.0, 0.0], [-3.0, 0.0]])
    for value in both_sides(student, teacher, reduction="none"):
        np.testing.assert_array_equal(value, np.zeros(3))
    assert torch.isfinite(torch_gradient(student, teacher)).all()


@pytest.mark.parametrize("n", [3, 5])
def test_collapsed_batch_gives_uniform_conditionals(n):
    """pkt.md §5: identical features give K = 1 everywhere, so P is uniform: 1/(N − 1) off the
    diagonal in the paper, 1/N with the self-pairs (ε = 0)."""
    x = np.tile([[0.3, -1.2, 2.0]], (n, 1))
    for module, z in ((ref, x), (tpkt, t(x))):
        paper = np.asarray(module.conditional_probabilities(module.cosine_kernel(z), False))
        official = np.asarray(module.conditional_probabilities(module.cosine_kernel(z), True))
        np.testing.assert_allclose(paper, (1 - np.eye(n)) / (n - 1), rtol=1e-15)
        np.testing.assert_allclose(official, np.full((n, n), 1 / n), rtol=1e-15)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_batch_of_one(convention):
    """pkt.md §5: N = 1 officially gives 0 (P = Q = 1) with zero gradient; the paper needs two samples."""
    student, teacher = S_A[:1], T_A[:1]
    if convention == "paper":
        for fn, args in ((ref.pkt_loss, (student, teacher)), (tpkt.pkt_loss, (t(student), t(teacher)))):
            with pytest.raises(ValueError, match=r"^student must have at least 2 samples"):
                fn(*args, convention=convention)
        return
    reference, torch_value = both_sides(student, teacher, convention=convention)
    assert reference == 0.0 and abs(torch_value) < 1e-15  # torch: log(K + εs) − log s − log(1 + ε), rounding
    grad = torch_gradient(student, teacher, convention=convention)
    torch.testing.assert_close(grad, torch.zeros_like(grad), rtol=0, atol=1e-15)


@pytest.mark.parametrize("factor", [1e-200, 1e200])
@pytest.mark.parametrize("convention", ["paper", "official"])
def test_rows_whose_squares_under_or_overflow_keep_their_direction(factor, convention):
    """The norm is taken of each row scaled by its largest entry: a row of size 1e-200 or 1e200 (whose
    squares leave the float64 range) keeps its direction on both sides. For the paper that is plain
    scale invariance; officially 1e-200 is far below ε, so the row acts as a zero row, and at 1e200
    ε is negligible, as it is at 1e10."""
    student = S_B.copy()
    student[1] *= factor
    reference, torch_value = both_sides(student, T_B, convention=convention)
    if convention == "paper":
        expected = ref.pkt_loss(S_B, T_B, convention=convention)
    elif factor > 1:
        large = S_B.copy()
        large[1] *= 1e10
        expected = ref.pkt_loss(large, T_B, convention=convention)
    else:
        zero = S_B.copy()
        zero[1] = 0.0
        expected = ref.pkt_loss(zero, T_B, convention=convention)
    assert reference == pytest.approx(expected, rel=1e-9)
    assert torch_value == pytest.approx(expected, rel=1e-9)


def test_float32_rows_of_size_1e_minus_20_keep_their_direction():
    """In float32 the squares of 1e-20 underflow; the paper's value is unchanged by the scale."""
    small = torch.tensor(S_B * 1e-20, dtype=torch.float32)
    plain = tpkt.pkt_loss(torch.tensor(S_B, dtype=torch.float32), torch.tensor(T_B, dtype=torch.float32))
    assert tpkt.pkt_loss(small, torch.tensor(T_B, dtype=torch.float32)).item() == pytest.approx(plain.item(), rel=1e-5)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_autocast_with_float32_inputs_accumulates_in_float32(convention):
    """Under bfloat16 autocast the Gram products run in float32: the value is the float32 one."""
    s, x = torch.tensor(S_B, dtype=torch.float32), torch.tensor(T_B, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = tpkt.pkt_loss(s, x, convention=convention)
    assert inside.dtype == torch.float32
    assert inside.item() == pytest.approx(tpkt.pkt_loss(s, x, convention=convention).item(), rel=1e-6)


def test_teacher_gets_no_gradient_and_extra_axes_are_flattened():
    student = t(S_B.reshape(6, 3, 1), requires_grad=True)
    teacher = t(T_B, requires_grad=True)
    loss = tpkt.pkt_loss(student, teacher)
    assert loss.item() == pytest.approx(1.5716651, abs=5e-8)
    loss.backward()
    assert teacher.grad is None and student.grad.shape == (6, 3, 1)


@pytest.mark.parametrize(("knobs", "error", "message"), [
    ({"eps": -1e-7}, ValueError, "^eps must be a finite number"),
    ({"eps": float("nan")}, ValueError, "^eps must be a finite number"),
    ({"eps": "1e-7"}, TypeError, "^eps must be a real number"),
    ({"include_self": "yes"}, ValueError, "include_self must be one of"),
    ({"reduction": "batchmean"}, ValueError, "reduction must be one of"),
    ({"kernel": "gaussian"}, ValueError, "unknown knob.*kernel"),
])
def test_bad_knobs(knobs, error, message):
    for fn, args in ((ref.pkt_loss, (S_A, T_A)), (tpkt.pkt_loss, (t(S_A), t(T_A)))):
        with pytest.raises(error, match=message):
            fn(*args, **knobs)


def test_explicit_knobs_override_the_convention():
    """"official" with the paper's knobs is the paper; the paper with the official's is official."""
    paper = ref.pkt_loss(S_B, T_B)
    assert ref.pkt_loss(S_B, T_B, convention="official", include_self=False, eps=0.0, reduction="sum") == paper
    official = tpkt.pkt_loss(t(S_B), t(T_B), convention="official").item()
    assert tpkt.pkt_loss(t(S_B), t(T_B), include_self=True, eps=1e-7, reduction="mean").item() == official
