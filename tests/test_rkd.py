"""RKD tests the generic harness cannot state (rkd.md §5's degenerate values are golden edge cases):
the spec's hand-check values, the potentials' permutation equivariance, the collapsed student's zero
gradient and the duplicates' masked one, the chunked angle term, float32 safety with a large common
offset, and the angle term's own knobs."""

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
T_A, S_A, S_DUP, T_B = (np.asarray(GOLDEN["inputs"][k], dtype=np.float64) for k in ("t_a", "s_a", "s_dup", "t_b"))
HAND = GOLDEN["hand_check"]
#: the two potentials of each side, NumPy in and out
POTENTIALS = {
    "reference": (ref.distance_potential, ref.angle_potential),
    "torch": (lambda x: trkd.distance_potential(t(x)).numpy(), lambda x: trkd.angle_potential(t(x)).numpy()),
}


def student_gradient(fn, student, teacher, **kw) -> np.ndarray:
    s = t(student, requires_grad=True)
    fn(s, t(teacher), **kw).backward()
    return s.grad.numpy()


@pytest.mark.parametrize("side", POTENTIALS)
def test_hand_check_values_and_permutation_equivariance(side):
    """rkd.md §8: μ_T, μ_S, ψ_D of the first pair on both networks, the teacher's cosine at t_0 (vertex
    first: ψ_A(t_1, t_0, t_2)). Permuting the batch permutes the potentials: ψ_D → PψP^T, A_jik → A_π(j)π(i)π(k)."""
    dist, angle = POTENTIALS[side]
    psi_t, psi_s = dist(T_A), dist(S_A)
    assert_printed([np.sqrt(5) / psi_t[0, 1], np.sqrt(2) / psi_s[0, 1]], [HAND["mu_t_a"], HAND["mu_s_a"]])
    assert_printed([psi_t[0, 1], psi_s[0, 1], angle(T_A)[0, 1, 2]],
                   [HAND["psi_d_t01"], HAND["psi_d_s01"], HAND["cos_t_vertex0_1_2"]])
    order = np.array([4, 2, 0, 5, 1, 3])
    np.testing.assert_allclose(dist(T_B[order]), dist(T_B)[np.ix_(order, order)], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(angle(T_B[order]), angle(T_B)[np.ix_(order, order, order)], rtol=1e-12, atol=1e-14)


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
def test_degenerate_batches(side):
    """rkd.md §5 (its values, and the batches of one and two, are golden edge cases). A collapsed
    student (all rows equal) against teacher A has zero gradient (torch): every distance clamped,
    every edge of length 0. The mean over distinct triplets needs N = 3 (the distance term's refusal
    of N = 1 is generated from its declaration)."""
    module, cast = (ref, np.asarray) if side == "reference" else (trkd, t)
    with pytest.raises(ValueError, match=r"^student must have at least 3 samples"):
        module.rkd_angle_loss(cast(S_A[:2]), cast(T_A[:2]), reduction="mean")
    for loss in (trkd.rkd_distance_loss, trkd.rkd_angle_loss) if side == "torch" else ():
        assert np.all(student_gradient(loss, np.tile(S_A[:1], (4, 1)), T_A, convention="official") == 0)


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
    x32 = torch.tensor(100 + 0.01 * np.random.default_rng(1).standard_normal((64, 512)), dtype=torch.float32)
    exact = np.sqrt(ref.pairwise_sq_distances(x32.double().numpy()))
    sq = (x32 * x32).sum(1)
    uncentred = (sq[:, None] + sq[None] - 2 * x32 @ x32.T).clamp_min(1e-12).sqrt().double().numpy()
    off = ~np.eye(64, dtype=bool)
    assert np.max(np.abs(uncentred - exact)[off] / exact[off]) > 1e-2  # the comparison can fail
    truth = ref.distance_potential(x32.double().numpy())
    ours = trkd.distance_potential(x32).double().numpy()
    assert np.max(np.abs(ours - truth)[off] / truth[off]) < 1e-4


def test_angle_term_has_no_distance_knobs():
    """The angle potential is a cosine: the distance potential's knobs would not change it, so the
    angle term does not declare them, and both sides refuse them as unknown knobs (bad_input) instead
    of ignoring them; rkd_loss declares them, for its distance term."""
    assert [k.name for k in ref.RKD_ANGLE_LOSS.knobs] == ["tuples", "reduction"]
    assert [k.name for k in ref.RKD_LOSS.knobs] == [k.name for k in ref.RKD_DISTANCE_LOSS.knobs] == \
        ["tuples", "reduction", "clamp_sq", "mu", "squared"]
