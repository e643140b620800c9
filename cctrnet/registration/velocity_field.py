"""Dense displacement and velocity fields on a volume's grid: composition, exponentiation, checks, storage.

A field is a tensor (B, 3, Z, Y, X): for every voxel of a grid, a physical displacement in mm along the
world axes (x, y, z). Sampling a field at displaced points needs, per pair, the 3x3 matrix that turns a
physical displacement into a displacement of ``grid_sample``'s normalised coordinates of the (possibly
zero-padded) array, and the normalised upper corner of the pair's own grid; sampling is clamped to that
grid, so a pair padded into a batch reads exactly what it reads alone (border extension).

The deformation of a pair is ``phi = exp(v)`` for a stationary velocity field ``v``, integrated by scaling
and squaring; its inverse is ``exp(-v)``. Both are diffeomorphic as long as ``v / 2**steps`` moves no
point by more than about half a voxel, which :func:`squaring_steps` ensures.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cctrnet.dataset.geometry import Geometry


@dataclass
class FieldGrid:
    """Per-pair sampling geometry of a batch of fields that share one padded array shape."""

    padded_shape_zyx: tuple[int, int, int]
    mm_to_normalised: torch.Tensor  # (B, 3, 3): physical displacement (x, y, z) -> normalised (x, y, z) offset
    upper_normalised: torch.Tensor  # (B, 3): normalised coordinate of each pair's last voxel (x, y, z order)
    valid: torch.Tensor  # (B, 1, Z, Y, X) 1 inside each pair's own grid, 0 in its padding
    #: the fields move points within their slice only (no component along the array's z axis): composition
    #: then samples each slice in 2D, the same result as trilinear sampling at a slice's own z, but faster
    planar: bool = False


def normalise_matrix(padded_shape_zyx: Sequence[int]) -> np.ndarray:
    """4x4 from an index (z, y, x, 1) to grid_sample's (x, y, z, 1) in [-1, 1] (align_corners=True)."""
    matrix = np.zeros((4, 4))
    for out_axis, zyx_axis in enumerate((2, 1, 0)):
        matrix[out_axis, zyx_axis] = 2.0 / max(1, padded_shape_zyx[zyx_axis] - 1)
        matrix[out_axis, 3] = -1.0
    matrix[3, 3] = 1.0
    return matrix


def field_grid(geometries: Sequence[Geometry], device: torch.device | str = "cpu", planar: bool = False) -> FieldGrid:
    """The :class:`FieldGrid` of fields living on ``geometries``, zero padded to their largest shape."""
    padded = tuple(int(v) for v in np.max([g.shape_zyx for g in geometries], axis=0))
    normalise = normalise_matrix(padded)
    to_normalised, upper = [], []
    valid = torch.zeros(len(geometries), 1, *padded, device=device)
    for i, geometry in enumerate(geometries):
        index_from_mm = np.linalg.inv(geometry.index_zyx_to_physical_matrix()[:3, :3])
        to_normalised.append(normalise[:3, :3] @ index_from_mm)
        upper.append([2.0 * (geometry.shape_zyx[a] - 1) / max(1, padded[a] - 1) - 1.0 for a in (2, 1, 0)])
        z, y, x = geometry.shape_zyx
        valid[i, :, :z, :y, :x] = 1.0
    as_tensor = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device)  # noqa: E731
    return FieldGrid(padded, as_tensor(to_normalised), as_tensor(upper), valid, planar)


def slice_normal_xyz(geometry: Geometry) -> np.ndarray:
    """Unit physical direction of the array's z axis (across the slices)."""
    axis = geometry.index_zyx_to_physical_matrix()[:3, 0]
    return axis / np.linalg.norm(axis)


def in_plane_projection(geometry: Geometry) -> np.ndarray:
    """3x3 projection of a physical vector onto the slice plane (removes the component across slices)."""
    normal = slice_normal_xyz(geometry)
    return np.eye(3) - np.outer(normal, normal)


def is_planar(field_mm: np.ndarray, geometry: Geometry, tolerance_mm: float = 1e-4) -> bool:
    """Whether a (3, Z, Y, X) field has no component across the slices."""
    across = np.tensordot(slice_normal_xyz(geometry), field_mm, axes=(0, 0))
    return bool(np.abs(across).max(initial=0.0) <= tolerance_mm)


