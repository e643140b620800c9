"""Dice of pseudo-labels against the hidden truth of simulated-unlabeled slices (reporting only, never a target)."""
from __future__ import annotations

import torch

IGNORE = -1


def pseudo_label_dice(prediction: torch.Tensor, truth: torch.Tensor, num_classes: int) -> float:
    """Mean Dice over foreground classes present in truth or prediction, on pixels where truth is known.

    Pixels where either map holds the ignore value (-1: padding or outside the warp) are left out. NaN
    when no foreground class appears at all.
    """
    valid = (truth != IGNORE) & (prediction != IGNORE)
    scores = []
    for c in range(1, num_classes):
        p = (prediction == c) & valid
        t = (truth == c) & valid
        denominator = int(p.sum() + t.sum())
        if denominator > 0:
            scores.append(2.0 * float((p & t).sum()) / denominator)
    return float(sum(scores) / len(scores)) if scores else float("nan")
