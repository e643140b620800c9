"""Registered labels from several atlases: one label map per unlabeled volume from every labeled case whose
registration onto it succeeded.

The paper uses one atlas per unlabeled volume, the one best registration selection (BRS) picks. With two or
more labeled cases (one labeled ACDC patient already gives two frames) the other atlases carry information
BRS throws away. The rules, each a setting of the trainer (``rsl_fusion``):

- ``brs``: the BRS-selected atlas alone (the paper);
- ``majority``: per voxel, the label most atlases give; a tie between labels, or no atlas covering the voxel,
  is ``IGNORE_LABEL``;
- ``unanimous``: per voxel, the label when every atlas covering it gives that label, else ``IGNORE_LABEL``
  (registered-label voxels where the atlases disagree are left out of the loss).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from cctrnet.registration.settings import FUSION_RULES, IGNORE_LABEL

__all__ = ["FUSION_RULES", "fuse_labels"]


def fuse_labels(warped_labels: Sequence[np.ndarray], rule: str, num_classes: int) -> np.ndarray:
    """One (z, y, x) int16 label map from the atlases' warped labels (same grid, ``IGNORE_LABEL`` outside)."""
    if rule not in ("majority", "unanimous"):
        raise ValueError(f"unknown label fusion rule '{rule}'; choose from {', '.join(FUSION_RULES)}")
    if not warped_labels:
        raise ValueError("label fusion needs at least one warped label")
    stack = np.stack([np.asarray(w) for w in warped_labels])
    votes = np.stack([(stack == c).sum(axis=0) for c in range(num_classes)])  # (classes, z, y, x)
    covering = (stack != IGNORE_LABEL).sum(axis=0)
    winner = votes.argmax(axis=0)
    best = votes.max(axis=0)
    if rule == "majority":
        tied = (votes == best[None]).sum(axis=0) > 1
        keep = (covering > 0) & ~tied
    else:
        keep = (covering > 0) & (best == covering)
    return np.where(keep, winner, IGNORE_LABEL).astype(np.int16)