def identity_normalised(shape_zyx: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, Z, Y, X, 3) normalised coordinates (x, y, z) of every voxel of an array of ``shape_zyx``."""
    axes = [torch.linspace(-1.0, 1.0, n, device=device) if n > 1 else torch.full((1,), -1.0, device=device)
            for n in shape_zyx]
    z, y, x = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([x, y, z], dim=-1)[None]


def sample(volume: torch.Tensor, grid_normalised: torch.Tensor, grid: FieldGrid) -> torch.Tensor:
    """Trilinear samples of ``volume`` (B, C, Z, Y, X) at (B, ..., 3) points, clamped to each pair's grid."""
    upper = grid.upper_normalised.view(-1, *([1] * (grid_normalised.dim() - 2)), 3)
    clamped = torch.minimum(grid_normalised.clamp_min(-1.0), upper)
    points = clamped if clamped.dim() == 5 else clamped.reshape(clamped.shape[0], -1, 1, 1, 3)
    out = F.grid_sample(volume, points, mode="bilinear", padding_mode="border", align_corners=True)
    return out if clamped.dim() == 5 else out.reshape(volume.shape[0], volume.shape[1], *grid_normalised.shape[1:-1])


def displacement_to_normalised(field_mm: torch.Tensor, grid: FieldGrid) -> torch.Tensor:
    """(B, 3, Z, Y, X) mm -> (B, Z, Y, X, 3) normalised offsets."""
    return apply_matrices(grid.mm_to_normalised, field_mm)


