"""``kdref check`` on implementations written the way the popular libraries write them (from the
specs' descriptions of each library's code, §3–4), and on seeded bugs: each library-style loss is
named correctly, each bug is reported as no match with what is wrong, and nothing that is not a
match is ever called one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import kdref
from kdref.checker import check
from kdref.cli import main
from kdref.testing import assert_matches

ST = {"inputs": ["student", "teacher", "T"]}
#: a user who trains at T = 4 (the draws' temperatures up to 1e12 show where a formula loses its digits)
ST4 = {"inputs": ["student", "teacher", "T"], "fixed": {"T": 4.0}}


# ---------------------------------------------------------------------------------------------
# Library-style implementations, one per method (the teacher is left attached, as the libraries
# leave it to the training loop: detached=False)


def distill_kl(y_s, y_t, T):
    """RepDistiller's DistillKL (st.md §4): KL(p_t‖p_s) with batchmean, times T²."""
    return F.kl_div(F.log_softmax(y_s / T, dim=1), F.softmax(y_t / T, dim=1), reduction="batchmean") * T**2


def logits_mse(out_s, out_t):
    """KD-Zoo's Logits and torchdistill's MSELoss (logits.md §4): F.mse_loss."""
    return F.mse_loss(out_s, out_t)


def hint_mse(f_s, f_t):
    """RepDistiller's HintLoss (fitnet.md §4): nn.MSELoss on the regressed student."""
    return F.mse_loss(f_s, f_t)


def attention_official(g_s, g_t):
    """szagoruyko/attention-transfer's at_loss (at.md §3): F.normalize(x.pow(2).mean(1).view(N, -1))."""
    def at(x):
        return F.normalize(x.pow(2).mean(1).view(x.size(0), -1))

    return (at(g_s) - at(g_t)).pow(2).mean()


def pkt_official(output_net, target_net, eps=1e-7):
    """passalis/probabilistic_kt's cosine_similarity_loss (pkt.md §3), on flattened features."""
    def kernel(x):
        x = x.reshape(x.size(0), -1)
        x = x / (torch.sqrt(torch.sum(x**2, dim=1, keepdim=True)) + eps)
        x = torch.nan_to_num(x)
        k = (x @ x.T + 1.0) / 2.0
        return k / torch.sum(k, dim=1, keepdim=True)

    target, model = kernel(target_net), kernel(output_net)
    return torch.mean(target * torch.log((target + eps) / (model + eps)))


def similarity_preserving(g_s, g_t):
    """RepDistiller's Similarity (sp.md §4): row-normalised Gram, ‖G_t − G_s‖²_F / b², summed over pairs."""
    def one(f_s, f_t):
        b = f_s.shape[0]
        G_s = F.normalize(f_s.reshape(b, -1) @ f_s.reshape(b, -1).T)
        G_t = F.normalize(f_t.reshape(b, -1) @ f_t.reshape(b, -1).T)
        return ((G_t - G_s) ** 2).sum() / (b * b)

    return sum(one(f_s, f_t) for f_s, f_t in zip(g_s, g_t, strict=True))


def rkd_distance_official(student, teacher):
    """lenscloth/RKD's RkdDistance (rkd.md §3): √max(d², 1e-12) with a zero diagonal, over the mean of
    the positive distances, smooth-L1 averaged over all N² pairs."""
    def pdist(e):
        e = e.reshape(e.size(0), -1)
        sq = e.pow(2).sum(1)
        d = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2 * e @ e.T).clamp(min=1e-12).sqrt().clone()
        d[range(len(e)), range(len(e))] = 0
        return d

    t_d = pdist(teacher)
    t_d = t_d / t_d[t_d > 0].mean()
    d = pdist(student)
    d = d / d[d > 0].mean()
    return F.smooth_l1_loss(d, t_d, reduction="mean")


def nst_poly_mmd(g_s, g_t):
    """RepDistiller's NSTLoss (nst.md §4): maps normalised per channel, the full MMD² of the
    polynomial kernel (x·y)², mean over the batch."""
    s = F.normalize(g_s.view(g_s.size(0), g_s.size(1), -1), dim=2)
    t = F.normalize(g_t.view(g_t.size(0), g_t.size(1), -1), dim=2)

    def k(a, b):
        return (a @ b.transpose(1, 2)).pow(2)

    return k(t, t).mean() + k(s, s).mean() - 2 * k(s, t).mean()


