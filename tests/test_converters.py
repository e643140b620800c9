"""ACDC and Synapse converters on tiny synthetic downloads laid out exactly like the real ones."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from cctrnet.dataset.dataset_json import load_dataset_json
from cctrnet.dataset.raw_dataset import RawDataset
from cctrnet.utilities.file_io import load_json, save_json
from dataset_conversion import acdc, synapse
from dataset_conversion.conversion_utils import ConversionError, load_split, packaged_split_file, split_problems

SPACING_XYZ = (1.5, 1.25, 8.0)
ORIGIN_XYZ = (-10.5, 20.25, 3.0)
DIRECTION_XYZ = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
SHAPE_ZYX = (4, 16, 16)


def write_volume(array: np.ndarray, path: Path, origin_xyz=ORIGIN_XYZ) -> None:
    image = sitk.GetImageFromArray(array)
    if array.ndim == 3:
        image.SetSpacing(SPACING_XYZ)
        image.SetOrigin(origin_xyz)
        image.SetDirection(DIRECTION_XYZ)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), True)


def read_volume(path: Path) -> tuple[np.ndarray, sitk.Image]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image


def assert_same_geometry(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    assert np.allclose(a.GetSpacing(), b.GetSpacing())
    assert np.allclose(a.GetOrigin(), b.GetOrigin())
    assert np.allclose(a.GetDirection(), b.GetDirection())


# --- synthetic ACDC ---------------------------------------------------------------------------
ACDC_FRAMES = {"patient001": (1, 12), "patient002": (1, 9), "patient003": (2, 14), "patient004": (1, 10),
               "patient005": (1, 11), "patient006": (1, 8)}
ACDC_TEST_FRAMES = {"patient101": (1, 13)}
ACDC_SPLIT = {"train": ["patient001", "patient002", "patient003"], "val": ["patient004"],
              "test": ["patient005", "patient101"], "source": "tiny test split"}


def make_acdc(root: Path, seed: int = 0) -> Path:
    """training/ and testing/ patient folders with Info.cfg, 4d file and ED/ES frames with _gt."""
    rng = np.random.default_rng(seed)
    for part, frames in (("training", ACDC_FRAMES), ("testing", ACDC_TEST_FRAMES)):
        for patient, (ed, es) in frames.items():
            folder = root / part / patient
            folder.mkdir(parents=True)
            (folder / "Info.cfg").write_text(f"ED: {ed}\nES: {es}\nGroup: DCM\nHeight: 184.0\nNbFrame: 30\nWeight: 95.0\n")
            write_volume(rng.integers(0, 300, (3, *SHAPE_ZYX)).astype(np.int16), folder / f"{patient}_4d.nii.gz")
            for frame in (ed, es):
                write_volume(rng.integers(0, 300, SHAPE_ZYX).astype(np.int16), folder / f"{patient}_frame{frame:02d}.nii.gz")
                write_volume(rng.integers(0, 4, SHAPE_ZYX).astype(np.uint8), folder / f"{patient}_frame{frame:02d}_gt.nii.gz")
    return root


def acdc_case_ids(patients):
    return sorted(f"{p}_frame{f:02d}" for p in patients for f in {**ACDC_FRAMES, **ACDC_TEST_FRAMES}[p])


def names_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def test_acdc_layout_naming_dataset_json_and_geometry(tmp_path):
    source = make_acdc(tmp_path / "acdc")
    out = acdc.convert_acdc(source, tmp_path / "raw", ACDC_SPLIT)

    assert out == (tmp_path / "raw" / "Dataset027_ACDC").resolve()
    assert names_in(tmp_path / "raw") == {"Dataset027_ACDC"}  # no staging folder left behind
    for part, (images, labels) in {"train": ("imagesTr", "labelsTr"), "val": ("imagesVal", "labelsVal"),
                                   "test": ("imagesTs", "labelsTs")}.items():
        cases = acdc_case_ids(ACDC_SPLIT[part])
        assert names_in(out / images) == {f"{c}_0000.nii.gz" for c in cases}
        assert names_in(out / labels) == {f"{c}.nii.gz" for c in cases}
    assert "patient006_frame01_0000.nii.gz" not in names_in(out / "imagesTr")  # not in the split

    content = load_dataset_json(out / "dataset.json")
    assert content["channel_names"] == {"0": "MRI"}
    assert content["labels"] == {"background": 0, "RV": 1, "MYO": 2, "LV": 3}
    assert content["numTraining"] == 6 and content["numValidation"] == 2 and content["numTest"] == 4
    assert content["file_ending"] == ".nii.gz" and content["name"] == "ACDC"
    assert "yourself" in content["licence"] and content["reference"] and content["description"]
    splits = load_json(out / "splits.json")
    assert splits["train"] == ACDC_SPLIT["train"]
    assert splits["cases"]["val"] == acdc_case_ids(["patient004"])
    assert [c.case_id for c in RawDataset.load(out).training_cases() if c.is_labeled] == acdc_case_ids(ACDC_SPLIT["train"])

    folder = source / "training" / "patient003"
    assert (out / "imagesTr" / "patient003_frame14_0000.nii.gz").read_bytes() == (folder / "patient003_frame14.nii.gz").read_bytes()
    label, label_image = read_volume(out / "labelsTr" / "patient003_frame14.nii.gz")
    source_label, source_label_image = read_volume(folder / "patient003_frame14_gt.nii.gz")
    assert label.dtype == np.uint8 and np.array_equal(label, source_label)
    assert_same_geometry(label_image, source_label_image)
    assert_same_geometry(read_volume(out / "imagesTs" / "patient101_frame13_0000.nii.gz")[1], source_label_image)


def test_acdc_database_level_and_parallel_give_the_same_result(tmp_path):
    make_acdc(tmp_path / "acdc" / "database")
    serial = acdc.convert_acdc(tmp_path / "acdc", tmp_path / "raw1", ACDC_SPLIT, num_processes=1)
    parallel = acdc.convert_acdc(tmp_path / "acdc", tmp_path / "raw2", ACDC_SPLIT, num_processes=2)
    for sub in ("imagesTr", "labelsTr", "imagesVal", "labelsVal", "imagesTs", "labelsTs"):
        assert names_in(serial / sub) == names_in(parallel / sub) != set()
        for name in names_in(serial / sub):
            assert np.array_equal(read_volume(serial / sub / name)[0], read_volume(parallel / sub / name)[0])


def test_acdc_2017_release_with_nested_testing_folder(tmp_path):
    """The 2017 download unpacks its test patients to testing/testing/patientXXX."""
    source = make_acdc(tmp_path / "acdc")
    (source / "testing").rename(tmp_path / "testing_flat")
    (source / "testing").mkdir()
    (tmp_path / "testing_flat").rename(source / "testing" / "testing")
    out = acdc.convert_acdc(source, tmp_path / "raw", ACDC_SPLIT)
    assert names_in(out / "imagesTs") == {f"{c}_0000.nii.gz" for c in acdc_case_ids(ACDC_SPLIT["test"])}


def test_acdc_reports_every_layout_problem_and_writes_nothing(tmp_path):
    source = make_acdc(tmp_path / "acdc")
    folder = source / "training"
    (folder / "patient002" / "patient002_frame09_gt.nii.gz").unlink()
    write_volume(np.zeros((4, 16, 12), np.uint8), folder / "patient003" / "patient003_frame02_gt.nii.gz")
    write_volume(np.zeros(SHAPE_ZYX, np.uint8), folder / "patient003" / "patient003_frame14_gt.nii.gz",
                 origin_xyz=(50.0, 0.0, 0.0))
    (folder / "patient004" / "Info.cfg").write_text("ED: 1\nGroup: NOR\n")
    split = {**ACDC_SPLIT, "train": ACDC_SPLIT["train"] + ["patient042"]}

    with pytest.raises(ConversionError) as caught:
        acdc.convert_acdc(source, tmp_path / "raw", split)
    problems = caught.value.problems
    assert len(problems) == 5, problems
    message = str(caught.value)
    assert "patient002_frame09_gt.nii.gz: missing" in message
    assert "patient003_frame02_gt.nii.gz: size (z, y, x) (4, 16, 12) differs" in message
    assert "patient003_frame14_gt.nii.gz: grid differs" in message and "origin" in message
    assert "Info.cfg: no 'ES:' line" in message
    assert "patient042: patient folder not found" in message
    assert not (tmp_path / "raw").exists() or names_in(tmp_path / "raw") == set()


def test_bad_label_value_fails_without_half_dataset(tmp_path):
    source = make_acdc(tmp_path / "acdc")
    gt = np.zeros(SHAPE_ZYX, np.uint8)
    gt[0, 0, 0] = 7
    write_volume(gt, source / "training" / "patient002" / "patient002_frame01_gt.nii.gz")
    with pytest.raises(ConversionError, match=r"patient002_frame01_gt.nii.gz: unexpected label value\(s\) \[7\]"):
        acdc.convert_acdc(source, tmp_path / "raw", ACDC_SPLIT)
    assert names_in(tmp_path / "raw") == set()


def test_existing_dataset_needs_overwrite(tmp_path):
    source = make_acdc(tmp_path / "acdc")
    small_split = {"train": ["patient001"], "val": [], "test": []}
    out = acdc.convert_acdc(source, tmp_path / "raw", small_split)
    with pytest.raises(ConversionError, match="already exists"):
        acdc.convert_acdc(source, tmp_path / "raw", ACDC_SPLIT)
    assert load_dataset_json(out / "dataset.json")["numTraining"] == 2
    acdc.convert_acdc(source, tmp_path / "raw", ACDC_SPLIT, overwrite=True)
    assert load_dataset_json(out / "dataset.json")["numTraining"] == 6
    assert names_in(tmp_path / "raw") == {"Dataset027_ACDC"}


# --- synthetic Synapse ------------------------------------------------------------------------
SYNAPSE_NUMBERS = ("0001", "0002", "0003", "0005", "0021")
SYNAPSE_SPLIT = {"train": ["case0001", "case0002", "case0005"], "val": [], "test": ["case0003", "case0021"]}
# BTCV value -> expected output value, written out independently of the converter's tables
EXPECTED_MAPPING = {0: 0, 1: 7, 2: 4, 3: 3, 4: 2, 5: 0, 6: 5, 7: 8, 8: 1, 9: 0, 10: 0, 11: 6, 12: 0, 13: 0}


def make_synapse(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for number in SYNAPSE_NUMBERS:
        write_volume(rng.integers(-1000, 1000, SHAPE_ZYX).astype(np.int16), root / "Training" / "img" / f"img{number}.nii.gz")
        label = rng.integers(0, 14, SHAPE_ZYX).astype(np.uint8)
        label.reshape(-1)[:14] = np.arange(14)  # every BTCV value present
        write_volume(label, root / "Training" / "label" / f"label{number}.nii.gz")
    return root


@pytest.mark.parametrize("raw_data_level", [True, False])
def test_synapse_layout_mapping_and_geometry(tmp_path, raw_data_level):
    download = tmp_path / "synapse"
    make_synapse(download / "RawData" if raw_data_level else download)
    out = synapse.convert_synapse(download, tmp_path / "raw", SYNAPSE_SPLIT)

    assert out.name == "Dataset028_Synapse"
    assert names_in(out / "imagesTr") == {f"{c}_0000.nii.gz" for c in SYNAPSE_SPLIT["train"]}
    assert names_in(out / "labelsTs") == {f"{c}.nii.gz" for c in SYNAPSE_SPLIT["test"]}
    assert not (out / "imagesVal").exists()
    content = load_dataset_json(out / "dataset.json")
    assert content["channel_names"] == {"0": "CT"}
    assert content["labels"] == {"background": 0, "aorta": 1, "gallbladder": 2, "kidney_left": 3,
                                 "kidney_right": 4, "liver": 5, "pancreas": 6, "spleen": 7, "stomach": 8}
    assert content["numTraining"] == 3 and content["numTest"] == 2

    for case, part in (("case0005", "Tr"), ("case0021", "Ts")):
        number = case[-4:]
        source_root = download / "RawData" / "Training" if raw_data_level else download / "Training"
        source_label, source_image = read_volume(source_root / "label" / f"label{number}.nii.gz")
        label, label_image = read_volume(out / f"labels{part}" / f"{case}.nii.gz")
        assert label.dtype == np.uint8
        for btcv_value, expected in EXPECTED_MAPPING.items():
            assert np.all(label[source_label == btcv_value] == expected), btcv_value
        assert_same_geometry(label_image, source_image)
        image, image_sitk = read_volume(out / f"images{part}" / f"{case}_0000.nii.gz")
        assert np.array_equal(image, read_volume(source_root / "img" / f"img{number}.nii.gz")[0])
        assert_same_geometry(image_sitk, source_image)


def test_synapse_reports_missing_files_and_layout(tmp_path):
    download = make_synapse(tmp_path / "synapse")
    (download / "Training" / "label" / "label0002.nii.gz").unlink()
    (download / "Training" / "img" / "img0003.nii.gz").write_bytes(b"not an image")
    split = {**SYNAPSE_SPLIT, "test": SYNAPSE_SPLIT["test"] + ["img0007"]}
    with pytest.raises(ConversionError) as caught:
        synapse.convert_synapse(download, tmp_path / "raw", split)
    message = str(caught.value)
    assert len(caught.value.problems) == 3, message
    assert "label0002.nii.gz: missing" in message
    assert "img0003.nii.gz: cannot be read as an image" in message
    assert "'img0007' is not of the form caseXXXX" in message
    with pytest.raises(ConversionError, match="no img/ and label/ folders"):
        synapse.convert_synapse(tmp_path, tmp_path / "raw", split)


# --- split files and command line -----------------------------------------------------------
def test_packaged_splits_match_the_paper():
    acdc_split = load_split(packaged_split_file("acdc.json"))
    assert [len(acdc_split[p]) for p in ("train", "val", "test")] == [70, 10, 20]
    all_patients = acdc_split["train"] + acdc_split["val"] + acdc_split["test"]
    assert sorted(all_patients) == [f"patient{i:03d}" for i in range(1, 101)]
    assert acdc_split["labeled_order"][:3] == ["patient099", "patient038", "patient050"]
    synapse_split = load_split(packaged_split_file("synapse.json"))
    assert [len(synapse_split[p]) for p in ("train", "val", "test")] == [18, 0, 12]
    btcv_training_ids = [f"case{i:04d}" for i in list(range(1, 11)) + list(range(21, 41))]
    assert sorted(synapse_split["train"] + synapse_split["test"]) == btcv_training_ids
    assert "case0001" in synapse_split["test"] and "case0005" in synapse_split["train"]


def test_split_problems_are_reported():
    problems = split_problems({"train": ["a", "b"], "val": ["b"], "test": "c", "labeled_order": ["a"]})
    assert any('"b" appears in "train" and again in "val"' in p for p in problems)
    assert any('"test" must be a list' in p for p in problems)
    assert any("labeled_order" in p for p in problems)


def test_cli_converts_and_reports(tmp_path, capsys):
    download = make_synapse(tmp_path / "synapse")
    split_file = tmp_path / "split.json"
    save_json(SYNAPSE_SPLIT, split_file)
    synapse.main(["-i", str(download), "-o", str(tmp_path / "raw"), "--split", str(split_file), "-np", "1",
                  "-d", "99", "-n", "Abdomen"])
    assert "Dataset099_Abdomen" in capsys.readouterr().out
    assert load_dataset_json(tmp_path / "raw" / "Dataset099_Abdomen" / "dataset.json")["name"] == "Abdomen"
    with pytest.raises(SystemExit, match=r"(?s)cctr_convert_acdc: 1 problem found.*nowhere: ACDC folder not found"):
        acdc.main(["-i", str(tmp_path / "nowhere"), "-o", str(tmp_path / "raw"), "-np", "1"])


@pytest.mark.parametrize("module", ["acdc", "synapse"])
def test_cli_help(module):
    result = subprocess.run([sys.executable, "-m", f"dataset_conversion.{module}", "--help"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert f"cctr_convert_{module}" in result.stdout and "--split" in result.stdout and "-np" in result.stdout
