"""NST tests the generic harness cannot state (the normalised maps, the heuristic bandwidth and an
all-zero student are golden edge cases): the loss at the heuristic bandwidth, the torch heuristic
against the reference's, the zero-channel gradients of nst.md §5/§7, the two Gram forms and the
compiled autograd function of the torch code, the spatial rules against torch's own resampling,
autocast with float32 inputs, and the rules between arguments and knobs that the declaration states."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kdref.reference import nst as ref
from kdref.registry import GOLDEN_DIR
from kdref.strategies.nst import nst_inputs
from kdref.torch import nst as tnst
from tests.helpers import assert_printed, t

GOLDEN = json.loads((GOLDEN_DIR / "nst.json").read_text(encoding="utf-8"))
FS, FT, FS_ZERO = (np.asarray(GOLDEN["inputs"][k], dtype=np.float64) for k in ("fs", "ft", "fs_zero"))
SIDES = {"reference": (ref, np.asarray), "torch": (tnst, torch.as_tensor)}


@pytest.mark.parametrize("side", SIDES)
def test_gaussian_mmd2_at_the_heuristic_bandwidth(side):
    """nst.md §7: the Gaussian MMD² with the heuristic σ² (itself a golden edge case),
    [0.10392819, 0.34713309], mean 0.22553064."""
    (mod, conv), golden = SIDES[side], GOLDEN["sigma2_heuristic"]
    sigma2 = mod.gaussian_sigma2_heuristic(conv(FS), conv(FT))
    gaussian = {"kernel": "gaussian", "sigma2": sigma2, "convention": "kdzoo"}
    assert_printed(np.asarray(mod.nst_loss(conv(FS), conv(FT), **gaussian, reduction="none")), golden["mmd2"])
    assert_printed(float(mod.nst_loss(conv(FS), conv(FT), **gaussian)), golden["mmd2_mean"])


def test_heuristic_bandwidth_is_a_constant():
    """The torch heuristic is detached: the loss's gradient with it is the gradient at a fixed σ²."""
    student = t(FS, requires_grad=True)
    sigma2 = tnst.gaussian_sigma2_heuristic(student, t(FT))
    assert not sigma2.requires_grad
    grads = [torch.autograd.grad(tnst.nst_loss(student, t(FT), kernel="gaussian", sigma2=s), student)[0]
             for s in (sigma2, torch.tensor(sigma2.tolist(), dtype=torch.float64))]
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


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


@pytest.mark.parametrize(("knobs", "largest"), [
    ({"convention": "paper"}, 0.0), ({"convention": "kdzoo"}, 0.0), ({"convention": "official"}, 0.0),
    ({"kernel": "linear"}, 2.2e11), ({"kernel": "gaussian", "sigma2": 1.0}, None), ({"zero_channel": "drop"}, 0.0),
    ({"kernel": "linear", "zero_channel": "drop"}, 0.0),
    ({"kernel": "gaussian", "sigma2": 1.0, "zero_channel": "drop"}, 0.0)])
def test_gradient_on_a_zero_student_channel(knobs, largest):
    """nst.md §5/§7: the gradient is finite; on the zero channel it is exactly 0 with the polynomial
    kernel (c = 0) and under zero_channel="drop", and ~1/ε through the clamp otherwise: 2.2e11 with
    the linear kernel (KD-Zoo's batch mean), above 1e10 with the Gaussian."""
    student = t(FS_ZERO, requires_grad=True)
    (grad,) = torch.autograd.grad(tnst.nst_loss(student, t(FT), **{"convention": "kdzoo", **knobs}), student)
    assert torch.isfinite(grad).all() and grad.abs().max().item() > 0.0
    on_zero_channel = grad[0, 1].abs().max().item()
    assert on_zero_channel > 1e10 if largest is None else on_zero_channel == pytest.approx(largest, rel=0.03)


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


@pytest.mark.parametrize(("spatial", "resample"), [
    ("interpolate", lambda x: F.interpolate(x, size=(2, 2), mode="bilinear", align_corners=False)),
    ("avgpool", lambda x: F.adaptive_avg_pool2d(x, (2, 2)))])
def test_spatial_rules_are_torchs_resampling(spatial, resample):
    """interpolate: the student is resized bilinearly to the teacher's size; avgpool: the larger map
    is adaptive-average pooled to the smaller (RepDistiller's rule for square maps)."""
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 5, 2, 2))
    expected = tnst.nst_loss(resample(t(student)), t(teacher)).item()
    assert tnst.nst_loss(t(student), t(teacher), spatial=spatial).item() == pytest.approx(expected, rel=1e-12)
    assert ref.nst_loss(student, teacher, spatial=spatial) == pytest.approx(expected, rel=1e-12)


