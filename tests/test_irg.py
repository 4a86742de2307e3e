"""IRG tests the generic harness cannot state: the spec's intermediate values of Example D (the
max-normalised edge matrices and transformation vectors), the degenerate batches of irg.md §5 (value
and gradient), Caffe's backward pass (``caffe_gradients``), float32 at a large common offset, the
matching rule and the error messages."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kdref.proof import fd_gradient
from kdref.reference import irg as ref
from kdref.registry import GOLDEN_DIR
from kdref.torch import irg as tirg
from tests.helpers import assert_printed, t

GOLDEN = json.loads((GOLDEN_DIR / "irg.json").read_text(encoding="utf-8"))
S_L1, S_L2, T_L1, T_L2 = (np.asarray(GOLDEN["inputs"][k], dtype=np.float64) for k in ("S_L1", "S_L2", "T_L1", "T_L2"))
OFF_DIAGONAL = ([0, 0, 1], [1, 2, 2])


def torch_grad(student, teacher, s_logits=None, t_logits=None, **kwargs):
    """The loss and its gradients with respect to the student's layers (and logits) in float64."""
    s = [t(x, True) for x in student]
    z = None if s_logits is None else t(s_logits, True)
    loss = tirg.irg_loss(s, [t(x) for x in teacher], z, None if t_logits is None else t(t_logits), **kwargs)
    leaves = s + ([z] if z is not None else [])
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return loss.item(), [np.zeros(leaf.shape) if g is None else g.numpy() for leaf, g in zip(leaves, grads,
                                                                                              strict=True)]


# ------------------------------------------------------------------------------------------------
# irg.md §8, Example D: the values on the way to the loss


@pytest.mark.parametrize("side", ["reference", "torch"])
def test_example_d_normalised_edges_and_transformations(side):
    """§8 Example D: Â_T off-diagonal (0.4, 1, 1), Â_S (0.5, 1, 0.5), Σ over both triangles of the
    squared differences 0.52; v_S = (1, 0, 4)/4, v_T = (1, 4, 2)/4, Σ(Δ)² = 1.25."""
    golden = GOLDEN["official_normalised"]
    if side == "reference":
        A_t, A_s = (ref.normalize_by_max(ref.edge_matrix(x)) for x in (T_L2, S_L2))
        v_t, v_s = (ref.normalize_by_max(ref.transformation_vector(a, b)) for a, b in ((T_L1, T_L2), (S_L1, S_L2)))
    else:
        A_t, A_s = (tirg.normalize_by_max(tirg.edge_matrix(t(x))).numpy() for x in (T_L2, S_L2))
        v_t, v_s = (tirg.normalize_by_max(tirg.transformation_vector(t(a), t(b))).numpy()
                    for a, b in ((T_L1, T_L2), (S_L1, S_L2)))
    assert_printed(A_t[OFF_DIAGONAL], golden["edge_teacher_offdiagonal"])
    assert_printed(A_s[OFF_DIAGONAL], golden["edge_student_offdiagonal"])
    assert_printed(np.sum((A_t - A_s) ** 2), golden["edge_squared_difference_sum"])
    assert_printed(v_s, golden["transformation_student"])
    assert_printed(v_t, golden["transformation_teacher"])
    assert_printed(np.sum((v_t - v_s) ** 2), golden["transformation_squared_difference_sum"])


# ------------------------------------------------------------------------------------------------
# irg.md §5: degenerate batches


@pytest.mark.parametrize("convention", ["paper", "kdzoo", "official"])
def test_batch_of_one_has_no_edges(convention):
    """N = 1: the edge matrix is [[0]]. The paper's sum is 0; kdref defines the max-normalised
    matrix as 0 there (Caffe and KD-Zoo: 0/0 = NaN), so the edge term is 0 with zero gradient on
    both sides."""
    rng = np.random.default_rng(0)
    student, teacher = [rng.normal(size=(1, 3))], [rng.normal(size=(1, 4))]
    edges = dict(convention=convention, lambda1=0.0, lambda2=1.0, lambda3=0.0)
    assert ref.irg_loss(student, teacher, **edges) == 0.0
    value, (grad,) = torch_grad(student, teacher, **edges)
    assert value == 0.0
    assert np.all(grad == 0.0)


