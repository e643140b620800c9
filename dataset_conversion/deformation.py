"""Random smooth diffeomorphic deformations and point sampling, for the brain phantom.

Points live in a volume's *frame*: millimetres along its array axes (z, y, x), measured from the centre of
voxel (0, 0, 0); a point's continuous voxel index is its frame position divided by the spacing.

A :class:`SubjectWarp` maps a point of a subject to the template point it shows, y = A(p) + u(A(p)):
a small affine map A (rotation, isotropic scale, translation about a centre) followed by a displacement u
that is the exponential of a stationary velocity field (integrated by scaling and squaring), so the map is
smooth and invertible.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

# torch's 5D grid_sample takes the last grid dimension as (x, y, z) = (W, H, D): reverse of our (z, y, x)
_ZYX_TO_GRID_ORDER = [2, 1, 0]


def sample_volume(volume: torch.Tensor, index_zyx: torch.Tensor, mode: str = "bilinear",
                  padding_mode: str = "zeros") -> torch.Tensor:
    """Values of ``volume`` (C, Z, Y, X) at continuous voxel indices ``index_zyx`` (..., 3): shape (C, ...).

    ``mode`` "bilinear" is trilinear interpolation, "nearest" picks the closest voxel; outside the volume
    the value is 0 (``padding_mode`` "zeros") or the nearest border voxel's ("border").
    """
    sizes_zyx = torch.tensor(volume.shape[1:], dtype=index_zyx.dtype)
    normalised = 2.0 * index_zyx / torch.clamp(sizes_zyx - 1, min=1) - 1.0
    grid = normalised[..., _ZYX_TO_GRID_ORDER].reshape(1, 1, 1, -1, 3).to(volume.dtype)
    values = torch.nn.functional.grid_sample(volume[None], grid, mode=mode, padding_mode=padding_mode,
                                             align_corners=True)
    return values.reshape(volume.shape[0], *index_zyx.shape[:-1])


def identity_grid_zyx(shape_zyx: Sequence[int]) -> torch.Tensor:
    """Voxel indices (Z, Y, X, 3) of every voxel of a grid, (z, y, x) order, float32."""
    axes = [torch.arange(size, dtype=torch.float32) for size in shape_zyx]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


def random_velocity_field(rng: np.random.Generator, field_shape_zyx: Sequence[int], field_spacing_mm: float,
                          control_spacing_mm: float, smoothing_cells: float, max_velocity_mm: float) -> np.ndarray:
    """A smooth random velocity field (3, Z, Y, X) in mm, (z, y, x) components, whose largest |component|
    is ``max_velocity_mm``.

    White noise on a control grid ``control_spacing_mm`` apart covering the field, smoothed by a Gaussian of
    ``smoothing_cells`` control cells, then interpolated (trilinearly) onto the field grid.
    """
    from scipy.ndimage import gaussian_filter

    extent_mm = (np.asarray(field_shape_zyx) - 1) * field_spacing_mm
    control_shape = tuple(int(n) for n in np.ceil(extent_mm / control_spacing_mm).astype(int) + 1)
    noise = rng.standard_normal((3, *control_shape))
    smooth = np.stack([gaussian_filter(component, smoothing_cells, mode="nearest") for component in noise])
    field = torch.nn.functional.interpolate(torch.from_numpy(smooth.astype(np.float32))[None],
                                            size=tuple(int(n) for n in field_shape_zyx), mode="trilinear",
                                            align_corners=True)[0]
    largest = float(field.abs().max())
    if max_velocity_mm == 0 or largest == 0:
        return np.zeros((3, *field_shape_zyx), dtype=np.float32)
    return (field * (max_velocity_mm / largest)).numpy()


def integrate_velocity(velocity_mm: np.ndarray, field_spacing_mm: float, squaring_steps: int) -> np.ndarray:
    """Displacement (3, Z, Y, X) in mm of the exponential of a stationary velocity field, by scaling and squaring.

    The field is divided by 2**steps (a small step is close to a diffeomorphism), then composed with itself
    ``squaring_steps`` times: u <- u + u o (id + u). Zero velocity gives zero displacement.
    """
    displacement_vox = torch.from_numpy(np.asarray(velocity_mm, dtype=np.float32)) / (field_spacing_mm * 2 ** squaring_steps)
    identity = identity_grid_zyx(displacement_vox.shape[1:])
    for _ in range(squaring_steps):
        moved = identity + displacement_vox.permute(1, 2, 3, 0)
        displacement_vox = displacement_vox + sample_volume(displacement_vox, moved, "bilinear", "border")
    return (displacement_vox * field_spacing_mm).numpy()


def jacobian_determinant(displacement_mm: np.ndarray, field_spacing_mm: float) -> np.ndarray:
    """Determinant of the Jacobian of x -> x + u(x) at every field voxel (central differences)."""
    gradients = np.stack([np.stack(np.gradient(component / field_spacing_mm), axis=0) for component in displacement_mm])
    jacobian = np.moveaxis(gradients, (0, 1), (-2, -1)) + np.eye(3)
    return np.linalg.det(jacobian)


def rotation_matrix_zyx(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation of (z, y, x) vectors by the given angles (degrees) about the z, y and x axes, in that order."""
    matrix = np.eye(3)
    for axis, angle_deg in enumerate(angles_deg):
        plane = [a for a in range(3) if a != axis]
        cos, sin = np.cos(np.deg2rad(angle_deg)), np.sin(np.deg2rad(angle_deg))
        rotation = np.eye(3)
        rotation[plane[0], plane[0]], rotation[plane[0], plane[1]] = cos, -sin
        rotation[plane[1], plane[0]], rotation[plane[1], plane[1]] = sin, cos
        matrix = rotation @ matrix
    return matrix


