"""Each integrity problem is reported, by file, all at once, and nothing is written."""
import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from cctrnet.dataset.geometry import Geometry
from cctrnet.dataset.image_io import write_image
from cctrnet.dataset.integrity import DatasetIntegrityError
from cctrnet.fingerprint.extract import extract_fingerprint
from tests.conftest import blob_case, write_raw_dataset


def _problems(folder):
    with pytest.raises(DatasetIntegrityError) as info:
        extract_fingerprint(folder, progress=False)
    return info.value.problems


def test_valid_dataset_has_no_problem(tmp_path):
    folder = write_raw_dataset(tmp_path)
    fingerprint = extract_fingerprint(folder, progress=False)
    assert fingerprint["num_labeled_cases"] == 3 and fingerprint["num_unlabeled_cases"] == 1


def test_malformed_dataset_json(tmp_path):
    folder = write_raw_dataset(tmp_path)
    (folder / "dataset.json").write_text("{not json")
    problems = _problems(folder)
    assert len(problems) == 1 and "dataset.json" in problems[0] and "not valid JSON" in problems[0]


def test_incomplete_dataset_json_lists_missing_keys(tmp_path):
    folder = write_raw_dataset(tmp_path)
    content = json.loads((folder / "dataset.json").read_text())
    del content["labels"], content["file_ending"]
    (folder / "dataset.json").write_text(json.dumps(content))
    (problem,) = _problems(folder)
    assert "labels" in problem and "file_ending" in problem


def test_many_problems_reported_together(tmp_path):
    # .mha keeps NaN; SimpleITK's NIfTI reader turns non-finite voxels into 0 before we could see them
    folder = write_raw_dataset(tmp_path, num_labeled=4, num_unlabeled=0, file_ending=".mha")
    image, label, geometry = blob_case(0)
    # 1: label on another grid
    shifted = Geometry(geometry.shape_zyx, geometry.spacing_xyz, (0.0, 0.0, 0.0), geometry.direction_xyz)
    write_image(label, shifted, folder / "labelsTr" / "case000.mha")
    # 2: undeclared label value
    write_image(np.where(label == 2, 7, label).astype(np.uint8), geometry, folder / "labelsTr" / "case001.mha")
    # 3: NaN voxels
    broken = image.copy()
    broken[2, 5, 5] = np.nan
    write_image(broken, geometry, folder / "imagesTr" / "case002_0000.mha")
    # 4: binary mask saved as 0/255
    write_image(((label > 0) * 255).astype(np.uint8), geometry, folder / "labelsTr" / "case003.mha")
    problems = _problems(folder)
    text = "\n".join(problems)
    assert len(problems) == 4, text
    assert "case000.mha" in text and "origin" in text
    assert "case001.mha" in text and "[7]" in text
    assert "case002_0000.mha" in text and "NaN" in text
    assert "case003.mha" in text and "binary mask saved as 0/255" in text


def test_missing_channel_non_3d_and_unreadable(tmp_path):
    folder = write_raw_dataset(tmp_path, num_labeled=3, num_unlabeled=0)
    content = json.loads((folder / "dataset.json").read_text())
    content["channel_names"] = {"0": "T1", "1": "T2"}
    (folder / "dataset.json").write_text(json.dumps(content))
    image, label, geometry = blob_case(0)
    for case in ("case000", "case001"):
        write_image(image, geometry, folder / "imagesTr" / f"{case}_0001.nii.gz")
    # case002 lacks channel 1; case001's channel 1 becomes 2D; case000's is garbage
    sitk.WriteImage(sitk.GetImageFromArray(image[0]), str(folder / "imagesTr" / "case001_0001.nii.gz"))
    (folder / "imagesTr" / "case000_0001.nii.gz").write_bytes(b"this is not an image")
    text = "\n".join(_problems(folder))
    assert "case002_0001.nii.gz" in text and "missing channel" in text
    assert "case001_0001.nii.gz" in text and "3D" in text
    assert "case000_0001.nii.gz" in text and "cannot be read" in text


def test_no_labeled_case(tmp_path):
    folder = write_raw_dataset(tmp_path, num_labeled=0, num_unlabeled=2)
    (problem,) = _problems(folder)
    assert "no labeled training case" in problem


def test_badly_named_file_and_orphan_label(tmp_path):
    folder = write_raw_dataset(tmp_path)
    (folder / "imagesTr" / "case009.nii.gz").write_bytes(b"")
    image, label, geometry = blob_case(0)
    write_image(label, geometry, folder / "labelsTr" / "ghost.nii.gz")
    text = "\n".join(_problems(folder))
    assert "case009.nii.gz" in text and "does not follow" in text
    assert "ghost.nii.gz" in text and "without an image" in text