def dml_kdzoo(out1, peers):
    """KD-Zoo's DML (dml.md §4): KL(p_peer‖p_self) with batchmean, one peer (K = 2)."""
    return F.kl_div(F.log_softmax(out1, dim=1), F.softmax(peers[0], dim=1), reduction="batchmean")


def fsp_kdzoo(s_first, s_second, t_first, t_second):
    """KD-Zoo's FSP (fsp.md §4): G = F¹F²ᵀ/(hw), the first map average-pooled when larger, F.mse_loss
    per pair, the pairs averaged by its training script."""
    def fsp(f1, f2):
        if f1.shape[2] > f2.shape[2]:  # KD-Zoo pools only a larger first map (a larger second one fails)
            f1 = F.adaptive_avg_pool2d(f1, f2.shape[2:])
        a, b = f1.flatten(2), f2.flatten(2)
        return a @ b.transpose(1, 2) / a.shape[2]

    terms = [F.mse_loss(fsp(a, b), fsp(c, d)) for a, b, c, d in zip(s_first, s_second, t_first, t_second,
                                                                    strict=True)]
    return sum(terms) / len(terms)


def cc_kdzoo(feat_s, feat_t, gamma=0.4, P=2):
    """KD-Zoo's CC (cc.md §4): rows F.normalize'd, the Gaussian RBF as its order-P Taylor series,
    F.mse_loss of the correlation matrices."""
    def correlation(f):
        f = F.normalize(f.reshape(f.shape[0], -1), p=2, dim=-1)
        sim = f @ f.T
        return sum(math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * sim.pow(p) for p in range(P + 1))

    return F.mse_loss(correlation(feat_s), correlation(feat_t))


def ab_official(source, target, margin=1.0):
    """bhheo/AB_distillation's criterion_alternative_L2 as RepDistiller's ABLoss uses it (ab.md §3–4):
    the squared hinges summed, divided by the batch, times 3/1000."""
    loss = ((source + margin) ** 2 * ((source > -margin) & (target <= 0)).float()
            + (source - margin) ** 2 * ((source <= margin) & (target > 0)).float())
    return torch.abs(loss).sum() / source.size(0) / 1000 * 3


def irg_kdzoo(feats_s, feats_t, out_s, out_t, w_vert=0.1, w_edge=5.0, w_tran=5.0):
    """KD-Zoo's IRG (irg.md §4) on the layers [feat, fm1, fm2]: vertex F.mse_loss; edges of every
    layer from the Gram expansion, clamped at 1e-12, diagonal 0, divided by the max, F.mse_loss, the
    mean of the layers; the transformation fm1 → fm2 (the earlier map pooled, channel pairs averaged)."""
    def edges(f):
        f = f.reshape(f.shape[0], -1)
        sq = f.pow(2).sum(1)
        d = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2 * f @ f.T).clamp(min=1e-12)
        d = d.clone()
        d[range(len(f)), range(len(f))] = 0
        return d / d.max()

    def transformation(fm1, fm2):
        if fm1.shape[2] > fm2.shape[2]:
            fm1 = F.adaptive_avg_pool2d(fm1, fm2.shape[2:])
        if fm1.shape[1] < fm2.shape[1]:
            fm2 = (fm2[:, 0::2] + fm2[:, 1::2]) / 2
        v = (fm1.reshape(fm1.shape[0], -1) - fm2.reshape(fm2.shape[0], -1)).pow(2).sum(1).clamp(min=1e-12)
        return v / v.max()

    vertex = F.mse_loss(out_s, out_t)
    edge = sum(F.mse_loss(edges(s), edges(t)) for s, t in zip(feats_s, feats_t, strict=True)) / len(feats_s)
    tran = F.mse_loss(transformation(feats_s[1], feats_s[2]), transformation(feats_t[1], feats_t[2]))
    return w_vert * vertex + w_edge * edge + w_tran * tran


def torchdistill_kd_loss(student_logits, teacher_logits, T, labels=None, alpha=None, beta=None):
    """torchdistill's KDLoss (st.md §4): α·CE + β·T²·KL with β = 1 − α by default, or the KL alone,
    without T², when α is unset or 0."""
    soft = F.kl_div(F.log_softmax(student_logits / T, 1), F.softmax(teacher_logits / T, 1), reduction="batchmean")
    if not alpha:
        return soft
    return alpha * F.cross_entropy(student_logits, labels) + (1 - alpha if beta is None else beta) * T * T * soft


