r"""FitNet — hints for thin deep nets (Romero et al., 2015), NumPy reference.

A student that is *thinner and deeper* than its teacher is hard to train from the teacher's
outputs alone, so FitNets first teach it its middle. The output of a middle layer of the student
(the *guided* layer :math:`g`, output :math:`v_g`) is trained to predict the output of a middle
layer of the teacher (the *hint* layer :math:`h`, output :math:`u_h`). The two maps usually differ
in channels and size, so a small learnable *regressor* :math:`r(\cdot;\mathbf W_r)` on top of the
guided layer maps the student's map to the teacher's shape, and the squared error between the
regressed student and the hint is minimised (stage 1). The second stage trains the whole student
with knowledge distillation from that initialisation (see :mod:`kdref.reference.st`).

The hint loss (Sec. 2.2) **[reconstructed]** (the paper's own text could not be checked), per
example, over all the elements of the hint; kdref (like the official code) averages it over the
batch:

.. math::
    \mathcal L_{HT}(\mathbf W_{\mathrm{Guided}}, \mathbf W_r)
    = \tfrac12\,\big\lVert u_h(\mathbf x) - r\big(v_g(\mathbf x);\mathbf W_r\big)\big\rVert^2 .

The regressor's shape rule **[reconstructed]** (the official script's, **[code]**): for a hint of
spatial size :math:`N_{h,1}\times N_{h,2}` and a guided map :math:`N_{g,1}\times N_{g,2}`, a
convolution without padding with kernel

.. math:: k_i = N_{g,i} - N_{h,i} + 1,

far fewer parameters than a fully connected regressor. The regressor has the hint layer's
non-linearity :math:`\phi` **[paper]**; the PyTorch libraries add BatchNorm:

.. math:: r(v_g) = \phi\big(\mathrm{BN}_{\gamma,\beta}(\mathbf W_r * v_g + b)\big).

kdref implements the paper's rule (``kind="conv_valid"``), a 1×1 convolution (``"conv1x1"``),
RepDistiller's and mdistiller's ``ConvReg`` geometry (``"repdistiller"``), a fully connected layer
(``"fc"``) and none (``"identity"``), each followed by an optional BatchNorm (training-mode batch
statistics) and ReLU, maxout or no activation. The regressor's parameters are an input of the
reference, by the names :class:`kdref.torch.fitnet.HintRegressor` gives them, so that the learnable
torch module is proven to compute the same function.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

import numpy as np

from kdref.declaration import Arg, Declaration, Knob
from kdref.reference._common import NUMPY

__all__ = [
    "HINT_LOSS",
    "REGRESSED_HINT_LOSS",
    "RegressorGeometry",
    "batch_norm",
    "conv2d",
    "conv_transpose2d",
    "hint_loss",
    "hint_residual",
    "linear_part",
    "maxout",
    "pre_activation",
    "regressed_hint_loss",
    "regressor",
    "regressor_geometry",
    "relu",
]

#: the regressor kinds: the paper's valid convolution, a 1×1 convolution, RepDistiller's ConvReg
#: geometry, a fully connected layer, and no regressor
KINDS = ("conv_valid", "conv1x1", "repdistiller", "fc", "identity")
#: the non-linearities of the regressor (the paper: the hint layer's own)
ACTIVATIONS = ("relu", "maxout", "none")
#: the regressor's parameters (and BatchNorm's running statistics) by the names of
#: ``HintRegressor.named_parameters()`` and ``named_buffers()``
PARAMETERS = ("layer.weight", "layer.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var")

_REDUCTIONS = ("batchmean", "sum_rows", "mean", "sum", "none")
#: BatchNorm's ε when none is given (PyTorch's default)
_BN_EPS = 1e-5


# ---------------------------------------------------------------------------------------------
# The hint loss: ½‖u_h − r(v_g)‖² per example, over all C·H·W elements of the hint


def hint_residual(r_s: np.ndarray, u_t: np.ndarray) -> np.ndarray:
    r""":math:`u_h - r`, elementwise: the teacher's hint minus the regressed student.

    Args:
      r_s: regressed student hint :math:`r(v_g)`, ``[N, C, H, W]``.
      u_t: teacher hint :math:`u_h`, ``[N, C, H, W]`` (the same shape: no broadcasting).

    Returns:
      ``[N, C, H, W]``.
    """
    # $u_h - r(v_g)$
    return u_t - r_s


def _reduce(squared: np.ndarray, half: bool, reduction: str):
    """The squared residual ``[N, C, H, W]`` summed, scaled and reduced as the knobs say."""
    n, c, _, w = squared.shape
    # $\tfrac12\lVert u_n - r_n\rVert^2$ per example (no ½ with half=False)
    per_sample = np.sum(squared, axis=(1, 2, 3)) * (0.5 if half else 1.0)
    if reduction == "none":
        return per_sample
    total = float(np.sum(per_sample))
    # what is left to divide by once everything is summed: $N$ for the paper's batch mean
    divisor = {"batchmean": n, "sum_rows": n * c * w, "mean": squared.size, "sum": 1}[reduction]
    return total / divisor


# ---------------------------------------------------------------------------------------------
# The regressor r(v_g; W_r): its shape rule, its layer, BatchNorm, the non-linearity


@dataclass(frozen=True)
class RegressorGeometry:
    """The layer a regressor kind builds between two map shapes (pure Python, both sides read it).

    ``layer`` is ``"conv"`` (weight ``[C_out, C_in, k_h, k_w]``, as ``nn.Conv2d``),
    ``"conv_transpose"`` (weight ``[C_in, C_out, k_h, k_w]``, as ``nn.ConvTranspose2d``),
    ``"linear"`` (weight ``[C_out·H_t·W_t, C_in·H_s·W_s]``, as ``nn.Linear`` on the flattened map)
    or ``"identity"`` (no weight). ``C_out`` is the teacher's channel count times ``pieces``
    (maxout takes the maximum over ``pieces`` consecutive output channels).
    """

    kind: str
    layer: str
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    pieces: int = 1
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    padding: int = 0

    @property
    def out_channels(self) -> int:
        """Channels of the linear layer's output: the teacher's channels times the maxout pieces."""
        return self.out_shape[0] * self.pieces

    @property
    def weight_shape(self) -> tuple[int, ...] | None:
        c_in, c_out = self.in_shape[0], self.out_channels
        if self.layer == "conv":
            return (c_out, c_in, *self.kernel)
        if self.layer == "conv_transpose":
            return (c_in, c_out, *self.kernel)
        if self.layer == "linear":
            return (c_out * self.out_shape[1] * self.out_shape[2], math.prod(self.in_shape))
        return None

    @property
    def bias_shape(self) -> tuple[int, ...] | None:
        """One bias per output channel (conv) or per output unit (linear)."""
        if self.layer == "identity":
            return None
        return (self.weight_shape[0],) if self.layer == "linear" else (self.out_channels,)

    def describe(self) -> str:
        return (f"a {self.kind} regressor from {list(self.in_shape)} to {list(self.out_shape)}"
                + (f" with {self.pieces} maxout pieces" if self.pieces > 1 else ""))


def _check_shape3(name: str, shape) -> tuple[int, int, int]:
    shape = tuple(shape)
    if len(shape) != 3 or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1
                                  for s in shape):
        raise ValueError(f"{name} must be (C, H, W), three positive integers, got {shape}")
    return tuple(int(s) for s in shape)


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def regressor_geometry(in_shape, out_shape, kind: str = "conv_valid", pieces: int = 1) -> RegressorGeometry:
    r"""The layer of a regressor kind from the student's map ``in_shape`` to the teacher's ``out_shape``.

    - ``"conv_valid"`` (the paper): a convolution without padding and kernel
      :math:`k_i = N_{g,i} - N_{h,i} + 1`; the student's map must be at least as large as the
      teacher's in both dimensions.
    - ``"conv1x1"``: a 1×1 convolution; the spatial sizes must be equal.
    - ``"repdistiller"``: RepDistiller's and mdistiller's ``ConvReg``, which branch on the height
      only: a 3×3 convolution with stride 2 and padding 1 if :math:`H_s = 2H_t`, a 4×4 transposed
      convolution with stride 2 and padding 1 if :math:`2H_s = H_t`, else the valid convolution
      with kernel :math:`(1 + H_s - H_t, 1 + W_s - W_t)`. kdref also checks the width that layer
      produces (those libraries do not), so non-square maps work where the layer fits them.
    - ``"fc"``: a fully connected layer on the flattened map (the paper's alternative).
    - ``"identity"``: no regressor; the shapes must be equal.

    Raises:
      ValueError: for an unknown kind, or shapes that the kind cannot map.
    """
    in_shape = _check_shape3("in_shape", in_shape)
    out_shape = _check_shape3("out_shape", out_shape)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}; got {kind!r}")
    if isinstance(pieces, bool) or not isinstance(pieces, numbers.Integral) or pieces < 1:
        raise ValueError(f"pieces must be a positive integer, got {pieces!r}")
    (_, h_s, w_s), (_, h_t, w_t) = in_shape, out_shape
    geometry = {"kind": kind, "in_shape": in_shape, "out_shape": out_shape, "pieces": int(pieces)}
    if kind == "identity":
        if in_shape != out_shape or pieces != 1:
            raise ValueError(f"an identity regressor needs equal shapes (and no maxout), got student "
                             f"{list(in_shape)} and teacher {list(out_shape)}; choose another kind")
        return RegressorGeometry(layer="identity", **geometry)
    if kind == "fc":
        return RegressorGeometry(layer="linear", **geometry)
    if kind == "conv1x1":
        if (h_s, w_s) != (h_t, w_t):
            raise ValueError(f"a conv1x1 regressor needs equal spatial sizes, got student {h_s}×{w_s} and "
                             f"teacher {h_t}×{w_t}; use kind='conv_valid', 'repdistiller' or 'fc'")
        return RegressorGeometry(layer="conv", **geometry)
    if kind == "repdistiller" and h_s == 2 * h_t:
        layer = RegressorGeometry(layer="conv", kernel=(3, 3), stride=2, padding=1, **geometry)
        produced = (_conv_out(h_s, 3, 2, 1), _conv_out(w_s, 3, 2, 1))
    elif kind == "repdistiller" and 2 * h_s == h_t:
        layer = RegressorGeometry(layer="conv_transpose", kernel=(4, 4), stride=2, padding=1, **geometry)
        produced = (2 * h_s, 2 * w_s)
    else:
        if h_s < h_t or w_s < w_t:
            raise ValueError(f"a {kind} regressor (valid convolution, kernel k_i = N_g,i - N_h,i + 1) needs "
                             f"a student map at least as large as the teacher's; got student {h_s}×{w_s} and "
                             f"teacher {h_t}×{w_t}")
        # $k_i = N_{g,i} - N_{h,i} + 1$
        layer = RegressorGeometry(layer="conv", kernel=(h_s - h_t + 1, w_s - w_t + 1), **geometry)
        produced = (h_t, w_t)
    if produced != (h_t, w_t):
        raise ValueError(f"a repdistiller regressor from {h_s}×{w_s} makes {produced[0]}×{produced[1]} maps "
                         f"(its layer follows the heights only), not the teacher's {h_t}×{w_t}")
    return layer


def conv2d(x: np.ndarray, weight: np.ndarray, stride: int = 1, padding: int = 0) -> np.ndarray:
    r"""Cross-correlation as ``nn.Conv2d`` computes it (no bias):

    .. math:: z_{n,o,y,x} = \sum_{c,i,j} W_{o,c,i,j}\; \tilde v_{n,c,\,sy+i,\,sx+j},

    with :math:`\tilde v` the input zero-padded by ``padding`` on each side and :math:`s` the stride.
    """
    k_h, k_w = weight.shape[2:]
    # $\tilde v$
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    h_out = (x.shape[2] - k_h) // stride + 1
    w_out = (x.shape[3] - k_w) // stride + 1
    z = np.zeros((x.shape[0], weight.shape[0], h_out, w_out), dtype=np.result_type(x, weight))
    for i in range(k_h):
        for j in range(k_w):
            window = x[:, :, i:i + stride * (h_out - 1) + 1:stride, j:j + stride * (w_out - 1) + 1:stride]
            # $z_{n,o,y,x} \mathrel{+}= \sum_c W_{o,c,i,j}\,\tilde v_{n,c,sy+i,sx+j}$
            z += np.einsum("oc,nchw->nohw", weight[:, :, i, j], window)
    return z


def conv_transpose2d(x: np.ndarray, weight: np.ndarray, stride: int = 1, padding: int = 0) -> np.ndarray:
    r"""Transposed convolution as ``nn.ConvTranspose2d`` computes it (no bias): each input pixel
    scatters its kernel-weighted copy,

    .. math:: z_{n,o,\,sy+i-p,\,sx+j-p} \mathrel{+}= \sum_c v_{n,c,y,x}\,W_{c,o,i,j},

    and the output, of size :math:`(H-1)s - 2p + k`, drops the ``padding`` :math:`p` border.
    """
    n, _, h, w = x.shape
    k_h, k_w = weight.shape[2:]
    full = np.zeros((n, weight.shape[1], (h - 1) * stride + k_h, (w - 1) * stride + k_w),
                    dtype=np.result_type(x, weight))
    for i in range(k_h):
        for j in range(k_w):
            # $z_{n,o,sy+i,sx+j} \mathrel{+}= \sum_c v_{n,c,y,x}\,W_{c,o,i,j}$
            full[:, :, i:i + stride * (h - 1) + 1:stride, j:j + stride * (w - 1) + 1:stride] += np.einsum(
                "co,nchw->nohw", weight[:, :, i, j], x)
    return full[:, :, padding:full.shape[2] - padding, padding:full.shape[3] - padding]


def linear_part(v_g: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None,
                geometry: RegressorGeometry) -> np.ndarray:
    r"""The regressor's affine layer, :math:`z = \mathbf W_r * v_g + b`, as ``[N, C_t·pieces, H_t, W_t]``.

    A ``"linear"`` layer acts on the map flattened in ``(C, H, W)`` order and its output is read
    back in the same order.
    """
    if geometry.layer == "identity":
        return v_g
    if geometry.layer == "linear":
        # $z = \mathbf W_r\,\mathrm{vec}(v_g) + b$
        z = v_g.reshape(v_g.shape[0], -1) @ weight.T + (0.0 if bias is None else bias)
        return z.reshape(v_g.shape[0], geometry.out_channels, *geometry.out_shape[1:])
    if geometry.layer == "conv":
        # $\mathbf W_r * v_g$
        z = conv2d(v_g, weight, geometry.stride, geometry.padding)
    else:
        z = conv_transpose2d(v_g, weight, geometry.stride, geometry.padding)
    # $z = \mathbf W_r * v_g + b$
    return z if bias is None else z + bias[None, :, None, None]


def batch_norm(z: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    r"""BatchNorm with the batch's statistics (training mode), per channel :math:`c`:

    .. math:: \hat z_{n,c,y,x} = \gamma_c\,\frac{z_{n,c,y,x} - \mu_c}{\sqrt{\sigma_c^2 + \epsilon}} + \beta_c,

    with :math:`\mu_c` and the biased variance :math:`\sigma_c^2` taken over :math:`(n, y, x)`.
    """
    # $\mu_c$
    mu = np.mean(z, axis=(0, 2, 3), keepdims=True)
    # $\sigma_c^2$
    var = np.mean((z - mu) ** 2, axis=(0, 2, 3), keepdims=True)
    # $\hat z = \gamma_c (z - \mu_c) / \sqrt{\sigma_c^2 + \epsilon} + \beta_c$
    return gamma[None, :, None, None] * (z - mu) / np.sqrt(var + eps) + beta[None, :, None, None]


def relu(z: np.ndarray) -> np.ndarray:
    r""":math:`\max(z, 0)`, elementwise."""
    # $\phi(z) = \max(z, 0)$
    return np.maximum(z, 0.0)


def maxout(z: np.ndarray, pieces: int) -> np.ndarray:
    r"""Maxout: output channel :math:`c` is the maximum of the ``pieces`` consecutive channels
    :math:`c\cdot k, \dots, c\cdot k + k - 1` of :math:`z` (:math:`k` = ``pieces``)."""
    n, c, h, w = z.shape
    # $\phi(z)_c = \max_{j < k} z_{ck + j}$
    return np.max(z.reshape(n, c // pieces, pieces, h, w), axis=2)


def _default_activation(kind: str, activation: str | None) -> str:
    return ("none" if kind == "identity" else "relu") if activation is None else activation


def pre_activation(v_g: np.ndarray, parameters, geometry: RegressorGeometry, bn_eps: float = _BN_EPS) -> np.ndarray:
    r"""What the regressor's non-linearity acts on: :math:`\mathrm{BN}_{\gamma,\beta}(\mathbf W_r * v_g + b)`,
    BatchNorm only where ``parameters`` hold ``"bn.weight"`` and ``"bn.bias"`` (running statistics,
    if any, are not read: the batch's statistics are)."""
    parameters = parameters or {}
    # $z = \mathbf W_r * v_g + b$
    z = linear_part(v_g, parameters.get("layer.weight"), parameters.get("layer.bias"), geometry)
    if "bn.weight" not in parameters:
        return z
    # $\mathrm{BN}_{\gamma,\beta}(z)$
    return batch_norm(z, parameters["bn.weight"], parameters["bn.bias"], bn_eps)


def _regress(v_g: np.ndarray, parameters, bn_eps: float, geometry: RegressorGeometry, activation: str) -> np.ndarray:
    """The regressor on checked arrays: the layer, BatchNorm where given, the activation."""
    z = pre_activation(v_g, parameters, geometry, bn_eps)
    # $r(v_g) = \phi(z)$
    if activation == "relu":
        return relu(z)
    if activation == "maxout":
        return maxout(z, geometry.pieces)
    return z


def regressor(v_g: np.ndarray, parameters=None, *, out_shape, kind: str = "conv_valid", activation: str | None = None,
              pieces: int = 1, bn_eps: float = _BN_EPS) -> np.ndarray:
    r"""The regressor :math:`r(v_g;\mathbf W_r)`: an affine layer, optional BatchNorm, the activation.

    .. math:: r(v_g) = \phi\big(\mathrm{BN}_{\gamma,\beta}(\mathbf W_r * v_g + b)\big),

    where :math:`*` is the layer of ``kind`` (:func:`regressor_geometry`), BN is present only when
    ``parameters`` hold ``"bn.weight"`` and ``"bn.bias"``, and :math:`\phi` is ReLU, maxout or the
    identity.

    Args:
      v_g: the student's guided-layer output, ``[N, C_s, H_s, W_s]``.
      parameters: the regressor's parameters by the names of ``HintRegressor.named_parameters()``:
        ``"layer.weight"`` shaped as in PyTorch (``[C_t·pieces, C_s, k_h, k_w]`` for a convolution,
        ``[C_s, C_t·pieces, 4, 4]`` for RepDistiller's transposed convolution,
        ``[C_t·pieces·H_t·W_t, C_s·H_s·W_s]`` for ``"fc"``), optionally ``"layer.bias"``
        (``[C_t·pieces]``, ``[C_t·pieces·H_t·W_t]`` for ``"fc"``) and BatchNorm's
        :math:`\gamma`, :math:`\beta` as ``"bn.weight"``, ``"bn.bias"`` (``[C_t·pieces]``; the
        statistics are the batch's: training mode). ``None`` for ``"identity"``.
      out_shape: the teacher hint's ``(C_t, H_t, W_t)``.
      kind: ``"conv_valid"`` (default, the paper's rule), ``"conv1x1"``, ``"repdistiller"``,
        ``"fc"`` or ``"identity"``.
      activation: ``"relu"``, ``"maxout"`` or ``"none"``; ``None`` means ``"relu"`` (``"none"``
        for ``"identity"``). The paper uses the hint layer's own non-linearity.
      pieces: maxout pieces per output channel, ≥ 2 with ``"maxout"``, else 1.
      bn_eps: BatchNorm's :math:`\epsilon`, > 0 (PyTorch's default 1e-5).

    Returns:
      :math:`r(v_g)`, ``[N, C_t, H_t, W_t]``.

    Examples:
      >>> import numpy as np
      >>> v = np.array([[[[0.5, 1.5], [-1.0, 0.0], [2.0, -0.5]]], [[[-2.0, 0.0], [1.0, 3.0], [0.5, -1.0]]]])
      >>> w = np.array([1.0, -0.5]).reshape(2, 1, 1, 1)
      >>> r = regressor(v, {"layer.weight": w, "layer.bias": np.array([0.0, 0.5])}, out_shape=(2, 3, 2))
      >>> r[0].tolist()
      [[[0.5, 1.5], [0.0, 0.0], [2.0, 0.0]], [[0.25, 0.0], [1.0, 0.5], [0.0, 0.75]]]
    """
    checked, geometry, activation = _validate_regressor(NUMPY, v_g, parameters, bn_eps, out_shape, kind, activation,
                                                        pieces)
    return _regress(checked["v_g"], checked["parameters"], checked["bn_eps"], geometry, activation)


# ---------------------------------------------------------------------------------------------
# The contract: arguments, knobs and conventions (read by both sides, the proof and the docs)

def _check_regressor(v_g, parameters, name: str, out_shape, kind: str, activation: str | None, pieces: int,
                     batch_statistics: bool = True) -> tuple[RegressorGeometry, str]:
    """The rules between the regressor's arguments that no kind states, on either side's checked
    arrays (pure Python on shapes; the parameters' dtype and device are the declaration's ``like``):
    the kind must map the student's map to ``out_shape``, maxout has ≥ 2 pieces and nothing else
    has more than 1, the parameters are the ones the layer has with its shapes, and BatchNorm with
    batch statistics sees more than one value per channel. Returns the geometry and the activation
    (``None`` resolved)."""
    geometry = regressor_geometry(tuple(v_g.shape[1:]), out_shape, kind, pieces)
    activation = _default_activation(kind, activation)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(map(repr, ACTIVATIONS))}; got {activation!r}")
    if (activation == "maxout") != (pieces > 1):
        raise ValueError(f"pieces must be ≥ 2 with activation='maxout' and 1 otherwise; got pieces={pieces} "
                         f"with activation={activation!r}")
    if geometry.layer == "identity":
        if parameters is not None:
            raise ValueError(f"{name} must be None for an identity regressor (it has no parameters)")
        return geometry, activation
    if parameters is None:
        raise ValueError(f"{name} is required for {geometry.describe()}: its 'layer.weight' has shape "
                         f"{geometry.weight_shape}")
    batchnorm = sorted(k for k in parameters if k.startswith("bn."))
    if batchnorm and not {"bn.weight", "bn.bias"} <= set(batchnorm):
        raise ValueError(f"{name} must hold both 'bn.weight' and 'bn.bias' for BatchNorm, got {batchnorm}")
    channels = (geometry.out_channels,)
    expected = {"layer.weight": geometry.weight_shape, "layer.bias": geometry.bias_shape, "bn.weight": channels,
                "bn.bias": channels, "bn.running_mean": channels, "bn.running_var": channels}
    for key, value in parameters.items():
        if tuple(value.shape) != expected[key]:
            raise ValueError(f"{name}[{key!r}] must have shape {expected[key]} for {geometry.describe()}, got "
                             f"{tuple(value.shape)}")
    if batchnorm and batch_statistics and v_g.shape[0] * geometry.out_shape[1] * geometry.out_shape[2] == 1:
        raise ValueError("BatchNorm with batch statistics needs more than one value per channel: "
                         f"N·H·W = 1 (v_g has batch size {v_g.shape[0]}, the output is "
                         f"{geometry.out_shape[1]}×{geometry.out_shape[2]})")
    return geometry, activation


def _check_regressed(arguments, knobs) -> None:
    _check_regressor(arguments["v_g"], arguments["regressor"], "regressor", tuple(arguments["u_t"].shape[1:]),
                     knobs["kind"], knobs["activation"], knobs["pieces"])


_HALF = Knob("half", True, "multiply the squared error by :math:`\\tfrac12`", choices=(True, False))
_REDUCTION = Knob(
    "reduction", "batchmean", "what the summed squared error is divided by: ``\"batchmean\"`` (:math:`N`), "
    "``\"sum_rows\"`` (:math:`N\\cdot C\\cdot W`: the official code sums over axis 1, the rows of pylearn2's "
    "``('c', 0, 1, 'b')`` layout, and averages the other axes), ``\"mean\"`` (:math:`N\\cdot C\\cdot H\\cdot W`), "
    "``\"sum\"`` (nothing) or ``\"none\"`` (the per-example sums, ``[N]``)", choices=_REDUCTIONS)

HINT_LOSS = Declaration(
    name="hint_loss",
    args=(Arg("r_s", "features", "regressed student hint :math:`r(v_g)` (a fully connected hint ``[N, D]`` is "
              "passed as ``[N, D, 1, 1]``)"),
          Arg("u_t", "features", "teacher hint :math:`u_h`, a constant target", like="r_s")),
    knobs=(_HALF, _REDUCTION),
    presets={
        "paper": {},
        "official_conv_c01b": {"reduction": "sum_rows"},
        "mse": {"half": False, "reduction": "mean"},
        "sum": {"half": False, "reduction": "sum"},
    },
    aliases={"kdzoo": "mse", "repdistiller": "mse", "mdistiller": "mse", "torchdistill": "sum"},
    descriptions={
        "paper": "½‖u − r‖² summed over C·H·W, mean over the batch (Sec. 2.2; = official code with an FC "
                 "regressor)",
        "official_conv_c01b": "the official HintCost with a conv regressor in pylearn2's c01b layout: ½(u − r)² "
                              "summed over rows, mean over channels, columns and batch = paper/(C·W)",
        "mse": "F.mse_loss: mean of (u − r)² over all N·C·H·W entries, no ½ (KD-Zoo, RepDistiller, mdistiller)",
        "sum": "MSELoss(reduction='sum'): (u − r)² summed over batch and elements (torchdistill's sample config)",
    },
)

#: the regressor's arguments, shared by :func:`regressed_hint_loss` and :func:`regressor`
_V_G = Arg("v_g", "features", "the student's guided-layer output")
_PARAMETERS = Arg(
    "regressor", "parameters", "the regressor :math:`\\mathbf W_r`, a :class:`~kdref.torch.fitnet.HintRegressor` "
    "(torch) or its parameters by its names (``None`` for ``\"identity\"``): ``layer.weight`` shaped as in PyTorch "
    "(``[C_t·pieces, C_s, k_h, k_w]`` for a convolution, ``[C_s, C_t·pieces, 4, 4]`` for RepDistiller's transposed "
    "convolution, ``[C_t·pieces·H_t·W_t, C_s·H_s·W_s]`` for ``\"fc\"``), ``layer.bias`` ``[C_t·pieces]`` "
    "(``[C_t·pieces·H_t·W_t]`` for ``\"fc\"``), BatchNorm's :math:`\\gamma` and :math:`\\beta` ``bn.weight`` and "
    "``bn.bias`` ``[C_t·pieces]``, both or neither (the batch's statistics are used: running statistics are left "
    "as they are)",
    like="v_g", optional=True, keys=("layer.weight",), optional_keys=PARAMETERS[1:])
# "temperature" is the kind of the reals > 0
_BN_EPS_ARG = Arg("bn_eps", "temperature", "BatchNorm's :math:`\\epsilon` (a module's ``bn.eps`` is not read from "
                  "it: pass it here); PyTorch's 1e-5 when ``None``", optional=True)

REGRESSED_HINT_LOSS = HINT_LOSS.derive(
    "regressed_hint_loss",
    args=(_V_G, Arg("u_t", "features", "the teacher's hint, a constant target; its channels and spatial size "
                    "set the regressor's output", like="v_g", match="batch"), _PARAMETERS, _BN_EPS_ARG),
    knobs=(
        Knob("kind", "conv_valid", "the regressor's layer (:func:`regressor_geometry`): the paper's valid "
             "convolution, a 1×1 convolution, RepDistiller's ``ConvReg``, a fully connected layer or none",
             choices=KINDS),
        Knob("activation", None, "the regressor's non-linearity (the paper: the hint layer's own); ``None`` is "
             "``\"relu\"``, or ``\"none\"`` for ``kind=\"identity\"``", choices=(None, *ACTIVATIONS)),
        Knob("pieces", 1, "maxout pieces per output channel: ≥ 2 with ``activation=\"maxout\"``, else 1",
             low=1, integer=True),
        _HALF,
        _REDUCTION,
    ),
    check=_check_regressed,
)

#: the arrays of :func:`regressor` (a helper, not a loss: it validates through this)
_REGRESSOR = Declaration(name="regressor", args=(_V_G, dataclasses.replace(_PARAMETERS, name="parameters"),
                                                 _BN_EPS_ARG))


def _validate_regressor(backend, v_g, parameters, bn_eps, out_shape, kind: str, activation: str | None,
                        pieces: int, training: bool = True, in_shape=None):
    """:func:`regressor`'s arguments checked on ``backend``'s side (``in_shape``: what a module
    expects of ``v_g``; BatchNorm uses the batch's statistics in ``training`` or without running
    statistics): the checked arguments by name (``bn_eps`` resolved), the geometry and the activation."""
    checked, _ = _REGRESSOR.bind(backend, (v_g, parameters, bn_eps), {})
    if in_shape is not None and tuple(checked["v_g"].shape[1:]) != tuple(in_shape):
        raise ValueError(f"v_g must have shape [N, {', '.join(map(str, in_shape))}] for this regressor, got "
                         f"{tuple(checked['v_g'].shape)}")
    batch_statistics = training or "bn.running_mean" not in (checked["parameters"] or {})
    geometry, activation = _check_regressor(checked["v_g"], checked["parameters"], "parameters", out_shape, kind,
                                            activation, pieces, batch_statistics)
    checked["bn_eps"] = _BN_EPS if checked["bn_eps"] is None else checked["bn_eps"]
    return checked, geometry, activation


# ---------------------------------------------------------------------------------------------
# The losses


@HINT_LOSS.implement(NUMPY)
def hint_loss(r_s: np.ndarray, u_t: np.ndarray, *, half: bool, reduction: str):
    r"""The hint loss :math:`\mathcal L_{HT}` on the regressed student and the teacher hint.

    .. math::
        \mathcal L_{\text{paper}} = \frac1N\sum_{n=1}^{N}\tfrac12\big\lVert u_n - r_n\big\rVert^2,\qquad
        \mathcal L_{\text{official\_conv\_c01b}} = \frac{\mathcal L_{\text{paper}}}{C\,W},\qquad
        \mathcal L_{\text{mse}} = \frac{2\,\mathcal L_{\text{paper}}}{C\,H\,W},\qquad
        \mathcal L_{\text{sum}} = 2N\,\mathcal L_{\text{paper}},

    with :math:`\lVert\cdot\rVert^2` the sum of squares over the :math:`C\cdot H\cdot W` elements.

    Returns:
      a float, or ``[N]`` for ``reduction="none"``.

    Examples:
      >>> import numpy as np
      >>> r = np.array([[[[0.5, 1.5], [0.0, 0.0], [2.0, 0.0]], [[0.25, 0.0], [1.0, 0.5], [0.0, 0.75]]],
      ...               [[[0.0, 0.0], [1.0, 3.0], [0.5, 0.0]], [[1.5, 0.5], [0.0, 0.0], [0.25, 1.0]]]])
      >>> u = np.array([[[[1.0, 1.0], [0.0, 0.5], [2.5, 0.0]], [[0.0, 0.0], [1.0, 0.5], [0.0, 1.0]]],
      ...               [[[0.0, 0.5], [1.5, 2.0], [0.0, 0.0]], [[1.5, 0.0], [0.0, 0.0], [0.5, 1.0]]]])
      >>> hint_loss(r, u)
      0.796875
      >>> hint_loss(r, u, convention="official_conv_c01b")
      0.19921875
      >>> hint_loss(r, u, convention="mse")
      0.1328125
      >>> hint_loss(r, u, convention="sum")
      3.1875

    References:
      Romero, Ballas, Kahou, Chassang, Gatta, Bengio. *FitNets: Hints for Thin Deep Nets.*
      ICLR 2015, Sec. 2.2.

    .. seealso:: :func:`regressed_hint_loss` applies the regressor first, so that the gradient
       reaches the regressor's weights and the student's guided layer.
    """
    # $\tfrac12\lVert u_h - r\rVert^2$, reduced over the batch
    return _reduce(hint_residual(r_s, u_t) ** 2, half, reduction)


@REGRESSED_HINT_LOSS.implement(NUMPY)
def regressed_hint_loss(v_g: np.ndarray, u_t: np.ndarray, regressor: dict | None, bn_eps: float | None, *, kind: str,
                        activation: str | None, pieces: int, half: bool, reduction: str):
    r"""The hint loss of the regressed student: :math:`\mathcal L_{HT}\big(u_h, r(v_g;\mathbf W_r)\big)`.

    .. math::
        \mathcal L_{\text{paper}} = \frac1N\sum_{n=1}^{N}\tfrac12\big\lVert u_n - r(v_{g,n};\mathbf W_r)\big\rVert^2,

    the composition of :func:`regressor` (with ``out_shape`` the teacher hint's) and
    :func:`hint_loss`; a function of the student's guided features and of the regressor's
    weights, both of which stage 1 trains.

    Returns:
      a float, or ``[N]`` for ``reduction="none"``.

    Examples:
      >>> import numpy as np
      >>> v = np.array([[[[0.5, 1.5], [-1.0, 0.0], [2.0, -0.5]]], [[[-2.0, 0.0], [1.0, 3.0], [0.5, -1.0]]]])
      >>> u = np.array([[[[1.0, 1.0], [0.0, 0.5], [2.5, 0.0]], [[0.0, 0.0], [1.0, 0.5], [0.0, 1.0]]],
      ...               [[[0.0, 0.5], [1.5, 2.0], [0.0, 0.0]], [[1.5, 0.0], [0.0, 0.0], [0.5, 1.0]]]])
      >>> w, b = np.array([1.0, -0.5]).reshape(2, 1, 1, 1), np.array([0.0, 0.5])
      >>> regressed_hint_loss(v, u, {"layer.weight": w, "layer.bias": b})  # 1×1 kernel: equal spatial sizes
      0.796875
      >>> regressed_hint_loss(v, u, {"layer.weight": w, "layer.bias": b}, convention="mse")
      0.1328125

    References:
      Romero, Ballas, Kahou, Chassang, Gatta, Bengio. *FitNets: Hints for Thin Deep Nets.*
      ICLR 2015, Sec. 2.2 (the hint loss) and its regressor.

    .. seealso:: :func:`hint_loss` on an already regressed student;
       :class:`kdref.torch.fitnet.HintRegressor`, the learnable regressor this takes on the torch side.
    """
    geometry = regressor_geometry(v_g.shape[1:], u_t.shape[1:], kind, pieces)
    # $r(v_g;\mathbf W_r)$
    r_s = _regress(v_g, regressor, _BN_EPS if bn_eps is None else bn_eps, geometry,
                   _default_activation(kind, activation))
    # $\tfrac12\lVert u_h - r(v_g;\mathbf W_r)\rVert^2$, reduced over the batch
    return _reduce(hint_residual(r_s, u_t) ** 2, half, reduction)
