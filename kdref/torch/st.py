r"""ST — soft targets (Hinton et al., 2015), PyTorch.

Computes the same functions as :mod:`kdref.reference.st` (proven by the test harness) with the
same conventions. Log-probabilities come from ``log_softmax`` (log-sum-exp), the teacher is
detached (a constant target, as in every reference implementation), half-precision inputs are
computed in float32, and nothing loops over the batch.
"""

from __future__ import annotations

import torch

from kdref.reference.st import DIRECT_UP_TO, HINTON_KD_OBJECTIVE, SOFT_TARGET_LOSS, TORCHDISTILL_KD_LOSS
from kdref.torch._common import TORCH, accumulation_dtype

__all__ = ["hinton_kd_objective", "soft_target_loss", "torchdistill_kd_loss"]


def _logit_pair(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both in the accumulation dtype, the teacher detached (a constant target)."""
    dtype = accumulation_dtype(student)
    return student.to(dtype), teacher.detach().to(dtype)


def _exp_remainder_ratio(d: torch.Tensor) -> torch.Tensor:
    r""":math:`(e^\delta - 1 - \delta)/\delta^2`: as :func:`kdref.reference.st.exp_remainder_ratio`."""
    small = d.abs() < 1e-2
    safe = torch.where(small, torch.ones_like(d), d)
    series = 1 / 2 + d * (1 / 6 + d * (1 / 24 + d * (1 / 120 + d * (1 / 720 + d / 5040))))
    return torch.where(small, series, (torch.expm1(safe) - safe) / safe**2)


def _scaled_kl_per_sample(student: torch.Tensor, teacher: torch.Tensor, T: float,
                          temperature_squared: bool = True) -> torch.Tensor:
    r""":math:`T^2\,\mathrm{KL}(p\Vert q)` per sample (the KL alone without ``temperature_squared``):
    up to :data:`kdref.reference.st.DIRECT_UP_TO`, the direct form (one fused ``kl_div``); above it, the series form of
    :func:`kdref.reference.st.scaled_kl_per_sample` where the centred log-ratios are small (the
    direct form would cancel), the direct form where they are not."""
    log_q = torch.log_softmax(student / T, dim=-1)
    log_p = torch.log_softmax(teacher / T, dim=-1)
    direct = torch.nn.functional.kl_div(log_q, log_p, reduction="none", log_target=True).sum(dim=-1)
    if T <= DIRECT_UP_TO:  # the series form costs several times the direct one
        return direct * T * T if temperature_squared else direct
    q = log_q.exp()
    u = teacher - student
    for _ in range(2):
        u = u - (q * u).sum(dim=-1, keepdim=True)
    d = u / T
    noise = torch.finfo(u.dtype).eps * (1.0 + (teacher - student).abs().amax(dim=-1))
    series = (d.abs().amax(dim=-1) <= 30.0) & (T >= 1e6 * noise)
    # rows beyond the bound take the direct form; zeros keep their series form finite (no NaN gradient)
    u = torch.where(series[:, None], u, torch.zeros_like(u))
    d = u / T
    h = _exp_remainder_ratio(d)
    t2_a = (q * u * u * h).sum(dim=-1)
    a = t2_a / T / T
    tiny = a < 1e-8
    log1p_ratio = torch.where(tiny, 1 - a / 2, torch.log1p(a) / torch.where(tiny, torch.ones_like(a), a))
    scaled = (q * u * u * (1 + d * h)).sum(dim=-1) / (1 + a) - t2_a * log1p_ratio
    if temperature_squared:
        return torch.where(series, scaled, direct * T * T)
    return torch.where(series, scaled / T / T, direct)


def _scaled_soft_per_sample(student: torch.Tensor, teacher: torch.Tensor, T: float, divergence: str) -> torch.Tensor:
    r""":math:`T^2\,\mathrm{KL}(p\Vert q)` or :math:`T^2\,\mathcal H(p, q) = T^2\,\mathrm{KL} + T^2\,\mathcal H(p)`
    per sample."""
    scaled = _scaled_kl_per_sample(student, teacher, T)
    return scaled if divergence == "kl" else scaled + _entropy(teacher, T) * T * T


def _entropy(teacher: torch.Tensor, T: float) -> torch.Tensor:
    r"""The teacher's softened entropy :math:`\mathcal H(p)` per sample."""
    log_p = torch.log_softmax(teacher / T, dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)


def _reduce_soft(per_sample: torch.Tensor, reduction: str, num_classes: int) -> torch.Tensor:
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "mean":
        return per_sample.sum() / (per_sample.numel() * num_classes)
    return per_sample.mean()


def _hard_ce_per_sample(student: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return -torch.log_softmax(student, dim=-1).gather(-1, labels[:, None]).squeeze(-1)


@SOFT_TARGET_LOSS.implement(TORCH)
def soft_target_loss(student: torch.Tensor, teacher: torch.Tensor, T: float, *, divergence: str,
                     temperature_squared: bool, reduction: str) -> torch.Tensor:
    r"""Soft-target distillation loss, :math:`T^2\cdot\frac1N\sum_n \mathrm{KL}(p_n^{(T)}\Vert q_n^{(T)})` by default.

    Arguments, conventions and result as :func:`kdref.reference.st.soft_target_loss`; inputs are
    tensors ``[N, C]`` on one device, and the result is a 0-d tensor (``[N]`` for ``"none"``).

    Examples:
      >>> import torch
      >>> s = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]], dtype=torch.float64)
      >>> t = torch.tensor([[1.5, 1.0, 2.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
      >>> print(f"{soft_target_loss(s, t, T=4.0).item():.8g}")
      0.28855901
      >>> print(f"{soft_target_loss(s, t, T=4.0, convention='kl').item():.8g}")
      0.018034938
    """
    student, teacher = _logit_pair(student, teacher)
    per_sample = _scaled_kl_per_sample(student, teacher, T, temperature_squared)
    if divergence == "ce":
        entropy = _entropy(teacher, T)
        per_sample = per_sample + (entropy * T * T if temperature_squared else entropy)
    return _reduce_soft(per_sample, reduction, student.shape[1])


@HINTON_KD_OBJECTIVE.implement(TORCH)
def hinton_kd_objective(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, T: float,
                        soft_weight: float, hard_weight: float, *, divergence: str, reduction: str) -> torch.Tensor:
    r""":math:`w_{\text{soft}}T^2\mathcal H(p^{(T)}, q^{(T)}) + w_{\text{hard}}\,\mathrm{CE}(y, q^{(1)})`, reduced.

    As :func:`kdref.reference.st.hinton_kd_objective`.

    Examples:
      >>> import torch
      >>> s = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]], dtype=torch.float64)
      >>> t = torch.tensor([[1.5, 1.0, 2.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
      >>> y = torch.tensor([2, 0])
      >>> loss = hinton_kd_objective(s, t, y, T=4.0, soft_weight=1.0, hard_weight=0.5, convention="kl")
      >>> print(f"{loss.item():.8g}")
      0.82578832
    """
    student, teacher = _logit_pair(student, teacher)
    soft = _scaled_soft_per_sample(student, teacher, T, divergence)
    per_sample = soft_weight * soft + hard_weight * _hard_ce_per_sample(student, labels)
    if reduction == "none":
        return per_sample
    return per_sample.sum() if reduction == "sum" else per_sample.mean()


@TORCHDISTILL_KD_LOSS.implement(TORCH)
def torchdistill_kd_loss(student: torch.Tensor, teacher: torch.Tensor, T: float, labels: torch.Tensor | None,
                         alpha: float | None, beta: float | None, *, reduction: str) -> torch.Tensor:
    r"""torchdistill's ``KDLoss``: :math:`\alpha\,\mathrm{CE} + \beta T^2\mathrm{KL}`, or KL alone without :math:`T^2`.

    As :func:`kdref.reference.st.torchdistill_kd_loss`.
    """
    student, teacher = _logit_pair(student, teacher)
    if alpha is None or alpha == 0 or labels is None:
        return _reduce_soft(_scaled_kl_per_sample(student, teacher, T, False), reduction, student.shape[1])
    scaled_kl = _reduce_soft(_scaled_kl_per_sample(student, teacher, T), reduction, student.shape[1])
    beta = 1.0 - alpha if beta is None else beta
    hard = _hard_ce_per_sample(student, labels)
    hard = hard.sum() if reduction == "sum" else hard.mean()
    return alpha * hard + beta * scaled_kl

