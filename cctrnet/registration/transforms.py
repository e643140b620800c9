"""SimpleITK transforms as cctrnet stores and checks them.

A stored transform of the pair (moving, fixed) follows ITK's convention: it maps a physical point (x, y, z)
of the fixed volume to the corresponding point of the moving volume. Resampling the moving volume through
it gives an image on the fixed grid; as a point map it takes points of the fixed volume to the moving one.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cctrnet.dataset.geometry import Geometry
from cctrnet.registration.settings import RegistrationSettings


def array_to_sitk(array_zyx: np.ndarray, geometry: Geometry) -> Any:
    """A SimpleITK image of ``array_zyx`` on ``geometry``."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array_zyx))
    return geometry.apply_to_sitk(image)


def transform_to_text(transform: Any) -> str:
    """The ITK .tfm text of a transform (what the pair store writes)."""
    import SimpleITK as sitk

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "t.tfm")
        sitk.WriteTransform(transform, path)
        return Path(path).read_text()


def transform_from_file(path: str | os.PathLike) -> Any:
    """Read a stored .tfm; a composite is returned as ``sitk.CompositeTransform``."""
    import SimpleITK as sitk

    transform = sitk.ReadTransform(str(path))
    if transform.GetName() == "CompositeTransform":
        return sitk.CompositeTransform(transform)
    if transform.GetName() == "AffineTransform":
        return sitk.AffineTransform(transform)
    return transform


def stored_transform(transform_path: Path, field_path: Path | None = None, inverse: bool = False) -> Any:
    """A pair's transform from its files: the .tfm, composed with ``exp(v)`` of a stored velocity field.

    Forward (fixed points -> moving points): ``A(x + u(x))`` with ``u = exp(v)``; inverse:
    ``y -> z + w(z)`` with ``z = A^-1(y)`` and ``w = exp(-v)``. Only affine and velocity-field transforms
    have an inverse here.
    """
    import SimpleITK as sitk

    transform = transform_from_file(transform_path)
    if field_path is None:
        if not inverse:
            return transform
        if not isinstance(transform, sitk.AffineTransform):
            raise ValueError(f"{transform_path}: only affine or velocity-field transforms can be inverted")
        return sitk.AffineTransform(transform.GetInverse())
    from cctrnet.registration.velocity_field import displacement_of_velocity, velocity_from_bytes

    velocity, grid = velocity_from_bytes(Path(field_path).read_bytes())
    displacement = displacement_of_velocity(velocity, grid, -1.0 if inverse else 1.0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(displacement, 0, -1)), isVector=True)
    field = sitk.DisplacementFieldTransform(grid.apply_to_sitk(image))
    affine = sitk.AffineTransform(transform)
    if inverse:  # the last transform of the list is applied first
        return sitk.CompositeTransform([field, sitk.AffineTransform(affine.GetInverse())])
    return sitk.CompositeTransform([affine, field])


def affine_parts(transform: Any) -> tuple[Any, Any | None]:
    """(affine part, deformable part (B-spline or displacement field) or None) of a forward transform."""
    import SimpleITK as sitk

    if isinstance(transform, sitk.CompositeTransform):
        parts = [transform.GetNthTransform(i) for i in range(transform.GetNumberOfTransforms())]
        affine = sitk.AffineTransform(parts[0])
        if len(parts) == 1:
            return affine, None
        if parts[1].GetName() == "DisplacementFieldTransform":
            return affine, parts[1]
        return affine, sitk.BSplineTransform(parts[1])
    return sitk.AffineTransform(transform), None


