"""Cases grouped into patients: the optional ``"patients"`` key of dataset.json.

``"patients": {"patient001": ["patient001_ED", "patient001_ES"], ...}`` says which cases are frames (or
time points, or views) of one patient. With it, ``cctr_train --labeled N`` counts patients and labels all
their cases, and the integrity check refuses a patient whose cases lie in two parts (imagesTr, imagesVal,
imagesTs), which would leak a training patient into the evaluation.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

PATIENTS_KEY = "patients"
CASE_FOLDERS = ("imagesTr", "imagesVal", "imagesTs")


def patients_problems(patients: Any, path: str | os.PathLike = "dataset.json") -> list[str]:
    """Problems of the ``"patients"`` value: an object of patient id -> non-empty list of case ids, no case
    listed twice."""
    example = '{"patient001": ["patient001_ED", "patient001_ES"]}'
    if not isinstance(patients, dict) or not patients:
        return [f'{path}: "{PATIENTS_KEY}" must be a non-empty object such as {example}, found {type(patients).__name__}']
    problems = []
    owner: dict[str, str] = {}
    for patient, cases in patients.items():
        if not patient or not isinstance(cases, list) or not cases or not all(isinstance(c, str) and c for c in cases):
            problems.append(f'{path}: "{PATIENTS_KEY}" entry {patient!r} must be a non-empty list of case ids, '
                            f"found {cases!r}")
            continue
        for case in cases:
            if case in owner:
                problems.append(f'{path}: case "{case}" belongs to patient "{owner[case]}" and to "{patient}" '
                                f'in "{PATIENTS_KEY}"')
            owner[case] = patient
    return problems


def patient_of_case(dataset_json: Mapping[str, Any]) -> dict[str, str] | None:
    """Case id -> patient id when dataset.json declares patients, else None."""
    patients = dataset_json.get(PATIENTS_KEY)
    if patients is None:
        return None
    return {case: patient for patient, cases in patients.items() for case in cases}


def patients_layout_problems(dataset_folder: Path, dataset_json: Mapping[str, Any],
                             cases_per_folder: Mapping[str, set[str]]) -> list[str]:
    """Problems between the declared patients and the case folders: a listed case without an image, a
    training case that belongs to no patient, a patient whose cases lie in more than one folder."""
    patient_of = patient_of_case(dataset_json)
    if patient_of is None:
        return []
    json_path = dataset_folder / "dataset.json"
    folder_of = {case: folder for folder, cases in cases_per_folder.items() for case in cases}
    problems = [f'{json_path}: "{PATIENTS_KEY}" lists case "{case}" (patient "{patient}") but no image of it is in '
                f"{' or '.join(CASE_FOLDERS)}" for case, patient in sorted(patient_of.items()) if case not in folder_of]
    orphans = sorted(cases_per_folder.get("imagesTr", set()) - set(patient_of))
    if orphans:
        problems.append(f'{json_path}: "{PATIENTS_KEY}" is declared but training case(s) {", ".join(orphans)} belong '
                        "to no patient (with --labeled N counting patients, every training case needs one)")
    for patient, cases in sorted(dataset_json[PATIENTS_KEY].items()):
        folders = sorted({folder_of[c] for c in cases if c in folder_of})
        if len(folders) > 1:
            problems.append(f'{json_path}: patient "{patient}" has cases in {" and ".join(folders)}; all cases of a '
                            "patient must be in one part, or the evaluation sees a training patient")
    return problems