def apply_matrices(matrices: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) per-pair matrices times every vector of a (B, 3, Z, Y, X) field, as (B, Z, Y, X, 3)."""
    # nine scaled planes: for a 3x3 matrix this is faster on CPU than einsum or a batched matmul
    m = matrices.to(field.dtype).view(-1, 3, 3, 1, 1, 1)
    rows = [m[:, i, 0] * field[:, 0] + m[:, i, 1] * field[:, 1] + m[:, i, 2] * field[:, 2] for i in range(3)]
    return torch.stack(rows, dim=-1)


def compose(outer_mm: torch.Tensor, inner_mm: torch.Tensor, grid: FieldGrid, identity: torch.Tensor) -> torch.Tensor:
    """Displacement of ``(Id + outer) o (Id + inner)``: ``inner + outer(x + inner(x))``."""
    points = identity + displacement_to_normalised(inner_mm, grid)
    if grid.planar:
        return (inner_mm + _sample_slices(outer_mm, points, grid)) * grid.valid
    return (inner_mm + sample(outer_mm, points, grid)) * grid.valid


def _sample_slices(field: torch.Tensor, points: torch.Tensor, grid: FieldGrid) -> torch.Tensor:
    """Bilinear samples of every slice of ``field`` at in-slice points (B, Z, Y, X, 3), clamped per pair."""
    b, c, z, y, x = field.shape
    upper = grid.upper_normalised.view(-1, 1, 1, 1, 3)[..., :2]
    planar_points = torch.minimum(points[..., :2].clamp_min(-1.0), upper).reshape(b * z, y, x, 2)
    slices = field.permute(0, 2, 1, 3, 4).reshape(b * z, c, y, x)
    out = F.grid_sample(slices, planar_points, mode="bilinear", padding_mode="border", align_corners=True)
    return out.reshape(b, z, c, y, x).permute(0, 2, 1, 3, 4)


def squaring_steps(velocity_mm: torch.Tensor, spacing_mm: torch.Tensor | float, max_step_voxels: float = 0.5,
                   most: int = 12) -> torch.Tensor:
    """Per pair, how many squarings keep ``v / 2**n`` below ``max_step_voxels`` voxels of ``spacing_mm``."""
    # squares summed by hand: torch's vector norm over dim 1 is many times slower on CPU
    largest = velocity_mm.detach().square().sum(dim=1).flatten(1).amax(dim=1).sqrt()
    spacing = torch.as_tensor(spacing_mm, dtype=largest.dtype, device=largest.device)
    needed = largest / (max_step_voxels * spacing)
    steps = torch.where(needed > 1, torch.ceil(torch.log2(needed.clamp_min(1.0))), torch.zeros_like(needed))
    return torch.nan_to_num(steps, nan=float(most)).clamp(0, most).long()


def exponential(velocity_mm: torch.Tensor, grid: FieldGrid, steps: torch.Tensor | int,
                identity: torch.Tensor | None = None) -> torch.Tensor:
    """Displacement of ``exp(v)`` by scaling and squaring, ``steps`` squarings per pair.

    A pair with fewer squarings than another in its batch stops early, so its result is what it would be
    alone.
    """
    identity = identity_normalised(grid.padded_shape_zyx, velocity_mm.device) if identity is None else identity
    steps = torch.as_tensor(steps, device=velocity_mm.device).expand(velocity_mm.shape[0])
    scale = torch.pow(2.0, -steps.to(velocity_mm.dtype)).view(-1, 1, 1, 1, 1)
    displacement = velocity_mm * scale
    for step in range(int(steps.max()) if steps.numel() else 0):
        squared = compose(displacement, displacement, grid, identity)
        active = (steps > step).view(-1, 1, 1, 1, 1)
        displacement = torch.where(active, squared, displacement)
    return displacement


def gaussian_kernel_1d(sigma_voxels: float, truncate: float = 2.0) -> np.ndarray:
    if sigma_voxels < 0.4:  # the neighbours' weights would be below 5%: no smoothing along this axis
        return np.ones(1)
    radius = max(1, int(math.ceil(truncate * sigma_voxels)))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma_voxels) ** 2)
    return kernel / kernel.sum()


def smooth(field: torch.Tensor, sigmas_zyx_voxels: Sequence[float], valid: torch.Tensor | None = None) -> torch.Tensor:
    """Separable Gaussian smoothing of every channel (zero outside the array and outside ``valid``)."""
    channels = field.shape[1]
    out = field if valid is None else field * valid
    for axis, sigma in enumerate(sigmas_zyx_voxels):
        kernel = gaussian_kernel_1d(float(sigma))
        if kernel.size == 1:
            continue
        shape = [1, 1, 1]
        shape[axis] = kernel.size
        weight = torch.as_tensor(kernel, dtype=field.dtype, device=field.device).reshape(1, 1, *shape)
        padding = [0, 0, 0]
        padding[axis] = kernel.size // 2
        out = F.conv3d(out, weight.expand(channels, 1, *shape), padding=tuple(padding), groups=channels)
    return out if valid is None else out * valid


def resample_field(field_mm: torch.Tensor, source: Geometry, target: Geometry) -> torch.Tensor:
    """A (1, 3, Z, Y, X) field of ``source``'s grid trilinearly resampled onto ``target``'s grid (border)."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in target.shape_zyx], indexing="ij"), axis=-1).reshape(-1, 3)
    source_index = source.physical_xyz_to_index_zyx(target.index_zyx_to_physical_xyz(index))
    normalised = source_index[:, ::-1] * (2.0 / np.maximum(1, np.asarray(source.shape_zyx[::-1]) - 1)) - 1.0
    points = torch.as_tensor(np.ascontiguousarray(normalised), dtype=field_mm.dtype, device=field_mm.device)
    points = points.clamp(-1.0, 1.0).reshape(1, -1, 1, 1, 3)
    sampled = F.grid_sample(field_mm, points, mode="bilinear", padding_mode="border", align_corners=True)
    return sampled.reshape(1, 3, *target.shape_zyx)


def jacobian_determinant(displacement_mm: np.ndarray, geometry: Geometry) -> np.ndarray:
    """det of the Jacobian of ``x -> x + u(x)`` per voxel; ``displacement_mm`` is (3, Z, Y, X), xyz mm."""
    index_to_mm = geometry.index_zyx_to_physical_matrix()[:3, :3]
    mm_to_index = np.linalg.inv(index_to_mm)
    # d u_c / d index_a by central differences (one-sided at the border, zero across a single slice)
    gradients = np.zeros((3, 3, *displacement_mm.shape[1:]))
    for axis in range(3):
        if displacement_mm.shape[1 + axis] > 1:
            gradients[:, axis] = np.gradient(displacement_mm, axis=1 + axis)
    jacobian = np.einsum("ca...,ak->...ck", gradients, mm_to_index) + np.eye(3)
    return np.linalg.det(jacobian)


