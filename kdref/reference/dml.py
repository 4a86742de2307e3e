r"""DML — Deep Mutual Learning (Zhang, Xiang, Hospedales & Lu, CVPR 2018), NumPy reference.

A cohort of :math:`K` networks trains together from scratch; each learns from the labels and from
its peers' predictions. Network :math:`k`, with class posterior :math:`p_k = \mathrm{softmax}(z_k)`
(eq. 1, no temperature), minimises (eq. 6, **reconstructed**)

.. math:: L_{\Theta_k} = L_{C_k} + \frac{1}{K-1}\sum_{l\ne k} D_{KL}(p_l\,\Vert\,p_k),

the peer's distribution first. The peers are constants for network :math:`k`'s update; the order
of the updates (sequential in the paper's Algorithm 1, synchronous in KD-Zoo) belongs to the
training loop, not to the loss, so these functions take the peer logits as inputs.
"""

from __future__ import annotations

import numpy as np

from kdref._scalars import check_real
from kdref.conventions import Conventions
from kdref.reference._common import (
    as_float_array,
    check_labels,
    check_same_shape,
    check_sequence,
    log_softmax,
    reduce_batch,
    softmax,
)

__all__ = [
    "CONVENTIONS",
    "ENSEMBLE_CONVENTIONS",
    "dml_ensemble_mimicry_loss",
    "dml_mimicry_loss",
    "dml_network_loss",
    "mutual_kl_per_sample",
    "official_tf_kl_per_sample",
]

CONVENTIONS = Conventions(
    loss="dml_mimicry_loss",
    defaults={"peer_reduction": "mean", "epsilon": 0.0, "single_peer": False, "reduction": "mean"},
    presets={
        "paper": {},
        "kdzoo": {"single_peer": True},
        "official_tf": {"peer_reduction": "sum", "epsilon": 1e-8},
    },
    default="paper",
    descriptions={
        "paper": "eq. 6: the mean over peers of KL(p_l‖p_k), mean over the batch",
        "kdzoo": "KD-Zoo's DML: KL(p_peer‖p_k) for one peer (K = 2), mean over the batch",
        "official_tf": "official TensorFlow code: sum over peers of Σ p_l·log(ε + p_l/(p_k + ε)), ε = 1e-8",
    },
    choices={"peer_reduction": ("mean", "sum"), "single_peer": (True, False), "reduction": ("mean", "sum", "none")},
)

ENSEMBLE_CONVENTIONS = Conventions(
    loss="dml_ensemble_mimicry_loss",
    defaults={"reduction": "mean"},
    presets={"dml_e": {}},
    default="dml_e",
    descriptions={"dml_e": "eqs. 7–8: KL(p_com‖p_k) with p_com the mean of the peers' posteriors"},
    choices={"reduction": ("mean", "sum", "none")},
)


def mutual_kl_per_sample(z_self: np.ndarray, z_peer: np.ndarray) -> np.ndarray:
    r"""Eq. 3 per sample: :math:`D_{KL}(p_{\text{peer}}\Vert p_{\text{self}}) = \sum_m p^m_{\text{peer}}
    \log\big(p^m_{\text{peer}}/p^m_{\text{self}}\big)`, computed from log-softmax.

    Returns:
      ``[B]``.
    """
    log_p_peer = log_softmax(z_peer)
    return np.sum(np.exp(log_p_peer) * (log_p_peer - log_softmax(z_self)), axis=-1)


def official_tf_kl_per_sample(z_self: np.ndarray, z_peer: np.ndarray, epsilon: float) -> np.ndarray:
    r"""The official code's KL from probabilities with two :math:`\varepsilon` terms:
    :math:`\sum_m p^m_{\text{peer}}\log\big(\varepsilon + p^m_{\text{peer}}/(p^m_{\text{self}}+\varepsilon)\big)`.

    It saturates at :math:`-\log\varepsilon` per sample when the networks disagree strongly, and
    its gradient then vanishes; kdref offers it only as the ``"official_tf"`` convention.
    """
    p_peer, p_self = softmax(z_peer), softmax(z_self)
    return np.sum(p_peer * np.log(epsilon + p_peer / (p_self + epsilon)), axis=-1)


