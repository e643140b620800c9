"""How far a label's header geometry may stray from its image's before a conversion stops.

nnU-Net v2's integrity check only warns when an image and its label disagree in origin or direction; a
converter that stops instead loses a whole dataset over a rounding difference. Here the user chooses: the
difference is measured as one length, the largest distance between where a voxel lies according to the
image header and where the same voxel (same index) lies according to the label header. One number thus
covers origin, spacing and direction differences alike, in millimetres.

- Differences the grid check counts as equal (:meth:`Geometry.same_grid`) pass silently.
- Up to the tolerance: one warning per case, and the label is written with its image's geometry.
- Beyond it: a problem naming the label file, the differing quantities with both values, and the option
  that raises the tolerance. A size difference is always a problem: the voxels would not correspond.

The default (:data:`DEFAULT_GEOMETRY_TOLERANCE_MM`) is safe: 0.01 mm moves no voxel by more than a
fiftieth of the finest spacing of the supported datasets (about 0.5 mm), yet it lets headers written
with rounded coordinates through with a warning.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cctrnet.dataset.geometry import Geometry

DEFAULT_GEOMETRY_TOLERANCE_MM = 0.01
TOLERANCE_OPTION = "--geometry-tolerance-mm"


@dataclass(frozen=True)
class LabelGeometryCheck:
    """Outcome for one case: a problem (conversion stops), a warning (label takes the image's grid), or neither."""

    problem: str | None = None
    warning: str | None = None


def largest_voxel_displacement_mm(image_geometry: Geometry, label_geometry: Geometry) -> float:
    """Largest distance (mm) between the physical points of one voxel index (z, y, x) in the two grids.

    Both index-to-point maps are affine, so their difference is largest at a corner of the grid.
    """
    corners_zyx = np.array(list(itertools.product(*[(0, n - 1) for n in image_geometry.shape_zyx])), dtype=np.float64)
    offsets_xyz = (image_geometry.index_zyx_to_physical_xyz(corners_zyx)
                   - label_geometry.index_zyx_to_physical_xyz(corners_zyx))
    return float(np.max(np.linalg.norm(offsets_xyz, axis=1)))


def check_label_geometry(
    image_file: Path, image_geometry: Geometry, label_file: Path, label_geometry: Geometry, tolerance_mm: float,
) -> LabelGeometryCheck:
    """Compare a label's grid with its image's under the tolerance (mm); see the module docstring."""
    if image_geometry.shape_zyx != label_geometry.shape_zyx:
        return LabelGeometryCheck(problem=f"{label_file}: size (z, y, x) {label_geometry.shape_zyx} differs from its "
                                          f"image {image_file.name} {image_geometry.shape_zyx}")
    if image_geometry.same_grid(label_geometry):
        return LabelGeometryCheck()
    differences = "; ".join(label_geometry.differences(image_geometry))
    distance_mm = largest_voxel_displacement_mm(image_geometry, label_geometry)
    stated = f"{label_file}: grid differs from its image {image_file.name} ({differences}; label vs image)"
    if distance_mm <= tolerance_mm:
        return LabelGeometryCheck(warning=f"{stated}: voxels lie up to {distance_mm:.3g} mm apart, within the geometry "
                                          f"tolerance of {tolerance_mm:g} mm; the label is written with its image's "
                                          "geometry")
    return LabelGeometryCheck(problem=f"{stated}: voxels lie up to {distance_mm:.3g} mm apart, more than the geometry "
                                      f"tolerance of {tolerance_mm:g} mm; if the label is known to match its image "
                                      f"voxel for voxel, pass {TOLERANCE_OPTION} {_suggested(distance_mm)} to write it "
                                      "with its image's geometry")


def tolerance_problems(tolerance_mm: float) -> list[str]:
    """A tolerance must be a finite, non-negative length."""
    if not np.isfinite(tolerance_mm) or tolerance_mm < 0:
        return [f"{TOLERANCE_OPTION} must be a finite length of 0 mm or more, found {tolerance_mm!r}"]
    return []


def _suggested(distance_mm: float) -> str:
    """The measured distance rounded up to two significant digits: the smallest tolerance worth suggesting."""
    exponent = int(np.floor(np.log10(distance_mm))) - 1
    return f"{np.ceil(distance_mm / 10.0 ** exponent) * 10.0 ** exponent:.{max(0, -exponent)}f}"
