"""Multi-resolution pyramid that respects anisotropy, shared by both registration engines.

At level factor f an axis is shrunk by ``floor(f * smallest_spacing / its_spacing)`` (at least 1), so
thick-slice axes stay at full resolution until the in-plane axes have caught up with them; no axis drops
below ``min_voxels`` voxels. :func:`local_normalisation` optionally takes a level's images to local zero mean
and unit variance (the torch affine engine's ``torch_affine_local_normalisation_sigma_mm``).
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from cctrnet.dataset.geometry import Geometry


def shrink_factors_zyx(geometry: Geometry, level_factor: int, min_voxels: int) -> tuple[int, int, int]:
    """Integer shrink factor per axis (z, y, x) for one pyramid level."""
    spacing_zyx = np.asarray(geometry.spacing_zyx, dtype=np.float64)
    finest_mm = float(spacing_zyx.min())
    factors = []
    for spacing_mm, size in zip(spacing_zyx, geometry.shape_zyx):
        factor = max(1, int(np.floor(level_factor * finest_mm / spacing_mm + 1e-6)))
        factor = min(factor, max(1, size // min_voxels))
        factors.append(factor)
    return tuple(factors)  # type: ignore[return-value]


def shrunk_geometry(geometry: Geometry, factors_zyx: tuple[int, int, int]) -> Geometry:
    """Grid of a volume block-averaged by ``factors_zyx`` (incomplete trailing blocks dropped)."""
    factors = np.asarray(factors_zyx, dtype=np.float64)
    shape = tuple(int(s // f) for s, f in zip(geometry.shape_zyx, factors_zyx))
    first_centre_zyx = (factors - 1.0) / 2.0
    origin_xyz = geometry.index_zyx_to_physical_xyz(first_centre_zyx)
    spacing_xyz = tuple(np.asarray(geometry.spacing_xyz) * factors[::-1])
    return Geometry(shape, spacing_xyz, tuple(origin_xyz), geometry.direction_xyz)


def block_average(array_zyx: np.ndarray, factors_zyx: tuple[int, int, int]) -> np.ndarray:
    """Mean over non-overlapping blocks, the array counterpart of :func:`shrunk_geometry`."""
    fz, fy, fx = factors_zyx
    z, y, x = (s // f for s, f in zip(array_zyx.shape, factors_zyx))
    trimmed = np.asarray(array_zyx[: z * fz, : y * fy, : x * fx], dtype=np.float32)
    return trimmed.reshape(z, fz, y, fy, x, fx).mean(axis=(1, 3, 5))


def local_normalisation(array_zyx: np.ndarray, spacing_zyx: tuple[float, float, float], sigma_mm: float,
                        floor_fraction: float) -> np.ndarray:
    """``(I - G*I) / sqrt(G*(I - G*I)^2 + eps)``, G a Gaussian of ``sigma_mm`` on every axis (z, y, x).

    ``spacing_zyx`` (mm) converts the width to voxels per axis, so a 10 mm sigma spans one 10 mm slice and
    four 2.5 mm in-plane voxels. ``eps = floor_fraction * var(I)``. A smooth multiplicative bias field
    (receive-coil shading) is nearly constant within the window and divides out; the result is float32.
    """
    image = np.asarray(array_zyx, dtype=np.float32)
    sigma_voxels_zyx = [float(sigma_mm) / float(s) for s in spacing_zyx]
    centred = image - gaussian_filter(image, sigma_voxels_zyx, mode="nearest")
    local_variance = gaussian_filter(centred * centred, sigma_voxels_zyx, mode="nearest")
    eps = max(float(floor_fraction) * float(image.var()), 1e-12)
    return (centred / np.sqrt(local_variance + eps)).astype(np.float32)
