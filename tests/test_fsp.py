"""FSP specifics the generic harness cannot say (example 1's G, the zero maps and single positions of
fsp.md §5 are golden edge cases): the pooled G of example 2 exactly, the zero subgradient of a zero
column, half-precision inputs, the rules between the layer pairs that the declaration states, and
torch.compile at dynamic map sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kdref.reference import fsp as ref
from kdref.registry import GOLDEN_DIR
from kdref.torch import fsp as tfsp
from tests.helpers import t

MAPS = {k: np.asarray(v, dtype=np.float64)
        for k, v in json.loads((GOLDEN_DIR / "fsp.json").read_text(encoding="utf-8"))["inputs"].items()}
SIDES = {"reference": (ref, np.asarray), "torch": (tfsp, torch.as_tensor)}
PAIR = ("S1", "S2", "T1", "T2")


@pytest.mark.parametrize(("first", "second", "pool", "expected"), [
    ("A4", "B2", "avg", 0.84375), ("At4", "Bt2", "avg", 0.53125), ("A4", "B2", "max", 2.125),
    ("At4", "Bt2", "max", 1.625)])
@pytest.mark.parametrize("side", SIDES)
def test_pooled_fsp_matrices_of_section_7_are_exact(side, first, second, pool, expected):
    """fsp.md §7: G_S and G_T of example 2, the 4×4 first map pooled to 2×2 (example 1's are golden
    edge cases); every entry is a multiple of 1/32, so exact in binary."""
    mod, conv = SIDES[side]
    G = mod.fsp_matrix(*mod.match_spatial_pair(conv(MAPS[first]), conv(MAPS[second]), pool))
    np.testing.assert_array_equal(np.asarray(G).reshape(np.shape(expected)), expected)


def test_torchdistill_gradient_at_a_zero_column_is_zero_not_nan():
    """fsp.md §5: the column norm at a zero column takes the 0 subgradient (as PyTorch's norm), exactly."""
    s1 = t(MAPS["S1"], requires_grad=True)
    loss = tfsp.fsp_loss([s1], [t(MAPS["S2"])], [t(MAPS["S1"])], [t(MAPS["S2"])], convention="torchdistill")
    (gradient,) = torch.autograd.grad(loss, s1)
    assert loss.item() == 0.0 and torch.equal(gradient, torch.zeros_like(gradient))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_accumulate_in_float32(dtype):
    """Half-precision maps give a float32 loss (the products and sums run in float32)."""
    value = tfsp.fsp_loss(*[[t(MAPS[name]).to(dtype)] for name in PAIR])
    assert value.dtype == torch.float32 and value.item() == pytest.approx(1.125, rel=1e-6)


#: the rules between the layer pairs (the declaration's, which no generated bad input tries): every
#: pair of one batch size and dtype, the teacher's channel counts, one weight per pair, one size per pair
#: with pool="error". Each: (a list, a pair, what becomes of its map), more arguments, the error.
RULES = {
    "pair 1 of another batch": ("student_first", 1, lambda x: x[:1], {}, ValueError,
                                r"^student_first\[1\] must have the batch size of student_first\[0\]"),
    "pair 1 in float32": ("student_first", 1, lambda x: x.astype(np.float32), {}, TypeError,
                          r"^student_first\[1\] must have the dtype of student_first\[0\]"),
    "teacher of another m": ("teacher_first", 0, lambda x: x[:, :1], {}, ValueError,
                             r"^teacher_first\[0\] must have the channel count of student_first\[0\]"),
    "teacher of another n": ("teacher_second", 1, lambda x: x[:, :2], {}, ValueError,
                             r"^teacher_second\[1\] must have the channel count of student_second\[1\]"),
    "weights of another length": ("weights", None, None, {"weights": [1.0]}, ValueError,
                                  "^weights must hold one weight per layer pair"),
    "two sizes, pool='error'": ("student_first", 0, lambda x: x.repeat(2, 2).repeat(2, 3), {"pool": "error"},
                                ValueError, r"^student_second\[0\] has spatial size \(2, 2\) but student_first\[0\] "
                                r"has \(4, 4\).*pool="),
}


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("side", SIDES)
def test_rules_between_layer_pairs(side, rule):
    (mod, conv), (name, i, change, more, error, words) = SIDES[side], RULES[rule]
    lists = {arg: [MAPS[k]] * 2 for arg, k in zip(("student_first", "student_second", "teacher_first",
                                                    "teacher_second"), PAIR, strict=True)}
    if change is not None:
        lists[name][i] = change(lists[name][i])
    with pytest.raises(error, match=words):
        mod.fsp_loss(**{k: [conv(x) for x in v] for k, v in lists.items()}, **more)


@pytest.mark.parametrize("side", SIDES)
def test_one_size_for_a_pair_of_maps_with_pool_error(side):
    mod, conv = SIDES[side]
    with pytest.raises(ValueError, match=r"^f2 has spatial size \(2, 2\) but f1 has \(4, 4\)"):
        mod.match_spatial_pair(conv(MAPS["A4"]), conv(MAPS["B2"]), "error")


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
        student = [t(x).requires_grad_(True) for x in maps]
        value = compiled([student[0]], [student[1]], [t(teacher[0])], [t(teacher[1])], convention=convention)
        expected = ref.fsp_loss([maps[0]], [maps[1]], [teacher[0]], [teacher[1]], convention=convention)
        assert value.item() == pytest.approx(expected, rel=1e-12)
        value.backward()
        assert all(bool(torch.isfinite(x.grad).all()) for x in student)
