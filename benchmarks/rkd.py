"""RKD benchmark: kdref's Gram-form, anchor-chunked angle term against the edge-vector form every
popular implementation writes.

The official code (and KD-Zoo, RepDistiller, mdistiller, torchdistill, which copy its arithmetic)
computes distances through the uncentred Gram matrix and the angle potential from the
``[N, N, D]`` tensor of edge vectors, normalised, then an ``[N, N, N]`` batched product — for the
student and the teacher, and autograd keeps the student's for the backward pass. ``naive`` below
is that formulation, written here. kdref computes the same value (convention ``"official"``,
distance weight 1, angle weight 2) from the two ``[N, N]`` squared-distance matrices, ``c``
anchors at a time.

At N = 1024 (student D = 512, teacher D = 1024) the naive form does not fit this machine: its
float32 tensors alone need about :func:`naive_bytes` = 26 GiB (edge vectors and their normalised
copies 2·N²·(D_s + D_t)·4 B = 12 GiB, three N³ tensors of cosines and their Huber terms, 12 GiB,
and the distances), so only kdref runs there, against an absolute target.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdref.bench import Benchmark
from kdref.torch.rkd import rkd_loss


def inputs(n: int, d_s: int, d_t: int):
    def make_inputs(device, dtype):
        g = torch.Generator().manual_seed(0)
        # pooled post-ReLU features: non-negative, with a common offset
        student = torch.relu(torch.randn(n, d_s, generator=g)).to(device, dtype).requires_grad_(True)
        teacher = torch.relu(torch.randn(n, d_t, generator=g)).to(device, dtype)
        return {"student": student, "teacher": teacher}

    return make_inputs


def naive_bytes(n: int, d_s: int, d_t: int, itemsize: int = 4) -> int:
    """Float32 bytes of the naive form's large tensors: edge vectors and their normalised copies of
    both networks, the student's and teacher's [N, N, N] cosines and the Huber terms, and the
    [N, N] distance matrices."""
    return itemsize * (2 * n * n * (d_s + d_t) + 3 * n**3 + 6 * n * n)


def _pdist(e):
    """Distances through the uncentred Gram matrix, clamped at 1e-12 before the square root, as the
    official ``pdist`` does."""
    sq = e.pow(2).sum(dim=1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=1e-12).sqrt().clone()
    d[range(len(e)), range(len(e))] = 0
    return d


def _angles(e):
    """[N, N, N] cosines at the first index from the normalised [N, N, D] edge vectors."""
    edges = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
    return torch.bmm(edges, edges.transpose(1, 2)).view(-1)


def naive(x):
    s, t = x["student"], x["teacher"]
    with torch.no_grad():
        t_d = _pdist(t)
        t_d = t_d / t_d[t_d > 0].mean()
        t_a = _angles(t)
    s_d = _pdist(s)
    s_d = s_d / s_d[s_d > 0].mean()
    distance = F.smooth_l1_loss(s_d, t_d, reduction="mean")
    angle = F.smooth_l1_loss(_angles(s), t_a, reduction="mean")
    return distance + 2 * angle


def kdref(x):
    return rkd_loss(x["student"], x["teacher"], convention="official", w_dist=1.0, w_angle=2.0)


BENCHMARKS = [
    Benchmark(name="N256_D512-1024", description="distance + angle, N = 256, student D 512, teacher D 1024 "
              "(the issue's target case)", make_inputs=inputs(256, 512, 1024),
              variants={"kdref": kdref, "naive": naive}, targets={"memory_ratio": 1 / 10, "time_ratio": 1.0}),
    Benchmark(name="N128_D512-1024", description="distance + angle, N = 128, student D 512, teacher D 1024",
              make_inputs=inputs(128, 512, 1024), variants={"kdref": kdref, "naive": naive}),
    Benchmark(name="N1024_D512-1024", description="distance + angle, N = 1024, student D 512, teacher D 1024; "
              f"naive not run: it needs ≈ {naive_bytes(1024, 512, 1024) / 2**30:.0f} GiB",
              make_inputs=inputs(1024, 512, 1024), variants={"kdref": kdref}, targets={"peak_bytes": 2**30}),
]
