r"""DML — Deep Mutual Learning (Zhang, Xiang, Hospedales & Lu, CVPR 2018), NumPy reference.

**The idea.** There is no pre-trained teacher: a cohort of :math:`K` networks trains together from
scratch, and each network learns both from the labels and from its peers' class posteriors. What is
transferred is each peer's predicted distribution over the classes (its secondary probabilities
included), through a KL "mimicry" term that pulls network :math:`k` towards what its peers predict.
The peers are constants for network :math:`k`'s update; the order of the updates (sequential in the
paper's Algorithm 1, synchronous in KD-Zoo) belongs to the training loop, not to the loss, so these
functions take the peer logits as inputs.

**The paper's equations** **[reconstructed]** (as commonly transcribed; the forms of eqs. 2–4 agree
with the official code and KD-Zoo). Network :math:`k` has the class posterior

.. math:: p_k^m = \frac{\exp(z_k^m)}{\sum_{m'}\exp(z_k^{m'})} \qquad\text{(eq. 1, no temperature)},

the supervised loss :math:`L_{C_k} = -\sum_i\sum_m I(y_i, m)\log p_k^m(x_i)` (eq. 2), the mimicry
term, the peer's distribution first,

.. math:: D_{KL}(p_l\,\Vert\,p_k) = \sum_i\sum_m p_l^m(x_i)\log\frac{p_l^m(x_i)}{p_k^m(x_i)}
    \qquad\text{(eq. 3)},

and, for a cohort of :math:`K` networks, the objective (eqs. 4–6)

.. math:: L_{\Theta_k} = L_{C_k} + \frac{1}{K-1}\sum_{l\ne k} D_{KL}(p_l\,\Vert\,p_k).

DML_e (eqs. 7–8) uses the peers' mean posterior :math:`p_{\text{com}} = \frac{1}{K-1}\sum_{l\ne k} p_l`
as one teacher. The official TensorFlow code **[code]** sums over the peers and computes the KL from
probabilities with two :math:`\varepsilon = 10^{-8}` terms.
"""

from __future__ import annotations

import numpy as np

from kdref.declaration import Arg, Declaration, Knob
from kdref.reference._common import NUMPY, log_softmax, reduce_batch, softmax

__all__ = [
    "DML_ENSEMBLE_MIMICRY_LOSS",
    "DML_MIMICRY_LOSS",
    "DML_NETWORK_LOSS",
    "dml_ensemble_mimicry_loss",
    "dml_mimicry_loss",
    "dml_network_loss",
    "mutual_kl_per_sample",
    "official_tf_kl_per_sample",
]

# ---------------------------------------------------------------------------------------------
# The paper's math, in equation order


def _cross_entropy_per_sample(z: np.ndarray, y: np.ndarray, label_smoothing: float) -> np.ndarray:
    r"""Eq. 2 per sample, with optional label smoothing: targets :math:`(1-\epsilon)\,\mathbb 1_y + \epsilon/M`."""
    M = z.shape[1]
    # the targets $I(y, m)$, smoothed: $(1-\epsilon)\,I(y, m) + \epsilon/M$
    targets = np.full(z.shape, label_smoothing / M)
    targets[np.arange(z.shape[0]), y] += 1.0 - label_smoothing
    # $L_C = -\sum_m I(y, m)\log p^m$  (eq. 2, with the smoothed targets)
    return -np.sum(targets * log_softmax(z), axis=-1)


def mutual_kl_per_sample(z_self: np.ndarray, z_peer: np.ndarray) -> np.ndarray:
    r"""Eq. 3 per sample: :math:`D_{KL}(p_{\text{peer}}\Vert p_{\text{self}}) = \sum_m p^m_{\text{peer}}
    \log\big(p^m_{\text{peer}}/p^m_{\text{self}}\big)`, computed from log-softmax.

    Returns:
      ``[B]``.
    """
    # $\log p_l$  (eq. 1 of the peer, in log space)
    log_p_l = log_softmax(z_peer)
    # $D_{KL}(p_l\Vert p_k) = \sum_m p_l^m (\log p_l^m - \log p_k^m)$  (eq. 3)
    return np.sum(np.exp(log_p_l) * (log_p_l - log_softmax(z_self)), axis=-1)


