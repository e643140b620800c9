"""From class probabilities on the preprocessed grid to files on the input's grid.

The probabilities are resampled back to the cropped grid (linear), pasted into the raw extent (background
outside the crop), and the argmax is taken there, on the raw grid, so the written label map has the input's
size, spacing, origin and direction exactly. Post-processing (connected components) acts on that label map
just before it is written, so it changes labels only, never the geometry; the probabilities stay as they are.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cctrnet.dataset.geometry import Geometry
from cctrnet.dataset.image_io import write_image
from cctrnet.postprocessing.plan import PostprocessingPlan
from cctrnet.preprocessing.revert import probabilities_to_raw
from cctrnet.utilities.file_io import atomic_path

PROBABILITIES_SUFFIX = ".npz"


def segmentation_from_probabilities(probabilities_czyx: np.ndarray, label_values: Sequence[int]) -> np.ndarray:
    """Argmax over classes mapped to label values; uint8 where the values fit, else int16."""
    values = np.asarray(sorted(int(v) for v in label_values))
    if probabilities_czyx.shape[0] != len(values):
        raise ValueError(f"{probabilities_czyx.shape[0]} probability maps for {len(values)} labels {values.tolist()}")
    dtype = np.uint8 if values.min() >= 0 and values.max() < 256 else np.int16
    return values.astype(dtype)[np.argmax(probabilities_czyx, axis=0)]


def probabilities_path_for(segmentation_path: str | os.PathLike, file_ending: str) -> Path:
    """``preds/case.nii.gz`` -> ``preds/case.npz``."""
    path = Path(segmentation_path)
    return path.with_name(path.name[: len(path.name) - len(file_ending)] + PROBABILITIES_SUFFIX)


def save_probabilities(probabilities_czyx: np.ndarray, geometry: Geometry, label_values: Sequence[int],
                       path: str | os.PathLike) -> None:
    """An .npz with ``probabilities`` (classes, z, y, x) float32 and the grid they lie on."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(
                f, probabilities=probabilities_czyx.astype(np.float32, copy=False),
                label_values=np.asarray(sorted(int(v) for v in label_values)),
                spacing_xyz=np.asarray(geometry.spacing_xyz), origin_xyz=np.asarray(geometry.origin_xyz),
                direction_xyz=np.asarray(geometry.direction_xyz))


def export_prediction(probabilities_czyx: np.ndarray, properties: dict[str, Any], label_values: Sequence[int],
                      output_file: str | os.PathLike, file_ending: str, with_probabilities: bool = False,
                      postprocessing: PostprocessingPlan | None = None,
                      unprocessed_file: str | os.PathLike | None = None) -> np.ndarray:
    """Write the label map (and optionally the probabilities) of one case on its raw grid; returns the labels.

    ``postprocessing`` is applied to the label map before it is written; ``unprocessed_file`` also receives
    the label map as it was before (the same map when there is no post-processing). The label map is written
    last, so a case whose label map exists has all its files.
    """
    raw_probabilities = probabilities_to_raw(probabilities_czyx, properties)
    raw_geometry = Geometry.from_dict(properties["geometry_raw"])
    segmentation = segmentation_from_probabilities(raw_probabilities, label_values)
    if unprocessed_file is not None:
        write_image(segmentation, raw_geometry, unprocessed_file)
    if with_probabilities:
        probabilities_file = probabilities_path_for(output_file, file_ending)
        save_probabilities(raw_probabilities, raw_geometry, label_values, probabilities_file)
    if postprocessing is not None:
        segmentation = postprocessing.apply(segmentation)
    # the label map last: when it exists, the case's other files do too (--continue, cctrnet/inference/parts.py)
    write_image(segmentation, raw_geometry, output_file)
    return segmentation
