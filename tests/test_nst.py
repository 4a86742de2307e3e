"""NST tests the generic harness cannot state: the spec's values that are not a loss (normalised
maps, the heuristic bandwidth), the zero-channel gradients of nst.md §5/§7, the two Gram forms of
the torch code, the spatial rules, autocast with float32 inputs, and checks of the knobs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdref.reference import nst as ref
from kdref.registry import GOLDEN_DIR
from kdref.strategies.nst import nst_inputs, well_conditioned_maps
from kdref.torch import nst as tnst
from tests.helpers import assert_printed, t

GOLDEN = json.loads((GOLDEN_DIR / "nst.json").read_text(encoding="utf-8"))
FS, FT, FS_ZERO = (np.asarray(GOLDEN["inputs"][k], dtype=np.float64) for k in ("fs", "ft", "fs_zero"))


def test_normalised_student_channels():
    """nst.md §7: the normalised student channels, on both sides."""
    printed = GOLDEN["normalized_student"]["value"]
    assert_printed(ref.normalized_channel_maps(FS), printed)
    assert_printed(tnst.normalized_channel_maps(t(FS)).numpy(), printed)


@pytest.mark.parametrize("side", ["reference", "torch"])
def test_gaussian_heuristic_bandwidth_and_its_mmd2(side):
    """nst.md §7: σ² = [1.6838507, 1.2964622] (distinct pairs of the pooled maps, per example) and
    the Gaussian MMD² with it, [0.10392819, 0.34713309], mean 0.22553064."""
    golden = GOLDEN["sigma2_heuristic"]
    if side == "reference":
        sigma2 = ref.gaussian_sigma2_heuristic(FS, FT)
        per_example = ref.nst_loss(FS, FT, kernel="gaussian", sigma2=sigma2, convention="kdzoo", reduction="none")
        mean = ref.nst_loss(FS, FT, kernel="gaussian", sigma2=sigma2, convention="kdzoo")
    else:
        sigma2 = tnst.gaussian_sigma2_heuristic(t(FS), t(FT))
        per_example = tnst.nst_loss(t(FS), t(FT), kernel="gaussian", sigma2=sigma2, convention="kdzoo",
                                    reduction="none").numpy()
        mean = tnst.nst_loss(t(FS), t(FT), kernel="gaussian", sigma2=sigma2, convention="kdzoo").item()
        sigma2 = sigma2.numpy()
    assert_printed(sigma2, golden["sigma2"])
    assert_printed(per_example, golden["mmd2"])
    assert_printed(mean, golden["mmd2_mean"])


def test_heuristic_bandwidth_is_a_constant():
    """The torch heuristic is detached: the loss's gradient with it is the gradient at a fixed σ²."""
    student = t(FS, requires_grad=True)
    sigma2 = tnst.gaussian_sigma2_heuristic(student, t(FT))
    assert not sigma2.requires_grad
    (with_heuristic,) = torch.autograd.grad(tnst.nst_loss(student, t(FT), kernel="gaussian", sigma2=sigma2), student)
    fixed = torch.tensor(sigma2.tolist(), dtype=torch.float64)
    (with_constant,) = torch.autograd.grad(tnst.nst_loss(student, t(FT), kernel="gaussian", sigma2=fixed), student)
    torch.testing.assert_close(with_heuristic, with_constant, rtol=0, atol=0)


@settings(max_examples=25, deadline=None)
@given(nst_inputs(knobs=False), st.sampled_from(["keep", "drop"]))
def test_heuristic_agrees_with_reference(inputs, zero_channel):
    """The torch heuristic (sums, no pairwise matrix) equals the reference's pairwise mean, away from
    the degenerate case where every map coincides (there the bandwidth is rounding noise, and any
    σ² gives the same MMD²)."""
    expected = ref.gaussian_sigma2_heuristic(**inputs, zero_channel=zero_channel)
    actual = tnst.gaussian_sigma2_heuristic(t(inputs["student"]), t(inputs["teacher"]), zero_channel=zero_channel)
    well_posed = expected != 1.0
    np.testing.assert_allclose(actual.numpy()[well_posed], expected[well_posed], rtol=1e-9, atol=1e-12)


def test_heuristic_degenerate_sets_give_one():
    """All maps equal, or (with drop) fewer than two maps left: σ² = 1, where any value gives the same MMD²."""
    fm = np.ones((1, 2, 2, 2))
    assert ref.gaussian_sigma2_heuristic(fm, fm).tolist() == [1.0]
    zero = np.zeros((1, 1, 2, 2))
    assert ref.gaussian_sigma2_heuristic(zero, fm[:, :1], zero_channel="drop").tolist() == [1.0]
    assert tnst.gaussian_sigma2_heuristic(t(zero), t(fm[:, :1]), zero_channel="drop").tolist() == [1.0]


def _zero_channel_gradient(**knobs) -> torch.Tensor:
    student = t(FS_ZERO, requires_grad=True)
    (grad,) = torch.autograd.grad(tnst.nst_loss(student, t(FT), **knobs), student)
    assert torch.isfinite(grad).all(), f"non-finite gradient with {knobs}"
    return grad


