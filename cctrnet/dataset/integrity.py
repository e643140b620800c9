"""Integrity check of a raw dataset, run before anything is written.

Every problem is collected (not just the first), each message naming the file it is about. The
per-case checks work on arrays already read, so the fingerprint pass reads each file once.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from cctrnet.dataset.dataset_json import dataset_json_problems
from cctrnet.dataset.geometry import Geometry
from cctrnet.dataset.patients import patients_layout_problems
from cctrnet.dataset.raw_dataset import RawCase
from cctrnet.utilities.file_io import load_json


class DatasetIntegrityError(ValueError):
    """The raw dataset has problems; ``problems`` lists every one of them."""

    def __init__(self, dataset_folder: Path, problems: Sequence[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"the raw dataset {dataset_folder} has {len(self.problems)} problem(s):\n{lines}")


def layout_problems(dataset_folder: Path) -> tuple[list[str], dict | None]:
    """Problems with dataset.json and the folder/file layout (no image is read)."""
    problems: list[str] = []
    json_path = dataset_folder / "dataset.json"
    content = None
    if not json_path.exists():
        problems.append(f"{json_path}: missing (every raw dataset needs a dataset.json)")
    else:
        try:
            content = load_json(json_path)
        except ValueError as error:
            problems.append(f"{json_path}: not valid JSON ({error})")
        except OSError as error:  # a folder of that name, no permission
            problems.append(f"{json_path}: cannot be read ({error.strerror or error})")
        else:
            json_problems = dataset_json_problems(content, json_path)
            problems.extend(json_problems)
            if json_problems:
                content = None
    images_tr = dataset_folder / "imagesTr"
    if not images_tr.is_dir():
        problems.append(f"{images_tr}: missing folder (training images go here)")
    if content is None or not images_tr.is_dir():
        return problems, None

    file_ending = content["file_ending"]
    num_channels = len(content["channel_names"])
    pattern = re.compile(r"^(.+)_(\d{4})" + re.escape(file_ending) + "$")
    cases_per_folder: dict[str, set[str]] = {}
    for sub in ("imagesTr", "imagesVal", "imagesTs"):
        folder = dataset_folder / sub
        if not folder.is_dir():
            continue
        channels: dict[str, set[int]] = {}
        for path in sorted(folder.iterdir()):
            if path.name.startswith("."):
                continue
            match = pattern.match(path.name)
            if not match:
                problems.append(
                    f"{path}: name does not follow {{case}}_{{channel:04d}}{file_ending} "
                    f"(file_ending in dataset.json is {file_ending!r})"
                )
                continue
            channels.setdefault(match.group(1), set()).add(int(match.group(2)))
        cases_per_folder[sub] = set(channels)
        for case_id, present in sorted(channels.items()):
            missing = sorted(set(range(num_channels)) - present)
            extra = sorted(present - set(range(num_channels)))
            if missing:
                names = ", ".join(f"{case_id}_{c:04d}{file_ending}" for c in missing)
                problems.append(f"{folder}: case {case_id} is missing channel file(s) {names}")
            if extra:
                names = ", ".join(f"{case_id}_{c:04d}{file_ending}" for c in extra)
                problems.append(f"{folder}: case {case_id} has channel file(s) {names} but dataset.json declares "
                                f"{num_channels} channel(s)")
        labels_folder = dataset_folder / sub.replace("images", "labels")
        if labels_folder.is_dir():
            for path in sorted(labels_folder.iterdir()):
                if path.name.startswith("."):
                    continue
                if not path.name.endswith(file_ending):
                    problems.append(f"{path}: label file does not end in {file_ending}")
                elif path.name[: -len(file_ending)] not in channels:
                    problems.append(f"{path}: label without an image in {folder}")
        if sub == "imagesVal":  # preprocessed as the validation set: each case needs its label
            unlabeled = [case for case in sorted(channels) if not (labels_folder / f"{case}{file_ending}").exists()]
            if unlabeled:
                problems.append(f"{labels_folder}: validation case(s) {', '.join(unlabeled)} of {folder} have no "
                                f"label file {{case}}{file_ending} (a validation case is evaluated against its label)")
        if sub == "imagesTr":
            if not channels:
                problems.append(f"{folder}: no training images named {{case}}_0000{file_ending}")
            elif content["numTraining"] != len(channels):
                problems.append(f"{dataset_folder / 'dataset.json'}: numTraining is {content['numTraining']} but "
                                f"{folder} holds {len(channels)} case(s)")
    problems.extend(patients_layout_problems(dataset_folder, content, cases_per_folder))
    return problems, content


def image_problems(path: Path, array: np.ndarray) -> list[str]:
    """Problems of one image channel's voxel values."""
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        return [f"{path}: {bad} voxel(s) are NaN or infinite"]
    return []


