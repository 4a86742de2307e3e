"""Strategies for AB: pre-ReLU student responses (with or without a connector's parameters) and
teacher responses, one layer or several.

The draws lean on the cases ab.md §5 names: teacher responses exactly 0 (inactive) and post-ReLU
teachers, student responses exactly at the margin ±μ and at 0 (a connector reaches ±μ exactly
through a channel with γ = 0 and β = ±μ), all-zero maps, a batch of one (without a connector:
BatchNorm needs more than one value per channel), and responses of size 1e-3 and 1e3. With
``gradient=True`` the values stay moderate, every student response (after the connector) stays
``KINK_MARGIN`` away from ±μ, where the squared hinge's second derivative jumps, and every
connector channel varies enough that BatchNorm's gain stays moderate: finite differences and
gradgradcheck are accurate there.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kdref.reference.ab import AB_LOSS, AB_LOSS_MULTI, connector, conv1x1
from kdref.strategies.features import feature_maps

__all__ = ["ab_inputs", "ab_multi_inputs"]

#: how far gradient draws keep every student response from the kinks at ±μ (finite-difference steps are ~1e-6)
KINK_MARGIN = 1e-2
#: margins drawn as overrides (exact in float32 and bfloat16, so that ties survive rounding)
_MARGINS = (0.25, 0.5, 1.0, 2.0)
#: the least variance of a connector channel before BatchNorm in gradient draws (its gain ≤ |γ|/√0.05)
_MIN_VARIANCE = 0.05


def _floats(draw, shape, low: float, high: float) -> np.ndarray:
    return draw(hnp.arrays(np.float64, shape, elements=st.floats(low, high, allow_subnormal=False)))


def _away_from(x: np.ndarray, points, gap: float = KINK_MARGIN) -> np.ndarray:
    """``x`` with every entry within ``gap`` of one of ``points`` moved 1.5·gap away from it."""
    x = x.copy()
    for p in points:
        close = np.abs(x - p) < gap
        x[close] = p + np.where(x[close] >= p, 1.5, -1.5) * gap
    return x


def _nearest_outside(centres: np.ndarray, gap: float) -> float:
    """The shift ``d`` nearest 0 with ``|d - c| >= gap`` for every centre ``c``."""
    candidates = np.concatenate([[0.0], centres - 1.5 * gap, centres + 1.5 * gap])
    return float(min((d for d in candidates if np.all(np.abs(d - centres) >= gap)), key=abs))


@st.composite
def _student(draw, shape, margin: float, gradient: bool) -> np.ndarray:
    """Pre-ReLU responses: values in [-3, 3] times a scale (1 with ``gradient``), with ties at ±μ
    and 0 (none with ``gradient``: then every entry is ``KINK_MARGIN`` away from ±μ)."""
    s = _floats(draw, shape, -3.0, 3.0)
    if gradient:
        return _away_from(s, (margin, -margin))
    s = s * draw(st.sampled_from([1.0, 1.0, 1e-3, 1e3]))
    flat = s.reshape(-1)
    for value in draw(st.lists(st.sampled_from([margin, -margin, 0.0]), max_size=min(4, flat.size))):
        flat[draw(st.integers(0, flat.size - 1))] = value
    if draw(st.integers(0, 5)) == 0:
        s[draw(st.integers(0, shape[0] - 1))] = 0.0  # an all-zero map
    return s


@st.composite
def _teacher(draw, shape, gradient: bool) -> np.ndarray:
    """Teacher responses: feature maps (sometimes post-ReLU, with zero channels or maps) with
    some entries exactly 0 (inactive)."""
    t = draw(feature_maps(shape, gradient=gradient))
    flat = t.reshape(-1)
    for index in draw(st.lists(st.integers(0, flat.size - 1), max_size=min(3, flat.size))):
        flat[index] = 0.0
    return t


def _spread(x: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``weight`` repaired so that every channel of the 1×1 convolution varies over the
    batch and positions by at least ``_MIN_VARIANCE``: BatchNorm's gain stays moderate."""
    x, weight = x.copy(), weight.copy()
    if np.var(x[:, 0]) < 0.25:  # input channel 0 varies by ≥ 0.25 (N·H·W ≥ 2: two distinct entries)
        x[0, 0, 0, 0] += 1.5
        x[-1, 0, -1, -1] -= 1.5
    z = conv1x1(x, weight)
    for c in range(weight.shape[0]):
        if np.var(z[:, c]) < _MIN_VARIANCE:
            # var(z_c + x_0) ≥ (√0.25 − √0.05)² > 0.05
            weight[c, 0, 0, 0] += 1.0
    return x, weight


