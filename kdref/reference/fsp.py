r"""FSP — flow of solution procedure matrices (Yim, Joo, Bae & Kim, CVPR 2017), NumPy reference.

What is transferred is not what a layer outputs but *how one layer's features turn into the
next*: the flow between two feature maps of the same spatial size, which the paper likens to the
steps of solving a problem. The flow is summarised as the FSP matrix, the correlation of every
channel of the first map with every channel of the second, averaged over the positions; the
student learns to reproduce the teacher's matrices, pair by pair. Student and teacher must have
the same channel counts at each pair (the matrices are compared entry by entry). When the two
maps of a pair differ in spatial size, the larger one is pooled to the smaller (max pooling in
the paper).

The paper's equations (**[reconstructed]** from a translation and independent transcriptions;
the paper's own text could not be checked). Eq. (1), for the first map
:math:`F^1\in\mathbb R^{h\times w\times m}` and the second :math:`F^2\in\mathbb R^{h\times w\times n}`:

.. math:: G_{i,j}(x;W)=\sum_{s=1}^{h}\sum_{t=1}^{w}\frac{F^1_{s,t,i}(x;W)\times F^2_{s,t,j}(x;W)}{h\times w},

and Eq. (2), over the layer pairs :math:`i = 1..n` and the :math:`N` examples:

.. math:: L_{FSP}(W_t,W_s)=\frac1N\sum_x\sum_{i=1}^{n}\lambda_i\times
   \big\Vert G_i^T(x;W_t)-G_i^S(x;W_s)\big\Vert_2^2 .

The popular libraries compute the same :math:`G` and differ in the per-pair distance, the
reduction over pairs and the pooling: the conventions of :data:`FSP_LOSS`. Arrays are
``[N, C, H, W]`` (channels first, as in PyTorch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kdref.declaration import Arg, Declaration, Knob
from kdref.reference._common import NUMPY, adaptive_pool2d, reduce_batch

__all__ = [
    "FSP_LOSS",
    "FSP_MATRIX",
    "fsp_distance",
    "fsp_loss",
    "fsp_matrix",
    "match_spatial_pair",
    "pair_weights",
]

POOLS = ("max", "avg", "error")
DISTANCES = ("sq_frobenius", "mse", "col_l2")

# ---------------------------------------------------------------------------------------------
# The paper's equations


def _fsp_matrix(f1: np.ndarray, f2: np.ndarray) -> np.ndarray:
    """Eq. (1) on two maps of one spatial size: ``[N, m, n]``."""
    h, w = f1.shape[2:]
    # $G_{i,j} = \sum_{s,t} F^1_{s,t,i} F^2_{s,t,j} / (h\times w)$
    return np.einsum("nihw,njhw->nij", f1, f2) / (h * w)


def _match_spatial(f1: np.ndarray, f2: np.ndarray, pool: str) -> tuple[np.ndarray, np.ndarray]:
    """The paper's remark on Eq. (1): both maps at ``(min h, min w)``, the larger one pooled (a map
    already that size is left as it is)."""
    if f1.shape[2:] == f2.shape[2:]:
        return f1, f2
    size = (min(f1.shape[2], f2.shape[2]), min(f1.shape[3], f2.shape[3]))
    return tuple(x if x.shape[2:] == size else adaptive_pool2d(x, size, pool) for x in (f1, f2))


def fsp_distance(g_s: np.ndarray, g_t: np.ndarray, kind: str = "sq_frobenius") -> np.ndarray:
    r"""Eq. (2)'s distance between the student's and the teacher's FSP matrices, per example.

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
    # $G^T - G^S$
    delta = g_t - g_s
    if kind == "sq_frobenius":
        # $\Vert G^T-G^S\Vert_2^2 = \sum_{i,j}(G^T_{ij}-G^S_{ij})^2$
        return np.sum(delta**2, axis=(1, 2))
    if kind == "mse":
        # $\frac{1}{mn}\Vert G^T-G^S\Vert_2^2$
        return np.mean(delta**2, axis=(1, 2))
    if kind == "col_l2":
        # $\sum_j \big(\sum_i (G^S_{ij}-G^T_{ij})^2\big)^{1/2}$
        return np.sum(np.sqrt(np.sum(delta**2, axis=1)), axis=1)
    raise ValueError(f"kind must be one of {', '.join(map(repr, DISTANCES))}; got {kind!r}")


