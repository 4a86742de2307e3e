r"""DML — Deep Mutual Learning (Zhang et al., CVPR 2018), PyTorch.

Computes the same functions as :mod:`kdref.reference.dml` with the same conventions. The peers'
logits are stacked into one ``[K-1, B, M]`` tensor, so a cohort of any size costs one
log-softmax and one reduction, with no Python loop over peers or samples. Peers are detached.
"""

from __future__ import annotations

import math

import torch

from kdref.reference.dml import DML_ENSEMBLE_MIMICRY_LOSS, DML_MIMICRY_LOSS, DML_NETWORK_LOSS
from kdref.torch._common import TORCH, accumulation_dtype, reduce_batch

__all__ = ["dml_ensemble_mimicry_loss", "dml_mimicry_loss", "dml_network_loss"]


def _cohort(z_self: torch.Tensor, z_peers: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``z_self`` and the detached peers stacked as ``[K-1, B, M]``, in the accumulation dtype."""
    dtype = accumulation_dtype(z_self)
    return z_self.to(dtype), torch.stack([z.detach() for z in z_peers]).to(dtype)


def _mimicry_per_sample(z_self: torch.Tensor, peers: torch.Tensor, peer_reduction: str,
                        epsilon: float) -> torch.Tensor:
    if epsilon == 0:
        log_p_peers = torch.log_softmax(peers, dim=-1)
        kl = (log_p_peers.exp() * (log_p_peers - torch.log_softmax(z_self, dim=-1))).sum(dim=-1)
    else:  # the official code's formula, from probabilities
        p_peers, p_self = torch.softmax(peers, dim=-1), torch.softmax(z_self, dim=-1)
        kl = (p_peers * torch.log(epsilon + p_peers / (p_self + epsilon))).sum(dim=-1)
    return kl.mean(dim=0) if peer_reduction == "mean" else kl.sum(dim=0)


@DML_MIMICRY_LOSS.implement(TORCH)
def dml_mimicry_loss(z_self: torch.Tensor, z_peers: list[torch.Tensor], *, peer_reduction: str, epsilon: float,
                     single_peer: bool, reduction: str) -> torch.Tensor:
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
    z_self, peers = _cohort(z_self, z_peers)
    return reduce_batch(_mimicry_per_sample(z_self, peers, peer_reduction, epsilon), reduction)


@DML_NETWORK_LOSS.implement(TORCH)
def dml_network_loss(z_self: torch.Tensor, z_peers: list[torch.Tensor], labels: torch.Tensor,
                     label_smoothing: float | None, *, peer_reduction: str, epsilon: float, single_peer: bool,
                     reduction: str) -> torch.Tensor:
    r""":math:`L_{\Theta_k} = L_{C_k} + \frac{1}{K-1}\sum_{l\ne k} D_{KL}(p_l\Vert p_k)` (eqs. 4–6).

    As :func:`kdref.reference.dml.dml_network_loss`.
    """
    z_self, peers = _cohort(z_self, z_peers)
    ce = torch.nn.functional.cross_entropy(z_self, labels, reduction="none", label_smoothing=label_smoothing or 0.0)
    return reduce_batch(ce + _mimicry_per_sample(z_self, peers, peer_reduction, epsilon), reduction)


@DML_ENSEMBLE_MIMICRY_LOSS.implement(TORCH)
def dml_ensemble_mimicry_loss(z_self: torch.Tensor, z_peers: list[torch.Tensor], *, reduction: str) -> torch.Tensor:
    r"""DML_e: :math:`D_{KL}(p_{\text{com}}\Vert p_k)` with :math:`p_{\text{com}}` the peers' mean posterior.

    As :func:`kdref.reference.dml.dml_ensemble_mimicry_loss`.
    """
    z_self, peers = _cohort(z_self, z_peers)
    log_p_com = torch.logsumexp(torch.log_softmax(peers, dim=-1), dim=0) - math.log(peers.shape[0])
    per_sample = (log_p_com.exp() * (log_p_com - torch.log_softmax(z_self, dim=-1))).sum(dim=-1)
    return reduce_batch(per_sample, reduction)
