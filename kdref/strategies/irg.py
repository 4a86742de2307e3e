"""Strategies for IRG: a list of layers per network (``[N, d]`` or ``[N, C, H, W]``, from the patterns
of :func:`kdref.strategies.embeddings.embeddings`), logits ``[N, K]``, transformation pairs whose two
layers can be matched, and the knobs. Gradient draws add a small seeded jitter to the smooth patterns,
so that no two instances coincide and no two edges tie for the batch maximum (a kink of the max)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from kdref.reference import irg as ref
from kdref.strategies.embeddings import embeddings

__all__ = ["irg_inputs", "irg_layers"]


@st.composite
def _layer(draw, n: int, shape: tuple[int, ...], gradient: bool, jitter) -> np.ndarray:
    """One layer ``[n, *shape]`` from the embedding patterns (applied to the flattened rows). A
    gradient draw is centred: an offset of 10 on one layer of a transformation pair and none on the
    other makes Λ ~ 1e5, where gradcheck's finite differences (step 1e-6) err by ~1e-4."""
    x = draw(embeddings(n, int(np.prod(shape)), gradient=gradient))
    if gradient:
        x = x - x.mean() + 0.05 * jitter.standard_normal(x.shape)
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
    c2, h2, w2 = c1 * draw(st.sampled_from([1, 2])), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    h1, w1 = (h2 + draw(st.integers(1, 2)), w2 + draw(st.integers(0, 1))) if draw(st.booleans()) else (h2, w2)
    first = (c1,) if h1 == w1 == 1 and draw(st.booleans()) else (c1, h1, w1)
    second = (c2,) if h2 == w2 == 1 and draw(st.booleans()) else (c2, h2, w2)
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
    n = draw(st.one_of(st.sampled_from([1, 2, 3]), st.integers(1, 4 if gradient else 6)))
    jitter = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    preset, inputs = ref.IRG_LOSS.resolve(convention), {}
    mode, match = preset["mode"], preset["match"]
    if knobs and convention == "paper":
        mode = inputs["mode"] = draw(st.sampled_from(["one_to_many", "one_to_one"]))
        match = "kdzoo" if draw(st.integers(0, 2)) == 0 else match
        for name, values in (("normalize", ["max"]), ("reduction", ["mean", "caffe"]), ("layer_reduction", ["mean"])):
            if draw(st.integers(0, 3)) == 0:
                inputs[name] = draw(st.sampled_from(values))
    transform = draw(st.integers(0, 2)) > 0
    k_s = draw(st.integers(2 if transform else 1, 2 if gradient else 3))
    k_t = k_s if mode == "one_to_one" else draw(st.integers(2 if transform else 1, 2 if gradient else 3))
    layers = {"pair": transform, "kdzoo": match == "kdzoo", "gradient": gradient, "jitter": jitter}
    student = draw(irg_layers(n, k_s, **layers))
    copy = not gradient and mode == "one_to_one" and draw(st.integers(0, 5)) == 0
    teacher = [f.copy() for f in student] if copy else draw(irg_layers(n, k_t, **layers))
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
    elif preset["normalize"] == "max" or inputs.get("normalize") == "max":
        inputs["transformations"] = []  # a library's convention needs the term named, or said to be absent
    if knobs and draw(st.integers(0, 2)) == 0:
        for name in ("lambda1", "lambda2", "lambda3"):
            if draw(st.booleans()):
                inputs[name] = draw(st.sampled_from([0.0, 0.3, 2.0]))
    if knobs and convention == "official" and "lambda1" not in inputs and draw(st.booleans()):
        inputs["lambda1"] = 0.5  # the vertex term with Caffe's 1/(2N): not in the released prototxts
    return inputs