def attention_kdzoo(fm_s, fm_t, p=2.0, eps=1e-6):
    """KD-Zoo's AT (at.md §4): F = Σ_c |A_c|^p, divided by ‖F‖ + 1e-6, F.mse_loss."""
    def at(fm):
        am = torch.abs(fm).pow(p).sum(1, keepdim=True)
        return am / (torch.norm(am, dim=(2, 3), keepdim=True) + eps)

    return F.mse_loss(at(fm_s), at(fm_t))


def attention_torchdistill_paper(fm_s, fm_t):
    """torchdistill's ATLoss(mode='paper') (at.md §4): ‖Q̂_S − Q̂_T‖₂ per example, mean over the batch."""
    def at(fm):
        return F.normalize(fm.pow(2).sum(1).flatten(1), dim=1)

    return (at(fm_s) - at(fm_t)).norm(dim=1).mean()


def pkt_kdzoo(output_net, target_net):
    """KD-Zoo's PKTCosSim (pkt.md §4): the official formula with ε = 1e-6."""
    return pkt_official(output_net, target_net, eps=1e-6)


def sp_kdzoo(g_s, g_t):
    """KD-Zoo's SP (sp.md §4): the pair terms averaged over the layer pairs."""
    return similarity_preserving(g_s, g_t) / len(g_s)


def sp_torchdistill(g_s, g_t):
    """torchdistill's SPKDLoss (sp.md §4): F.normalize(ZZᵀ, 1), i.e. L1 rows, ‖G_T − G_S‖²_F / b²."""
    def one(f_s, f_t):
        b = f_s.shape[0]
        G_s = F.normalize(f_s.reshape(b, -1) @ f_s.reshape(b, -1).T, 1)
        G_t = F.normalize(f_t.reshape(b, -1) @ f_t.reshape(b, -1).T, 1)
        return ((G_t - G_s) ** 2).sum() / (b * b)

    return sum(one(f_s, f_t) for f_s, f_t in zip(g_s, g_t, strict=True))


def rkd_angle_official(student, teacher):
    """lenscloth/RKD's RKdAngle (rkd.md §3): the cosines of every triplet's difference vectors
    (F.normalize), smooth-L1 averaged over all N³ entries."""
    def angles(e):
        e = e.reshape(e.size(0), -1)
        d = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
        return torch.bmm(d, d.transpose(1, 2)).view(-1)

    return F.smooth_l1_loss(angles(student), angles(teacher), reduction="mean")


def cc_torchdistill(feat_s, feat_t, gamma=0.4, P=2):
    """torchdistill's CCKDLoss (cc.md §4): the series of raw dot products (no normalisation),
    torch.dist(C_S, C_T) (not squared) / n²."""
    def correlation(f):
        f = f.reshape(f.shape[0], -1)
        sim = f @ f.T
        return math.exp(-2 * gamma) * sum((2 * gamma) ** p / math.factorial(p) * sim.pow(p) for p in range(P + 1))

    n = feat_s.shape[0]
    return torch.dist(correlation(feat_s), correlation(feat_t), 2) / (n * n)


def fsp_torchdistill(s_first, s_second, t_first, t_second):
    """torchdistill's FSPLoss (fsp.md §4): both maps max-pooled to the smaller size, G = F¹F²ᵀ/(hw),
    the column ℓ2 norms of ΔG summed over examples and columns, summed over pairs, / N."""
    def fsp(f1, f2):
        size = (min(f1.shape[2], f2.shape[2]), min(f1.shape[3], f2.shape[3]))
        a = F.adaptive_max_pool2d(f1, size).flatten(2)
        b = F.adaptive_max_pool2d(f2, size).flatten(2)
        return a @ b.transpose(1, 2) / a.shape[2]

    total = sum((fsp(a, b) - fsp(c, d)).norm(dim=1).sum() for a, b, c, d in zip(s_first, s_second, t_first, t_second,
                                                                                  strict=True))
    return total / s_first[0].shape[0]


