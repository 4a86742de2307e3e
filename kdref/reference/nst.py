r"""NST — Neuron Selectivity Transfer (Huang & Wang, 2017), NumPy reference.

What is transferred is *which positions each neuron responds to*. Every channel of a feature map
is one neuron's selectivity pattern: where in the image it fires. NST treats the channel maps of a
layer as samples from a distribution over patterns, normalises each to unit length (so that only
the pattern counts, not how strongly the neuron fires), and makes the student's distribution match
the teacher's by minimising the squared maximum mean discrepancy (MMD) between the two sample sets:
the distance of their mean embeddings under a kernel. Channel counts may differ (the sets may have
different sizes); the spatial sizes must agree, or be matched by an explicit rule. The teacher is
a constant.

The paper's equations (**[reconstructed]**: the paper's own text could not be checked; they agree
term by term with the official MXNet code). For one example, reshape the feature map to
:math:`\mathbf F\in\mathbb R^{C\times HW}`; row :math:`\mathbf f^{k\cdot}` is channel :math:`k`'s
map. The samples are the :math:`\ell_2`-normalised rows,

.. math:: x^i = \frac{\mathbf f_T^{i\cdot}}{\lVert\mathbf f_T^{i\cdot}\rVert_2}\ (i\le C_T),\qquad
          y^j = \frac{\mathbf f_S^{j\cdot}}{\lVert\mathbf f_S^{j\cdot}\rVert_2}\ (j\le C_S),

the kernels are

.. math:: k_{\mathrm{lin}}(x,y)=x^\top y,\qquad k_{\mathrm{poly}}(x,y)=(x^\top y+c)^d,\qquad
          k_{\mathrm{Gauss}}(x,y)=\exp\!\Big(-\frac{\lVert x-y\rVert_2^2}{2\sigma^2}\Big),

and the loss is :math:`\mathcal L_{NST} = \mathcal H(\mathbf y_{true}, \mathbf p_S) +
\frac\lambda2\mathcal L_{\mathrm{MMD}^2}(\mathbf F_T,\mathbf F_S)` with

.. math:: \mathcal L_{\mathrm{MMD}^2} = \frac{1}{C_T^2}\sum_{i,i'}k(x^i,x^{i'})
          + \frac{1}{C_S^2}\sum_{j,j'}k(y^j,y^{j'}) - \frac{2}{C_TC_S}\sum_{i,j}k(x^i,y^j).

The cross-entropy is left to the caller; the libraries drop the ½, the official code also the
teacher–teacher sum (conventions of :data:`NST_LOSS`).
"""

from __future__ import annotations

import math

import numpy as np

from kdref.declaration import Arg, Declaration, Knob
from kdref.reference._common import (
    NUMPY,
    adaptive_pool2d,
    check_item_weights,
    l2_normalize,
    reduce_batch,
    resize_bilinear,
)

__all__ = [
    "GAUSSIAN_SIGMA2_HEURISTIC",
    "NST_LOSS",
    "SIGMA2_DEGENERATE",
    "channel_maps",
    "gaussian_sigma2_heuristic",
    "kernel_matrix",
    "match_spatial",
    "mean_squared_distance",
    "mmd2",
    "normalized_channel_maps",
    "nst_loss",
    "sample_sets",
    "sample_weights",
]

# ---------------------------------------------------------------------------------------------
# The paper's equations


def channel_maps(fm: np.ndarray) -> np.ndarray:
    r""":math:`\mathbf F\in\mathbb R^{C\times HW}` per example: row :math:`\mathbf f^{k\cdot}` is
    channel :math:`k`'s spatial map.

    Args:
      fm: feature maps, ``[N, C, H, W]``.

    Returns:
      ``[N, C, H·W]``.
    """
    # $\mathbf F \in \mathbb R^{C\times HW}$, rows $\mathbf f^{k\cdot}$
    return fm.reshape(fm.shape[0], fm.shape[1], -1)


