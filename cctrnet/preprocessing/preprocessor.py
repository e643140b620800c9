"""Preprocessing a case: crop to non-zero, normalise, resample in plane (z untouched), store.

The plan's 2D configuration supplies the target in-plane spacing and the normalisation of each
channel. Each case's properties record the raw, cropped and preprocessed grids so that predictions
can be put back on the raw grid exactly (see :mod:`cctrnet.preprocessing.revert`).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cctrnet.dataset.geometry import Geometry
from cctrnet.dataset.image_io import read_case_images, read_image
from cctrnet.dataset.raw_dataset import RawCase
from cctrnet.preprocessing.case_storage import is_case_complete, load_properties, save_preprocessed_case
from cctrnet.dataset.cropping import crop_to_bbox, nonzero_bbox_zyx
from cctrnet.preprocessing.normalization import normalize
from cctrnet.preprocessing.resampling import resample_image, resample_label
from cctrnet.utilities.parallel import map_with_progress


def preprocessing_key(configuration: dict[str, Any], labels: Sequence[int]) -> str:
    """Hash of everything that determines a preprocessed case; a stored case with another key is stale."""
    relevant = {"spacing_yx": configuration["spacing_yx"], "normalization": configuration["normalization"],
                "labels": sorted(labels)}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def preprocess_arrays(data_czyx: np.ndarray, label_zyx: np.ndarray | None, geometry: Geometry,
                      configuration: dict[str, Any], labels: Sequence[int]
                      ) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Preprocess arrays already in memory; returns (data, seg, properties)."""
    start, stop = nonzero_bbox_zyx(data_czyx)
    cropped_geometry = geometry.cropped(start, stop)
    data = normalize(crop_to_bbox(data_czyx, start, stop), configuration["normalization"])
    target_geometry = cropped_geometry.resampled_in_plane(configuration["spacing_yx"])
    data = resample_image(data, cropped_geometry, target_geometry)
    seg = None
    if label_zyx is not None:
        cropped_label = crop_to_bbox(label_zyx, start, stop).astype(np.int16)
        seg = resample_label(cropped_label, cropped_geometry, target_geometry, list(labels))
    properties: dict[str, Any] = {
        "geometry_raw": geometry.to_dict(),
        "crop_bbox_zyx": [list(start), list(stop)],
        "geometry_cropped": cropped_geometry.to_dict(),
        "geometry_preprocessed": target_geometry.to_dict(),
        "preprocessing_key": preprocessing_key(configuration, labels),
    }
    if seg is not None:
        properties["class_slices"] = {
            str(value): np.flatnonzero((seg == value).any(axis=(1, 2))).tolist() for value in labels if value != 0
        }
    return data, seg, properties


def raw_signature(case: RawCase) -> list[list]:
    """Name, size and modification time of a case's raw files: a changed raw file makes the case stale."""
    files = list(case.image_files) + ([case.label_file] if case.label_file is not None else [])
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def preprocess_case(case: RawCase, configuration: dict[str, Any], labels: Sequence[int]
                    ) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Read a raw case from disk and preprocess it."""
    data, geometry = read_case_images(case.image_files)
    label = read_image(case.label_file, dtype=np.int16)[0] if case.label_file is not None else None
    data, seg, properties = preprocess_arrays(data, label, geometry, configuration, labels)
    properties["case_id"] = case.case_id
    properties["raw_files"] = [str(p) for p in case.image_files]
    properties["raw_signature"] = raw_signature(case)
    return data, seg, properties


def _preprocess_and_save(args: tuple[RawCase, dict[str, Any], list[int], str]) -> str:
    case, configuration, labels, output_folder = args
    data, seg, properties = preprocess_case(case, configuration, labels)
    save_preprocessed_case(output_folder, case.case_id, data, seg, properties)
    return case.case_id


def is_up_to_date(output_folder: Path, case: RawCase, key: str) -> bool:
    """A finished case is skipped when complete, made with the same key from the same raw files."""
    if not is_case_complete(output_folder, case.case_id):
        return False
    properties = load_properties(output_folder, case.case_id)
    return (properties.get("preprocessing_key") == key and properties.get("is_labeled") == case.is_labeled
            and properties.get("raw_signature") == raw_signature(case))


def preprocess_dataset(cases: Sequence[RawCase], configuration: dict[str, Any], labels: Sequence[int],
                       output_folder: Path, num_processes: int = 1, progress: bool = True) -> dict[str, int]:
    """Preprocess every case not already up to date in ``output_folder``; returns counts."""
    output_folder = Path(output_folder)
    output_folder.mkdir(parents=True, exist_ok=True)
    key = preprocessing_key(configuration, labels)
    todo = [c for c in cases if not is_up_to_date(output_folder, c, key)]
    map_with_progress(_preprocess_and_save, [(c, configuration, list(labels), str(output_folder)) for c in todo],
                      num_processes, desc="preprocess", disable=not progress)
    return {"preprocessed": len(todo), "skipped_up_to_date": len(cases) - len(todo)}
