r"""NST — Neuron Selectivity Transfer (Huang & Wang, 2017), PyTorch.

Computes the same functions as :mod:`kdref.reference.nst` (proven by the test harness) with the
same conventions. The kernel sums come from batched matrix products of the normalised channel maps
:math:`X\in\mathbb R^{N\times C\times HW}`, never from the :math:`[N, C, C, HW]` broadcast that
popular implementations build:

- **linear kernel** (and the polynomial kernel with :math:`d=1`): :math:`\sum_{i,j}w_iv_j\,x_i^\top y_j
  = \bar x^\top\bar y` with :math:`\bar x=\sum_iw_ix_i` — means of the maps, :math:`O(NC\,HW)`;
- **polynomial kernel**: the channel Gram matrices :math:`K = X_aX_b^\top` (``[N, C_a, C_b]``) and
  :math:`(K+c)^d` elementwise, :math:`O(NC^2HW)` time and :math:`O(NC^2)` memory; for :math:`d=2`,
  when it is cheaper (:math:`HW(C_S+C_T) < C_S^2+C_SC_T+C_T^2`), the spatial Gram identity
  :math:`\sum_{i,j}w_iv_j(x_i^\top y_j)^2=\langle X_a^\top W_aX_a,\,X_b^\top W_bX_b\rangle_F` with
  ``[N, HW, HW]`` Gram matrices;
- **Gaussian kernel**: :math:`\lVert x-y\rVert^2=\lVert x\rVert^2+\lVert y\rVert^2-2x^\top y` from the
  same channel Gram matrices.

The teacher is detached, half-precision inputs are computed in float32, and the matrix products
run with autocast disabled, so they accumulate in float32 (or float64) even inside an autocast
region. Nothing loops over the batch.
"""

from __future__ import annotations

import torch

from kdref.declaration import Knob
from kdref.reference.nst import GAUSSIAN_SIGMA2_HEURISTIC, NST_LOSS, NST_LOSS_MULTI, SIGMA2_DEGENERATE
from kdref.torch._common import TORCH, accumulation_dtype, adaptive_pool2d, l2_normalize, reduce_batch, resize_bilinear

__all__ = ["gaussian_sigma2_heuristic", "kernel_pair_sum", "normalized_channel_maps", "nst_loss"]


def normalized_channel_maps(fm: torch.Tensor, eps: float = 1e-12, eps_mode: str = "clamp") -> torch.Tensor:
    r""":math:`x^i=\mathbf f^{i\cdot}/\lVert\mathbf f^{i\cdot}\rVert_2`: ``[N, C, H, W]`` to ``[N, C, HW]``
    (as :func:`kdref.reference.nst.normalized_channel_maps`)."""
    return l2_normalize(fm.flatten(2), dim=-1, eps=eps, eps_mode=eps_mode)


def _sample_weights(fm: torch.Tensor, zero_channel: str) -> torch.Tensor:
    """``[N, C]``: 1/C each (``"keep"``), or 1/C' on the C' channels that are not all zero (``"drop"``)."""
    n, channels = fm.shape[:2]
    if zero_channel == "keep":
        return fm.new_full((n, channels), 1.0 / channels)
    kept = (fm.flatten(2) != 0).any(dim=-1).to(fm.dtype)
    return kept / kept.sum(dim=1, keepdim=True).clamp_min(1.0)