def test_float32_inputs_under_autocast_keep_float32_products():
    """Inside an autocast region the Gram products still run in float32: the value is the one
    computed without autocast, not a bfloat16 approximation."""
    rng = np.random.default_rng(1)
    student, teacher = (torch.tensor(rng.normal(size=(4, c, 3, 3)), dtype=torch.float32) for c in (16, 24))
    for knobs in ({}, {"kernel": "gaussian", "sigma2": 0.5}, {"gram": "spatial"}):
        plain = tnst.nst_loss(student, teacher, **knobs)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            under_autocast = tnst.nst_loss(student, teacher, **knobs)
        assert under_autocast.dtype == torch.float32
        torch.testing.assert_close(under_autocast, plain, rtol=1e-6, atol=1e-7)


#: the declaration's rules that no generated bad input tries: d an integer, σ² exactly with the
#: Gaussian kernel and one per example, c and d only with the polynomial kernel, one spatial size
RULES = [
    ({"d": 2.5}, TypeError, "^d must be an integer"), ({"d": 2.0}, TypeError, "^d must be an integer"),
    ({"d": True}, TypeError, "^d must be a real number"),
    ({"kernel": "gaussian"}, ValueError, "^sigma2 is required"), ({"sigma2": 1.0}, ValueError, "does not use it"),
    ({"kernel": "linear", "c": 1.0}, ValueError, "^c and d are the polynomial kernel's"),
    ({"kernel": "gaussian", "sigma2": 1.0, "d": 3}, ValueError, "^c and d are the polynomial kernel's"),
    ({"kernel": "gaussian", "sigma2": np.ones(3)}, ValueError, r"^sigma2 must be a number or have shape \(2,\)"),
    ({"teacher": FT[:, :, :1]}, ValueError, "^teacher must have the spatial size of student"),
]
TORCH_RULES = [
    ({"gram": "diagonal"}, ValueError, "gram must be one of"),
    ({"kernel": "gaussian", "sigma2": 1.0, "gram": "spatial"}, ValueError, "^gram='spatial' needs"),
    ({"kernel": "gaussian", "sigma2": torch.ones(2, device="meta")}, ValueError, "^sigma2 must be on the device"),
]


@pytest.mark.parametrize(("side", "rule"), [(s, r) for s in SIDES for r in RULES] + [("torch", r) for r in TORCH_RULES])
def test_rules_between_arguments_and_knobs(side, rule):
    (mod, conv), (knobs, error, words) = SIDES[side], rule
    args = {"student": FS, "teacher": FT, **knobs}
    with pytest.raises(error, match=words):
        mod.nst_loss(**{k: conv(v) if isinstance(v, np.ndarray) else v for k, v in args.items()})


@pytest.mark.parametrize(("dynamic", "knobs"), [(False, {"kernel": "gaussian", "sigma2": 0.8, "zero_channel": "drop"}),
                                                 (True, {"kernel": "gaussian", "sigma2": 0.8}),
                                                 (True, {"c": 0.5, "gram": "channel"})])
def test_compiled_forward_and_backward_match_eager(dynamic, knobs):
    """torch.compile through the custom autograd function of the channel Gram form (a zero teacher
    channel under the drop rule): the value and gradient of eager mode. With dynamic shapes (a batch
    size that changes, as a last smaller batch does) it gets σ² and c as tensors: as Python floats
    they became symbolic floats, on which Dynamo (torch 2.13) failed with an internal error."""
    rng = np.random.default_rng(2)
    student_np, teacher_np = rng.normal(size=(3, 4, 2, 3)), rng.normal(size=(3, 5, 2, 3))
    teacher_np[1, 2] = 0.0
    torch._dynamo.reset()
    results = []
    for fn in (tnst.nst_loss, torch.compile(tnst.nst_loss, dynamic=dynamic)):
        student = t(student_np, requires_grad=True)
        value = fn(student, t(teacher_np), **knobs)
        results.append((value.detach(), torch.autograd.grad(value, student)[0]))
    torch.testing.assert_close(results[1], results[0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("side", ["reference", "torch"])
def test_several_layer_rules(side):
    """nst_loss_multi's check: one weight per layer pair, as a list; no Gaussian kernel (its
    bandwidth belongs to one pair); c and d only with the polynomial kernel."""
    from kdref.reference import nst as reference
    from kdref.torch import nst as torch_nst

    module, conv = (reference, np.asarray) if side == "reference" else (torch_nst, lambda x: torch.tensor(x))
    f = conv(np.ones((2, 2, 2, 2)))
    with pytest.raises(ValueError, match=r"^weights must hold one weight per layer pair \(2\), got 1"):
        module.nst_loss_multi([f, f], [f, f], [1.0])
    with pytest.raises(TypeError, match=r"^weights must be a list or tuple of numbers, one per layer pair"):
        module.nst_loss_multi([f], [f], 2.0)
    with pytest.raises(ValueError, match=r"^kernel='gaussian' needs a bandwidth per layer pair"):
        module.nst_loss_multi([f], [f], kernel="gaussian")
    with pytest.raises(ValueError, match=r"^c and d are the polynomial kernel's offset and degree"):
        module.nst_loss_multi([f], [f], kernel="linear", c=1.0)