def normalized_channel_maps(fm: np.ndarray, eps: float = 1e-12, eps_mode: str = "clamp") -> np.ndarray:
    r"""The samples of NST: :math:`x^i = \mathbf f^{i\cdot}/\lVert\mathbf f^{i\cdot}\rVert_2`, each
    channel map divided by its norm over the :math:`HW` positions.

    An all-zero channel stays 0 (it is a point at the origin). ``eps_mode="clamp"`` divides by
    :math:`\max(\lVert\mathbf f\rVert,\epsilon)` (PyTorch's ``F.normalize``, the libraries),
    ``"sqrt_add"`` by :math:`\sqrt{\lVert\mathbf f\rVert^2+\epsilon}` (MXNet's
    ``L2Normalization``, the official code), ``"add"`` by :math:`\lVert\mathbf f\rVert+\epsilon`.

    Returns:
      ``[N, C, H·W]``.

    Examples:
      §7's normalised student channels of example 0:

      >>> import numpy as np
      >>> fs = np.array([[[[1, 2], [0, -1]], [[0.5, 0], [1, 2]]]])
      >>> print(np.array2string(normalized_channel_maps(fs)[0], precision=8))
      [[ 0.40824829  0.81649658  0.         -0.40824829]
       [ 0.21821789  0.          0.43643578  0.87287156]]
    """
    # $x^i = \mathbf f^{i\cdot} / \lVert\mathbf f^{i\cdot}\rVert_2$
    return l2_normalize(channel_maps(fm), axis=-1, eps=eps, eps_mode=eps_mode)


def kernel_matrix(a: np.ndarray, b: np.ndarray, kernel: str = "poly", c: float = 0.0, d: int = 2,
                  sigma2=None) -> np.ndarray:
    r"""The kernel between every sample of ``a`` and every sample of ``b``, per example:

    .. math:: k_{\mathrm{lin}}(x,y)=x^\top y,\qquad k_{\mathrm{poly}}(x,y)=(x^\top y+c)^d,\qquad
              k_{\mathrm{Gauss}}(x,y)=\exp\!\Big(-\frac{\lVert x-y\rVert_2^2}{2\sigma^2}\Big).

    Args:
      a: ``[N, C_a, M]`` samples (rows).
      b: ``[N, C_b, M]`` samples.
      kernel: ``"poly"``, ``"linear"`` or ``"gaussian"``.
      c, d: the polynomial kernel's offset and degree.
      sigma2: the Gaussian bandwidth :math:`\sigma^2`, a number or one per example ``[N]``.

    Returns:
      ``[N, C_a, C_b]``.
    """
    if kernel == "gaussian":
        sigma2 = np.broadcast_to(np.asarray(sigma2, dtype=np.float64), (a.shape[0],))
        # $\lVert x - y\rVert_2^2$
        squared_distance = np.sum((a[:, :, None, :] - b[:, None, :, :]) ** 2, axis=-1)
        # $k_{\mathrm{Gauss}}(x,y) = \exp(-\lVert x-y\rVert_2^2 / 2\sigma^2)$
        return np.exp(-squared_distance / (2.0 * sigma2[:, None, None]))
    # $k_{\mathrm{lin}}(x,y) = x^\top y$
    inner = a @ np.swapaxes(b, 1, 2)
    # $k_{\mathrm{poly}}(x,y) = (x^\top y + c)^d$
    return inner if kernel == "linear" else (inner + c) ** d


def sample_weights(fm: np.ndarray, zero_channel: str = "keep") -> np.ndarray:
    r"""The weight of each sample in the means over samples, per example: :math:`1/C` for every
    channel (``"keep"``: an all-zero channel counts as a sample at the origin), or :math:`1/C'`
    for the :math:`C'` channels that are not all zero and 0 for the others (``"drop"``: all-zero
    channels leave the sample set). An example whose channels are all zero has no sample under
    ``"drop"``; its weights are all 0, i.e. an empty set's mean embedding is taken as 0.

    Returns:
      ``[N, C]``.
    """
    maps = channel_maps(fm)
    if zero_channel == "keep":
        # $w_i = 1/C$
        return np.full(maps.shape[:2], 1.0 / maps.shape[1])
    kept = np.any(maps != 0, axis=-1).astype(np.float64)
    # $w_i = 1/C'$ on the $C'$ channels that are not all zero, 0 on the others
    return kept / np.maximum(np.sum(kept, axis=1, keepdims=True), 1.0)


