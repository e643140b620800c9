import numpy as np
import SimpleITK as sitk

from cctrnet.dataset.geometry import Geometry
from tests.conftest import OBLIQUE_DIRECTION


def _geometry():
    return Geometry((5, 7, 9), (0.7, 0.9, 5.0), (10.0, -3.0, 2.5), OBLIQUE_DIRECTION)


def test_index_to_physical_matches_simpleitk_and_round_trips():
    geometry = _geometry()
    image = geometry.reference_image()
    rng = np.random.default_rng(0)
    index_zyx = rng.uniform(0, 5, size=(20, 3))
    points = geometry.index_zyx_to_physical_xyz(index_zyx)
    for idx, point in zip(index_zyx, points):
        expected = image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in idx[::-1]))
        np.testing.assert_allclose(point, expected, atol=1e-9)
    np.testing.assert_allclose(geometry.physical_xyz_to_index_zyx(points), index_zyx, atol=1e-9)


def test_sitk_round_trip_and_dict_round_trip():
    geometry = _geometry()
    image = geometry.apply_to_sitk(sitk.Image([9, 7, 5], sitk.sitkFloat32))
    assert Geometry.from_sitk(image) == geometry
    assert Geometry.from_dict(geometry.to_dict()) == geometry


def test_cropped_grid_keeps_physical_positions():
    geometry = _geometry()
    cropped = geometry.cropped((1, 2, 3), (4, 6, 8))
    assert cropped.shape_zyx == (3, 4, 5)
    np.testing.assert_allclose(cropped.index_zyx_to_physical_xyz([0, 0, 0]), geometry.index_zyx_to_physical_xyz([1, 2, 3]))
    np.testing.assert_allclose(cropped.index_zyx_to_physical_xyz([2, 3, 4]), geometry.index_zyx_to_physical_xyz([3, 5, 7]))


def test_resampled_in_plane_preserves_extent_and_z():
    geometry = _geometry()
    new = geometry.resampled_in_plane((1.8, 1.4))
    assert new.shape_zyx[0] == geometry.shape_zyx[0]
    assert new.spacing_xyz[2] == geometry.spacing_xyz[2]
    # voxel-edge extent along x and y is unchanged
    for axis_xyz, axis_zyx in ((0, 2), (1, 1)):
        old_extent = geometry.shape_zyx[axis_zyx] * geometry.spacing_xyz[axis_xyz]
        new_extent = new.shape_zyx[axis_zyx] * new.spacing_xyz[axis_xyz]
        assert abs(old_extent - new_extent) < 1e-9
    # the outer voxel edge (index -0.5) lies at the same physical point in both grids
    np.testing.assert_allclose(new.index_zyx_to_physical_xyz([0, -0.5, -0.5]),
                               geometry.index_zyx_to_physical_xyz([0, -0.5, -0.5]), atol=1e-9)


def test_differences_name_the_fields():
    geometry = _geometry()
    other = Geometry((5, 7, 9), (0.7, 0.9, 6.0), (10.0, -3.0, 2.5), OBLIQUE_DIRECTION)
    differences = geometry.differences(other)
    assert len(differences) == 1 and differences[0].startswith("spacing")
    assert geometry.same_grid(geometry) and not geometry.same_grid(other)