# --- storage: velocity field quantised, delta coded along x, compressed, with its grid ------------------------
#: the stored field's resolution in mm (a quantisation error of at most half of it)
STORAGE_QUANTUM_MM = 0.01
#: largest storable value: int16 differences of neighbours bound each value to half the int16 range
STORABLE_MM = STORAGE_QUANTUM_MM * (np.iinfo(np.int16).max // 2)


def velocity_to_bytes(velocity_mm: np.ndarray, geometry: Geometry) -> bytes:
    """npz bytes of a (3, Z, Y, X) velocity field and its grid.

    Values are rounded to ``STORAGE_QUANTUM_MM`` and stored as int16 differences along x: a smooth field's
    neighbours differ little, so the differences compress several times better than float16 values.
    """
    if np.abs(velocity_mm).max(initial=0.0) > STORABLE_MM:
        raise ValueError(f"velocity field exceeds the storable {STORABLE_MM:.0f} mm ({np.abs(velocity_mm).max():.1f} mm)")
    quantised = np.round(np.asarray(velocity_mm, dtype=np.float64) / STORAGE_QUANTUM_MM)
    quantised = quantised.astype(np.int32)
    differences = np.diff(quantised, axis=-1, prepend=0).astype(np.int16)
    buffer = io.BytesIO()
    grid = geometry.to_dict()
    np.savez_compressed(buffer, velocity_delta_x=differences, quantum_mm=np.float64(STORAGE_QUANTUM_MM),
                        shape_zyx=np.asarray(grid["shape_zyx"]), spacing_xyz=np.asarray(grid["spacing_xyz"]),
                        origin_xyz=np.asarray(grid["origin_xyz"]), direction_xyz=np.asarray(grid["direction_xyz"]))
    return buffer.getvalue()


def velocity_from_bytes(data: bytes) -> tuple[np.ndarray, Geometry]:
    """(velocity (3, Z, Y, X) float32 mm, its grid) from :func:`velocity_to_bytes`."""
    with np.load(io.BytesIO(data)) as stored:
        geometry = Geometry(tuple(int(v) for v in stored["shape_zyx"]), tuple(stored["spacing_xyz"].tolist()),
                            tuple(stored["origin_xyz"].tolist()), tuple(stored["direction_xyz"].tolist()))
        values = np.cumsum(stored["velocity_delta_x"].astype(np.int32), axis=-1) * float(stored["quantum_mm"])
        return values.astype(np.float32), geometry


def displacement_of_velocity(velocity_mm: np.ndarray, geometry: Geometry, sign: float = 1.0) -> np.ndarray:
    """(3, Z, Y, X) displacement of ``exp(sign * v)`` on the velocity's own grid (float64)."""
    v = torch.as_tensor(sign * velocity_mm, dtype=torch.float64)[None]
    grid = _double(field_grid([geometry], planar=is_planar(velocity_mm, geometry)))
    steps = squaring_steps(v, float(min(geometry.spacing_xyz)))
    identity = identity_normalised(geometry.shape_zyx).double()
    return exponential(v, grid, steps, identity)[0].numpy()


def inverse_consistency_mm(forward_mm: np.ndarray, backward_mm: np.ndarray, geometry: Geometry) -> np.ndarray:
    """|x - phi_b(phi_f(x))| per voxel, in mm, for displacements of one grid."""
    planar = is_planar(forward_mm, geometry) and is_planar(backward_mm, geometry)
    grid = _double(field_grid([geometry], planar=planar))
    identity = identity_normalised(geometry.shape_zyx).double()
    forward = torch.as_tensor(forward_mm, dtype=torch.float64)[None]
    backward = torch.as_tensor(backward_mm, dtype=torch.float64)[None]
    residual = compose(backward, forward, grid, identity)
    return residual[0].norm(dim=0).numpy()


def _double(grid: FieldGrid) -> FieldGrid:
    return FieldGrid(grid.padded_shape_zyx, grid.mm_to_normalised.double(), grid.upper_normalised.double(),
                     grid.valid.double(), grid.planar)
