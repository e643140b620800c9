"""Synapse converter on a tiny TransUNet-style release (npz slices, h5 volumes), and the geometry tolerance."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from cctrnet.dataset.dataset_json import load_dataset_json
from cctrnet.dataset.geometry import Geometry
from cctrnet.fingerprint.extract import extract_fingerprint
from cctrnet.utilities.file_io import save_json
from dataset_conversion import acdc, synapse
from dataset_conversion.conversion_utils import ConversionError
from dataset_conversion.geometry_tolerance import DEFAULT_GEOMETRY_TOLERANCE_MM, largest_voxel_displacement_mm

try:
    import h5py
except ImportError:  # the test extras install it; the geometry tests below run without it
    h5py = None
needs_h5py = pytest.mark.skipif(h5py is None, reason="writes HDF5 volumes: pip install -e '.[test]' (h5py)")

SHAPE_YX = (8, 6)  # not square: a transposed slice would show
TRAIN_SLICES = {"case0005": 3, "case0007": 4}
TEST_DEPTHS = {"case0001": 2, "case0002": 5}
SPLIT = {"train": ["case0005", "case0007"], "val": [], "test": ["case0001", "case0002"]}
# written out independently of the converter's tables (TransUNet's result-table order)
EXPECTED_LABELS = {"background": 0, "aorta": 1, "gallbladder": 2, "kidney_left": 3, "kidney_right": 4,
                   "liver": 5, "pancreas": 6, "spleen": 7, "stomach": 8}


def slice_image(slice_number: int) -> np.ndarray:
    """A slice whose every voxel tells its slice number and in-plane position, inside [0, 1]."""
    y, x = np.mgrid[0:SHAPE_YX[0], 0:SHAPE_YX[1]]
    return ((100 * slice_number + 10 * y + x) / 1000.0).astype(np.float32)


def slice_label(case_number: int, slice_number: int) -> np.ndarray:
    return ((np.arange(np.prod(SHAPE_YX)).reshape(SHAPE_YX) + case_number + slice_number) % 9).astype(np.float32)


def make_release(root: Path, with_list: bool = True) -> Path:
    train, test = root / "train_npz", root / "test_vol_h5"
    train.mkdir(parents=True)
    test.mkdir(parents=True)
    names = []
    for case, count in TRAIN_SLICES.items():
        for k in reversed(range(count)):  # written in reverse: order must come from the numbers
            names.append(f"{case}_slice{k:03d}")
            np.savez(train / f"{names[-1]}.npz", image=slice_image(k), label=slice_label(int(case[-4:]), k))
    for case, depth in TEST_DEPTHS.items():
        with h5py.File(test / f"{case}.npy.h5", "w") as f:
            f["image"] = np.stack([slice_image(k) for k in range(depth)])
            f["label"] = np.stack([slice_label(int(case[-4:]), k) for k in range(depth)])
    if with_list:
        lists = root / "lists" / "lists_Synapse"
        lists.mkdir(parents=True)
        (lists / "train.txt").write_text("\n".join(sorted(names)) + "\n")
        (lists / "test_vol.txt").write_text("\n".join(TEST_DEPTHS) + "\n")
    return root


def read(path: Path) -> tuple[np.ndarray, sitk.Image]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image


def names_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


# --- TransUNet release ------------------------------------------------------------------------
@needs_h5py
def test_release_is_detected_stacked_in_slice_order_and_declared(tmp_path):
    release = make_release(tmp_path / "data" / "Synapse")
    out = synapse.convert_synapse(tmp_path, tmp_path / "raw", SPLIT)  # found under data/Synapse

    assert names_in(out / "imagesTr") == {"case0005_0000.nii.gz", "case0007_0000.nii.gz"}
    assert names_in(out / "labelsTs") == {"case0001.nii.gz", "case0002.nii.gz"}
    image, image_sitk = read(out / "imagesTr" / "case0007_0000.nii.gz")
    assert image.shape == (4, *SHAPE_YX) and image.dtype == np.float32
    for k in range(4):
        np.testing.assert_allclose(image[k], slice_image(k), atol=1e-7)  # slice k at z = k, y and x kept
    label, label_sitk = read(out / "labelsTr" / "case0007.nii.gz")
    assert label.dtype == np.uint8
    assert np.array_equal(label, np.stack([slice_label(7, k) for k in range(4)]))  # values 0..8 unchanged
    assert set(np.unique(label)) == set(range(9))
    for written in (image_sitk, label_sitk):
        assert np.allclose(written.GetSpacing(), (0.76, 0.76, 3.0))  # declared default, (x, y, z)
        assert np.allclose(written.GetOrigin(), (0, 0, 0)) and np.allclose(written.GetDirection(), np.eye(3).ravel())

    volume, _ = read(out / "imagesTs" / "case0002_0000.nii.gz")
    with h5py.File(release / "test_vol_h5" / "case0002.npy.h5", "r") as f:
        assert np.array_equal(volume, f["image"][:])
        assert np.array_equal(read(out / "labelsTs" / "case0002.nii.gz")[0], f["label"][:])

    content = load_dataset_json(out / "dataset.json")
    assert content["channel_names"] == {"0": "CT_scaled_0_1"}  # starts with CT: the planner keeps CTNormalization
    assert content["labels"] == EXPECTED_LABELS
    assert content["numTraining"] == 2 and content["numTest"] == 2 and content["source_layout"] == "transunet"
    assert content["declared_spacing_zyx_mm"] == [3.0, 0.76, 0.76]
    assert content["intensity_scaling"]["source_hu_window"] == [-125.0, 275.0]
    assert content["source_label_mapping"]["1 aorta"] == 1 and content["source_label_mapping"]["8 stomach"] == 8
    # the next stage accepts the dataset and treats the scaled channel as CT (the planner then picks CTNormalization)
    fingerprint = extract_fingerprint(out, progress=False)
    assert fingerprint["ct_channels"] == [0]
    assert fingerprint["foreground_intensity_properties_per_channel"]["0"]["max"] <= 1.0


@needs_h5py
def test_declared_spacing_and_layout_from_the_command_line(tmp_path, capsys):
    make_release(tmp_path / "Synapse")
    save_json(SPLIT, tmp_path / "split.json")
    synapse.main(["-i", str(tmp_path), "-o", str(tmp_path / "raw"), "-np", "2", "--layout", "transunet",
                  "--split", str(tmp_path / "split.json"), "--spacing-zyx-mm", "2.5", "0.7", "0.8"])
    assert "Dataset028_Synapse" in capsys.readouterr().out
    out = tmp_path / "raw" / "Dataset028_Synapse"
    assert np.allclose(read(out / "labelsTs" / "case0001.nii.gz")[1].GetSpacing(), (0.8, 0.7, 2.5))
    np.testing.assert_allclose(read(out / "imagesTr" / "case0005_0000.nii.gz")[0][2], slice_image(2), atol=1e-7)
    assert load_dataset_json(out / "dataset.json")["declared_spacing_zyx_mm"] == [2.5, 0.7, 0.8]
    with pytest.raises(SystemExit, match="no img/ and label/ folders"):
        synapse.main(["-i", str(tmp_path), "-o", str(tmp_path / "raw2"), "--layout", "nifti"])


def test_spacing_option_is_refused_for_the_nifti_download(tmp_path, capsys):
    write_nifti(np.zeros((2, 4, 4), np.int16), tmp_path / "Training" / "img" / "img0005.nii.gz")
    write_nifti(np.zeros((2, 4, 4), np.uint8), tmp_path / "Training" / "label" / "label0005.nii.gz")
    with pytest.raises(SystemExit):
        synapse.main(["-i", str(tmp_path), "-o", str(tmp_path / "raw"), "--spacing-zyx-mm", "3", "1", "1"])
    assert "applies to the transunet layout only" in capsys.readouterr().err


@needs_h5py
def test_gap_in_slice_numbers_names_the_case_and_writes_nothing(tmp_path):
    release = make_release(tmp_path / "release", with_list=False)
    (release / "train_npz" / "case0007_slice001.npz").unlink()
    with pytest.raises(ConversionError) as caught:
        synapse.convert_synapse(release, tmp_path / "raw", SPLIT)
    assert len(caught.value.problems) == 1, caught.value.problems
    assert "case0007 slice numbers must run 000..003 without gaps; missing 001" in str(caught.value)
    assert names_in(tmp_path / "raw") == set()


@needs_h5py
def test_slices_of_different_shapes_name_the_case(tmp_path):
    release = make_release(tmp_path / "release")
    np.savez(release / "train_npz" / "case0005_slice002.npz", image=np.zeros((8, 7), np.float32),
             label=np.zeros((8, 7), np.float32))
    with pytest.raises(ConversionError, match=r"case0005 slices differ in shape: case0005_slice002.npz is \(8, 7\)"):
        synapse.convert_synapse(release, tmp_path / "raw", SPLIT)
    assert names_in(tmp_path / "raw") == set()


@needs_h5py
def test_train_list_reveals_a_missing_last_slice(tmp_path):
    release = make_release(tmp_path / "release")
    (release / "train_npz" / "case0005_slice002.npz").unlink()  # no gap left: only the list can tell
    with pytest.raises(ConversionError, match=r"train.txt: lists 1 slice\(s\) not found in .*: case0005_slice002"):
        synapse.convert_synapse(release, tmp_path / "raw", SPLIT)


@needs_h5py
def test_missing_h5py_names_the_file_and_the_install_command(tmp_path, monkeypatch):
    release = make_release(tmp_path / "release")
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    with pytest.raises(ConversionError) as caught:
        synapse.convert_synapse(release, tmp_path / "raw", SPLIT)
    message = str(caught.value)
    assert len(caught.value.problems) == 1, message
    assert "case0001.npy.h5: reading TransUNet's HDF5 volumes needs h5py" in message
    assert "pip install h5py" in message and "1 more volume" in message
    # the slices need no h5py: a split without test volumes converts
    out = synapse.convert_synapse(release, tmp_path / "raw", {"train": ["case0005"], "val": [], "test": []})
    assert names_in(out / "imagesTr") == {"case0005_0000.nii.gz"}


@needs_h5py
def test_release_content_problems_name_their_file(tmp_path):
    release = make_release(tmp_path / "release")
    with h5py.File(release / "test_vol_h5" / "case0002.npy.h5", "r+") as f:
        f["label"][0, 0, 0] = 9
    with h5py.File(release / "test_vol_h5" / "case0001.npy.h5", "r+") as f:
        f["image"][0, 0, 0] = 180.0  # Hounsfield units, not the release's scaling
    np.savez(release / "train_npz" / "case0005_slice001.npz", image=slice_image(1))  # no label
    with pytest.raises(ConversionError) as caught:
        synapse.convert_synapse(release, tmp_path / "raw", SPLIT)
    message = str(caught.value)
    assert len(caught.value.problems) == 3, message
    assert r"case0002.npy.h5: unexpected label value(s) [9]; expected 0..8" in message
    assert "case0001.npy.h5: image intensities span 0.001..180, expected 0..1" in message
    assert "case0005_slice001.npz: no label array" in message
    assert names_in(tmp_path / "raw") == set()


@needs_h5py
def test_missing_case_and_both_layouts_are_reported(tmp_path):
    release = make_release(tmp_path / "release")
    with pytest.raises(ConversionError, match=r"case0009: neither .*case0009.npy.h5 nor .*case0009_slice\*.npz found"):
        synapse.convert_synapse(release, tmp_path / "raw", {**SPLIT, "train": ["case0005", "case0009"]})
    (release / "Training" / "img").mkdir(parents=True)
    (release / "Training" / "label").mkdir(parents=True)
    with pytest.raises(ConversionError, match="choose one with --layout nifti or --layout transunet"):
        synapse.convert_synapse(release, tmp_path / "raw", SPLIT)


# --- geometry tolerance (NIfTI layout) --------------------------------------------------------
SPACING_XYZ = (1.5, 1.25, 4.0)
ORIGIN_XYZ = (-10.5, 20.25, 3.0)
VOLUME_SHAPE_ZYX = (3, 8, 6)


def write_nifti(array: np.ndarray, path: Path, origin_xyz=ORIGIN_XYZ, spacing_xyz=SPACING_XYZ) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing_xyz)
    image.SetOrigin(origin_xyz)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), True)


def make_download(root: Path, label_origin_xyz=ORIGIN_XYZ) -> Path:
    """Two BTCV cases; case0005's label header has the given origin."""
    for number in ("0005", "0001"):
        write_nifti(np.full(VOLUME_SHAPE_ZYX, 40, np.int16), root / "Training" / "img" / f"img{number}.nii.gz")
        label = np.zeros(VOLUME_SHAPE_ZYX, np.uint8)
        label[1, 2:4, 2:4] = 6  # BTCV liver
        origin = label_origin_xyz if number == "0005" else ORIGIN_XYZ
        write_nifti(label, root / "Training" / "label" / f"label{number}.nii.gz", origin_xyz=origin)
    return root


