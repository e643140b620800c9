"""Schedules of the trainer as pure functions of the iteration: checkpointing the iteration restores them.

- CPS weight, a Gaussian warm-up over the whole run: ``w(i) = w_max * exp(-k * (1 - i / i_total)^2)``
  with ``w_max = 0.1`` and ``k = 5`` (METHOD.md §2).
- Learning rate, polynomial decay: ``lr(i) = lr_0 * (1 - i / i_total)^0.9``.
- Registered-label weight (beyond the paper; cosine to 0 by default since 2026-12-03): ``w_rs`` times a factor that falls from 1 to
  ``end`` over the run, linearly or along a half cosine (``rsl_decay``), so that registered labels shape the
  networks early and cross teaching, whose weight rises over the same run, has the unlabeled slices late.

:class:`ScheduleSpan` says which iterations both cover, also after a finished run was extended.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the schedules are plain arithmetic; importing torch would slow every command's start
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


DECAY_SHAPES = ("none", "linear", "cosine")


def decay_factor(progress: float, shape: str, end: float = 0.0) -> float:
    """1 at progress 0, ``end`` at progress 1 (and after), along ``shape``; always 1 for "none"."""
    if shape not in DECAY_SHAPES:
        raise ValueError(f"decay shape must be one of {', '.join(DECAY_SHAPES)}, got {shape!r}")
    if shape == "none":
        return 1.0
    progress = min(max(progress, 0.0), 1.0)
    falling = 1.0 - progress if shape == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return end + (1.0 - end) * falling


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


@dataclass(frozen=True)
class ScheduleSpan:
    """Which iterations the schedules of a run cover, so that extending a finished run is explicit.

    A new run: the Gaussian ramps (w_cps, UAMT's threshold) and the poly learning rate both run over
    ``[0, total_iterations]``. Extending a finished run to N (``cctr_train --extend-to N``) makes a new
    learning-rate segment: ``lr(i) = lr_0 * (1 - (i - i_0) / (N - i_0))^power`` from the finished length
    ``i_0`` (a warm restart at the initial rate, decaying to 0 at N), while the ramps keep the length they
    were warmed up over and hold their maximum, since their warm-up is over.
    """

    total_iterations: int
    warmup_iterations: int  # the ramps rise over [0, warmup_iterations], then hold at their maximum
    lr_segment_start: int = 0  # the poly decay runs over [lr_segment_start, total_iterations]

    @classmethod
    def for_new_run(cls, total_iterations: int) -> "ScheduleSpan":
        return cls(total_iterations, total_iterations, 0)

    def extended_to(self, total_iterations: int) -> "ScheduleSpan":
        """The span after extending this finished run to ``total_iterations``."""
        if total_iterations <= self.total_iterations:
            raise ValueError(f"an extension must go beyond {self.total_iterations} iterations, got {total_iterations}")
        return ScheduleSpan(total_iterations, self.warmup_iterations, self.total_iterations)

    def learning_rate(self, iteration: int, initial_lr: float, power: float = 0.9) -> float:
        return poly_learning_rate(iteration - self.lr_segment_start, self.total_iterations - self.lr_segment_start,
                                  initial_lr, power)

    def ramp_progress(self, iteration: int) -> float:
        """Fraction of the warm-up done at ``iteration``, in [0, 1]."""
        return _progress(iteration, self.warmup_iterations)

    def ramp_weight(self, iteration: int, max_weight: float = 0.1, sharpness: float = 5.0) -> float:
        return gaussian_warmup_weight(iteration, self.warmup_iterations, max_weight, sharpness)

    def to_dict(self) -> dict[str, int]:
        return {"total_iterations": self.total_iterations, "warmup_iterations": self.warmup_iterations,
                "lr_segment_start": self.lr_segment_start}

    @classmethod
    def from_dict(cls, values: dict[str, int]) -> "ScheduleSpan":
        return cls(int(values["total_iterations"]), int(values["warmup_iterations"]), int(values["lr_segment_start"]))
