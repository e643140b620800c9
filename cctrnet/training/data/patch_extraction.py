"""Cut one augmented 2D patch out of a slice: image, label channels and per-pixel voxel coordinates.

A patch is defined by a sampling grid: for every output pixel, the continuous (y, x) position in the
slice it is read from. Rotation, scaling, elastic deformation and mirroring only change that grid, and
every channel of the sample is read through it:

- image channels: spline interpolation (order 3 by default), 0 outside the slice;
- label channels (true label, registered label, hidden truth): nearest voxel, -1 (ignore) outside;
  "outside" means sampled outside [0, size - 1], the same rule as for the coordinates below, so the
  image (scipy's constant mode), labels and coordinates are defined on exactly the same pixels;
- voxel coordinates (z, y, x): the grid itself. Bilinear interpolation of index channels
  (z, y, x) returns the sampled point exactly wherever all four neighbours lie inside the slice, so
  the grid *is* the linearly interpolated coordinate map, with no interpolation error. Pixels sampled
  outside [0, size - 1] are marked invalid and their coordinates set to -1, rather than blended
  with a padding value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.ndimage import map_coordinates

from cctrnet.training.data.augmentation import SpatialParameters

IGNORE_LABEL = -1
INVALID_COORDINATE = -1.0
IMAGE_PAD_VALUE = 0.0
# Extra pixels read around the grid's bounding box so the spline prefilter sees the same
# neighbourhood as on the whole slice (its influence decays as 0.27^n).
_SPLINE_MARGIN = 8
_GRID_TOLERANCE = 1e-6


@dataclass
class PatchSample:
    image: np.ndarray  # (c, h, w) float32
    labels: np.ndarray  # (k, h, w) int16, IGNORE_LABEL outside the slice
    coords_zyx: np.ndarray  # (3, h, w) float32 voxel coordinates in the preprocessed volume, -1 where invalid
    coords_valid: np.ndarray  # (h, w) bool


def crop_start_for_center(center_yx: Sequence[float], patch_size_yx: Sequence[int]) -> tuple[int, int]:
    """Top-left voxel of the unaugmented crop whose grid centre is ``center_yx``."""
    return tuple(int(round(c - (p - 1) / 2.0)) for c, p in zip(center_yx, patch_size_yx))


def sampling_grid_yx(patch_size_yx: Sequence[int], center_yx: Sequence[float],
                     params: SpatialParameters) -> np.ndarray:
    """(2, h, w) float64: the slice position (y, x) each output pixel is read from.

    Built around the patch centre: elastic offsets, then rotation, then scaling, then mirroring of the
    output, then translation to ``center_yx``.
    """
    h, w = patch_size_yx
    grid = np.stack(np.meshgrid(np.arange(h) - (h - 1) / 2.0, np.arange(w) - (w - 1) / 2.0, indexing="ij"))
    if params.elastic_displacement_yx is not None:
        grid = grid + params.elastic_displacement_yx
    if params.rotation_rad != 0.0:
        cos, sin = math.cos(params.rotation_rad), math.sin(params.rotation_rad)
        grid = np.stack([cos * grid[0] - sin * grid[1], sin * grid[0] + cos * grid[1]])
    if params.scale != 1.0:
        grid = grid * params.scale
    if params.mirror_y:
        grid = grid[:, ::-1, :]
    if params.mirror_x:
        grid = grid[:, :, ::-1]
    grid = grid + np.asarray(center_yx, dtype=np.float64)[:, None, None]
    return np.ascontiguousarray(grid)


def extract_patch(image_chw: np.ndarray, label_channels: Sequence[np.ndarray | None], z_index: int,
                  center_yx: Sequence[float], patch_size_yx: Sequence[int], params: SpatialParameters,
                  image_order: int = 3) -> PatchSample:
    """Read one patch of a slice through the grid of ``params`` centred at ``center_yx``.

    ``image_chw`` and the label channels may be memory-mapped views of the whole slice; only the region
    under the grid is read. A label channel given as None is all IGNORE_LABEL (e.g. no registered label).
    """
    shape_yx = image_chw.shape[1:]
    for channel in label_channels:
        if channel is not None and channel.shape != shape_yx:
            raise ValueError(f"label channel of shape {channel.shape} does not match the image slice {shape_yx}")
    grid = sampling_grid_yx(patch_size_yx, center_yx, params)
    coords_zyx, valid = _coordinates(grid, z_index, shape_yx)
    if params.is_axis_aligned_crop and np.array_equal(grid, np.rint(grid)):
        image, labels = _crop(image_chw, label_channels, grid, shape_yx)
    else:
        image = _interpolate_image(image_chw, grid, image_order)
        labels = _nearest_labels(label_channels, grid, valid)
    return PatchSample(image=image, labels=labels, coords_zyx=coords_zyx, coords_valid=valid)


def _coordinates(grid: np.ndarray, z_index: int, shape_yx: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    valid = np.ones(grid.shape[1:], dtype=bool)
    for axis, size in enumerate(shape_yx):
        valid &= (grid[axis] >= -_GRID_TOLERANCE) & (grid[axis] <= size - 1 + _GRID_TOLERANCE)
    coords = np.full((3, *grid.shape[1:]), INVALID_COORDINATE, dtype=np.float32)
    coords[0][valid] = z_index
    for axis, size in enumerate(shape_yx):
        coords[axis + 1][valid] = np.clip(grid[axis][valid], 0.0, size - 1)
    return coords, valid


def _crop(image_chw: np.ndarray, label_channels: Sequence[np.ndarray | None], grid: np.ndarray,
          shape_yx: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Integer grid (possibly mirrored): a padded crop, then the same flips as the grid."""
    h, w = grid.shape[1:]
    y_index = np.rint(grid[0][:, 0]).astype(np.int64)
    x_index = np.rint(grid[1][0, :]).astype(np.int64)
    y0, x0 = int(y_index.min()), int(x_index.min())
    region_y = slice(max(y0, 0), min(y0 + h, shape_yx[0]))
    region_x = slice(max(x0, 0), min(x0 + w, shape_yx[1]))
    target_y = slice(region_y.start - y0, region_y.stop - y0)
    target_x = slice(region_x.start - x0, region_x.stop - x0)
    image = np.full((image_chw.shape[0], h, w), IMAGE_PAD_VALUE, dtype=np.float32)
    labels = np.full((len(label_channels), h, w), IGNORE_LABEL, dtype=np.int16)
    if region_y.start < region_y.stop and region_x.start < region_x.stop:
        image[:, target_y, target_x] = image_chw[:, region_y, region_x]
        for k, channel in enumerate(label_channels):
            if channel is not None:
                labels[k, target_y, target_x] = channel[region_y, region_x]
    flip_y = y_index[0] > y_index[-1]
    flip_x = x_index[0] > x_index[-1]
    if flip_y:
        image, labels = image[:, ::-1], labels[:, ::-1]
    if flip_x:
        image, labels = image[:, :, ::-1], labels[:, :, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(labels)


def _interpolate_image(image_chw: np.ndarray, grid: np.ndarray, order: int) -> np.ndarray:
    shape_yx = image_chw.shape[1:]
    lows = [max(0, int(math.floor(grid[a].min())) - _SPLINE_MARGIN) for a in range(2)]
    highs = [min(shape_yx[a], int(math.ceil(grid[a].max())) + _SPLINE_MARGIN + 1) for a in range(2)]
    out = np.full((image_chw.shape[0], *grid.shape[1:]), IMAGE_PAD_VALUE, dtype=np.float32)
    if lows[0] >= highs[0] or lows[1] >= highs[1]:
        return out
    region = np.asarray(image_chw[:, lows[0]:highs[0], lows[1]:highs[1]], dtype=np.float32)
    local_grid = grid - np.array(lows, dtype=np.float64)[:, None, None]
    for c in range(region.shape[0]):
        out[c] = map_coordinates(region[c], local_grid, order=order, mode="constant", cval=IMAGE_PAD_VALUE)
    return out


def _nearest_labels(label_channels: Sequence[np.ndarray | None], grid: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Label of the nearest voxel where the pixel was sampled inside the slice; IGNORE_LABEL elsewhere.

    Using the coordinates' validity (not "nearest voxel exists") keeps image, labels and coordinates
    defined on exactly the same pixels.
    """
    labels = np.full((len(label_channels), *grid.shape[1:]), IGNORE_LABEL, dtype=np.int16)
    if not valid.any():
        return labels
    iy, ix = (np.floor(grid[a][valid] + 0.5).astype(np.int64) for a in range(2))
    y0, y1, x0, x1 = iy.min(), iy.max() + 1, ix.min(), ix.max() + 1
    for k, channel in enumerate(label_channels):
        if channel is not None:
            region = np.asarray(channel[y0:y1, x0:x1])
            labels[k][valid] = region[iy - y0, ix - x0]
    return labels
