r"""AB — distillation of activation boundaries (Heo et al., AAAI 2019), PyTorch.

Computes the same functions as :mod:`kdref.reference.ab` (proven by the test harness) with the
same conventions. The squared hinge is one element-wise chain: the teacher's state picks the
sign, :math:`\ell = \sigma(\mu - \operatorname{sign}(t)\,s)^2` with :math:`\operatorname{sign}(t)
= +1` where :math:`t > 0` and :math:`-1` elsewhere, so no float masks and no second square are
materialised (the official code multiplies two squares by two float masks). The connector is a
functional 1×1 convolution and BatchNorm (``F.conv2d``, ``F.batch_norm`` with the batch's
statistics) that the learnable :class:`ABConnector` calls with its own parameters, so that the
module is proven through the function. The teacher is detached; half-precision inputs are
computed in float32, the connector included (autocast is switched off around it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kdref.reference.ab import AB_LOSS, AB_LOSS_MULTI, BN_EPS, CONNECTOR
from kdref.torch._common import TORCH, accumulation_dtype

__all__ = ["ABConnector", "ABLoss", "ab_loss", "ab_loss_multi", "activation_mismatch_rate", "connector"]


def _connect(x: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    r""":math:`r(x) = \mathrm{BN}_{\gamma,\beta}(W * x + b)` on checked tensors, in float32 at least."""
    dtype = accumulation_dtype(x)

    def cast(name):
        return params[name].to(dtype) if name in params else None

    # the connector is part of the loss: under autocast it runs in float32 like the reduction
    with torch.autocast(device_type=x.device.type, enabled=False):
        z = F.conv2d(x.to(dtype), cast("weight"), cast("bias"))
        return F.batch_norm(z, None, None, cast("bn_weight"), cast("bn_bias"), training=True, eps=BN_EPS)


def _per_image(s: torch.Tensor, t: torch.Tensor, margin: float) -> torch.Tensor:
    r""":math:`\sum_{c,h,w}\sigma(\mu - \operatorname{sign}(t)\,s)^2` per image, ``[N]``, in float32 at least."""
    dtype = accumulation_dtype(s)
    s = s.to(dtype)
    # ρ(t) = [t > 0]: an active teacher neuron asks s ≥ μ, an inactive one −s ≥ μ
    signed = torch.where(t.detach() > 0, s, -s)
    return F.relu(margin - signed).square().sum(dim=(1, 2, 3))


def _reduce_layer(s: torch.Tensor, t: torch.Tensor, margin: float, reduction: str) -> torch.Tensor:
    per_image = _per_image(s, t, margin)
    if reduction == "none":
        return per_image
    divisor = {"batchmean": s.shape[0], "mean": s.numel(), "sum": 1}[reduction]
    return per_image.sum() / divisor if divisor != 1 else per_image.sum()


@AB_LOSS.implement(TORCH)
def ab_loss(student: torch.Tensor, teacher: torch.Tensor, connector: Mapping[str, torch.Tensor] | None, *,
            margin: float, reduction: str, factor: float) -> torch.Tensor:
    r"""The alternative (squared-hinge) activation-boundary loss of one layer; by default
    :math:`\frac1N\sum_n\sum_{c,h,w}\big[\rho(t)\sigma(\mu-s)^2 + (1-\rho(t))\sigma(\mu+s)^2\big]`, μ = 1.

    Arguments, conventions and result as :func:`kdref.reference.ab.ab_loss`; the student and the
    connector receive gradients, the teacher is detached. The result is a 0-d tensor (``[N]`` for
    ``reduction="none"``), float32 for half-precision inputs.

    Examples:
      >>> import torch
      >>> s = torch.tensor([[[[1.0, -1.0, 0.0]], [[0.5, 2.0, -0.5]]], [[[-2.0, 0.25, 1.5]], [[-1.0, 0.0, 3.0]]]])
      >>> t = torch.tensor([[[[0.3, -0.2, 0.0]], [[1.0, -1.0, 0.5]]], [[[0.7, 0.0, -0.1]], [[-0.4, 2.0, 0.0]]]])
      >>> ab_loss(s, t).item()
      23.15625
      >>> ab_loss(s, t, margin=2.0, reduction="sum").item()
      93.8125
    """
    s = student if connector is None else _connect(student, connector)
    return factor * _reduce_layer(s, teacher, margin, reduction)


@AB_LOSS_MULTI.implement(TORCH)
def ab_loss_multi(students: list[torch.Tensor], teachers: list[torch.Tensor], weights: list[float] | None, *,
                  margin: float, reduction: str, factor: float, layer_weights: str,
                  reduce_layers: str) -> torch.Tensor:
    r""":math:`\phi\sum_k w_k d_k \mathcal L_k` over :math:`K` layers (``d_k = 2^{-(K-k)}`` for
    ``layer_weights="depth"``), divided by :math:`K` for ``reduce_layers="mean"``.

    As :func:`kdref.reference.ab.ab_loss_multi`; ``students`` and ``teachers`` are lists of tensors.

    Examples:
      >>> import torch
      >>> s = torch.tensor([[[[1.0, -1.0, 0.0]], [[0.5, 2.0, -0.5]]], [[[-2.0, 0.25, 1.5]], [[-1.0, 0.0, 3.0]]]],
      ...                  dtype=torch.float64)
      >>> t = torch.tensor([[[[0.3, -0.2, 0.0]], [[1.0, -1.0, 0.5]]], [[[0.7, 0.0, -0.1]], [[-0.4, 2.0, 0.0]]]],
      ...                  dtype=torch.float64)
      >>> print(f"{ab_loss_multi([s, s, s], [t, t, t], convention='official').item():.8g}")
      0.12157031
    """
    count = len(students)
    weights = [1.0] * count if weights is None else weights
    total = None
    for k, (w, s, t) in enumerate(zip(weights, students, teachers, strict=True)):
        d = 2.0 ** -(count - 1 - k) if layer_weights == "depth" else 1.0
        term = (w * d) * _reduce_layer(s, t, margin, reduction)
        total = term if total is None else total + term
    if reduce_layers == "mean":
        total = total / count
    return factor * total


@CONNECTOR.implement(TORCH)
def connector(student: torch.Tensor, connector: Mapping[str, torch.Tensor]) -> torch.Tensor:
    r"""The connector :math:`r(x) = \mathrm{BN}_{\gamma,\beta}(W * x + b)` with the batch's
    statistics, functionally; as :func:`kdref.reference.ab.connector`. ``connector`` is an
    :class:`ABConnector` or a mapping of its parameters; the result is float32 for half-precision
    inputs."""
    return _connect(student, connector)


def activation_mismatch_rate(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    r"""The fraction of neurons whose activation states differ, per image, ``[N]`` (a monitor, no
    gradient); as :func:`kdref.reference.ab.activation_mismatch_rate`. The official script prints
    ``1 - rate.mean()`` as the "activation similarity"."""
    if student.shape != teacher.shape:
        raise ValueError(f"teacher must have the shape of student {tuple(student.shape)}, got {tuple(teacher.shape)}")
    with torch.no_grad():
        return ((student > 0) != (teacher > 0)).to(accumulation_dtype(student)).mean(dim=(1, 2, 3))


class ABConnector(nn.Module):
    r"""The learnable connector :math:`r(\cdot)` from the student's width to the teacher's: a 1×1
    convolution (parameters ``weight`` ``[C_t, C_s, 1, 1]`` and, with ``bias=True``, ``bias``)
    followed by BatchNorm (``bn_weight`` :math:`\gamma = 1`, ``bn_bias`` :math:`\beta = 0`).

    Its forward pass is :func:`connector` called with the module itself, which the proof shows
    equal to the NumPy reference. BatchNorm always uses the batch's statistics (there are no
    running statistics): the connector only serves the AB stage, in training mode, and is
    discarded afterwards.

    Args:
      in_channels: the student's width :math:`C_s`.
      out_channels: the teacher's width :math:`C_t`.
      bias: a bias in the convolution (RepDistiller's ``ConvReg``); the official code and
        torchdistill's sample have none.
      init: ``"he"``, the official initialisation (normal, mean 0, standard deviation
        :math:`\sqrt{2/(k^2 C_t)}` with :math:`k = 1`), or ``"default"``, PyTorch's ``nn.Conv2d``
        initialisation (RepDistiller, torchdistill).

    Examples:
      >>> import torch
      >>> connector = ABConnector(16, 32)
      >>> connector(torch.randn(8, 16, 4, 4)).shape
      torch.Size([8, 32, 4, 4])
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = False, init: str = "he") -> None:
        super().__init__()
        if init not in ("he", "default"):
            raise ValueError(f"init must be 'he' or 'default', got {init!r}")
        conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=bias)
        if init == "he":
            nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / out_channels))
        self.weight = conv.weight
        self.bias = conv.bias if bias else None
        self.bn_weight = nn.Parameter(torch.ones(out_channels))
        self.bn_bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`r(x)`, ``[N, C_t, H, W]``, from the student's responses ``[N, C_s, H, W]``."""
        return connector(x, self)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, bias={self.bias is not None}"