def mmd2(x: np.ndarray, y: np.ndarray, wx: np.ndarray, wy: np.ndarray, *, kernel: str = "poly",
         c: float = 0.0, d: int = 2, sigma2=None, teacher_term: bool = True) -> np.ndarray:
    r"""Squared MMD between the teacher's samples :math:`\{x^i\}` and the student's :math:`\{y^j\}`,
    per example:

    .. math:: \mathcal L_{\mathrm{MMD}^2} = \sum_{i,i'}w_iw_{i'}\,k(x^i,x^{i'})
              + \sum_{j,j'}v_jv_{j'}\,k(y^j,y^{j'}) - 2\sum_{i,j}w_iv_j\,k(x^i,y^j),

    with weights :math:`w_i = 1/C_T`, :math:`v_j = 1/C_S` (the paper's means; see
    :func:`sample_weights`). ``teacher_term=False`` drops the first sum, as the official code does:
    it is constant for the student, so the gradient is unchanged but the value can be negative.

    Args:
      x: teacher samples ``[N, C_T, M]``; y: student samples ``[N, C_S, M]``.
      wx, wy: their weights ``[N, C_T]``, ``[N, C_S]``.

    Returns:
      ``[N]``.
    """

    def weighted_sum(wa, a, b, wb):
        # $\sum_{i,j} w_i v_j\, k(a^i, b^j)$
        return np.einsum("ni,nij,nj->n", wa, kernel_matrix(a, b, kernel, c, d, sigma2), wb)

    # $\sum_{j,j'}v_jv_{j'}k(y^j,y^{j'}) - 2\sum_{i,j}w_iv_jk(x^i,y^j)$
    student = weighted_sum(wy, y, y, wy) - 2.0 * weighted_sum(wy, y, x, wx)
    # $\mathcal L_{\mathrm{MMD}^2} = \sum_{i,i'}w_iw_{i'}k(x^i,x^{i'}) + \ldots$ (or without the teacher's sum)
    return weighted_sum(wx, x, x, wx) + student if teacher_term else student


# ---------------------------------------------------------------------------------------------
# Beyond the paper: the sample sets of maps of different sizes, and a Gaussian bandwidth


def match_spatial(student: np.ndarray, teacher: np.ndarray, spatial: str) -> tuple[np.ndarray, np.ndarray]:
    r"""Bring both maps to one spatial size, so that the samples live in one space
    :math:`\mathbb R^{HW}`.

    ``"error"``: the sizes must already agree (KD-Zoo; the losses' declared check refuses others).
    ``"interpolate"``: the student is resized bilinearly (``align_corners=False``) to the teacher's
    size (the paper: "interpolate"). ``"avgpool"``: each map larger than
    :math:`(\min(H_S,H_T), \min(W_S,W_T))` is adaptive-average pooled to it (RepDistiller and
    mdistiller pool the larger of two square maps).
    """
    s_hw, t_hw = student.shape[2:], teacher.shape[2:]
    if s_hw == t_hw or spatial == "error":
        return student, teacher
    if spatial == "interpolate":
        return resize_bilinear(student, t_hw), teacher
    out = (min(s_hw[0], t_hw[0]), min(s_hw[1], t_hw[1]))  # "avgpool"

    def pool(x):
        return x if x.shape[2:] == out else adaptive_pool2d(x, out, "avg")

    return pool(student), pool(teacher)


def sample_sets(student: np.ndarray, teacher: np.ndarray, *, eps: float = 1e-12, eps_mode: str = "clamp",
                zero_channel: str = "keep", spatial: str = "error") -> tuple[np.ndarray, ...]:
    r"""The two sample sets of NST: the teacher's normalised maps :math:`x` with weights :math:`w`
    and the student's :math:`y` with weights :math:`v`.

    The zero-channel rule reads the maps as given, before :func:`match_spatial`: a channel is
    dropped when its neuron is silent, not when pooling happens to cancel it (and float32 pooling
    of tiny values cannot flip the decision).

    Returns:
      ``x [N, C_T, M], w [N, C_T], y [N, C_S, M], v [N, C_S]``.
    """
    # $w_i$, $v_j$
    w, v = sample_weights(teacher, zero_channel), sample_weights(student, zero_channel)
    student, teacher = match_spatial(student, teacher, spatial)
    # $x^i$, $y^j$
    return (normalized_channel_maps(teacher, eps, eps_mode), w, normalized_channel_maps(student, eps, eps_mode), v)


#: a mean squared distance at or below this counts as 0 (all samples coincide): σ² = 1 then
SIGMA2_DEGENERATE = 1e-12


