"""The geometry written beside saved probabilities, and the raw-grid paste of a crop (issue 13: weak places).

A non-identity direction, unequal y/x sizes and a crop that does not start at 0 make a swapped axis, a
forgotten origin shift or the geometry of the wrong grid visible.
"""
import numpy as np
import SimpleITK as sitk

from cctrnet.dataset.geometry import Geometry
from cctrnet.inference.export import export_prediction, probabilities_path_for, save_probabilities
from tests.conftest import OBLIQUE_DIRECTION

RAW = Geometry((4, 7, 9), (0.8, 1.1, 3.0), (-12.5, 4.0, 30.0), OBLIQUE_DIRECTION)
START, STOP = (1, 2, 1), (3, 6, 8)


def _properties() -> dict:
    cropped = RAW.cropped(START, STOP)
    return {"geometry_raw": RAW.to_dict(), "geometry_cropped": cropped.to_dict(),
            "geometry_preprocessed": cropped.to_dict(), "crop_bbox_zyx": [list(START), list(STOP)]}


def _probabilities(rng) -> np.ndarray:
    shape = tuple(b - a for a, b in zip(START, STOP))
    logits = rng.standard_normal((3, *shape))
    return (np.exp(logits) / np.exp(logits).sum(0)).astype(np.float32)


def test_saved_probabilities_carry_the_grid_they_lie_on(tmp_path):
    rng = np.random.default_rng(0)
    probabilities = rng.random((3, *RAW.shape_zyx)).astype(np.float32)
    save_probabilities(probabilities, RAW, [2, 0, 1], tmp_path / "case.npz")
    stored = np.load(tmp_path / "case.npz")
    assert stored["probabilities"].shape == (3, 4, 7, 9)
    np.testing.assert_array_equal(stored["probabilities"], probabilities)
    np.testing.assert_array_equal(stored["label_values"], [0, 1, 2])
    np.testing.assert_allclose(stored["spacing_xyz"], RAW.spacing_xyz)
    np.testing.assert_allclose(stored["origin_xyz"], RAW.origin_xyz)
    np.testing.assert_allclose(stored["direction_xyz"], RAW.direction_xyz)


def test_export_writes_labels_and_probabilities_on_the_raw_grid(tmp_path):
    rng = np.random.default_rng(1)
    probabilities = _probabilities(rng)
    output = tmp_path / "case7.nii.gz"
    segmentation = export_prediction(probabilities, _properties(), [0, 1, 2], output, ".nii.gz",
                                     with_probabilities=True, unprocessed_file=tmp_path / "raw" / "case7.nii.gz")
    image = sitk.ReadImage(str(output))
    assert image.GetSize() == (9, 7, 4)
    np.testing.assert_allclose(image.GetSpacing(), RAW.spacing_xyz, rtol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), RAW.origin_xyz, atol=1e-5)
    np.testing.assert_allclose(image.GetDirection(), RAW.direction_xyz, atol=1e-6)
    written = sitk.GetArrayFromImage(image)
    np.testing.assert_array_equal(written, segmentation)
    inside = tuple(slice(a, b) for a, b in zip(START, STOP))
    np.testing.assert_array_equal(written[inside], probabilities.argmax(0))  # the crop lands where it came from
    outside = np.ones(RAW.shape_zyx, bool)
    outside[inside] = False
    assert not written[outside].any()
    stored = np.load(probabilities_path_for(output, ".nii.gz"))
    assert probabilities_path_for(output, ".nii.gz").name == "case7.npz"
    np.testing.assert_allclose(stored["probabilities"][(slice(None),) + inside], probabilities, atol=1e-6)
    np.testing.assert_array_equal(stored["probabilities"][0][outside], 1.0)
    np.testing.assert_array_equal(stored["probabilities"][1:][:, outside], 0.0)
    np.testing.assert_allclose(stored["origin_xyz"], RAW.origin_xyz)  # the raw grid's, not the crop's
    np.testing.assert_allclose(stored["direction_xyz"], RAW.direction_xyz)
    np.testing.assert_allclose(stored["spacing_xyz"], RAW.spacing_xyz)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "raw" / "case7.nii.gz"))),
                                  segmentation)


def test_cropped_geometry_moves_the_origin_along_the_oblique_axes():
    cropped = RAW.cropped(START, STOP)
    np.testing.assert_allclose(cropped.origin_xyz, RAW.index_zyx_to_physical_xyz(np.array(START, float)))
    assert cropped.shape_zyx == (2, 4, 7)
    # the first voxel of the crop is the same physical point as raw voxel START
    np.testing.assert_allclose(cropped.index_zyx_to_physical_xyz(np.zeros(3)),
                               RAW.index_zyx_to_physical_xyz(np.array(START, float)), atol=1e-9)