NIFTI_SPLIT = {"train": ["case0005"], "val": [], "test": ["case0001"]}


def test_origin_within_tolerance_warns_once_and_takes_the_image_geometry(tmp_path, capsys):
    shifted = (ORIGIN_XYZ[0], ORIGIN_XYZ[1] + 0.005, ORIGIN_XYZ[2])  # above rounding, below the 0.01 mm default
    download = make_download(tmp_path / "synapse", shifted)
    out = synapse.convert_synapse(download, tmp_path / "raw", NIFTI_SPLIT)

    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert len(warnings) == 1, warnings
    assert "label0005.nii.gz: grid differs from its image img0005.nii.gz (origin (x, y, z)" in warnings[0]
    assert "within the geometry tolerance of 0.01 mm" in warnings[0]
    label, label_sitk = read(out / "labelsTr" / "case0005.nii.gz")
    assert np.allclose(label_sitk.GetOrigin(), ORIGIN_XYZ, atol=1e-6)  # the image's origin, not the label's
    assert label[1, 2, 2] == 5  # BTCV liver -> our liver
    content = load_dataset_json(out / "dataset.json")
    assert content["geometry_tolerance_mm"] == DEFAULT_GEOMETRY_TOLERANCE_MM
    assert content["labels_given_image_geometry"] == ["case0005"]