def _weighted_mean_map(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    r""":math:`\bar x=\sum_iw_ix_i`, ``[N, HW]``."""
    return torch.bmm(w.unsqueeze(1), x).squeeze(1)


def _kernel_of_gram(gram: torch.Tensor, a: torch.Tensor, b: torch.Tensor, kernel: str, c: float, d: int,
                    sigma2) -> torch.Tensor:
    r"""The kernel matrix from the Gram matrix ``gram`` :math:`=AB^\top`, overwriting it.

    Polynomial: :math:`(K+c)^d`. Gaussian: :math:`\lVert a_i-b_j\rVert^2=\lVert a_i\rVert^2+\lVert
    b_j\rVert^2-2K_{ij}`, clamped at 0 before the exponential: where two maps (nearly) coincide,
    rounding leaves a tiny negative number (about :math:`10^{-7}` in float32, as both norms are
    about 1), which would give :math:`k>1`. The clamp changes values only; the gradient is computed
    from the exact expression (see :class:`_ChannelKernelSum`).
    """
    if kernel == "poly":
        return gram.add_(c).pow_(d)
    if kernel == "linear":
        return gram
    distance = gram.mul_(-2.0).add_(a.square().sum(-1).unsqueeze(2)).add_(b.square().sum(-1).unsqueeze(1))
    return distance.clamp_min_(0.0).div_(-2.0 * sigma2).exp_()


def _weighted_pair_sum(k: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    r""":math:`\sum_{i,j}w_i\,k_{ij}\,v_j` per example, ``[N]``, without an ``[N, C_a, C_b]`` temporary."""
    return torch.linalg.vecdot(wa, torch.bmm(k, wb.unsqueeze(-1)).squeeze(-1))


class _ChannelKernelSum(torch.autograd.Function):
    r""":math:`s_n=\sum_{i,j}w_iv_j\,k(a_i,b_j)` through the channel Gram matrix :math:`K=AB^\top`.

    The ``[N, C_a, C_b]`` matrices are recomputed in the backward pass instead of being saved, and
    overwritten in place: plain autograd keeps :math:`K` and :math:`k(K)` from the forward pass and
    materialises three or four more matrices of that size in the backward pass (4–5× the memory).
    With :math:`E_{ij}=g_n\,w_iv_j\,\partial k/\partial(\cdot)`:

    - polynomial: :math:`\partial k_{ij}/\partial K_{ij}=d\,(K_{ij}+c)^{d-1}`, so
      :math:`\nabla_A=E B` and :math:`\nabla_B=E^\top A`;
    - Gaussian: :math:`\partial k_{ij}/\partial a_i=-k_{ij}(a_i-b_j)/\sigma^2`, so with
      :math:`E_{ij}=g_nw_iv_jk_{ij}/\sigma^2`, :math:`\nabla_{a_i}=(EB)_i-(\sum_jE_{ij})\,a_i` and
      :math:`\nabla_{b_j}=(E^\top A)_j-(\sum_iE_{ij})\,b_j` — the exact gradient, also where the
      clamp of :func:`_kernel_of_gram` acted.

    When the backward pass is itself recorded (double backward) it runs out of place.
    """

    @staticmethod
    def forward(ctx, a, b, wa, wb, sigma2, kernel: str, c: torch.Tensor, d: int):
        ctx.save_for_backward(a, b, wa, wb, sigma2 if isinstance(sigma2, torch.Tensor) else None, c)
        ctx.kernel, ctx.d = kernel, d
        ctx.sigma2 = None if isinstance(sigma2, torch.Tensor) else sigma2
        return _weighted_pair_sum(_kernel_of_gram(torch.bmm(a, b.mT), a, b, kernel, c, d, sigma2), wa, wb)

    @staticmethod
    def backward(ctx, grad):
        a, b, wa, wb, sigma2_tensor, c = ctx.saved_tensors
        sigma2 = ctx.sigma2 if sigma2_tensor is None else sigma2_tensor
        kernel, d = ctx.kernel, ctx.d
        with torch.autocast(device_type=a.device.type, enabled=False):
            gram = torch.bmm(a, b.mT)
            if not torch.is_grad_enabled():
                if kernel == "poly":
                    e = gram.add_(c).pow_(d - 1).mul_(d)
                else:
                    e = _kernel_of_gram(gram, a, b, kernel, c, d, sigma2).div_(sigma2)
                e.mul_(wa.unsqueeze(2)).mul_(wb.unsqueeze(1)).mul_(grad.view(-1, 1, 1))
            else:  # double backward: out of place, so that autograd can record it
                if kernel == "poly":
                    e = d * (gram + c).pow(d - 1)
                else:
                    distance = a.square().sum(-1).unsqueeze(2) + b.square().sum(-1).unsqueeze(1) - 2.0 * gram
                    e = torch.exp(distance.clamp_min(0.0) / (-2.0 * sigma2)) / sigma2
                e = e * wa.unsqueeze(2) * wb.unsqueeze(1) * grad.view(-1, 1, 1)
            grad_a = grad_b = None
            if ctx.needs_input_grad[0]:
                grad_a = torch.bmm(e, b)
                if kernel == "gaussian":
                    grad_a = grad_a - e.sum(2, keepdim=True) * a
            if ctx.needs_input_grad[1]:
                grad_b = torch.bmm(e.mT, a)
                if kernel == "gaussian":
                    grad_b = grad_b - e.sum(1).unsqueeze(2) * b
        return grad_a, grad_b, None, None, None, None, None, None


def _spatial_gram(x: torch.Tensor, w: torch.Tensor, uniform: bool) -> torch.Tensor:
    r""":math:`G=X^\top W X=\sum_iw_i\,x_ix_i^\top`, ``[N, HW, HW]``."""
    if uniform:  # every weight is 1/C: scale the small Gram matrix, not a copy of the maps
        return torch.bmm(x.mT, x) * w[:, :1, None]
    return torch.bmm((x * w.unsqueeze(-1)).mT, x)


def kernel_pair_sum(a: torch.Tensor, b: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor, *, kernel: str = "poly",
                    c: float = 0.0, d: int = 2, sigma2: torch.Tensor | float | None = None) -> torch.Tensor:
    r""":math:`\sum_{i,j}w_iv_j\,k(a_i,b_j)` per example on the channel Gram matrix
    :math:`K=AB^\top` (``[N, C_a, C_b]``), which is never kept for the backward pass.

    Args:
      a, b: normalised maps ``[N, C_a, M]``, ``[N, C_b, M]``.
      wa, wb: sample weights ``[N, C_a]``, ``[N, C_b]``, constants.
      kernel, c, d, sigma2: as :func:`kdref.reference.nst.kernel_matrix`; ``sigma2`` a number or
        a constant ``[N, 1, 1]`` tensor.

    Returns:
      ``[N]``.
    """
    # c as a tensor: a Python float would reach the autograd function as a symbolic float under
    # torch.compile with dynamic shapes, which Dynamo (torch 2.13) fails on
    c = torch.as_tensor(c, dtype=a.dtype, device=a.device)
    return _ChannelKernelSum.apply(a, b, wa, wb, sigma2, kernel, c, d)


def _mmd2_from_means(x, y, wx, wy, c: float, teacher_term: bool) -> torch.Tensor:
    r"""Linear kernel, or polynomial with :math:`d=1`: :math:`\sum w_iv_j(x_i^\top y_j + c)
    = \bar x^\top\bar y + c\,s_xs_y` with :math:`s=\sum_iw_i` (1, or 0 for an empty set)."""
    mx, my, sx, sy = _weighted_mean_map(x, wx), _weighted_mean_map(y, wy), wx.sum(-1), wy.sum(-1)
    if teacher_term:
        return (mx - my).square().sum(-1) + c * (sx - sy).square()
    return torch.linalg.vecdot(my, my - 2.0 * mx) + c * sy * (sy - 2.0 * sx)


def _mmd2_poly2_spatial(x, y, wx, wy, c: float, teacher_term: bool, uniform: bool) -> torch.Tensor:
    r"""Polynomial kernel, :math:`d=2`, through ``[N, HW, HW]`` Gram matrices:
    :math:`\sum w_iv_j(x_i^\top y_j+c)^2=\langle G_x,G_y\rangle_F+2c\,\bar x^\top\bar y+c^2s_xs_y`, so
    the full :math:`\mathrm{MMD}^2=\lVert G_x-G_y\rVert_F^2+2c\lVert\bar x-\bar y\rVert^2+c^2(s_x-s_y)^2`."""
    gx, gy = _spatial_gram(x, wx, uniform), _spatial_gram(y, wy, uniform)
    if teacher_term:
        value = (gx - gy).square().sum(dim=(1, 2))
    else:
        value = gy.square().sum(dim=(1, 2)) - 2.0 * (gy * gx).sum(dim=(1, 2))
    if c != 0:
        value = value + 2.0 * c * _mmd2_from_means(x, y, wx, wy, 0.0, teacher_term)
        sx, sy = wx.sum(-1), wy.sum(-1)
        value = value + c * c * ((sx - sy).square() if teacher_term else sy * sy - 2.0 * sy * sx)
    return value


def _spatial_is_cheaper(hw: int, c_s: int, c_t: int, teacher_term: bool) -> bool:
    """Multiply-adds of the channel Gram matrices vs the spatial ones (both need the cross term)."""
    channel = hw * (c_s * c_s + c_s * c_t + (c_t * c_t if teacher_term else 0))
    return hw * hw * (c_s + c_t) < channel


def _mmd2(x, y, wx, wy, *, kernel, c, d, sigma2, teacher_term, uniform, gram) -> torch.Tensor:
    r"""Per-example :math:`\mathrm{MMD}^2` (or its student part), choosing the cheapest exact form."""
    if kernel == "linear" or (kernel == "poly" and d == 1):
        return _mmd2_from_means(x, y, wx, wy, c if kernel == "poly" else 0.0, teacher_term)
    spatial_ok = kernel == "poly" and d == 2
    if spatial_ok and (gram == "spatial" or (gram == "auto" and _spatial_is_cheaper(
            x.shape[-1], y.shape[1], x.shape[1], teacher_term))):
        return _mmd2_poly2_spatial(x, y, wx, wy, c, teacher_term, uniform)
    pair_sum = dict(kernel=kernel, c=c, d=d, sigma2=sigma2)
    value = kernel_pair_sum(y, y, wy, wy, **pair_sum) - 2.0 * kernel_pair_sum(y, x, wy, wx, **pair_sum)
    if teacher_term:
        value = value + kernel_pair_sum(x, x, wx, wx, **pair_sum)
    return value


def _match_spatial(student: torch.Tensor, teacher: torch.Tensor, spatial: str) -> tuple[torch.Tensor, torch.Tensor]:
    """As :func:`kdref.reference.nst.match_spatial`."""
    s_hw, t_hw = tuple(student.shape[2:]), tuple(teacher.shape[2:])
    if s_hw == t_hw or spatial == "error":
        return student, teacher
    if spatial == "interpolate":
        return resize_bilinear(student, t_hw), teacher
    out = (min(s_hw[0], t_hw[0]), min(s_hw[1], t_hw[1]))  # "avgpool"

    def pool(x):
        return x if tuple(x.shape[2:]) == out else adaptive_pool2d(x, out, "avg")

    return pool(student), pool(teacher)


def _sample_sets(student: torch.Tensor, teacher: torch.Tensor, *, eps: float, eps_mode: str, zero_channel: str,
                 spatial: str) -> tuple[torch.Tensor, ...]:
    """As :func:`kdref.reference.nst.sample_sets`: ``x, w, y, v`` (the weights from the maps as given)."""
    w, v = _sample_weights(teacher, zero_channel), _sample_weights(student, zero_channel)
    student, teacher = _match_spatial(student, teacher, spatial)
    return (normalized_channel_maps(teacher, eps, eps_mode), w, normalized_channel_maps(student, eps, eps_mode), v)


def _sigma2_tensor(sigma2: torch.Tensor | float | None, like: torch.Tensor) -> torch.Tensor | None:
    """σ² (checked by the declaration) as a constant ``[N, 1, 1]`` or ``[1, 1, 1]`` tensor of the
    computation's dtype: a Python float reaches the custom autograd function as a symbolic float
    under torch.compile with dynamic shapes, which Dynamo (torch 2.13) fails on."""
    if sigma2 is None:
        return None
    if isinstance(sigma2, torch.Tensor):
        return sigma2.detach().to(like.dtype).reshape(-1, 1, 1)
    return torch.full((1, 1, 1), sigma2, dtype=like.dtype, device=like.device)


def _check_gram(arguments, knobs) -> None:
    """The reference's rules, and ``gram="spatial"`` only where the spatial Gram form exists."""
    NST_LOSS.check(arguments, knobs)
    kernel, d = knobs["kernel"], knobs["d"]
    if knobs["gram"] == "spatial" and (kernel == "gaussian" or (kernel == "poly" and d > 2)):
        raise ValueError(f"gram='spatial' needs the polynomial kernel with d = 2, got kernel={kernel!r}, d={d}")


# :data:`kdref.reference.nst.NST_LOSS` with the one knob of the torch side: how the kernel sums are
# computed (the value is the same up to rounding)
_NST_LOSS_TORCH = NST_LOSS.derive(
    "nst_loss",
    knobs=(*NST_LOSS.knobs,
           Knob("gram", "auto", "which Gram matrices the polynomial kernel with :math:`d=2` uses: ``\"channel\"`` "
                "(``[N, C, C]``), ``\"spatial\"`` (``[N, HW, HW]``) or ``\"auto\"``, the cheaper one; the value is "
                "the same up to rounding. The linear kernel and :math:`d=1` use the means of the maps, the Gaussian "
                "kernel and :math:`d\\ge3` the channel Gram matrices", choices=("auto", "channel", "spatial"))),
    check=_check_gram,
)


@_NST_LOSS_TORCH.implement(TORCH)
def nst_loss(student: torch.Tensor, teacher: torch.Tensor, sigma2: torch.Tensor | float | None, *, lam: float,
             kernel: str, c: float, d: int, teacher_term: bool, half: bool, reduction: str, eps: float, eps_mode: str,
             zero_channel: str, spatial: str, gram: str) -> torch.Tensor:
    r"""The NST loss, :math:`\frac\lambda2\cdot\frac1N\sum_n\mathcal L_{\mathrm{MMD}^2}(\mathbf F_{T,n},
    \mathbf F_{S,n})` by default.

    Arguments, conventions and result as :func:`kdref.reference.nst.nst_loss`; inputs are tensors
    ``[N, C, H, W]`` on one device (``sigma2`` a number or a ``[N]`` tensor, treated as a
    constant), and the result is a 0-d tensor (``[N]`` for ``"none"``). One more knob, ``gram``,
    chooses how the kernel sums are computed.

    Examples:
      >>> import torch
      >>> fs = torch.tensor([[[[1, 2], [0, -1]], [[0.5, 0], [1, 2]]],
      ...                    [[[0, 0], [3, 1]], [[2, -1], [0, 0.5]]]], dtype=torch.float64)
      >>> ft = torch.tensor([[[[2, 1], [0, 0]], [[1, 1], [1, 1]], [[0, -2], [1, 0.5]]],
      ...                    [[[1, 0], [2, 2]], [[0, 1], [0, 3]], [[-1, 0], [0.5, 1]]]], dtype=torch.float64)
      >>> print(f"{nst_loss(fs, ft).item():.8g}")
      0.21790137
      >>> print(f"{nst_loss(fs, ft, convention='kdzoo').item():.8g}")
      0.43580275
      >>> print(nst_loss(fs, ft, kernel="linear", convention="kdzoo", reduction="none"))
      tensor([0.1789, 0.6679], dtype=torch.float64)
    """
    dtype = accumulation_dtype(student)
    # autocast would run the Gram products in bfloat16/float16; kdref accumulates in float32
    with torch.autocast(device_type=student.device.type, enabled=False):
        x, w, y, v = _sample_sets(student.to(dtype), teacher.detach().to(dtype), eps=eps, eps_mode=eps_mode,
                                  zero_channel=zero_channel, spatial=spatial)
        per_example = _mmd2(x, y, w, v, kernel=kernel, c=c, d=d, sigma2=_sigma2_tensor(sigma2, y),
                            teacher_term=teacher_term, uniform=zero_channel == "keep", gram=gram)
        factor = lam / 2.0 if half else lam
        return factor * reduce_batch(per_example, reduction)


_NST_LOSS_MULTI_TORCH = NST_LOSS_MULTI.derive("nst_loss_multi", knobs=_NST_LOSS_TORCH.knobs)


@_NST_LOSS_MULTI_TORCH.implement(TORCH)
def nst_loss_multi(students: list[torch.Tensor], teachers: list[torch.Tensor], weights: list[float] | None, *,
                   lam: float, kernel: str, c: float, d: int, teacher_term: bool, half: bool, reduction: str,
                   eps: float, eps_mode: str, zero_channel: str, spatial: str, gram: str) -> torch.Tensor:
    r"""NST at several layer pairs, :math:`\sum_j w_j\,\frac\lambda2\cdot\frac1N\sum_n
    \mathcal L_{\mathrm{MMD}^2}(\mathbf F^j_{T,n}, \mathbf F^j_{S,n})` by default.

    As :func:`kdref.reference.nst.nst_loss_multi`; ``students`` and ``teachers`` are lists of
    tensors, and ``gram`` chooses each pair's Gram form as in :func:`nst_loss`.

    Examples:
      >>> import torch
      >>> fs = torch.tensor([[[[1, 2], [0, -1]], [[0.5, 0], [1, 2]]],
      ...                    [[[0, 0], [3, 1]], [[2, -1], [0, 0.5]]]], dtype=torch.float64)
      >>> ft = torch.tensor([[[[2, 1], [0, 0]], [[1, 1], [1, 1]], [[0, -2], [1, 0.5]]],
      ...                    [[[1, 0], [2, 2]], [[0, 1], [0, 3]], [[-1, 0], [0.5, 1]]]], dtype=torch.float64)
      >>> print(f"{nst_loss_multi([fs, fs], [ft, ft], convention='kdzoo').item():.8g}")
      0.8716055
    """
    knobs = {"lam": lam, "kernel": kernel, "c": c, "d": d, "teacher_term": teacher_term, "half": half,
             "reduction": reduction, "eps": eps, "eps_mode": eps_mode, "zero_channel": zero_channel,
             "spatial": spatial, "gram": gram}
    weights = [1.0] * len(students) if weights is None else weights
    terms = [w * nst_loss(s, t, **knobs) for w, s, t in zip(weights, students, teachers, strict=True)]
    return torch.stack(terms).sum(dim=0)


@GAUSSIAN_SIGMA2_HEURISTIC.implement(TORCH)
def gaussian_sigma2_heuristic(student: torch.Tensor, teacher: torch.Tensor, *, eps: float, eps_mode: str,
                              zero_channel: str, spatial: str) -> torch.Tensor:
    r"""Per-example Gaussian bandwidth: the mean squared distance over the distinct pairs of the
    pooled normalised maps, **detached** (a constant for the loss).

    As :func:`kdref.reference.nst.gaussian_sigma2_heuristic`, computed without a pairwise matrix:
    :math:`\sum_{i<j}\lVert z_i-z_j\rVert^2 = K\sum_i\lVert z_i\rVert^2-\lVert\sum_iz_i\rVert^2` over
    the :math:`K` kept maps.

    Returns:
      ``[N]``, in the dtype of the loss's computation.

    Examples:
      >>> import torch
      >>> fs = torch.tensor([[[[1, 2], [0, -1]], [[0.5, 0], [1, 2]]],
      ...                    [[[0, 0], [3, 1]], [[2, -1], [0, 0.5]]]], dtype=torch.float64)
      >>> ft = torch.tensor([[[[2, 1], [0, 0]], [[1, 1], [1, 1]], [[0, -2], [1, 0.5]]],
      ...                    [[[1, 0], [2, 2]], [[0, 1], [0, 3]], [[-1, 0], [0.5, 1]]]], dtype=torch.float64)
      >>> sigma2 = gaussian_sigma2_heuristic(fs, ft)
      >>> print(", ".join(f"{v:.8g}" for v in sigma2.tolist()))
      1.6838507, 1.2964622
      >>> loss = nst_loss(fs, ft, kernel="gaussian", sigma2=sigma2, convention="kdzoo")
      >>> print(f"{loss.item():.8g}")
      0.22553064
    """
    dtype = accumulation_dtype(student)
    with torch.no_grad(), torch.autocast(device_type=student.device.type, enabled=False):
        x, w, y, v = _sample_sets(student.to(dtype), teacher.to(dtype), eps=eps, eps_mode=eps_mode,
                                  zero_channel=zero_channel, spatial=spatial)
        z, kept = torch.cat([x, y], dim=1), torch.cat([w, v], dim=1).gt(0).to(dtype)
        count = kept.sum(dim=1)
        total = count * _kept_squared_norms(z, kept) - _weighted_mean_map(z, kept).square().sum(dim=-1)
        pairs = count * (count - 1.0) / 2.0
        mean = torch.where(pairs > 0, total.clamp_min(0.0) / pairs.clamp_min(1.0), torch.zeros_like(total))
        return torch.where(mean > SIGMA2_DEGENERATE, mean, torch.ones_like(mean))


def _kept_squared_norms(z: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    r""":math:`\sum_i m_i\lVert z_i\rVert^2`, ``[N]``."""
    return (z.square().sum(dim=-1) * kept).sum(dim=-1)
