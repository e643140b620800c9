"""A registered-label weight that fades when the networks have outgrown the registered labels (no labels needed).

Early in training the branches agree with the registered labels more than with each other; once their
predictions on the unlabeled slices agree with each other more than with the registered labels, the
registered labels are probably the worse teacher (on the phantom, affine registered labels fell below the
networks' own pseudo-labels after ~100 iterations). The factor is

    min(1, mean Dice(branch, registered label) / Dice(branch A, branch B))

with both Dice values as running means over steps (slices without foreground are skipped), so w_rs fades
smoothly and never grows above its setting. A run with one branch has nothing to compare: factor 1.

Measured on the slices RSL trains on, the first Dice is biased upwards: the branches are taught those very
labels, so their agreement with them measures how much was learned rather than how right the labels are (on
the ACDC-like population the factor stayed at 0.76-0.86 while RSL lowered the test Dice by 13 points,
documentation/benchmarks.md). With a hold-out fraction, a few unlabeled volumes keep their registered labels
out of L_rs and serve only this measurement: their registration errors are their own, so the branches cannot
have learned them.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from cctrnet.training.pseudo_label_quality import pseudo_label_dice


def held_out_cases(unlabeled_cases: Sequence[str], fraction: float, seed: int) -> list[str]:
    """The unlabeled cases whose registered labels only measure the fade (sorted; deterministic from ``seed``).

    ``fraction`` of them, rounded, at least one when the fraction is positive, and never all: RSL keeps at
    least one volume to learn from. Fewer than two unlabeled cases: none held out.
    """
    ordered = sorted(unlabeled_cases)
    if fraction <= 0.0 or len(ordered) < 2:
        return []
    count = min(len(ordered) - 1, max(1, round(fraction * len(ordered))))
    chosen = np.random.default_rng(seed).permutation(len(ordered))[:count]
    return sorted(ordered[i] for i in chosen)


class RegisteredLabelFade:
    def __init__(self, num_classes: int, momentum: float):
        self.num_classes = num_classes
        self.momentum = momentum
        self.with_registered: float | None = None  # running mean Dice of the branches with the registered labels
        self.between_branches: float | None = None  # running mean Dice between the two branches

    def _running(self, previous: float | None, value: float) -> float | None:
        if not math.isfinite(value):
            return previous
        return value if previous is None else self.momentum * previous + (1.0 - self.momentum) * value

    @torch.no_grad()
    def update(self, predictions: Sequence[torch.Tensor], registered_labels: torch.Tensor) -> float:
        """The factor after this step's argmax predictions (one per branch) on the unlabeled slices."""
        if len(predictions) < 2:
            return 1.0
        with_registered = [pseudo_label_dice(p, registered_labels, self.num_classes) for p in predictions]
        finite = [d for d in with_registered if math.isfinite(d)]
        if finite:
            self.with_registered = self._running(self.with_registered, sum(finite) / len(finite))
        self.between_branches = self._running(
            self.between_branches, pseudo_label_dice(predictions[0], predictions[1], self.num_classes))
        return self.factor

    @property
    def factor(self) -> float:
        if self.with_registered is None or not self.between_branches:
            return 1.0
        return min(1.0, self.with_registered / self.between_branches)

    def state_dict(self) -> dict[str, float | None]:
        return {"with_registered": self.with_registered, "between_branches": self.between_branches}

    def load_state_dict(self, state: dict[str, float | None]) -> None:
        self.with_registered = state.get("with_registered")
        self.between_branches = state.get("between_branches")
