"""FSP: kdref's batched-matmul FSP matrix against the broadcast formulation of popular code.

The naive variant is written here in our own words after RepDistiller's ``FSP`` loss: the FSP
matrix as the mean over positions of a broadcast product ``F¹[:, None] * F²[:, :, None]``, which
materialises an ``[N, n, m, h·w]`` tensor per pair (and another of that size in the backward
pass), then the same distance and reductions as kdref's convention. kdref computes
``bmm([N, m, hw], [N, hw, n]) / hw`` and never holds more than ``[N, m, n]`` per pair beyond the
inputs.

Shapes are those of a CIFAR ResNet at batch 64: stages of 64, 128 and 256 channels at 32×32,
16×16 and 8×8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdref.bench import Benchmark
from kdref.torch.fsp import fsp_loss

BATCH = 64
#: (channels, side) of the three stages
STAGES = ((64, 32), (128, 16), (256, 8))


def _maps(shapes, device, dtype, seed: int) -> dict:
    """Student maps (requires_grad) and teacher maps for the (first, second) shapes of each pair."""
    generator = torch.Generator().manual_seed(seed)
    inputs = {}
    for i, pair in enumerate(shapes):
        for role, (c, side) in zip(("first", "second"), pair, strict=True):
            for who in ("student", "teacher"):
                x = torch.randn(BATCH, c, side, side, generator=generator).to(device=device, dtype=dtype)
                inputs[f"{who}_{role}_{i}"] = x.requires_grad_(who == "student")
    return inputs


def within_sections(device, dtype) -> dict:
    """The paper's layer choice: the first and last map of each section, same size, no pooling."""
    return _maps([((c, s), (c, s)) for c, s in STAGES], device, dtype, seed=0)


def across_stages(device, dtype) -> dict:
    """KD-Zoo's and RepDistiller's choice: consecutive stage outputs, the larger map pooled."""
    return _maps([(STAGES[i], STAGES[i + 1]) for i in range(len(STAGES) - 1)], device, dtype, seed=1)


def _lists(x: dict) -> dict:
    pairs = len([k for k in x if k.startswith("student_first_")])
    return {name: [x[f"{name}_{i}"] for i in range(pairs)]
            for name in ("student_first", "student_second", "teacher_first", "teacher_second")}


def _naive_fsp(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """G through a broadcast product and a mean over positions, as RepDistiller computes it
    (its [N, n, m] orientation: the same entries)."""
    if f1.shape[2] > f2.shape[2]:
        f1 = F.adaptive_avg_pool2d(f1, f2.shape[2:])
    elif f2.shape[2] > f1.shape[2]:
        f2 = F.adaptive_avg_pool2d(f2, f1.shape[2:])
    a = f1.unsqueeze(1).flatten(3)  # [N, 1, m, hw]
    b = f2.unsqueeze(2).flatten(3)  # [N, n, 1, hw]
    return (a * b).mean(-1)


def naive_loss(x: dict, per_pair: str) -> torch.Tensor:
    """Σ over pairs of the batch-mean per-pair distance: ``"sq"`` (paper) or ``"mse"`` (RepDistiller)."""
    lists = _lists(x)
    total = 0
    for s1, s2, t1, t2 in zip(*lists.values(), strict=True):
        delta = _naive_fsp(s1, s2) - _naive_fsp(t1.detach(), t2.detach())
        total = total + (delta.pow(2).sum() / delta.shape[0] if per_pair == "sq" else delta.pow(2).mean())
    return total


BENCHMARKS = [
    Benchmark(
        name="paper, 3 pairs within sections",
        description="B=64, pairs (64ch 32×32)², (128ch 16×16)², (256ch 8×8)², convention='paper'",
        make_inputs=within_sections,
        variants={"kdref": lambda x: fsp_loss(**_lists(x)), "naive": lambda x: naive_loss(x, "sq")},
    ),
    Benchmark(
        name="repdistiller, 2 pairs across stages",
        description="B=64, pairs 64ch 32×32 → 128ch 16×16 and 128ch 16×16 → 256ch 8×8, avg pooling, "
                    "convention='repdistiller'",
        make_inputs=across_stages,
        variants={"kdref": lambda x: fsp_loss(**_lists(x), convention="repdistiller"),
                  "naive": lambda x: naive_loss(x, "mse")},
    ),
]
