r"""AB — distillation of activation boundaries (Heo, Lee, Yun & Choi, AAAI 2019), NumPy reference.

A ReLU network cuts its input space along the *activation boundaries* of its hidden neurons: the
surfaces where a neuron's pre-activation changes sign. AB transfers these boundaries rather than
the responses themselves: the student is trained so that each of its neurons is active (response
:math:`> 0`) exactly where the teacher's corresponding neuron is. For an image :math:`I` let
:math:`\mathcal T(I)` and :math:`\mathcal S(I)` be the teacher's and the student's responses
**before** the ReLU :math:`\sigma(x)=\max(0,x)`, and :math:`\rho(x)=[x>0]` the activation
indicator. The target criterion counts the neurons whose states differ (not differentiable):

.. math::
    \mathcal L(I) = \big\lVert \rho(\mathcal T(I)) - \rho(\mathcal S(I)) \big\rVert_1 .

AB minimises instead the *alternative* loss, a squared hinge with margin :math:`\mu > 0` that
treats each teacher neuron's state as a binary label (an active teacher neuron asks
:math:`s_k\ge\mu`, an inactive one :math:`s_k\le-\mu`):

.. math::
    \mathcal L(I) = \big\lVert \rho(\mathcal T(I)) \odot \sigma(\mu\mathbf 1 - \mathcal S(I))
    + (\mathbf 1 - \rho(\mathcal T(I))) \odot \sigma(\mu\mathbf 1 + \mathcal S(I)) \big\rVert_2^2 ,

summed over the positions of a convolutional layer. When the widths differ a **connector**
:math:`r(\cdot)` (a 1×1 convolution and BatchNorm) replaces :math:`\mathcal S(I)` by
:math:`r(\mathcal S(I))`.

Provenance: the equations are **[reconstructed]** (the paper's own text could not be checked;
they come from third-party transcriptions), their element-wise form is exactly the official code's
**[code]**. The batch mean, the layer weights :math:`2^{-(K-k)}` and the official factor
:math:`3/1000` are known from the code only **[code]**; the gradient and the relations between
the conventions are **[derived]**.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from kdref.declaration import Arg, Declaration, Knob
from kdref.reference._common import NUMPY, check_item_weights

__all__ = [
    "AB_LOSS",
    "AB_LOSS_MULTI",
    "BN_EPS",
    "CONNECTOR",
    "ab_loss",
    "ab_loss_multi",
    "activation_indicator",
    "activation_mismatch_rate",
    "activation_transfer_loss",
    "alternative_loss",
    "alternative_loss_terms",
    "batch_norm",
    "connector",
    "conv1x1",
    "depth_weights",
    "relu",
]

#: BatchNorm's ε in the connector (PyTorch's default, used by every implementation)
BN_EPS = 1e-5
#: what each layer's summed criterion is divided by
REDUCTIONS = ("batchmean", "mean", "sum", "none")


# ---------------------------------------------------------------------------------------------
# The paper's quantities, in equation order


def activation_indicator(x: np.ndarray) -> np.ndarray:
    r"""The activation indicator :math:`\rho(x)`, element-wise (1.0 where active, else 0.0).

    A response of exactly 0 is **inactive**, as in every implementation (``t > 0``); so a
    post-ReLU teacher gives the same indicator as its pre-ReLU responses.
    """
    # $\rho(x) = 1$ if $x > 0$, else $0$
    return (x > 0).astype(x.dtype)


def relu(x: np.ndarray) -> np.ndarray:
    r"""The ReLU :math:`\sigma(x) = \max(0, x)`, element-wise."""
    # $\sigma(x) = \max(0, x)$
    return np.maximum(x, 0.0)


def activation_transfer_loss(s: np.ndarray, t: np.ndarray) -> np.ndarray:
    r"""The activation transfer loss, the target criterion: per image, the number of neurons
    whose activation states differ, ``[N]`` (not differentiable; a monitor).

    .. math:: \mathcal L(I) = \big\lVert \rho(\mathcal T(I)) - \rho(\mathcal S(I)) \big\rVert_1

    Args:
      s: student responses (after the connector), ``[N, C, H, W]``.
      t: teacher responses, the same shape.
    """
    # $\lVert \rho(\mathcal T(I)) - \rho(\mathcal S(I)) \rVert_1$
    return np.sum(np.abs(activation_indicator(t) - activation_indicator(s)), axis=(1, 2, 3))


def alternative_loss_terms(s: np.ndarray, t: np.ndarray, margin: float) -> np.ndarray:
    r"""The alternative loss of each neuron, ``[N, C, H, W]``: a squared hinge with margin :math:`\mu`.

    .. math:: \ell_k = \rho(t_k)\,\sigma(\mu - s_k)^2 + \big(1 - \rho(t_k)\big)\,\sigma(\mu + s_k)^2

    The two terms live on disjoint neurons, so the squared norm of their sum is the sum of these.
    """
    active = activation_indicator(t)
    # $\rho(t_k)\,\sigma(\mu - s_k)^2 + (1 - \rho(t_k))\,\sigma(\mu + s_k)^2$
    return active * relu(margin - s) ** 2 + (1 - active) * relu(margin + s) ** 2


def alternative_loss(s: np.ndarray, t: np.ndarray, margin: float) -> np.ndarray:
    r"""The alternative loss of each image, ``[N]``: the squared norm over the channels, summed
    over the positions of a convolutional layer.

    .. math::
        \mathcal L(I) = \sum_{i=1}^{H}\sum_{j=1}^{W}\big\lVert \rho(\mathcal T(I)_{ij}) \odot
        \sigma(\mu\mathbf 1 - \mathcal S(I)_{ij}) + (\mathbf 1 - \rho(\mathcal T(I)_{ij})) \odot
        \sigma(\mu\mathbf 1 + \mathcal S(I)_{ij}) \big\rVert_2^2
    """
    # $\sum_{i,j} \lVert \cdots \rVert_2^2 = \sum_{c,i,j} \ell_{cij}$
    return np.sum(alternative_loss_terms(s, t, margin), axis=(1, 2, 3))


def activation_mismatch_rate(s: np.ndarray, t: np.ndarray) -> np.ndarray:
    r"""The fraction of neurons whose states differ, per image, ``[N]``: the activation transfer
    loss over the number of neurons :math:`CHW`. The official script prints
    :math:`1 -` its batch mean as the "activation similarity".

    Examples:
      >>> import numpy as np
      >>> s = np.array([[[[1.0, -1.0, 0.0]], [[0.5, 2.0, -0.5]]], [[[-2.0, 0.25, 1.5]], [[-1.0, 0.0, 3.0]]]])
      >>> t = np.array([[[[0.3, -0.2, 0.0]], [[1.0, -1.0, 0.5]]], [[[0.7, 0.0, -0.1]], [[-0.4, 2.0, 0.0]]]])
      >>> activation_transfer_loss(s, t).tolist()
      [2.0, 5.0]
      >>> print(f"{activation_mismatch_rate(s, t).mean():.8f}")
      0.58333333
    """
    # $\lVert \rho(\mathcal T(I)) - \rho(\mathcal S(I)) \rVert_1 / (CHW)$
    return activation_transfer_loss(s, t) / np.prod(s.shape[1:])


# ---------------------------------------------------------------------------------------------
# The connector r(·): a 1×1 convolution and BatchNorm (batch statistics)


def conv1x1(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    r"""A 1×1 convolution as ``nn.Conv2d`` computes it, :math:`z_{n,o,h,w} = \sum_c W_{o,c}\,x_{n,c,h,w} + b_o`
    (``weight`` ``[C_out, C_in, 1, 1]``)."""
    z = np.einsum("oc,nchw->nohw", weight[:, :, 0, 0], x)
    return z if bias is None else z + bias[None, :, None, None]


def batch_norm(z: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = BN_EPS) -> np.ndarray:
    r"""BatchNorm with the batch's statistics (training mode), per channel :math:`c`:

    .. math:: \hat z_{n,c,h,w} = \gamma_c\,\frac{z_{n,c,h,w} - m_c}{\sqrt{v_c + \epsilon}} + \beta_c,

    with the mean :math:`m_c` and the biased variance :math:`v_c` over :math:`(n, h, w)`.
    """
    mean = np.mean(z, axis=(0, 2, 3), keepdims=True)
    var = np.mean((z - mean) ** 2, axis=(0, 2, 3), keepdims=True)
    return gamma[None, :, None, None] * (z - mean) / np.sqrt(var + eps) + beta[None, :, None, None]


def _connect(x: np.ndarray, params: Mapping[str, np.ndarray]) -> np.ndarray:
    """r(x) on checked arrays."""
    # $r(x) = \mathrm{BN}_{\gamma,\beta}(W * x + b)$
    return batch_norm(conv1x1(x, params["weight"], params.get("bias")), params["bn_weight"], params["bn_bias"])


def depth_weights(count: int) -> np.ndarray:
    r"""The official code's layer weights :math:`2^{-(K-k)}` for :math:`K` layers listed from the
    shallowest (:math:`k = 1`) to the deepest (:math:`k = K`, weight 1): ¼, ½, 1 for three."""
    return 2.0 ** -np.arange(count - 1, -1, -1, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# The contract: arguments, knobs and conventions (read by both sides, the proof and the docs)

_CONNECTOR_KEYS = ("weight", "bn_weight", "bn_bias")
def _check_connector(student, params: Mapping[str, Any], out_channels: int | None = None) -> None:
    """The connector's parameters against the student (pure Python on shapes; their dtype and
    device are the declaration's ``like``): a 1×1 convolution ``[C_t, C_s, 1, 1]`` (``C_t`` =
    ``out_channels`` where given), an optional bias and BatchNorm's γ and β ``[C_t]``, and more
    than one value per channel for BatchNorm's batch statistics."""
    c_in = student.shape[1]
    c_out = params["weight"].shape[0] if out_channels is None else out_channels
    expected = {"weight": (c_out, c_in, 1, 1), "bias": (c_out,), "bn_weight": (c_out,), "bn_bias": (c_out,)}
    for key, value in params.items():
        if tuple(value.shape) != expected[key]:
            raise ValueError(f"connector[{key!r}] must have shape {expected[key]} for a 1×1 connector from {c_in} "
                             f"to {c_out} channels, got {tuple(value.shape)}")
    n, _, h, w = student.shape
    if n * h * w == 1:
        raise ValueError("connector: BatchNorm with batch statistics needs more than one value per channel, "
                         f"got N·H·W = 1 (student shape {tuple(student.shape)})")