def mean_squared_distance(z: np.ndarray, weights: np.ndarray) -> np.ndarray:
    r"""Mean of :math:`\lVert z^i-z^j\rVert^2` over the distinct pairs :math:`i<j` of samples with
    non-zero weight, per example; 0 where fewer than two samples are left.

    Args:
      z: samples ``[N, K, M]``; weights: ``[N, K]`` (only their support matters).

    Returns:
      ``[N]``.
    """
    kept = (weights > 0).astype(np.float64)
    # $\lVert z^i - z^j\rVert^2$
    squared_distance = np.sum((z[:, :, None, :] - z[:, None, :, :]) ** 2, axis=-1)
    upper = np.triu(np.ones(squared_distance.shape[1:]), k=1)
    # $\binom{K}{2}$, the distinct pairs $i<j$ of kept samples
    pairs = np.einsum("ni,ij,nj->n", kept, upper, kept)
    # $\sum_{i<j}\lVert z^i - z^j\rVert^2$
    total = np.einsum("ni,nij,ij,nj->n", kept, squared_distance, upper, kept)
    return np.where(pairs > 0, total / np.maximum(pairs, 1.0), 0.0)


# ---------------------------------------------------------------------------------------------
# The contract: arguments, knobs and conventions (read by both sides, the proof and the docs)


def _check_spatial(student_name: str, student, teacher_name: str, teacher, spatial: str) -> None:
    s_hw, t_hw = tuple(student.shape[2:]), tuple(teacher.shape[2:])
    if spatial == "error" and s_hw != t_hw:
        raise ValueError(f"{teacher_name} must have the spatial size of {student_name} {s_hw}, got {t_hw}; "
                         "pass spatial='interpolate' or 'avgpool' to match them")


def _check_samples(arguments, knobs) -> None:
    """The sample sets are defined: one spatial size unless a rule matches them."""
    _check_spatial("student", arguments["student"], "teacher", arguments["teacher"], knobs["spatial"])


def _check_kernel(arguments, knobs) -> None:
    """As :func:`_check_samples`; σ² is given exactly when the kernel is Gaussian, and ``c``, ``d``
    keep their defaults unless the kernel is polynomial (a knob is never accepted and ignored)."""
    _check_samples(arguments, knobs)
    kernel, sigma2 = knobs["kernel"], arguments["sigma2"]
    if kernel == "gaussian" and sigma2 is None:
        raise ValueError("sigma2 is required for kernel='gaussian' (see gaussian_sigma2_heuristic)")
    if kernel != "gaussian" and sigma2 is not None:
        raise ValueError(f"sigma2 is the Gaussian kernel's bandwidth; kernel={kernel!r} does not use it")
    _check_polynomial_knobs(knobs)


def _check_polynomial_knobs(knobs) -> None:
    """``c`` and ``d`` keep their defaults unless the kernel is polynomial (never accepted and ignored)."""
    if knobs["kernel"] != "poly" and (knobs["c"] != 0 or knobs["d"] != 2):
        raise ValueError(f"c and d are the polynomial kernel's offset and degree; kernel={knobs['kernel']!r} does "
                         f"not use them, got c={knobs['c']}, d={knobs['d']}")


_FEATURE_PAIR = (
    Arg("student", "features", "student feature maps :math:`\\mathbf F_S`"),
    Arg("teacher", "features", "teacher feature maps :math:`\\mathbf F_T`, a constant target; :math:`C_T` may "
        "differ from :math:`C_S`, and the spatial size too under a ``spatial`` rule", like="student", match="batch"),
)

