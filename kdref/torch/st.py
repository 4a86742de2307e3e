r"""ST — soft targets (Hinton et al., 2015), PyTorch.

Computes the same functions as :mod:`kdref.reference.st` (proven by the test harness) with the
same conventions. Log-probabilities come from ``log_softmax`` (log-sum-exp), the teacher is
detached (a constant target, as in every reference implementation), half-precision inputs are
computed in float32, and nothing loops over the batch.
"""

from __future__ import annotations

import torch

from kdref._scalars import check_real, check_temperature
from kdref.reference.st import CONVENTIONS, HINTON_CONVENTIONS, TORCHDISTILL_CONVENTIONS
from kdref.torch._common import accumulation_dtype, check_float_tensor, check_labels, check_same_like

__all__ = ["hinton_kd_objective", "soft_target_loss", "torchdistill_kd_loss"]


def _check_logit_pair(student, teacher) -> tuple[torch.Tensor, torch.Tensor]:
    check_float_tensor("student", student, ndim=2)
    check_float_tensor("teacher", teacher, ndim=2)
    check_same_like("teacher", teacher, "student", student)
    dtype = accumulation_dtype(student)
    return student.to(dtype), teacher.detach().to(dtype)


def _soft_per_sample(student: torch.Tensor, teacher: torch.Tensor, T: float, divergence: str) -> torch.Tensor:
    """KL(p‖q) or H(p, q) per sample, from log-softmax of both at temperature T."""
    log_q = torch.log_softmax(student / T, dim=-1)
    log_p = torch.log_softmax(teacher / T, dim=-1)
    if divergence == "kl":  # one fused kernel for p·(log p − log q), forward and backward
        return torch.nn.functional.kl_div(log_q, log_p, reduction="none", log_target=True).sum(dim=-1)
    return -(log_p.exp() * log_q).sum(dim=-1)


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


def soft_target_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    T: float,
    *,
    convention: str | None = None,
    divergence: str | None = None,
    temperature_squared: bool | None = None,
    reduction: str | None = None,
) -> torch.Tensor:
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
    knobs = CONVENTIONS.resolve(
        convention, divergence=divergence, temperature_squared=temperature_squared, reduction=reduction
    )
    T = check_temperature(T)
    student, teacher = _check_logit_pair(student, teacher)
    per_sample = _soft_per_sample(student, teacher, T, knobs["divergence"])
    loss = _reduce_soft(per_sample, knobs["reduction"], student.shape[1])
    return loss * T**2 if knobs["temperature_squared"] else loss


def hinton_kd_objective(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    T: float,
    *,
    soft_weight: float,
    hard_weight: float,
    convention: str | None = None,
    divergence: str | None = None,
    reduction: str | None = None,
) -> torch.Tensor:
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
    knobs = HINTON_CONVENTIONS.resolve(convention, divergence=divergence, reduction=reduction)
    T = check_temperature(T)
    student, teacher = _check_logit_pair(student, teacher)
    labels = check_labels(labels, *student.shape, device=student.device)
    soft_weight = check_real("soft_weight", soft_weight, low=0.0)
    hard_weight = check_real("hard_weight", hard_weight, low=0.0)
    soft = _soft_per_sample(student, teacher, T, knobs["divergence"])
    per_sample = soft_weight * T**2 * soft + hard_weight * _hard_ce_per_sample(student, labels)
    if knobs["reduction"] == "none":
        return per_sample
    return per_sample.sum() if knobs["reduction"] == "sum" else per_sample.mean()


def torchdistill_kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    T: float,
    labels: torch.Tensor | None = None,
    *,
    alpha: float | None = None,
    beta: float | None = None,
    convention: str | None = None,
    reduction: str | None = None,
) -> torch.Tensor:
    r"""torchdistill's ``KDLoss``: :math:`\alpha\,\mathrm{CE} + \beta T^2\mathrm{KL}`, or KL alone without :math:`T^2`.

    As :func:`kdref.reference.st.torchdistill_kd_loss`.
    """
    knobs = TORCHDISTILL_CONVENTIONS.resolve(convention, reduction=reduction)
    T = check_temperature(T)
    student, teacher = _check_logit_pair(student, teacher)
    kl = _reduce_soft(_soft_per_sample(student, teacher, T, "kl"), knobs["reduction"], student.shape[1])
    alpha = None if alpha is None else check_real("alpha", alpha)
    beta = None if beta is None else check_real("beta", beta)
    if alpha is None or alpha == 0 or labels is None:
        return kl
    labels = check_labels(labels, *student.shape, device=student.device)
    beta = 1.0 - alpha if beta is None else beta
    hard = _hard_ce_per_sample(student, labels)
    hard = hard.sum() if knobs["reduction"] == "sum" else hard.mean()
    return alpha * hard + beta * T**2 * kl

