import numpy as np
import pytest

from cctrnet.dataset.geometry import Geometry
from cctrnet.dataset.image_io import write_image
from cctrnet.dataset.raw_dataset import RawDataset
from cctrnet.preprocessing.case_storage import load_preprocessed_case, preprocessed_geometry
from cctrnet.preprocessing.normalization import normalize_channel
from cctrnet.preprocessing.preprocessor import preprocess_arrays, preprocess_dataset
from cctrnet.preprocessing.revert import label_to_raw, probabilities_to_raw
from tests.conftest import OBLIQUE_DIRECTION, blob_case, write_raw_dataset

LABELS = [0, 1, 2]


def _configuration(spacing_yx):
    return {"spacing_yx": list(spacing_yx), "normalization": [{"scheme": "ZScoreNormalization", "parameters": {}}]}


def _dice(a, b, value):
    a, b = a == value, b == value
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_round_trip_without_resampling_is_exact():
    image, label, geometry = blob_case(3)
    spacing_yx = (geometry.spacing_xyz[1], geometry.spacing_xyz[0])
    data, seg, properties = preprocess_arrays(image[None], label, geometry, _configuration(spacing_yx), LABELS)
    assert seg.shape == data.shape[1:] and data.shape[1:] == tuple(properties["geometry_cropped"]["shape_zyx"])
    np.testing.assert_array_equal(label_to_raw(seg, properties, LABELS), label)
    assert Geometry.from_dict(properties["geometry_raw"]) == geometry


@pytest.mark.parametrize("direction", [OBLIQUE_DIRECTION, (1, 0, 0, 0, 1, 0, 0, 0, 1)])
def test_round_trip_with_resampling_restores_geometry_and_labels(direction):
    image, label, geometry = blob_case(5, shape_zyx=(5, 48, 56), spacing_xyz=(0.9, 1.1, 7.0), direction=direction)
    data, seg, properties = preprocess_arrays(image[None], label, geometry, _configuration((1.6, 1.4)), LABELS)
    target = preprocessed_geometry(properties)
    assert target.spacing_xyz[2] == geometry.spacing_xyz[2] and target.shape_zyx[0] == data.shape[1]
    np.testing.assert_allclose(target.spacing_xyz[:2], (1.4, 1.6), rtol=0.05)
    assert set(np.unique(seg)) <= set(LABELS)
    # the label at a physical point is the same in the preprocessed and the raw grid (away from borders)
    for value in (1, 2):
        centre_zyx = np.argwhere(seg == value).mean(axis=0)
        raw_index = np.round(geometry.physical_xyz_to_index_zyx(target.index_zyx_to_physical_xyz(centre_zyx))).astype(int)
        assert label[tuple(raw_index)] == value
    restored = label_to_raw(seg, properties, LABELS)
    assert restored.shape == label.shape
    for value in (1, 2):
        assert _dice(restored, label, value) > 0.85
    # probabilities: a one-hot map goes back to a valid distribution whose argmax is the restored label
    one_hot = np.stack([(seg == v).astype(np.float32) for v in LABELS])
    probabilities = probabilities_to_raw(one_hot, properties)
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-4)
    assert np.mean(np.argmax(probabilities, axis=0) == restored) > 0.99


def test_normalisation_schemes():
    volume = np.array([[[-2000.0, 0.0, 100.0, 5000.0]]])
    ct = normalize_channel(volume, "CTNormalization",
                           {"mean": 50.0, "std": 25.0, "percentile_00_5": -100.0, "percentile_99_5": 200.0})
    np.testing.assert_allclose(ct.ravel(), [(-100 - 50) / 25, -2.0, 2.0, (200 - 50) / 25])
    z = normalize_channel(volume, "ZScoreNormalization", {})
    assert abs(z.mean()) < 1e-6 and abs(z.std() - 1) < 1e-5
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalize_channel(volume, "Nope", {})


def test_dataset_preprocessing_is_resumable_and_detects_stale_cases(tmp_path):
    folder = write_raw_dataset(tmp_path / "raw", num_labeled=2, num_unlabeled=1)
    cases = RawDataset.load(folder).training_cases()
    out = tmp_path / "pre"
    assert preprocess_dataset(cases, _configuration((1.5, 1.5)), LABELS, out, progress=False) == {
        "preprocessed": 3, "skipped_up_to_date": 0}
    data, seg, properties = load_preprocessed_case(out, "case002")
    assert seg is None and not properties["is_labeled"] and data.dtype == np.float32
    data, seg, properties = load_preprocessed_case(out, "case000")
    assert seg.dtype == np.int16 and properties["class_slices"]["1"] == list(range(1, 6))
    assert preprocess_dataset(cases, _configuration((1.5, 1.5)), LABELS, out, progress=False)["preprocessed"] == 0
    (out / "case001_data.npy").write_bytes(b"truncated")  # a damaged case is redone
    assert preprocess_dataset(cases, _configuration((1.5, 1.5)), LABELS, out, progress=False)["preprocessed"] == 1
    assert preprocess_dataset(cases, _configuration((2.0, 2.0)), LABELS, out, progress=False)["preprocessed"] == 3
    image, label, geometry = blob_case(9)  # a raw file replaced by the user makes its case stale
    write_image(label, geometry, folder / "labelsTr" / "case001.nii.gz")
    assert preprocess_dataset(cases, _configuration((2.0, 2.0)), LABELS, out, progress=False)["preprocessed"] == 1
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_preprocessed_intensities_are_the_normalised_raw_crop():
    """Without resampling, each preprocessed voxel is the z-scored raw voxel of the crop (issue 13: weak places)."""
    image, label, geometry = blob_case(4, shape_zyx=(5, 30, 44))  # unequal y/x, zero padding around the body
    spacing_yx = (geometry.spacing_xyz[1], geometry.spacing_xyz[0])
    data, seg, properties = preprocess_arrays(image[None], label, geometry, _configuration(spacing_yx), LABELS)
    start, stop = properties["crop_bbox_zyx"]
    nonzero = np.argwhere(image != 0)
    assert start == nonzero.min(0).tolist() and stop == (nonzero.max(0) + 1).tolist()
    crop = image[tuple(slice(a, b) for a, b in zip(start, stop))]
    expected = (crop - crop.mean()) / crop.std()
    np.testing.assert_allclose(data[0], expected, atol=1e-4)
    np.testing.assert_array_equal(seg, label[tuple(slice(a, b) for a, b in zip(start, stop))])
    cropped = Geometry.from_dict(properties["geometry_cropped"])
    np.testing.assert_allclose(cropped.origin_xyz, geometry.index_zyx_to_physical_xyz(np.array(start, float)))
