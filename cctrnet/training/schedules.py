"""Schedules of the trainer as pure functions of the iteration: checkpointing the iteration restores them.

- CPS weight, a Gaussian warm-up over the whole run: ``w(i) = w_max * exp(-k * (1 - i / i_total)^2)``
  with ``w_max = 0.1`` and ``k = 5`` (METHOD.md §2).
- Learning rate, polynomial decay: ``lr(i) = lr_0 * (1 - i / i_total)^0.9``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def _progress(iteration: int, total_iterations: int) -> float:
    """iteration / total_iterations, clipped to [0, 1]."""
    if total_iterations <= 0:
        raise ValueError(f"total_iterations must be positive, got {total_iterations}")
    return min(max(iteration / total_iterations, 0.0), 1.0)


def gaussian_warmup_weight(iteration: int, total_iterations: int, max_weight: float = 0.1, sharpness: float = 5.0) -> float:
    """max_weight * exp(-sharpness * (1 - i / total)^2); reaches max_weight at the last iteration."""
    remaining = 1.0 - _progress(iteration, total_iterations)
    return max_weight * math.exp(-sharpness * remaining * remaining)


def poly_learning_rate(iteration: int, total_iterations: int, initial_lr: float, power: float = 0.9) -> float:
    """initial_lr * (1 - i / total)^power; 0 from the last iteration on."""
    return initial_lr * (1.0 - _progress(iteration, total_iterations)) ** power


@dataclass(frozen=True)
class GaussianWarmupSchedule:
    """Weight of a loss term (default: the CPS weight) as a function of the iteration."""

    total_iterations: int
    max_weight: float = 0.1
    sharpness: float = 5.0

    def __call__(self, iteration: int) -> float:
        return gaussian_warmup_weight(iteration, self.total_iterations, self.max_weight, self.sharpness)


@dataclass(frozen=True)
class PolyLearningRateSchedule:
    initial_lr: float
    total_iterations: int
    power: float = 0.9

    def __call__(self, iteration: int) -> float:
        return poly_learning_rate(iteration, self.total_iterations, self.initial_lr, self.power)

    def apply(self, optimizer: torch.optim.Optimizer, iteration: int) -> float:
        """Set every parameter group's lr for this iteration; returns the lr."""
        learning_rate = self(iteration)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate
        return learning_rate
