"""NST benchmark: kdref's Gram-matrix MMD² against the broadcast form most KD code writes.

The popular implementations (KD-Zoo, RepDistiller, mdistiller) compute each polynomial kernel
matrix as ``(a[:, None] * b[:, :, None]).sum(-1) ** 2``: an ``[N, C, C, HW]`` product summed over
the positions, three times (teacher–teacher, student–student, cross), and autograd materialises
tensors of that size again in the backward pass. kdref gets the same sums from batched matrix
products: ``[N, C, C]`` channel Gram matrices, or, for d = 2 when HW < C (as here), ``[N, HW, HW]``
spatial Gram matrices. ``kdref-channel`` forces the channel Gram matrices, to show what they cost
on their own. All variants compute KD-Zoo's value (full MMD², polynomial d = 2, c = 0, batch mean).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdref.bench import Benchmark
from kdref.torch.nst import nst_loss


def inputs(n: int, c_s: int, c_t: int, h: int, w: int):
    def make_inputs(device, dtype):
        g = torch.Generator().manual_seed(0)
        # post-ReLU-like maps, as the libraries feed them
        student = torch.relu(torch.randn(n, c_s, h, w, generator=g)).to(device, dtype).requires_grad_(True)
        teacher = torch.relu(torch.randn(n, c_t, h, w, generator=g)).to(device, dtype)
        return {"student": student, "teacher": teacher}

    return make_inputs


def naive(x):
    """Full MMD² with every kernel matrix built as a [N, C, C', HW] broadcast product."""
    s = F.normalize(x["student"].flatten(2), dim=2)
    t = F.normalize(x["teacher"].flatten(2), dim=2).detach()

    def mean_poly2(a, b):
        return (a.unsqueeze(1) * b.unsqueeze(2)).sum(dim=-1).pow(2).mean()

    return mean_poly2(t, t) + mean_poly2(s, s) - 2 * mean_poly2(s, t)


VARIANTS = {
    "kdref": lambda x: nst_loss(x["student"], x["teacher"], convention="kdzoo"),
    "kdref-channel": lambda x: nst_loss(x["student"], x["teacher"], convention="kdzoo", gram="channel"),
    "naive": naive,
}

BENCHMARKS = [
    Benchmark(name="N64_C256_8x8", description="poly d=2, batch 64, 256 channels, 8×8 (the issue's target case)",
              make_inputs=inputs(64, 256, 256, 8, 8), variants=VARIANTS,
              targets={"memory_ratio": 1 / 30, "time_ratio": 1 / 3}),
    Benchmark(name="N16_C64_16x16", description="poly d=2, batch 16, 64 channels, 16×16 (HW > C: channel Gram)",
              make_inputs=inputs(16, 64, 64, 16, 16), variants=VARIANTS),
    Benchmark(name="N32_C128-256_7x7", description="poly d=2, batch 32, student 128 / teacher 256 channels, 7×7",
              make_inputs=inputs(32, 128, 256, 7, 7), variants=VARIANTS),
]
