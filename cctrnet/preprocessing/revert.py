"""Putting arrays on the preprocessed grid back onto the raw grid: undo resampling, then the crop."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from cctrnet.dataset.geometry import Geometry
from cctrnet.preprocessing.resampling import resample_label, resample_probabilities


def _paste(cropped: np.ndarray, properties: dict[str, Any], fill: float) -> np.ndarray:
    raw = Geometry.from_dict(properties["geometry_raw"])
    start, stop = properties["crop_bbox_zyx"]
    out = np.full(cropped.shape[:-3] + raw.shape_zyx, fill, dtype=cropped.dtype)
    out[(Ellipsis,) + tuple(slice(a, b) for a, b in zip(start, stop))] = cropped
    return out


def probabilities_to_raw(probabilities_czyx: np.ndarray, properties: dict[str, Any]) -> np.ndarray:
    """Class probabilities (c, z, y, x) on the preprocessed grid -> on the raw grid (background outside the crop)."""
    source = Geometry.from_dict(properties["geometry_preprocessed"])
    cropped_grid = Geometry.from_dict(properties["geometry_cropped"])
    cropped = resample_probabilities(probabilities_czyx, source, cropped_grid)
    out = _paste(cropped, properties, fill=0.0)
    outside = np.ones(out.shape[1:], dtype=bool)
    start, stop = properties["crop_bbox_zyx"]
    outside[tuple(slice(a, b) for a, b in zip(start, stop))] = False
    out[0][outside] = 1.0
    return out


def label_to_raw(label_zyx: np.ndarray, properties: dict[str, Any], labels: Sequence[int]) -> np.ndarray:
    """A label map on the preprocessed grid -> on the raw grid (0 outside the crop)."""
    source = Geometry.from_dict(properties["geometry_preprocessed"])
    cropped_grid = Geometry.from_dict(properties["geometry_cropped"])
    cropped = resample_label(np.asarray(label_zyx), source, cropped_grid, list(labels))
    return _paste(cropped, properties, fill=0)
