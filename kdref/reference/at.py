r"""AT — activation-based attention transfer (Zagoruyko & Komodakis, ICLR 2017), NumPy reference.

What is transferred is *where* a network looks. The activations of a convolutional layer are
large at the positions that matter to it, so summing their magnitudes over the channels gives one
spatial **attention map**. AT makes each map a unit vector, so that only the pattern counts and
not the size of the activations (the paper stresses that this normalisation matters for
training), and makes the student's unit maps point where the teacher's point, at one or more
pairs of layers of equal resolution. The channel counts of student and teacher may differ (the map
sums over the channels); the spatial sizes must agree unless a resampling rule is chosen. The
teacher is a constant.

The paper's equations, for the activations :math:`A\in\mathbb R^{C\times H\times W}` of one example
with channel slices :math:`A_i = A(i,:,:)` (**[reconstructed]**: the paper's own text could not be
checked; torchdistill and independent transcriptions agree). Eq. 1 declares the mapping, §3.1
gives its instances, of which the experiments use :math:`F^2_{\mathrm{sum}}`:

.. math::
    F^p_{\mathrm{sum}}(A) = \sum_{i=1}^{C} |A_i|^p, \qquad Q = \mathrm{vec}\big(F(A)\big),
    \qquad \hat Q = \frac{Q}{\lVert Q\rVert_2}.

Eq. 2 adds the transfer term to the student's task loss :math:`\mathcal L(\mathbf W_S, x)`, over
the layer pairs :math:`j\in\mathcal I`:

.. math::
    \mathcal L_{AT} = \mathcal L(\mathbf W_S, x) + \frac\beta2\sum_{j\in\mathcal I}
    \left\lVert \hat Q_S^j - \hat Q_T^j\right\rVert_p .

The released code (and every library) squares the distance and averages it over batch and
positions instead, with :math:`\beta = 1000`; both are conventions here (:data:`AT_LOSS`).
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
    "AT_LOSS",
    "AT_LOSS_MULTI",
    "SPATIAL_RULES",
    "at_distance",
    "at_loss",
    "at_loss_multi",
    "attention_map",
    "attention_pair",
    "beta_factor",
    "common_size",
    "normalized_attention",
]

# ---------------------------------------------------------------------------------------------
# The paper's equations


def attention_map(A: np.ndarray, p: float = 2.0, channel_reduce: str = "sum", use_abs: bool = True) -> np.ndarray:
    r"""Eq. 1 with §3.1's instance :math:`F^p_{\mathrm{sum}}`: the channels reduced to one spatial map.

    .. math:: F^p_{\mathrm{sum}}(A) = \sum_{i=1}^{C} |A_i|^p \qquad (A_i = A(i,:,:)),

    or the channel mean :math:`\frac1C\sum_i` (``channel_reduce="mean"``, the official code), and
    :math:`A_i^p` without the absolute value (``use_abs=False``, the official code, RepDistiller,
    mdistiller; the same for even :math:`p`, different for odd :math:`p` and negative activations).

    Args:
      A: activations, ``[N, C, H, W]``.
      p: the exponent, :math:`p \ge 1`.
      channel_reduce: ``"sum"`` or ``"mean"`` over the channels.
      use_abs: take :math:`|A_i|` before the power.

    Returns:
      the maps :math:`F(A)`, ``[N, H, W]``.

    Examples:
      §7's student maps (:math:`p = 2`, channel sum), :math:`q_S` of the spec:

      >>> import numpy as np
      >>> FS = np.array([[[[1, 2], [0, -1]], [[0.5, 0], [1, 2]]],
      ...                [[[0, 0], [3, 1]], [[2, -1], [0, 0.5]]]])
      >>> attention_map(FS).reshape(2, -1)
      array([[1.25, 4.  , 1.  , 5.  ],
             [4.  , 1.  , 9.  , 1.25]])
    """
    # $|A_i|^p$ (or $A_i^p$)
    powered = (np.abs(A) if use_abs else A) ** p
    # $F^p_{\mathrm{sum}}(A) = \sum_{i=1}^{C} |A_i|^p$ (or $\frac1C\sum_i$)
    return np.sum(powered, axis=1) if channel_reduce == "sum" else np.mean(powered, axis=1)


def normalized_attention(Q: np.ndarray, eps: float = 1e-12, eps_mode: str = "clamp") -> np.ndarray:
    r"""The vectorised map over its :math:`\ell_2` norm, :math:`\hat Q = \mathrm{vec}(Q)/\lVert\mathrm{vec}(Q)\rVert_2`.

    The paper has no :math:`\epsilon`; kdref makes it explicit: ``"clamp"`` divides by
    :math:`\max(\lVert Q\rVert, \epsilon)` (``F.normalize``: a zero map stays 0), ``"add"`` by
    :math:`\lVert Q\rVert + \epsilon` (KD-Zoo). Each example is normalised on its own.

    Args:
      Q: maps, ``[N, H, W]``.

    Returns:
      :math:`\hat Q`, ``[N, H·W]``.
    """
    # $\hat Q = \mathrm{vec}(Q) / \lVert \mathrm{vec}(Q) \rVert_2$
    return l2_normalize(Q.reshape(Q.shape[0], -1), axis=1, eps=eps, eps_mode=eps_mode)


def at_distance(Qs_hat: np.ndarray, Qt_hat: np.ndarray, distance: str = "norm", p_norm: float = 2.0) -> np.ndarray:
    r"""Eq. 2's distance between normalised maps per example, :math:`\Delta_n = \hat Q_{S,n} - \hat Q_{T,n}`.

    .. math::
        \text{``norm''}: \lVert\Delta_n\rVert_{p} = \Big(\sum_k |\Delta_{nk}|^{p}\Big)^{1/p} \ \text{(eq. 2)},\qquad
        \text{``sq\_sum''}: \lVert\Delta_n\rVert_2^2,\qquad
        \text{``sq\_mean''}: \frac1M\lVert\Delta_n\rVert_2^2 \ \text{(official code)},

    with :math:`M = hw` positions. The norm is not differentiable at :math:`\Delta_n = 0`; the
    torch side defines its gradient there as 0 (the zero subgradient).

    Returns:
      ``[N]``.
    """
    # $\Delta_n = \hat Q_{S,n} - \hat Q_{T,n}$
    delta = Qs_hat - Qt_hat
    if distance == "norm":
        # $\lVert\Delta_n\rVert_p = \big(\sum_k |\Delta_{nk}|^p\big)^{1/p}$
        return np.sum(np.abs(delta) ** p_norm, axis=1) ** (1.0 / p_norm)
    # $\lVert\Delta_n\rVert_2^2 = \sum_k \Delta_{nk}^2$
    squared = np.sum(delta * delta, axis=1)
    # $\frac1M\lVert\Delta_n\rVert_2^2$ (official code)
    return squared / delta.shape[1] if distance == "sq_mean" else squared


def beta_factor(beta: float, halve_beta: bool) -> float:
    r"""Eq. 2's weight :math:`\frac\beta2`, or :math:`\beta` where the convention drops the ½ (the
    released code); shared with :mod:`kdref.torch.at`."""
    # $\frac\beta2$ (eq. 2), or $\beta$
    return beta / 2 if halve_beta else beta


# ---------------------------------------------------------------------------------------------
# Beyond the paper: maps of different spatial sizes

#: how a student/teacher pair of different spatial sizes is brought to one size
SPATIAL_RULES = ("error", "avgpool_features", "avgpool_map", "interp_map")


def common_size(hw_s: tuple[int, int], hw_t: tuple[int, int], spatial: str) -> tuple[int, int]:
    """The size both maps are brought to: the smaller in each axis for pooling, the larger for
    bilinear interpolation."""
    pick = max if spatial == "interp_map" else min
    return pick(hw_s[0], hw_t[0]), pick(hw_s[1], hw_t[1])


def attention_pair(
    fm_s: np.ndarray, fm_t: np.ndarray, *, p: float, channel_reduce: str, use_abs: bool, spatial: str,
) -> tuple[np.ndarray, np.ndarray]:
    r"""The student's and the teacher's attention maps at one spatial size, ``([N, h, w], [N, h, w])``.

    Maps of equal size are returned as they are. Otherwise, by ``spatial``:

    - ``"avgpool_features"`` (RepDistiller, mdistiller): adaptive average pooling of the larger
      *feature map* to the smaller size, then the map. kdref pools to (smaller H, smaller W), which
      also serves non-square maps (RepDistiller pools to (H, H) and fails on them).
    - ``"avgpool_map"``: the maps at full resolution, then adaptive average pooling of the larger
      *map*. Not the same as pooling features: :math:`F` is not linear.
    - ``"interp_map"``: the maps at full resolution, the smaller one resized bilinearly
      (``align_corners=False``) to the larger size.
    - ``"error"``: different sizes are refused (by the losses' declared check).

    Adaptive pooling uses PyTorch's windows, ``[⌊i·H/h⌋, ⌈(i+1)·H/h⌉)``: they overlap when the
    ratio is not an integer.
    """
    size = common_size(fm_s.shape[2:], fm_t.shape[2:], spatial)
    if spatial == "avgpool_features":
        fm_s, fm_t = (A if A.shape[2:] == size else adaptive_pool2d(A, size, "avg") for A in (fm_s, fm_t))
    # $F(A_S)$, $F(A_T)$ (eq. 1)
    Q_s, Q_t = (attention_map(A, p, channel_reduce, use_abs) for A in (fm_s, fm_t))
    resample = {"avgpool_map": lambda Q: adaptive_pool2d(Q[:, None], size, "avg")[:, 0],
                "interp_map": lambda Q: resize_bilinear(Q[:, None], size)[:, 0]}.get(spatial)
    if resample is not None:
        Q_s, Q_t = (Q if Q.shape[1:] == size else resample(Q) for Q in (Q_s, Q_t))
    return Q_s, Q_t


def _pair_distance(fm_s: np.ndarray, fm_t: np.ndarray, *, p: float, channel_reduce: str, use_abs: bool, eps: float,
                   eps_mode: str, distance: str, p_norm: float, spatial: str) -> np.ndarray:
    """The distance of one layer pair's normalised maps per example, ``[N]``."""
    Q_s, Q_t = attention_pair(fm_s, fm_t, p=p, channel_reduce=channel_reduce, use_abs=use_abs, spatial=spatial)
    # $\hat Q_S = Q_S/\lVert Q_S\rVert_2$, $\hat Q_T = Q_T/\lVert Q_T\rVert_2$
    Qs_hat, Qt_hat = (normalized_attention(Q, eps, eps_mode) for Q in (Q_s, Q_t))
    # $\lVert \hat Q_S - \hat Q_T\rVert_p$ (eq. 2)
    return at_distance(Qs_hat, Qt_hat, distance, p_norm)


# ---------------------------------------------------------------------------------------------
# The contract: arguments, knobs and conventions (read by both sides, the proof and the docs)


def _check_knob_rules(knobs) -> None:
    """Rules between knobs that no single knob's range states."""
    if not knobs["use_abs"] and knobs["p"] != math.floor(knobs["p"]):
        raise ValueError(f"p must be an integer when use_abs=False (A^p of a negative activation is not real "
                         f"for p = {knobs['p']}); pass use_abs=True")
    if knobs["distance"] != "norm" and knobs["p_norm"] != 2:
        raise ValueError(f"p_norm applies to distance='norm' only; distance={knobs['distance']!r} is the squared "
                         f"l2 distance, got p_norm={knobs['p_norm']}")


def _check_spatial(name_s: str, fm_s, name_t: str, fm_t, spatial: str) -> None:
    hw_s, hw_t = tuple(fm_s.shape[2:]), tuple(fm_t.shape[2:])
    if spatial == "error" and hw_t != hw_s:
        raise ValueError(
            f"{name_t} must have the spatial size of {name_s} {hw_s}, got {hw_t}; the paper transfers attention "
            f"between layers of equal resolution. To compare other sizes choose a rule: "
            f"spatial='avgpool_features' (RepDistiller), 'avgpool_map' or 'interp_map'"
        )


def _check_pair(arguments, knobs) -> None:
    _check_knob_rules(knobs)
    _check_spatial("fm_s", arguments["fm_s"], "fm_t", arguments["fm_t"], knobs["spatial"])


def _check_layers(arguments, knobs) -> None:
    """Every pair as :func:`_check_pair`; one weight per pair, as a list (the ``"weights"`` kind
    also takes one number for all)."""
    _check_knob_rules(knobs)
    check_item_weights(arguments["weights"], len(arguments["fms_s"]))
    for j, (fm_s, fm_t) in enumerate(zip(arguments["fms_s"], arguments["fms_t"], strict=True)):
        _check_spatial(f"fms_s[{j}]", fm_s, f"fms_t[{j}]", fm_t, knobs["spatial"])


_KNOBS = (
    Knob("p", 2.0, "exponent of the map, :math:`F = \\sum_c|A_c|^p` (an integer when ``use_abs=False``)", low=1.0),
    Knob("beta", 1.0, "the weight :math:`\\beta`: the value is multiplied by :math:`\\beta/2` (``halve_beta``, "
         "eq. 2) or by :math:`\\beta`. The paper sets :math:`\\beta=10^3/(HWN)`; the released code multiplies the "
         "``\"official\"`` value by 1000", low=0.0),
    Knob("channel_reduce", "sum", "the channel sum :math:`\\sum_c` (§3.1) or the mean (official code)",
         choices=("sum", "mean")),
    Knob("use_abs", True, ":math:`|A_c|^p` (True) or :math:`A_c^p` (False)", choices=(True, False)),
    Knob("eps", 1e-12, "the normaliser's :math:`\\epsilon` (a zero map has no direction: :math:`\\epsilon` says "
         "what it becomes)", low=0.0, open_low=True),
    Knob("eps_mode", "clamp", "``\"clamp\"`` divides by :math:`\\max(\\lVert Q\\rVert,\\epsilon)`, ``\"add\"`` by "
         ":math:`\\lVert Q\\rVert+\\epsilon`", choices=("clamp", "add")),
    Knob("distance", "norm", "eq. 2's norm, or the squared distance summed or averaged over positions (official), "
         "see :func:`at_distance`", choices=("norm", "sq_sum", "sq_mean")),
    Knob("p_norm", 2.0, "the norm type of ``distance=\"norm\"`` (eq. 2's :math:`p`, 2 in the experiments); 2 for "
         "the squared distances", low=1.0),
    Knob("halve_beta", True, "multiply by :math:`\\beta/2` instead of :math:`\\beta`", choices=(True, False)),
    Knob("spatial", "error", "how maps of different spatial sizes are matched (``\"error\"``: refused), see "
         ":func:`attention_pair`", choices=SPATIAL_RULES),
    Knob("reduction", "mean", "over the batch", choices=("mean", "sum", "none")),
)
_PRESETS = {
    "paper": {},
    "official": {"channel_reduce": "mean", "use_abs": False, "distance": "sq_mean", "halve_beta": False},
    "kdzoo": {"eps": 1e-6, "eps_mode": "add", "distance": "sq_mean", "halve_beta": False},
    "torchdistill_paper": {"use_abs": False, "halve_beta": False},
}
_DESCRIPTIONS = {
    "paper": "eq. 2: (β/2)·‖Q̂_S − Q̂_T‖₂ per example (not squared), F = Σ_c |A_c|^p, mean over the batch",
    "official": "szagoruyko/attention-transfer at_loss: mean over batch and positions of (Q̂_S − Q̂_T)², "
                "F = mean_c A_c^p; the published runs multiply it by β = 1000 (= torchdistill mode 'code', "
                "RepDistiller, mdistiller)",
    "kdzoo": "KD-Zoo AT: F.mse_loss of Q/(‖Q‖ + 1e-6), F = Σ_c |A_c|^p",
    "torchdistill_paper": "torchdistill ATLoss(mode='paper'): ‖Q̂_S − Q̂_T‖₂ per example, mean over the batch "
                          "(= paper with β = 2)",
}

AT_LOSS = Declaration(
    name="at_loss",
    args=(
        Arg("fm_s", "features", "student activations :math:`A_S`"),
        Arg("fm_t", "features", "teacher activations :math:`A_T`, a constant; :math:`C_T` may differ from "
            ":math:`C_S`, and the spatial size too under a ``spatial`` rule", like="fm_s", match="batch"),
    ),
    knobs=_KNOBS,
    presets=_PRESETS,
    aliases={"torchdistill_code": "official", "repdistiller": "official", "mdistiller": "official"},
    descriptions=_DESCRIPTIONS,
    check=_check_pair,
)

AT_LOSS_MULTI = AT_LOSS.derive(
    "at_loss_multi",
    args=(
        Arg("fms_s", "features_list", "student activations, one ``[N, C_S^j, H_j, W_j]`` per layer pair, of one "
            "batch size", items_alike=True),
        Arg("fms_t", "features_list", "teacher activations, one per student map (constants)", like="fms_s",
            match="batch"),
        Arg("weights", "weights", "per-pair weights :math:`w_j`, a list with one per layer pair (torchdistill's "
            "per-pair ``weight``); all 1 when not given", optional=True),
    ),
    knobs=(*_KNOBS, Knob("reduce_layers", "sum", "sum over the layer pairs, or their mean (KD-Zoo averages its "
                         "three pairs)", choices=("sum", "mean"))),
    presets={**_PRESETS, "kdzoo": {**_PRESETS["kdzoo"], "reduce_layers": "mean"}},
    descriptions={**_DESCRIPTIONS,
                  "paper": _DESCRIPTIONS["paper"] + "; summed over the layer pairs",
                  "official": _DESCRIPTIONS["official"] + "; summed over the layer pairs",
                  "kdzoo": _DESCRIPTIONS["kdzoo"] + "; averaged over the layer pairs, as KD-Zoo's training script",
                  "torchdistill_paper": _DESCRIPTIONS["torchdistill_paper"] + "; summed over the layer pairs"},
    check=_check_layers,
)


# ---------------------------------------------------------------------------------------------
# The losses


@AT_LOSS.implement(NUMPY)
def at_loss(fm_s: np.ndarray, fm_t: np.ndarray, *, p: float, beta: float, channel_reduce: str, use_abs: bool,
            eps: float, eps_mode: str, distance: str, p_norm: float, halve_beta: bool, spatial: str, reduction: str):
    r"""Attention-transfer loss of one student/teacher layer pair.

    .. math::
        \mathcal L_{\text{paper}} = \frac\beta2\cdot\frac1N\sum_{n=1}^{N}\lVert\hat Q_{S,n}-\hat Q_{T,n}\rVert_2,
        \qquad
        \mathcal L_{\text{official}} = \beta\cdot\frac{1}{N\,M}\sum_{n=1}^{N}\lVert\hat Q_{S,n}-\hat Q_{T,n}\rVert_2^2,

    with :math:`\hat Q = \mathrm{vec}(F(A))/\lVert\mathrm{vec}(F(A))\rVert` and :math:`M` positions.

    Returns:
      a float, or ``[N]`` for ``reduction="none"``.

    Examples:
      >>> import numpy as np
      >>> FS = np.array([[[[1, 2], [0, -1]], [[0.5, 0], [1, 2]]],
      ...                [[[0, 0], [3, 1]], [[2, -1], [0, 0.5]]]])
      >>> FT = np.array([[[[2, 1], [0, 0]], [[1, 1], [1, 1]], [[0, -2], [1, 0.5]]],
      ...                [[[1, 0], [2, 2]], [[0, 1], [0, 3]], [[-1, 0], [0.5, 1]]]])
      >>> print(f"{at_loss(FS, FT, beta=2.0):.8f}")
      0.90739762
      >>> print(f"{at_loss(FS, FT, convention='official'):.8f}")
      0.21164738
      >>> print(f"{at_loss(FS, FT, convention='kdzoo'):.8f}")
      0.21164734

    References:
      Zagoruyko, Komodakis. *Paying More Attention to Attention*, ICLR 2017, eqs. 1–2 and §3.1.

    .. seealso:: :func:`at_loss_multi`, the sum over several layer pairs.
    """
    # $\lVert\hat Q_{S,n}-\hat Q_{T,n}\rVert_p$ per example (eq. 2)
    per_example = _pair_distance(fm_s, fm_t, p=p, channel_reduce=channel_reduce, use_abs=use_abs, eps=eps,
                                 eps_mode=eps_mode, distance=distance, p_norm=p_norm, spatial=spatial)
    # $\frac\beta2\cdot\frac1N\sum_n$ (eq. 2, averaged over the batch)
    return beta_factor(beta, halve_beta) * reduce_batch(per_example, reduction)


@AT_LOSS_MULTI.implement(NUMPY)
def at_loss_multi(fms_s: list[np.ndarray], fms_t: list[np.ndarray], weights: list[float] | None, *, p: float,
                  beta: float, channel_reduce: str, use_abs: bool, eps: float, eps_mode: str, distance: str,
                  p_norm: float, halve_beta: bool, spatial: str, reduction: str, reduce_layers: str):
    r"""Attention transfer at several layer pairs :math:`j\in\mathcal I` (eq. 2's sum over :math:`j`).

    .. math::
        \mathcal L = \frac\beta2\cdot\frac1N\sum_{n=1}^{N}\ \sum_{j\in\mathcal I} w_j\,
        \lVert\hat Q^j_{S,n}-\hat Q^j_{T,n}\rVert_2 \quad\text{(paper)},

    the per-pair distance and factor as in :func:`at_loss`, every knob applied to every pair;
    ``reduce_layers="mean"`` divides the sum over pairs by their number :math:`|\mathcal I|`.

    Returns:
      a float, or ``[N]`` for ``reduction="none"``.

    Examples:
      >>> import numpy as np
      >>> FS = np.array([[[[1, 2], [0, -1]], [[0.5, 0], [1, 2]]],
      ...                [[[0, 0], [3, 1]], [[2, -1], [0, 0.5]]]])
      >>> FT = np.array([[[[2, 1], [0, 0]], [[1, 1], [1, 1]], [[0, -2], [1, 0.5]]],
      ...                [[[1, 0], [2, 2]], [[0, 1], [0, 3]], [[-1, 0], [0.5, 1]]]])
      >>> print(f"{at_loss_multi([FS], [FT], convention='official'):.8f}")
      0.21164738

    References:
      Zagoruyko, Komodakis. *Paying More Attention to Attention*, ICLR 2017, eq. 2.

    .. seealso:: :func:`at_loss`, one layer pair.
    """
    weights = [1.0] * len(fms_s) if weights is None else weights
    total = 0.0
    for w, fm_s, fm_t in zip(weights, fms_s, fms_t, strict=True):
        # $\sum_{j\in\mathcal I} w_j\,\lVert\hat Q^j_{S,n}-\hat Q^j_{T,n}\rVert_p$
        total = total + w * _pair_distance(fm_s, fm_t, p=p, channel_reduce=channel_reduce, use_abs=use_abs, eps=eps,
                                           eps_mode=eps_mode, distance=distance, p_norm=p_norm, spatial=spatial)
    if reduce_layers == "mean":
        # $\frac{1}{|\mathcal I|}\sum_{j\in\mathcal I}$ (KD-Zoo)
        total = total / len(fms_s)
    # $\frac\beta2\cdot\frac1N\sum_n$
    return beta_factor(beta, halve_beta) * reduce_batch(total, reduction)
