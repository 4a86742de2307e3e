"""AT benchmark: kdref's attention-transfer loss against the form the popular code writes.

The popular form (the official code, RepDistiller, mdistiller, torchdistill) builds the map as
``fm.pow(2).mean(1)``: autograd then keeps an ``[N, C, H, W]`` square in the forward and builds
two more such temporaries in the backward (the broadcast of the mean's gradient and the power's
derivative). kdref reduces the channels in one fused pass and differentiates in one product
(``2·A·g``). Everything after the map is ``[N, H·W]`` and costs nothing in comparison. The issue
sets no target for AT: the ratios are reported, not asserted.

A third variant, ``kdref_unchecked``, runs kdref's computation without its input checks: the
finite check (``torch.isfinite(x).all()`` over every activation, skipped under ``torch.compile``)
costs more than the loss itself on a CPU, and this variant shows how the time splits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdref.bench import Benchmark
from kdref.reference.at import AT_LOSS, beta_factor
from kdref.torch.at import _pair_distance, at_loss, at_loss_multi


def _maps(shapes_s, shapes_t, device, dtype) -> dict:
    g = torch.Generator().manual_seed(0)
    # post-ReLU activations, as at the residual-group outputs AT is applied to
    student = [torch.randn(*s, generator=g).relu().to(device, dtype).requires_grad_(True) for s in shapes_s]
    teacher = [torch.randn(*s, generator=g).relu().to(device, dtype) for s in shapes_t]
    return {"fms_s": student, "fms_t": teacher}


def one_layer(device, dtype):
    return _maps([(64, 256, 16, 16)], [(64, 512, 16, 16)], device, dtype)


def wrn_groups(device, dtype):
    """The three group outputs of a CIFAR WRN-16-2 student and WRN-40-4 teacher (batch 128)."""
    return _maps([(128, 32, 32, 32), (128, 64, 16, 16), (128, 128, 8, 8)],
                 [(128, 64, 32, 32), (128, 128, 16, 16), (128, 256, 8, 8)], device, dtype)


def naive_attention(fm):
    return F.normalize(fm.pow(2).mean(1).view(fm.size(0), -1))


def naive_official(x):
    """The official ``at_loss`` summed over the pairs (RepDistiller and mdistiller are the same)."""
    return sum((naive_attention(s) - naive_attention(t.detach())).pow(2).mean()
               for s, t in zip(x["fms_s"], x["fms_t"], strict=True))


def naive_paper(x):
    """torchdistill's ``mode='paper'``: channel sum, non-squared norm per example, batch mean."""
    s, t = x["fms_s"][0], x["fms_t"][0].detach()
    qs = F.normalize(s.pow(2).sum(1).view(s.size(0), -1))
    qt = F.normalize(t.pow(2).sum(1).view(t.size(0), -1))
    return (qs - qt).norm(dim=1).sum() / s.size(0)


def unchecked(convention: str, beta: float = 1.0):
    """kdref's math on the pairs, summed, without validation (for the time split only)."""
    knobs = AT_LOSS.resolve(convention)
    factor = beta_factor(beta, knobs["halve_beta"])
    pair = {k: knobs[k] for k in ("p", "channel_reduce", "use_abs", "eps", "eps_mode", "distance", "p_norm", "spatial")}
    return lambda x: factor * sum(_pair_distance(s, t, **pair).mean()
                                  for s, t in zip(x["fms_s"], x["fms_t"], strict=True))


BENCHMARKS = [
    Benchmark(name="official_B64_C256_16x16", description="official convention, one pair, B=64, C=256/512, 16×16",
              make_inputs=one_layer,
              variants={"kdref": lambda x: at_loss(x["fms_s"][0], x["fms_t"][0], convention="official"),
                        "naive": naive_official, "kdref_unchecked": unchecked("official")}),
    Benchmark(name="paper_B64_C256_16x16", description="paper convention (β = 2), one pair, B=64, C=256/512, 16×16",
              make_inputs=one_layer,
              variants={"kdref": lambda x: at_loss(x["fms_s"][0], x["fms_t"][0], beta=2.0),
                        "naive": naive_paper, "kdref_unchecked": unchecked("paper", beta=2.0)}),
    Benchmark(name="official_WRN_3_groups", description="official convention, 3 WRN group outputs, B=128",
              make_inputs=wrn_groups,
              variants={"kdref": lambda x: at_loss_multi(x["fms_s"], x["fms_t"], convention="official"),
                        "naive": naive_official, "kdref_unchecked": unchecked("official")}),
]