def test_origin_beyond_tolerance_names_the_file_and_the_option(tmp_path, capsys):
    shifted = (ORIGIN_XYZ[0] + 0.5, ORIGIN_XYZ[1], ORIGIN_XYZ[2])
    download = make_download(tmp_path / "synapse", shifted)
    with pytest.raises(ConversionError) as caught:
        synapse.convert_synapse(download, tmp_path / "raw", NIFTI_SPLIT)
    message = str(caught.value)
    assert len(caught.value.problems) == 1, message
    assert "label0005.nii.gz: grid differs from its image img0005.nii.gz" in message
    assert "origin (x, y, z) (-10, 20.25, 3) vs (-10.5, 20.25, 3)" in message  # label vs image
    assert "voxels lie up to 0.5 mm apart, more than the geometry tolerance of 0.01 mm" in message
    assert "pass --geometry-tolerance-mm 0.50" in message
    assert names_in(tmp_path / "raw") == set()

    save_json(NIFTI_SPLIT, tmp_path / "split.json")
    synapse.main(["-i", str(download), "-o", str(tmp_path / "raw"), "-np", "1", "--split", str(tmp_path / "split.json"),
                  "--geometry-tolerance-mm", "0.6"])
    assert "within the geometry tolerance of 0.6 mm" in capsys.readouterr().err
    label_sitk = read(tmp_path / "raw" / "Dataset028_Synapse" / "labelsTr" / "case0005.nii.gz")[1]
    assert np.allclose(label_sitk.GetOrigin(), ORIGIN_XYZ, atol=1e-6)


