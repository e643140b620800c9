"""A registered-label weight that fades when the networks have outgrown the registered labels (no labels needed).

Early in training the branches agree with the registered labels more than with each other; once their
predictions on the unlabeled slices agree with each other more than with the registered labels, the
registered labels are probably the worse teacher (on the phantom, affine registered labels fell below the
networks' own pseudo-labels after ~100 iterations). The factor is

    min(1, mean Dice(branch, registered label) / Dice(branch A, branch B))

with both Dice values as running means over steps (slices without foreground are skipped), so w_rs fades
smoothly and never grows above its setting. A run with one branch has nothing to compare: factor 1.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from cctrnet.training.pseudo_label_quality import pseudo_label_dice


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
