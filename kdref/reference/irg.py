r"""IRG — knowledge distillation via instance relationship graph (Liu et al., CVPR 2019), NumPy reference.

**The idea.** A teacher's knowledge is not only what it outputs for each input but how it relates
the inputs of a batch to each other. IRG reads this as a graph over the instances of a mini-batch:
the **vertices** are the instances' features, the **edges** their squared Euclidean distances.
The student is asked to reproduce three things: the teacher's logits (vertices, the only layer
where the two networks have the same shape), the teacher's edge matrices (any widths: an edge
matrix is :math:`I\times I`), and how each instance's feature moves from one layer to the next
inside a network (the *transformation*).

**The equations** **[reconstructed]** (from two independent transcriptions of the paper; its own
text could not be checked): plain sums, no normalisation. With :math:`f_l(x_i)` the flattened
feature of instance :math:`i` at layer :math:`l`, the edges at layer :math:`l` and the
transformation :math:`l_1\to l_2` of one network are

.. math::
   A_l(i,j)=\lVert f_l(x_i)-f_l(x_j)\rVert_2^2,\qquad
   \Lambda_{l_1,l_2}(i,i)=\lVert f_{l_1}(x_i)-f_{l_2}(x_i)\rVert_2^2,

and the multi-type knowledge loss, without its cross-entropy with the labels, is

.. math::
   \mathcal L_{MTK}-\mathcal L_{GT}=\lambda_1\sum_i\lVert z^T_i-z^S_i\rVert_2^2
   +\lambda_2\sum_{l_M\in L_M}\lVert A^T_L-A^S_{l_M}\rVert_F^2
   +\lambda_3\sum_{(l_1,l_2,l_3,l_4)}\lVert\Lambda^T_{l_1,l_2}-\Lambda^S_{l_3,l_4}\rVert_2^2 .

The official Caffe code and KD-Zoo **[code]** divide every edge matrix and transformation vector
by its batch maximum and average instead of summing (see :data:`IRG_LOSS`).

**Degenerate entries.** A max-normalised matrix or vector with no positive entry (a batch of one,
or every instance equal) is defined as 0 with zero gradient; Caffe and KD-Zoo divide 0 by 0 there
(NaN). A transformation pair whose two layers have different widths (after the optional matching
rule) is refused with a ``ValueError``.

Arrays are ``[N, ...]``: every axis after the batch axis is flattened into one vector per
instance (the ``"kdzoo"`` matching rule reads ``[N, C, H, W]`` maps before flattening).
"""

from __future__ import annotations

import math

import numpy as np

from kdref.declaration import Arg, Declaration, Knob
from kdref.reference._common import NUMPY, adaptive_pool2d, pairwise_sq_distances

__all__ = [
    "IRG_LOSS",
    "edge_loss",
    "edge_matrix",
    "irg_loss",
    "layer_quadruples",
    "match_transformation",
    "normalize_by_max",
    "power_of_two_scale",
    "term_reduction",
    "transformation_loss",
    "transformation_vector",
    "vertex_loss",
]


def edge_matrix(f: np.ndarray, eps: float = 0.0) -> np.ndarray:
    r"""The edges of the instance relationship graph at one layer:
    :math:`A(i,j)=\lVert f(x_i)-f(x_j)\rVert_2^2` — **squared** distances, no square root.

    ``eps > 0`` clamps the off-diagonal entries at :math:`\epsilon` (KD-Zoo's
    ``clamp(min=1e-12)``); the diagonal is 0.

    Args:
      f: features ``[N, d]``.

    Returns:
      ``[N, N]``.
    """
    # $A(i,j) = \lVert f(x_i) - f(x_j)\rVert_2^2$
    A = pairwise_sq_distances(f)
    if eps > 0:
        # $A(i,j) \leftarrow \max(A(i,j), \epsilon)$ for $i \ne j$, $A(i,i) = 0$ (KD-Zoo)
        A = np.maximum(A, eps)
        np.fill_diagonal(A, 0.0)
    return A


