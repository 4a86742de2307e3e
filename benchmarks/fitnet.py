"""FitNet benchmark: kdref's regressed hint loss against the way FitNet code usually writes it.

The popular form (RepDistiller's ``ConvReg`` + ``nn.MSELoss``, here in our own functional words)
runs the regressor layer by layer and then the mean squared error; the straightforward
transcription of the paper's loss squares the residual and sums it. kdref runs the same layers
and reduces with one fused squared-error sum, which keeps no residual tensor for the backward
pass. Realistic size: batch 64, a student map 128×16×16 regressed by a 1×1 convolution to a
teacher hint 256×16×16 (a CIFAR ResNet's middle stage).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdref.bench import Benchmark
from kdref.torch.fitnet import hint_loss, regressed_hint_loss

N, C_S, C_T, HW = 64, 128, 256, 16


def make_inputs(device, dtype):
    g = torch.Generator().manual_seed(0)

    def randn(*shape, scale=1.0, grad=False):
        return (scale * torch.randn(*shape, generator=g)).to(device, dtype).requires_grad_(grad)

    return {
        "v_g": torch.relu(randn(N, C_S, HW, HW)).requires_grad_(True),
        "u_t": torch.relu(randn(N, C_T, HW, HW)),
        "weight": randn(C_T, C_S, 1, 1, scale=C_S**-0.5, grad=True),
        "bias": randn(C_T, scale=0.1, grad=True),
        "bn_weight": (1 + randn(C_T, scale=0.1)).requires_grad_(True),
        "bn_bias": randn(C_T, scale=0.1, grad=True),
    }


def make_pair(device, dtype):
    g = torch.Generator().manual_seed(1)
    r_s = torch.randn(N, C_T, HW, HW, generator=g).to(device, dtype).requires_grad_(True)
    return {"r_s": r_s, "u_t": torch.randn(N, C_T, HW, HW, generator=g).to(device, dtype)}


def naive_convreg_mse(x):
    """RepDistiller-style: conv → BatchNorm (batch statistics) → ReLU, then the mean squared error."""
    z = F.conv2d(x["v_g"], x["weight"], x["bias"])
    r = torch.relu(F.batch_norm(z, None, None, x["bn_weight"], x["bn_bias"], training=True))
    return F.mse_loss(r, x["u_t"])


def naive_paper(x):
    """The paper's formula as usually transcribed: ½ Σ (u − r)² / N on the regressed student."""
    r = torch.relu(F.conv2d(x["v_g"], x["weight"], x["bias"]))
    return 0.5 * (x["u_t"] - r).pow(2).sum() / r.shape[0]


def naive_pair(x):
    return 0.5 * (x["u_t"] - x["r_s"]).pow(2).sum() / x["r_s"].shape[0]


def kdref_convreg_mse(x):
    regressor = {"layer.weight": x["weight"], "layer.bias": x["bias"], "bn.weight": x["bn_weight"],
                 "bn.bias": x["bn_bias"]}
    return regressed_hint_loss(x["v_g"], x["u_t"], regressor, kind="conv1x1", convention="mse")


def kdref_paper(x):
    return regressed_hint_loss(x["v_g"], x["u_t"], {"layer.weight": x["weight"], "layer.bias": x["bias"]},
                               kind="conv1x1")


BENCHMARKS = [
    Benchmark(name="B64_128to256_16x16_convreg_mse",
              description="conv1x1 + BatchNorm + ReLU regressor, mse (RepDistiller), batch 64, 128→256 ch, 16×16",
              make_inputs=make_inputs, variants={"kdref": kdref_convreg_mse, "naive": naive_convreg_mse}),
    Benchmark(name="B64_128to256_16x16_paper",
              description="conv1x1 + ReLU regressor, paper ½·Σ/N, batch 64, 128→256 ch, 16×16",
              make_inputs=make_inputs, variants={"kdref": kdref_paper, "naive": naive_paper}),
    Benchmark(name="B64_256x16x16_hint_only",
              description="hint loss alone on regressed student and teacher, paper ½·Σ/N, batch 64, 256×16×16",
              make_inputs=make_pair,
              variants={"kdref": lambda x: hint_loss(x["r_s"], x["u_t"]), "naive": naive_pair}),
]