def affine_matrix_4x4(affine: Any) -> np.ndarray:
    """Homogeneous 4x4 matrix of an ITK affine (physical xyz -> physical xyz)."""
    matrix = np.asarray(affine.GetMatrix(), dtype=np.float64).reshape(3, 3)
    centre = np.asarray(affine.GetCenter(), dtype=np.float64)
    translation = np.asarray(affine.GetTranslation(), dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = matrix
    out[:3, 3] = translation + centre - matrix @ centre
    return out


def affine_from_matrix_4x4(matrix_4x4: np.ndarray) -> Any:
    """An ITK AffineTransform (centre at the origin) from a homogeneous physical matrix."""
    import SimpleITK as sitk

    affine = sitk.AffineTransform(3)
    affine.SetMatrix([float(v) for v in np.ravel(matrix_4x4[:3, :3])])
    affine.SetTranslation([float(v) for v in matrix_4x4[:3, 3]])
    return affine


def implausibility(transform: Any, fixed_geometry: Geometry, settings: RegistrationSettings) -> str | None:
    """Why a transform must not be used (NaN, implausible determinant, folding), or None if it is fine."""
    import SimpleITK as sitk

    affine, bspline = affine_parts(transform)
    matrix = affine_matrix_4x4(affine)
    if not np.all(np.isfinite(matrix)):
        return "affine parameters are not finite"
    determinant = float(np.linalg.det(matrix[:3, :3]))
    if not settings.min_determinant <= determinant <= settings.max_determinant:
        return (
            f"affine determinant {determinant:.3g} outside the plausible range "
            f"[{settings.min_determinant}, {settings.max_determinant}]"
        )
    if bspline is not None:
        coefficients = np.asarray(bspline.GetParameters(), dtype=np.float64)
        if not np.all(np.isfinite(coefficients)):
            return "B-spline coefficients are not finite"
        field = sitk.TransformToDisplacementField(
            bspline, sitk.sitkVectorFloat64, *_coarse_grid(fixed_geometry, settings.point_map_field_stride_yx)
        )
        jacobian = sitk.GetArrayViewFromImage(sitk.DisplacementFieldJacobianDeterminant(field))
        folding = float(np.mean(jacobian <= 0))
        if folding > settings.max_folding_fraction:
            return f"B-spline folds {100 * folding:.1f}% of the volume (limit {100 * settings.max_folding_fraction:.1f}%)"
    return None


def _coarse_grid(geometry: Geometry, stride_yx: int) -> tuple[list[int], list[float], list[float], list[float]]:
    """(size_xyz, origin_xyz, spacing_xyz, direction) of ``geometry`` subsampled in-plane by ``stride_yx``."""
    z, y, x = geometry.shape_zyx
    size_zyx = (z, max(2, -(-y // stride_yx)), max(2, -(-x // stride_yx)))
    spacing_zyx = (
        geometry.spacing_zyx[0],
        geometry.spacing_zyx[1] * (y - 1) / max(1, size_zyx[1] - 1),
        geometry.spacing_zyx[2] * (x - 1) / max(1, size_zyx[2] - 1),
    )
    return (
        [int(s) for s in reversed(size_zyx)],
        list(geometry.origin_xyz),
        [float(s) for s in reversed(spacing_zyx)],
        list(geometry.direction_xyz),
    )


def coarse_grid_geometry(geometry: Geometry, stride_yx: int) -> Geometry:
    """The grid on which B-spline point maps are tabulated: same extent, in-plane stride ``stride_yx``."""
    size_xyz, origin_xyz, spacing_xyz, direction = _coarse_grid(geometry, stride_yx)
    return Geometry(tuple(reversed(size_xyz)), spacing_xyz, origin_xyz, direction)


def resample(
    moving_zyx: np.ndarray,
    moving_geometry: Geometry,
    fixed_geometry: Geometry,
    transform: Any,
    nearest: bool = False,
    default_value: float = 0.0,
) -> np.ndarray:
    """Moving array resampled onto the fixed grid through a (fixed -> moving) transform."""
    import SimpleITK as sitk

    moving = array_to_sitk(moving_zyx, moving_geometry)
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    output = sitk.Resample(moving, fixed_geometry.reference_image(), transform, interpolator, default_value, moving.GetPixelID())
    return sitk.GetArrayFromImage(output)
