"""The losses an experiment combines: CE, Hinton KD, learning without forgetting, Barlow Twins."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)


def kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor | None,
    targets: torch.Tensor,
    alpha: float,
    temperature: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, kd, ce): ``alpha·T²·KL(teacher_T ‖ student_T) + (1 − alpha)·CE`` per photo.

    With ``alpha`` 0 or no teacher it is plain CE. Photos whose teacher row is NaN (not
    covered by the teacher) get CE only.
    """
    ce_each = F.cross_entropy(student, targets, label_smoothing=label_smoothing, reduction="none")
    ce = ce_each.mean()
    if alpha == 0 or teacher is None:
        return ce, torch.zeros(()), ce
    covered = ~torch.isnan(teacher).any(dim=1)
    if not covered.any():
        return ce, torch.zeros(()), ce
    log_t = F.log_softmax(teacher[covered] / temperature, dim=1)
    log_s = F.log_softmax(student[covered] / temperature, dim=1)
    kd_each = (log_t.exp() * (log_t - log_s)).sum(dim=1) * temperature**2
    total = ce_each.clone()
    total[covered] = alpha * kd_each + (1 - alpha) * ce_each[covered]
    return total.mean(), kd_each.mean(), ce


def lwf_loss(imagenet: torch.Tensor, original: torch.Tensor, temperature: float) -> torch.Tensor:
    """T²·KL(original ImageNet distribution ‖ the network's): keeps the open-set head valid."""
    log_p = F.log_softmax(imagenet.float() / temperature, dim=1)
    log_q = F.log_softmax(original.float() / temperature, dim=1)
    return F.kl_div(log_p, log_q, log_target=True, reduction="batchmean") * temperature**2
