"""Cross pseudo supervision (paper Eq. 2): each branch learns the other branch's argmax with a Dice loss."""
from __future__ import annotations

import torch

from cctrnet.training.losses.dice_ce import BatchSum, DiceSettings, soft_dice_loss


def pseudo_labels(logits: torch.Tensor) -> torch.Tensor:
    """Hard labels (b, *spatial) from logits (b, c, *spatial), cut from the graph."""
    return logits.detach().argmax(dim=1)


def cross_pseudo_supervision_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, settings: DiceSettings = DiceSettings(),
    batch_sum: BatchSum | None = None,
) -> torch.Tensor:
    """Dice of the student's unlabeled predictions against the teacher's argmax; no gradient reaches the teacher."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"both branches must predict the same shape, got {tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    return soft_dice_loss(student_logits, pseudo_labels(teacher_logits), settings, batch_sum=batch_sum)


def symmetric_cross_pseudo_supervision(
    logits_a: torch.Tensor, logits_b: torch.Tensor, settings: DiceSettings = DiceSettings()
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_cps(A), L_cps(B)): A taught by B's argmax and B taught by A's argmax."""
    return (
        cross_pseudo_supervision_loss(logits_a, logits_b, settings),
        cross_pseudo_supervision_loss(logits_b, logits_a, settings),
    )
