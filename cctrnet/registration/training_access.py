"""What the trainer reads from the registration stage, for one labeled set.

``load_training_registration(folder, labeled_case_ids, method, configuration)`` returns a
:class:`TrainingRegistration` with

- ``selected_labeled[u]``: the BRS-selected labeled case for every unlabeled case u (None when all its
  candidate registrations failed: train u without RSL);
- ``registered_label(u)``: (z, y, x) int16 on u's preprocessed grid, the selected case's label warped by
  nearest neighbour, ``IGNORE_LABEL`` (-1) where the warp leaves the moving volume; cached on disk;
- ``point_mapper``: a :class:`~cctrnet.registration.point_mapping.PointMapper` (``map_points`` and
  ``map_points_to_many``).

Call ``run_registration_stage`` first (with the same labeled set) so the pairs exist; it computes only
missing ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from cctrnet.preprocessing.case_storage import list_preprocessed_cases
from cctrnet.registration import brs
from cctrnet.registration.label_fusion import FUSION_RULES, fuse_labels
from cctrnet.registration.pair_store import PairStore, registration_folder
from cctrnet.registration.point_mapping import PointMapper
from cctrnet.registration.settings import IGNORE_LABEL, RegistrationSettings

__all__ = ["IGNORE_LABEL", "TrainingRegistration", "load_training_registration"]


@dataclass
class TrainingRegistration:
    data_folder: Path
    store: PairStore
    selected_labeled: dict[str, str | None]
    point_mapper: PointMapper
    _labels: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    #: ``brs`` (the selected atlas alone), ``majority`` or ``unanimous`` (cctrnet.registration.label_fusion)
    fusion: str = "brs"
    labeled_cases: tuple[str, ...] = ()
    num_classes: int = 0

    def registered_label(self, unlabeled_case: str) -> np.ndarray | None:
        """(z, y, x) int16 registered label of an unlabeled case, or None when BRS found no candidate."""
        if unlabeled_case not in self.selected_labeled:
            raise KeyError(f"{unlabeled_case} is not an unlabeled case of this labeled set")
        labeled = self.selected_labeled[unlabeled_case]
        if labeled is None:
            return None
        if unlabeled_case not in self._labels:
            if self.fusion == "brs":
                label = brs.registered_label(self.data_folder, self.store, unlabeled_case, labeled)
            else:
                atlases = [q for q in self.labeled_cases if self.store.successful(q, unlabeled_case)]
                label = fuse_labels([brs.registered_label(self.data_folder, self.store, unlabeled_case, q)
                                     for q in atlases], self.fusion, self.num_classes)
            self._labels[unlabeled_case] = label
        return self._labels[unlabeled_case]


def load_training_registration(
    preprocessed_dataset_folder: Path,
    labeled_case_ids: Sequence[str],
    method: str = "affine",
    configuration: str = "2d",
    settings: RegistrationSettings | None = None,
    fusion: str = "brs",
    num_classes: int = 0,
) -> TrainingRegistration:
    """``fusion`` other than ``brs`` needs ``num_classes`` (background included)."""
    if fusion not in FUSION_RULES:
        raise ValueError(f"unknown label fusion rule '{fusion}'; choose from {', '.join(FUSION_RULES)}")
    if fusion != "brs" and num_classes < 2:
        raise ValueError(f"label fusion '{fusion}' needs the number of classes, got {num_classes}")
    settings = settings or RegistrationSettings()
    data_folder = Path(preprocessed_dataset_folder) / configuration
    store = PairStore(registration_folder(preprocessed_dataset_folder, configuration, method))
    cases = list_preprocessed_cases(data_folder)
    scores = brs.load_scores(store)
    labeled = sorted(labeled_case_ids)
    selected = {u: brs.select_labeled(scores, u, labeled, settings) for u in cases if u not in labeled}
    return TrainingRegistration(data_folder, store, selected, PointMapper(data_folder, store, settings, cases),
                                fusion=fusion, labeled_cases=tuple(labeled), num_classes=num_classes)
