r"""FSP — flow of solution procedure matrices (Yim, Joo, Bae & Kim, CVPR 2017), NumPy reference.

The teacher's knowledge is not what a layer outputs but how one layer's features turn into the
next: the *flow* between two feature maps of the same spatial size. Eq. (1) summarises that flow
as the FSP matrix, the spatially averaged inner product of every channel :math:`i` of the first
map :math:`F^1\in\mathbb R^{h\times w\times m}` with every channel :math:`j` of the second map
:math:`F^2\in\mathbb R^{h\times w\times n}`,

.. math:: G_{i,j}(x;W)=\sum_{s=1}^{h}\sum_{t=1}^{w}\frac{F^1_{s,t,i}(x;W)\times F^2_{s,t,j}(x;W)}{h\times w},

and Eq. (2) makes the student's matrices match the teacher's, pair by pair,

.. math:: L_{FSP}(W_t,W_s)=\frac1N\sum_x\sum_{i=1}^{n}\lambda_i\times
   \big\Vert G_i^T(x;W_t)-G_i^S(x;W_s)\big\Vert_2^2 .

Both equations are **reconstructed** (from a translation and independent transcriptions; the
paper's own text could not be checked). Student and teacher must have the same channel counts
:math:`m`, :math:`n` at each pair. When the two maps of a pair differ in spatial size, the larger
one is pooled to the smaller (max pooling in the paper). The popular libraries compute the same
:math:`G` and differ in the per-pair distance, the reduction over pairs and the pooling: see
:data:`CONVENTIONS`.

Arrays are ``[N, C, H, W]`` (channels first, as in PyTorch).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from kdref._scalars import check_real
from kdref.conventions import Conventions
from kdref.reference._common import (
    adaptive_pool2d,
    as_float_array,
    check_same_batch,
    check_sequence,
    reduce_batch,
)

__all__ = [
    "CONVENTIONS",
    "MATRIX_CONVENTIONS",
    "check_pair_weights",
    "fsp_distance",
    "fsp_loss",
    "fsp_matrix",
    "match_spatial_pair",
]

POOLS = ("max", "avg", "error")
DISTANCES = ("sq_frobenius", "mse", "col_l2")

CONVENTIONS = Conventions(
    loss="fsp_loss",
    defaults={"pool": "max", "distance": "sq_frobenius", "pair_reduction": "sum", "reduction": "mean"},
    presets={
        "paper": {},
        "kdzoo": {"pool": "avg", "distance": "mse", "pair_reduction": "mean"},
        "repdistiller": {"pool": "avg", "distance": "mse"},
        "torchdistill": {"distance": "col_l2"},
    },
    default="paper",
    descriptions={
        "paper": "Eq. (2): λ_i·‖G_T − G_S‖_F², summed over pairs, mean over the batch; max pooling [reconstructed]",
        "kdzoo": "KD-Zoo: F.mse_loss of G (÷ m·n) per pair, averaged over pairs; average pooling",
        "repdistiller": "RepDistiller: mean squared error of G (÷ m·n) per pair, summed over pairs; average pooling",
        "torchdistill": "torchdistill FSPLoss: sum of the column ℓ2 norms of G_S − G_T (not squared), "
                        "summed over pairs, ÷ N; max pooling",
    },
    choices={
        "pool": POOLS,
        "distance": DISTANCES,
        "pair_reduction": ("sum", "mean"),
        "reduction": ("mean", "sum", "none"),
    },
)

#: Eq. (1) has no variants: every library computes the same matrix (RepDistiller stores its transpose).
MATRIX_CONVENTIONS = Conventions(
    loss="fsp_matrix",
    defaults={},
    presets={"paper": {}},
    default="paper",
    descriptions={"paper": "Eq. (1): G = F¹·F²ᵀ/(h·w), rows indexed by the first map's channels; "
                           "KD-Zoo, RepDistiller and torchdistill compute the same entries"},
)


def fsp_matrix(f1: np.ndarray, f2: np.ndarray, *, convention: str | None = None) -> np.ndarray:
    r"""Eq. (1): the FSP matrix, the spatial mean of the products of every channel pair.

    .. math:: G_{i,j}=\sum_{s=1}^{h}\sum_{t=1}^{w}\frac{F^1_{s,t,i}\times F^2_{s,t,j}}{h\times w}

    Args:
      f1: the first feature map :math:`F^1`, ``[N, m, h, w]``.
      f2: the second feature map :math:`F^2`, ``[N, n, h, w]`` (the same :math:`h\times w`).
      convention: ``"paper"``, the only one (every library computes these entries).

    Returns:
      :math:`G`, ``[N, m, n]``: rows are the first map's channels.

    Examples:
      >>> import numpy as np
      >>> f1 = np.array([[[[1.0, 0.0], [2.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]]])
      >>> f2 = np.array([[[[1.0, 1.0], [0.0, 2.0]], [[0.0, 0.0], [1.0, 1.0]], [[2.0, 0.0], [0.0, 1.0]]]])
      >>> fsp_matrix(f1, f2)
      array([[[0.75, 0.75, 0.75],
              [0.25, 0.25, 0.  ]]])

    .. seealso:: :func:`match_spatial_pair` brings two maps of different sizes to one size first.
    """
    MATRIX_CONVENTIONS.resolve(convention)
    f1 = as_float_array("f1", f1, ndim=4)
    f2 = as_float_array("f2", f2, ndim=4)
    check_same_batch("f2", f2, "f1", f1)
    if f2.shape[2:] != f1.shape[2:]:
        raise ValueError(f"f2 must have the spatial size of f1 {f1.shape[2:]} (Eq. (1) sums over one h×w grid), "
                         f"got shape {f2.shape}; pool the larger map first (match_spatial_pair)")
    h, w = f1.shape[2:]
    return np.einsum("nihw,njhw->nij", f1, f2) / (h * w)


def _match_spatial(f1: np.ndarray, f2: np.ndarray, pool: str, names: tuple[str, str]):
    """Both maps at ``(min h, min w)``; a map already that size is left as it is."""
    if f1.shape[2:] == f2.shape[2:]:
        return f1, f2
    if pool == "error":
        raise ValueError(f"{names[1]} has spatial size {f2.shape[2:]} but {names[0]} has {f1.shape[2:]}: Eq. (1) "
                         "needs one size per pair; choose pool='max' (paper) or pool='avg' to pool the larger map")
    size = (min(f1.shape[2], f2.shape[2]), min(f1.shape[3], f2.shape[3]))
    return tuple(x if x.shape[2:] == size else adaptive_pool2d(x, size, pool) for x in (f1, f2))


def match_spatial_pair(f1: np.ndarray, f2: np.ndarray, pool: str = "max") -> tuple[np.ndarray, np.ndarray]:
    r"""Bring the two maps of a pair to one spatial size by pooling the larger one.

    Both maps end at :math:`(\min(h_1,h_2), \min(w_1,w_2))`: whichever map is larger is pooled,
    in each direction separately (so non-square maps and a map larger in one direction only are
    fine). The pooling is adaptive, with PyTorch's windows
    :math:`[\lfloor k\,H/h\rfloor, \lceil (k+1)\,H/h\rceil)`: disjoint for integer ratios,
    overlapping by one row or column otherwise.

    Args:
      f1, f2: ``[N, m, h1, w1]`` and ``[N, n, h2, w2]``.
      pool: ``"max"`` (the paper, torchdistill), ``"avg"`` (KD-Zoo, RepDistiller) or
        ``"error"`` (refuse maps of different sizes).

    Returns:
      ``(f1, f2)`` of one spatial size.
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {', '.join(map(repr, POOLS))}; got {pool!r}")
    f1 = as_float_array("f1", f1, ndim=4)
    f2 = as_float_array("f2", f2, ndim=4)
    check_same_batch("f2", f2, "f1", f1)
    return _match_spatial(f1, f2, pool, ("f1", "f2"))


def fsp_distance(g_s: np.ndarray, g_t: np.ndarray, kind: str = "sq_frobenius") -> np.ndarray:
    r"""The distance between the student's and the teacher's FSP matrices, per example.

    .. math::
        \text{sq\_frobenius}: \Vert G^T-G^S\Vert_F^2=\sum_{i,j}(G^T_{ij}-G^S_{ij})^2,\qquad
        \text{mse}: \frac{1}{mn}\Vert G^T-G^S\Vert_F^2,\qquad
        \text{col\_l2}: \sum_{j=1}^{n}\Big(\sum_{i=1}^{m}(G^S_{ij}-G^T_{ij})^2\Big)^{1/2}.

    ``"sq_frobenius"`` is the paper's :math:`\Vert\cdot\Vert_2^2`, ``"mse"`` the libraries'
    ``F.mse_loss`` (KD-Zoo, RepDistiller), ``"col_l2"`` torchdistill's ``norm(dim=1)``: an
    :math:`\ell_{2,1}` norm over the columns of :math:`G` (over the first map's channels, for each
    channel of the second map), not squared.

    Args:
      g_s, g_t: FSP matrices ``[N, m, n]``.
      kind: ``"sq_frobenius"``, ``"mse"`` or ``"col_l2"``.

    Returns:
      ``[N]``.
    """
    delta = g_t - g_s
    if kind == "sq_frobenius":
        return np.sum(delta**2, axis=(1, 2))
    if kind == "mse":
        return np.mean(delta**2, axis=(1, 2))
    if kind == "col_l2":
        return np.sum(np.sqrt(np.sum(delta**2, axis=1)), axis=1)
    raise ValueError(f"kind must be one of {', '.join(map(repr, DISTANCES))}; got {kind!r}")


def check_pair_weights(weights, num_pairs: int) -> list[float]:
    r"""The weights :math:`\lambda_i` as a list of ``num_pairs`` finite numbers :math:`\ge 0`.

    ``None`` means :math:`\lambda_i = 1`; one number is the same :math:`\lambda` for every pair (the
    paper's choice); a list or tuple gives one weight per pair. Pure Python, shared by both sides.
    """
    if weights is None:
        return [1.0] * num_pairs
    if isinstance(weights, numbers.Real) and not isinstance(weights, bool):
        return [check_real("weights", weights, low=0.0)] * num_pairs
    if not isinstance(weights, Sequence) or isinstance(weights, str):
        raise TypeError(f"weights must be a real number or a list of {num_pairs} real numbers (one per layer pair), "
                        f"got {type(weights).__name__}")
    if len(weights) != num_pairs:
        raise ValueError(f"weights must hold one weight per layer pair ({num_pairs}), got {len(weights)}")
    return [check_real(f"weights[{i}]", w, low=0.0) for i, w in enumerate(weights)]


_MAPS = ("student_first", "student_second", "teacher_first", "teacher_second")


def check_pairs(maps: dict, *, as_array=as_float_array, same_batch=check_same_batch,
                sequence=check_sequence) -> list[dict]:
    """Four lists of ``[N, C, H, W]`` maps, one per pair, with one batch size and dtype and the
    teacher's channel counts equal to the student's; returns one dict of maps per pair.

    The torch side passes its own array checks (tensors, one device); the rules are these."""
    lists = {name: sequence(name, maps[name]) for name in _MAPS}
    num_pairs = len(lists["student_first"])
    for name in _MAPS[1:]:
        if len(lists[name]) != num_pairs:
            raise ValueError(f"{name} must hold one map per layer pair ({num_pairs}, as student_first), "
                             f"got {len(lists[name])}")
    pairs, first = [], None
    for i in range(num_pairs):
        pair = {}
        for name in _MAPS:
            x = as_array(f"{name}[{i}]", lists[name][i], ndim=4)
            if first is None:
                first = x
            else:
                same_batch(f"{name}[{i}]", x, "student_first[0]", first)
            pair[name] = x
        for role, symbol in (("first", "m"), ("second", "n")):
            s, t = pair[f"student_{role}"], pair[f"teacher_{role}"]
            if t.shape[1] != s.shape[1]:
                raise ValueError(f"teacher_{role}[{i}] must have the channel count of student_{role}[{i}] "
                                 f"({symbol} = {s.shape[1]}): FSP compares matrices of one size, got shape "
                                 f"{tuple(t.shape)}")
        pairs.append(pair)
    return pairs


def fsp_loss(
    student_first: Sequence[np.ndarray],
    student_second: Sequence[np.ndarray],
    teacher_first: Sequence[np.ndarray],
    teacher_second: Sequence[np.ndarray],
    *,
    weights: float | Sequence[float] | None = None,
    convention: str | None = None,
    pool: str | None = None,
    distance: str | None = None,
    pair_reduction: str | None = None,
    reduction: str | None = None,
):
    r"""Eq. (2): the FSP transfer loss over one or more layer pairs.

    .. math:: L_{FSP}=\frac1N\sum_{x}\sum_{i=1}^{P}\lambda_i\,
        \big\Vert G_i^T(x)-G_i^S(x)\big\Vert_F^2
        \qquad\text{(default, ``"paper"``)},

    where pair :math:`i` is ``(student_first[i], student_second[i])`` for the student and
    ``(teacher_first[i], teacher_second[i])`` for the teacher, and :math:`G` is Eq. (1)
    (:func:`fsp_matrix`) after :func:`match_spatial_pair`.

    Args:
      student_first, student_second: the student's first and second maps of each pair, lists of
        ``[N, m_i, h, w]`` and ``[N, n_i, h', w']``.
      teacher_first, teacher_second: the teacher's, with the **same channel counts**
        :math:`m_i`, :math:`n_i` (its spatial sizes may differ from the student's); constants.
      weights: :math:`\lambda_i`: ``None`` (all 1), one number for every pair, or one per pair.
      convention: ``"paper"`` (default), ``"kdzoo"``, ``"repdistiller"`` or ``"torchdistill"``.
      pool: ``"max"``, ``"avg"`` or ``"error"``: how the larger map of a pair is brought to the
        smaller one's size; overrides the convention.
      distance: ``"sq_frobenius"``, ``"mse"`` or ``"col_l2"`` (:func:`fsp_distance`); overrides
        the convention.
      pair_reduction: ``"sum"`` or ``"mean"`` over the pairs; overrides the convention.
      reduction: ``"mean"`` over the batch, ``"sum"`` or ``"none"``.

    Returns:
      a float, or ``[N]`` for ``reduction="none"``.

    Examples:
      The spec's example 1 (one pair, :math:`N=2`, :math:`m=2`, :math:`n=3`, :math:`h=w=2`):

      >>> import numpy as np
      >>> S1 = np.array([[[[1, 0], [2, 1]], [[0, 1], [1, 0]]], [[[2, 1], [0, 0]], [[1, 1], [0, 2]]]], float)
      >>> S2 = np.array([[[[1, 1], [0, 2]], [[0, 0], [1, 1]], [[2, 0], [0, 1]]],
      ...                [[[0, 1], [1, 0]], [[1, 2], [0, 0]], [[0, 0], [2, 1]]]], float)
      >>> T1 = np.array([[[[2, 0], [1, 1]], [[0, 1], [0, 1]]], [[[1, 1], [1, 0]], [[0, 2], [1, 1]]]], float)
      >>> T2 = np.array([[[[1, 0], [1, 2]], [[1, 0], [0, 1]], [[1, 1], [0, 0]]],
      ...                [[[0, 2], [1, 0]], [[1, 1], [1, 0]], [[0, 1], [1, 1]]]], float)
      >>> fsp_loss([S1], [S2], [T1], [T2])
      1.125
      >>> fsp_loss([S1], [S2], [T1], [T2], reduction="none")
      array([0.4375, 1.8125])
      >>> fsp_loss([S1], [S2], [T1], [T2], convention="kdzoo")
      0.1875
      >>> print(f"{fsp_loss([S1], [S2], [T1], [T2], convention='torchdistill'):.8g}")
      1.4938556

    References:
      Yim, Joo, Bae, Kim. *A Gift from Knowledge Distillation: Fast Optimization, Network
      Minimization and Transfer Learning*, CVPR 2017, Eqs. (1)–(2) [reconstructed].
    """
    knobs = CONVENTIONS.resolve(convention, pool=pool, distance=distance, pair_reduction=pair_reduction,
                                reduction=reduction)
    pairs = check_pairs({"student_first": student_first, "student_second": student_second,
                          "teacher_first": teacher_first, "teacher_second": teacher_second})
    lambdas = check_pair_weights(weights, len(pairs))
    terms = []
    for i, (pair, lam) in enumerate(zip(pairs, lambdas, strict=True)):
        g = {}
        for side in ("student", "teacher"):
            names = (f"{side}_first[{i}]", f"{side}_second[{i}]")
            f1, f2 = _match_spatial(pair[f"{side}_first"], pair[f"{side}_second"], knobs["pool"], names)
            g[side] = fsp_matrix(f1, f2)
        terms.append(lam * fsp_distance(g["student"], g["teacher"], knobs["distance"]))
    per_example = np.sum(terms, axis=0) if knobs["pair_reduction"] == "sum" else np.mean(terms, axis=0)
    return reduce_batch(per_example, knobs["reduction"])