def dml_official_tf(z_self, z_peers, eps=1e-8):
    """YingZhangDUT/Deep-Mutual-Learning (dml.md §3): Σ over peers of the batch mean of
    Σ_m p_l·log(ε + p_l/(p_k + ε))."""
    p_k = F.softmax(z_self, dim=1)
    total = 0
    for z in z_peers:
        p_l = F.softmax(z, dim=1)
        total = total + (p_l * torch.log(eps + p_l / (p_k + eps))).sum(1).mean()
    return total


def nst_official(fm_s, fm_t):
    """The official MXNet NST (nst.md §3): x/√(‖x‖² + 1e-10) per channel, mean k(y, y') − 2 mean k(y, x)
    of the polynomial kernel (the teacher–teacher term dropped), summed over the batch."""
    def maps(fm):
        x = fm.flatten(2)
        return x / torch.sqrt((x**2).sum(2, keepdim=True) + 1e-10)

    s, t = maps(fm_s), maps(fm_t)

    def k(a, b):
        return (a @ b.transpose(1, 2)).pow(2).mean((1, 2))

    return (k(s, s) - 2 * k(s, t)).sum()


IRG = {"inputs": ["student_features", "teacher_features", "student_logits", "teacher_logits"],
       "fixed": {"transformations": [(1, 2)]}}

LIBRARY_STYLE = [
    ("st", None, distill_kl, {**ST, "where": "T <"}, "kl_t2"),
    ("logits", None, logits_mse, {}, "kdzoo"),
    ("fitnet", None, hint_mse, {}, "mse"),
    ("at", None, attention_official, {}, "official"),
    ("pkt", None, pkt_official, {}, "official"),
    ("sp", None, similarity_preserving, {}, "paper"),
    ("rkd", "rkd_distance_loss", rkd_distance_official, {"near": True}, "official"),
    ("nst", None, nst_poly_mmd, {}, "kdzoo"),
    ("dml", None, dml_kdzoo, {}, "kdzoo"),
    ("fsp", None, fsp_kdzoo, {"inputs": ["student_first", "student_second", "teacher_first", "teacher_second"],
                              "near": True}, "kdzoo"),
    ("cc", None, cc_kdzoo, {}, "kdzoo"),
    ("ab", None, ab_official, {}, "official"),
    ("irg", None, irg_kdzoo, IRG, "kdzoo"),
    ("st", "torchdistill_kd_loss", torchdistill_kd_loss,
     {"inputs": ["student", "teacher", "T", "labels", "alpha", "beta"], "where": "T <"}, "torchdistill"),
    ("at", None, attention_kdzoo, {}, "kdzoo"),
    ("at", None, attention_torchdistill_paper, {}, "torchdistill_paper"),
    ("pkt", None, pkt_kdzoo, {}, "kdzoo"),
    ("sp", None, sp_kdzoo, {}, "kdzoo"),
    ("sp", None, sp_torchdistill, {}, "torchdistill"),
    ("rkd", "rkd_angle_loss", rkd_angle_official, {}, "official"),
    ("cc", None, cc_torchdistill, {}, "torchdistill"),
    ("fsp", None, fsp_torchdistill, {"inputs": ["student_first", "student_second", "teacher_first", "teacher_second"]},
     "torchdistill"),
    ("dml", None, dml_official_tf, {}, "official_tf"),
    ("nst", None, nst_official, {}, "official"),
]


@pytest.mark.parametrize(("method", "loss", "fn", "options", "convention"), LIBRARY_STYLE,
                         ids=[f"{row[0]}-{row[2].__name__}" for row in LIBRARY_STYLE])
def test_library_style_losses_are_named(method, loss, fn, options, convention):
    """Two library forms differ from their convention on some inputs, and the check names the
    convention as the nearest, differing only there: RKD's distances in the Gram form
    ‖a‖² + ‖b‖² − 2a·b (lenscloth/RKD's pdist) lose digits when the samples share a large offset
    (rkd.md §6); KD-Zoo's FSP pools the first map to the second's size whenever it is taller, even
    when it is narrower, where kdref's 'kdzoo' pools each axis to the smaller extent (maps of mixed
    aspect, which fsp.md §4 does not settle)."""
    options = dict(options)
    near, where = options.pop("near", False), options.pop("where", None)
    report = check(fn, method, loss, detached=False, max_examples=40, **options)
    names = {name for c in report.matches for name in (c, *report.verdict(c).aliases)}
    if where is not None and not names:  # log-probabilities lose T²·KL's digits at a large T: a match below
        assert list(report.matches_where) == [report.verdict(convention).convention], str(report)
        assert report.matches_where[report.verdict(convention).convention].startswith(where), str(report)
        assert "as a formula does that loses its digits there" in report.differences[0]
    elif near and not names:
        nearest = report.verdict(report.nearest)
        assert convention in (nearest.convention, *nearest.aliases), str(report)
        assert nearest.agree >= 0.8 * nearest.total and "the smallest input where it does" in str(report)
    else:
        assert convention in names, str(report)
    assert not report.findings, str(report)