SPACING_RANGE_MM = (1e-6, 1e6)  # outside it the header is not in millimetres, or not a spacing at all
ORTHONORMAL_TOLERANCE = 1e-3


def geometry_problems(path: Path, geometry: Geometry) -> list[str]:
    """Problems of an image's header geometry: spacing, origin and direction (the reader accepts more)."""
    problems = []
    spacing = np.asarray(geometry.spacing_xyz)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        problems.append(f"{path}: spacing (x, y, z) {geometry.spacing_xyz} must be positive and finite")
    elif np.any(spacing < SPACING_RANGE_MM[0]) or np.any(spacing > SPACING_RANGE_MM[1]):
        problems.append(f"{path}: spacing (x, y, z) {geometry.spacing_xyz} mm is implausible (expected "
                        f"{SPACING_RANGE_MM[0]:g} to {SPACING_RANGE_MM[1]:g} mm); is the header in millimetres?")
    if not np.all(np.isfinite(geometry.origin_xyz)):
        problems.append(f"{path}: origin (x, y, z) {geometry.origin_xyz} must be finite")
    direction = geometry.direction_matrix
    if not np.all(np.isfinite(direction)):
        problems.append(f"{path}: direction {geometry.direction_xyz} must be finite")
    elif not np.allclose(direction.T @ direction, np.eye(3), atol=ORTHONORMAL_TOLERANCE):
        problems.append(f"{path}: direction {geometry.direction_xyz} is not a rotation (its columns must be unit "
                        "vectors at right angles); a scaled or sheared direction would misstate the spacing")
    return problems


def label_problems(
    label_path: Path, label: np.ndarray, label_geometry: Geometry, image_path: Path,
    image_geometry: Geometry | None, declared_labels: Sequence[int],
) -> list[str]:
    """Problems of a label map: grid against its image (when the image could be read), values against dataset.json."""
    problems = []
    differences = label_geometry.differences(image_geometry) if image_geometry is not None else []
    if differences:
        problems.append(f"{label_path}: grid differs from its image {image_path.name}: " + "; ".join(differences))
    if not np.all(np.isfinite(label)):
        problems.append(f"{label_path}: contains NaN or infinite values")
        return problems
    if not np.all(label == np.round(label)):
        problems.append(f"{label_path}: contains non-integer values (a label map must hold class integers)")
        return problems
    unique = np.unique(label)
    in_range = unique[np.abs(unique) < 2 ** 62]
    values = set(in_range.astype(np.int64).tolist())
    huge = [float(v) for v in unique if abs(v) >= 2 ** 62]
    undeclared = [str(v) for v in sorted(values - set(declared_labels))] + [f"{v:g}" for v in huge]
    if undeclared:
        if values <= {0, 255} and 255 in values and 255 not in declared_labels:
            problems.append(
                f"{label_path}: looks like a binary mask saved as 0/255; save it as 0/1 "
                f"(declared label values: {sorted(declared_labels)})"
            )
        else:
            problems.append(f"{label_path}: label value(s) [{', '.join(undeclared)}] are not declared in dataset.json "
                            f"(declared: {sorted(declared_labels)})")
    return problems


def labels_never_present(labels: dict[str, int], values_per_labeled_case: Sequence[Sequence[int]]) -> list[str]:
    """Names of the declared foreground labels that occur in no training label map (background excluded)."""
    present = set().union(*map(set, values_per_labeled_case)) if values_per_labeled_case else set()
    return [name for name, value in sorted(labels.items(), key=lambda item: item[1])
            if value != 0 and value not in present]


def absent_labels_message(dataset_folder: Path, labels: dict[str, int], absent: Sequence[str]) -> str:
    named = ", ".join(f'"{name}" ({labels[name]})' for name in absent)
    return (f"{dataset_folder / 'dataset.json'}: declared label(s) {named} occur in no label map of "
            f"{dataset_folder / 'labelsTr'}; a typo in dataset.json or an empty class? Its Dice and HD95 will be "
            "undefined or 0 in every table")


def labeled_count_problem(dataset_folder: Path, cases: Sequence[RawCase]) -> list[str]:
    if not any(case.is_labeled for case in cases):
        return [f"{dataset_folder / 'labelsTr'}: no labeled training case (at least one image in imagesTr needs "
                "a label file {case}{file_ending} in labelsTr)"]
    return []
