"""AT specifics the generic harness cannot state: the intermediate maps of at.md §7, the gradient
at a zero map and at a perfect match, the ε region of §5, the spatial rules' geometry, and bad
input of the multi-layer loss (lengths, weights, batch across layers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdref.reference import at as ref
from kdref.torch import at as tat

FS = np.array([[[[1, 2], [0, -1]], [[0.5, 0], [1, 2]]],
               [[[0, 0], [3, 1]], [[2, -1], [0, 0.5]]]])
FT = np.array([[[[2, 1], [0, 0]], [[1, 1], [1, 1]], [[0, -2], [1, 0.5]]],
               [[[1, 0], [2, 2]], [[0, 1], [0, 3]], [[-1, 0], [0.5, 1]]]])
CONVENTIONS = ref.AT_LOSS.conventions.names


def t(x, requires_grad=False):
    return torch.tensor(x, dtype=torch.float64, requires_grad=requires_grad)


def grad_of(fn, x, *args, **kwargs):
    x = t(x, requires_grad=True)
    (g,) = torch.autograd.grad(fn(x, *args, **kwargs).sum(), x)
    return g


# -- at.md §7: the intermediate values of the worked example ------------------------------------

Q_S = [[1.25, 4, 1, 5], [4, 1, 9, 1.25]]
Q_T = [[5, 6, 2, 1.25], [2, 1, 4.25, 14]]
QS_HAT = [[0.1893885, 0.60604322, 0.1515108, 0.75755402], [0.40087788, 0.10021947, 0.90197523, 0.12527434]]
QT_HAT = [[0.61285141, 0.7354217, 0.24514057, 0.15321285], [0.1351282, 0.067564098, 0.28714741, 0.94589737]]


@pytest.mark.parametrize("side", ["reference", "torch"])
def test_intermediate_maps_of_section_7(side):
    """§7: q_S, q_T (p = 2, channel sum) and their normalised forms, to the printed digits."""
    mod, conv = (ref, np.asarray) if side == "reference" else (tat, t)
    for A, Q, Q_hat in ((FS, Q_S, QS_HAT), (FT, Q_T, QT_HAT)):
        q = mod.attention_map(conv(A))
        q_hat = mod.normalized_attention(q)
        q, q_hat = (np.asarray(v.detach() if side == "torch" else v) for v in (q, q_hat))
        np.testing.assert_allclose(q.reshape(2, -1), Q, rtol=0, atol=1e-15)
        np.testing.assert_allclose(q_hat, Q_hat, rtol=0, atol=5e-9)


# -- at.md §5 / §7 example 4: zero maps and perfect matches, gradients without NaN ---------------


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_zero_student_has_exactly_zero_gradient(convention):
    """§7 example 4: a zero student map gives q̂_S = 0 and a gradient of exactly 0 (chain rule through 2A)."""
    g = grad_of(tat.at_loss, np.zeros_like(FS), t(FT), convention=convention)
    assert torch.equal(g, torch.zeros_like(g))


#: p_norm belongs to the non-squared distance; the squared ones take only p_norm = 2
_NORM_COMBOS = [(c, p) for c in CONVENTIONS for p in (1.0, 2.0, 3.0)
                if ref.AT_LOSS.resolve(c)["distance"] == "norm" or p == 2.0]


@pytest.mark.parametrize(("convention", "p_norm"), _NORM_COMBOS)
def test_identical_inputs_value_and_gradient_are_zero(convention, p_norm):
    """§7 example 4 / §5: identical inputs give 0 and, at the norm's kink Δ = 0, the zero subgradient."""
    assert ref.at_loss(FS, FS, convention=convention, p_norm=p_norm) == 0.0
    g = grad_of(tat.at_loss, FS, t(FS), convention=convention, p_norm=p_norm)
    assert torch.isfinite(g).all() and torch.equal(g, torch.zeros_like(g))


