"""RKD tests the generic harness cannot state: the spec's hand-check values (μ, potentials, a
cosine), the degenerate cases of rkd.md §5 in value and gradient, the chunked angle term, the
permutation equivariance of the potentials, float32 safety with a large common offset, and the
knobs' errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kdref.reference import rkd as ref
from kdref.registry import GOLDEN_DIR
from kdref.torch import rkd as trkd
from tests.helpers import assert_printed, t

GOLDEN = json.loads((GOLDEN_DIR / "rkd.json").read_text(encoding="utf-8"))
T_A, S_A, S_DUP, T_B, S_B = (np.asarray(GOLDEN["inputs"][k], dtype=np.float64)
                             for k in ("t_a", "s_a", "s_dup", "t_b", "s_b"))
HAND = GOLDEN["hand_check"]


def student_gradient(fn, student, teacher, **kw) -> np.ndarray:
    s = t(student, requires_grad=True)
    fn(s, t(teacher), **kw).backward()
    return s.grad.numpy()


@pytest.mark.parametrize("side", ["reference", "torch"])
def test_hand_check_values(side):
    """rkd.md §8: μ_T, ψ_D of the first pair on both networks, the teacher's cosine at t_0."""
    if side == "reference":
        psi_t, psi_s, cos = ref.distance_potential(T_A), ref.distance_potential(S_A), ref.angle_potential(T_A)
    else:
        psi_t, psi_s = trkd.distance_potential(t(T_A)).numpy(), trkd.distance_potential(t(S_A)).numpy()
        cos = trkd.angle_potential(t(T_A)).numpy()
    assert_printed(np.sqrt(5) / psi_t[0, 1], HAND["mu_t_a"])  # ‖t_0 − t_1‖ = √5
    assert_printed(np.sqrt(2) / psi_s[0, 1], HAND["mu_s_a"])  # ‖s_0 − s_1‖ = √2
    assert_printed(psi_t[0, 1], HAND["psi_d_t01"])
    assert_printed(psi_s[0, 1], HAND["psi_d_s01"])
    assert_printed(cos[0, 1, 2], HAND["cos_t_vertex0_1_2"])  # vertex first: ψ_A(t_1, t_0, t_2)