@dataclass(frozen=True)
class SubjectWarp:
    """Map from subject points to template points, both in the template frame (mm, (z, y, x)).

    y = A(p) + u(A(p)) with A(p) = matrix_zyx @ (p - centre) + centre + translation; u is given on a field grid
    with isotropic spacing ``field_spacing_mm`` whose voxel (0, 0, 0) lies at the template frame's origin.
    """

    matrix_zyx: np.ndarray
    centre_zyx_mm: np.ndarray
    translation_zyx_mm: np.ndarray
    displacement_mm: np.ndarray
    field_spacing_mm: float

    def __call__(self, points_zyx_mm: torch.Tensor) -> torch.Tensor:
        """Template points (..., 3) shown at subject points (..., 3), both in mm, float32."""
        matrix = torch.from_numpy(np.asarray(self.matrix_zyx, dtype=np.float32))
        centre = torch.from_numpy(np.asarray(self.centre_zyx_mm, dtype=np.float32))
        translation = torch.from_numpy(np.asarray(self.translation_zyx_mm, dtype=np.float32))
        affine = (points_zyx_mm - centre) @ matrix.T + centre + translation
        field = torch.from_numpy(np.asarray(self.displacement_mm, dtype=np.float32))
        displacement = sample_volume(field, affine / self.field_spacing_mm, "bilinear", "border")
        return affine + displacement.permute(*range(1, displacement.dim()), 0)

    def min_jacobian_determinant(self) -> float:
        """Smallest Jacobian determinant of the whole map (affine times displacement) over the field grid."""
        return float(jacobian_determinant(self.displacement_mm, self.field_spacing_mm).min() * np.linalg.det(self.matrix_zyx))


def random_subject_warp(rng: np.random.Generator, template_extent_zyx_mm: Sequence[float], centre_zyx_mm: Sequence[float],
                        field_spacing_mm: float, control_spacing_mm: float, smoothing_cells: float,
                        max_velocity_mm: float, squaring_steps: int, max_rotation_deg: float, max_scale_change: float,
                        max_translation_mm: float) -> SubjectWarp:
    """A random warp: velocity field over the template extent (mm) plus a random small affine about the centre.

    Rotation angles, the isotropic scale change and the translation are uniform in +-their maxima.
    """
    field_shape = tuple(int(n) for n in np.ceil(np.asarray(template_extent_zyx_mm) / field_spacing_mm).astype(int) + 1)
    velocity = random_velocity_field(rng, field_shape, field_spacing_mm, control_spacing_mm, smoothing_cells, max_velocity_mm)
    displacement = integrate_velocity(velocity, field_spacing_mm, squaring_steps)
    angles = rng.uniform(-max_rotation_deg, max_rotation_deg, size=3)
    scale = 1.0 + rng.uniform(-max_scale_change, max_scale_change)
    translation = rng.uniform(-max_translation_mm, max_translation_mm, size=3)
    # the matrix maps subject to template: a subject larger by `scale` shows the template shrunk by 1/scale
    matrix = rotation_matrix_zyx(angles) / scale
    return SubjectWarp(matrix, np.asarray(centre_zyx_mm, dtype=np.float64), translation, displacement, field_spacing_mm)
