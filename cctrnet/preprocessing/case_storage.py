"""On-disk format of a preprocessed case, read by registration, training and inference.

Per case, in ``cctr_preprocessed/DatasetXXX_Name/<configuration>/``:

- ``{case}_data.npy``: float32 (c, z, y, x), normalised image channels;
- ``{case}_seg.npy``: int16 (z, y, x) label map, only for labeled cases (values 0..n_classes-1);
- ``{case}.json``: properties: ``geometry_raw`` and ``geometry_preprocessed`` (see
  :class:`cctrnet.dataset.geometry.Geometry`), ``crop_bbox_zyx`` ([start, stop) per axis in the raw
  grid), ``is_labeled``, ``class_slices`` (per class, the z indices that contain it).

Validation cases (the raw dataset's ``imagesVal``/``labelsVal``) are stored in the same format in the sibling
folder ``<configuration>_validation/`` (:func:`validation_folder_name`), so that registration and training, which
list the cases of ``<configuration>/``, never see them.

Plain .npy is chosen over a compressed container so that a 2D loader reads one slice of a memory-mapped
volume without decompressing the whole case. The .json is written last, so a case is complete exactly
when its .json exists and names files that exist.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from cctrnet.dataset.geometry import Geometry
from cctrnet.utilities.file_io import load_json, save_json, save_npy


VALIDATION_SUFFIX = "_validation"


def validation_folder_name(data_identifier: str) -> str:
    """``2d`` -> ``2d_validation``: where the preprocessed validation cases of a configuration are stored."""
    return f"{data_identifier}{VALIDATION_SUFFIX}"


def case_files(folder: str | os.PathLike, case_id: str) -> dict[str, Path]:
    folder = Path(folder)
    return {
        "data": folder / f"{case_id}_data.npy",
        "seg": folder / f"{case_id}_seg.npy",
        "properties": folder / f"{case_id}.json",
    }


def save_preprocessed_case(
    folder: str | os.PathLike, case_id: str, data: np.ndarray, seg: np.ndarray | None, properties: dict[str, Any]
) -> None:
    """Write one case atomically, properties last."""
    files = case_files(folder, case_id)
    save_npy(np.ascontiguousarray(data, dtype=np.float32), files["data"])
    if seg is not None:
        save_npy(np.ascontiguousarray(seg, dtype=np.int16), files["seg"])
    elif files["seg"].exists():
        files["seg"].unlink()
    save_json(dict(properties, is_labeled=seg is not None), files["properties"])


def load_properties(folder: str | os.PathLike, case_id: str) -> dict[str, Any]:
    return load_json(case_files(folder, case_id)["properties"])


def load_preprocessed_case(
    folder: str | os.PathLike, case_id: str, mmap: bool = True
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """(data (c, z, y, x), seg (z, y, x) or None, properties); memory-mapped read-only by default."""
    files = case_files(folder, case_id)
    properties = load_json(files["properties"])
    mode = "r" if mmap else None
    data = np.load(files["data"], mmap_mode=mode)
    seg = np.load(files["seg"], mmap_mode=mode) if properties.get("is_labeled") else None
    return data, seg, properties


def preprocessed_geometry(properties: dict[str, Any]) -> Geometry:
    """Grid of the preprocessed arrays in physical space (mm)."""
    return Geometry.from_dict(properties["geometry_preprocessed"])


def is_case_complete(folder: str | os.PathLike, case_id: str) -> bool:
    """True when the case's properties exist and every file they promise is present and readable."""
    files = case_files(folder, case_id)
    if not files["properties"].exists() or not files["data"].exists():
        return False
    try:
        properties = load_json(files["properties"])
        np.load(files["data"], mmap_mode="r")
        if properties.get("is_labeled"):
            np.load(files["seg"], mmap_mode="r")
    except (OSError, ValueError):
        return False
    return True


def list_preprocessed_cases(folder: str | os.PathLike) -> list[str]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".json")] for p in folder.glob("*.json") if not p.name.startswith("."))
