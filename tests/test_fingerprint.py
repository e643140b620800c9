import numpy as np

from cctrnet.dataset.dataset_json import write_dataset_json
from cctrnet.dataset.geometry import Geometry
from cctrnet.dataset.image_io import write_image
from cctrnet.fingerprint.extract import extract_fingerprint


def test_fingerprint_values_on_hand_made_volumes(tmp_path):
    folder = tmp_path / "Dataset002_Hand"
    # case a: 4x10x12, non-zero box z 1..3, y 2..7, x 3..10; foreground = 6 voxels of value 10 and 2 of value 20
    image = np.zeros((4, 10, 12), np.float32)
    image[1:4, 2:8, 3:11] = 1.0
    label = np.zeros((4, 10, 12), np.uint8)
    image[2, 4, 4:10] = 10.0
    label[2, 4, 4:10] = 1
    image[3, 5, 5:7] = 20.0
    label[3, 5, 5:7] = 1
    g = Geometry((4, 10, 12), (0.5, 0.75, 3.0), (0, 0, 0))
    write_image(image, g, folder / "imagesTr" / "a_0000.nii.gz")
    write_image(label, g, folder / "labelsTr" / "a.nii.gz")
    # case b: unlabeled, all voxels non-zero, other spacing
    write_image(np.full((5, 8, 8), 3.0, np.float32), Geometry((5, 8, 8), (1, 1, 5), (0, 0, 0)),
                folder / "imagesTr" / "b_0000.nii.gz")
    write_dataset_json(folder, {0: "CT"}, {"background": 0, "organ": 1}, 2)

    fp = extract_fingerprint(folder, progress=False)
    a, b = fp["cases"]["a"], fp["cases"]["b"]
    assert a["spacing_zyx"] == [3.0, 0.75, 0.5] and a["shape_zyx"] == [4, 10, 12]
    assert a["shape_after_crop_zyx"] == [3, 6, 8]
    np.testing.assert_allclose(a["relative_size_after_crop"], 3 * 6 * 8 / (4 * 10 * 12))
    assert b["shape_after_crop_zyx"] == [5, 8, 8] and not b["is_labeled"]
    assert fp["ct_channels"] == [0]
    assert fp["num_labeled_cases"] == 1 and fp["num_unlabeled_cases"] == 1
    stats = fp["foreground_intensity_properties_per_channel"]["0"]
    values = np.array([10.0] * 6 + [20.0] * 2)  # unlabeled cases contribute no foreground
    np.testing.assert_allclose(stats["mean"], values.mean())
    np.testing.assert_allclose(stats["std"], values.std())
    np.testing.assert_allclose(stats["max"], 20.0)
    np.testing.assert_allclose(stats["percentile_99_5"], np.percentile(values, 99.5))