def test_cli_exits_non_zero_and_writes_nothing(tmp_path, cctr_folders):
    folder = write_raw_dataset(cctr_folders["cctr_raw"])
    write_image(np.full((6, 32, 40), 255, np.uint8), blob_case(0)[2], folder / "labelsTr" / "case000.nii.gz")
    result = subprocess.run([sys.executable, "-m", "cctrnet.cli.plan_and_preprocess", "-d", "1", "-np", "1"],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "case000.nii.gz" in result.stderr
    assert not any(cctr_folders["cctr_preprocessed"].iterdir())


def test_unknown_dataset_lists_existing_ones(tmp_path, cctr_folders):
    write_raw_dataset(cctr_folders["cctr_raw"], dataset_id=4, name="Other")
    result = subprocess.run([sys.executable, "-m", "cctrnet.cli.plan_and_preprocess", "-d", "7"],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "Dataset004_Other" in result.stderr and str(cctr_folders["cctr_raw"]) in result.stderr


def test_a_declared_label_that_never_occurs_is_a_warning_naming_it(tmp_path, capsys):
    folder = write_raw_dataset(tmp_path)
    content = json.loads((folder / "dataset.json").read_text())
    content["labels"] = {"background": 0, "a": 1, "b": 2, "tumour": 3}  # declared, drawn in no label map
    (folder / "dataset.json").write_text(json.dumps(content))
    fingerprint = extract_fingerprint(folder, progress=False)
    err = capsys.readouterr().err
    assert fingerprint["labels_never_present"] == ["tumour"]
    assert err.startswith("warning: ") and '"tumour" (3)' in err and str(folder / "dataset.json") in err
    assert '"a"' not in err and '"b"' not in err


def test_every_declared_label_present_gives_no_warning(tmp_path, capsys):
    fingerprint = extract_fingerprint(write_raw_dataset(tmp_path), progress=False)
    assert fingerprint["labels_never_present"] == [] and "warning" not in capsys.readouterr().err


# --- the checks no test executed before (issue 13: weak places) -------------------------------------------------
def _set_json(folder, **changes):
    content = json.loads((folder / "dataset.json").read_text())
    content.update(changes)
    (folder / "dataset.json").write_text(json.dumps(content))


@pytest.mark.parametrize("num_training", [3, 5])
def test_num_training_must_match_images_tr(tmp_path, num_training):
    folder = write_raw_dataset(tmp_path)  # 4 cases
    _set_json(folder, numTraining=num_training)
    (problem,) = _problems(folder)
    assert problem == f"{folder / 'dataset.json'}: numTraining is {num_training} but {folder / 'imagesTr'} holds 4 case(s)"


def test_num_training_equal_passes(tmp_path):
    folder = write_raw_dataset(tmp_path)
    _set_json(folder, numTraining=4)
    extract_fingerprint(folder, progress=False)


def test_non_integer_and_nan_labels_are_named(tmp_path):
    folder = write_raw_dataset(tmp_path, num_labeled=3, num_unlabeled=0, file_ending=".mha")
    image, label, geometry = blob_case(0)
    half = label.astype(np.float32)
    half[3, 10, 10] = 0.5
    write_image(half, geometry, folder / "labelsTr" / "case000.mha")
    nan = blob_case(1)[1].astype(np.float32)
    nan[3, 10, 10] = np.nan
    write_image(nan, blob_case(1)[2], folder / "labelsTr" / "case001.mha")
    problems = _problems(folder)
    assert sorted(problems) == sorted([
        f"{folder / 'labelsTr' / 'case000.mha'}: contains non-integer values (a label map must hold class integers)",
        f"{folder / 'labelsTr' / 'case001.mha'}: contains NaN or infinite values"])


def test_an_extra_channel_file_is_named(tmp_path):
    folder = write_raw_dataset(tmp_path)
    image, _, geometry = blob_case(2)
    write_image(image, geometry, folder / "imagesTr" / "case002_0001.nii.gz")
    (problem,) = _problems(folder)
    assert problem == (f"{folder / 'imagesTr'}: case case002 has channel file(s) case002_0001.nii.gz but dataset.json "
                       "declares 1 channel(s)")


def test_a_missing_channel_file_is_named(tmp_path):
    folder = write_raw_dataset(tmp_path)
    _set_json(folder, channel_names={"0": "MRI", "1": "T2"})
    for case in ("case000", "case001", "case002"):
        image, _, geometry = blob_case(0)
        write_image(image, geometry, folder / "imagesTr" / f"{case}_0001.nii.gz")
    (problem,) = _problems(folder)
    assert problem == f"{folder / 'imagesTr'}: case case003 is missing channel file(s) case003_0001.nii.gz"


def test_missing_dataset_json_and_images_tr_are_both_named(tmp_path):
    folder = write_raw_dataset(tmp_path)
    (folder / "dataset.json").unlink()
    import shutil

    shutil.rmtree(folder / "imagesTr")
    problems = _problems(folder)
    assert problems == [f"{folder / 'dataset.json'}: missing (every raw dataset needs a dataset.json)",
                        f"{folder / 'imagesTr'}: missing folder (training images go here)"]


def test_missing_images_tr_alone(tmp_path):
    folder = write_raw_dataset(tmp_path)
    import shutil

    shutil.rmtree(folder / "imagesTr")
    assert _problems(folder) == [f"{folder / 'imagesTr'}: missing folder (training images go here)"]


def test_undeclared_value_is_named_exactly(tmp_path):
    folder = write_raw_dataset(tmp_path)
    _, label, geometry = blob_case(0)
    write_image(np.where(label == 2, 3, label).astype(np.uint8), geometry, folder / "labelsTr" / "case000.nii.gz")
    assert _problems(folder) == [f"{folder / 'labelsTr' / 'case000.nii.gz'}: label value(s) [3] are not declared in "
                                 "dataset.json (declared: [0, 1, 2])"]


def test_nan_voxel_count_is_exact(tmp_path):
    folder = write_raw_dataset(tmp_path, file_ending=".mha")
    image, _, geometry = blob_case(3)
    image = image.astype(np.float32)
    image[1, 2, 3] = np.nan
    image[2, 2, 3] = np.inf
    write_image(image, geometry, folder / "imagesTr" / "case003_0000.mha")
    assert _problems(folder) == [f"{folder / 'imagesTr' / 'case003_0000.mha'}: 2 voxel(s) are NaN or infinite"]
