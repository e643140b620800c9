"""Dataset fingerprint: per case spacing, shape and shape after cropping, foreground intensities.

One pass reads every training case once, runs the integrity checks on the arrays it read, and
collects the fingerprint; nothing is written unless the whole dataset passed.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cctrnet.dataset import integrity
from cctrnet.dataset.dataset_json import is_ct_channel
from cctrnet.dataset.image_io import ImageReadError, read_image
from cctrnet.dataset.raw_dataset import RawCase, list_cases
from cctrnet.dataset.cropping import crop_to_bbox, nonzero_bbox_zyx
from cctrnet.utilities.parallel import map_with_progress

FOREGROUND_SAMPLES_PER_CASE = 10_000
INTENSITY_PERCENTILES = (0.5, 99.5)


@dataclass
class CaseAnalysis:
    case_id: str
    problems: list[str] = field(default_factory=list)
    fingerprint: dict[str, Any] | None = None
    foreground_samples: list[np.ndarray] | None = None  # per channel
    label_values: list[int] | None = None  # values present in the label map (labeled cases)


def analyse_case(case: RawCase, declared_labels: Sequence[int], case_index: int) -> CaseAnalysis:
    """Read one case, check it, and measure it (foreground samples seeded by the case index)."""
    result = CaseAnalysis(case.case_id)
    channels, geometry = [], None
    for path in case.image_files:
        try:
            array, g = read_image(path)
        except ImageReadError as error:
            result.problems.append(str(error))
            continue
        result.problems.extend(integrity.image_problems(path, array))
        result.problems.extend(integrity.geometry_problems(path, g))
        if geometry is not None and not geometry.same_grid(g):
            result.problems.append(f"{path}: grid differs from {case.image_files[0].name}: "
                                   + "; ".join(geometry.differences(g)))
        geometry = geometry or g
        channels.append(array)
    label = None
    if case.label_file is not None:
        try:
            label, label_geometry = read_image(case.label_file, dtype=None)  # as stored: float32 would round 1e-40 to 0
        except ImageReadError as error:
            result.problems.append(str(error))
        else:
            result.problems.extend(integrity.geometry_problems(case.label_file, label_geometry))
            result.problems.extend(integrity.label_problems(  # its values are checked even without its image
                case.label_file, label, label_geometry, case.image_files[0], geometry, declared_labels))
    if result.problems or geometry is None:
        return result

    data = np.stack(channels)
    start, stop = nonzero_bbox_zyx(data)
    shape_after_crop = tuple(b - a for a, b in zip(start, stop))
    result.fingerprint = {
        "spacing_zyx": list(geometry.spacing_zyx),
        "shape_zyx": list(geometry.shape_zyx),
        "shape_after_crop_zyx": list(shape_after_crop),
        "relative_size_after_crop": float(np.prod(shape_after_crop) / np.prod(geometry.shape_zyx)),
        "is_labeled": label is not None,
    }
    if label is not None:
        result.label_values = np.unique(label).astype(np.int64).tolist()
        foreground = crop_to_bbox(label, start, stop) > 0
        cropped = crop_to_bbox(data, start, stop)
        rng = np.random.default_rng(case_index)
        voxels = cropped[:, foreground]
        if voxels.shape[1] > FOREGROUND_SAMPLES_PER_CASE:
            voxels = voxels[:, rng.choice(voxels.shape[1], FOREGROUND_SAMPLES_PER_CASE, replace=False)]
        result.foreground_samples = list(voxels)
    return result


def _analyse(args: tuple[RawCase, Sequence[int], int]) -> CaseAnalysis:
    return analyse_case(*args)


def intensity_statistics(samples: np.ndarray) -> dict[str, float]:
    if samples.size == 0:
        return {}
    low, high = np.percentile(samples, INTENSITY_PERCENTILES)
    return {
        "mean": float(np.mean(samples)),
        "median": float(np.median(samples)),
        "std": float(np.std(samples)),
        "min": float(np.min(samples)),
        "max": float(np.max(samples)),
        "percentile_00_5": float(low),
        "percentile_99_5": float(high),
    }


def extract_fingerprint(dataset_folder: Path, num_processes: int = 1, progress: bool = True) -> dict[str, Any]:
    """Check the raw dataset and return its fingerprint; raises DatasetIntegrityError listing all problems."""
    dataset_folder = Path(dataset_folder)
    problems, dataset_json = integrity.layout_problems(dataset_folder)
    if dataset_json is None:
        raise integrity.DatasetIntegrityError(dataset_folder, problems)
    num_channels = len(dataset_json["channel_names"])
    cases = list_cases(dataset_folder / "imagesTr", dataset_folder / "labelsTr", dataset_json["file_ending"],
                       num_channels)
    cases = [c for c in cases if len(c.image_files) == num_channels]  # incomplete ones are already reported
    problems.extend(integrity.labeled_count_problem(dataset_folder, cases))
    declared = sorted(dataset_json["labels"].values())
    analyses = map_with_progress(_analyse, [(c, declared, i) for i, c in enumerate(cases)], num_processes,
                                 desc="fingerprint", disable=not progress)
    for analysis in analyses:
        problems.extend(analysis.problems)
    if problems:
        raise integrity.DatasetIntegrityError(dataset_folder, problems)

    channel_names = {int(k): v for k, v in dataset_json["channel_names"].items()}
    intensity = {}
    for channel in range(num_channels):
        parts = [a.foreground_samples[channel] for a in analyses if a.foreground_samples is not None]
        intensity[str(channel)] = intensity_statistics(np.concatenate(parts) if parts else np.zeros(0))
    per_case = {a.case_id: a.fingerprint for a in analyses}
    absent = integrity.labels_never_present(dataset_json["labels"], [a.label_values for a in analyses
                                                                     if a.label_values is not None])
    if absent:
        print(f"warning: {integrity.absent_labels_message(dataset_folder, dataset_json['labels'], absent)}",
              file=sys.stderr)
    return {
        "dataset_name": dataset_folder.name,
        "channel_names": {str(k): v for k, v in sorted(channel_names.items())},
        "ct_channels": [c for c, name in sorted(channel_names.items()) if is_ct_channel(name)],
        "num_training_cases": len(cases),
        "num_labeled_cases": sum(1 for c in cases if c.is_labeled),
        "num_unlabeled_cases": sum(1 for c in cases if not c.is_labeled),
        "spacings_zyx": [fp["spacing_zyx"] for fp in per_case.values()],
        "shapes_after_crop_zyx": [fp["shape_after_crop_zyx"] for fp in per_case.values()],
        "median_relative_size_after_crop": float(np.median([fp["relative_size_after_crop"]
                                                            for fp in per_case.values()])),
        "foreground_intensity_properties_per_channel": intensity,
        "foreground_samples_per_case": FOREGROUND_SAMPLES_PER_CASE,
        "cases": per_case,
        "labels_never_present": absent,
    }
