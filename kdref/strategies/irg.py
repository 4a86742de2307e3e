"""Strategies for IRG: a list of layers per network (flattened embeddings ``[N, d]`` or ``[N, C, H, W]``
maps, widths free between the networks), logits ``[N, K]``, transformation pairs whose two layers can
be matched, and the knobs.

Value draws take each layer from :func:`kdref.strategies.embeddings.embeddings`: N = 1, 2, 3 often,
duplicated instances, a collapsed batch, all-zero rows, a large common offset. Gradient draws are
smooth points: the plain and offset patterns plus a small seeded jitter, so that no two instances
coincide and no two edges tie for the batch maximum (where the max normaliser has a kink).
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from kdref.strategies.embeddings import embeddings

__all__ = ["irg_inputs", "irg_layers"]

_PRESET_MODE = {"paper": "one_to_many", "kdzoo": "one_to_one", "official": "one_to_one"}
#: the matching rule each convention's draws use (KD-Zoo's layers need its own rule)
_MATCH = {"paper": "none", "kdzoo": "kdzoo", "official": "none"}


@st.composite
def _layer(draw, n: int, shape: tuple[int, ...], gradient: bool, jitter) -> np.ndarray:
    """One layer ``[n, *shape]`` from the embedding patterns (applied to the flattened rows)."""
    x = draw(embeddings(n, int(np.prod(shape)), gradient=gradient))
    if gradient:
        x = x + 0.05 * jitter.standard_normal(x.shape)
    return x.reshape(n, *shape)


@st.composite
def _pair_shapes(draw, kdzoo: bool, gradient: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Shapes of two layers that a transformation can join: equal widths (``"none"``), or an earlier
    ``[C₁, H₁, W₁]`` map and a later ``[C₂, H₂, W₂]`` one that KD-Zoo's rule matches (the earlier one
    taller and pooled, and/or C₂ = 2·C₁ averaged in channel pairs), sometimes as ``[N, C]`` vectors."""
    if not kdzoo:
        d = draw(st.integers(1, 3 if gradient else 5))
        return (d,), (d,)
    c1 = draw(st.integers(1, 2))
    c2 = c1 * draw(st.sampled_from([1, 2]))
    h2, w2 = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    if draw(st.booleans()):
        h1, w1 = h2 + draw(st.integers(1, 2)), w2 + draw(st.integers(0, 1))
    else:
        h1, w1 = h2, w2
    first, second = (c1, h1, w1), (c2, h2, w2)
    if h1 == w1 == 1 and draw(st.booleans()):
        first = (c1,)
    if h2 == w2 == 1 and draw(st.booleans()):
        second = (c2,)
    return first, second


@st.composite
def irg_layers(draw, n: int, count: int, *, pair: bool, kdzoo: bool, gradient: bool, jitter) -> list[np.ndarray]:
    """``count`` layers of one network; with ``pair`` the first two can be joined by a transformation."""
    shapes = list(draw(_pair_shapes(kdzoo, gradient))) if pair else []
    while len(shapes) < count:
        shapes.append((draw(st.integers(1, 3 if gradient else 5)),))
    return [draw(_layer(n, shape, gradient, jitter)) for shape in shapes[:max(count, 2 if pair else 1)]]


@st.composite
def irg_inputs(draw, convention: str = "paper", *, gradient: bool = False, knobs: bool = True) -> dict:
    """Keyword arguments of ``irg_loss`` under ``convention``: ``student_features`` and
    ``teacher_features`` (1–3 layers each; as many as each other in one-to-one mode), logits
    ``[N, K]`` (the teacher's sometimes the student's), and often ``transformations`` over the first
    two layers (a pair, or a 4-tuple naming teacher and student layers). With ``knobs``, sometimes the
    weights λ (0 included) and, for ``"paper"``, the mode, the matching rule and other knobs."""
    max_n = 4 if gradient else 6
    n = draw(st.one_of(st.sampled_from([1, 2, 3]), st.integers(1, max_n)))
    jitter = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    inputs: dict = {}
    mode = _PRESET_MODE[convention]
    match = _MATCH[convention]
    if knobs and convention == "paper":
        mode = draw(st.sampled_from(["one_to_many", "one_to_one"]))
        inputs["mode"] = mode
        if draw(st.integers(0, 2)) == 0:
            match = "kdzoo"
        if draw(st.integers(0, 3)) == 0:
            inputs["normalize"] = "max"
        if draw(st.integers(0, 3)) == 0:
            inputs["reduction"] = draw(st.sampled_from(["mean", "caffe"]))
        if draw(st.integers(0, 3)) == 0:
            inputs["layer_reduction"] = "mean"
    transform = draw(st.integers(0, 2)) > 0
    k_s = draw(st.integers(2 if transform else 1, 2 if gradient else 3))
    k_t = k_s if mode == "one_to_one" else draw(st.integers(2 if transform else 1, 2 if gradient else 3))
    student = draw(irg_layers(n, k_s, pair=transform, kdzoo=match == "kdzoo", gradient=gradient, jitter=jitter))
    if not gradient and mode == "one_to_one" and draw(st.integers(0, 5)) == 0:
        teacher = [f.copy() for f in student]
    else:
        teacher = draw(irg_layers(n, k_t, pair=transform, kdzoo=match == "kdzoo", gradient=gradient,
                                  jitter=jitter))
    k = draw(st.integers(1, 4))
    student_logits = draw(_layer(n, (k,), gradient, jitter))
    teacher_logits = student_logits.copy() if not gradient and draw(st.integers(0, 5)) == 0 else \
        draw(_layer(n, (k,), gradient, jitter))
    inputs.update(student_features=student, teacher_features=teacher, student_logits=student_logits,
                  teacher_logits=teacher_logits)
    if match != "none":
        inputs["match"] = match
    if transform:
        inputs["transformations"] = draw(st.sampled_from([[(0, 1)], [(0, 1, 0, 1)], [(-2, -1, 0, 1)]])) \
            if len(teacher) == 2 else [(0, 1, 0, 1)]
        if mode == "one_to_one" and draw(st.integers(0, 3)) == 0:
            inputs["transformations"] = [(0, 1), (0, 1)]  # a pair twice: two terms
    if knobs and draw(st.integers(0, 2)) == 0:
        for name in ("lambda1", "lambda2", "lambda3"):
            if draw(st.booleans()):
                inputs[name] = draw(st.sampled_from([0.0, 0.3, 2.0]))
    if knobs and convention == "official" and "lambda1" not in inputs and draw(st.booleans()):
        inputs["lambda1"] = 0.5  # the vertex term with Caffe's 1/(2N): not in the released prototxts
    return inputs