def transformation_vector(f1: np.ndarray, f2: np.ndarray, eps: float = 0.0) -> np.ndarray:
    r"""The diagonal of the IRG transformation :math:`l_1\to l_2`:
    :math:`\Lambda_{l_1,l_2}(i,i)=\lVert f_{l_1}(x_i)-f_{l_2}(x_i)\rVert_2^2`, clamped at
    :math:`\epsilon` when ``eps > 0`` (KD-Zoo).

    Args:
      f1, f2: the two layers of one network, ``[N, d]`` each (matched).

    Returns:
      ``[N]``.
    """
    # $\Lambda_{l_1,l_2}(i,i) = \lVert f_{l_1}(x_i) - f_{l_2}(x_i)\rVert_2^2$
    Lambda = np.sum((f1 - f2) ** 2, axis=1)
    # $\max(\Lambda(i,i), \epsilon)$ (KD-Zoo)
    return np.maximum(Lambda, eps) if eps > 0 else Lambda


def match_transformation(f1: np.ndarray, f2: np.ndarray, rule: str = "none") -> tuple[np.ndarray, np.ndarray]:
    r"""Bring the two layers :math:`l_1\to l_2` of one network to one width, so that
    :math:`\Lambda_{l_1,l_2}(i,i)=\lVert f_{l_1}(x_i)-f_{l_2}(x_i)\rVert^2` is defined.

    ``"none"``: the flattened widths must already agree (the paper's rule is unknown).
    ``"kdzoo"``: KD-Zoo's heuristic on ``[N, C, H, W]`` maps (``[N, C]`` is read as ``[N, C, 1, 1]``):
    if the earlier map is taller (:math:`H_1>H_2`) it is adaptive-average pooled to
    :math:`(H_2, W_2)`; if it has fewer channels, the later map's channel :math:`c` becomes
    :math:`(f_2[2c]+f_2[2c+1])/2` (this needs :math:`C_2=2C_1`).

    Returns:
      the two layers flattened, ``[N, d]`` each (widths checked by the caller).
    """
    if rule == "kdzoo":
        f1, f2 = _as_map(f1), _as_map(f2)
        if f1.shape[2] > f2.shape[2]:
            # $f_{l_1} \leftarrow \mathrm{avgpool}(f_{l_1})$ to $(H_2, W_2)$
            f1 = adaptive_pool2d(f1, f2.shape[2:], "avg")
        if f1.shape[1] < f2.shape[1] and f2.shape[1] == 2 * f1.shape[1]:
            # $f_{l_2}[c] \leftarrow (f_{l_2}[2c] + f_{l_2}[2c+1]) / 2$
            f2 = (f2[:, 0::2] + f2[:, 1::2]) / 2.0
    return f1.reshape(f1.shape[0], -1), f2.reshape(f2.shape[0], -1)


def _as_map(f: np.ndarray) -> np.ndarray:
    return f.reshape(*f.shape, 1, 1) if f.ndim == 2 else f


def normalize_by_max(a: np.ndarray) -> np.ndarray:
    r""":math:`\hat a = a/\max a`, the official code's and KD-Zoo's batch-max normalisation.

    An array with no positive entry (a batch of one, or every instance equal) has no scale: kdref
    returns 0 there (Caffe and KD-Zoo return NaN, 0/0).
    """
    # $M = \max a$
    M = np.max(a)
    # $\hat a = a / M$ (0 where $M = 0$)
    return a / M if M > 0 else np.zeros_like(a)


def term_reduction(squared_differences: np.ndarray, reduction: str) -> float:
    r"""Reduce one term's squared differences: ``"sum"`` (the paper), ``"mean"`` over the entries
    (``F.mse_loss``, KD-Zoo), or ``"caffe"``: Caffe's ``EuclideanLoss``,
    :math:`\frac{1}{2\,\mathrm{num}}\sum`, with ``num`` the blob's first axis — :math:`N` for the
    :math:`N\times N` edge blob and the :math:`N\times K` logits, 1 for the :math:`1\times N`
    transformation blob (pass it as a ``[1, N]`` array)."""
    # $\sum$ (the paper)
    total = float(np.sum(squared_differences))
    if reduction == "sum":
        return total
    if reduction == "mean":
        # $\frac{1}{\#\text{entries}}\sum$ (``F.mse_loss``)
        return total / squared_differences.size
    # $\frac{1}{2\,\mathrm{num}}\sum$ (Caffe's ``EuclideanLoss``)
    return total / (2.0 * squared_differences.shape[0])


