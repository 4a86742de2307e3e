"""SP benchmark: kdref's sp_loss against the straightforward formulation the libraries use.

RepDistiller, mdistiller and KD-Zoo all compute each layer pair the same direct way: flatten,
``G = Q @ Q.T``, ``F.normalize(G)``, then the squared difference summed and divided by b². That is
already the right algorithm (two b × b Gram matrices, O(b² d)); kdref computes the same, adding
input checks, float32 accumulation under autocast and the mask for all-zero rows, so the first two
cases measure that overhead (the aim is parity; no target is set, as the shared machine's noise is
larger than the difference). The third case is the regime the trace form is for, many samples and
few features (pooled 64-d embeddings, b = 4096, float64): ``kdref-trace`` builds only d × d Gram
matrices instead of the b × b ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdref.bench import Benchmark
from kdref.torch.sp import sp_loss


def inputs(b: int, student_shapes, teacher_shapes):
    def make_inputs(device, dtype):
        g = torch.Generator().manual_seed(0)
        # post-ReLU-like maps, as the libraries feed them
        student = [torch.relu(torch.randn(b, *s, generator=g)).to(device, dtype).requires_grad_(True)
                   for s in student_shapes]
        teacher = [torch.relu(torch.randn(b, *s, generator=g)).to(device, dtype) for s in teacher_shapes]
        return {"student": student, "teacher": teacher}

    return make_inputs


def naive(x):
    """The libraries' direct form, summed over the layer pairs (RepDistiller / mdistiller)."""
    total = 0.0
    for fs, ft in zip(x["student"], x["teacher"], strict=True):
        b = fs.shape[0]
        fs, ft = fs.view(b, -1), ft.detach().view(b, -1)
        g_s = F.normalize(fs @ fs.t())
        g_t = F.normalize(ft @ ft.t())
        total = total + (g_t - g_s).pow(2).sum() / (b * b)
    return total


DIRECT = {
    "kdref": lambda x: sp_loss(x["student"], x["teacher"]),
    "naive": naive,
}

BENCHMARKS = [
    Benchmark(name="b128_64x8x8", description="one pair, batch 128, student 64×8×8, teacher 256×8×8 "
                                              "(last stage of a CIFAR ResNet)",
              make_inputs=inputs(128, [(64, 8, 8)], [(256, 8, 8)]), variants=DIRECT),
    Benchmark(name="b64_3pairs", description="three pairs (KD-Zoo style), batch 64: 16×32×32, 32×16×16, 64×8×8",
              make_inputs=inputs(64, [(16, 32, 32), (32, 16, 16), (64, 8, 8)],
                                 [(64, 32, 32), (128, 16, 16), (256, 8, 8)]),
              variants=DIRECT),
    Benchmark(name="b4096_d64_float64", description="one pair, batch 4096, pooled 64-d embeddings, float64 "
                                                    "(b ≫ d: the trace form)",
              make_inputs=inputs(4096, [(64,)], [(128,)]),
              variants={**DIRECT, "kdref-trace": lambda x: sp_loss(x["student"], x["teacher"], trace_form=True)},
              dtype="float64"),
]
