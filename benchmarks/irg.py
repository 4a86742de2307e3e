"""IRG benchmark: kdref's centred-Gram edges against the two straightforward formulations.

``naive`` is KD-Zoo's formulation, written here in our own words: each edge matrix from the
uncentred Gram expansion ``‖x_i‖² + ‖x_j‖² − 2 x_iᵀx_j``, clamped at 1e-12, a cloned matrix with its
diagonal overwritten, divided by its max, ``F.mse_loss`` per layer and the mean of the layers; the
transformation with KD-Zoo's pooling / channel-pair rule. ``naive-broadcast`` computes the edges the
way the paper's formula reads (and Caffe's layer loops), from the ``[N, N, d]`` tensor of pairwise
differences. All variants compute KD-Zoo's value (convention ``"kdzoo"``, weights 0.1 / 5 / 5).

kdref builds the same ``[N, N]`` matrices from the Gram matrix of the **centred** features: as cheap
as KD-Zoo's expansion, and exact where it cancels (features with a large common offset, e.g. after
a ReLU). The shapes are KD-Zoo's CIFAR ResNet stages: ``rb2`` (32 × 16 × 16), ``rb3`` (64 × 8 × 8),
``feat`` = GAP(rb3) and 10 logits; the student has half the channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdref.bench import Benchmark
from kdref.torch.irg import irg_loss


def inputs(n: int, c: int, side: int):
    """Student (``c`` channels in rb2, ``2c`` in rb3) and teacher (twice those), post-ReLU maps."""

    def make_inputs(device, dtype):
        g = torch.Generator().manual_seed(0)
        x = {}
        for who, width in (("s", c), ("t", 2 * c)):
            rb2 = torch.relu(torch.randn(n, width, side, side, generator=g))
            rb3 = torch.relu(torch.randn(n, 2 * width, side // 2, side // 2, generator=g))
            logits = torch.randn(n, 10, generator=g)
            for name, value in (("rb2", rb2), ("rb3", rb3), ("out", logits)):
                x[f"{who}_{name}"] = value.to(device, dtype).requires_grad_(who == "s")
        return x

    return make_inputs


def _edges_gram(fm):
    fm = fm.flatten(1)
    square = fm.pow(2).sum(dim=1)
    dist = (square.unsqueeze(0) + square.unsqueeze(1) - 2 * fm @ fm.t()).clamp(min=1e-12)
    dist = dist.clone()
    dist[range(len(fm)), range(len(fm))] = 0
    return dist / dist.max()


def _edges_broadcast(fm):
    fm = fm.flatten(1)
    dist = (fm.unsqueeze(0) - fm.unsqueeze(1)).pow(2).sum(dim=-1).clamp(min=1e-12)
    dist = dist * (1 - torch.eye(len(fm), dtype=fm.dtype, device=fm.device))
    return dist / dist.max()


def _transformation(fm1, fm2):
    if fm1.size(2) > fm2.size(2):
        fm1 = F.adaptive_avg_pool2d(fm1, (fm2.size(2), fm2.size(3)))
    if fm1.size(1) < fm2.size(1):
        fm2 = (fm2[:, 0::2] + fm2[:, 1::2]) / 2.0
    v = (fm1.flatten(1) - fm2.flatten(1)).pow(2).sum(dim=-1).clamp(min=1e-12)
    return v / v.max()


def _library(edges):
    def loss(x):
        s = [x["s_rb2"], x["s_rb3"], x["s_rb3"].mean(dim=(2, 3))]
        t = [x["t_rb2"].detach(), x["t_rb3"].detach(), x["t_rb3"].mean(dim=(2, 3)).detach()]
        vertex = F.mse_loss(x["s_out"], x["t_out"].detach())
        edge = sum(F.mse_loss(edges(a), edges(b)) for a, b in zip(s, t, strict=True)) / 3.0
        tran = F.mse_loss(_transformation(s[0], s[1]), _transformation(t[0], t[1]))
        return 0.1 * vertex + 5.0 * edge + 5.0 * tran

    return loss


def kdref_variant(x):
    s = [x["s_rb2"], x["s_rb3"], x["s_rb3"].mean(dim=(2, 3))]
    t = [x["t_rb2"], x["t_rb3"], x["t_rb3"].mean(dim=(2, 3))]
    return irg_loss(s, t, x["s_out"], x["t_out"], transformations=[(0, 1)], match="kdzoo",
                    convention="kdzoo")


VARIANTS = {"kdref": kdref_variant, "naive": _library(_edges_gram), "naive-broadcast": _library(_edges_broadcast)}

BENCHMARKS = [
    Benchmark(name="N64_C16_32x32", description="batch 64, student rb2 16×32×32 / rb3 32×16×16 (CIFAR ResNet ×0.5)",
              make_inputs=inputs(64, 16, 32), variants=VARIANTS),
    Benchmark(name="N128_C32_16x16", description="batch 128, student rb2 32×16×16 / rb3 64×8×8",
              make_inputs=inputs(128, 32, 16), variants=VARIANTS),
    Benchmark(name="N256_C32_8x8", description="batch 256, student rb2 32×8×8 / rb3 64×4×4",
              make_inputs=inputs(256, 32, 8), variants=VARIANTS),
]
