"""The one place that converts between voxel indices (z, y, x) and physical points (x, y, z) in mm.

Arrays in cctrnet are indexed (z, y, x), as SimpleITK's ``GetArrayFromImage`` returns them. ITK
metadata is (x, y, z): ``spacing_xyz``, ``origin_xyz`` and ``direction_xyz`` (row-major 3x3 whose
columns are the physical directions of the x, y and z index axes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class Geometry:
    """Grid of a 3D volume: its shape and where its voxels lie in physical space (mm)."""

    shape_zyx: tuple[int, int, int]
    spacing_xyz: tuple[float, float, float]
    origin_xyz: tuple[float, float, float]
    direction_xyz: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape_zyx", tuple(int(s) for s in self.shape_zyx))
        object.__setattr__(self, "spacing_xyz", tuple(float(s) for s in self.spacing_xyz))
        object.__setattr__(self, "origin_xyz", tuple(float(s) for s in self.origin_xyz))
        object.__setattr__(self, "direction_xyz", tuple(float(s) for s in np.ravel(self.direction_xyz)))
        if len(self.shape_zyx) != 3 or len(self.spacing_xyz) != 3 or len(self.origin_xyz) != 3:
            raise ValueError(f"a 3D geometry needs 3 values per field, got {self}")
        if len(self.direction_xyz) != 9:
            raise ValueError(f"direction must have 9 values, got {len(self.direction_xyz)}")

    # --- derived views -------------------------------------------------------------------------
    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return tuple(reversed(self.spacing_xyz))  # type: ignore[return-value]

    @property
    def direction_matrix(self) -> np.ndarray:
        """3x3 matrix whose columns are the physical directions of the x, y, z index axes."""
        return np.asarray(self.direction_xyz, dtype=np.float64).reshape(3, 3)

    def index_zyx_to_physical_matrix(self) -> np.ndarray:
        """4x4 homogeneous matrix mapping (z, y, x, 1) voxel indices to (x, y, z, 1) points in mm."""
        scaled = self.direction_matrix * np.asarray(self.spacing_xyz)[None, :]  # columns: x, y, z axes
        matrix = np.zeros((4, 4))
        matrix[:3, :3] = scaled[:, ::-1]  # input order z, y, x
        matrix[:3, 3] = self.origin_xyz
        matrix[3, 3] = 1.0
        return matrix

    def index_zyx_to_physical_xyz(self, index_zyx: np.ndarray) -> np.ndarray:
        """Map (..., 3) continuous voxel indices (z, y, x) to physical points (x, y, z) in mm."""
        index_zyx = np.asarray(index_zyx, dtype=np.float64)
        m = self.index_zyx_to_physical_matrix()
        return index_zyx @ m[:3, :3].T + m[:3, 3]

    def physical_xyz_to_index_zyx(self, points_xyz: np.ndarray) -> np.ndarray:
        """Map (..., 3) physical points (x, y, z) in mm to continuous voxel indices (z, y, x)."""
        points_xyz = np.asarray(points_xyz, dtype=np.float64)
        inverse = np.linalg.inv(self.index_zyx_to_physical_matrix())
        return points_xyz @ inverse[:3, :3].T + inverse[:3, 3]

    def same_grid(self, other: "Geometry", rtol: float = 1e-4, atol_mm: float = 1e-3) -> bool:
        """True where shape, spacing, origin and direction agree within tolerance."""
        return (
            self.shape_zyx == other.shape_zyx
            and np.allclose(self.spacing_xyz, other.spacing_xyz, rtol=rtol)
            and np.allclose(self.origin_xyz, other.origin_xyz, atol=atol_mm + rtol * max(map(abs, self.origin_xyz)))
            and np.allclose(self.direction_xyz, other.direction_xyz, atol=1e-4)
        )

    def differences(self, other: "Geometry") -> list[str]:
        """Human-readable list of the fields in which two geometries differ."""
        out = []
        if self.shape_zyx != other.shape_zyx:
            out.append(f"size (z, y, x) {self.shape_zyx} vs {other.shape_zyx}")
        if not np.allclose(self.spacing_xyz, other.spacing_xyz, rtol=1e-4):
            out.append(f"spacing (x, y, z) {_fmt(self.spacing_xyz)} vs {_fmt(other.spacing_xyz)}")
        if not np.allclose(self.origin_xyz, other.origin_xyz, atol=1e-3 + 1e-4 * max(map(abs, self.origin_xyz))):
            out.append(f"origin (x, y, z) {_fmt(self.origin_xyz)} vs {_fmt(other.origin_xyz)}")
        if not np.allclose(self.direction_xyz, other.direction_xyz, atol=1e-4):
            out.append(f"direction {_fmt(self.direction_xyz)} vs {_fmt(other.direction_xyz)}")
        return out

    # --- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "shape_zyx": list(self.shape_zyx),
            "spacing_xyz": list(self.spacing_xyz),
            "origin_xyz": list(self.origin_xyz),
            "direction_xyz": list(self.direction_xyz),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Geometry":
        return cls(d["shape_zyx"], d["spacing_xyz"], d["origin_xyz"], d["direction_xyz"])

    @classmethod
    def from_sitk(cls, image: Any) -> "Geometry":
        size_xyz = image.GetSize()
        return cls(tuple(reversed(size_xyz)), image.GetSpacing(), image.GetOrigin(), image.GetDirection())

    def apply_to_sitk(self, image: Any) -> Any:
        """Set spacing, origin and direction of a SimpleITK image (whose size must match)."""
        if tuple(reversed(image.GetSize())) != self.shape_zyx:
            raise ValueError(f"image size (z, y, x) {tuple(reversed(image.GetSize()))} != geometry {self.shape_zyx}")
        image.SetSpacing(self.spacing_xyz)
        image.SetOrigin(self.origin_xyz)
        image.SetDirection(self.direction_xyz)
        return image

    def reference_image(self) -> Any:
        """An empty SimpleITK image on this grid, for use as a resampling reference."""
        import SimpleITK as sitk

        image = sitk.Image([int(s) for s in reversed(self.shape_zyx)], sitk.sitkUInt8)
        return self.apply_to_sitk(image)

    # --- grid arithmetic ------------------------------------------------------------------------
    def cropped(self, start_zyx: Sequence[int], stop_zyx: Sequence[int]) -> "Geometry":
        """Geometry of the sub-grid [start, stop) (voxel indices z, y, x)."""
        start = np.asarray(start_zyx, dtype=np.float64)
        new_origin = self.index_zyx_to_physical_xyz(start)
        shape = tuple(int(b - a) for a, b in zip(start_zyx, stop_zyx))
        return Geometry(shape, self.spacing_xyz, tuple(new_origin), self.direction_xyz)

    def resampled_in_plane(self, target_spacing_yx: Sequence[float]) -> "Geometry":
        """Grid covering the same physical extent with new in-plane (y, x) spacing; z untouched.

        The new size is the rounded ratio of extents; the spacing is then adjusted so that the
        extent (voxel edge to voxel edge) is preserved exactly, and the origin (first voxel centre)
        moves by half the change of spacing along each resampled axis.
        """
        sz, sy, sx = self.shape_zyx
        old_x, old_y, old_z = self.spacing_xyz
        ty, tx = (float(t) for t in target_spacing_yx)
        new_y = max(1, int(round(sy * old_y / ty)))
        new_x = max(1, int(round(sx * old_x / tx)))
        eff_y = sy * old_y / new_y
        eff_x = sx * old_x / new_x
        # first voxel centre in old continuous index units (z, y, x)
        first_zyx = np.array([0.0, 0.5 * (eff_y / old_y) - 0.5, 0.5 * (eff_x / old_x) - 0.5])
        new_origin = self.index_zyx_to_physical_xyz(first_zyx)
        return Geometry((sz, new_y, new_x), (eff_x, eff_y, old_z), tuple(new_origin), self.direction_xyz)


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