NST_LOSS = Declaration(
    name="nst_loss",
    args=(*_FEATURE_PAIR,
          Arg("sigma2", "temperature", "the Gaussian kernel's :math:`\\sigma^2`, required for "
              "``kernel=\"gaussian\"`` and refused otherwise (a constant; the spec's data-driven choice is "
              ":func:`gaussian_sigma2_heuristic`)", like="student", optional=True, per_sample=True)),
    knobs=(
        Knob("lam", 1.0, "the weight :math:`\\lambda`", low=0.0),
        Knob("kernel", "poly", ":math:`(x^\\top y+c)^d`, :math:`x^\\top y` or "
             ":math:`\\exp(-\\lVert x-y\\rVert^2/2\\sigma^2)`", choices=("poly", "linear", "gaussian")),
        Knob("c", 0.0, "the polynomial kernel's offset (0 in every convention)", low=-math.inf),
        Knob("d", 2, "the polynomial kernel's degree (2 in every convention)", low=1, integer=True),
        Knob("teacher_term", True, "include the teacher–teacher sum (full :math:`\\mathrm{MMD}^2`); ``False`` is "
             "the official code's form", choices=(True, False)),
        Knob("half", True, "multiply by ½ (the paper's :math:`\\lambda/2`)", choices=(True, False)),
        Knob("reduction", "mean", "over the batch (``\"none\"``: ``[N]``)", choices=("mean", "sum", "none")),
        Knob("eps", 1e-12, "the normalisation's :math:`\\epsilon` (see :func:`normalized_channel_maps`)",
             low=0.0, open_low=True),
        Knob("eps_mode", "clamp", "the normalisation's :math:`\\epsilon` rule (see :func:`normalized_channel_maps`)",
             choices=("clamp", "add", "sqrt_add")),
        Knob("zero_channel", "keep", "``\"keep\"`` all-zero channels as samples at the origin (they count in the "
             ":math:`1/C^2` means) or ``\"drop\"`` them from the sample sets (see :func:`sample_weights`); a channel "
             "counts as zero when it is zero in the map as given, before any spatial matching",
             choices=("keep", "drop")),
        Knob("spatial", "error", "``\"error\"`` when the spatial sizes differ, or a rule that matches them (see "
             ":func:`match_spatial`)", choices=("error", "interpolate", "avgpool")),
    ),
    presets={
        "paper": {},
        "official": {"teacher_term": False, "half": False, "reduction": "sum", "eps": 1e-10, "eps_mode": "sqrt_add"},
        "kdzoo": {"half": False},
    },
    aliases={"repdistiller": "kdzoo", "mdistiller": "kdzoo"},
    descriptions={
        "paper": "λ/2 · full MMD², polynomial kernel d = 2, c = 0, mean over the batch (reconstructed)",
        "official": "official MXNet code: λ · (mean k(y,y') − 2 mean k(y,x)), teacher–teacher term dropped, "
                    "sum over the batch, x/√(‖x‖² + 1e-10)",
        "kdzoo": "full MMD², mean over the batch, no ½: KD-Zoo, RepDistiller, mdistiller",
    },
    check=_check_kernel,
)

#: the sample-set knobs of :data:`NST_LOSS` alone: the heuristic bandwidth reads the same samples
GAUSSIAN_SIGMA2_HEURISTIC = NST_LOSS.derive(
    "gaussian_sigma2_heuristic",
    args=_FEATURE_PAIR,
    drop_knobs=("lam", "kernel", "c", "d", "teacher_term", "half", "reduction"),
    descriptions={
        "paper": "the samples of nst_loss's 'paper': x/max(‖x‖, 1e-12)",
        "official": "the samples of the official code: x/√(‖x‖² + 1e-10)",
        "kdzoo": "the samples of KD-Zoo, RepDistiller, mdistiller: x/max(‖x‖, 1e-12)",
    },
    check=_check_samples,
)


def _check_layers(arguments, knobs) -> None:
    """Every pair as :func:`_check_kernel` checks one; one weight per pair, as a list; no Gaussian
    kernel (its bandwidth belongs to one layer pair: call :func:`nst_loss` per pair)."""
    if knobs["kernel"] == "gaussian":
        raise ValueError("kernel='gaussian' needs a bandwidth per layer pair, which nst_loss_multi does not take; "
                         "call nst_loss for each pair with its sigma2")
    _check_polynomial_knobs(knobs)
    check_item_weights(arguments["weights"], len(arguments["students"]))
    for j, (student, teacher) in enumerate(zip(arguments["students"], arguments["teachers"], strict=True)):
        _check_spatial(f"students[{j}]", student, f"teachers[{j}]", teacher, knobs["spatial"])


#: NST at several layer pairs, as RepDistiller and mdistiller use it (three stage outputs, summed)
NST_LOSS_MULTI = NST_LOSS.derive(
    "nst_loss_multi",
    args=(
        Arg("students", "features_list", "the student's feature maps, one ``[N, C_S^j, H_j, W_j]`` per layer pair, "
            "of one batch size", items_alike=True),
        Arg("teachers", "features_list", "the teacher's feature maps, one per student map (constants)",
            like="students", match="batch"),
        Arg("weights", "weights", "per-pair weights :math:`w_j`, a list with one per layer pair; all 1 when not "
            "given", optional=True),
    ),
    descriptions={**NST_LOSS.descriptions,
                  "paper": NST_LOSS.descriptions["paper"] + "; summed over the layer pairs",
                  "official": NST_LOSS.descriptions["official"] + "; summed over the layer pairs (the official "
                                                                  "code has one pair)",
                  "kdzoo": NST_LOSS.descriptions["kdzoo"] + "; summed over the layer pairs, as RepDistiller and "
                                                            "mdistiller sum their three stages"},
    check=_check_layers,
)


