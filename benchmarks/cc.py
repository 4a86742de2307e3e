"""CC benchmark: kdref's Horner-rule Gram matrices against the formulations popular code writes.

KD-Zoo normalises the rows, takes the cosine Gram matrix ``S`` and sums ``coef_p * S.pow(p)`` for
p = 0 … P before ``F.mse_loss``: P + 1 ``pow`` calls, each a new n × n matrix kept for the
backward pass. torchdistill builds each correlation matrix row by row in a Python loop (n
matrix-vector products, each series term from ``pow``) and takes ``torch.dist``. kdref computes one
Gram matrix per side and evaluates the series by Horner's rule (P multiply-adds, no ``pow``).
Every pair computes the same value: KD-Zoo's (``"kdzoo"``) or torchdistill's (``"torchdistill"``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kdref.bench import Benchmark
from kdref.torch.cc import cc_loss

GAMMA, P = 0.4, 2


def inputs(n: int, d_s: int, d_t: int):
    def make_inputs(device, dtype):
        g = torch.Generator().manual_seed(0)
        # 128-d embeddings, as the recipes feed CC (a linear layer on the pooled features)
        student = torch.randn(n, d_s, generator=g).to(device, dtype).requires_grad_(True)
        teacher = torch.randn(n, d_t, generator=g).to(device, dtype)
        return {"student": student, "teacher": teacher}

    return make_inputs


def kdzoo_naive(x):
    """KD-Zoo's form: cosine Gram matrix, Σ_p coef_p · S.pow(p), mean squared error."""

    def correlation(f):
        f = F.normalize(f, p=2, dim=1)
        sim = f @ f.t()
        out = 0.0
        for p in range(P + 1):
            out = out + math.exp(-2 * GAMMA) * (2 * GAMMA) ** p / math.factorial(p) * sim.pow(p)
        return out

    return F.mse_loss(correlation(x["student"]), correlation(x["teacher"].detach()))


def torchdistill_naive(x):
    """torchdistill's form: each row of the correlation matrix from its own matrix-vector product
    (a Python loop over the samples), the series term by term, torch.dist / n²."""

    def correlation(f):
        rows = []
        for i in range(f.shape[0]):
            dot = f[i : i + 1] @ f.t()
            row = 1.0
            for p in range(1, P + 1):
                row = row + (2 * GAMMA) ** p / math.factorial(p) * dot.pow(p)
            rows.append(math.exp(-2 * GAMMA) * row)
        return torch.cat(rows)

    n = x["student"].shape[0]
    return torch.dist(correlation(x["student"]), correlation(x["teacher"].detach()), 2) / (n * n)


KDZOO = {
    "kdref": lambda x: cc_loss(x["student"], x["teacher"], convention="kdzoo"),
    "naive": kdzoo_naive,
}
TORCHDISTILL = {
    "kdref": lambda x: cc_loss(x["student"], x["teacher"], convention="torchdistill"),
    "naive": torchdistill_naive,
}

BENCHMARKS = [
    Benchmark(name="kdzoo_N128_D128", description="KD-Zoo form, batch 128, 128-d embeddings",
              make_inputs=inputs(128, 128, 128), variants=KDZOO),
    Benchmark(name="kdzoo_N1024_D128-256", description="KD-Zoo form, batch 1024, student 128-d / teacher 256-d",
              make_inputs=inputs(1024, 128, 256), variants=KDZOO),
    Benchmark(name="torchdistill_N128_D128", description="torchdistill form (row loop), batch 128, 128-d",
              make_inputs=inputs(128, 128, 128), variants=TORCHDISTILL),
    Benchmark(name="torchdistill_N256_D128-256", description="torchdistill form (row loop), batch 256, "
              "student 128-d / teacher 256-d", make_inputs=inputs(256, 128, 256), variants=TORCHDISTILL),
]
