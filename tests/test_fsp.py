"""FSP specifics the generic harness cannot say: the spec's intermediate values (G, pooled G),
the edge cases of fsp.md §5, and the bad inputs of multi-pair calls (list lengths, channel
counts, batch, spatial sizes with no rule), on both sides."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kdref.reference import fsp as ref
from kdref.torch import fsp as tfsp

GOLDEN = json.loads((Path(__file__).parents[1] / "kdref" / "golden" / "fsp.json").read_text())
MAPS = {name: np.asarray(value, dtype=np.float64) for name, value in GOLDEN["inputs"].items()}


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


# fsp.md §7 prints G_S and G_T of example 1; every entry is a multiple of 1/4, so exact in binary.
G_S = [[[0.75, 0.75, 0.75], [0.25, 0.25, 0]], [[0.25, 1, 0], [0.25, 0.75, 0.5]]]
G_T = [[[1.25, 0.75, 0.5], [0.5, 0.25, 0.25]], [[0.75, 0.75, 0.5], [1.25, 0.75, 1]]]


@pytest.mark.parametrize(("first", "second", "expected"), [("S1", "S2", G_S), ("T1", "T2", G_T)])
def test_example_1_fsp_matrices_are_exact(first, second, expected):
    """fsp.md §7 example 1: G_S and G_T, exactly (dyadic values), on both sides."""
    np.testing.assert_array_equal(ref.fsp_matrix(MAPS[first], MAPS[second]), expected)
    np.testing.assert_array_equal(tfsp.fsp_matrix(_t(MAPS[first]), _t(MAPS[second])).numpy(), expected)


@pytest.mark.parametrize(("pool", "g_s", "g_t"), [("avg", 0.84375, 0.53125), ("max", 2.125, 1.625)])
def test_example_2_pooled_fsp_matrices(pool, g_s, g_t):
    """fsp.md §7 example 2: the 4×4 first map pooled to 2×2 gives G_S and G_T as printed."""
    for first, second, expected in (("A4", "B2", g_s), ("At4", "Bt2", g_t)):
        pooled = ref.match_spatial_pair(MAPS[first], MAPS[second], pool)
        assert ref.fsp_matrix(*pooled).item() == expected
        pooled = tfsp.match_spatial_pair(_t(MAPS[first]), _t(MAPS[second]), pool)
        assert tfsp.fsp_matrix(*pooled).item() == expected


@pytest.mark.parametrize("convention", ["paper", "kdzoo", "repdistiller", "torchdistill"])
def test_the_larger_map_is_pooled_whichever_it_is(convention):
    """fsp.md §5: kdref pools whichever map is larger (KD-Zoo itself raises when the second map is
    the larger); with the roles of the maps swapped, the squared distances are unchanged."""
    args = [[MAPS["A4"]], [MAPS["B2"]], [MAPS["At4"]], [MAPS["Bt2"]]]
    swapped = [args[1], args[0], args[3], args[2]]
    assert ref.fsp_loss(*swapped, convention=convention) == pytest.approx(
        ref.fsp_loss(*args, convention=convention), rel=1e-12)
    got = tfsp.fsp_loss(*[[_t(x) for x in xs] for xs in swapped], convention=convention)
    assert got.item() == pytest.approx(ref.fsp_loss(*swapped, convention=convention), rel=1e-12)


def test_non_square_maps_with_non_integer_ratios():
    """fsp.md §5: non-square maps and non-integer ratios use PyTorch's adaptive windows (5×7 and
    3×2 meet at 3×2; 4×2 and 2×5 meet at 2×2, each map pooled in one direction)."""
    rng = np.random.default_rng(0)
    shapes = [((2, 3, 5, 7), (2, 2, 3, 2)), ((2, 1, 4, 2), (2, 3, 2, 5))]
    student = [[rng.standard_normal(s) for s, _ in shapes], [rng.standard_normal(s) for _, s in shapes]]
    teacher = [[rng.standard_normal(s) for s, _ in shapes], [rng.standard_normal(s) for _, s in shapes]]
    for convention in ("paper", "kdzoo", "repdistiller", "torchdistill"):
        expected = ref.fsp_loss(*student, *teacher, convention=convention)
        got = tfsp.fsp_loss(*[[_t(x) for x in xs] for xs in (*student, *teacher)], convention=convention)
        assert got.item() == pytest.approx(expected, rel=1e-12)


def test_zero_maps_and_a_single_position():
    """fsp.md §5: zero features give G = 0 and a zero loss, no division issue; 1×1 maps work."""
    zero = np.zeros((2, 3, 1, 1))
    one = np.ones((2, 2, 1, 1))
    for convention in ("paper", "kdzoo", "repdistiller", "torchdistill"):
        assert ref.fsp_loss([zero], [one], [zero], [one], convention=convention) == 0.0
        assert tfsp.fsp_loss([_t(zero)], [_t(one)], [_t(zero)], [_t(one)], convention=convention).item() == 0.0
    # a single position: G is the outer product of the two channel vectors
    f1, f2 = np.array([[[[2.0]], [[-1.0]]]]), np.array([[[[3.0]]]])
    np.testing.assert_array_equal(ref.fsp_matrix(f1, f2), [[[6.0], [-3.0]]])


def test_torchdistill_gradient_at_a_zero_column_is_zero_not_nan():
    """fsp.md §5: the column norm at a zero column takes the 0 subgradient (as PyTorch's norm)."""
    s1 = _t(MAPS["S1"]).requires_grad_(True)
    loss = tfsp.fsp_loss([s1], [_t(MAPS["S2"])], [_t(MAPS["S1"])], [_t(MAPS["S2"])], convention="torchdistill")
    (gradient,) = torch.autograd.grad(loss, s1)
    assert loss.item() == 0.0
    assert torch.equal(gradient, torch.zeros_like(gradient))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_accumulate_in_float32(dtype):
    """Half-precision maps give a float32 loss (the products and sums run in float32)."""
    args = [[_t(MAPS[name]).to(dtype)] for name in ("S1", "S2", "T1", "T2")]
    value = tfsp.fsp_loss(*args)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(1.125, rel=1e-6)


def test_weights_per_pair_and_pair_reductions():
    """λ_i per pair; the paper sums the pairs, KD-Zoo averages them (§6 table)."""
    pair = [[MAPS["S1"]], [MAPS["S2"]], [MAPS["T1"]], [MAPS["T2"]]]
    two = [xs * 2 for xs in pair]
    assert ref.fsp_loss(*two, weights=[1.0, 3.0]) == pytest.approx(4 * 1.125)
    assert ref.fsp_loss(*two, weights=0.5) == pytest.approx(1.125)
    assert ref.fsp_loss(*two, weights=[1.0, 3.0], convention="kdzoo") == pytest.approx(2 * 0.1875)
    got = tfsp.fsp_loss(*[[_t(x) for x in xs] for xs in two], weights=[1.0, 3.0])
    assert got.item() == pytest.approx(4 * 1.125)


# -- bad input: what the generic generator does not build for lists of maps -------------------


def _bad_cases():
    s1, s2, t1, t2 = (MAPS[k] for k in ("S1", "S2", "T1", "T2"))
    base = {"student_first": [s1, s1], "student_second": [s2, s2], "teacher_first": [t1, t1],
            "teacher_second": [t2, t2]}
    return [
        ("teacher_first shorter", {**base, "teacher_first": [t1]}, ValueError, "teacher_first"),
        ("student_second[1] another batch", {**base, "student_second": [s2, s2[:1]]}, ValueError,
         r"student_second\[1\]"),
        ("every list's pair 1 another batch than pair 0", {k: [v[0], v[1][:1]] for k, v in base.items()}, ValueError,
         r"student_first\[1\].*batch size of student_first\[0\]"),
        ("every list's pair 1 float32, pair 0 float64", {k: [v[0], v[1].astype(np.float32)] for k, v in base.items()},
         TypeError, r"student_first\[1\].*dtype of student_first\[0\]"),
        ("teacher_first[0] another m", {**base, "teacher_first": [t1[:, :1], t1]}, ValueError,
         r"teacher_first\[0\].*channel count"),
        ("teacher_second[1] another n", {**base, "teacher_second": [t2, t2[:, :2]]}, ValueError,
         r"teacher_second\[1\].*channel count"),
        ("student_first[1] of rank 3", {**base, "student_first": [s1, s1[0]]}, ValueError, r"student_first\[1\]"),
        ("teacher_second[1] with inf", {**base, "teacher_second": [t2, np.full_like(t2, np.inf)]}, ValueError,
         r"teacher_second\[1\]"),
        ("teacher_first[1] float32", {**base, "teacher_first": [t1, t1.astype(np.float32)]}, TypeError,
         r"teacher_first\[1\]"),
        ("spatial mismatch with pool='error'", {**base, "student_first": [MAPS["A4"].repeat(2, 0).repeat(2, 1), s1],
                                                "pool": "error"}, ValueError, r"student_second\[0\].*pool="),
        ("weights of the wrong length", {**base, "weights": [1.0]}, ValueError, "weights"),
        ("a negative weight", {**base, "weights": [1.0, -1.0]}, ValueError, r"weights\[1\]"),
        ("a weight that is not a number", {**base, "weights": [1.0, "2"]}, TypeError, r"weights\[1\]"),
        ("weights of another type", {**base, "weights": {"a": 1.0}}, TypeError, "weights"),
        ("unknown pool", {**base, "pool": "min"}, ValueError, "pool"),
        ("unknown distance", {**base, "distance": "l1"}, ValueError, "distance"),
    ]


@pytest.mark.parametrize(("description", "args", "error", "match"), _bad_cases(), ids=[c[0] for c in _bad_cases()])
@pytest.mark.parametrize("side", ["reference", "torch"])
def test_bad_multi_pair_input(side, description, args, error, match):
    if side == "reference":
        fn = ref.fsp_loss
    else:
        fn = tfsp.fsp_loss
        args = {k: [torch.as_tensor(x) for x in v] if k.endswith(("first", "second")) else v for k, v in args.items()}
    with pytest.raises(error, match=match):
        fn(**args)


def test_torch_maps_on_another_device():
    s1, s2, t1, t2 = (_t(MAPS[k]) for k in ("S1", "S2", "T1", "T2"))
    with pytest.raises(ValueError, match=r"teacher_second\[0\].*device"):
        tfsp.fsp_loss([s1], [s2], [t1], [t2.to("meta")])


@pytest.mark.parametrize("convention", ["paper", "kdzoo"])
def test_compiles_with_dynamic_map_sizes(convention):
    """torch.compile with dynamic sizes, max and average pooling (Inductor cannot lower adaptive
    average pooling at dynamic sizes, so kdref runs that one eagerly), value and gradient."""
    torch._dynamo.reset()
    compiled = torch.compile(tfsp.fsp_loss, dynamic=True)
    rng = np.random.default_rng(1)
    for first, second in (((4, 4), (2, 2)), ((6, 5), (3, 2))):
        maps = [rng.standard_normal((2, 3, *first)), rng.standard_normal((2, 2, *second))]
        teacher = [rng.standard_normal((2, 3, *first)), rng.standard_normal((2, 2, *second))]
        student = [_t(x).requires_grad_(True) for x in maps]
        value = compiled([student[0]], [student[1]], [_t(teacher[0])], [_t(teacher[1])], convention=convention)
        expected = ref.fsp_loss([maps[0]], [maps[1]], [teacher[0]], [teacher[1]], convention=convention)
        assert value.item() == pytest.approx(expected, rel=1e-12)
        value.backward()
        assert all(bool(torch.isfinite(x.grad).all()) for x in student)


def test_fsp_matrix_refuses_two_spatial_sizes():
    with pytest.raises(ValueError, match="f2 must have the spatial size of f1"):
        ref.fsp_matrix(MAPS["A4"], MAPS["B2"])
    with pytest.raises(ValueError, match="f2 must have the spatial size of f1"):
        tfsp.fsp_matrix(_t(MAPS["A4"]), _t(MAPS["B2"]))
