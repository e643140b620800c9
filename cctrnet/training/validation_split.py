"""The validation set of a run: the dataset's own ``imagesVal``, a held-out part of its labeled cases, or none.

Chosen from the preprocessed files only (the stage before training):

1. ``<configuration>_validation/`` exists (``cctr_plan_and_preprocess`` preprocessed ``imagesVal``/``labelsVal``
   into it): those cases. ``--val-fraction`` and ``--val-cases`` are refused, since they would take
   training labels for a validation set the dataset already has.
2. else ``--val-fraction F`` or ``--val-cases``: a held-out part of the run's labeled cases
   (:mod:`cctrnet.dataset.validation_selection`). **Held-out cases are not trained on at all**: not as labeled
   cases, not as unlabeled ones (no slices, no registered labels, no memory-bank entries), as in nnU-Net's folds; a
   case the network has seen, even without its label, would flatter the validation Dice.
3. else none: training says so (with 1-2 labeled cases there is nothing to hold out) and draws the
   registered-label agreement as an unsupervised proxy instead (:mod:`cctrnet.training.validation_curve`).

The model folder records the choice in ``validation_cases.json``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from cctrnet.dataset.validation_selection import (MIN_LABELED_UNITS_FOR_HOLD_OUT, VALIDATION_STREAM,
                                                  named_validation_cases, select_validation_cases)
from cctrnet.preprocessing.case_storage import list_preprocessed_cases, validation_folder_name

VALIDATION_CASES_JSON = "validation_cases.json"
SOURCE_IMAGES_VAL = "imagesVal"
SOURCE_HELD_OUT = "held_out"
SOURCE_NONE = "none"


@dataclass
class ValidationSplit:
    """Where a run's validation cases come from, their ids and the preprocessed folder that holds them."""

    source: str = SOURCE_NONE
    cases: list[str] = field(default_factory=list)
    data_folder: Path | None = None  # preprocessed cases (c, z, y, x) with their labels
    rule: dict[str, Any] = field(default_factory=dict)
    note: str = ""  # why there is none, when there is none

    @property
    def raw_parts(self) -> tuple[str, str]:
        """(images, labels) folders of the raw dataset that hold these cases."""
        return ("imagesVal", "labelsVal") if self.source == SOURCE_IMAGES_VAL else ("imagesTr", "labelsTr")

    def describe(self) -> str:
        if self.source == SOURCE_IMAGES_VAL:
            return f"validation: the dataset's imagesVal, {len(self.cases)} case(s) ({self.data_folder})"
        if self.source == SOURCE_HELD_OUT:
            return (f"validation: {len(self.cases)} labeled case(s) held out, not trained on at all: "
                    f"{', '.join(self.cases)}")
        return f"validation: none ({self.note})"

    def to_dict(self) -> dict[str, Any]:
        images, labels = self.raw_parts
        return {"source": self.source, "cases": list(self.cases),
                "preprocessed_folder": str(self.data_folder) if self.data_folder is not None else None,
                "raw_images": images if self.cases else None, "raw_labels": labels if self.cases else None,
                "rule": self.rule, "note": self.note,
                "trained_on": "no: held-out and imagesVal cases are neither labeled nor unlabeled training cases"}


def choose_validation(preprocessed_dataset_folder: Path, data_identifier: str, labeled_cases: Sequence[str],
                      patient_of_case: Mapping[str, str] | None, seed: int, val_fraction: float | None = None,
                      val_cases: Sequence[str] | None = None,
                      dataset_json: Mapping[str, Any] | None = None) -> ValidationSplit:
    """The run's validation split (see the module docstring); ValueError for a request that cannot be met."""
    folder = Path(preprocessed_dataset_folder) / validation_folder_name(data_identifier)
    own = list_preprocessed_cases(folder)
    asked = val_fraction is not None or bool(val_cases)
    if val_fraction is not None and val_cases:
        raise ValueError("give --val-fraction or --val-cases, not both")
    if own:
        if asked:
            raise ValueError(f"the dataset has its own validation set ({len(own)} imagesVal case(s), preprocessed in "
                             f"{folder}); --val-fraction/--val-cases would take training labels for another one. "
                             "Leave them out")
        return ValidationSplit(SOURCE_IMAGES_VAL, own, folder, {"source": "raw imagesVal/labelsVal"})
    if val_fraction is not None:
        cases = select_validation_cases(labeled_cases, val_fraction, seed, patient_of_case)
        rule = {"val_fraction": val_fraction, "seed": seed, "numpy_seed": [seed, VALIDATION_STREAM],
                "units": "patients" if patient_of_case is not None else "cases",
                "function": "cctrnet.dataset.validation_selection.select_validation_cases"}
        return ValidationSplit(SOURCE_HELD_OUT, cases, Path(preprocessed_dataset_folder) / data_identifier, rule)
    if val_cases:
        cases = named_validation_cases(labeled_cases, val_cases, patient_of_case)
        rule = {"val_cases": sorted(set(val_cases)), "widened_to_whole_patients": patient_of_case is not None}
        return ValidationSplit(SOURCE_HELD_OUT, cases, Path(preprocessed_dataset_folder) / data_identifier, rule)
    units = len({patient_of_case.get(c, c) for c in labeled_cases} if patient_of_case else set(labeled_cases))
    kind = "patients" if patient_of_case is not None else "cases"
    if units < MIN_LABELED_UNITS_FOR_HOLD_OUT:
        note = (f"nothing to validate on: no imagesVal, and {units} labeled {kind} are too few to hold any out "
                f"(at least {MIN_LABELED_UNITS_FOR_HOLD_OUT} are needed)")
    else:
        note = (f"no imagesVal and none held out; hold out part of the {units} labeled {kind} with --val-fraction F "
                "or --val-cases ID ...")
    declared = int((dataset_json or {}).get("numValidation") or 0)
    if declared:
        note += (f"; dataset.json declares {declared} validation case(s) but {folder} holds none: rerun "
                 "cctr_plan_and_preprocess to preprocess imagesVal")
    return ValidationSplit(SOURCE_NONE, [], None, {}, note)