def _check_pair(arguments: Mapping[str, Any], knobs: Mapping[str, Any]) -> None:
    """Without a connector the widths must agree; with one, its parameters must fit."""
    student, teacher, params = arguments["student"], arguments["teacher"], arguments["connector"]
    if params is None:
        if student.shape[1] != teacher.shape[1]:
            raise ValueError(f"teacher must have the channels of student ({student.shape[1]}) when no connector is "
                             f"given, got {teacher.shape[1]}; pass a connector that maps {student.shape[1]} to "
                             f"{teacher.shape[1]} channels")
        return
    _check_connector(student, params, teacher.shape[1])


def _check_weights(arguments: Mapping[str, Any], knobs: Mapping[str, Any]) -> None:
    """One weight per layer, as a list (the ``"weights"`` kind also takes one number for all)."""
    check_item_weights(arguments["weights"], len(arguments["students"]), "layer")


_MARGIN = Knob("margin", 1.0, "the margin :math:`\\mu` (1 in the official code, 2 in KD-Zoo); > 0: with "
               ":math:`\\mu = 0` a response of 0 under an active teacher would cost nothing although "
               ":math:`\\rho(0) = 0` counts it as a mismatch", low=0.0, open_low=True)
_REDUCTION = Knob(
    "reduction", "batchmean", "what each layer's criterion summed over the batch is divided by: "
    "``\"batchmean\"`` (:math:`N`), ``\"mean\"`` (:math:`N\\cdot C\\cdot H\\cdot W`, KD-Zoo's ``.mean()``), "
    "``\"sum\"`` (nothing: the official ``criterion_alternative_L2``) or ``\"none\"`` (the per-image sums, ``[N]``)",
    choices=REDUCTIONS)
