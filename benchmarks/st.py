"""ST benchmark: kdref's soft-target loss against the form most KD code writes.

The popular form (as in many training scripts) computes ``log(softmax(s/T))`` and the teacher's
``softmax(t/T)`` separately and calls ``kl_div``; kdref uses log-softmax on both sides. Both are
O(N·C); the point of this case is that kdref's stability costs nothing.
"""

from __future__ import annotations

import torch

from kdref.bench import Benchmark
from kdref.torch.st import soft_target_loss

T = 4.0


def make_inputs(device, dtype, n=256, c=1000):
    g = torch.Generator().manual_seed(0)
    student = (3 * torch.randn(n, c, generator=g)).to(device, dtype).requires_grad_(True)
    teacher = (3 * torch.randn(n, c, generator=g)).to(device, dtype)
    return {"student": student, "teacher": teacher}


def naive(x):
    log_q = torch.log(torch.softmax(x["student"] / T, dim=1))
    p = torch.softmax(x["teacher"] / T, dim=1)
    return torch.nn.functional.kl_div(log_q, p, reduction="batchmean") * T * T


BENCHMARKS = [
    Benchmark(name="N256_C1000", description="T²·KL, batch 256, 1000 classes", make_inputs=make_inputs,
              variants={"kdref": lambda x: soft_target_loss(x["student"], x["teacher"], T), "naive": naive}),
]
