"""UAMT's consistency loss: the squared difference of student and teacher softmax where the teacher is certain.

    L = sum over certain pixels and classes of (p_student - p_teacher)^2 / (2 * certain pixels * classes)

The factor 2 and the mean over the certain pixels follow the UAMT reference formulation (a mean squared error
halved, over the masked pixels only); dividing by the classes makes it a per-element mean, so its scale does
not grow with the number of labels. With ``batch_sum`` (data-parallel training) both sums run over the global batch.
"""
from __future__ import annotations

from typing import Callable

import torch


def masked_consistency_loss(student_probabilities: torch.Tensor, teacher_probabilities: torch.Tensor,
                            certain: torch.Tensor,
                            batch_sum: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """(b, C, y, x) probabilities of both, ``certain`` (b, 1, y, x) in {0, 1}; a scalar (0 when nothing is certain)."""
    total_of = batch_sum or (lambda value: value)
    squared = (student_probabilities - teacher_probabilities) ** 2
    classes = squared.shape[1]
    return total_of((certain * squared).sum()) / (2 * total_of(certain.sum()) * classes + 1e-16)


def teacher_input_noise(images: torch.Tensor, std: float) -> torch.Tensor:
    """Gaussian noise of ``std`` clipped to +-2 std, added to the teacher's inputs."""
    return torch.clamp(torch.randn_like(images) * std, -2 * std, 2 * std)
