"""AT specifics the generic harness cannot state: the intermediate maps of at.md §7, exact gradients
at a zero map and at a perfect match, the ε region of §5, where the spatial rules meet, the rules
between arguments and knobs that the declarations state, and half-precision inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdref.reference import at as ref
from kdref.registry import GOLDEN_DIR
from kdref.torch import at as tat
from tests.helpers import t

GOLDEN = __import__("json").loads((GOLDEN_DIR / "at.json").read_text(encoding="utf-8"))
FS, FT = (np.asarray(GOLDEN["inputs"][k], dtype=np.float64) for k in ("FS", "FT"))
SIDES = {"reference": (ref, np.asarray), "torch": (tat, torch.as_tensor)}


def grad_of(fn, x, *args, **kwargs):
    x = t(x, requires_grad=True)
    return torch.autograd.grad(fn(x, *args, **kwargs).sum(), x)[0]


@pytest.mark.parametrize("side", SIDES)
def test_intermediate_maps_of_section_7(side):
    """§7: q_S, q_T (p = 2, channel sum) and their normalised forms, to the printed digits."""
    mod, conv = SIDES[side]
    for A, Q, Q_hat in ((FS, [[1.25, 4, 1, 5], [4, 1, 9, 1.25]], [[0.1893885, 0.60604322, 0.1515108, 0.75755402],
                                                                 [0.40087788, 0.10021947, 0.90197523, 0.12527434]]),
                        (FT, [[5, 6, 2, 1.25], [2, 1, 4.25, 14]], [[0.61285141, 0.7354217, 0.24514057, 0.15321285],
                                                                   [0.1351282, 0.067564098, 0.28714741, 0.94589737]])):
        q = mod.attention_map(conv(A))
        np.testing.assert_allclose(np.asarray(q).reshape(2, -1), Q, rtol=0, atol=1e-15)
        np.testing.assert_allclose(np.asarray(mod.normalized_attention(q)), Q_hat, rtol=0, atol=5e-9)


@pytest.mark.parametrize(("convention", "p_norm"), [(c, p) for c in ref.AT_LOSS.conventions.names for p in (1, 2, 3)
                                                    if ref.AT_LOSS.resolve(c)["distance"] == "norm" or p == 2])
def test_gradient_is_exactly_zero_at_a_zero_student_and_at_a_match(convention, p_norm):
    """§7 example 4 / §5: a zero student map gives q̂_S = 0 and a gradient of exactly 0 (chain rule
    through 2A); identical inputs give 0 and, at the norm's kink Δ = 0, the zero subgradient (no NaN)."""
    assert ref.at_loss(FS, FS, convention=convention, p_norm=p_norm) == 0.0
    for student, teacher in ((np.zeros_like(FS), FT), (FS, FS)):
        g = grad_of(tat.at_loss, student, t(teacher), convention=convention, p_norm=p_norm)
        assert torch.equal(g, torch.zeros_like(g))


def test_zero_and_near_zero_maps_of_section_5():
    """§5: with q̂_S = 0 the loss is ‖q̂_T‖²/HW = 1/HW (official) or ‖q̂_T‖ = 1 (paper, β = 2), exactly.
    Student × 1e-7 lies inside the clamp (‖q‖ < 1e-12): q̂ = q/ε, and max |∂L/∂A| = 35771.085.
    KD-Zoo's additive ε moves the value already at ‖q‖ ~ 1e-6, the clamp only below 1e-12."""
    zero = np.zeros_like(FS)
    assert ref.at_loss(zero, FT, convention="official") == pytest.approx(0.25, abs=1e-15)
    assert ref.at_loss(zero, FT, beta=2.0) == pytest.approx(1.0, abs=1e-15)
    assert tat.at_loss(t(zero), t(FT), convention="torchdistill_paper").item() == pytest.approx(1.0, abs=1e-15)
    g = grad_of(tat.at_loss, FS * 1e-7, t(FT), convention="official")
    assert g.abs().max().item() == pytest.approx(35771.085, abs=5e-4)
    official = ref.at_loss(FS * 1e-3, FT, convention="official")
    assert official == pytest.approx(ref.at_loss(FS, FT, convention="official"), rel=1e-12)
    assert abs(ref.at_loss(FS * 1e-3, FT, convention="kdzoo") - official) > 0.01


