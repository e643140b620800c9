"""Soft Dice and cross-entropy on logits with an integer target (paper Eq. 1), with an ignored label value.

Conventions follow the SSL4MIS code that CTS and MCSC build on: softmax probabilities, one Dice per class
computed over the whole batch ("batch Dice"), background included, squared terms in the denominator,
smoothing 1e-5, mean over classes. Each is a setting of :class:`DiceSettings`.

``batch_sum`` (data-parallel training) sums a per-process statistic over the processes, keeping the
gradient of this process's share; the losses then equal those of the whole global batch in one process.
None: this process's batch is the whole batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

IGNORE_INDEX = -1
BatchSum = Callable[[torch.Tensor], torch.Tensor]


def _identity(value: torch.Tensor) -> torch.Tensor:
    return value


@dataclass(frozen=True)
class DiceSettings:
    smooth: float = 1e-5
    include_background: bool = True
    batch_dice: bool = True  # one Dice per class over the batch; False: per sample, then averaged
    squared_denominator: bool = True  # sum(p^2) + sum(y^2) as in SSL4MIS; False: sum(p) + sum(y)


def check_logits_and_target(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> None:
    """Raise ValueError unless target is an integer map (b, *spatial) with values in [0, c) or ignore_index."""
    if logits.ndim < 3:
        raise ValueError(f"logits must be (b, c, *spatial), got shape {tuple(logits.shape)}")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(f"target must have shape {expected} for logits {tuple(logits.shape)}, got {tuple(target.shape)}")
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}")
    n_classes = logits.shape[1]
    bad = (target != ignore_index) & ((target < 0) | (target >= n_classes))
    if bool(bad.any()):
        found = torch.unique(target[bad]).tolist()
        raise ValueError(f"target holds values {found} outside [0, {n_classes}) and not ignore_index={ignore_index}")


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    settings: DiceSettings = DiceSettings(),
    ignore_index: int = IGNORE_INDEX,
    batch_sum: BatchSum | None = None,
) -> torch.Tensor:
    """1 - mean soft Dice over classes; pixels whose target is ignore_index count in neither term."""
    check_logits_and_target(logits, target, ignore_index)
    batch_sum = batch_sum or _identity
    n_classes = logits.shape[1]
    probabilities = torch.softmax(logits, dim=1)
    valid = (target != ignore_index).unsqueeze(1).to(probabilities.dtype)
    target_one_hot = F.one_hot(torch.where(target == ignore_index, 0, target).long(), n_classes)
    target_one_hot = target_one_hot.movedim(-1, 1).to(probabilities.dtype) * valid
    probabilities = probabilities * valid

    spatial_dims = tuple(range(2, logits.ndim))
    reduce_dims = (0, *spatial_dims) if settings.batch_dice else spatial_dims
    intersection = (probabilities * target_one_hot).sum(reduce_dims)
    if settings.squared_denominator:
        denominator = (probabilities * probabilities).sum(reduce_dims) + target_one_hot.sum(reduce_dims)
    else:
        denominator = probabilities.sum(reduce_dims) + target_one_hot.sum(reduce_dims)
    if settings.batch_dice:  # one Dice per class over the whole (global) batch
        intersection, denominator = batch_sum(intersection), batch_sum(denominator)
    dice = (2.0 * intersection + settings.smooth) / (denominator + settings.smooth)
    if not settings.include_background:
        dice = dice[..., 1:]
    if settings.batch_dice:
        return 1.0 - dice.mean()
    # per sample: the mean over the samples of the global batch, then over the classes
    n_samples = batch_sum(dice.new_tensor(float(dice.shape[0])))
    return 1.0 - (batch_sum(dice.sum(0)) / n_samples).mean()


def cross_entropy_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                       batch_sum: BatchSum | None = None) -> torch.Tensor:
    """Mean cross-entropy over the pixels whose target is not ignore_index (0 when there are none)."""
    check_logits_and_target(logits, target, ignore_index)
    if batch_sum is None:
        if not bool((target != ignore_index).any()):
            return logits.sum() * 0.0  # keeps the graph and the device; F.cross_entropy would return nan
        return F.cross_entropy(logits, target.long(), ignore_index=ignore_index)
    # the global mean: this process's sum over the pixel count of the whole batch
    local_sum = F.cross_entropy(logits, target.long(), ignore_index=ignore_index, reduction="sum")
    count = batch_sum((target != ignore_index).sum().to(logits.dtype))
    return batch_sum(local_sum) / count.clamp(min=1.0)


def dice_ce_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    settings: DiceSettings = DiceSettings(),
    ignore_index: int = IGNORE_INDEX,
    batch_sum: BatchSum | None = None,
) -> torch.Tensor:
    """Dice + CE with weight 1 each (paper Eq. 1; SSL4MIS's CTS script halves the sum, the paper does not)."""
    return (soft_dice_loss(logits, target, settings, ignore_index, batch_sum)
            + cross_entropy_loss(logits, target, ignore_index, batch_sum))
