"""Registration supervision loss, RSL (paper Eq. 7-8): Dice + CE against labels warped from a labeled volume.

The registered label map of an unlabeled slice marks the voxels that the warp leaves undefined (outside
the moving volume) with ``ignore_index``; they count in neither the Dice nor the CE term. A slice with no
usable registration is passed entirely as ``ignore_index`` and contributes nothing.
"""
from __future__ import annotations

import torch

from cctrnet.training.losses.dice_ce import IGNORE_INDEX, BatchSum, DiceSettings, dice_ce_loss


def registration_supervision_loss(
    unlabeled_logits: torch.Tensor,
    registered_labels: torch.Tensor,
    settings: DiceSettings = DiceSettings(),
    ignore_index: int = IGNORE_INDEX,
    batch_sum: BatchSum | None = None,
) -> torch.Tensor:
    """L_rs for one branch: logits (b, c, h, w) of unlabeled slices, registered labels (b, h, w)."""
    return dice_ce_loss(unlabeled_logits, registered_labels, settings, ignore_index, batch_sum)