@pytest.mark.parametrize("side", ["reference", "torch"])
def test_kdzoo_edges_vanish_for_two_instances(side):
    """§5, N = 2 under KD-Zoo's max normalisation: the single off-diagonal distance normalises to 1
    in both networks, so the edge term is identically 0 (and its gradient); the vertex and
    transformation terms still inform. The features are multiples of 1/4, so the centred Gram and
    the distances are exact whatever the summation order: A_01 = A_10 = max A and A_01 / max A = 1.
    (With general floats the gemm may round G_01 and G_10 differently — it does for some shapes,
    depending on the BLAS path — and the edge term is then of order ε², not 0.)"""
    rng = np.random.default_rng(1)
    student, teacher = ([rng.integers(-8, 9, size=(2, d)) / 4.0 for _ in range(2)] for d in (3, 5))
    z_s, z_t = rng.normal(size=(2, 4)), rng.normal(size=(2, 4))
    edges = dict(convention="kdzoo", lambda1=0.0, lambda2=1.0, lambda3=0.0)
    others = dict(convention="kdzoo", transformations=[(0, 1)], match="kdzoo")
    if side == "reference":
        assert ref.irg_loss(student, teacher, z_s, z_t, **edges) == 0.0
        assert ref.irg_loss(student, teacher, z_s, z_t, **others) > 0.01
        return
    value, grads = torch_grad(student, teacher, z_s, z_t, **edges)
    assert value == 0.0
    assert all(np.all(g == 0.0) for g in grads)
    assert torch_grad(student, teacher, z_s, z_t, **others)[0] > 0.01


def test_kdzoo_collapsed_student_is_finite():
    """§5: every student instance identical — KD-Zoo's clamp at 1e-12 keeps the value and gradient
    finite (every off-diagonal distance clamps to 1e-12 and normalises to 1); kdref agrees across
    sides and gives the clamped entries zero gradient."""
    rng = np.random.default_rng(2)
    student = [np.tile(rng.normal(size=(1, 3)), (4, 1))]
    teacher = [rng.normal(size=(4, 5))]
    z_s, z_t = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    expected = ref.irg_loss(student, teacher, z_s, z_t, convention="kdzoo")
    value, (grad_f, grad_z) = torch_grad(student, teacher, z_s, z_t, convention="kdzoo")
    assert np.isfinite(expected) and abs(value - expected) <= 1e-12 * abs(expected)
    assert np.all(grad_f == 0.0), "clamped distances must not pass a gradient"
    assert np.all(np.isfinite(grad_z)) and np.any(grad_z != 0.0)
    # the collapsed matrix normalises to 1 off the diagonal: the same as any batch of two instances
    clamped = ref.normalize_by_max(ref.edge_matrix(student[0], 1e-12))
    np.testing.assert_array_equal(clamped, 1.0 - np.eye(4))


@pytest.mark.parametrize("convention", ["official", "paper"])
def test_collapsed_batch_without_clamp(convention):
    """Without a clamp a collapsed batch has the all-zero edge matrix. ``"official"`` divides by its
    max: kdref returns 0 with zero gradient there (Caffe: NaN). The paper's sum needs no division;
    its edge gradient at a collapsed student is 0 too (every squared distance is at its minimum)."""
    rng = np.random.default_rng(3)
    student, teacher = [np.tile(rng.normal(size=(1, 2)), (3, 1))], [rng.normal(size=(3, 2))]
    edges = dict(convention=convention, lambda1=0.0, lambda2=1.0, lambda3=0.0)
    np.testing.assert_array_equal(ref.normalize_by_max(ref.edge_matrix(student[0])), np.zeros((3, 3)))
    expected = ref.irg_loss(student, teacher, **edges)
    value, (grad,) = torch_grad(student, teacher, **edges)
    assert abs(value - expected) <= 1e-12 * expected
    assert np.all(grad == 0.0)


