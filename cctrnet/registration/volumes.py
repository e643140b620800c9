"""Reading the registered channel and grid of a preprocessed case (the stage's only input)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cctrnet.dataset.geometry import Geometry
from cctrnet.preprocessing.case_storage import load_preprocessed_case, preprocessed_geometry


def load_volume(data_folder: Path, case_id: str, channel: int) -> tuple[np.ndarray, Geometry]:
    """(channel ``channel`` as float32 (z, y, x), its grid); clear errors for a wrong channel or shape."""
    data, _, properties = load_preprocessed_case(data_folder, case_id)
    if data.ndim != 4 or not 0 <= channel < data.shape[0]:
        raise ValueError(f"{Path(data_folder) / case_id}_data.npy has shape {data.shape}; registration needs channel {channel} of (c, z, y, x)")
    geometry = preprocessed_geometry(properties)
    if tuple(data.shape[1:]) != geometry.shape_zyx:
        raise ValueError(f"{Path(data_folder) / case_id}: data shape {data.shape[1:]} != geometry_preprocessed {geometry.shape_zyx}")
    return np.asarray(data[channel], dtype=np.float32), geometry


def load_label(data_folder: Path, case_id: str) -> tuple[np.ndarray | None, Geometry]:
    """(label (z, y, x) int16 or None when the case has none, its grid)."""
    _, seg, properties = load_preprocessed_case(data_folder, case_id)
    return (None if seg is None else np.asarray(seg, dtype=np.int16)), preprocessed_geometry(properties)
