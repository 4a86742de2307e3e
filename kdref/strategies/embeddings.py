"""Strategies for batches of embeddings ``[N, D]``: the inputs of the relational losses (RKD, PKT,
SP, CC, IRG), which compare the samples of a batch with each other.

The draws lean on where relational losses break: the smallest batches (N = 1, 2, 3), duplicated
samples (zero-length edges), a collapsed batch (every row the same), all-zero rows, and rows with
a large common offset and a small spread (where an uncentred Gram matrix cancels in float32).
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

__all__ = ["embedding_pairs", "embeddings"]

#: the degenerate patterns a batch is drawn with; "plain" twice so most draws are generic
PATTERNS = ("plain", "plain", "duplicate", "collapsed", "zero_row", "offset")


@st.composite
def embeddings(draw, n: int, d: int, *, gradient: bool = False, patterns: tuple[str, ...] = PATTERNS,
               rectified: bool = True) -> np.ndarray:
    """Float64 embeddings ``[n, d]``: values in [-3, 3], sometimes rectified (post-ReLU, unless
    ``rectified=False``), with one of ``patterns``: ``"duplicate"`` (a row repeated),
    ``"collapsed"`` (every row equal), ``"zero_row"`` (an all-zero row), ``"offset"`` (a common
    offset of 10–1000 plus a spread of 1e-2), else ``"plain"``. With ``gradient=True`` only
    ``"plain"`` and ``"offset"`` (spread 1e-1, offset ≤ 10): smooth points, where finite
    differences of the reference are accurate."""
    x = draw(hnp.arrays(np.float64, (n, d), elements=st.floats(-3, 3, allow_subnormal=False)))
    if rectified and draw(st.booleans()):
        x = np.maximum(x, 0.0)
    allowed = [p for p in patterns if p in ("plain", "offset")] if gradient else list(patterns)
    pattern = draw(st.sampled_from(allowed or ["plain"]))
    if pattern == "duplicate" and n >= 2:
        i, j = draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True))
        x[j] = x[i]
    elif pattern == "collapsed":
        x[:] = x[0]
    elif pattern == "zero_row":
        x[draw(st.integers(0, n - 1))] = 0.0
    elif pattern == "offset":
        offset = draw(st.sampled_from((10.0,) if gradient else (10.0, 100.0, 1000.0)))
        x = offset + (0.1 if gradient else 0.01) * x
    return x


@st.composite
def embedding_pairs(draw, *, min_n: int = 1, max_n: int = 6, max_d: int = 5, same_width: bool = False,
                    gradient: bool = False, patterns: tuple[str, ...] = PATTERNS,
                    extra_axes: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A student ``[N, D_s]`` and a teacher ``[N, D_t]`` with ``min_n ≤ N ≤ max_n`` (the smallest
    batches drawn often) and widths up to ``max_d`` (``D_s = D_t`` if ``same_width``). The
    teacher is sometimes the student. With ``extra_axes`` a side is sometimes ``[N, a, b]``
    (relational losses flatten every axis after the batch)."""
    small = list(range(min_n, min(min_n + 3, max_n + 1)))
    n = draw(st.one_of(st.sampled_from(small), st.integers(min_n, max_n)))
    d_s = draw(st.integers(1, max_d))
    d_t = d_s if same_width else draw(st.integers(1, max_d))
    student = draw(embeddings(n, d_s, gradient=gradient, patterns=patterns))
    teacher = student.copy() if d_t == d_s and draw(st.integers(0, 4)) == 0 else \
        draw(embeddings(n, d_t, gradient=gradient, patterns=patterns))
    if extra_axes and draw(st.booleans()):
        student = _with_extra_axes(student, draw(st.booleans()))
    return student, teacher


def irregular(shape: tuple[int, ...]) -> np.ndarray:
    """A fixed pattern in [-1, 1] with no simple ratios between its entries: added (scaled down) to
    gradient draws, it keeps simple coordinates off the non-smooth points of a loss (an exact
    orthogonality, a Huber kink), where second derivatives do not exist."""
    return np.sin(1.0 + np.sqrt(2.0) * np.arange(np.prod(shape)) ** 1.5).reshape(shape)


def _with_extra_axes(x: np.ndarray, split: bool) -> np.ndarray:
    """``[N, D]`` as ``[N, D, 1]`` or, when ``D`` is even and ``split``, ``[N, 2, D / 2]``."""
    n, d = x.shape
    return x.reshape(n, 2, d // 2) if split and d % 2 == 0 else x.reshape(n, d, 1)
