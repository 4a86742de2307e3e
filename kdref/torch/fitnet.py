r"""FitNet — hints for thin deep nets (Romero et al., 2015), PyTorch.

Computes the same functions as :mod:`kdref.reference.fitnet` (proven by the test harness) with the
same conventions and regressor geometry. The hint loss is one fused squared-error reduction
(``F.mse_loss(reduction="sum")``, which keeps no residual tensor for the backward pass) times the
convention's constant; the regressor is a functional twin of the reference (:func:`regressor`,
built on ``F.conv2d`` / ``F.conv_transpose2d`` / ``F.linear`` and ``F.batch_norm``) that the
learnable :class:`HintRegressor` calls with itself as the parameters, so that the module is proven
through the function. The teacher hint is detached; half-precision inputs are computed in
float32, the regressor included (autocast is switched off around it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdref.reference.fitnet import (
    _BN_EPS,
    ACTIVATIONS,
    HINT_LOSS,
    PARAMETERS,
    REGRESSED_HINT_LOSS,
    RegressorGeometry,
    _default_activation,
    _validate_regressor,
    regressor_geometry,
)
from kdref.torch._common import TORCH, accumulation_dtype

__all__ = ["HintRegressor", "RegressedHintLoss", "hint_loss", "regressed_hint_loss", "regressor"]

#: BatchNorm's running statistics among a module's tensors
_RUNNING = PARAMETERS[4:]


def _reduce(r_s: torch.Tensor, u_t: torch.Tensor, half: bool, reduction: str) -> torch.Tensor:
    """Σ (u − r)², scaled and divided as the knobs say; one fused reduction unless per-sample."""
    n, c, _, w = r_s.shape
    factor = 0.5 if half else 1.0
    if reduction == "none":
        return factor * F.mse_loss(r_s, u_t, reduction="none").sum(dim=(1, 2, 3))
    divisor = {"batchmean": n, "sum_rows": n * c * w, "mean": r_s.numel(), "sum": 1}[reduction]
    return F.mse_loss(r_s, u_t, reduction="sum") * (factor / divisor)


@HINT_LOSS.implement(TORCH)
def hint_loss(r_s: torch.Tensor, u_t: torch.Tensor, *, half: bool, reduction: str) -> torch.Tensor:
    r""":math:`\frac1N\sum_n \tfrac12\lVert u_n - r_n\rVert^2` by default (the paper's hint loss).

    Arguments, conventions and result as :func:`kdref.reference.fitnet.hint_loss`; inputs are
    tensors ``[N, C, H, W]`` of one shape on one device, and the result is a 0-d tensor (``[N]``
    for ``reduction="none"``).

    Examples:
      >>> import torch
      >>> r = torch.tensor([[[[0.5, 1.5], [0.0, 0.0], [2.0, 0.0]], [[0.25, 0.0], [1.0, 0.5], [0.0, 0.75]]],
      ...                   [[[0.0, 0.0], [1.0, 3.0], [0.5, 0.0]], [[1.5, 0.5], [0.0, 0.0], [0.25, 1.0]]]])
      >>> u = torch.tensor([[[[1.0, 1.0], [0.0, 0.5], [2.5, 0.0]], [[0.0, 0.0], [1.0, 0.5], [0.0, 1.0]]],
      ...                   [[[0.0, 0.5], [1.5, 2.0], [0.0, 0.0]], [[1.5, 0.0], [0.0, 0.0], [0.5, 1.0]]]])
      >>> hint_loss(r, u).item()
      0.796875
      >>> hint_loss(r, u, convention="official_conv_c01b").item()
      0.19921875
      >>> hint_loss(r, u, convention="mse").item()
      0.1328125
      >>> hint_loss(r, u, convention="sum").item()
      3.1875
    """
    dtype = accumulation_dtype(r_s)
    return _reduce(r_s.to(dtype), u_t.detach().to(dtype), half, reduction)


def _apply(v_g, params, geometry: RegressorGeometry, activation: str, bn_eps: float, momentum: float,
           training: bool) -> torch.Tensor:
    """The regressor on validated tensors of one dtype: layer, BatchNorm, activation. BatchNorm's
    running statistics, where ``params`` hold them, are updated in training mode and used otherwise."""
    weight, bias = params.get("layer.weight"), params.get("layer.bias")
    if geometry.layer == "identity":
        z = v_g
    elif geometry.layer == "linear":
        z = F.linear(v_g.flatten(1), weight, bias).view(v_g.shape[0], geometry.out_channels, *geometry.out_shape[1:])
    elif geometry.layer == "conv":
        z = F.conv2d(v_g, weight, bias, stride=geometry.stride, padding=geometry.padding)
    else:
        z = F.conv_transpose2d(v_g, weight, bias, stride=geometry.stride, padding=geometry.padding)
    if "bn.weight" in params:
        running_mean, running_var = params.get("bn.running_mean"), params.get("bn.running_var")
        z = F.batch_norm(z, running_mean, running_var, params["bn.weight"], params["bn.bias"],
                         training=training or running_mean is None, momentum=momentum, eps=bn_eps)
    if activation == "relu":
        return torch.relu(z)
    if activation == "maxout":
        # the first maximal piece takes the gradient at a tie (max with indices, not amax)
        return z.unflatten(1, (geometry.out_shape[0], geometry.pieces)).max(dim=2).values
    return z


def regressor(v_g: torch.Tensor, parameters=None, *, out_shape, kind: str = "conv_valid",
              activation: str | None = None, pieces: int = 1, bn_eps: float = _BN_EPS, bn_momentum: float = 0.1,
              training: bool = True) -> torch.Tensor:
    r"""The regressor :math:`r(v_g;\mathbf W_r) = \phi(\mathrm{BN}(\mathbf W_r * v_g + b))`, functionally.

    Arguments and result as :func:`kdref.reference.fitnet.regressor`, on tensors; ``parameters``
    is a :class:`HintRegressor` or a mapping of its parameter names to tensors. What a module's
    BatchNorm keeps between calls may be given too: ``"bn.running_mean"`` and ``"bn.running_var"``
    (updated in place with ``bn_momentum`` when ``training``). With ``training=False`` and running
    statistics, BatchNorm uses them (PyTorch's evaluation mode); that mode has no counterpart in
    the reference and is not part of the proof. The result is float32 for half-precision inputs.

    Examples:
      >>> import torch
      >>> v = torch.tensor([[[[0.5, 1.5], [-1.0, 0.0], [2.0, -0.5]]], [[[-2.0, 0.0], [1.0, 3.0], [0.5, -1.0]]]])
      >>> w, b = torch.tensor([1.0, -0.5]).view(2, 1, 1, 1), torch.tensor([0.0, 0.5])
      >>> regressor(v, {"layer.weight": w, "layer.bias": b}, out_shape=(2, 3, 2))[0].tolist()
      [[[0.5, 1.5], [0.0, 0.0], [2.0, 0.0]], [[0.25, 0.0], [1.0, 0.5], [0.0, 0.75]]]
    """
    return _checked_regressor(v_g, parameters, out_shape, kind, activation, pieces, bn_eps, bn_momentum, training)


def _checked_regressor(v_g, parameters, out_shape, kind, activation, pieces, bn_eps, momentum=0.1, training=True,
                       in_shape=None) -> torch.Tensor:
    """:func:`regressor` with its arguments checked as the reference checks them (``in_shape``: the
    map a module expects), then computed; BatchNorm's batch statistics are checked only where used."""
    checked, geometry, activation = _validate_regressor(TORCH, v_g, parameters, bn_eps, out_shape, kind, activation,
                                                        pieces, training, in_shape)
    return _regress(checked["v_g"], checked["parameters"], geometry, activation, checked["bn_eps"], momentum, training)


def _regress(v_g, params, geometry, activation, bn_eps, momentum, training) -> torch.Tensor:
    dtype = accumulation_dtype(v_g)
    # the running statistics are updated in place: they are not cast
    cast = {k: t if k in _RUNNING else t.to(dtype) for k, t in (params or {}).items()}
    # the regressor is part of the loss: under autocast it runs in float32 like the reduction
    with torch.autocast(device_type=v_g.device.type, enabled=False):
        return _apply(v_g.to(dtype), cast, geometry, activation, bn_eps, momentum, training)


@REGRESSED_HINT_LOSS.implement(TORCH)
def regressed_hint_loss(v_g: torch.Tensor, u_t: torch.Tensor, regressor: dict | None, bn_eps: float | None, *,
                        kind: str, activation: str | None, pieces: int, half: bool, reduction: str) -> torch.Tensor:
    r"""The hint loss of the regressed student, :math:`\mathcal L_{HT}(u_h, r(v_g;\mathbf W_r))`.

    Arguments, conventions and result as :func:`kdref.reference.fitnet.regressed_hint_loss`;
    ``regressor`` is a :class:`HintRegressor` or a mapping of its parameter names to tensors.
    Differentiable with respect to ``v_g`` and every regressor parameter, while ``u_t`` is
    detached. BatchNorm, when given, uses the batch's statistics and leaves a module's running
    statistics as they are; call the :class:`HintRegressor` (or use :class:`RegressedHintLoss`)
    for a layer that keeps them.

    Examples:
      >>> import torch
      >>> v = torch.tensor([[[[0.5, 1.5], [-1.0, 0.0], [2.0, -0.5]]], [[[-2.0, 0.0], [1.0, 3.0], [0.5, -1.0]]]])
      >>> u = torch.tensor([[[[1.0, 1.0], [0.0, 0.5], [2.5, 0.0]], [[0.0, 0.0], [1.0, 0.5], [0.0, 1.0]]],
      ...                   [[[0.0, 0.5], [1.5, 2.0], [0.0, 0.0]], [[1.5, 0.0], [0.0, 0.0], [0.5, 1.0]]]])
      >>> w, b = torch.tensor([1.0, -0.5]).view(2, 1, 1, 1), torch.tensor([0.0, 0.5])
      >>> regressed_hint_loss(v, u, {"layer.weight": w, "layer.bias": b}).item()
      0.796875
    """
    geometry = regressor_geometry(tuple(v_g.shape[1:]), tuple(u_t.shape[1:]), kind, pieces)
    params = {k: t for k, t in (regressor or {}).items() if k not in _RUNNING}  # the batch's statistics only
    r_s = _regress(v_g, params, geometry, _default_activation(kind, activation), _BN_EPS if bn_eps is None else bn_eps,
                   0.1, True)
    return _reduce(r_s, u_t.detach().to(r_s.dtype), half, reduction)


class HintRegressor(nn.Module):
    r"""The learnable regressor :math:`r(\cdot;\mathbf W_r)` from the student's guided map to the teacher's hint.

    Holds the layer its ``kind`` needs (see :func:`kdref.reference.fitnet.regressor_geometry`)
    as ``self.layer`` — an ``nn.Conv2d``, ``nn.ConvTranspose2d`` or ``nn.Linear`` with PyTorch's
    default initialisation, or ``None`` for ``"identity"`` — and, with ``batchnorm=True``, an
    ``nn.BatchNorm2d`` as ``self.bn``. Its parameters are named as the losses take them
    (``layer.weight``, ``layer.bias``, ``bn.weight``, ``bn.bias``): ``regressed_hint_loss(v_g, u_t,
    module)`` is the proven loss of this regressor. Its forward pass is :func:`regressor` called
    with the module itself; in evaluation mode BatchNorm uses its running statistics instead of
    the batch's.

    ``HintRegressor(s_shape, t_shape, kind="repdistiller", batchnorm=True)`` has RepDistiller's
    and mdistiller's ``ConvReg`` layers (ReLU by default; ``activation="none"`` for
    ``use_relu=False``).

    Args:
      in_shape: the student's guided map ``(C_s, H_s, W_s)``.
      out_shape: the teacher's hint ``(C_t, H_t, W_t)``.
      kind: ``"conv_valid"`` (default, the paper), ``"conv1x1"``, ``"repdistiller"``, ``"fc"`` or
        ``"identity"``.
      activation: ``"relu"``, ``"maxout"`` or ``"none"``; ``None``: ``"relu"`` (``"none"`` for
        ``"identity"``).
      pieces: maxout pieces per output channel (≥ 2 with ``"maxout"``, else 1).
      batchnorm: BatchNorm after the layer (RepDistiller, mdistiller, torchdistill); not in the paper.
      bias: the layer has a bias (True in all the implementations).
      bn_eps, bn_momentum: ``nn.BatchNorm2d``'s ``eps`` and ``momentum``.

    Examples:
      >>> reg = HintRegressor((16, 32, 32), (32, 16, 16), kind="repdistiller", batchnorm=True)
      >>> reg.layer
      Conv2d(16, 32, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1))
    """

    def __init__(self, in_shape, out_shape, kind: str = "conv_valid", activation: str | None = None,
                 pieces: int = 1, batchnorm: bool = False, bias: bool = True, bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.activation = _default_activation(kind, activation)
        self.geometry = regressor_geometry(in_shape, out_shape, kind, pieces)
        g = self.geometry
        if self.activation not in ACTIVATIONS or (self.activation == "maxout") != (g.pieces > 1):
            raise ValueError(f"activation must be one of {', '.join(map(repr, ACTIVATIONS))}, with pieces ≥ 2 "
                             f"exactly for 'maxout'; got {self.activation!r} and pieces={g.pieces}")
        if g.layer == "conv":
            self.layer = nn.Conv2d(g.in_shape[0], g.out_channels, g.kernel, stride=g.stride, padding=g.padding,
                                   bias=bias)
        elif g.layer == "conv_transpose":
            self.layer = nn.ConvTranspose2d(g.in_shape[0], g.out_channels, g.kernel, stride=g.stride,
                                            padding=g.padding, bias=bias)
        elif g.layer == "linear":
            self.layer = nn.Linear(g.weight_shape[1], g.weight_shape[0], bias=bias)
        else:
            self.layer = None
        if batchnorm and g.layer == "identity":
            raise ValueError("an identity regressor has no layer to follow with BatchNorm")
        self.bn = nn.BatchNorm2d(g.out_channels, eps=bn_eps, momentum=bn_momentum) if batchnorm else None

    def forward(self, v_g: torch.Tensor) -> torch.Tensor:
        """:math:`r(v_g)`, ``[N, C_t, H_t, W_t]``, from ``v_g`` ``[N, C_s, H_s, W_s]``: :func:`regressor`
        with the module itself as its parameters (and, in evaluation mode, BatchNorm's running statistics)."""
        g, bn = self.geometry, self.bn
        return _checked_regressor(v_g, None if self.layer is None else self, g.out_shape, g.kind, self.activation,
                                  g.pieces, _BN_EPS if bn is None else bn.eps, 0.1 if bn is None else bn.momentum,
                                  self.training, in_shape=g.in_shape)

    def extra_repr(self) -> str:
        return f"kind={self.geometry.kind!r}, activation={self.activation!r}, pieces={self.geometry.pieces}"


class RegressedHintLoss(nn.Module):
    r"""A :class:`HintRegressor` and the hint loss in one module: ``loss = module(v_g, u_t)``.

    Args:
      in_shape, out_shape: as :class:`HintRegressor`.
      convention: the hint loss's convention (``"paper"`` by default), as :func:`hint_loss`.
      **regressor_options: ``kind``, ``activation``, ``pieces``, ``batchnorm``, ... of
        :class:`HintRegressor`.

    Examples:
      >>> import torch
      >>> crit = RegressedHintLoss((128, 16, 16), (256, 16, 16), kind="conv1x1", convention="mse")
      >>> loss = crit(torch.randn(8, 128, 16, 16), torch.randn(8, 256, 16, 16))
      >>> loss.shape
      torch.Size([])
    """

    def __init__(self, in_shape, out_shape, convention: str | None = None, **regressor_options) -> None:
        super().__init__()
        self.knobs = dict(HINT_LOSS.resolve(convention))
        self.regressor = HintRegressor(in_shape, out_shape, **regressor_options)

    def forward(self, v_g: torch.Tensor, u_t: torch.Tensor) -> torch.Tensor:
        """The hint loss (:func:`hint_loss`) of the regressed ``v_g`` and the teacher hint ``u_t``."""
        out_shape = self.regressor.geometry.out_shape
        if isinstance(u_t, torch.Tensor) and tuple(u_t.shape[1:]) != out_shape:
            raise ValueError(f"u_t must have shape [N, {', '.join(map(str, out_shape))}] for this regressor, "
                             f"got {tuple(u_t.shape)}")
        r_s = self.regressor(v_g)
        # under autocast the regressor's float32 output meets a half-precision hint: compare in float32
        u_t = u_t.to(r_s.dtype) if isinstance(u_t, torch.Tensor) and u_t.is_floating_point() else u_t
        return hint_loss(r_s, u_t, half=self.knobs["half"], reduction=self.knobs["reduction"])