def test_zero_student_values_are_the_teachers_norm():
    """§5: with q̂_S = 0 the loss is ‖q̂_T‖²/HW = 1/HW (official) or ‖q̂_T‖ = 1 (paper, β = 2), exactly."""
    zero = np.zeros_like(FS)
    assert ref.at_loss(zero, FT, convention="official") == pytest.approx(0.25, abs=1e-15)
    assert ref.at_loss(zero, FT, beta=2.0) == pytest.approx(1.0, abs=1e-15)
    assert tat.at_loss(t(zero), t(FT), convention="torchdistill_paper").item() == pytest.approx(1.0, abs=1e-15)


def test_clamp_region_gradient_of_section_5():
    """§5: student × 1e-7 lies inside the clamp (‖q‖ < 1e-12): q̂ = q/ε, and max |∂L/∂A| = 35771.085."""
    g = grad_of(tat.at_loss, FS * 1e-7, t(FT), convention="official")
    assert g.abs().max().item() == pytest.approx(35771.085, abs=5e-4)


def test_add_eps_breaks_scale_invariance_early():
    """§5: KD-Zoo's additive ε moves the value already at ‖q‖ ~ 1e-6, the clamp only below 1e-12."""
    official = ref.at_loss(FS * 1e-3, FT, convention="official")
    kdzoo = ref.at_loss(FS * 1e-3, FT, convention="kdzoo")
    assert official == pytest.approx(ref.at_loss(FS, FT, convention="official"), rel=1e-12)
    assert abs(kdzoo - official) > 0.01


# -- spatial rules ---------------------------------------------------------------------------


