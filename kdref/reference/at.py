r"""AT — activation-based attention transfer (Zagoruyko & Komodakis, ICLR 2017), NumPy reference.

A convolutional layer's activations :math:`A\in\mathbb R^{C\times H\times W}` say *where* the
network looks: positions with large activations matter to it. AT reduces the channels to one
spatial **attention map** (eq. 1 declares the mapping, §3.1 gives the instances, e.g.
:math:`F^p_{\mathrm{sum}}(A)=\sum_i |A_i|^p`), normalises each vectorised map to unit
:math:`\ell_2` norm, and makes the student's normalised maps match the teacher's at one or more
pairs of layers of equal resolution (eq. 2, **reconstructed**):

.. math::
    \mathcal L_{AT} = \mathcal L(\mathbf W_S, x) + \frac\beta2\sum_{j\in\mathcal I}
    \left\lVert \frac{Q_S^j}{\lVert Q_S^j\rVert_2} - \frac{Q_T^j}{\lVert Q_T^j\rVert_2}\right\rVert_p ,
    \qquad Q^j = \mathrm{vec}\big(F(A^j)\big).

The released code (and every library) squares the distance and averages it over batch and
positions instead, with :math:`\beta = 1000`; both are conventions here. Channel counts of
student and teacher may differ (the map sums over channels); spatial sizes must agree unless a
resampling rule is chosen. The teacher is a constant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from kdref._scalars import check_real
from kdref.conventions import Conventions
from kdref.reference._common import (
    adaptive_pool2d,
    as_float_array,
    check_same_batch,
    check_sequence,
    l2_normalize,
    reduce_batch,
    resize_bilinear,
)

__all__ = [
    "CONVENTIONS",
    "MULTI_CONVENTIONS",
    "SPATIAL_RULES",
    "at_distance",
    "at_loss",
    "at_loss_multi",
    "attention_map",
    "attention_pair",
    "check_hyperparameters",
    "common_size",
    "normalized_attention",
]

#: how a student/teacher pair of different spatial sizes is brought to one size
SPATIAL_RULES = ("error", "avgpool_features", "avgpool_map", "interp_map")

_DEFAULTS = {
    "channel_reduce": "sum",
    "use_abs": True,
    "eps": 1e-12,
    "eps_mode": "clamp",
    "distance": "norm",
    "p_norm": 2.0,
    "halve_beta": True,
    "spatial": "error",
    "reduction": "mean",
}
_PRESETS = {
    "paper": {},
    "official": {"channel_reduce": "mean", "use_abs": False, "distance": "sq_mean", "halve_beta": False},
    "kdzoo": {"eps": 1e-6, "eps_mode": "add", "distance": "sq_mean", "halve_beta": False},
    "torchdistill_paper": {"use_abs": False, "halve_beta": False},
}
_ALIASES = {"torchdistill_code": "official", "repdistiller": "official", "mdistiller": "official"}
_DESCRIPTIONS = {
    "paper": "eq. 2: (β/2)·‖Q̂_S − Q̂_T‖₂ per example (not squared), F = Σ_c |A_c|^p, mean over the batch",
    "official": "szagoruyko/attention-transfer at_loss: mean over batch and positions of (Q̂_S − Q̂_T)², "
                "F = mean_c A_c^p; the published runs multiply it by β = 1000 (= torchdistill mode 'code', "
                "RepDistiller, mdistiller)",
    "kdzoo": "KD-Zoo AT: F.mse_loss of Q/(‖Q‖ + 1e-6), F = Σ_c |A_c|^p",
    "torchdistill_paper": "torchdistill ATLoss(mode='paper'): ‖Q̂_S − Q̂_T‖₂ per example, mean over the batch "
                          "(= paper with β = 2)",
}
_CHOICES = {
    "channel_reduce": ("sum", "mean"),
    "use_abs": (True, False),
    "eps_mode": ("clamp", "add"),
    "distance": ("norm", "sq_sum", "sq_mean"),
    "halve_beta": (True, False),
    "spatial": SPATIAL_RULES,
    "reduction": ("mean", "sum", "none"),
}

CONVENTIONS = Conventions(
    loss="at_loss", defaults=_DEFAULTS, presets=_PRESETS, aliases=_ALIASES, default="paper",
    descriptions=_DESCRIPTIONS, choices=_CHOICES,
)

MULTI_CONVENTIONS = Conventions(
    loss="at_loss_multi",
    defaults={**_DEFAULTS, "reduce_layers": "sum"},
    presets={**_PRESETS, "kdzoo": {**_PRESETS["kdzoo"], "reduce_layers": "mean"}},
    aliases=_ALIASES,
    default="paper",
    descriptions={**_DESCRIPTIONS,
                  "paper": _DESCRIPTIONS["paper"] + "; summed over the layer pairs",
                  "official": _DESCRIPTIONS["official"] + "; summed over the layer pairs",
                  "kdzoo": _DESCRIPTIONS["kdzoo"] + "; averaged over the layer pairs, as KD-Zoo's training script",
                  "torchdistill_paper": _DESCRIPTIONS["torchdistill_paper"] + "; summed over the layer pairs"},
    choices={**_CHOICES, "reduce_layers": ("sum", "mean")},
)


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
    """
    powered = (np.abs(A) if use_abs else A) ** p
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
    return l2_normalize(Q.reshape(Q.shape[0], -1), axis=1, eps=eps, eps_mode=eps_mode)


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
    - ``"error"``: different sizes are refused (checked by the caller).

    Adaptive pooling uses PyTorch's windows, ``[⌊i·H/h⌋, ⌈(i+1)·H/h⌉)``: they overlap when the
    ratio is not an integer.
    """
    size = common_size(fm_s.shape[2:], fm_t.shape[2:], spatial)
    if spatial == "avgpool_features":
        fm_s, fm_t = (x if x.shape[2:] == size else adaptive_pool2d(x, size, "avg") for x in (fm_s, fm_t))
    Q_s, Q_t = (attention_map(x, p, channel_reduce, use_abs) for x in (fm_s, fm_t))
    resample = {"avgpool_map": lambda Q: adaptive_pool2d(Q[:, None], size, "avg")[:, 0],
                "interp_map": lambda Q: resize_bilinear(Q[:, None], size)[:, 0]}.get(spatial)
    if resample is not None:
        Q_s, Q_t = (Q if Q.shape[1:] == size else resample(Q) for Q in (Q_s, Q_t))
    return Q_s, Q_t


def at_distance(Qs_hat: np.ndarray, Qt_hat: np.ndarray, distance: str = "norm", p_norm: float = 2.0) -> np.ndarray:
    r"""The distance between normalised maps per example, :math:`\Delta_n = \hat Q_{S,n} - \hat Q_{T,n}`.

    .. math::
        \text{``norm''}: \lVert\Delta_n\rVert_{p} = \Big(\sum_k |\Delta_{nk}|^{p}\Big)^{1/p} \ \text{(eq. 2)},\qquad
        \text{``sq\_sum''}: \lVert\Delta_n\rVert_2^2,\qquad
        \text{``sq\_mean''}: \frac1M\lVert\Delta_n\rVert_2^2 \ \text{(official code)},

    with :math:`M = hw` positions. The norm is not differentiable at :math:`\Delta_n = 0`; the
    torch side defines its gradient there as 0 (the zero subgradient).

    Returns:
      ``[N]``.
    """
    delta = Qs_hat - Qt_hat
    if distance == "norm":
        return np.sum(np.abs(delta) ** p_norm, axis=1) ** (1.0 / p_norm)
    squared = np.sum(delta * delta, axis=1)
    return squared / delta.shape[1] if distance == "sq_mean" else squared


# ---------------------------------------------------------------------------------------------
# Checks shared by the single-pair and the multi-layer loss


def check_hyperparameters(p, beta, knobs: Mapping) -> tuple[float, float]:
    """``p``, ``beta`` and the numeric knobs, checked once for both sides (pure Python)."""
    p = check_real("p", p, low=1.0)
    beta = check_real("beta", beta, low=0.0)
    if not knobs["use_abs"] and p != math.floor(p):
        raise ValueError(f"p must be an integer when use_abs=False (A^p of a negative activation is not real "
                         f"for p = {p}); pass use_abs=True")
    eps = check_real("eps", knobs["eps"], low=0.0)
    if eps == 0:
        raise ValueError("eps must be > 0: a zero map has no direction, and eps defines what it becomes")
    check_real("p_norm", knobs["p_norm"], low=1.0)
    if knobs["distance"] != "norm" and knobs["p_norm"] != 2:
        raise ValueError(f"p_norm applies to distance='norm' only; distance={knobs['distance']!r} is the squared "
                         f"l2 distance, got p_norm={knobs['p_norm']}")
    return p, beta


def _check_pair(name_s: str, fm_s, name_t: str, fm_t, spatial: str) -> tuple[np.ndarray, np.ndarray]:
    fm_s = as_float_array(name_s, fm_s, ndim=4)
    fm_t = as_float_array(name_t, fm_t, ndim=4)
    check_same_batch(name_t, fm_t, name_s, fm_s)
    if spatial == "error" and fm_t.shape[2:] != fm_s.shape[2:]:
        raise ValueError(
            f"{name_t} must have the spatial size of {name_s} {fm_s.shape[2:]}, got {fm_t.shape[2:]}; the paper "
            f"transfers attention between layers of equal resolution. To compare other sizes choose a rule: "
            f"spatial='avgpool_features' (RepDistiller), 'avgpool_map' or 'interp_map'"
        )
    return fm_s, fm_t


def _pair_distance(fm_s: np.ndarray, fm_t: np.ndarray, p: float, knobs: Mapping) -> np.ndarray:
    Q_s, Q_t = attention_pair(fm_s, fm_t, p=p, channel_reduce=knobs["channel_reduce"], use_abs=knobs["use_abs"],
                              spatial=knobs["spatial"])
    Qs_hat, Qt_hat = (normalized_attention(Q, knobs["eps"], knobs["eps_mode"]) for Q in (Q_s, Q_t))
    return at_distance(Qs_hat, Qt_hat, knobs["distance"], knobs["p_norm"])


def beta_factor(beta: float, knobs: Mapping) -> float:
    """β, halved where the convention keeps Eq. (2)'s β/2 (shared with kdref.torch.at)."""
    return beta / 2 if knobs["halve_beta"] else beta