def _float32_if_half(x):
    return x.to(accumulation_dtype(x)) if isinstance(x, torch.Tensor) and x.is_floating_point() else x


class ABLoss(nn.Module):
    r"""AB at several layers with their connectors: ``loss = module(students, teachers)``.

    One :class:`ABConnector` per layer whose widths differ (none where they are equal, as in the
    official code), then :func:`ab_loss_multi` under ``convention`` (``"paper"`` by default;
    ``"official"`` for the official CIFAR objective).

    Args:
      student_channels, teacher_channels: the widths of each layer pair, shallowest first.
      convention: the convention of :func:`ab_loss_multi`.
      bias, init: as :class:`ABConnector`.
      **knobs: knobs of :func:`ab_loss_multi` that override the convention (``margin=...``).

    Examples:
      >>> import torch
      >>> crit = ABLoss([16, 32], [32, 64], convention="official")
      >>> loss = crit([torch.randn(4, 16, 8, 8), torch.randn(4, 32, 4, 4)],
      ...             [torch.randn(4, 32, 8, 8), torch.randn(4, 64, 4, 4)])
      >>> loss.shape
      torch.Size([])
    """

    def __init__(self, student_channels: Sequence[int], teacher_channels: Sequence[int], convention: str | None = None,
                 bias: bool = False, init: str = "he", **knobs) -> None:
        super().__init__()
        if len(student_channels) != len(teacher_channels):
            raise ValueError(f"teacher_channels must hold one width per student layer ({len(student_channels)}), "
                             f"got {len(teacher_channels)}")
        self.knobs = dict(AB_LOSS_MULTI.resolve(convention, **knobs))
        self.connectors = nn.ModuleList(
            nn.Identity() if c_s == c_t else ABConnector(c_s, c_t, bias=bias, init=init)
            for c_s, c_t in zip(student_channels, teacher_channels, strict=True))

    def forward(self, students: Sequence[torch.Tensor], teachers: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(students) != len(self.connectors):
            raise ValueError(f"students must hold one map per layer ({len(self.connectors)}), got {len(students)}")
        # under autocast a connector returns float32 and an identity layer half precision: every
        # layer is compared in float32 then, its teacher too
        outputs = [_float32_if_half(c(s)) for c, s in zip(self.connectors, students, strict=True)]
        teachers = [t.to(r.dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t
                    for r, t in zip(outputs, teachers, strict=False)]
        return ab_loss_multi(outputs, teachers, **self.knobs)
