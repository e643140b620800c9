"""Cropping a case to the bounding box of its non-zero voxels (union over channels): the fingerprint measures the
cropped shapes and preprocessing crops, so the helpers live with the raw data both read."""
from __future__ import annotations

import numpy as np


def nonzero_bbox_zyx(data_czyx: np.ndarray) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """[start, stop) voxel indices (z, y, x) of the box holding every non-zero voxel of any channel.

    A volume without a non-zero voxel keeps its full extent.
    """
    nonzero = np.any(data_czyx != 0, axis=0)
    if not nonzero.any():
        return (0, 0, 0), tuple(int(s) for s in nonzero.shape)  # type: ignore[return-value]
    start, stop = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(nonzero.any(axis=other))
        start.append(int(present[0]))
        stop.append(int(present[-1]) + 1)
    return tuple(start), tuple(stop)  # type: ignore[return-value]


def crop_to_bbox(array: np.ndarray, start_zyx, stop_zyx) -> np.ndarray:
    """Crop the last three axes (z, y, x) of an array to [start, stop)."""
    slices = tuple(slice(a, b) for a, b in zip(start_zyx, stop_zyx))
    return array[(Ellipsis,) + slices]