# ---------------------------------------------------------------------------------------------
# Seeded bugs


def _kd(s, t, T, reduction="batchmean"):
    return F.kl_div(F.log_softmax(s / T, dim=1), F.softmax(t.detach() / T, dim=1), reduction=reduction)


def test_missing_t_squared_is_the_kl_convention_and_not_kl_t2():
    """The issue's user: a soft-target loss without T² is kdref's 'kl' convention, and asked for
    'kl_t2' the assertion says by which factor it is off."""
    report = check(lambda s, t, T: _kd(s, t, T), "st", **ST4)
    assert report.matches == ["kl"]
    with pytest.raises(AssertionError, match="expected convention 'kl_t2'"):
        assert_matches(lambda s, t, T: _kd(s, t, T), "st", convention="kl_t2", **ST4)
    report = check(lambda s, t: _kd(s, t, 4.0), "st", inputs=["student", "teacher"], fixed={"T": 4.0})
    assert report.matches == ["kl"]
    # over every temperature: the same convention below T = 1e8, where log-probabilities keep T²·KL's digits
    report = check(lambda s, t, T: _kd(s, t, T), "st", **ST)
    assert not report.matches and report.matches_where == {"kl": "T < 1e+08"}, str(report)


def test_elementwise_mean_is_a_factor_of_one_over_c():
    report = check(lambda s, t, T: _kd(s, t, T, "mean") * T * T, "st", **ST4)
    assert not report.matches
    assert report.nearest == "kl_t2"
    assert "times 1/C on every input" in report.differences[0], str(report)


def test_half_the_t_squared_factor_is_named():
    """KL × T lies between 'kl' and 'kl_t2', as near to each (they agree on the same inputs): the
    factor is named against whichever is reported."""
    report = check(lambda s, t, T: _kd(s, t, T) * T, "st", **ST)
    assert not report.matches and not report.matches_where, str(report)
    assert "times 1/T on every input" in str(report) or "times T on every input" in str(report), str(report)


def test_swapped_student_and_teacher():
    report = check(lambda s, t, T: F.kl_div(F.log_softmax(t.detach() / T, 1), F.softmax(s / T, 1),
                                            reduction="batchmean") * T * T, "st", **ST4)
    assert not report.matches
    assert "with the student and the teacher swapped" in report.differences[0], str(report)


def test_teacher_not_detached_is_a_problem_unless_the_loop_detaches():
    report = check(distill_kl, "st", **ST4)
    assert "kl_t2" in report.matches and not report.ok
    assert any("teacher receives a gradient" in f for f in report.findings)
    assert check(distill_kl, "st", detached=False, **ST4).ok


def test_off_by_one_batch_count():
    report = check(lambda s, t, T: _kd(s, t, T, "sum") * T * T / (s.shape[0] + 1), "st", **ST4)
    assert not report.matches and "times N/(N+1)" in report.differences[0], str(report)


def test_wrong_eps_placement_differs_at_zero_rows():
    """PKT with ε inside the square root instead of beside the norm: the same loss away from
    zero-norm rows, where it differs (shown with the smallest such input)."""
    def eps_inside(output_net, target_net, eps=1e-7):
        def kernel(x):
            x = x.reshape(x.size(0), -1)
            x = x / torch.sqrt(torch.sum(x**2, dim=1, keepdim=True) + eps)
            k = (x @ x.T + 1.0) / 2.0
            return k / torch.sum(k, dim=1, keepdim=True)

        target, model = kernel(target_net), kernel(output_net.detach() * 0 + output_net)
        return torch.mean(target.detach() * torch.log((target.detach() + eps) / (model + eps)))

    report = check(eps_inside, "pkt")
    assert not report.matches
    assert report.nearest in ("official", "kdzoo")
    assert "smallest input where it does" in str(report) or "differs on" in str(report), str(report)