def test_duplicates_are_smooth_for_the_paper():
    """§5: squared distances (no square root) are smooth at duplicated instances: the torch gradient
    equals central differences of the reference there."""
    rng = np.random.default_rng(4)
    s = rng.normal(size=(4, 3))
    s[2] = s[0]
    inputs = {"student_features": [s], "teacher_features": [rng.normal(size=(4, 2))], "lambda1": 0.0}
    expected = fd_gradient(ref.irg_loss, inputs, "student_features")
    _, (grad,) = torch_grad(inputs["student_features"], inputs["teacher_features"], lambda1=0.0)
    np.testing.assert_allclose(grad.ravel(), expected, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------------------------
# Caffe's backward pass


def _frozen_official(student, teacher, lam2: float, lam3: float):
    """The official loss (edges on every layer, one-to-one; the transformation 0 → 1) with every
    batch maximum frozen at its value at ``student``: the function whose gradient Caffe's layers
    compute (up to the edge layer's ½)."""
    n = len(student[0])
    A_t = [ref.normalize_by_max(ref.edge_matrix(f)) for f in teacher]
    M_s = [np.max(ref.edge_matrix(f)) for f in student]
    v_t = ref.normalize_by_max(ref.transformation_vector(teacher[0], teacher[1]))
    m_s = np.max(ref.transformation_vector(student[0], student[1]))

    def loss(student_features):
        edges = sum(np.sum((a_t - ref.edge_matrix(f) / m) ** 2) for a_t, f, m in zip(A_t, student_features, M_s,
                                                                                       strict=True))
        v_s = ref.transformation_vector(student_features[0], student_features[1]) / m_s
        return lam2 * edges / (2 * n) + lam3 * np.sum((v_t - v_s) ** 2) / 2

    return loss


@pytest.mark.parametrize(("lam2", "lam3"), [(1.0, 0.0), (0.0, 1.0), (1.0, 1.0)])
def test_caffe_gradients(lam2, lam3):
    """irg.md §3: Caffe's BatchEuclideanMap backward is exactly ½ of the gradient of its forward
    with the max held constant; BatchEuclideanVector's is that gradient itself. With
    ``caffe_gradients=True`` the torch gradient is this (checked against central differences of
    the reference with frozen maxima), and the value is unchanged."""
    rng = np.random.default_rng(5)
    student = [rng.normal(size=(5, 4)), rng.normal(size=(5, 4))]
    teacher = [rng.normal(size=(5, 3)), rng.normal(size=(5, 3))]
    knobs = dict(convention="official", transformations=[(0, 1)], lambda2=lam2, lambda3=lam3)
    plain_value, plain = torch_grad(student, teacher, **knobs)
    value, caffe = torch_grad(student, teacher, caffe_gradients=True, **knobs)
    assert value == plain_value

    def frozen_gradient(lam2, lam3):
        return fd_gradient(_frozen_official(student, teacher, lam2, lam3), {"student_features": student},
                           "student_features")

    expected = 0.5 * frozen_gradient(lam2, 0.0) + frozen_gradient(0.0, lam3)
    actual = np.concatenate([g.ravel() for g in caffe])
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-8)
    # the true gradient moves the maxima too (the spec: up to 0.24 on a random 5×4 example)
    assert np.max(np.abs(np.concatenate([g.ravel() for g in plain]) - actual)) > 1e-3


def test_caffe_gradients_need_max_normalisation():
    s, z = [t(S_L2, True)], [t(T_L2)]
    with pytest.raises(ValueError, match=r"^caffe_gradients .* normalize='max'"):
        tirg.irg_loss(s, z, convention="paper", caffe_gradients=True)
    with pytest.raises(ValueError, match=r"^caffe_gradients must be one of False, True; got 1"):
        tirg.irg_loss(s, z, convention="official", caffe_gradients=1)


# ------------------------------------------------------------------------------------------------
# Precision


def test_float32_edges_at_a_large_common_offset():
    """§6: the uncentred Gram expansion loses ~30 % at offset/spread = 10/0.01 in float32; kdref's
    centred Gram keeps the paper's edge term to float32 precision (the reference sees the same
    float32-rounded inputs)."""
    rng = np.random.default_rng(6)
    student = [(10.0 + 0.01 * rng.normal(size=(8, 5))).astype(np.float32).astype(np.float64)]
    teacher = [(10.0 + 0.01 * rng.normal(size=(8, 3))).astype(np.float32).astype(np.float64)]
    expected = ref.irg_loss(student, teacher, lambda1=0.0)
    actual = tirg.irg_loss([torch.tensor(student[0], dtype=torch.float32)],
                           [torch.tensor(teacher[0], dtype=torch.float32)], lambda1=0.0)
    assert actual.dtype == torch.float32
    assert abs(actual.item() - expected) <= 1e-4 * expected


@pytest.mark.parametrize("scale", [1e-24, 1e20])
def test_max_normalisation_is_scale_free_in_float32(scale):
    """A max-normalised term does not depend on the features' scale; in float32 their squared
    distances under- or overflow at 1e-24 and 1e20, so kdref computes them from features rescaled
    by a power of two (exact) and keeps the value of unit-scale features."""
    rng = np.random.default_rng(7)
    student, teacher = [rng.normal(size=(4, 3)), rng.normal(size=(4, 3))], [rng.normal(size=(4, 2)),
                                                                             rng.normal(size=(4, 2))]
    expected = ref.irg_loss(student, teacher, convention="official", transformations=[(0, 1)])
    actual = tirg.irg_loss([torch.tensor(scale * f, dtype=torch.float32) for f in student],
                           [torch.tensor(scale * f, dtype=torch.float32) for f in teacher],
                           convention="official", transformations=[(0, 1)])
    assert abs(actual.item() - expected) <= 1e-5 * expected