def _blocks(x: np.ndarray, bh: int, bw: int) -> np.ndarray:
    """Average of non-overlapping bh × bw blocks."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // bh, bh, w // bw, bw).mean(axis=(3, 5))


@pytest.mark.parametrize("side", ["reference", "torch"])
def test_avgpool_features_supports_non_square_maps(side):
    """RepDistiller pools to (H, H) and fails on non-square maps; kdref pools to (h, w) of the smaller."""
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(size=(2, 3, 4, 6)), rng.normal(size=(2, 5, 2, 3))
    expected = ref.at_loss(_blocks(student, 2, 2), teacher, convention="official")
    if side == "reference":
        got = ref.at_loss(student, teacher, convention="official", spatial="avgpool_features")
    else:
        got = tat.at_loss(t(student), t(teacher), convention="official", spatial="avgpool_features").item()
    assert got == pytest.approx(expected, rel=1e-12)


def test_mixed_sizes_pool_both_maps_to_the_smaller_extent():
    """Student taller, teacher wider: both go to (smaller H, smaller W); interpolation to the larger."""
    student, teacher = np.ones((1, 1, 4, 2)), np.ones((1, 1, 2, 6))
    for rule, size in (("avgpool_features", (2, 2)), ("avgpool_map", (2, 2)), ("interp_map", (4, 6))):
        Q_s, Q_t = ref.attention_pair(student, teacher, p=2.0, channel_reduce="sum", use_abs=True, spatial=rule)
        assert Q_s.shape[1:] == Q_t.shape[1:] == size
        T_s, T_t = tat.attention_pair(t(student), t(teacher), p=2.0, channel_reduce="sum", use_abs=True, spatial=rule)
        assert tuple(T_s.shape[1:]) == tuple(T_t.shape[1:]) == size


def test_pooling_features_is_not_pooling_the_map():
    """§4/§7 example 3: the map is not linear, so the two pooling rules differ."""
    rng = np.random.default_rng(1)
    student, teacher = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 3, 2, 2))
    features = ref.at_loss(student, teacher, spatial="avgpool_features")
    maps = ref.at_loss(student, teacher, spatial="avgpool_map")
    assert abs(features - maps) > 1e-3


# -- bad input the harness does not generate ------------------------------------------------


@pytest.mark.parametrize("side", ["reference", "torch"])
def test_spatial_mismatch_without_a_rule_names_the_rules(side):
    mod, conv = (ref, np.asarray) if side == "reference" else (tat, t)
    with pytest.raises(ValueError, match=r"fm_t must have the spatial size.*avgpool_features"):
        mod.at_loss(conv(FS), conv(FT[:, :, :1]))


@pytest.mark.parametrize("side", ["reference", "torch"])
@pytest.mark.parametrize(("kwargs", "words"), [
    ({"p": 0.5}, "p must be"),
    ({"p": 2.5, "convention": "official"}, "p must be an integer when use_abs=False"),
    ({"eps": 0.0}, "eps must be > 0"),
    ({"eps": -1e-6}, "eps must be"),
    ({"p_norm": 3.0, "convention": "official"}, "p_norm applies to distance='norm' only"),
    ({"p_norm": 0.5}, "p_norm must be"),
    ({"spatial": "bilinear"}, "spatial must be one of"),
    ({"eps_mode": "sqrt_add"}, "eps_mode must be one of"),
])
def test_bad_knobs(side, kwargs, words):
    mod, conv = (ref, np.asarray) if side == "reference" else (tat, t)
    with pytest.raises(ValueError, match=words):
        mod.at_loss(conv(FS), conv(FT), **kwargs)


@pytest.mark.parametrize("side", ["reference", "torch"])
def test_multi_layer_bad_input(side):
    mod, conv = (ref, np.asarray) if side == "reference" else (tat, t)
    s, te = conv(FS), conv(FT)
    with pytest.raises(ValueError, match=r"fms_t must hold as many arrays as fms_s \(2\), got 1"):
        mod.at_loss_multi([s, s], [te])
    with pytest.raises(ValueError, match="weights must hold one weight per layer pair"):
        mod.at_loss_multi([s, s], [te, te], [1.0])
    with pytest.raises(ValueError, match=r"weights\[1\]"):
        mod.at_loss_multi([s, s], [te, te], [1.0, -1.0])
    with pytest.raises(TypeError, match="weights"):
        mod.at_loss_multi([s], [te], 1.0)
    with pytest.raises(ValueError, match=r"fms_s\[1\] must have the batch size of fms_s\[0\]"):
        mod.at_loss_multi([s, s[:1]], [te, te[:1]])
    with pytest.raises(ValueError, match=r"fms_t\[1\] must have the batch size of fms_s\[1\]"):
        mod.at_loss_multi([s, s], [te, te[:1]])
    with pytest.raises(ValueError, match=r"fms_t\[0\] must have the spatial size"):
        mod.at_loss_multi([s], [te[:, :, :1]])
    with pytest.raises(ValueError, match="reduce_layers must be one of"):
        mod.at_loss_multi([s], [te], reduce_layers="max")


def test_multi_layer_dtype_mismatch_across_layers():
    with pytest.raises(TypeError, match=r"fms_s\[1\] must have the dtype of fms_s\[0\]"):
        tat.at_loss_multi([t(FS), t(FS).float()], [t(FT), t(FT).float()])


# -- precision and reductions ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_are_reduced_in_float32(dtype):
    s = torch.tensor(FS, dtype=dtype, requires_grad=True)
    loss = tat.at_loss(s, torch.tensor(FT, dtype=dtype), convention="official", spatial="avgpool_features")
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(0.21164738, abs=5e-8)
    (g,) = torch.autograd.grad(loss, s)
    assert g.dtype == dtype


def test_reduce_layers_mean_divides_by_the_number_of_pairs():
    """KD-Zoo averages its pairs: two identical pairs under 'kdzoo' give the one-pair value."""
    one = ref.at_loss_multi([FS], [FT], convention="kdzoo")
    two = ref.at_loss_multi([FS, FS], [FT, FT], convention="kdzoo")
    assert two == pytest.approx(one, rel=1e-15)
    assert ref.at_loss_multi([FS, FS], [FT, FT], convention="official") == pytest.approx(
        2 * ref.at_loss(FS, FT, convention="official"), rel=1e-15)
