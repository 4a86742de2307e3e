r"""RKD — relational knowledge distillation, PyTorch implementation (mirrors :mod:`kdref.reference.rkd`).

Every popular implementation builds the angle potential from the ``[N, N, D]`` tensor of edge
vectors and an ``[N, N, N]`` batched product, for the student and again for the teacher, and
autograd keeps both for the backward pass. kdref never forms an edge vector. Both potentials are
functions of the pairwise squared distances alone (law of cosines),

.. math:: \psi_A(x_i,x_j,x_k)=\frac{d_{ji}^2+d_{jk}^2-d_{ik}^2}{2\,d_{ji}\,d_{jk}},

and :math:`d^2` comes from the Gram matrix of the *centred* rows (exact enough in float32 where the
uncentred Gram of the official ``pdist`` cancels). The angle term is summed over the anchor
:math:`j` in chunks of :math:`c` anchors: the forward pass keeps no chunk, and a custom backward
(:class:`_AngleTerm`) recomputes each chunk to accumulate :math:`\partial\mathcal L/\partial d^2`
(an :math:`N\times N` matrix), from which autograd finishes through the Gram matrix. Peak memory is
:math:`O(N^2+cN^2+ND)` instead of :math:`O(N^2D+N^3)`.

Zero-length edges (coincident samples) have cosine 0 and gradient 0; zero distances have
gradient 0. The teacher is a constant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdref.reference.rkd import RKD_ANGLE_LOSS, RKD_DISTANCE_LOSS, RKD_LOSS
from kdref.torch._common import TORCH, pairwise_sq_distances, sqrt_or_zero

__all__ = [
    "CHUNK_ELEMENTS",
    "angle_potential",
    "distance_potential",
    "rkd_angle_loss",
    "rkd_distance_loss",
    "rkd_loss",
]

#: elements of one [c, N, N] chunk of the angle term (1 MiB in float32): about 4 of them live at
#: once. The anchors per chunk are ``max(1, CHUNK_ELEMENTS // N²)``; this changes memory, not values.
CHUNK_ELEMENTS = 2**18


def _inverse_or_zero(d2: torch.Tensor) -> torch.Tensor:
    """1/d, and 0 for a zero-length edge (whose direction is undefined; its cosine is 0)."""
    positive = d2 > 0
    return torch.where(positive, torch.where(positive, d2, 1.0).rsqrt(), 0.0)


def distance_potential(x: torch.Tensor, *, clamp_sq: float = 0.0, mu: str = "offdiag",
                       squared: bool = False) -> torch.Tensor:
    r""":math:`\psi_D=d/\mu` from the centred Gram distances of ``x`` ``[N, D]``; see the reference."""
    n = x.shape[0]
    d2 = pairwise_sq_distances(x)
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=x.device)
    if clamp_sq > 0:
        d2 = torch.where(off_diagonal, d2.clamp_min(clamp_sq), 0.0)
    d = d2 if squared else sqrt_or_zero(d2)
    counted = off_diagonal if mu == "offdiag" else d > 0
    mean = torch.where(counted, d, 0.0).sum() / counted.sum().clamp_min(1)
    # a collapsed batch (every distance 0) has every potential 0
    return torch.where(mean > 0, d / torch.where(mean > 0, mean, 1.0), 0.0)


def angle_potential(x: torch.Tensor) -> torch.Tensor:
    r""":math:`A_{jik}=\psi_A(x_i,x_j,x_k)`, the cosine at vertex :math:`x_j`, ``[N, N, N]``, by the
    law of cosines (for inspection and tests; the loss never forms the whole tensor)."""
    d2 = pairwise_sq_distances(x)
    return _cosines(d2, _inverse_or_zero(d2), slice(None))


def _cosines(d2: torch.Tensor, inv: torch.Tensor, anchors: slice) -> torch.Tensor:
    r"""The ``[c, N, N]`` cosines at the anchors :math:`j` of the chunk:
    :math:`\tfrac12(d^2_{ji}+d^2_{jk}-d^2_{ik})/(d_{ji}d_{jk})`, 0 where an edge has length 0."""
    a, u = d2[anchors], inv[anchors]
    if torch.is_grad_enabled():  # differentiable (double backward), one temporary per operation
        return 0.5 * (a[:, :, None] + a[:, None, :] - d2[None]) * u[:, :, None] * u[:, None, :]
    cos = a[:, :, None] + a[:, None, :]  # in place: a single [c, N, N] buffer
    return cos.sub_(d2).mul_(0.5 * u[:, :, None]).mul_(u[:, None, :])


def _anchor_chunks(n: int, chunk_size: int | None):
    size = chunk_size or max(1, CHUNK_ELEMENTS // (n * n))
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


class _AngleTerm(torch.autograd.Function):
    r""":math:`\sum_{j,i,k} m_{ik}\,\ell_1\big(A^T_{jik}, A^S_{jik}\big)` from the two :math:`d^2`
    matrices, chunk by chunk over the anchor :math:`j` (``m`` masks :math:`i=k` for distinct triplets).

    Backward, per chunk, with :math:`g=\ell_1'(A^S-A^T)\,m` (symmetric in :math:`i,k`) and
    :math:`u=1/d`:

    .. math::
       \frac{\partial A_{jik}}{\partial d^2_{ji}}=\tfrac12\big(u_{ji}u_{jk}-A_{jik}u_{ji}^2\big),\qquad
       \frac{\partial A_{jik}}{\partial d^2_{ik}}=-\tfrac12u_{ji}u_{jk},

    so :math:`W_{j\cdot}\mathrel{+}=u_{j\cdot}\odot(g\,u_{j\cdot})-u_{j\cdot}^2\odot\sum_k gA` (the
    :math:`d^2_{jk}` slot gives the same by symmetry) and
    :math:`W\mathrel{+}=-\tfrac12\sum_j g_j\odot u_ju_j^\top`. The backward is written in
    differentiable operations, so double backward works.
    """

    @staticmethod
    def forward(ctx, d2_s, d2_t, distinct: bool, chunk_size):
        ctx.save_for_backward(d2_s, d2_t)
        ctx.distinct, ctx.chunk_size = distinct, chunk_size
        inv_s, inv_t = _inverse_or_zero(d2_s), _inverse_or_zero(d2_t)
        total = d2_s.new_zeros(())
        for anchors in _anchor_chunks(d2_s.shape[0], chunk_size):
            a_s, a_t = _cosines(d2_s, inv_s, anchors), _cosines(d2_t, inv_t, anchors)
            terms = F.huber_loss(a_s, a_t, reduction="none", delta=1.0)
            if distinct:
                terms.diagonal(dim1=1, dim2=2).zero_()
            total = total + terms.sum()
        return total

    @staticmethod
    def backward(ctx, grad_total):
        d2_s, d2_t = ctx.saved_tensors
        inv_s, inv_t = _inverse_or_zero(d2_s), _inverse_or_zero(d2_t)
        n = d2_s.shape[0]
        off_diagonal = ~torch.eye(n, dtype=torch.bool, device=d2_s.device) if ctx.distinct else None
        recorded = torch.is_grad_enabled()  # double backward: out of place, so that autograd can record it
        grad_d2 = torch.zeros_like(d2_s)
        for anchors in _anchor_chunks(n, ctx.chunk_size):
            a_s = _cosines(d2_s, inv_s, anchors)
            g = (a_s - _cosines(d2_t, inv_t, anchors)).clamp(-1.0, 1.0)  # ℓ₁'(r), the Huber slope
            if off_diagonal is not None:
                g = g * off_diagonal
            u = inv_s[anchors]
            row = u * torch.einsum("jik,jk->ji", g, u) - u.square() * (g * a_s).sum(-1)
            across = torch.einsum("jik,ji,jk->ik", g, u, u)
            if recorded:
                grad_d2 = grad_d2.index_add(0, torch.arange(anchors.start, anchors.stop, device=g.device), row)
                grad_d2 = grad_d2 - 0.5 * across
            else:  # in place: no new [N, N] matrix per chunk
                grad_d2[anchors] += row
                grad_d2.sub_(across, alpha=0.5)
        return grad_total * grad_d2, None, None, None


@torch.compiler.disable
def _angle_sum(s: torch.Tensor, t: torch.Tensor, distinct: bool, chunk_size) -> torch.Tensor:
    """Runs eagerly under ``torch.compile`` (a graph break): traced, the chunk loop would unroll
    into one graph per batch size, whose compile time grows with the number of chunks (88 s at
    N = 256), for no gain — each chunk is already a few large elementwise kernels."""
    d2_s, d2_t = pairwise_sq_distances(s), pairwise_sq_distances(t)
    with torch.autocast(d2_s.device.type, enabled=False):
        return _AngleTerm.apply(d2_s, d2_t, distinct, chunk_size)


def _distance_term(s: torch.Tensor, t: torch.Tensor, tuples: str, reduction: str, clamp_sq: float, mu: str,
                   squared: bool) -> torch.Tensor:
    potential = {"clamp_sq": clamp_sq, "mu": mu, "squared": squared}
    # the diagonal is 0 in both networks: summing all N² terms is summing the N(N−1) distinct pairs
    total = F.huber_loss(distance_potential(s, **potential), distance_potential(t.detach(), **potential),
                         reduction="sum", delta=1.0)
    n = s.shape[0]
    count = n * n if tuples == "all" else n * (n - 1)
    return total if reduction == "sum" else total / count


def _angle_term(s: torch.Tensor, t: torch.Tensor, tuples: str, reduction: str) -> torch.Tensor:
    distinct = tuples == "distinct"
    total = _angle_sum(s, t.detach(), distinct, None)
    n = s.shape[0]
    count = n * (n - 1) * (n - 2) if distinct else n**3
    return total if reduction == "sum" else total / count


@RKD_DISTANCE_LOSS.implement(TORCH)
def rkd_distance_loss(student: torch.Tensor, teacher: torch.Tensor, *, tuples: str, reduction: str,
                      clamp_sq: float, mu: str, squared: bool) -> torch.Tensor:
    """Distance-wise RKD; see :func:`kdref.reference.rkd.rkd_distance_loss`."""
    return _distance_term(student, teacher, tuples, reduction, clamp_sq, mu, squared)


@RKD_ANGLE_LOSS.implement(TORCH)
def rkd_angle_loss(student: torch.Tensor, teacher: torch.Tensor, *, tuples: str, reduction: str) -> torch.Tensor:
    """Angle-wise RKD; see :func:`kdref.reference.rkd.rkd_angle_loss`. The anchors are processed
    in chunks of ``max(1, CHUNK_ELEMENTS // N²)`` (:data:`CHUNK_ELEMENTS`); that changes memory,
    not the value."""
    return _angle_term(student, teacher, tuples, reduction)


@RKD_LOSS.implement(TORCH)
def rkd_loss(student: torch.Tensor, teacher: torch.Tensor, w_dist: float | None, w_angle: float | None, *,
             tuples: str, reduction: str, clamp_sq: float, mu: str, squared: bool) -> torch.Tensor:
    """RKD-DA, ``w_dist · distance + w_angle · angle``; see :func:`kdref.reference.rkd.rkd_loss`."""
    w_dist = 1.0 if w_dist is None else w_dist
    w_angle = 2.0 if w_angle is None else w_angle
    total = 0.0
    if w_dist > 0 or w_angle == 0:
        total = total + w_dist * _distance_term(student, teacher, tuples, reduction, clamp_sq, mu, squared)
    if w_angle > 0:
        total = total + w_angle * _angle_term(student, teacher, tuples, reduction)
    return total