def _check_cohort(z_self, z_peers) -> tuple[np.ndarray, list[np.ndarray]]:
    z_self = as_float_array("z_self", z_self, ndim=2)
    z_peers = check_sequence("z_peers", z_peers)
    checked = []
    for i, z in enumerate(z_peers):
        z = as_float_array(f"z_peers[{i}]", z, ndim=2)
        check_same_shape(f"z_peers[{i}]", z, "z_self", z_self)
        checked.append(z)
    return z_self, checked


def _mimicry_per_sample(z_self, z_peers, knobs) -> np.ndarray:
    if knobs["single_peer"] and len(z_peers) != 1:
        raise ValueError(f"z_peers must hold exactly one peer for this convention (K = 2), got {len(z_peers)}")
    epsilon = check_real("epsilon", knobs["epsilon"], low=0.0, high=1.0)
    if epsilon == 0:
        terms = [mutual_kl_per_sample(z_self, z_l) for z_l in z_peers]
    else:
        terms = [official_tf_kl_per_sample(z_self, z_l, epsilon) for z_l in z_peers]
    total = np.sum(terms, axis=0)
    return total / len(z_peers) if knobs["peer_reduction"] == "mean" else total


def dml_mimicry_loss(
    z_self: np.ndarray,
    z_peers,
    *,
    convention: str | None = None,
    peer_reduction: str | None = None,
    epsilon: float | None = None,
    single_peer: bool | None = None,
    reduction: str | None = None,
):
    r"""The mimicry term of network :math:`k`: its peers' posteriors as targets.

    .. math:: \frac{1}{K-1}\sum_{l\ne k} D_{KL}(p_l\,\Vert\,p_k)
        \quad\text{per sample, then reduced over the batch.}

    Args:
      z_self: this network's logits :math:`z_k`, ``[B, M]``.
      z_peers: the other :math:`K-1 \ge 1` networks' logits, a list of ``[B, M]`` arrays (constants).
      convention: ``"paper"`` (default), ``"kdzoo"`` (one peer only) or ``"official_tf"``.
      peer_reduction: ``"mean"`` (eq. 6's :math:`1/(K-1)`) or ``"sum"`` over peers (official code).
      epsilon: 0 for the exact log-space KL, or the official code's :math:`\varepsilon`.
      single_peer: require exactly one peer (KD-Zoo's two-network DML).
      reduction: ``"mean"`` over the batch, ``"sum"`` (the paper's literal sums over samples) or ``"none"``.

    Returns:
      a float, or ``[B]`` for ``reduction="none"``.

    Examples:
      >>> import numpy as np
      >>> z1 = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
      >>> z2 = np.array([[1.5, 1.0, 2.0], [0.0, 0.0, 1.0]])
      >>> z3 = np.array([[0.2, -0.3, 1.1], [1.0, 0.0, -1.0]])
      >>> print(f"{dml_mimicry_loss(z1, [z2]):.7g}")
      0.2039253
      >>> print(f"{dml_mimicry_loss(z1, [z2, z3]):.7g}")
      0.4161468
      >>> print(f"{dml_mimicry_loss(z1, [z2, z3], convention='official_tf'):.8g}")
      0.83229348

    References:
      Zhang, Xiang, Hospedales, Lu. *Deep Mutual Learning*, CVPR 2018, eqs. 3 and 6.

    .. seealso:: :func:`dml_ensemble_mimicry_loss` (DML_e) uses the peers' mean posterior instead.
    """
    knobs = CONVENTIONS.resolve(
        convention, peer_reduction=peer_reduction, epsilon=epsilon, single_peer=single_peer, reduction=reduction
    )
    z_self, z_peers = _check_cohort(z_self, z_peers)
    return reduce_batch(_mimicry_per_sample(z_self, z_peers, knobs), knobs["reduction"])


def _cross_entropy_per_sample(z: np.ndarray, labels: np.ndarray, label_smoothing: float) -> np.ndarray:
    r"""Eq. 2 per sample, with optional label smoothing: targets :math:`(1-\epsilon)\,\mathbb 1_y + \epsilon/M`."""
    num_classes = z.shape[1]
    targets = np.full(z.shape, label_smoothing / num_classes)
    targets[np.arange(z.shape[0]), labels] += 1.0 - label_smoothing
    return -np.sum(targets * log_softmax(z), axis=-1)