# ---------------------------------------------------------------------------------------------
# The losses


def at_loss(
    fm_s: np.ndarray,
    fm_t: np.ndarray,
    *,
    p: float = 2.0,
    beta: float = 1.0,
    convention: str | None = None,
    channel_reduce: str | None = None,
    use_abs: bool | None = None,
    eps: float | None = None,
    eps_mode: str | None = None,
    distance: str | None = None,
    p_norm: float | None = None,
    halve_beta: bool | None = None,
    spatial: str | None = None,
    reduction: str | None = None,
):
    r"""Attention-transfer loss of one student/teacher layer pair.

    .. math::
        \mathcal L_{\text{paper}} = \frac\beta2\cdot\frac1N\sum_{n=1}^{N}\lVert\hat Q_{S,n}-\hat Q_{T,n}\rVert_2,
        \qquad
        \mathcal L_{\text{official}} = \beta\cdot\frac{1}{N\,M}\sum_{n=1}^{N}\lVert\hat Q_{S,n}-\hat Q_{T,n}\rVert_2^2,

    with :math:`\hat Q = \mathrm{vec}(F(A))/\lVert\mathrm{vec}(F(A))\rVert` and :math:`M` positions.

    Args:
      fm_s: student activations :math:`A_S`, ``[N, C_S, H, W]``.
      fm_t: teacher activations :math:`A_T`, ``[N, C_T, H, W]`` (a constant; :math:`C_T` may
        differ from :math:`C_S`).
      p: exponent of the map, :math:`F = \sum_c|A_c|^p`, ``p >= 1`` (an integer when ``use_abs=False``).
      beta: the weight :math:`\beta`; the value is multiplied by :math:`\beta/2` (``halve_beta``,
        eq. 2) or by :math:`\beta`. The paper sets :math:`\beta=10^3/(HWN)`; the released code
        multiplies the ``"official"`` value by 1000.
      convention: ``"paper"`` (default), ``"official"`` (aliases ``"torchdistill_code"``,
        ``"repdistiller"``, ``"mdistiller"``), ``"kdzoo"`` or ``"torchdistill_paper"``.
      channel_reduce: ``"sum"`` or ``"mean"`` over channels in the map.
      use_abs: :math:`|A|^p` (True) or :math:`A^p` (False).
      eps: the normaliser's :math:`\epsilon`, ``> 0``.
      eps_mode: ``"clamp"`` (:math:`Q/\max(\lVert Q\rVert,\epsilon)`) or ``"add"``
        (:math:`Q/(\lVert Q\rVert+\epsilon)`).
      distance: ``"norm"`` (eq. 2), ``"sq_sum"`` or ``"sq_mean"`` (official), see :func:`at_distance`.
      p_norm: the norm type of ``distance="norm"`` (eq. 2's :math:`p`, 2 in the experiments).
      halve_beta: multiply by :math:`\beta/2` instead of :math:`\beta`.
      spatial: ``"error"`` (sizes must match), ``"avgpool_features"``, ``"avgpool_map"`` or
        ``"interp_map"``, see :func:`attention_pair`.
      reduction: ``"mean"`` over the batch, ``"sum"`` or ``"none"``.

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
    knobs = CONVENTIONS.resolve(
        convention, channel_reduce=channel_reduce, use_abs=use_abs, eps=eps, eps_mode=eps_mode, distance=distance,
        p_norm=p_norm, halve_beta=halve_beta, spatial=spatial, reduction=reduction,
    )
    p, beta = check_hyperparameters(p, beta, knobs)
    fm_s, fm_t = _check_pair("fm_s", fm_s, "fm_t", fm_t, knobs["spatial"])
    return beta_factor(beta, knobs) * reduce_batch(_pair_distance(fm_s, fm_t, p, knobs), knobs["reduction"])


def at_loss_multi(
    fms_s,
    fms_t,
    weights=None,
    *,
    p: float = 2.0,
    beta: float = 1.0,
    convention: str | None = None,
    channel_reduce: str | None = None,
    use_abs: bool | None = None,
    eps: float | None = None,
    eps_mode: str | None = None,
    distance: str | None = None,
    p_norm: float | None = None,
    halve_beta: bool | None = None,
    spatial: str | None = None,
    reduction: str | None = None,
    reduce_layers: str | None = None,
):
    r"""Attention transfer at several layer pairs :math:`j\in\mathcal I` (eq. 2's sum over :math:`j`).

    .. math::
        \mathcal L = \frac\beta2\cdot\frac1N\sum_{n=1}^{N}\ \sum_{j\in\mathcal I} w_j\,
        \lVert\hat Q^j_{S,n}-\hat Q^j_{T,n}\rVert_2 \quad\text{(paper)},

    the per-pair distance and factor as in :func:`at_loss`; ``reduce_layers="mean"`` divides the
    sum over pairs by their number :math:`|\mathcal I|` (KD-Zoo averages its three pairs).

    Args:
      fms_s: student activations, a list of ``[N, C_S^j, H_j, W_j]``.
      fms_t: teacher activations, a list of the same length, ``[N, C_T^j, H_j, W_j]``.
      weights: per-pair weights :math:`w_j \ge 0` (torchdistill's per-pair ``weight``), default 1.
      reduce_layers: ``"sum"`` or ``"mean"`` over the pairs.
      p, beta, convention: as :func:`at_loss`, applied to every pair.
      channel_reduce, use_abs, eps, eps_mode, distance, p_norm, halve_beta, spatial, reduction: the
        knobs of :func:`at_loss`, applied to every pair.

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
    """
    knobs = MULTI_CONVENTIONS.resolve(
        convention, channel_reduce=channel_reduce, use_abs=use_abs, eps=eps, eps_mode=eps_mode, distance=distance,
        p_norm=p_norm, halve_beta=halve_beta, spatial=spatial, reduction=reduction, reduce_layers=reduce_layers,
    )
    p, beta = check_hyperparameters(p, beta, knobs)
    fms_s = check_sequence("fms_s", fms_s)
    fms_t = check_sequence("fms_t", fms_t)
    if len(fms_t) != len(fms_s):
        raise ValueError(f"fms_t must hold one teacher map per student map ({len(fms_s)}), got {len(fms_t)}")
    weights = _check_weights(weights, len(fms_s))
    total = 0.0
    for j, (fm_s, fm_t) in enumerate(zip(fms_s, fms_t, strict=True)):
        fm_s, fm_t = _check_pair(f"fms_s[{j}]", fm_s, f"fms_t[{j}]", fm_t, knobs["spatial"])
        if j == 0:
            first = fm_s
        else:
            check_same_batch(f"fms_s[{j}]", fm_s, "fms_s[0]", first)
        total = total + weights[j] * _pair_distance(fm_s, fm_t, p, knobs)
    if knobs["reduce_layers"] == "mean":
        total = total / len(fms_s)
    return beta_factor(beta, knobs) * reduce_batch(total, knobs["reduction"])


def _check_weights(weights, count: int) -> list[float]:
    if weights is None:
        return [1.0] * count
    weights = check_sequence("weights", weights)
    if len(weights) != count:
        raise ValueError(f"weights must hold one weight per layer pair ({count}), got {len(weights)}")
    return [check_real(f"weights[{j}]", w, low=0.0) for j, w in enumerate(weights)]
