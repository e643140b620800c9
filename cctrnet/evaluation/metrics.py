"""Overlap and surface metrics of one 3D case: Dice, HD95 in mm, volumes in ml.

Arrays are indexed (z, y, x) and spacings are given in the same order, in mm. The conventions
for empty masks are described in ``documentation/evaluation.md`` and held by
``EvaluationConventions``; every number produced here follows them.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

ONE_EMPTY_POLICIES = ("diagonal", "nan")


@dataclass(frozen=True)
class EvaluationConventions:
    """How HD95 is defined and what a metric is when a mask is empty."""

    # percentile of the union of both directed surface-distance sets (medpy's hd95 definition)
    hd95_percentile: float = 95.0
    # neighbourhood that decides which mask voxels lie on the surface: 1 = 6-connected (faces)
    surface_connectivity: int = 1
    # HD95 when exactly one of prediction and reference is empty: "diagonal" of the volume in mm
    # (worst distance possible inside the grid) or "nan" (excluded from means)
    hd95_one_empty: str = "diagonal"

    def __post_init__(self) -> None:
        if self.hd95_one_empty not in ONE_EMPTY_POLICIES:
            raise ValueError(f"hd95_one_empty must be one of {ONE_EMPTY_POLICIES}, got {self.hd95_one_empty!r}")
        if not 0.0 <= self.hd95_percentile <= 100.0:
            raise ValueError(f"hd95_percentile must lie in [0, 100], got {self.hd95_percentile}")
        if self.surface_connectivity not in (1, 2, 3):
            raise ValueError(f"surface_connectivity must be 1, 2 or 3, got {self.surface_connectivity}")

    def to_dict(self) -> dict[str, Any]:
        """The settings plus one line per rule, for summary.json."""
        out: dict[str, Any] = asdict(self)
        out["rules"] = {
            "dice_both_empty": "NaN (null in JSON), left out of every mean",
            "dice_one_empty": "0",
            "hd95_both_empty": "NaN (null in JSON), left out of every mean",
            "hd95_one_empty": (
                "diagonal of the volume's extent in mm, counted in means and reported per class"
                if self.hd95_one_empty == "diagonal"
                else "NaN (null in JSON), left out of every mean, reported per class"
            ),
            "hd95_definition": (
                f"{self.hd95_percentile:g}th percentile (numpy linear interpolation) of the union of the "
                "distances from every prediction surface voxel to the reference surface and from every "
                "reference surface voxel to the prediction surface, in mm using the voxel spacing"
            ),
            "surface": "mask voxels with a background neighbour (connectivity "
            f"{self.surface_connectivity}; outside the image counts as background)",
            "means": "mean over cases per class, then mean over foreground classes",
        }
        return out


DEFAULT_CONVENTIONS = EvaluationConventions()


def dice_score(pred_mask: np.ndarray, ref_mask: np.ndarray) -> float:
    """Dice coefficient in [0, 1] of two boolean masks; NaN when both are empty."""
    pred_mask, ref_mask = _as_masks(pred_mask, ref_mask)
    pred_count = int(np.count_nonzero(pred_mask))
    ref_count = int(np.count_nonzero(ref_mask))
    if pred_count + ref_count == 0:
        return math.nan
    intersection = int(np.count_nonzero(pred_mask & ref_mask))
    return 2.0 * intersection / (pred_count + ref_count)


def surface_mask(mask: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """Voxels of ``mask`` with at least one background neighbour (voxels outside the array count as background)."""
    mask = np.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(mask.ndim, connectivity)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances_mm(
    pred_mask: np.ndarray, ref_mask: np.ndarray, spacing_zyx: Sequence[float], connectivity: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Distances in mm from each prediction surface voxel to the reference surface, and vice versa.

    Both masks must be non-empty. Computed with Euclidean distance transforms inside the bounding box
    of both masks, which gives the same distances as on the full grid.
    """
    pred_mask, ref_mask = _as_masks(pred_mask, ref_mask)
    spacing = _checked_spacing(spacing_zyx, pred_mask.ndim)
    if not pred_mask.any() or not ref_mask.any():
        raise ValueError("surface distances need two non-empty masks")
    box = _union_box(pred_mask, ref_mask)
    pred_surface = surface_mask(pred_mask[box], connectivity)
    ref_surface = surface_mask(ref_mask[box], connectivity)
    return _directed_distances(pred_surface, ref_surface, spacing), _directed_distances(ref_surface, pred_surface, spacing)


def hd95_mm(
    pred_mask: np.ndarray,
    ref_mask: np.ndarray,
    spacing_zyx: Sequence[float],
    conventions: EvaluationConventions = DEFAULT_CONVENTIONS,
) -> float:
    """Symmetric 95th percentile Hausdorff distance in mm between the surfaces of two masks.

    NaN when both are empty; when exactly one is empty, the volume's diagonal in mm or NaN
    (``conventions.hd95_one_empty``).
    """
    pred_mask, ref_mask = _as_masks(pred_mask, ref_mask)
    spacing = _checked_spacing(spacing_zyx, pred_mask.ndim)
    pred_any, ref_any = bool(pred_mask.any()), bool(ref_mask.any())
    if not pred_any and not ref_any:
        return math.nan
    if not pred_any or not ref_any:
        return _one_empty_hd95(pred_mask.shape, spacing, conventions)
    forward, backward = surface_distances_mm(pred_mask, ref_mask, spacing, conventions.surface_connectivity)
    return float(np.percentile(np.concatenate([forward, backward]), conventions.hd95_percentile))


