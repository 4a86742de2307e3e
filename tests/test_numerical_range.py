"""Scale-invariant losses at extreme but legal activation scales (issue "Right or refused at every
scale", #3): the normalisation makes them scale-free, so a float32 loss of activations scaled by up
to 1e30 must equal the float64 reference, not turn 0 or NaN because a sum of squares overflowed
before the norm divided it away (their norms are taken of the rows divided by their largest entry)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdref.reference import at as ref_at
from kdref.reference import cc as ref_cc
from kdref.reference import nst as ref_nst
from kdref.torch import at as torch_at
from kdref.torch import cc as torch_cc
from kdref.torch import nst as torch_nst

CASES = {
    # AT squares the activations, then the norm squares the map: overflow from ×3e9 (0 before the fix)
    # (up to the map's own overflow, |A|^p ≈ 3e38: not yet handled) and a tiny map inside ε (×1e-20)
    "at": (torch_at.at_loss, ref_at.at_loss, (2, 3, 4, 4), (2, 5, 4, 4), [1e9, 3e9, 1e15, 1e18, 1e-20],
           {"convention": "official"}),
    # NST normalises every channel map (0 at ×1e19 before the fix)
    "nst": (torch_nst.nst_loss, ref_nst.nst_loss, (2, 3, 4, 4), (2, 5, 4, 4), [1e19, 1e30], {}),
    # CC normalises every row (0 at ×1e20 before the fix)
    "cc": (torch_cc.cc_loss, ref_cc.cc_loss, (6, 5), (6, 7), [1e20, 1e30], {}),
}


@pytest.mark.parametrize("method", CASES)
def test_scale_free_losses_stay_right_at_large_scales_in_float32(method):
    loss, reference, s_shape, t_shape, scales, knobs = CASES[method]
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=s_shape).astype(np.float32), rng.normal(size=t_shape).astype(np.float32)
    unscaled = reference(s.astype(np.float64), t.astype(np.float64), **knobs)
    for scale in scales:
        big = (s * np.float32(scale)).astype(np.float32)  # float32 values (rounded once more by the scaling)
        expected = reference(big.astype(np.float64), t.astype(np.float64), **knobs)
        if scale >= 1:  # scale-free, to that rounding (a map inside ε is not)
            assert expected == pytest.approx(unscaled, rel=1e-5), (method, scale)
        got = loss(torch.from_numpy(big), torch.from_numpy(t), **knobs).item()
        assert got == pytest.approx(expected, rel=2e-5), (method, scale)