# ------------------------------------------------------------------------------------------------
# The matching rule and the error messages


def test_kdzoo_matching_rule():
    """KD-Zoo's rule: a taller earlier map is adaptive-average pooled to the later map's size, and
    the later map's channel c becomes (f₂[2c] + f₂[2c+1]) / 2 when it has twice the channels."""
    rng = np.random.default_rng(8)
    f1, f2 = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 6, 2, 2))
    a, b = ref.match_transformation(f1, f2, "kdzoo")
    pooled = f1.reshape(2, 3, 2, 2, 2, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(a, pooled.reshape(2, -1), rtol=1e-14)
    np.testing.assert_allclose(b, ((f2[:, 0::2] + f2[:, 1::2]) / 2).reshape(2, -1), rtol=1e-14)
    ta, tb = tirg._match_transformation(t(f1), t(f2), "kdzoo")
    np.testing.assert_allclose(ta.numpy(), a, rtol=1e-14)
    np.testing.assert_allclose(tb.numpy(), b, rtol=1e-14)


@pytest.mark.parametrize("side", ["reference", "torch"])
def test_error_messages(side):
    """Each error names the argument at fault first."""
    fn = ref.irg_loss if side == "reference" else tirg.irg_loss

    def conv(x):
        return x if side == "reference" else t(x)

    rng = np.random.default_rng(9)
    s2, s3, s4 = (conv(rng.normal(size=(3, d))) for d in (2, 3, 4))
    maps = conv(rng.normal(size=(3, 2, 2, 2)))
    z = conv(rng.normal(size=(3, 5)))
    z2 = conv(rng.normal(size=(2, 5)))  # logits of a batch of 2: each other's shape, not the features' batch
    cases = [
        (dict(student_features=[s2, s3], teacher_features=[s2, s2], transformations=[(0, 1)], lambda1=0.0), ValueError,
         r"^student_features\[1\] must have the width of student_features\[0\] \(2\)"),
        (dict(student_features=[maps, s3], teacher_features=[s2, s2], transformations=[(0, 1)],
              match="kdzoo"), ValueError, r"^student_features\[1\] must have the width"),
        (dict(student_features=[s2, s2], teacher_features=[conv(rng.normal(size=(3, 2, 1))), s2],
              transformations=[(0, 1)], match="kdzoo"), ValueError,
         r"^teacher_features\[0\] must be \[N, C\] or \[N, C, H, W\]"),
        (dict(student_features=[s2, s2], teacher_features=[s2], mode="one_to_one", lambda1=0.0), ValueError,
         r"^teacher_features must hold as many layers as student_features \(2\)"),
        (dict(student_features=[s2], teacher_features=[s4], student_logits=z, lambda1=1.0), ValueError,
         r"^teacher_logits is required"),
        (dict(student_features=[s2], teacher_features=[s4], lambda1=1.0), ValueError, r"^student_logits is required"),
        (dict(student_features=[s2], teacher_features=[s4], student_logits=z, lambda1=0.0), ValueError,
         r"^student_logits was given without its counterpart"),
        (dict(student_features=[s2], teacher_features=[s4], student_logits=z2, teacher_logits=z2), ValueError,
         r"^student_logits must have the batch size of student_features\[0\]"),
        (dict(student_features=[s2], teacher_features=[s4], lambda1=0.0, transformations=[(0, 1)]), ValueError,
         r"^transformations\[0\] = \(0, 1\) indexes layer 1 of the teacher"),
        (dict(student_features=[s2], teacher_features=[s4], lambda1=0.0, transformations=[(0,)]), TypeError,
         r"^transformations\[0\] must be a pair"),
        (dict(student_features=[s2], teacher_features=[s4], lambda1=0.0, transformations=(0, 1)), TypeError,
         r"^transformations\[0\] must be a tuple of integer indices"),
        (dict(student_features=[s2], teacher_features=[s4], lambda1=0.0, mode="many"), ValueError, r"mode must be"),
        (dict(student_features=[s2], teacher_features=[s4], match="pool"), ValueError,
         r"^irg_loss: match must be one of"),
        (dict(student_features=s2, teacher_features=[s4], lambda1=0.0), TypeError, r"^student_features must be a list"),
    ]
    for kwargs, error, pattern in cases:
        with pytest.raises(error, match=pattern):
            fn(**{"lambda1": 0.0, **kwargs})