@pytest.mark.parametrize("convention", ["paper", "kdzoo", "official"])
def test_zero_channel_poly_gradient_is_exactly_zero(convention):
    """nst.md §5/§7: with the polynomial kernel (c = 0) the gradient is finite, and exactly 0 on a zero channel."""
    grad = _zero_channel_gradient(convention=convention)
    assert grad[0, 1].abs().max().item() == 0.0
    assert grad.abs().max().item() > 0.0


@pytest.mark.parametrize("kernel", [{"kernel": "linear"}, {"kernel": "gaussian", "sigma2": 1.0}])
def test_zero_channel_gradient_through_the_clamp_is_one_over_eps(kernel):
    """nst.md §5: with the linear kernel the gradient on a zero student channel is ~1/ε (2.2e11 for
    KD-Zoo's batch mean); the Gaussian kernel behaves the same way."""
    grad = _zero_channel_gradient(convention="kdzoo", **kernel)
    largest = grad[0, 1].abs().max().item()
    if kernel["kernel"] == "linear":
        assert largest == pytest.approx(2.2e11, rel=0.03)
    else:
        assert largest > 1e10


@pytest.mark.parametrize("kernel", [{}, {"kernel": "linear"}, {"kernel": "gaussian", "sigma2": 1.0}])
def test_dropped_zero_channel_gets_no_gradient(kernel):
    """zero_channel="drop" takes the zero channel out of the sample set: its gradient is 0, the rest finite."""
    grad = _zero_channel_gradient(convention="kdzoo", zero_channel="drop", **kernel)
    assert grad[0, 1].abs().max().item() == 0.0


def test_all_zero_student_keeps_the_teacher_term():
    """An all-zero student map (keep): k(0, ·) = 0 for the polynomial kernel with c = 0, so the full
    MMD² is the teacher–teacher mean alone; under drop the empty set's embedding is 0, the same value."""
    zero = np.zeros_like(FS)
    teacher = ref.normalized_channel_maps(FT)
    expected = np.mean(ref.kernel_matrix(teacher, teacher), axis=(1, 2))
    for zero_channel in ("keep", "drop"):
        got = ref.nst_loss(zero, FT, convention="kdzoo", reduction="none", zero_channel=zero_channel)
        np.testing.assert_allclose(got, expected, rtol=1e-12)
        got = tnst.nst_loss(t(zero), t(FT), convention="kdzoo", reduction="none", zero_channel=zero_channel)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(nst_inputs(kernels=("poly",)), st.sampled_from(["paper", "official", "kdzoo"]))
def test_channel_and_spatial_gram_forms_agree_with_reference(inputs, convention):
    """The polynomial kernel with d = 2 has two exact forms in torch; both equal the reference."""
    inputs = {**inputs, "d": 2}
    expected = ref.nst_loss(**inputs, convention=convention, reduction="none")
    args = {k: t(v) if isinstance(v, np.ndarray) else v for k, v in inputs.items()}
    scale = 4 * (1 + abs(inputs.get("c", 0.0))) ** 2 * inputs.get("lam", 1.0)
    for gram in ("channel", "spatial"):
        actual = tnst.nst_loss(**args, convention=convention, reduction="none", gram=gram).numpy()
        np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-13 * scale, err_msg=gram)


def test_auto_gram_picks_the_cheaper_form():
    """HW·(C_S + C_T) against C_S² + C_S·C_T + C_T² multiply-adds per position."""
    assert tnst._spatial_is_cheaper(hw=64, c_s=256, c_t=256, teacher_term=True)
    assert not tnst._spatial_is_cheaper(hw=1024, c_s=64, c_t=64, teacher_term=True)


def test_gram_choice_is_checked():
    with pytest.raises(ValueError, match="gram"):
        tnst.nst_loss(t(FS), t(FT), gram="diagonal")
    with pytest.raises(ValueError, match="gram='spatial'"):
        tnst.nst_loss(t(FS), t(FT), kernel="gaussian", sigma2=1.0, gram="spatial")


@pytest.mark.parametrize("spatial", ["interpolate", "avgpool"])
def test_spatial_rules(spatial):
    """interpolate: the student is resized bilinearly to the teacher's size; avgpool: the larger map
    is adaptive-average pooled to the smaller (RepDistiller's rule for square maps)."""
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 5, 2, 2))
    if spatial == "interpolate":
        matched = (torch.nn.functional.interpolate(t(student), size=(2, 2), mode="bilinear", align_corners=False),
                   t(teacher))
    else:
        matched = (torch.nn.functional.adaptive_avg_pool2d(t(student), (2, 2)), t(teacher))
    expected = tnst.nst_loss(*matched)
    assert tnst.nst_loss(t(student), t(teacher), spatial=spatial).item() == pytest.approx(expected.item(), rel=1e-12)
    assert ref.nst_loss(student, teacher, spatial=spatial) == pytest.approx(expected.item(), rel=1e-12)
    with pytest.raises(ValueError, match="teacher must have the spatial size of student"):
        ref.nst_loss(student, teacher)