def dml_network_loss(
    z_self: np.ndarray,
    z_peers,
    labels: np.ndarray,
    *,
    label_smoothing: float = 0.0,
    convention: str | None = None,
    peer_reduction: str | None = None,
    epsilon: float | None = None,
    single_peer: bool | None = None,
    reduction: str | None = None,
):
    r"""Network :math:`k`'s whole loss, eqs. 4–6: cross-entropy with the labels plus the mimicry term.

    .. math:: L_{\Theta_k} = L_{C_k} + \frac{1}{K-1}\sum_{l\ne k} D_{KL}(p_l\,\Vert\,p_k)

    Args:
      z_self, z_peers: as :func:`dml_mimicry_loss`.
      labels: integer class labels, ``[B]``.
      label_smoothing: :math:`\epsilon` of the smoothed targets :math:`(1-\epsilon)\mathbb 1_y + \epsilon/M`;
        the official Market-1501 script uses 0.1, the paper none.
      convention: ``"paper"`` (default), ``"kdzoo"`` or ``"official_tf"``, for the mimicry term.
      peer_reduction, epsilon, single_peer: the mimicry term's knobs, as :func:`dml_mimicry_loss`.
      reduction: ``"mean"`` over the batch, ``"sum"`` (eqs. 2–6 literally) or ``"none"``.

    Examples:
      >>> import numpy as np
      >>> z1 = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
      >>> z2 = np.array([[1.5, 1.0, 2.0], [0.0, 0.0, 1.0]])
      >>> print(f"{dml_network_loss(z1, [z2], np.array([2, 0]), reduction='sum'):.8g}")
      2.5567679
    """
    knobs = CONVENTIONS.resolve(
        convention, peer_reduction=peer_reduction, epsilon=epsilon, single_peer=single_peer, reduction=reduction
    )
    z_self, z_peers = _check_cohort(z_self, z_peers)
    labels = check_labels(labels, *z_self.shape)
    label_smoothing = check_real("label_smoothing", label_smoothing, low=0.0, high=1.0)
    per_sample = _cross_entropy_per_sample(z_self, labels, label_smoothing) + _mimicry_per_sample(
        z_self, z_peers, knobs
    )
    return reduce_batch(per_sample, knobs["reduction"])


def dml_ensemble_mimicry_loss(z_self: np.ndarray, z_peers, *, convention: str | None = None,
                              reduction: str | None = None):
    r"""DML_e, eqs. 7–8: the peers' mean posterior as one teacher.

    .. math:: D_{KL}(p_{\text{com}}\,\Vert\,p_k),\qquad p_{\text{com}} = \frac{1}{K-1}\sum_{l\ne k} p_l.

    :math:`\log p_{\text{com}}` is a log-sum-exp of the peers' log-posteriors, so it stays finite.
    By convexity of KL this never exceeds :func:`dml_mimicry_loss` with ``"paper"``.

    Args:
      z_self, z_peers: as :func:`dml_mimicry_loss`.
      convention: ``"dml_e"``, the only preset.
      reduction: ``"mean"`` over the batch, ``"sum"`` or ``"none"``.

    Examples:
      >>> import numpy as np
      >>> z1 = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
      >>> z2 = np.array([[1.5, 1.0, 2.0], [0.0, 0.0, 1.0]])
      >>> z3 = np.array([[0.2, -0.3, 1.1], [1.0, 0.0, -1.0]])
      >>> print(f"{dml_ensemble_mimicry_loss(z1, [z2, z3]):.8g}")
      0.33317281
    """
    knobs = ENSEMBLE_CONVENTIONS.resolve(convention, reduction=reduction)
    z_self, z_peers = _check_cohort(z_self, z_peers)
    log_p = np.stack([log_softmax(z) for z in z_peers])
    top = np.max(log_p, axis=0)
    log_p_com = top + np.log(np.mean(np.exp(log_p - top), axis=0))
    per_sample = np.sum(np.exp(log_p_com) * (log_p_com - log_softmax(z_self)), axis=-1)
    return reduce_batch(per_sample, knobs["reduction"])