def vertex_loss(z_s: np.ndarray, z_t: np.ndarray, reduction: str = "sum") -> float:
    r"""The vertex term on the logits: :math:`\sum_i\lVert z^T_i-z^S_i\rVert_2^2` (``"sum"``)."""
    # $\sum_i \lVert z^T_i - z^S_i\rVert_2^2$
    return term_reduction((z_t - z_s) ** 2, reduction)


def edge_loss(f_s: np.ndarray, f_t: np.ndarray, *, normalize: str = "none", eps: float = 0.0,
              reduction: str = "sum") -> float:
    r"""The edge term of one (student, teacher) layer pair:
    :math:`\lVert A^T-A^S\rVert_F^2=\sum_{i,j}\big(A^T(i,j)-A^S(i,j)\big)^2` over all :math:`I^2`
    entries (each unordered pair twice), with :math:`A` optionally divided by its batch max."""
    if normalize == "max" and eps == 0:
        f_s, f_t = f_s / power_of_two_scale(f_s), f_t / power_of_two_scale(f_t)
    # $A^S$
    A_s = _normalized(edge_matrix(f_s, eps), normalize)
    # $A^T$
    A_t = _normalized(edge_matrix(f_t, eps), normalize)
    # $\lVert A^T - A^S\rVert_F^2 = \sum_{i,j} (A^T(i,j) - A^S(i,j))^2$
    return term_reduction((A_t - A_s) ** 2, reduction)


def transformation_loss(v_s: np.ndarray, v_t: np.ndarray, *, normalize: str = "none",
                        reduction: str = "sum") -> float:
    r"""The transformation term of one pair:
    :math:`\lVert\Lambda^T_{l_1,l_2}-\Lambda^S_{l_3,l_4}\rVert_2^2=\sum_i\big(\Lambda^T(i,i)-\Lambda^S(i,i)\big)^2`,
    with :math:`\Lambda` optionally divided by its batch max."""
    # $\Lambda^T_{l_1,l_2}(i,i) - \Lambda^S_{l_3,l_4}(i,i)$
    delta = _normalized(v_t, normalize) - _normalized(v_s, normalize)
    # $\sum_i (\Lambda^T(i,i) - \Lambda^S(i,i))^2$
    return term_reduction((delta ** 2)[None, :], reduction)


def _normalized(a: np.ndarray, normalize: str) -> np.ndarray:
    return normalize_by_max(a) if normalize == "max" else a


def power_of_two_scale(*xs: np.ndarray) -> float:
    r"""A power of two :math:`2^e` near :math:`\max|x|` (1 for all-zero inputs). A max-normalised
    matrix or vector without a clamp is scale invariant; computing it from the features divided by
    this (an exact division) keeps its squared distances inside the float range (features of
    1e-200 would otherwise give 0/0)."""
    peak = max(float(np.max(np.abs(x))) for x in xs)
    return float(np.ldexp(1.0, np.frexp(peak)[1]))


def _transformation(f1: np.ndarray, f2: np.ndarray, match: str, eps: float, normalize: str) -> np.ndarray:
    """Λ of one network's pair, from features rescaled by a power of two where that is exact for the
    max-normalised vector (see :func:`power_of_two_scale`)."""
    a, b = match_transformation(f1, f2, match)
    if normalize == "max" and eps == 0:
        scale = power_of_two_scale(a, b)
        a, b = a / scale, b / scale
    # $\Lambda_{l_1,l_2}(i,i) = \lVert f_{l_1}(x_i) - f_{l_2}(x_i)\rVert_2^2$
    return transformation_vector(a, b, eps)