@pytest.mark.parametrize("side", ["reference", "torch"])
def test_potentials_are_permutation_equivariant(side):
    """Permuting the batch permutes the potentials the same way: ψ_D → PψP^T, A_jik → A_π(j)π(i)π(k)."""
    order = np.array([4, 2, 0, 5, 1, 3])
    if side == "reference":
        dist, angle = ref.distance_potential, ref.angle_potential
    else:
        def dist(x):
            return trkd.distance_potential(t(x)).numpy()

        def angle(x):
            return trkd.angle_potential(t(x)).numpy()
    np.testing.assert_allclose(dist(T_B[order]), dist(T_B)[np.ix_(order, order)], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(angle(T_B[order]), angle(T_B)[np.ix_(order, order, order)], rtol=1e-12, atol=1e-14)


def test_collapsed_student_official_values_and_zero_gradient():
    """rkd.md §5: a collapsed student (all rows equal) against teacher A gives 0.0366823 (distance)
    and 0.1706717 (angle) with zero gradient, every distance clamped and every edge of length 0."""
    collapsed = np.tile(S_A[:1], (4, 1))
    for loss, printed in ((trkd.rkd_distance_loss, "0.0366823"), (trkd.rkd_angle_loss, "0.1706717")):
        assert_printed(loss(t(collapsed), t(T_A), convention="official"), printed)
        assert np.all(student_gradient(loss, collapsed, T_A, convention="official") == 0)
    assert_printed(ref.rkd_distance_loss(collapsed, T_A, convention="official"), "0.0366823")
    assert_printed(ref.rkd_angle_loss(collapsed, T_A, convention="official"), "0.1706717")


@pytest.mark.parametrize("convention", ["paper", "official"])
def test_duplicate_samples_have_a_moderate_masked_gradient(convention):
    """rkd.md §5 example A: the official angle backward is ~7.9e9 at a duplicated student row. kdref's
    is the gradient with the zero-length edges held at cosine 0: equal to the gradient at the same
    point when those entries are constants, i.e. the limit from a direction that keeps them 0 —
    moving the duplicated pair together. Checked: finite, of order 1, and the two copies' gradients
    sum to the gradient of moving both rows at once (finite differences of the reference)."""
    g = student_gradient(trkd.rkd_loss, S_DUP, T_A, convention=convention)
    assert np.all(np.isfinite(g)) and np.max(np.abs(g)) < 10
    h = 1e-6
    for axis in range(S_DUP.shape[1]):
        step = np.zeros_like(S_DUP)
        step[[0, 1], axis] = h  # both copies move: the edge stays of length 0
        fd = (ref.rkd_loss(S_DUP + step, T_A, convention=convention)
              - ref.rkd_loss(S_DUP - step, T_A, convention=convention)) / (2 * h)
        assert abs(g[0, axis] + g[1, axis] - fd) <= 1e-6 * (1 + abs(fd))


@pytest.mark.parametrize("side", ["reference", "torch"])
def test_small_batches(side):
    """N = 1: no pair, the distance term raises; the angle sum over no triplet is 0. N = 2: both
    terms are identically 0 (the normalised distances are 1, no distinct triplet), with zero gradient."""
    dist = ref.rkd_distance_loss if side == "reference" else trkd.rkd_distance_loss
    angle = ref.rkd_angle_loss if side == "reference" else trkd.rkd_angle_loss
    cast = (lambda x: x) if side == "reference" else t
    with pytest.raises(ValueError, match=r"^student must have at least 2 samples"):
        dist(cast(S_A[:1]), cast(T_A[:1]))
    for convention in ("paper", "official"):
        assert float(angle(cast(S_A[:1]), cast(T_A[:1]), convention=convention)) == 0.0
        # exact: small-integer rows make d²_01 = d²_10 in any summation order, so d / μ = d / d = 1
        assert float(dist(cast(S_A[:2]), cast(T_A[:2]), convention=convention)) == 0.0
        # official: the i = k entries are cos = 1 in both networks, up to rounding
        assert abs(float(angle(cast(S_A[:2]), cast(T_A[:2]), convention=convention))) <= 1e-15
    with pytest.raises(ValueError, match=r"^student must have at least 3 samples"):
        angle(cast(S_A[:2]), cast(T_A[:2]), reduction="mean")
    if side == "torch":
        for loss in (trkd.rkd_distance_loss, trkd.rkd_angle_loss):
            assert np.all(student_gradient(loss, S_A[:2], T_A[:2]) == 0)


@pytest.mark.parametrize("tuples", ["distinct", "all"])
def test_chunks_change_memory_not_values(tuples, monkeypatch):
    """The angle term chunked over 1, 2, 5 or all anchors (``CHUNK_ELEMENTS`` = chunk · N²) gives the
    same value and gradient."""
    rng = np.random.default_rng(0)
    student, teacher = rng.standard_normal((11, 4)), rng.standard_normal((11, 7))
    student[3] = student[8]  # a zero-length edge too
    results = []
    for chunk in (1, 2, 5, None):
        monkeypatch.setattr(trkd, "CHUNK_ELEMENTS", trkd.CHUNK_ELEMENTS if chunk is None else chunk * 11 * 11)
        s = t(student, requires_grad=True)
        value = trkd.rkd_angle_loss(s, t(teacher), tuples=tuples)
        value.backward()
        results.append((value.item(), s.grad.numpy()))
    for value, grad in results[1:]:
        assert value == pytest.approx(results[0][0], rel=1e-13)
        np.testing.assert_allclose(grad, results[0][1], rtol=1e-11, atol=1e-13)


def test_float32_with_large_common_offset():
    """rkd.md §6: with offset 100 and spread 0.01, the uncentred Gram (official pdist) gets float32
    distances wrong by 550%; kdref centres first and stays near float32 rounding."""
    rng = np.random.default_rng(1)
    x = 100 + 0.01 * rng.standard_normal((64, 512))
    x32 = x.astype(np.float32).astype(np.float64)  # the float32 input, exactly
    truth = ref.distance_potential(x32)
    ours = trkd.distance_potential(torch.tensor(x32, dtype=torch.float32)).double().numpy()
    off = ~np.eye(64, dtype=bool)
    assert np.max(np.abs(ours - truth)[off] / truth[off]) < 1e-4
    xt = torch.tensor(x32, dtype=torch.float32)  # what an uncentred Gram would give
    sq = (xt * xt).sum(1)
    uncentred = (sq[:, None] + sq[None] - 2 * xt @ xt.T).clamp_min(1e-12).sqrt().double().numpy()
    exact = np.sqrt(ref.pairwise_sq_distances(x32))
    assert np.max(np.abs(uncentred - exact)[off] / exact[off]) > 1e-2  # the comparison can fail


def test_autocast_keeps_the_gram_in_float32():
    """Under bfloat16 autocast the distances and the loss stay float32: the value equals the float32
    value without autocast."""
    rng = np.random.default_rng(2)
    s = torch.tensor(rng.standard_normal((9, 16)), dtype=torch.float32)
    tt = torch.tensor(5 + rng.standard_normal((9, 32)), dtype=torch.float32)
    plain = trkd.rkd_loss(s, tt)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = trkd.rkd_loss(s, tt)
    assert auto.dtype == torch.float32
    assert auto.item() == pytest.approx(plain.item(), rel=1e-6)


@pytest.mark.parametrize("bad, message", [
    # chunk_size is no knob (it changes memory, not the value; CHUNK_ELEMENTS sets it): refused, not ignored
    ({"chunk_size": 0}, r"unknown knob.*chunk_size"),
    ({"chunk_size": 2.5}, r"unknown knob.*chunk_size"),
    ({"clamp_sq": -1.0}, r"^clamp_sq must be"),
    ({"w_dist": -1.0}, r"^w_dist must be"),
    ({"tuples": "pairs"}, r"tuples must be one of"),
])
def test_bad_knobs(bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        trkd.rkd_loss(t(S_A), t(T_A), **bad)
    with pytest.raises((ValueError, TypeError), match=message):
        ref.rkd_loss(S_A, T_A, **bad)


@pytest.mark.parametrize("knob, value", [("clamp_sq", 1e-12), ("mu", "positive"), ("squared", True)])
def test_angle_term_has_no_distance_knobs(knob, value):
    """The angle potential is a cosine: the distance potential's knobs would not change it, so the
    angle term refuses them instead of ignoring them (rkd_loss takes them, for its distance term)."""
    for angle, args in ((ref.rkd_angle_loss, (S_A, T_A)), (trkd.rkd_angle_loss, (t(S_A), t(T_A)))):
        with pytest.raises(ValueError, match=rf"unknown knob.*{knob}"):
            angle(*args, **{knob: value})
    assert np.isfinite(ref.rkd_loss(S_A, T_A, **{knob: value}))
    assert torch.isfinite(trkd.rkd_loss(t(S_A), t(T_A), **{knob: value}))