def pair_weights(weights: float | Sequence[float] | None, num_pairs: int) -> list[float]:
    r"""Eq. (2)'s weights :math:`\lambda_i` of ``num_pairs`` layer pairs, one per pair.

    ``None`` means :math:`\lambda_i = 1`; one number is the same :math:`\lambda` for every pair (the
    paper's choice); a list gives one weight per pair. The values are those :data:`FSP_LOSS`
    accepted (pure Python, both sides).
    """
    if weights is None:
        return [1.0] * num_pairs
    if isinstance(weights, (list, tuple)):
        return [float(w) for w in weights]
    # $\lambda_i = \lambda$ for every pair
    return [float(weights)] * num_pairs


# ---------------------------------------------------------------------------------------------
# The contract: arguments, knobs and conventions (read by both sides, the proof and the docs)


def _spatial_mismatch(f1, f2, names: tuple[str, str]) -> ValueError:
    return ValueError(f"{names[1]} has spatial size {tuple(f2.shape[2:])} but {names[0]} has {tuple(f1.shape[2:])}: "
                      "Eq. (1) needs one size per pair; choose pool='max' (paper) or pool='avg' to pool the larger "
                      "map")


def _check_one_size(f1, f2, pool: str, names: tuple[str, str]) -> None:
    if pool == "error" and f1.shape[2:] != f2.shape[2:]:
        raise _spatial_mismatch(f1, f2, names)


def _check_pairs(arguments: Mapping[str, Any], knobs: Mapping[str, Any]) -> None:
    """What no kind states about the layer pairs: the teacher has the student's channel counts;
    ``weights`` holds one weight per pair; with ``pool="error"`` the two maps of a pair have one
    spatial size."""
    first = arguments["student_first"]
    for i in range(len(first)):
        for role, symbol in (("first", "m"), ("second", "n")):
            s, t = arguments[f"student_{role}"][i], arguments[f"teacher_{role}"][i]
            if t.shape[1] != s.shape[1]:
                raise ValueError(f"teacher_{role}[{i}] must have the channel count of student_{role}[{i}] "
                                 f"({symbol} = {s.shape[1]}): FSP compares matrices of one size, got shape "
                                 f"{tuple(t.shape)}")
    weights = arguments["weights"]
    if isinstance(weights, (list, tuple)) and len(weights) != len(first):
        raise ValueError(f"weights must hold one weight per layer pair ({len(first)}), got {len(weights)}")
    for i in range(len(first)):
        for side in ("student", "teacher"):
            names = (f"{side}_first[{i}]", f"{side}_second[{i}]")
            _check_one_size(arguments[f"{side}_first"][i], arguments[f"{side}_second"][i], knobs["pool"], names)


_POOL = Knob("pool", "max", "how the larger map of a pair is brought to the smaller one's size: max pooling (the "
             "paper, torchdistill), average pooling (KD-Zoo, RepDistiller) or ``\"error\"`` (refuse maps of "
             "different sizes); see :func:`match_spatial_pair`", choices=POOLS)

FSP_MATRIX = Declaration(
    name="fsp_matrix",
    args=(Arg("f1", "features", "the first feature map :math:`F^1` (:math:`m` channels)"),
          Arg("f2", "features", "the second feature map :math:`F^2` (:math:`n` channels), on the same "
              ":math:`h\\times w` grid", like="f1", match="batch_spatial")),
    presets={"paper": {}},
    descriptions={"paper": "Eq. (1): G = F¹·F²ᵀ/(h·w), rows indexed by the first map's channels; "
                           "KD-Zoo, RepDistiller and torchdistill compute the same entries"},
)

