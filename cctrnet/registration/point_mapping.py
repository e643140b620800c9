"""Mapping voxel coordinates between preprocessed volumes for REPS (METHOD.md §7).

``PointMapper.map_points(source, target, points_zyx)`` takes (N, 3) continuous voxel indices (z, y, x) of
the source's preprocessed grid and returns (N, 3) voxel indices in the target's grid, on the points'
device and dtype. It uses the same transform that warps the target's label onto the source grid (pair
target onto source), so the target's label at a mapped point equals the source's registered label there.
An affine map is one 4x4 matrix in voxel space (the inverse of the opposite pair serves when only that
one exists; through a reference volume it is a product of two); a B-spline or velocity-field map is a
table of target indices on a coarse source grid, sampled trilinearly with ``grid_sample`` (a velocity
field pair also serves the opposite direction through ``exp(-v)``). Maps are cached per pair.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cctrnet.dataset.geometry import Geometry
from cctrnet.preprocessing.case_storage import load_properties, preprocessed_geometry
from cctrnet.registration.pair_store import PairStore
from cctrnet.registration.pairs import reference_case
from cctrnet.registration.settings import RegistrationSettings
from cctrnet.registration.transforms import affine_matrix_4x4, affine_parts, coarse_grid_geometry
from cctrnet.registration.velocity_field import normalise_matrix


class MissingRegistrationError(LookupError):
    """No successful registration connects the two volumes."""


class _FieldMap:
    """Target voxel indices tabulated on a coarse grid of the source, sampled trilinearly."""

    def __init__(self, table_zyx: torch.Tensor, source_to_coarse: torch.Tensor, coarse_shape_zyx: Sequence[int]):
        self.table = table_zyx  # (1, 3, Z, Y, X)
        # source index (z, y, x) -> grid_sample's (x, y, z) in [-1, 1] of the table, as one 3x4 matrix
        normalise = torch.from_numpy(normalise_matrix(coarse_shape_zyx))
        self.to_grid = (normalise @ source_to_coarse.double())[:3]
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, points_zyx: torch.Tensor) -> torch.Tensor:
        key = (points_zyx.device, points_zyx.dtype)
        if key not in self._cache:  # converted once per device and dtype, not per call
            # channels last: the three coordinates of a table node lie side by side for the trilinear gather
            # (the same values, 10-20 % faster on the CPU: documentation/benchmarks.md, point mapping)
            table = self.table.to(*key).contiguous(memory_format=torch.channels_last_3d)
            self._cache[key] = (table, self.to_grid.to(*key))
        table, to_grid = self._cache[key]
        grid = torch.addmm(to_grid[:, 3], points_zyx, to_grid[:, :3].T).reshape(1, 1, 1, -1, 3)
        sampled = F.grid_sample(table, grid, mode="bilinear", padding_mode="border", align_corners=True)
        return sampled.reshape(3, -1).T


class PointMapper:
    """Vectorised, device-agnostic maps of voxel coordinates between the cases of one registration store."""

    def __init__(self, data_folder: Path, store: PairStore, settings: RegistrationSettings | None = None,
                 all_cases: Sequence[str] | None = None):
        from cctrnet.preprocessing.case_storage import list_preprocessed_cases

        self.data_folder, self.store = Path(data_folder), store
        self.settings = settings or RegistrationSettings()
        self.cases = list(all_cases) if all_cases is not None else list_preprocessed_cases(data_folder)
        self._geometries: dict[str, Geometry] = {}
        self._maps: dict[tuple[str, str], Any] = {}

    def geometry(self, case_id: str) -> Geometry:
        if case_id not in self._geometries:
            self._geometries[case_id] = preprocessed_geometry(load_properties(self.data_folder, case_id))
        return self._geometries[case_id]

    def has_map(self, source: str, target: str) -> bool:
        try:
            self._map(source, target)
            return True
        except MissingRegistrationError:
            return False

    def map_points(self, source_case: str, target_case: str, points_zyx: torch.Tensor) -> torch.Tensor:
        """(N, 3) voxel indices of the source grid -> (N, 3) voxel indices of the target grid."""
        return _apply(self._map(source_case, target_case), points_zyx)

    def map_points_to_many(self, source_case: str, target_cases: Sequence[str], points_zyx: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """((T, N, 3) indices in each target, (T,) bool: whether a map exists); unmapped rows are NaN."""
        out = torch.full((len(target_cases), *points_zyx.shape), float("nan"), dtype=points_zyx.dtype, device=points_zyx.device)
        available = torch.zeros(len(target_cases), dtype=torch.bool)
        matrices, matrix_rows = [], []
        for row, target in enumerate(target_cases):
            try:
                mapping = self._map(source_case, target)
            except MissingRegistrationError:
                continue
            available[row] = True
            if isinstance(mapping, torch.Tensor):
                matrices.append(mapping)
                matrix_rows.append(row)
            else:
                out[row] = mapping(points_zyx)
        if matrices:
            stacked = torch.stack(matrices).to(points_zyx.device, points_zyx.dtype)
            out[matrix_rows] = torch.einsum("tij,nj->tni", stacked[:, :3, :3], points_zyx) + stacked[:, None, :3, 3]
        return out, available.to(points_zyx.device)

    # --- building maps ------------------------------------------------------------------------------
    def _map(self, source: str, target: str) -> Any:
        key = (source, target)
        if key not in self._maps:
            self._maps[key] = self._build(source, target)
        return self._maps[key]

    def _build(self, source: str, target: str) -> Any:
        if source == target:
            return torch.eye(4, dtype=torch.float64)
        direct = self._direct(source, target)
        if direct is not None:
            return direct
        reference = reference_case(self.cases) if self.cases else None
        if reference is not None and reference not in (source, target):
            first, second = self._direct(source, reference), self._direct(reference, target)
            if first is not None and second is not None:
                if isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor):
                    return second @ first
                return lambda points: _apply(second, _apply(first, points))
        raise MissingRegistrationError(
            f"no successful registration maps {source} to {target} in {self.store.folder} "
            f"(pairs {target}__to__{source} or {source}__to__{target}, or through {reference})"
        )

    def _direct(self, source: str, target: str) -> Any:
        """Map from the pair (target onto source), or the inverse of an invertible pair (source onto target)."""
        source_matrix = self.geometry(source).index_zyx_to_physical_matrix()
        target_inverse = np.linalg.inv(self.geometry(target).index_zyx_to_physical_matrix())
        if self.store.successful(target, source):
            transform = self.store.transform(target, source)
            affine, deformable = affine_parts(transform)
            if deformable is None:
                return torch.from_numpy(target_inverse @ affine_matrix_4x4(affine) @ source_matrix)
            return self._field_map(transform, source, target_inverse)
        if self.store.successful(source, target):
            if self.store.field_path(source, target).exists():
                return self._field_map(self.store.transform(source, target, inverse=True), source, target_inverse)
            affine, deformable = affine_parts(self.store.transform(source, target))
            if deformable is None:
                return torch.from_numpy(target_inverse @ np.linalg.inv(affine_matrix_4x4(affine)) @ source_matrix)
        return None

    def _field_map(self, transform: Any, source: str, target_inverse: np.ndarray) -> _FieldMap:
        import SimpleITK as sitk

        coarse = coarse_grid_geometry(self.geometry(source), self.settings.point_map_field_stride_yx)
        field = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, [int(s) for s in reversed(coarse.shape_zyx)],
                                                  coarse.origin_xyz, coarse.spacing_xyz, coarse.direction_xyz)
        displacement_xyz = sitk.GetArrayFromImage(field)  # (z, y, x, 3)
        index = np.stack(np.meshgrid(*[np.arange(s) for s in coarse.shape_zyx], indexing="ij"), axis=-1)
        mapped_xyz = coarse.index_zyx_to_physical_xyz(index) + displacement_xyz
        target_zyx = mapped_xyz @ target_inverse[:3, :3].T + target_inverse[:3, 3]
        table = torch.from_numpy(np.ascontiguousarray(np.moveaxis(target_zyx, -1, 0)))[None]
        source_to_coarse = np.linalg.inv(coarse.index_zyx_to_physical_matrix()) @ self.geometry(source).index_zyx_to_physical_matrix()
        return _FieldMap(table, torch.from_numpy(source_to_coarse), coarse.shape_zyx)


def _apply(mapping: Any, points_zyx: torch.Tensor) -> torch.Tensor:
    if isinstance(mapping, torch.Tensor):
        matrix = mapping.to(points_zyx.device, points_zyx.dtype)
        return torch.addmm(matrix[:3, 3], points_zyx, matrix[:3, :3].T)  # one fused kernel
    return mapping(points_zyx)