_FACTOR = Knob("factor", 1.0, "a global factor: :math:`3/1000` in the official CIFAR code and RepDistiller",
               low=0.0)
_KNOBS = (_MARGIN, _REDUCTION, _FACTOR)
_PRESETS = {
    "paper": {},
    "official": {"factor": 0.003},
    "kdzoo": {"margin": 2.0, "reduction": "mean"},
}
_ALIASES = {"repdistiller": "official", "torchdistill": "paper"}
_DESCRIPTIONS = {
    "paper": "the squared hinge summed over the C·H·W neurons of each image, mean over the batch, μ = 1 "
             "(= torchdistill AltActTransferLoss, reduction='mean', weight 1)",
    "official": "bhheo/AB_distillation and RepDistiller ABLoss: the summed criterion / N · 3/1000, μ = 1",
    "kdzoo": "KD-Zoo AB: the mean over all N·C·H·W elements, μ = 2",
}

_CONNECTOR_DOC = (
    "the connector :math:`r` applied to ``student`` first: a 1×1 convolution ``weight`` ``[C_t, C_s, 1, 1]`` "
    "(with RepDistiller's ``bias`` ``[C_t]``, optional) and BatchNorm's ``bn_weight`` :math:`\\gamma` and "
    "``bn_bias`` :math:`\\beta` ``[C_t]``, with the batch's statistics and :math:`\\epsilon = 10^{-5}`; on torch "
    "an :class:`~kdref.torch.ab.ABConnector` or a mapping. ``None``: no connector (equal widths)")