FSP_LOSS = Declaration(
    name="fsp_loss",
    args=(
        Arg("student_first", "features_list", "the student's first map of each layer pair (:math:`m_i` channels), "
            "of one batch size", items_alike=True),
        Arg("student_second", "features_list", "the student's second map of each pair (:math:`n_i` channels; "
            "its spatial size may differ from the first's)", like="student_first", match="batch"),
        Arg("teacher_first", "features_list", "the teacher's first maps (constants), with the student's channel "
            "counts :math:`m_i`; their spatial sizes may differ from the student's", like="student_first",
            match="batch"),
        Arg("teacher_second", "features_list", "the teacher's second maps (constants), with the student's channel "
            "counts :math:`n_i`", like="student_second", match="batch"),
        Arg("weights", "weights", ":math:`\\lambda_i`: one number for every pair (the paper's choice) or one per "
            "pair; all 1 when ``None``", optional=True),
    ),
    knobs=(
        _POOL,
        Knob("distance", "sq_frobenius", "the per-pair distance of :func:`fsp_distance`: the paper's squared "
             "Frobenius norm, the libraries' mean squared error (÷ m·n) or torchdistill's sum of column ℓ2 norms",
             choices=DISTANCES),
        Knob("pair_reduction", "sum", "``\"sum\"`` or ``\"mean\"`` over the layer pairs", choices=("sum", "mean")),
        Knob("reduction", "mean", "``\"mean\"`` over the batch, ``\"sum\"`` or ``\"none\"``",
             choices=("mean", "sum", "none")),
    ),
    presets={
        "paper": {},
        "kdzoo": {"pool": "avg", "distance": "mse", "pair_reduction": "mean"},
        "repdistiller": {"pool": "avg", "distance": "mse"},
        "torchdistill": {"distance": "col_l2"},
    },
    descriptions={
        "paper": "Eq. (2): λ_i·‖G_T − G_S‖_F², summed over pairs, mean over the batch; max pooling [reconstructed]",
        "kdzoo": "KD-Zoo: F.mse_loss of G (÷ m·n) per pair, averaged over pairs; average pooling",
        "repdistiller": "RepDistiller: mean squared error of G (÷ m·n) per pair, summed over pairs; average pooling",
        "torchdistill": "torchdistill FSPLoss: sum of the column ℓ2 norms of G_S − G_T (not squared), "
                        "summed over pairs, ÷ N; max pooling",
    },
    check=_check_pairs,
)

#: the two maps of :func:`match_spatial_pair` (a helper, not a loss: it validates through this)
_PAIR_OF_MAPS = Declaration(
    name="match_spatial_pair",
    args=(Arg("f1", "features"), Arg("f2", "features", like="f1", match="batch")),
    knobs=(_POOL,),
    check=lambda maps, knobs: _check_one_size(maps["f1"], maps["f2"], knobs["pool"], ("f1", "f2")),
)


# ---------------------------------------------------------------------------------------------
# The public functions