def test_size_difference_and_negative_tolerance_are_always_problems(tmp_path):
    download = make_download(tmp_path / "synapse")
    write_nifti(np.zeros((3, 8, 5), np.uint8), download / "Training" / "label" / "label0001.nii.gz")
    settings = synapse.SynapseConversionSettings(geometry_tolerance_mm=1000.0)
    with pytest.raises(ConversionError, match=r"label0001.nii.gz: size \(z, y, x\) \(3, 8, 5\) differs"):
        synapse.convert_synapse(download, tmp_path / "raw", NIFTI_SPLIT, settings)
    with pytest.raises(ConversionError, match="--geometry-tolerance-mm must be a finite length of 0 mm or more"):
        acdc.convert_acdc(tmp_path, tmp_path / "raw", {"train": ["patient001"]},
                          acdc.AcdcConversionSettings(geometry_tolerance_mm=-1.0))


def test_voxel_displacement_covers_origin_spacing_and_direction():
    shape_zyx, spacing_xyz, origin_xyz = (3, 8, 6), (1.0, 1.0, 4.0), (0.0, 0.0, 0.0)
    grid = Geometry(shape_zyx, spacing_xyz, origin_xyz)
    assert largest_voxel_displacement_mm(grid, grid) == 0.0
    shifted = Geometry(shape_zyx, spacing_xyz, (0.0, 0.3, 0.4))
    assert largest_voxel_displacement_mm(grid, shifted) == pytest.approx(0.5)
    stretched = Geometry(shape_zyx, (1.01, 1.0, 4.0), origin_xyz)  # the last of 6 voxels in x moves 5 * 0.01 mm
    assert largest_voxel_displacement_mm(grid, stretched) == pytest.approx(0.05)
    flipped = Geometry(shape_zyx, spacing_xyz, origin_xyz, (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    assert largest_voxel_displacement_mm(grid, flipped) == pytest.approx(10.0)  # x index 5 lands at -5 instead of 5