@st.composite
def _connector(draw, x: np.ndarray, c_out: int, margin: float, gradient: bool) -> tuple[np.ndarray, dict]:
    """A connector's parameters for ``x`` ``[N, C_s, H, W]``, and ``x`` itself (repaired with
    ``gradient``); RepDistiller's bias half of the time."""
    c_in = x.shape[1]
    params = {"weight": _floats(draw, (c_out, c_in, 1, 1), -2.0, 2.0) / np.sqrt(c_in)}
    if draw(st.booleans()):
        params["bias"] = _floats(draw, (c_out,), -1.0, 1.0)
    gamma = _floats(draw, (c_out,), 0.25, 2.0) * np.where(_floats(draw, (c_out,), -1.0, 1.0) < 0, -1.0, 1.0)
    params["bn_weight"], params["bn_bias"] = gamma, _floats(draw, (c_out,), -1.0, 1.0)
    if gradient:
        x, params["weight"] = _spread(x, params["weight"])
        # shift each β so that no output is within KINK_MARGIN of ±μ
        r = connector(x, {**params, "bn_bias": np.zeros(c_out)})
        for c in range(c_out):
            values = r[:, c].reshape(-1)
            centres = np.concatenate([margin - values, -margin - values])
            params["bn_bias"][c] = _nearest_outside(centres - params["bn_bias"][c], KINK_MARGIN) + params["bn_bias"][c]
    elif draw(st.integers(0, 3)) == 0:  # a channel exactly at the margin: γ = 0, β = ±μ
        c = draw(st.integers(0, c_out - 1))
        params["bn_weight"][c], params["bn_bias"][c] = 0.0, draw(st.sampled_from([margin, -margin]))
    return x, params


@st.composite
def ab_inputs(draw, convention: str = "paper", gradient: bool = False, with_connector: bool | None = None) -> dict:
    """``student``, ``teacher`` and sometimes ``connector`` (and a ``margin`` override) for
    :func:`kdref.reference.ab.ab_loss` under ``convention`` (whose margin the ties sit at).

    ``with_connector``: always (True), never (False) or sometimes (None); a connector is always
    drawn when the widths differ.
    """
    margin = AB_LOSS.resolve(convention)["margin"]
    inputs: dict = {}
    if draw(st.integers(0, 3)) == 0:
        margin = inputs["margin"] = draw(st.sampled_from(_MARGINS))
    top = 2 if gradient else 3
    n, h, w = draw(st.integers(1, top)), draw(st.integers(1, top)), draw(st.integers(1, top))
    c_t = draw(st.integers(1, top))
    use = draw(st.booleans()) if with_connector is None else with_connector
    c_s = draw(st.integers(1, top)) if use else c_t
    use = use or c_s != c_t
    if use and n * h * w == 1:
        w = 2  # BatchNorm's batch statistics need two values per channel
    teacher = draw(_teacher((n, c_t, h, w), gradient))
    if use:
        x = _floats(draw, (n, c_s, h, w), -3.0, 3.0) * (1.0 if gradient else draw(st.sampled_from([1.0, 1e-3, 1e3])))
        inputs["student"], inputs["connector"] = draw(_connector(x, c_t, margin, gradient))
        if draw(st.integers(0, 4)) == 0:  # the teacher's states are the connector's own
            teacher = connector(inputs["student"], inputs["connector"])
    else:
        inputs["student"] = draw(_student((n, c_t, h, w), margin, gradient))
        if draw(st.integers(0, 4)) == 0:
            teacher = inputs["student"].copy()  # every state agrees
    inputs["teacher"] = teacher
    return inputs


@st.composite
def ab_multi_inputs(draw, convention: str = "paper", gradient: bool = False) -> dict:
    """``students``, ``teachers`` (1 to 3 layers of their own shapes, one batch size) and sometimes
    ``weights`` (and a ``margin`` override) for :func:`kdref.reference.ab.ab_loss_multi`."""
    margin = AB_LOSS_MULTI.resolve(convention)["margin"]
    inputs: dict = {}
    if draw(st.integers(0, 3)) == 0:
        margin = inputs["margin"] = draw(st.sampled_from(_MARGINS))
    top = 2 if gradient else 3
    n, layers = draw(st.integers(1, top)), draw(st.integers(1, 3))
    students, teachers = [], []
    for _ in range(layers):
        shape = (n, draw(st.integers(1, top)), draw(st.integers(1, top)), draw(st.integers(1, top)))
        students.append(draw(_student(shape, margin, gradient)))
        teachers.append(draw(_teacher(shape, gradient)))
    inputs["students"], inputs["teachers"] = students, teachers
    if draw(st.booleans()):
        # 0 (a layer switched off) or a moderate weight: a weight of 1e-300 underflows in float32
        weight = st.one_of(st.just(0.0), st.floats(0.01, 2.0))
        inputs["weights"] = draw(st.lists(weight, min_size=layers, max_size=layers))
    return inputs