def test_a_term_without_the_student_keeps_the_gradient():
    """The soft cross-entropy is KL plus the teacher's entropy: against 'kl_t2' the check says the
    values differ by a term that does not depend on the student (same gradients)."""
    def soft_ce_plus_constant(s, t, T):
        return (-(F.softmax(t.detach() / T, 1) * F.log_softmax(s / T, 1)).sum(1).mean() + 1.0) * T * T

    report = check(soft_ce_plus_constant, "st", **ST4)
    assert not report.matches
    assert any("does not depend on the student" in d for d in report.differences), str(report)


def test_a_gradient_that_is_not_the_values_is_a_problem():
    """Half the gradient through a detached copy: the same values, the wrong gradient (kdref's torch
    gradient, proven against the reference, is the yardstick)."""
    def half_gradient(s, t, T):
        kl = _kd(s, t, T) * T * T
        return (kl + kl.detach()) / 2

    report = check(half_gradient, "st", **ST4)
    assert report.matches == ["kl_t2"] and not report.ok
    assert any("gradient w.r.t. student differs from convention 'kl_t2'" in f for f in report.findings), str(report)


def test_malformed_inputs_accepted_silently_are_noted():
    report = check(lambda s, t, T: _kd(s, t, T) * T * T, "st", **ST4)
    assert report.ok
    assert any("student with a NaN entry (returns [nan])" in note for note in report.notes), str(report)


# ---------------------------------------------------------------------------------------------
# Dtypes, backends, modules, the command


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_correct_low_precision_losses_match(dtype):
    """No false alarm: a correct float32 or bfloat16 loss matches under its dtype's tolerance."""
    def kd(s, t, T):
        return _kd(s.float(), t.float(), T).to(s.dtype) * T * T if dtype == "bfloat16" else _kd(s, t, T) * T * T

    report = check(kd, "st", dtype=dtype, **ST4)
    assert "kl_t2" in report.matches, str(report)
    assert f"{dtype} on cpu" in str(report)


def test_numpy_implementation():
    def ba_caruana(s, t):
        return 0.5 * np.mean(np.sum((s - t) ** 2, axis=1))

    assert check(ba_caruana, "logits", backend="numpy").matches == ["paper"]


def test_module_and_the_command(tmp_path, capsys):
    class DistillKL(torch.nn.Module):
        def __init__(self, T: float = 4.0) -> None:
            super().__init__()
            self.T = T

        def forward(self, y_s, y_t):
            return _kd(y_s, y_t, self.T) * self.T**2

    assert check(DistillKL(), "st", inputs=["student", "teacher"], fixed={"T": 4.0}).ok
    # a float32 module as it would run on a GPU (device="cuda" there), unchanged
    report = kdref.check(DistillKL().float(), "st", inputs=["student", "teacher"], fixed={"T": 4.0}, dtype="float32",
                         device="cpu")
    assert report.ok and report.matches == ["kl_t2"], str(report)
    path = tmp_path / "my_losses.py"
    path.write_text("import torch.nn.functional as F\n"
                    "def kd(s, t, T=4.0):\n"
                    "    return F.kl_div(F.log_softmax(s / T, 1), F.softmax(t.detach() / T, 1), reduction='sum')\n")
    assert main(["check", f"{path}:kd", "--method", "st", "--input", "T=-", "--fixed", "T=4"]) == 1
    out = capsys.readouterr().out
    assert "matches no convention" in out and "times N on every input" in out
    assert main(["check", f"{path}:kd", "--method", "st", "--input", "T=-", "--fixed", "T=4",
                 "--fixed", "reduction='sum'"]) == 0
    assert "matches convention 'kl'" in capsys.readouterr().out


def test_bad_mappings_are_refused():
    with pytest.raises(ValueError, match=r"inputs names \['logits'\], which soft_target_loss does not take"):
        check(distill_kl, "st", inputs={"logits": 0})
    with pytest.raises(ValueError, match=r"positions 0, 1, \.\.\. without gaps"):
        check(distill_kl, "st", inputs={"student": 0, "teacher": 2})
    with pytest.raises(ValueError, match="dtype must be one of"):
        check(distill_kl, "st", dtype="float8")
