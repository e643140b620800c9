"""Trainers by name: ``cctr_train -tr NAME``. Baselines and ablations are settings of one trainer."""
from __future__ import annotations

from cctrnet.training.trainers.registry import TRAINER_DESCRIPTIONS, get_trainer_class, trainer_names

__all__ = ["TRAINER_DESCRIPTIONS", "get_trainer_class", "trainer_names"]