def test_float32_inputs_under_autocast_keep_float32_products():
    """Inside an autocast region the Gram products still run in float32: the value is the one
    computed without autocast, not a bfloat16 approximation."""
    rng = np.random.default_rng(1)
    student = torch.tensor(rng.normal(size=(4, 16, 3, 3)), dtype=torch.float32)
    teacher = torch.tensor(rng.normal(size=(4, 24, 3, 3)), dtype=torch.float32)
    for knobs in ({}, {"kernel": "gaussian", "sigma2": 0.5}, {"gram": "spatial"}):
        plain = tnst.nst_loss(student, teacher, **knobs)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            under_autocast = tnst.nst_loss(student, teacher, **knobs)
        assert under_autocast.dtype == torch.float32
        torch.testing.assert_close(under_autocast, plain, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("side", ["reference", "torch"])
def test_knob_checks(side):
    """d is an integer ≥ 1, eps > 0, sigma2 only (and always) with the Gaussian kernel and of shape [N],
    c and d only with the polynomial kernel."""
    loss = ref.nst_loss if side == "reference" else tnst.nst_loss
    s, tt = (FS, FT) if side == "reference" else (t(FS), t(FT))
    per_example = np.ones(3) if side == "reference" else torch.ones(3, dtype=torch.float64)
    cases = [
        ({"d": 0}, ValueError, r"d must be a finite number in \[1, inf\]"),
        ({"d": 2.5}, TypeError, "d must be an integer"),
        ({"d": 2.0}, TypeError, "d must be an integer"),
        ({"d": True}, TypeError, "d must be a real number"),
        ({"eps": 0.0}, ValueError, "eps must be > 0"),
        ({"kernel": "gaussian"}, ValueError, "sigma2 is required"),
        ({"sigma2": 1.0}, ValueError, "does not use it"),
        ({"kernel": "linear", "c": 1.0}, ValueError, "c and d are the polynomial kernel's"),
        ({"kernel": "gaussian", "sigma2": 1.0, "d": 3}, ValueError, "c and d are the polynomial kernel's"),
        ({"kernel": "gaussian", "sigma2": per_example}, ValueError, r"sigma2 must be a number or have shape \(2,\)"),
        ({"kernel": "cosine"}, ValueError, "kernel must be one of"),
        ({"zero_channel": "ignore"}, ValueError, "zero_channel must be one of"),
        ({"spatial": "crop"}, ValueError, "spatial must be one of"),
    ]
    for knobs, error, message in cases:
        with pytest.raises(error, match=message):
            loss(s, tt, **knobs)


def test_sigma2_tensor_on_another_device_is_refused():
    with pytest.raises(ValueError, match="sigma2 must be on the device"):
        tnst.nst_loss(t(FS), t(FT), kernel="gaussian", sigma2=torch.ones(2, device="meta"))


@settings(max_examples=10, deadline=None)
@given(well_conditioned_maps((2, 3, 2, 2)))
def test_batch_of_one_is_its_own_mean(student):
    """nst.md §5: a batch of one is fine; the batch mean of one example is that example's value."""
    teacher = student[::-1].copy()
    one = ref.nst_loss(student[:1], teacher[:1])
    assert one == pytest.approx(ref.nst_loss(student, teacher, reduction="none")[0])
    assert tnst.nst_loss(t(student[:1]), t(teacher[:1])).item() == pytest.approx(one, rel=1e-12)


def test_compiled_forward_and_backward_match_eager():
    """torch.compile through the custom autograd function of the channel Gram form (Gaussian
    kernel, drop rule with a zero teacher channel): the same value and gradient as eager mode."""
    rng = np.random.default_rng(2)
    student_np, teacher_np = rng.normal(size=(3, 4, 2, 3)), rng.normal(size=(3, 5, 2, 3))
    teacher_np[1, 2] = 0.0
    knobs = {"kernel": "gaussian", "sigma2": 0.8, "zero_channel": "drop"}
    results = []
    for fn in (tnst.nst_loss, torch.compile(tnst.nst_loss)):
        student = t(student_np, requires_grad=True)
        value = fn(student, t(teacher_np), **knobs)
        results.append((value.detach(), torch.autograd.grad(value, student)[0]))
    torch.testing.assert_close(results[1], results[0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("knobs", [{"kernel": "gaussian", "sigma2": 0.8}, {"c": 0.5, "gram": "channel"}])
def test_compiled_with_dynamic_shapes(knobs):
    """Under torch.compile with dynamic shapes (a batch size that changes, as a last smaller batch
    does) the custom autograd function gets σ² and c as tensors: as Python floats they became
    symbolic floats, on which Dynamo (torch 2.13) failed with an internal error."""
    rng = np.random.default_rng(3)
    student, teacher = t(rng.normal(size=(3, 4, 2, 3)), requires_grad=True), t(rng.normal(size=(3, 5, 2, 3)))
    torch._dynamo.reset()
    compiled = torch.compile(tnst.nst_loss, dynamic=True)
    (expected,) = torch.autograd.grad(tnst.nst_loss(student, teacher, **knobs), student)
    (actual,) = torch.autograd.grad(compiled(student, teacher, **knobs), student)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-14)
