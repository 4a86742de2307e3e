r"""DML — Deep Mutual Learning (Zhang et al., CVPR 2018), PyTorch.

Computes the same functions as :mod:`kdref.reference.dml` with the same conventions. The peers'
logits are stacked into one ``[K-1, B, M]`` tensor, so a cohort of any size costs one
log-softmax and one reduction, with no Python loop over peers or samples. Peers are detached.
"""

from __future__ import annotations

import math

import torch

from kdref._scalars import check_real
from kdref.reference.dml import CONVENTIONS, ENSEMBLE_CONVENTIONS
from kdref.torch._common import (
    accumulation_dtype,
    check_float_tensor,
    check_labels,
    check_same_like,
    check_sequence,
    reduce_batch,
)

__all__ = ["dml_ensemble_mimicry_loss", "dml_mimicry_loss", "dml_network_loss"]


def _check_cohort(z_self, z_peers) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate and return ``z_self`` and the detached peers stacked as ``[K-1, B, M]``."""
    check_float_tensor("z_self", z_self, ndim=2)
    z_peers = check_sequence("z_peers", z_peers)
    for i, z in enumerate(z_peers):
        check_float_tensor(f"z_peers[{i}]", z, ndim=2)
        check_same_like(f"z_peers[{i}]", z, "z_self", z_self)
    dtype = accumulation_dtype(z_self)
    return z_self.to(dtype), torch.stack([z.detach() for z in z_peers]).to(dtype)


def _mimicry_per_sample(z_self: torch.Tensor, peers: torch.Tensor, knobs) -> torch.Tensor:
    if knobs["single_peer"] and peers.shape[0] != 1:
        raise ValueError(f"z_peers must hold exactly one peer for this convention (K = 2), got {peers.shape[0]}")
    epsilon = check_real("epsilon", knobs["epsilon"], low=0.0, high=1.0)
    if epsilon == 0:
        log_p_peers = torch.log_softmax(peers, dim=-1)
        kl = (log_p_peers.exp() * (log_p_peers - torch.log_softmax(z_self, dim=-1))).sum(dim=-1)
    else:  # the official code's formula, from probabilities
        p_peers, p_self = torch.softmax(peers, dim=-1), torch.softmax(z_self, dim=-1)
        kl = (p_peers * torch.log(epsilon + p_peers / (p_self + epsilon))).sum(dim=-1)
    return kl.mean(dim=0) if knobs["peer_reduction"] == "mean" else kl.sum(dim=0)


def dml_mimicry_loss(
    z_self: torch.Tensor,
    z_peers,
    *,
    convention: str | None = None,
    peer_reduction: str | None = None,
    epsilon: float | None = None,
    single_peer: bool | None = None,
    reduction: str | None = None,
) -> torch.Tensor:
    r""":math:`\frac{1}{K-1}\sum_{l\ne k} D_{KL}(p_l\Vert p_k)`, mean over the batch by default (eq. 6).

    Arguments and conventions as :func:`kdref.reference.dml.dml_mimicry_loss`; ``z_peers`` is a
    list of tensors shaped like ``z_self``.

    Examples:
      >>> import torch
      >>> z1 = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]], dtype=torch.float64)
      >>> z2 = torch.tensor([[1.5, 1.0, 2.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
      >>> print(f"{dml_mimicry_loss(z2, [z1]).item():.8g}")
      0.14094046
    """
    knobs = CONVENTIONS.resolve(
        convention, peer_reduction=peer_reduction, epsilon=epsilon, single_peer=single_peer, reduction=reduction
    )
    z_self, peers = _check_cohort(z_self, z_peers)
    return reduce_batch(_mimicry_per_sample(z_self, peers, knobs), knobs["reduction"])


def dml_network_loss(
    z_self: torch.Tensor,
    z_peers,
    labels: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    convention: str | None = None,
    peer_reduction: str | None = None,
    epsilon: float | None = None,
    single_peer: bool | None = None,
    reduction: str | None = None,
) -> torch.Tensor:
    r""":math:`L_{\Theta_k} = L_{C_k} + \frac{1}{K-1}\sum_{l\ne k} D_{KL}(p_l\Vert p_k)` (eqs. 4–6).

    As :func:`kdref.reference.dml.dml_network_loss`.
    """
    knobs = CONVENTIONS.resolve(
        convention, peer_reduction=peer_reduction, epsilon=epsilon, single_peer=single_peer, reduction=reduction
    )
    z_self, peers = _check_cohort(z_self, z_peers)
    labels = check_labels(labels, *z_self.shape, device=z_self.device)
    label_smoothing = check_real("label_smoothing", label_smoothing, low=0.0, high=1.0)
    ce = torch.nn.functional.cross_entropy(z_self, labels, reduction="none", label_smoothing=label_smoothing)
    return reduce_batch(ce + _mimicry_per_sample(z_self, peers, knobs), knobs["reduction"])


def dml_ensemble_mimicry_loss(z_self: torch.Tensor, z_peers, *, convention: str | None = None,
                              reduction: str | None = None) -> torch.Tensor:
    r"""DML_e: :math:`D_{KL}(p_{\text{com}}\Vert p_k)` with :math:`p_{\text{com}}` the peers' mean posterior.

    As :func:`kdref.reference.dml.dml_ensemble_mimicry_loss`.
    """
    knobs = ENSEMBLE_CONVENTIONS.resolve(convention, reduction=reduction)
    z_self, peers = _check_cohort(z_self, z_peers)
    log_p_com = torch.logsumexp(torch.log_softmax(peers, dim=-1), dim=0) - math.log(peers.shape[0])
    per_sample = (log_p_com.exp() * (log_p_com - torch.log_softmax(z_self, dim=-1))).sum(dim=-1)
    return reduce_batch(per_sample, knobs["reduction"])