@pytest.mark.parametrize("side", SIDES)
def test_mixed_sizes_meet_at_the_smaller_extent_or_the_larger(side):
    """Student taller, teacher wider: pooling brings both to (smaller H, smaller W), each map pooled
    in one direction; interpolation brings both to the larger."""
    mod, conv = SIDES[side]
    for rule, size in (("avgpool_features", (2, 2)), ("avgpool_map", (2, 2)), ("interp_map", (4, 6))):
        Q_s, Q_t = mod.attention_pair(conv(np.ones((1, 1, 4, 2))), conv(np.ones((1, 1, 2, 6))), p=2.0,
                                      channel_reduce="sum", use_abs=True, spatial=rule)
        assert tuple(Q_s.shape[1:]) == tuple(Q_t.shape[1:]) == size


#: the rules between arguments and knobs (the declarations' checks), which no generated bad input tries
RULES = {
    "sizes differ, no rule": ("at_loss", lambda c: (c(FS), c(FT[:, :, :1])), {}, ValueError,
                              r"^fm_t must have the spatial size.*avgpool_features"),
    "p not an integer, no abs": ("at_loss", lambda c: (c(FS), c(FT)), {"p": 2.5, "convention": "official"},
                                 ValueError, "^p must be an integer when use_abs=False"),
    "p_norm of a squared distance": ("at_loss", lambda c: (c(FS), c(FT)), {"p_norm": 3.0, "convention": "official"},
                                     ValueError, "^p_norm applies to distance='norm' only"),
    "sizes differ in a pair": ("at_loss_multi", lambda c: ([c(FS)], [c(FT[:, :, :1])]), {}, ValueError,
                               r"^fms_t\[0\] must have the spatial size"),
    "weights of another length": ("at_loss_multi", lambda c: ([c(FS)] * 2, [c(FT)] * 2, [1.0]), {}, ValueError,
                                  "^weights must hold one weight per layer pair"),
    "weights not a list": ("at_loss_multi", lambda c: ([c(FS)], [c(FT)], 1.), {}, TypeError, "^weights must be a list"),
    "layers of two batch sizes": ("at_loss_multi", lambda c: ([c(FS), c(FS[:1])], [c(FT), c(FT[:1])]), {}, ValueError,
                                  r"^fms_s\[1\] must have the batch size of fms_s\[0\]"),
    "layers of two dtypes": ("at_loss_multi", lambda c: ([c(FS), c(np.float32(FS))], [c(FT), c(np.float32(FT))]), {},
                             TypeError, r"^fms_s\[1\] must have the dtype of fms_s\[0\]"),
}


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("side", SIDES)
def test_rules_between_arguments_and_knobs(side, rule):
    (mod, conv), (loss, args, knobs, error, words) = SIDES[side], RULES[rule]
    with pytest.raises(error, match=words):
        getattr(mod, loss)(*args(conv), **knobs)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_are_reduced_in_float32(dtype):
    s = torch.tensor(FS, dtype=dtype, requires_grad=True)
    loss = tat.at_loss(s, torch.tensor(FT, dtype=dtype), convention="official", spatial="avgpool_features")
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(0.21164738, abs=5e-8)
    assert torch.autograd.grad(loss, s)[0].dtype == dtype


def test_reduce_layers_mean_divides_by_the_number_of_pairs():
    """KD-Zoo averages its pairs: two identical pairs under 'kdzoo' give the one-pair value, 'official' twice it."""
    assert ref.at_loss_multi([FS] * 2, [FT] * 2, convention="kdzoo") == pytest.approx(
        ref.at_loss_multi([FS], [FT], convention="kdzoo"), rel=1e-15)
    assert ref.at_loss_multi([FS] * 2, [FT] * 2, convention="official") == pytest.approx(
        2 * ref.at_loss(FS, FT, convention="official"), rel=1e-15)