def _mimicry_per_sample(z_self, z_peers, peer_reduction: str, epsilon: float) -> np.ndarray:
    """Eq. 6's mimicry term per sample (``peer_reduction="mean"``), or the official code's sum over
    peers of its ε-formula."""
    if epsilon == 0:
        # $D_{KL}(p_l\Vert p_k)$ for each peer $l \ne k$  (eq. 3)
        terms = [mutual_kl_per_sample(z_self, z_l) for z_l in z_peers]
    else:
        terms = [official_tf_kl_per_sample(z_self, z_l, epsilon) for z_l in z_peers]
    # $\sum_{l\ne k} D_{KL}(p_l\Vert p_k)$
    total = np.sum(terms, axis=0)
    # $\frac{1}{K-1}\sum_{l\ne k} D_{KL}(p_l\Vert p_k)$  (eq. 6)
    return total / len(z_peers) if peer_reduction == "mean" else total


def official_tf_kl_per_sample(z_self: np.ndarray, z_peer: np.ndarray, epsilon: float) -> np.ndarray:
    r"""The official code's KL from probabilities with two :math:`\varepsilon` terms:
    :math:`\sum_m p^m_{\text{peer}}\log\big(\varepsilon + p^m_{\text{peer}}/(p^m_{\text{self}}+\varepsilon)\big)`.

    It saturates at :math:`-\log\varepsilon` per sample when the networks disagree strongly, and
    its gradient then vanishes; kdref offers it only as the ``"official_tf"`` convention.
    """
    # $p_l$, $p_k$  (eq. 1, as probabilities)
    p_l, p_k = softmax(z_peer), softmax(z_self)
    # $\sum_m p_l^m \log\big(\varepsilon + p_l^m / (p_k^m + \varepsilon)\big)$
    return np.sum(p_l * np.log(epsilon + p_l / (p_k + epsilon)), axis=-1)


# ---------------------------------------------------------------------------------------------
# The contract: arguments, knobs and conventions (read by both sides, the proof and the docs)


def _check_single_peer(arguments, knobs) -> None:
    if knobs["single_peer"] and len(arguments["z_peers"]) != 1:
        raise ValueError(f"z_peers must hold exactly one peer for this convention (K = 2), "
                         f"got {len(arguments['z_peers'])}")


_COHORT = (
    Arg("z_self", "logits", "this network's logits :math:`z_k`"),
    Arg("z_peers", "logits_list", "the other :math:`K-1 \\ge 1` networks' logits (constants)", like="z_self"),
)
_REDUCTION = Knob("reduction", "mean", "``\"mean\"`` over the batch, ``\"sum\"`` (the paper's literal sums) or "
                  "``\"none\"``", choices=("mean", "sum", "none"))

DML_MIMICRY_LOSS = Declaration(
    name="dml_mimicry_loss",
    args=_COHORT,
    knobs=(
        Knob("peer_reduction", "mean", "``\"mean\"`` (eq. 6's 1/(K−1)) or ``\"sum\"`` over peers (official code)",
             choices=("mean", "sum")),
        Knob("epsilon", 0.0, "0 for the exact log-space KL, or the official code's ε", low=0.0, high=1.0),
        Knob("single_peer", False, "require exactly one peer (KD-Zoo's two-network DML)", choices=(True, False)),
        _REDUCTION,
    ),
    presets={"paper": {}, "kdzoo": {"single_peer": True}, "official_tf": {"peer_reduction": "sum", "epsilon": 1e-8}},
    descriptions={
        "paper": "eq. 6: the mean over peers of KL(p_l‖p_k), mean over the batch",
        "kdzoo": "KD-Zoo's DML: KL(p_peer‖p_k) for one peer (K = 2), mean over the batch",
        "official_tf": "official TensorFlow code: sum over peers of Σ p_l·log(ε + p_l/(p_k + ε)), ε = 1e-8",
    },
    check=_check_single_peer,
)

DML_NETWORK_LOSS = DML_MIMICRY_LOSS.derive(
    "dml_network_loss",
    args=(*_COHORT, Arg("labels", "labels", "integer class labels", like="z_self"),
          Arg("label_smoothing", "fraction", "ε of the smoothed targets (1−ε)·1_y + ε/M; the official "
              "Market-1501 script uses 0.1, the paper none", optional=True)),
)

DML_ENSEMBLE_MIMICRY_LOSS = Declaration(
    name="dml_ensemble_mimicry_loss",
    args=_COHORT,
    knobs=(_REDUCTION,),
    presets={"dml_e": {}},
    default="dml_e",
    descriptions={"dml_e": "eqs. 7–8: KL(p_com‖p_k) with p_com the mean of the peers' posteriors"},
)


# ---------------------------------------------------------------------------------------------
# The public losses