def evaluate_case(
    pred_zyx: np.ndarray,
    ref_zyx: np.ndarray,
    spacing_zyx: Sequence[float],
    labels: Sequence[int],
    conventions: EvaluationConventions = DEFAULT_CONVENTIONS,
) -> dict[int, dict[str, Any]]:
    """Metrics of every label of one case: {label: {dice_percent, hd95_mm, volume_ref_ml, volume_pred_ml, ...}}.

    ``pred_zyx`` and ``ref_zyx`` are integer label maps on the same grid (z, y, x); ``spacing_zyx``
    in mm. Dice is in percent. Only the bounding box of each label is processed, so large volumes
    with small structures are cheap.
    """
    pred_zyx = _as_label_map(pred_zyx, "prediction")
    ref_zyx = _as_label_map(ref_zyx, "reference")
    if pred_zyx.shape != ref_zyx.shape:
        raise ValueError(f"prediction shape {pred_zyx.shape} differs from reference shape {ref_zyx.shape}")
    spacing = _checked_spacing(spacing_zyx, ref_zyx.ndim)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    pred_boxes = _label_boxes(pred_zyx)
    ref_boxes = _label_boxes(ref_zyx)
    results: dict[int, dict[str, Any]] = {}
    for label in labels:
        label = int(label)
        pred_box, ref_box = pred_boxes.get(label), ref_boxes.get(label)
        if label <= 0:  # background or negative labels: no bounding boxes, use the whole grid
            pred_mask, ref_mask = pred_zyx == label, ref_zyx == label
        elif pred_box is None and ref_box is None:
            pred_mask = ref_mask = np.zeros((0,) * ref_zyx.ndim, dtype=bool)
        else:
            box = _merge_boxes(pred_box, ref_box)
            pred_mask, ref_mask = pred_zyx[box] == label, ref_zyx[box] == label
        pred_count, ref_count = int(np.count_nonzero(pred_mask)), int(np.count_nonzero(ref_mask))
        if pred_count and ref_count:
            dice = dice_score(pred_mask, ref_mask)
            forward, backward = surface_distances_mm(pred_mask, ref_mask, spacing, conventions.surface_connectivity)
            hd95 = float(np.percentile(np.concatenate([forward, backward]), conventions.hd95_percentile))
        elif pred_count or ref_count:
            dice, hd95 = 0.0, _one_empty_hd95(ref_zyx.shape, spacing, conventions)
        else:
            dice, hd95 = math.nan, math.nan
        results[label] = {
            "dice_percent": 100.0 * dice,
            "hd95_mm": hd95,
            "volume_ref_ml": ref_count * voxel_ml,
            "volume_pred_ml": pred_count * voxel_ml,
            "ref_empty": ref_count == 0,
            "pred_empty": pred_count == 0,
        }
    return results


# --- helpers -----------------------------------------------------------------------------------
def volume_diagonal_mm(shape_zyx: Sequence[int], spacing_zyx: Sequence[float]) -> float:
    """Length in mm of the diagonal of the volume's extent (voxel edge to voxel edge)."""
    return float(np.linalg.norm(np.asarray(shape_zyx, dtype=np.float64) * np.asarray(spacing_zyx, dtype=np.float64)))


def _one_empty_hd95(shape: Sequence[int], spacing: np.ndarray, conventions: EvaluationConventions) -> float:
    if conventions.hd95_one_empty == "diagonal":
        return volume_diagonal_mm(shape, spacing)
    return math.nan


def _directed_distances(from_surface: np.ndarray, to_surface: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    distance_to_surface = ndimage.distance_transform_edt(~to_surface, sampling=spacing)
    return distance_to_surface[from_surface]


def _as_masks(pred_mask: np.ndarray, ref_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred_mask, ref_mask = np.asarray(pred_mask, dtype=bool), np.asarray(ref_mask, dtype=bool)
    if pred_mask.shape != ref_mask.shape:
        raise ValueError(f"prediction mask shape {pred_mask.shape} differs from reference mask shape {ref_mask.shape}")
    return pred_mask, ref_mask


def _checked_spacing(spacing_zyx: Sequence[float], ndim: int) -> np.ndarray:
    spacing = np.asarray(spacing_zyx, dtype=np.float64).ravel()
    if spacing.size != ndim or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(f"spacing must be {ndim} positive numbers (z, y, x) in mm, got {list(spacing_zyx)}")
    return spacing


def _as_label_map(array: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        return array
    if np.issubdtype(array.dtype, np.floating) and np.array_equal(array, np.round(array)):
        return array.astype(np.int32)
    raise ValueError(f"{what} must be an integer label map, found dtype {array.dtype} with non-integer values")


def _label_boxes(label_map: np.ndarray) -> dict[int, tuple[slice, ...]]:
    """Bounding box of every positive label present, found in one pass."""
    if label_map.size == 0 or label_map.max() <= 0:
        return {}
    positive = label_map if label_map.min() >= 0 else np.where(label_map > 0, label_map, 0)
    return {i + 1: box for i, box in enumerate(ndimage.find_objects(positive)) if box is not None}


def _merge_boxes(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...]:
    if a is None or b is None:
        return a if b is None else b  # type: ignore[return-value]
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def _union_box(pred_mask: np.ndarray, ref_mask: np.ndarray) -> tuple[slice, ...]:
    # Exact, not an approximation: every surface voxel lies inside the union's bounding box, and a
    # voxel just outside the box belongs to neither mask, as erosion's border_value=0 assumes.
    return ndimage.find_objects((pred_mask | ref_mask).astype(np.uint8))[0]