# ---------------------------------------------------------------------------------------------
# The public functions


@NST_LOSS.implement(NUMPY)
def nst_loss(student: np.ndarray, teacher: np.ndarray, sigma2: float | np.ndarray | None, *, lam: float, kernel: str,
             c: float, d: int, teacher_term: bool, half: bool, reduction: str, eps: float, eps_mode: str,
             zero_channel: str, spatial: str):
    r"""The NST loss: the weighted squared MMD between the teacher's and the student's
    normalised channel maps.

    .. math:: \mathcal L = \frac{\lambda}{2}\cdot\frac1N\sum_{n=1}^{N}
              \mathcal L_{\mathrm{MMD}^2}\big(\mathbf F_{T,n}, \mathbf F_{S,n}\big)
              \quad\text{(default, ``"paper"``)}.

    The cross-entropy with the labels, the other term of the paper's objective, is left to the
    caller.

    Returns:
      a float, or ``[N]`` for ``reduction="none"``.

    Examples:
      >>> import numpy as np
      >>> fs = np.array([[[[1, 2], [0, -1]], [[0.5, 0], [1, 2]]],
      ...                [[[0, 0], [3, 1]], [[2, -1], [0, 0.5]]]])
      >>> ft = np.array([[[[2, 1], [0, 0]], [[1, 1], [1, 1]], [[0, -2], [1, 0.5]]],
      ...                [[[1, 0], [2, 2]], [[0, 1], [0, 3]], [[-1, 0], [0.5, 1]]]])
      >>> print(f"{nst_loss(fs, ft):.8g}")
      0.21790137
      >>> print(f"{nst_loss(fs, ft, convention='kdzoo'):.8g}")
      0.43580275
      >>> print(f"{nst_loss(fs, ft, lam=50.0, convention='official'):.8g}")
      -7.6621315

    References:
      Huang, Wang. *Like What You Like: Knowledge Distill via Neuron Selectivity Transfer*,
      arXiv:1707.01219 (reconstructed formula).

    .. seealso:: :func:`mmd2`, the per-example statistic; :func:`gaussian_sigma2_heuristic`.
    """
    # $x^i$ with weights $w_i$, $y^j$ with weights $v_j$
    x, w, y, v = sample_sets(student, teacher, eps=eps, eps_mode=eps_mode, zero_channel=zero_channel, spatial=spatial)
    # $\mathcal L_{\mathrm{MMD}^2}(\mathbf F_{T,n}, \mathbf F_{S,n})$
    per_example = mmd2(x, y, w, v, kernel=kernel, c=c, d=d, sigma2=sigma2, teacher_term=teacher_term)
    # $\frac\lambda2$ (or $\lambda$)
    factor = lam / 2.0 if half else lam
    # $\frac\lambda2\cdot\frac1N\sum_n \mathcal L_{\mathrm{MMD}^2}$
    return factor * reduce_batch(per_example, reduction)


