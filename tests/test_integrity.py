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
