"""Prediction in parts (-num_parts/-part_id), --continue, --num-gpus worker processes, and the speed settings."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cctrnet.dataset.image_io import read_image, write_image
from cctrnet.inference.model_folder import ModelFolder
from cctrnet.inference.parts import CasePart, remove_stale_temporaries
from cctrnet.inference.prediction_report import read_prediction_outcome
from cctrnet.inference.predictor import Predictor
from cctrnet.inference.sliding_window import SlidingWindowSettings, predict_volume
from cctrnet.inference.speed import DeviceSpeedSettings
from cctrnet.utilities.file_io import load_json
from tests.conftest import blob_case
from tests.test_inference import write_model_folder

pytestmark = pytest.mark.usefixtures("single_torch_thread")

CASES = [f"case{i}" for i in range(5)]


def write_images(folder: Path, case_ids=CASES) -> None:
    for index, case_id in enumerate(case_ids):
        image, _, geometry = blob_case(index, shape_zyx=(2, 20, 24))
        write_image(image, geometry, folder / f"{case_id}_0000.nii.gz")


def predict(args: list[str]) -> int:
    from cctrnet.cli.predict import main

    return main([*args, "--device", "cpu", "--quiet", "--threads", "1", "--disable-tta"])


def label_maps(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: read_image(p, dtype=np.int16)[0] for p in sorted(folder.glob("*.nii.gz"))}


def visible_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_parts_are_dealt_out_disjoint_and_cover_every_case():
    items = list(range(11))
    parts = [CasePart(3, i).select(items) for i in range(3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    # a part split among workers holds exactly that part's items
    for part in (CasePart(), CasePart(3, 1)):
        workers = part.split(2)
        assert sorted(x for w in workers for x in w.select(items)) == part.select(items)
    with pytest.raises(ValueError, match="-part_id must be in 0 ... 1"):
        CasePart(2, 2)
    with pytest.raises(ValueError, match="-num_parts must be at least 1"):
        CasePart(0, 0)


def test_two_parts_give_exactly_the_files_of_one_run(tmp_path, cctr_folders):
    write_model_folder(cctr_folders["cctr_results"], branches=("branch_a",))
    write_images(tmp_path / "imgs")
    common = ["-i", str(tmp_path / "imgs"), "--save-probabilities", "--save-without-postprocessing"]
    assert predict([*common, "-o", str(tmp_path / "one")]) == 0
    for part_id in (0, 1):
        assert predict([*common, "-o", str(tmp_path / "parts"), "-num_parts", "2", "-part_id", str(part_id)]) == 0
        if part_id == 0:  # part 0 wrote only its own cases: 0, 2, 4
            assert sorted(label_maps(tmp_path / "parts")) == [f"case{i}.nii.gz" for i in (0, 2, 4)]
    reports = ["prediction_report.json", "prediction_report_part0of2.json", "prediction_report_part1of2.json"]
    assert ([f for f in visible_files(tmp_path / "parts") if f not in reports]
            == [f for f in visible_files(tmp_path / "one") if f not in reports])
    assert read_prediction_outcome(tmp_path / "parts") == read_prediction_outcome(tmp_path / "one") == {
        "predicted": [f"case{i}" for i in range(len(CASES))], "skipped": {}}
    assert load_json(tmp_path / "parts" / reports[2])["written"] == ["case1", "case3"]
    one, parts = label_maps(tmp_path / "one"), label_maps(tmp_path / "parts")
    assert all(np.array_equal(one[name], parts[name]) for name in one)
    assert predict([*common, "-o", str(tmp_path / "x"), "-num_parts", "2", "-part_id", "2"]) == 2


def test_continue_predicts_only_the_incomplete_cases_and_clears_a_killed_write(tmp_path, cctr_folders):
    write_model_folder(cctr_folders["cctr_results"], branches=("branch_a",))
    write_images(tmp_path / "imgs")
    out = tmp_path / "preds"
    common = ["-i", str(tmp_path / "imgs"), "-o", str(out), "--save-probabilities"]
    assert predict(common) == 0
    reference = label_maps(out)
    (out / "case1.nii.gz").unlink()  # never written
    (out / "case3.npz").unlink()  # label map there, probabilities lost: not complete
    stray = out / ".case1.nii.gz.abc123.tmp.nii.gz"  # a write killed half-way
    stray.write_bytes(b"partial")
    kept = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name.startswith(("case0", "case2", "case4"))}
    assert predict([*common, "--continue"]) == 0
    assert not stray.exists() and (out / "case1.nii.gz").exists() and (out / "case3.npz").exists()
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name in kept} == kept
    assert all(np.array_equal(reference[name], array) for name, array in label_maps(out).items())
    # a part only cleans its own cases' temporaries
    other = out / ".case2.nii.gz.zz.tmp.nii.gz"
    other.write_bytes(b"")
    (out / "case1.nii.gz").unlink()
    assert predict([*common, "--continue", "-num_parts", "2", "-part_id", "1"]) == 0
    assert other.exists() and (out / "case1.nii.gz").exists()
    assert remove_stale_temporaries(out / "case2.nii.gz") == [other]


def test_num_gpus_on_cpu_spawns_workers_that_together_predict_every_case(tmp_path, cctr_folders):
    write_model_folder(cctr_folders["cctr_results"], branches=("branch_a",))
    write_images(tmp_path / "imgs", CASES[:3])
    common = ["-i", str(tmp_path / "imgs"), "--device", "cpu", "--disable-tta", "--quiet"]
    assert predict(["-i", str(tmp_path / "imgs"), "-o", str(tmp_path / "one")]) == 0
    result = subprocess.run([sys.executable, "-m", "cctrnet.cli.predict", *common, "-o", str(tmp_path / "two"),
                             "--num-gpus", "2", "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "worker 0: part 0 of 2" in result.stdout and "worker 1: part 1 of 2" in result.stdout
    one, two = label_maps(tmp_path / "one"), label_maps(tmp_path / "two")
    assert sorted(one) == sorted(two) and all(np.array_equal(one[n], two[n]) for n in one)


def test_worker_command_line_repeats_every_chosen_option():
    from cctrnet.cli.predict import build_parser, worker_arguments

    parser = build_parser()
    argv = ["-i", "a", "-o", "b", "-d", "2", "--labeled", "3", "--step-size", "0.25", "--save-probabilities",
            "--continue", "--precision", "float16", "--compile", "--num-gpus", "4", "--threads", "2", "-num_parts", "3"]
    args = parser.parse_args(argv)
    again = parser.parse_args(worker_arguments(parser, args))
    for name, value in vars(args).items():
        if name not in ("num_gpus", "threads", "num_parts"):
            assert getattr(again, name) == value, name
    assert again.num_gpus == 1 and again.threads is None


def test_speed_settings_are_off_on_cpu_and_refuse_what_cpu_lacks():
    resolved = DeviceSpeedSettings().resolve("cpu")
    assert (resolved.precision, resolved.channels_last, resolved.compile) == ("float32", False, False)
    assert resolved.autocast_dtype is None
    with pytest.raises(ValueError, match="--precision bfloat16 is for CUDA"):
        DeviceSpeedSettings(precision="bfloat16").resolve("cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        DeviceSpeedSettings(precision="int8")
    assert DeviceSpeedSettings(memory_format="channels_last").resolve("cpu").channels_last


def test_cpu_results_are_unchanged_by_the_speed_settings(tmp_path, cctr_folders):
    folder = write_model_folder(tmp_path, branches=("branch_a", "branch_b"))
    model = ModelFolder.load(folder)
    image, _, geometry = blob_case(1, shape_zyx=(3, 40, 36))
    plain = Predictor.from_model_folder(model, "cpu", settings=SlidingWindowSettings(mirroring=False))
    data, _ = plain.preprocess(image[None], geometry)
    reference = plain.predict_preprocessed(data)
    channels_last = Predictor.from_model_folder(
        model, "cpu", settings=SlidingWindowSettings(mirroring=False, speed=DeviceSpeedSettings(memory_format="channels_last")))
    np.testing.assert_allclose(channels_last.predict_preprocessed(data), reference, atol=1e-5)
    # the defaults on CPU: exactly plain float32
    direct = predict_volume(data, plain.ensemble, model.configuration["patch_size_yx"], 3,
                            SlidingWindowSettings(mirroring=False, speed=DeviceSpeedSettings("float32", "contiguous")))
    np.testing.assert_array_equal(direct, reference)
    assert predict(["-i", str(tmp_path), "-o", str(tmp_path / "p"), "--precision", "bfloat16"]) == 2


@pytest.mark.cuda
def test_cuda_prediction_with_the_fast_defaults_matches_cpu(tmp_path):
    folder = write_model_folder(tmp_path, branches=("branch_a", "branch_b"))
    model = ModelFolder.load(folder)
    image, _, geometry = blob_case(1, shape_zyx=(3, 40, 36))
    cpu = Predictor.from_model_folder(model, "cpu", settings=SlidingWindowSettings(mirroring=False))
    cuda = Predictor.from_model_folder(model, "cuda", settings=SlidingWindowSettings(mirroring=False))
    assert cuda.speed.channels_last and cuda.speed.precision in ("bfloat16", "float16")
    data, _ = cpu.preprocess(image[None], geometry)
    a, b = cpu.predict_preprocessed(data), cuda.predict_preprocessed(data)
    assert np.abs(a - b).max() < 0.05  # bfloat16 keeps 8 bits of mantissa
    assert np.mean(a.argmax(0) == b.argmax(0)) > 0.99
    torch.cuda.empty_cache()


def test_prediction_reports_of_parts_merge_and_a_later_write_clears_a_skip(tmp_path):
    from cctrnet.inference.prediction_report import prediction_report_path, write_prediction_report
    from cctrnet.inference.predictor import FolderPredictionReport

    first, second = CasePart(2, 0), CasePart(2, 1)
    write_prediction_report(FolderPredictionReport(predicted=["a"], skipped={"c": "cannot be read (x: y)"}),
                            tmp_path, first)
    write_prediction_report(FolderPredictionReport(predicted=["b"], skipped={"d.mha": "no channel suffix"}),
                            tmp_path, second)
    assert prediction_report_path(tmp_path, second).name == "prediction_report_part1of2.json"
    assert read_prediction_outcome(tmp_path) == {"predicted": ["a", "b"],
                                                 "skipped": {"c": "cannot be read (x: y)", "d.mha": "no channel suffix"}}
    # part 0 run again with --continue after c was fixed: c is written, a kept; the skip is gone
    write_prediction_report(FolderPredictionReport(predicted=["c"], already_done=["a"]), tmp_path, first)
    assert read_prediction_outcome(tmp_path)["skipped"] == {"d.mha": "no channel suffix"}
    with pytest.raises(FileNotFoundError, match="no prediction report"):
        read_prediction_outcome(tmp_path / "empty")
