"""Point maps through a displacement field and through a reference volume, on grids with a rotated, flipped
direction and unequal y/x sizes (axis swaps hide behind identity directions and square slices)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from cctrnet.dataset.geometry import Geometry
from cctrnet.registration.point_mapping import PointMapper


# the mapper reads a field tabulated every point_map_field_stride_yx (4) voxels in plane, trilinearly: about 0.06
# voxel off for this field; an axis swap or a wrong direction is off by many voxels
FIELD_TOLERANCE_VOXELS = 0.15


def _direction(angle_deg: float, flip_x: bool) -> tuple[float, ...]:
    a = np.deg2rad(angle_deg)
    rotation = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    return tuple((rotation @ np.diag([-1.0 if flip_x else 1.0, 1.0, 1.0])).ravel())


GRIDS = {  # unequal y and x everywhere, three different directions
    "a": Geometry((6, 20, 31), (1.2, 0.9, 5.0), (10.0, -20.0, 3.0), _direction(30.0, False)),
    "b": Geometry((7, 26, 17), (1.0, 1.1, 4.0), (-5.0, 8.0, -2.0), _direction(-20.0, True)),
    "c": Geometry((5, 18, 24), (1.3, 1.0, 6.0), (0.0, 0.0, 5.0), _direction(75.0, False)),
}


def _affine(angle_deg: float, shift_mm: tuple[float, float, float]) -> sitk.AffineTransform:
    transform = sitk.AffineTransform(3)
    a = np.deg2rad(angle_deg)
    transform.SetMatrix([np.cos(a), -np.sin(a), 0.0, np.sin(a), np.cos(a), 0.0, 0.0, 0.0, 1.02])
    transform.SetTranslation(shift_mm)
    return transform


def _with_smooth_field(affine: sitk.AffineTransform, grid: Geometry) -> sitk.CompositeTransform:
    """affine o (x + u(x)), u a smooth in-plane displacement (mm) tabulated on ``grid``."""
    index = np.stack(np.meshgrid(*[np.arange(s) for s in grid.shape_zyx], indexing="ij"), axis=-1)
    xyz = grid.index_zyx_to_physical_xyz(index)
    displacement = np.zeros_like(xyz)
    displacement[..., 0] = 2.0 * np.sin(xyz[..., 1] / 9.0)
    displacement[..., 1] = 1.5 * np.cos(xyz[..., 0] / 11.0)
    image = sitk.GetImageFromArray(displacement.astype(np.float64), isVector=True)
    grid.apply_to_sitk(image)
    field = sitk.DisplacementFieldTransform(image)
    composite = sitk.CompositeTransform(3)
    composite.AddTransform(affine)
    composite.AddTransform(field)
    return composite


class FakeStore:
    """Only the pairs it is given, as (moving, fixed) -> transform mapping fixed points to moving points."""

    folder = Path("fake-store")

    def __init__(self, pairs: dict[tuple[str, str], object]):
        self.pairs = pairs

    def successful(self, moving: str, fixed: str) -> bool:
        return (moving, fixed) in self.pairs

    def transform(self, moving: str, fixed: str, inverse: bool = False):
        assert not inverse
        return self.pairs[(moving, fixed)]

    def field_path(self, moving: str, fixed: str) -> Path:
        return self.folder / "absent.npz"


def _mapper(pairs: dict[tuple[str, str], object]) -> PointMapper:
    mapper = PointMapper(Path("unused"), FakeStore(pairs), all_cases=sorted(GRIDS))
    mapper._geometries = dict(GRIDS)  # the grids above instead of preprocessed properties
    return mapper


def _points(source: str, count: int = 40, seed: int = 0) -> np.ndarray:
    """Voxel points (z, y, x) away from the borders, not on voxel centres."""
    shape = np.array(GRIDS[source].shape_zyx)
    rng = np.random.default_rng(seed)
    return 1.0 + rng.uniform(0.0, 1.0, (count, 3)) * (shape - 3)


def _truth(chain: list[tuple[str, object]], source: str, target: str, points_zyx: np.ndarray) -> np.ndarray:
    """Each transform applied in turn to physical points of ``source``, then indices of ``target``."""
    xyz = GRIDS[source].index_zyx_to_physical_xyz(points_zyx)
    for _, transform in chain:
        xyz = np.array([transform.TransformPoint(tuple(map(float, p))) for p in xyz])
    return GRIDS[target].physical_xyz_to_index_zyx(xyz)


def test_a_displacement_field_pair_maps_points_like_the_transform_itself():
    transform = _with_smooth_field(_affine(8.0, (3.0, -2.0, 1.0)), GRIDS["a"])
    mapper = _mapper({("c", "a"): transform})  # c registered onto a: maps a's points into c
    points = _points("a")
    found = mapper.map_points("a", "c", torch.from_numpy(points)).numpy()
    expected = _truth([("a->c", transform)], "a", "c", points)
    assert np.abs(found - expected).max() < FIELD_TOLERANCE_VOXELS


def test_an_affine_pair_read_backwards_is_its_exact_inverse():
    transform = _affine(-12.0, (4.0, 1.0, -3.0))
    mapper = _mapper({("a", "c"): transform})  # a onto c: c -> a directly, a -> c by the inverse
    points = _points("a", seed=1)
    found = mapper.map_points("a", "c", torch.from_numpy(points)).numpy()
    back = mapper.map_points("c", "a", torch.from_numpy(found)).numpy()
    assert np.abs(back - points).max() < 1e-9
    expected = _truth([("a->c", transform.GetInverse())], "a", "c", points)
    assert np.abs(found - expected).max() < 1e-9


@pytest.mark.parametrize("deformable", [False, True])
def test_maps_through_the_reference_compose_both_pairs(deformable):
    first = _affine(10.0, (2.0, 3.0, 0.0))  # b onto a: a's points into b
    second = _affine(-15.0, (-1.0, 2.0, 2.0))  # c onto b: b's points into c
    if deformable:
        first = _with_smooth_field(first, GRIDS["a"])
    mapper = _mapper({("b", "a"): first, ("c", "b"): second})  # no a/c pair: only through b, the reference
    points = _points("a", seed=2)
    found = mapper.map_points("a", "c", torch.from_numpy(points)).numpy()
    expected = _truth([("a->b", first), ("b->c", second)], "a", "c", points)
    assert np.abs(found - expected).max() < (FIELD_TOLERANCE_VOXELS if deformable else 1e-9)
    many, available = mapper.map_points_to_many("a", ["b", "c"], torch.from_numpy(points))
    assert available.tolist() == [True, True]
    assert np.abs(many[1].numpy() - found).max() < 1e-9