def layer_quadruples(transformations, n_student: int, n_teacher: int) -> list[tuple[int, int, int, int]]:
    r"""The transformation pairs as :math:`(l_1, l_2, l_3, l_4)`: teacher :math:`l_1\to l_2`, student
    :math:`l_3\to l_4`, as list positions from 0; a pair ``(a, b)`` means the same layers in both
    networks, and a negative index counts from the end."""
    quadruples = []
    for item in transformations:
        l1, l2, l3, l4 = (*item, *item) if len(item) == 2 else item
        quadruples.append((int(l1) % n_teacher, int(l2) % n_teacher, int(l3) % n_student, int(l4) % n_student))
    return quadruples


# ---------------------------------------------------------------------------------------------
# The contract: arguments, knobs and conventions (read by both sides, the proof and the docs)


def _check_joined(name: str, x, ref_name: str, ref) -> None:
    """One batch of instances: ``x`` has the batch size, dtype and device of ``ref`` (its other axes
    are free). Pure Python on the arrays' attributes, for both sides."""
    if getattr(x, "device", None) != getattr(ref, "device", None):
        raise ValueError(f"{name} must be on the device of {ref_name} ({ref.device}), got {x.device}")
    if x.shape[0] != ref.shape[0]:
        raise ValueError(f"{name} must have the batch size of {ref_name} ({ref.shape[0]}), got shape {tuple(x.shape)}")
    if x.dtype != ref.dtype:
        raise TypeError(f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {x.dtype}")


def _check_transformations(transformations, n_student: int, n_teacher: int) -> None:
    """Each pair names two layers of each network that exist."""
    for k, item in enumerate(transformations):
        if len(item) not in (2, 4):
            raise TypeError(f"transformations[{k}] must be a pair (a, b) or a 4-tuple (l1, l2, l3, l4) of "
                            f"layer indices, got {tuple(item)!r}")
        l1, l2, l3, l4 = (*item, *item) if len(item) == 2 else item
        for index, count, who in ((l1, n_teacher, "teacher"), (l2, n_teacher, "teacher"),
                                  (l3, n_student, "student"), (l4, n_student, "student")):
            if not -count <= index < count:
                raise ValueError(f"transformations[{k}] = {tuple(item)} indexes layer {index} of the {who}, "
                                 f"which has {count} layer(s)")


def _check_match_shapes(name: str, shape1: tuple, shape2: tuple, i: int, j: int, rule: str) -> None:
    r"""The widths of a transformation pair :math:`f_i\to f_j` of one network must agree after the
    matching rule. ``rule="kdzoo"`` takes ``[N, C]`` or ``[N, C, H, W]`` and pools only a taller
    earlier map, averages channel pairs only when :math:`C_2=2C_1`."""
    if rule == "kdzoo":
        for k, shape in ((i, shape1), (j, shape2)):
            if len(shape) not in (2, 4):
                raise ValueError(f"{name}[{k}] must be [N, C] or [N, C, H, W] for match='kdzoo', got shape {shape}")
        s1, s2 = (*shape1, 1, 1)[:4], (*shape2, 1, 1)[:4]
        c1, h1, w1 = s1[1], *((s2[2], s2[3]) if s1[2] > s2[2] else (s1[2], s1[3]))
        c2 = s2[1] // 2 if s1[1] < s2[1] and s2[1] == 2 * s1[1] else s2[1]
        width1, width2 = c1 * h1 * w1, c2 * s2[2] * s2[3]
        how = " after KD-Zoo's pooling / channel-pair rule"
    else:
        width1, width2 = math.prod(shape1[1:]), math.prod(shape2[1:])
        how = ""
    if width1 != width2:
        raise ValueError(f"{name}[{j}] must have the width of {name}[{i}] ({width1}) for the transformation "
                         f"{i} → {j}{how}, got {width2} (shapes {tuple(shape1)} and {tuple(shape2)})"
                         + ("; match='kdzoo' applies KD-Zoo's rule" if rule == "none" else ""))


def _check_graph(arguments, knobs) -> None:
    """What IRG's arguments must share beyond their kinds: one batch of instances across the two
    networks' layers and the logits, both logits or neither (both when λ1 > 0), layers that the
    transformation pairs name and that their matching rule joins, as many teacher as student
    layers one-to-one, and Caffe's backward pass only with its max normalisation. A library's
    convention without the transformation pairs it always uses would compute another loss than the
    library's, so they are required there (an empty list says "no transformation term")."""
    if knobs["caffe_gradients"] and knobs["normalize"] != "max":
        raise ValueError("caffe_gradients reproduces the backward pass of Caffe's max-normalising layers; "
                         f"it needs normalize='max', got {knobs['normalize']!r}")
    student, teacher = arguments["student_features"], arguments["teacher_features"]
    _check_joined("teacher_features[0]", teacher[0], "student_features[0]", student[0])
    z_s, z_t = arguments["student_logits"], arguments["teacher_logits"]
    if z_s is None or z_t is None:
        if knobs["lambda1"] > 0:
            missing = "student_logits" if z_s is None else "teacher_logits"
            raise ValueError(f"{missing} is required for the vertex term (lambda1 = {knobs['lambda1']:g} > 0)")
        if z_s is not None or z_t is not None:
            given = "teacher_logits" if z_s is None else "student_logits"
            raise ValueError(f"{given} was given without its counterpart; pass both logits or neither")
    else:
        _check_joined("student_logits", z_s, "student_features[0]", student[0])
    if arguments["transformations"] is None and knobs["lambda3"] > 0 and knobs["normalize"] == "max":
        raise ValueError("transformations is required with a transformation weight lambda3 > 0 under the libraries' "
                         "max normalisation (conventions 'kdzoo' and 'official'): KD-Zoo's IRG and the official "
                         "Caffe model always add the term (KD-Zoo: rb2 → rb3, transformations=[(0, 1)] with "
                         "student_features=[rb2, rb3, feat]); pass the pairs, or transformations=[] or lambda3=0 to "
                         "leave the term out")
    transformations = arguments["transformations"] or ()
    _check_transformations(transformations, len(student), len(teacher))
    if knobs["mode"] == "one_to_one" and len(teacher) != len(student):
        raise ValueError(f"teacher_features must hold as many layers as student_features ({len(student)}) for "
                         f"mode='one_to_one', got {len(teacher)}")
    for l1, l2, l3, l4 in layer_quadruples(transformations, len(student), len(teacher)):
        for name, layers, i, j in (("teacher_features", teacher, l1, l2), ("student_features", student, l3, l4)):
            _check_match_shapes(name, tuple(layers[i].shape), tuple(layers[j].shape), i, j, knobs["match"])


_WEIGHT = "(paper 1, its values not confirmed; kdzoo {}; official {})"

IRG_LOSS = Declaration(
    name="irg_loss",
    args=(
        Arg("student_features", "embeddings_list", "the student's layers, each flattened to one vector per "
            "instance (``match=\"kdzoo\"`` reads ``[N, C, H, W]`` maps as such); widths may differ from the "
            "teacher's", flatten=False, items_alike=True),
        Arg("teacher_features", "embeddings_list", "the teacher's layers, a constant target; the batch, dtype "
            "and device of ``student_features``", flatten=False, items_alike=True),
        Arg("student_logits", "logits", "the student's logits, for the vertex term; may be omitted when "
            "``lambda1 == 0``", optional=True),
        Arg("teacher_logits", "logits", "the teacher's logits, a constant target; given or omitted with "
            "``student_logits``", like="student_logits", optional=True),
        Arg("transformations", "index_tuples", "the transformation pairs, each ``(a, b)`` (layers "
            ":math:`a\\to b` of both networks) or ``(l1, l2, l3, l4)`` (teacher :math:`l_1\\to l_2`, student "
            ":math:`l_3\\to l_4`), indices into the feature lists (negative ones count from the end); none by "
            "default", optional=True),
    ),
    knobs=(
        Knob("lambda1", 1.0, "the weight :math:`\\lambda_1` of the vertex term " + _WEIGHT.format(0.1, 0), low=0.0),
        Knob("lambda2", 1.0, "the weight :math:`\\lambda_2` of the edge term " + _WEIGHT.format(5, 0.005), low=0.0),
        Knob("lambda3", 1.0, "the weight :math:`\\lambda_3` of the transformation term "
             + _WEIGHT.format(5, 0.005), low=0.0),
        Knob("mode", "one_to_many", "``\"one_to_many\"`` (the paper: the teacher's **last** layer guides every "
             "student layer) or ``\"one_to_one\"`` (student layer :math:`l` against teacher layer :math:`l`; "
             "the lists must have the same length)", choices=("one_to_many", "one_to_one")),
        Knob("normalize", "none", "``\"max\"`` divides each edge matrix and transformation vector by its batch "
             "maximum (0 where that maximum is 0)", choices=("none", "max")),
        Knob("eps", 0.0, "clamp the squared distances of edges (off the diagonal) and transformations at "
             ":math:`\\epsilon` (KD-Zoo 1e-12; 0 = no clamp)", low=0.0),
        Knob("reduction", "sum", "of each term's squared differences: ``\"sum\"``, ``\"mean\"`` over the "
             "entries, or ``\"caffe\"`` (:math:`\\frac{1}{2N}\\sum` for edges and logits, "
             ":math:`\\frac12\\sum` for transformations; see :func:`term_reduction`)",
             choices=("sum", "mean", "caffe")),
        Knob("layer_reduction", "sum", "over the edge layers and over the transformation pairs",
             choices=("sum", "mean")),
        Knob("match", "none", "how the two layers of a transformation pair are brought to one width: "
             "``\"none\"`` (equal widths required; the paper's rule is unknown) or ``\"kdzoo\"`` (KD-Zoo's "
             "pooling / channel-pair rule, see :func:`match_transformation`)", choices=("none", "kdzoo")),
        Knob("caffe_gradients", False, "the official Caffe layers' backward pass, with the same value: the batch "
             "maxima are constants and the gradient through each edge matrix is halved. Needs "
             "``normalize=\"max\"``; only the torch side has gradients", choices=(False, True)),
    ),
    presets={
        "paper": {},
        "kdzoo": {"lambda1": 0.1, "lambda2": 5.0, "lambda3": 5.0, "mode": "one_to_one", "normalize": "max",
                  "eps": 1e-12, "reduction": "mean", "layer_reduction": "mean", "match": "kdzoo"},
        "official": {"lambda1": 0.0, "lambda2": 0.005, "lambda3": 0.005, "mode": "one_to_one",
                     "normalize": "max", "reduction": "caffe"},
    },
    descriptions={
        "paper": "λ1·Σ‖z_T − z_S‖² + λ2·Σ_layers ‖A_T − A_S‖²_F + λ3·Σ_pairs ‖Λ_T − Λ_S‖², plain sums, "
                 "no normalisation, the teacher's last layer guiding every student layer (reconstructed)",
        "kdzoo": "KD-Zoo: A and Λ clamped at 1e-12 and divided by their batch max, MSE means, mean over "
                 "layers, one-to-one, weights 0.1 / 5 / 5, KD-Zoo's layer-matching rule",
        "official": "official Caffe layers: A and Λ divided by their batch max, Caffe's EuclideanLoss "
                    "(edges 1/(2N)·Σ, transformation ½·Σ), one-to-one, loss weights 0 / 0.005 / 0.005",
    },
    check=_check_graph,
)


@IRG_LOSS.implement(NUMPY)
def irg_loss(student_features: list[np.ndarray], teacher_features: list[np.ndarray],
             student_logits: np.ndarray | None, teacher_logits: np.ndarray | None, transformations, *,
             lambda1: float, lambda2: float, lambda3: float, mode: str, normalize: str, eps: float,
             reduction: str, layer_reduction: str, match: str, caffe_gradients: bool) -> float:
    r"""The IRG loss (without the cross-entropy with the labels, which is the caller's):

    .. math:: \lambda_1\,\mathcal L_{logits}
              +\lambda_2\sum_{l_M\in L_M}\lVert A^T_L-A^S_{l_M}\rVert_F^2
              +\lambda_3\sum_{(l_1,l_2,l_3,l_4)}\lVert\Lambda^T_{l_1,l_2}-\Lambda^S_{l_3,l_4}\rVert_2^2
              \quad\text{(default, ``"paper"``)}.

    The formula is **[reconstructed]** (see the module).

    Returns:
      a float.

    Examples:
      The spec's Example D under the official Caffe semantics (the edge term on layer 2, then the
      transformation L1 → L2):

      >>> import numpy as np
      >>> s1, s2 = np.array([[1., 0], [0, 1], [1, 1]]), np.array([[2., 0], [0, 1], [1, 3]])
      >>> t1, t2 = np.array([[0., 1], [2, 0], [1, 2]]), np.array([[1., 1], [2, 2], [0, 3]])
      >>> print(f"{irg_loss([s2], [t2], transformations=[], convention='official'):.8g}")
      0.00043333333
      >>> print(f"{irg_loss([s1, s2], [t1, t2], transformations=[(0, 1)], lambda2=0.0, convention='official'):.8g}")
      0.003125

      The paper's plain sum (edges only, one layer each; the spec's Example C, feat):

      >>> s_feat = np.array([[0.2, -0.2, -2.5, -0.5], [0.0, 0.1, -1.5, -0.5], [-1.0, -0.8, 1.1, -0.8]])
      >>> t_feat = np.array([[-0.8, 0.6, -2.0, -0.5], [-0.1, 1.3, 0.7, -0.3], [-0.4, -0.3, 1.5, -0.4]])
      >>> print(f"{irg_loss([s_feat], [t_feat], lambda1=0.0, lambda3=0.0):.8g}")
      165.8128

    References:
      Liu et al. *Knowledge Distillation via Instance Relationship Graph*, CVPR 2019, pp. 7096–7104
      (reconstructed); yufanLIU/IRG @0a6837c (``BatchEuclideanMap``, ``BatchEuclideanVector``);
      KD-Zoo ``kd_losses/irg.py``.

    .. seealso:: :func:`edge_loss`, :func:`transformation_loss`, :func:`vertex_loss`, the three terms.
    """
    flat_s = [f.reshape(len(f), -1) for f in student_features]
    flat_t = [f.reshape(len(f), -1) for f in teacher_features]

    def over_layers(values: list[float]) -> float:
        return float(np.mean(values)) if layer_reduction == "mean" else float(np.sum(values))

    total = 0.0
    if student_logits is not None:
        # $\lambda_1 \sum_i \lVert z^T_i - z^S_i\rVert_2^2$
        total += lambda1 * vertex_loss(student_logits, teacher_logits, reduction)
    # one-to-many: the teacher's last layer $L$ guides every student layer $l_M$
    guides = flat_t if mode == "one_to_one" else [flat_t[-1]] * len(flat_s)
    # $\lambda_2 \sum_{l_M \in L_M} \lVert A^T_L - A^S_{l_M}\rVert_F^2$
    total += lambda2 * over_layers([edge_loss(f_s, f_t, normalize=normalize, eps=eps, reduction=reduction)
                                    for f_s, f_t in zip(flat_s, guides, strict=True)])
    pairs = layer_quadruples(transformations or (), len(student_features), len(teacher_features))
    if pairs:
        terms = []
        for l1, l2, l3, l4 in pairs:
            # $\Lambda^T_{l_1,l_2}$
            v_t = _transformation(teacher_features[l1], teacher_features[l2], match, eps, normalize)
            # $\Lambda^S_{l_3,l_4}$
            v_s = _transformation(student_features[l3], student_features[l4], match, eps, normalize)
            # $\lVert\Lambda^T_{l_1,l_2} - \Lambda^S_{l_3,l_4}\rVert_2^2$
            terms.append(transformation_loss(v_s, v_t, normalize=normalize, reduction=reduction))
        # $\lambda_3 \sum_{(l_1,l_2,l_3,l_4)} \lVert\Lambda^T_{l_1,l_2} - \Lambda^S_{l_3,l_4}\rVert_2^2$
        total += lambda3 * over_layers(terms)
    return total
