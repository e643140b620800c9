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
from scipy.spatial import cKDTree

ONE_EMPTY_POLICIES = ("diagonal", "nan")


@dataclass(frozen=True)
class EvaluationConventions:
    """How HD95 is defined and what a metric is when a mask is empty."""

    # percentile of the union of both directed surface-distance sets (medpy's hd95 definition)
    hd95_percentile: float = 95.0
    # HD95 when exactly one of prediction and reference is empty: "diagonal" of the volume in mm
    # (worst distance possible inside the grid) or "nan" (excluded from means)
    hd95_one_empty: str = "diagonal"

    def __post_init__(self) -> None:
        if self.hd95_one_empty not in ONE_EMPTY_POLICIES:
            raise ValueError(f"hd95_one_empty must be one of {ONE_EMPTY_POLICIES}, got {self.hd95_one_empty!r}")
        if not 0.0 <= self.hd95_percentile <= 100.0:
            raise ValueError(f"hd95_percentile must lie in [0, 100], got {self.hd95_percentile}")

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
            "surface": "mask voxels with at least one of their 6 face neighbours outside the mask "
            "(outside the image counts as outside the mask)",
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


def surface_mask(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour (6-connectivity) outside it; outside the array counts as outside."""
    mask = np.asarray(mask, dtype=bool)
    return mask & _label_boundaries(mask)


def surface_distances_mm(
    pred_mask: np.ndarray, ref_mask: np.ndarray, spacing_zyx: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances in mm from each prediction surface voxel to the nearest reference surface voxel, and vice versa.

    Both masks must be non-empty.
    """
    pred_mask, ref_mask = _as_masks(pred_mask, ref_mask)
    spacing = _checked_spacing(spacing_zyx, pred_mask.ndim)
    if not pred_mask.any() or not ref_mask.any():
        raise ValueError("surface distances need two non-empty masks")
    pred_points = np.argwhere(surface_mask(pred_mask)) * spacing
    ref_points = np.argwhere(surface_mask(ref_mask)) * spacing
    return _directed_distances(pred_points, ref_points), _directed_distances(ref_points, pred_points)


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
    forward, backward = surface_distances_mm(pred_mask, ref_mask, spacing)
    return _percentile_of_union(forward, backward, conventions.hd95_percentile)


def evaluate_case(
    pred_zyx: np.ndarray,
    ref_zyx: np.ndarray,
    spacing_zyx: Sequence[float],
    labels: Sequence[int],
    conventions: EvaluationConventions = DEFAULT_CONVENTIONS,
) -> dict[int, dict[str, Any]]:
    """Metrics of every label of one case: {label: {dice_percent, hd95_mm, volume_ref_ml, volume_pred_ml, ...}}.

    ``pred_zyx`` and ``ref_zyx`` are integer label maps on the same grid (z, y, x); ``spacing_zyx``
    in mm. Dice is in percent. The surfaces of all labels are found in one pass over each map, so
    the cost grows with the number of surface voxels, not with volume size times labels.
    """
    pred_zyx = _as_label_map(pred_zyx, "prediction")
    ref_zyx = _as_label_map(ref_zyx, "reference")
    if pred_zyx.shape != ref_zyx.shape:
        raise ValueError(f"prediction shape {pred_zyx.shape} differs from reference shape {ref_zyx.shape}")
    spacing = _checked_spacing(spacing_zyx, ref_zyx.ndim)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    labels = [int(label) for label in labels]
    pred_counts, ref_counts, overlap_counts = _voxel_counts(pred_zyx, ref_zyx, labels)
    pred_surfaces = _surface_points_by_label(pred_zyx, labels, spacing)
    ref_surfaces = _surface_points_by_label(ref_zyx, labels, spacing)
    results: dict[int, dict[str, Any]] = {}
    for label in labels:
        pred_count, ref_count = pred_counts[label], ref_counts[label]
        if pred_count and ref_count:
            dice = 2.0 * overlap_counts[label] / (pred_count + ref_count)
            pred_points, ref_points = pred_surfaces[label], ref_surfaces[label]
            hd95 = _percentile_of_union(
                _directed_distances(pred_points, ref_points),
                _directed_distances(ref_points, pred_points),
                conventions.hd95_percentile,
            )
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


def _directed_distances(from_points_mm: np.ndarray, to_points_mm: np.ndarray) -> np.ndarray:
    """For each point of the first set, the Euclidean distance to the nearest point of the second."""
    return cKDTree(to_points_mm).query(from_points_mm, k=1, workers=1)[0]


def _percentile_of_union(forward: np.ndarray, backward: np.ndarray, percentile: float) -> float:
    return float(np.percentile(np.concatenate([forward, backward]), percentile))


def _label_boundaries(label_map: np.ndarray) -> np.ndarray:
    """True where a voxel has a face neighbour with another value, or lies on the array's border."""
    boundary = np.zeros(label_map.shape, dtype=bool)
    for axis in range(label_map.ndim):
        lower = [slice(None)] * label_map.ndim
        upper = [slice(None)] * label_map.ndim
        lower[axis], upper[axis] = slice(None, -1), slice(1, None)
        differs = label_map[tuple(lower)] != label_map[tuple(upper)]
        boundary[tuple(lower)] |= differs
        boundary[tuple(upper)] |= differs
        first, last = [slice(None)] * label_map.ndim, [slice(None)] * label_map.ndim
        first[axis], last[axis] = 0, -1
        boundary[tuple(first)] = True
        boundary[tuple(last)] = True
    return boundary


def _surface_points_by_label(label_map: np.ndarray, labels: Sequence[int], spacing: np.ndarray) -> dict[int, np.ndarray]:
    """{label: (n, 3) positions in mm of that label's surface voxels}, from one boundary pass."""
    flat_indices = np.flatnonzero(_label_boundaries(label_map))
    values = label_map.ravel()[flat_indices]
    out = {}
    for label in labels:
        chosen = flat_indices[values == label]
        out[label] = np.stack(np.unravel_index(chosen, label_map.shape), axis=1) * spacing
    return out


def _voxel_counts(
    pred_zyx: np.ndarray, ref_zyx: np.ndarray, labels: Sequence[int]
) -> tuple[dict[int, int], dict[int, int], dict[int, int]]:
    """Voxels per label in prediction, in reference, and where both agree on that label."""
    low = min(int(pred_zyx.min()), int(ref_zyx.min()), *labels, 0)
    pred_counts = np.bincount((pred_zyx.ravel().astype(np.int64) - low) if low else pred_zyx.ravel())
    ref_counts = np.bincount((ref_zyx.ravel().astype(np.int64) - low) if low else ref_zyx.ravel())
    agree = ref_zyx[ref_zyx == pred_zyx]
    overlap_counts = np.bincount((agree.astype(np.int64) - low) if low else agree)

    def lookup(counts: np.ndarray, label: int) -> int:
        index = label - low
        return int(counts[index]) if index < counts.size else 0

    return tuple({label: lookup(c, label) for label in labels} for c in (pred_counts, ref_counts, overlap_counts))  # type: ignore[return-value]


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
