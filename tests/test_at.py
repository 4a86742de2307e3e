"""AT specifics the generic harness cannot state (§7's intermediate maps, §5's zero maps and matches,
where the spatial rules meet and how layers are reduced are golden edge cases): exact gradients at a
zero map and at a perfect match, the ε region of §5, the rules between arguments and knobs that the
declarations state, and half-precision inputs."""

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


@pytest.mark.parametrize(("convention", "p_norm"), [(c, p) for c in ref.AT_LOSS.conventions.names for p in (1, 2, 3)
                                                    if ref.AT_LOSS.resolve(c)["distance"] == "norm" or p == 2])
def test_gradient_is_exactly_zero_at_a_zero_student_and_at_a_match(convention, p_norm):
    """§7 example 4 / §5: a zero student map gives q̂_S = 0 and a gradient of exactly 0 (chain rule
    through 2A); identical inputs (value 0: golden edge cases) give, at the norm's kink Δ = 0, the zero
    subgradient (no NaN). Exact, so tighter than the reference's finite differences can say."""
    for student, teacher in ((np.zeros_like(FS), FT), (FS, FS)):
        g = grad_of(tat.at_loss, student, t(teacher), convention=convention, p_norm=p_norm)
        assert torch.equal(g, torch.zeros_like(g))


def test_near_zero_maps_of_section_5():
    """§5 (the zero map's exact values, and the values at features × 1e-3, are golden edge cases):
    student × 1e-7 lies inside the clamp (‖q‖ < 1e-12): q̂ = q/ε, and max |∂L/∂A| = 35771.085.
    The clamp leaves features × 1e-3 alone (to rounding); KD-Zoo's additive ε moves them already."""
    g = grad_of(tat.at_loss, FS * 1e-7, t(FT), convention="official")
    assert g.abs().max().item() == pytest.approx(35771.085, abs=5e-4)
    official = ref.at_loss(FS * 1e-3, FT, convention="official")
    assert official == pytest.approx(ref.at_loss(FS, FT, convention="official"), rel=1e-12)


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