AB_LOSS = Declaration(
    name="ab_loss",
    args=(
        Arg("student", "features", "the student's pre-ReLU responses :math:`\\mathcal S(I)` (the connector's input "
            "when one is given)"),
        Arg("teacher", "features", "the teacher's pre-ReLU (or post-ReLU: the same indicator) responses "
            ":math:`\\mathcal T(I)`, a constant; only its sign is used", like="student", match="batch_spatial"),
        Arg("connector", "parameters", _CONNECTOR_DOC, like="student", keys=_CONNECTOR_KEYS,
            optional_keys=("bias",), optional=True),
    ),
    knobs=_KNOBS,
    presets=_PRESETS,
    aliases=_ALIASES,
    descriptions=_DESCRIPTIONS,
    check=_check_pair,
)

#: the connector alone (a helper validated as the losses are; not a loss)
CONNECTOR = Declaration(
    name="connector",
    args=(Arg("student", "features", "the student's pre-ReLU responses"),
          Arg("connector", "parameters", _CONNECTOR_DOC.removesuffix(". ``None``: no connector (equal widths)"),
              like="student", keys=_CONNECTOR_KEYS, optional_keys=("bias",))),
    check=lambda arguments, knobs: _check_connector(arguments["student"], arguments["connector"]),
)

AB_LOSS_MULTI = AB_LOSS.derive(
    "ab_loss_multi",
    args=(
        Arg("students", "features_list", "the student's pre-ReLU responses after their connectors, one "
            "``[N, C_k, H_k, W_k]`` per layer, shallowest first, of one batch size", items_alike=True),
        Arg("teachers", "features_list", "the teacher's responses, one per student map of its shape (constants)",
            like="students"),
        Arg("weights", "weights", "per-layer weights :math:`w_k` on top of ``layer_weights``, a list with one per "
            "layer (torchdistill's per-pair ``weight``); all 1 when not given", optional=True),
    ),
    knobs=(*_KNOBS,
           Knob("layer_weights", "equal", "``\"equal\"``, or the official ``\"depth\"`` weights :math:`2^{-(K-k)}` "
                "(the deepest, listed last, 1; then ½, ¼, …)", choices=("equal", "depth")),
           Knob("reduce_layers", "sum", "sum over the layers, or their mean (KD-Zoo averages its three)",
                choices=("sum", "mean"))),
    presets={"paper": {}, "official": {**_PRESETS["official"], "layer_weights": "depth"},
             "kdzoo": {**_PRESETS["kdzoo"], "reduce_layers": "mean"}},
    descriptions={"paper": _DESCRIPTIONS["paper"] + "; layers summed (the paper gives no weights)",
                  "official": "the official CIFAR objective 3/1000 · (L₃/N + L₂/(2N) + L₁/(4N)): depth weights "
                              "2^-(K-k), summed (= RepDistiller's ABLoss list, summed)",
                  "kdzoo": _DESCRIPTIONS["kdzoo"] + "; layers averaged"},
    check=_check_weights,
)


# ---------------------------------------------------------------------------------------------
# The losses


def _reduce_layer(s: np.ndarray, t: np.ndarray, margin: float, reduction: str):
    """One layer's alternative loss reduced over the batch (``[N]`` for ``"none"``)."""
    per_image = alternative_loss(s, t, margin)
    if reduction == "none":
        return per_image
    # what is left to divide the batch sum by
    divisor = {"batchmean": s.shape[0], "mean": s.size, "sum": 1}[reduction]
    return float(np.sum(per_image)) / divisor