@NST_LOSS_MULTI.implement(NUMPY)
def nst_loss_multi(students: list[np.ndarray], teachers: list[np.ndarray], weights: list[float] | None, *, lam: float,
                   kernel: str, c: float, d: int, teacher_term: bool, half: bool, reduction: str, eps: float,
                   eps_mode: str, zero_channel: str, spatial: str):
    r"""NST at several layer pairs :math:`j`: the weighted sum of :func:`nst_loss` over the pairs,

    .. math:: \mathcal L = \sum_j w_j\,\frac{\lambda}{2}\cdot\frac1N\sum_{n=1}^{N}
              \mathcal L_{\mathrm{MMD}^2}\big(\mathbf F^j_{T,n}, \mathbf F^j_{S,n}\big)
              \quad\text{(default, ``"paper"``)},

    every knob applied to every pair (RepDistiller and mdistiller sum three stage outputs).

    Returns:
      a float, or ``[N]`` for ``reduction="none"``.

    Examples:
      >>> import numpy as np
      >>> fs = np.array([[[[1, 2], [0, -1]], [[0.5, 0], [1, 2]]],
      ...                [[[0, 0], [3, 1]], [[2, -1], [0, 0.5]]]])
      >>> ft = np.array([[[[2, 1], [0, 0]], [[1, 1], [1, 1]], [[0, -2], [1, 0.5]]],
      ...                [[[1, 0], [2, 2]], [[0, 1], [0, 3]], [[-1, 0], [0.5, 1]]]])
      >>> print(f"{nst_loss_multi([fs, fs], [ft, ft], convention='kdzoo'):.8g}")
      0.8716055
    """
    knobs = {"lam": lam, "kernel": kernel, "c": c, "d": d, "teacher_term": teacher_term, "half": half,
             "reduction": reduction, "eps": eps, "eps_mode": eps_mode, "zero_channel": zero_channel,
             "spatial": spatial}
    weights = [1.0] * len(students) if weights is None else weights
    # $\sum_j w_j\,\mathcal L_{NST}(\text{pair } j)$
    return sum(w * nst_loss(s, t, **knobs) for w, s, t in zip(weights, students, teachers, strict=True))


@GAUSSIAN_SIGMA2_HEURISTIC.implement(NUMPY)
def gaussian_sigma2_heuristic(student: np.ndarray, teacher: np.ndarray, *, eps: float, eps_mode: str,
                              zero_channel: str, spatial: str) -> np.ndarray:
    r"""A data-driven Gaussian bandwidth, one per example: the mean squared distance over the
    distinct pairs of the pooled samples :math:`\{x^i\}\cup\{y^j\}` (:math:`C_S+C_T` normalised
    channel maps, or those left after ``zero_channel="drop"``):

    .. math:: \sigma_n^2 = \binom{K}{2}^{-1}\sum_{i<j}\lVert z^i-z^j\rVert_2^2 .

    The paper's rule, "the mean squared distance of the pairs", is ambiguous (which pairs, per
    example or per batch, with or without :math:`i=i'`); this is one documented reading
    **[reconstructed]**. Pass the result to :func:`nst_loss` as ``sigma2``: the loss treats it as
    a constant (in :mod:`kdref.torch` it is detached). Where every sample coincides (or fewer than
    two are left), any :math:`\sigma^2` gives the same :math:`\mathrm{MMD}^2`, and 1 is returned.
    The knobs are :func:`nst_loss`'s normalisation and sample-set knobs, resolved the same way.

    Returns:
      ``[N]``.

    Examples:
      >>> import numpy as np
      >>> fs = np.array([[[[1, 2], [0, -1]], [[0.5, 0], [1, 2]]],
      ...                [[[0, 0], [3, 1]], [[2, -1], [0, 0.5]]]])
      >>> ft = np.array([[[[2, 1], [0, 0]], [[1, 1], [1, 1]], [[0, -2], [1, 0.5]]],
      ...                [[[1, 0], [2, 2]], [[0, 1], [0, 3]], [[-1, 0], [0.5, 1]]]])
      >>> sigma2 = gaussian_sigma2_heuristic(fs, ft)
      >>> print(np.array2string(sigma2, precision=7))
      [1.6838507 1.2964622]
      >>> print(f"{nst_loss(fs, ft, kernel='gaussian', sigma2=sigma2, convention='kdzoo'):.8g}")
      0.22553064

    References:
      Huang, Wang. *Like What You Like: Knowledge Distill via Neuron Selectivity Transfer*,
      arXiv:1707.01219 ("the mean squared distance of the pairs"; this reading is kdref's).

    .. seealso:: :func:`nst_loss`, which takes the result as ``sigma2``.
    """
    x, w, y, v = sample_sets(student, teacher, eps=eps, eps_mode=eps_mode, zero_channel=zero_channel, spatial=spatial)
    # $\sigma_n^2 = \binom{K}{2}^{-1}\sum_{i<j}\lVert z^i-z^j\rVert_2^2$ over $\{z\} = \{x^i\}\cup\{y^j\}$
    sigma2 = mean_squared_distance(np.concatenate([x, y], axis=1), np.concatenate([w, v], axis=1))
    return np.where(sigma2 > SIGMA2_DEGENERATE, sigma2, 1.0)