@DML_MIMICRY_LOSS.implement(NUMPY)
def dml_mimicry_loss(z_self: np.ndarray, z_peers: list[np.ndarray], *, peer_reduction: str, epsilon: float,
                     single_peer: bool, reduction: str):
    r"""The mimicry term of network :math:`k`: its peers' posteriors as targets.

    .. math:: \frac{1}{K-1}\sum_{l\ne k} D_{KL}(p_l\,\Vert\,p_k)
        \quad\text{per sample, then reduced over the batch.}

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
    # $\frac{1}{K-1}\sum_{l\ne k} D_{KL}(p_l\Vert p_k)$ per sample, reduced over the batch
    return reduce_batch(_mimicry_per_sample(z_self, z_peers, peer_reduction, epsilon), reduction)


@DML_NETWORK_LOSS.implement(NUMPY)
def dml_network_loss(z_self: np.ndarray, z_peers: list[np.ndarray], labels: np.ndarray,
                     label_smoothing: float | None, *, peer_reduction: str, epsilon: float, single_peer: bool,
                     reduction: str):
    r"""Network :math:`k`'s whole loss, eqs. 4–6: cross-entropy with the labels plus the mimicry term.

    .. math:: L_{\Theta_k} = L_{C_k} + \frac{1}{K-1}\sum_{l\ne k} D_{KL}(p_l\,\Vert\,p_k)

    Returns:
      a float, or ``[B]`` for ``reduction="none"``.

    Examples:
      >>> import numpy as np
      >>> z1 = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
      >>> z2 = np.array([[1.5, 1.0, 2.0], [0.0, 0.0, 1.0]])
      >>> print(f"{dml_network_loss(z1, [z2], np.array([2, 0]), reduction='sum'):.8g}")
      2.5567679

    References:
      Zhang, Xiang, Hospedales, Lu. *Deep Mutual Learning*, CVPR 2018, eqs. 2 and 4–6.

    .. seealso:: :func:`dml_mimicry_loss`, the mimicry term alone.
    """
    # $L_{C_k}$  (eq. 2)
    hard = _cross_entropy_per_sample(z_self, labels, label_smoothing or 0.0)
    # $L_{\Theta_k} = L_{C_k} + \frac{1}{K-1}\sum_{l\ne k} D_{KL}(p_l\Vert p_k)$  (eq. 6)
    return reduce_batch(hard + _mimicry_per_sample(z_self, z_peers, peer_reduction, epsilon), reduction)


@DML_ENSEMBLE_MIMICRY_LOSS.implement(NUMPY)
def dml_ensemble_mimicry_loss(z_self: np.ndarray, z_peers: list[np.ndarray], *, reduction: str):
    r"""DML_e, eqs. 7–8: the peers' mean posterior as one teacher.

    .. math:: D_{KL}(p_{\text{com}}\,\Vert\,p_k),\qquad p_{\text{com}} = \frac{1}{K-1}\sum_{l\ne k} p_l.

    :math:`\log p_{\text{com}}` is a log-sum-exp of the peers' log-posteriors, so it stays finite.
    By convexity of KL this never exceeds :func:`dml_mimicry_loss` with ``"paper"``.

    Returns:
      a float, or ``[B]`` for ``reduction="none"``.

    Examples:
      >>> import numpy as np
      >>> z1 = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
      >>> z2 = np.array([[1.5, 1.0, 2.0], [0.0, 0.0, 1.0]])
      >>> z3 = np.array([[0.2, -0.3, 1.1], [1.0, 0.0, -1.0]])
      >>> print(f"{dml_ensemble_mimicry_loss(z1, [z2, z3]):.8g}")
      0.33317281

    References:
      Zhang, Xiang, Hospedales, Lu. *Deep Mutual Learning*, CVPR 2018, eqs. 7–8.

    .. seealso:: :func:`dml_mimicry_loss`, the mean over the peers of their KL terms.
    """
    # $\log p_l$ for each peer $l \ne k$  (eq. 1 in log space)
    log_p = np.stack([log_softmax(z) for z in z_peers])
    # $\log p_{\text{com}} = \log\frac{1}{K-1}\sum_{l\ne k} p_l$  (eq. 8, as a log-sum-exp)
    top = np.max(log_p, axis=0)
    log_p_com = top + np.log(np.mean(np.exp(log_p - top), axis=0))
    # $D_{KL}(p_{\text{com}}\Vert p_k) = \sum_m p_{\text{com}}^m (\log p_{\text{com}}^m - \log p_k^m)$  (eq. 7)
    per_sample = np.sum(np.exp(log_p_com) * (log_p_com - log_softmax(z_self)), axis=-1)
    return reduce_batch(per_sample, reduction)
