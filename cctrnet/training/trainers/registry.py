"""Registry of trainers. Names and descriptions are plain data so ``cctr_train --help`` imports no torch."""
from __future__ import annotations

import importlib

_TRAINERS = {
    "CCTRTrainer": ("cctrnet.training.trainers.cross_teaching",
                    "CCT-R: cross teaching + registration supervision (RSL, BRS) + contrastive learning with REPS"),
    "CTSTrainer": ("cctrnet.training.trainers.cross_teaching",
                   "cross teaching between a CNN and a network of another family (CTS)"),
    "CPSTrainer": ("cctrnet.training.trainers.cross_teaching",
                   "cross pseudo supervision between two CNNs of the same architecture (CPS)"),
    "LabeledOnlyTrainer": ("cctrnet.training.trainers.cross_teaching",
                           "branch A on labeled slices only (LS; with all labels: fully supervised, FS)"),
    "UAMTTrainer": ("cctrnet.training.trainers.mean_teacher",
                    "uncertainty-aware mean teacher on branch A (UAMT)"),
}
TRAINER_DESCRIPTIONS = {name: description for name, (_, description) in _TRAINERS.items()}


def trainer_names() -> list[str]:
    return list(_TRAINERS)


def get_trainer_class(name: str):
    if name not in _TRAINERS:
        raise ValueError(f"unknown trainer {name!r}; available: {', '.join(_TRAINERS)}")
    return getattr(importlib.import_module(_TRAINERS[name][0]), name)