@FSP_MATRIX.implement(NUMPY)
def fsp_matrix(f1: np.ndarray, f2: np.ndarray) -> np.ndarray:
    r"""Eq. (1): the FSP matrix, the spatial mean of the products of every channel pair.

    .. math:: G_{i,j}=\sum_{s=1}^{h}\sum_{t=1}^{w}\frac{F^1_{s,t,i}\times F^2_{s,t,j}}{h\times w}

    Returns:
      :math:`G`, ``[N, m, n]``: rows are the first map's channels.

    Examples:
      The first example of the spec's example 1, :math:`G_S`:

      >>> import numpy as np
      >>> f1 = np.array([[[[1.0, 0.0], [2.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]]])
      >>> f2 = np.array([[[[1.0, 1.0], [0.0, 2.0]], [[0.0, 0.0], [1.0, 1.0]], [[2.0, 0.0], [0.0, 1.0]]]])
      >>> fsp_matrix(f1, f2)
      array([[[0.75, 0.75, 0.75],
              [0.25, 0.25, 0.  ]]])

    References:
      Yim, Joo, Bae, Kim. *A Gift from Knowledge Distillation: Fast Optimization, Network
      Minimization and Transfer Learning*, CVPR 2017, Eq. (1) [reconstructed].

    .. seealso:: :func:`match_spatial_pair` brings two maps of different sizes to one size first.
    """
    return _fsp_matrix(f1, f2)


def match_spatial_pair(f1: np.ndarray, f2: np.ndarray, pool: str = "max") -> tuple[np.ndarray, np.ndarray]:
    r"""Bring the two maps of a pair to one spatial size by pooling the larger one.

    Both maps end at :math:`(\min(h_1,h_2), \min(w_1,w_2))`: whichever map is larger is pooled,
    in each direction separately (so non-square maps and a map larger in one direction only are
    fine). The pooling is adaptive, with PyTorch's windows
    :math:`[\lfloor k\,H/h\rfloor, \lceil (k+1)\,H/h\rceil)`: disjoint for integer ratios,
    overlapping by one row or column otherwise.

    Args:
      f1, f2: ``[N, m, h1, w1]`` and ``[N, n, h2, w2]``, one batch size and dtype.
      pool: ``"max"`` (the paper, torchdistill), ``"avg"`` (KD-Zoo, RepDistiller) or
        ``"error"`` (refuse maps of different sizes).

    Returns:
      ``(f1, f2)`` of one spatial size.
    """
    maps, knobs = _PAIR_OF_MAPS.bind(NUMPY, (f1, f2), {"pool": pool})
    return _match_spatial(maps["f1"], maps["f2"], knobs["pool"])


@FSP_LOSS.implement(NUMPY)
def fsp_loss(student_first: list[np.ndarray], student_second: list[np.ndarray], teacher_first: list[np.ndarray],
             teacher_second: list[np.ndarray], weights: float | list[float] | None, *, pool: str, distance: str,
             pair_reduction: str, reduction: str):
    r"""Eq. (2): the FSP transfer loss over one or more layer pairs.

    .. math:: L_{FSP}=\frac1N\sum_{x}\sum_{i=1}^{P}\lambda_i\,
        \big\Vert G_i^T(x)-G_i^S(x)\big\Vert_F^2
        \qquad\text{(default, ``"paper"``)},

    where pair :math:`i` is ``(student_first[i], student_second[i])`` for the student and
    ``(teacher_first[i], teacher_second[i])`` for the teacher, and :math:`G` is Eq. (1)
    (:func:`fsp_matrix`) after :func:`match_spatial_pair`.

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

    .. seealso:: :func:`fsp_matrix`, Eq. (1); :func:`fsp_distance`, the per-pair distances.
    """
    # $\lambda_i$
    lambdas = pair_weights(weights, len(student_first))
    terms = []
    for i, lam in enumerate(lambdas):
        # $G_i^S$, $G_i^T$ (eq. 1), the larger map of each pair pooled to the smaller
        G_S, G_T = (_fsp_matrix(*_match_spatial(first[i], second[i], pool))
                    for first, second in ((student_first, student_second), (teacher_first, teacher_second)))
        # $\lambda_i \Vert G_i^T - G_i^S\Vert_2^2$
        terms.append(lam * fsp_distance(G_S, G_T, distance))
    # $\sum_{i=1}^{n}$ (or the mean over the pairs)
    per_example = np.sum(terms, axis=0) if pair_reduction == "sum" else np.mean(terms, axis=0)
    # $\frac1N\sum_x$
    return reduce_batch(per_example, reduction)
