"""PKT benchmark: kdref's loss against the formulation the official code and every library use.

The popular form (passalis/probabilistic_kt, RepDistiller, mdistiller, torchdistill, KD-Zoo) is
already O(N² + ND): it normalises the rows with ``sqrt(sum(x**2)) + eps``, masks NaNs in place,
builds the two N × N cosine kernels with a matrix product and row-normalises them, then takes the
mean of ``P * log((P + eps) / (Q + eps))``. kdref computes the same value (``"official"``) with a
few more O(ND) and O(N²) steps: rows scaled before the norm, the cosine clipped, the teacher's side
under ``no_grad``. ``kdref-paper`` is the paper's convention (self-pairs masked, exact log).
"""

from __future__ import annotations

import torch

from kdref.bench import Benchmark
from kdref.torch.pkt import pkt_loss


def inputs(n: int, d_s: int, d_t: int):
    def make_inputs(device, dtype):
        g = torch.Generator().manual_seed(0)
        # pooled post-ReLU features, as the libraries feed them
        student = torch.relu(torch.randn(n, d_s, generator=g)).to(device, dtype).requires_grad_(True)
        teacher = torch.relu(torch.randn(n, d_t, generator=g)).to(device, dtype)
        return {"student": student, "teacher": teacher}

    return make_inputs


def naive(x, eps: float = 1e-7):
    """The official / library formula, in our own words."""

    def conditionals(z):
        z = z / (torch.sqrt(torch.sum(z**2, dim=1, keepdim=True)) + eps)
        z[z != z] = 0
        k = (z @ z.t() + 1.0) / 2.0
        return k / torch.sum(k, dim=1, keepdim=True)

    p, q = conditionals(x["teacher"].detach()), conditionals(x["student"])
    return torch.mean(p * torch.log((p + eps) / (q + eps)))


VARIANTS = {
    "kdref": lambda x: pkt_loss(x["student"], x["teacher"], convention="official"),
    "kdref-paper": lambda x: pkt_loss(x["student"], x["teacher"]),
    "naive": naive,
}

BENCHMARKS = [
    Benchmark(name="N128_D512", description="batch 128, pooled features of width 512 (ResNet-18 size)",
              make_inputs=inputs(128, 512, 512), variants=VARIANTS),
    Benchmark(name="N256_D512-2048", description="batch 256, student 512 / teacher 2048 (ResNet-50 teacher)",
              make_inputs=inputs(256, 512, 2048), variants=VARIANTS),
    Benchmark(name="N1024_D128", description="batch 1024, width 128: the N × N matrices dominate",
              make_inputs=inputs(1024, 128, 128), variants=VARIANTS),
]