@AB_LOSS.implement(NUMPY)
def ab_loss(student: np.ndarray, teacher: np.ndarray, connector: Mapping[str, np.ndarray] | None, *, margin: float,
            reduction: str, factor: float):
    r"""The alternative (squared-hinge) activation-boundary loss of one layer.

    .. math::
        \mathcal L_{\text{paper}} = \frac1N\sum_{n=1}^{N}\sum_{c,h,w}\Big[\rho(t_{nchw})\,\sigma(\mu - s_{nchw})^2
        + \big(1-\rho(t_{nchw})\big)\,\sigma(\mu + s_{nchw})^2\Big],
        \qquad s = r(\mathcal S(I)),

    :math:`\mathcal L_{\text{official}} = \tfrac{3}{1000}\,\mathcal L_{\text{paper}}` and
    :math:`\mathcal L_{\text{kdzoo}} = \mathcal L_{\text{paper}}/(CHW)` at :math:`\mu = 2`
    (**[derived]**).

    Returns:
      a float, or ``[N]`` for ``reduction="none"``.

    Examples:
      >>> import numpy as np
      >>> s = np.array([[[[1.0, -1.0, 0.0]], [[0.5, 2.0, -0.5]]], [[[-2.0, 0.25, 1.5]], [[-1.0, 0.0, 3.0]]]])
      >>> t = np.array([[[[0.3, -0.2, 0.0]], [[1.0, -1.0, 0.5]]], [[[0.7, 0.0, -0.1]], [[-0.4, 2.0, 0.0]]]])
      >>> ab_loss(s, t)
      23.15625
      >>> print(f"{ab_loss(s, t, convention='official'):.8g}")
      0.06946875
      >>> print(f"{ab_loss(s, t, convention='kdzoo'):.8g}")
      7.8177083
      >>> ab_loss(s, t, reduction="none").tolist()
      [12.5, 33.8125]

    References:
      Heo, Lee, Yun, Choi. *Knowledge Transfer via Distillation of Activation Boundaries Formed by
      Hidden Neurons.* AAAI 2019 (the alternative loss; **[reconstructed]**).

    .. seealso:: :func:`ab_loss_multi` for several layers with the official depth weights;
       :func:`activation_mismatch_rate` for the monitor the official script prints.
    """
    s = student if connector is None else _connect(student, connector)
    return factor * _reduce_layer(s, teacher, margin, reduction)


@AB_LOSS_MULTI.implement(NUMPY)
def ab_loss_multi(students: list[np.ndarray], teachers: list[np.ndarray], weights: list[float] | None, *,
                  margin: float, reduction: str, factor: float, layer_weights: str, reduce_layers: str):
    r"""The alternative loss at :math:`K` layers, weighted and summed (or averaged).

    .. math::
        \mathcal L = \phi\sum_{k=1}^{K} w_k\,d_k\,\mathcal L_k,\qquad
        d_k = 2^{-(K-k)}\ (\text{``depth''})\ \text{or}\ 1,

    with :math:`\mathcal L_k` the one-layer loss of :func:`ab_loss` (reduced over the batch by
    ``reduction``), :math:`\phi` the ``factor``, and the sum divided by :math:`K` for
    ``reduce_layers="mean"``. The official CIFAR objective is
    :math:`\frac{3}{1000}\big(\frac{\mathcal L_3}{N} + \frac{\mathcal L_2}{2N} + \frac{\mathcal L_1}{4N}\big)`.

    Returns:
      a float, or ``[N]`` for ``reduction="none"``.

    Examples:
      >>> import numpy as np
      >>> s = np.array([[[[1.0, -1.0, 0.0]], [[0.5, 2.0, -0.5]]], [[[-2.0, 0.25, 1.5]], [[-1.0, 0.0, 3.0]]]])
      >>> t = np.array([[[[0.3, -0.2, 0.0]], [[1.0, -1.0, 0.5]]], [[[0.7, 0.0, -0.1]], [[-0.4, 2.0, 0.0]]]])
      >>> print(f"{ab_loss_multi([s, s, s], [t, t, t], convention='official'):.8g}")
      0.12157031
    """
    count = len(students)
    weights = [1.0] * count if weights is None else weights
    depth = depth_weights(count) if layer_weights == "depth" else np.ones(count)
    total = 0.0
    for w, d, s, t in zip(weights, depth, students, teachers, strict=True):
        total = total + w * float(d) * _reduce_layer(s, t, margin, reduction)
    if reduce_layers == "mean":
        total = total / count
    return factor * total


@CONNECTOR.implement(NUMPY)
def connector(student: np.ndarray, connector: Mapping[str, np.ndarray]) -> np.ndarray:
    r"""The connector :math:`r(x) = \mathrm{BN}_{\gamma,\beta}(W * x + b)`: a 1×1 convolution
    (the official code's has no bias :math:`b`, RepDistiller's has one) and BatchNorm with the
    batch's statistics and :math:`\epsilon = 10^{-5}` (:func:`conv1x1`, :func:`batch_norm`).

    Returns:
      :math:`r(x)`, ``[N, C_t, H, W]``.

    Examples:
      >>> import numpy as np
      >>> x = np.array([[[[1.0, 3.0]]], [[[1.0, 3.0]]]])
      >>> params = {"weight": np.ones((2, 1, 1, 1)), "bn_weight": np.zeros(2), "bn_bias": np.array([0.5, -1.0])}
      >>> connector(x, params)[0].tolist()
      [[[0.5, 0.5]], [[-1.0, -1.0]]]
    """
    return _connect(student, connector)
