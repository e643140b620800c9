"""Everything a training run is set up from: the dataset's preprocessed files and which cases are labeled.

Reads only the previous stages' files: ``plans.json``, ``dataset.json`` and the preprocessed cases.
Labeled cases are chosen by :func:`cctrnet.dataset.labeled_selection.select_labeled_cases` (or named
with ``--labeled-cases``); every other training case is unlabeled for the run. When dataset.json declares
patients, ``--labeled N`` counts patients and labels all their cases. Cases whose labels are
hidden by ``--labeled N`` keep their truth available for *reporting* pseudo-label quality only.

The validation set (:mod:`cctrnet.training.validation_split`): the dataset's preprocessed ``imagesVal``, or with
``--val-fraction``/``--val-cases`` a held-out part of the run's labeled cases, which then leaves the run
entirely (not in ``labeled_cases``, ``unlabeled_cases`` or ``all_cases``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from cctrnet import paths
from cctrnet.dataset.labeled_selection import describe_labeled_cases, select_labeled_cases
from cctrnet.dataset.patients import patient_of_case
from cctrnet.dataset.raw_dataset import DatasetNotFoundError, find_dataset_folder
from cctrnet.preprocessing.case_storage import list_preprocessed_cases, load_properties
from cctrnet.training.validation_split import SOURCE_HELD_OUT, ValidationSplit, choose_validation
from cctrnet.utilities.file_io import load_json


class RunSetupError(RuntimeError):
    """The run cannot start; the message says what is missing and which command makes it."""


@dataclass
class RunSetup:
    dataset_name: str
    preprocessed_dataset_folder: Path
    plans: dict[str, Any]
    dataset_json: dict[str, Any]
    all_cases: list[str]  # sorted; position = volume index
    labeled_cases: list[str]
    unlabeled_cases: list[str]
    hidden_label_cases: list[str]  # unlabeled for training, truth known (simulated semi-supervision)
    volume_shapes_zyx: list[list[int]]
    labeled_patients: list[str] | None = None  # when dataset.json declares patients
    validation: ValidationSplit = field(default_factory=ValidationSplit)

    @property
    def num_labeled(self) -> int:
        """What ``--labeled N`` counts: patients when the dataset declares them, else cases (the run folder's N)."""
        return len(self.labeled_patients) if self.labeled_patients is not None else len(self.labeled_cases)

    @property
    def configuration(self) -> dict[str, Any]:
        return self.plans["configurations"]["2d"]

    @property
    def data_folder(self) -> Path:
        return self.preprocessed_dataset_folder / self.configuration["data_identifier"]

    @property
    def num_classes(self) -> int:
        return len(self.dataset_json["labels"])

    @property
    def num_input_channels(self) -> int:
        return len(self.dataset_json["channel_names"])

    def volume_index(self, case_id: str) -> int:
        return self.all_cases.index(case_id)


def run_folder_name(trainer_name: str, num_labeled: int, seed: int) -> str:
    return f"{trainer_name}__labeled{num_labeled}__seed{seed}"


def prepare_run(dataset_identifier: str, num_labeled: int | None = None,
                labeled_cases: Sequence[str] | None = None, seed: int = 0, val_fraction: float | None = None,
                val_cases: Sequence[str] | None = None) -> RunSetup:
    """Resolve the dataset's preprocessed folder, the run's labeled and unlabeled cases and its validation set."""
    root = paths.preprocessed_folder()
    try:
        folder = find_dataset_folder(dataset_identifier, root)
    except DatasetNotFoundError as error:
        raise RunSetupError(f"{error}\n  (run cctr_plan_and_preprocess -d {dataset_identifier} first)") from None
    plans_path = folder / paths.PLANS_JSON
    if not plans_path.exists():
        raise RunSetupError(f"{plans_path}: missing; run cctr_plan_and_preprocess -d {dataset_identifier}")
    plans = load_json(plans_path)
    dataset_json = load_json(folder / paths.DATASET_JSON)
    data_folder = folder / plans["configurations"]["2d"]["data_identifier"]
    cases = list_preprocessed_cases(data_folder)
    if not cases:
        raise RunSetupError(f"{data_folder}: no preprocessed case; run cctr_plan_and_preprocess -d {dataset_identifier}")
    properties = {c: load_properties(data_folder, c) for c in cases}
    with_labels = [c for c in cases if properties[c].get("is_labeled")]
    patients = patient_of_case(dataset_json)
    if labeled_cases:
        unknown = sorted(set(labeled_cases) - set(with_labels))
        if unknown:
            raise RunSetupError(f"--labeled-cases {', '.join(unknown)}: not labeled cases of {folder.name} "
                                f"(labeled: {', '.join(with_labels)})")
        labeled = sorted(set(labeled_cases))
    else:
        try:
            labeled = select_labeled_cases(with_labels, num_labeled, seed, patients)
        except ValueError as error:
            raise RunSetupError(str(error)) from None
        if num_labeled is not None:
            print(f"--labeled {num_labeled} (seed {seed}): {describe_labeled_cases(labeled, patients)}")
    try:
        validation = choose_validation(folder, plans["configurations"]["2d"]["data_identifier"], labeled, patients,
                                       seed, val_fraction, val_cases, dataset_json)
    except ValueError as error:
        raise RunSetupError(str(error)) from None
    held_out = set(validation.cases) if validation.source == SOURCE_HELD_OUT else set()
    labeled = [c for c in labeled if c not in held_out]
    cases = [c for c in cases if c not in held_out]  # held-out cases leave the run: no slice of them is seen
    unlabeled = [c for c in cases if c not in labeled]
    return RunSetup(
        dataset_name=folder.name, preprocessed_dataset_folder=folder, plans=plans, dataset_json=dataset_json,
        all_cases=cases, labeled_cases=labeled, unlabeled_cases=unlabeled,
        hidden_label_cases=[c for c in unlabeled if c in with_labels],
        volume_shapes_zyx=[properties[c]["geometry_preprocessed"]["shape_zyx"] for c in cases],
        validation=validation,
        labeled_patients=sorted({patients.get(c, c) for c in labeled}) if patients is not None else None,
    )
