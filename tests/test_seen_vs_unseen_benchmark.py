"""benchmarks/seen_vs_unseen_benchmark.py: the split of training cases into labeled, unlabeled and curve cases
and the Dice means over them, on a tiny work folder whose predictions already exist (no model is run)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from benchmarks.reproduce.store import WorkFolder
from benchmarks.seen_vs_unseen_benchmark import case_mean_dice, measure_run, render

RUN = "toy__CPSTrainer__L1__s0__it10"
DATASET = "Dataset009_Toy"


def _write_label(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.uint8)), str(path))


def _cube(value: int, start: int, stop: int) -> np.ndarray:
    array = np.zeros((6, 10, 10), np.uint8)
    array[1:5, start:stop, start:stop] = value
    return array


def _work_folder(root: Path) -> WorkFolder:
    work = WorkFolder(root)
    raw = work.raw / DATASET
    raw.mkdir(parents=True)
    (raw / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "heart": 1},
                                                  "file_ending": ".nii.gz"}))
    model = root / "runs" / RUN / "cctr_results" / DATASET / "CPSTrainer__labeled1__seed0"
    model.mkdir(parents=True)
    (model / "checkpoint_final.pth").write_bytes(b"")
    (model / "config.json").write_text(json.dumps({"settings": {"validation_max_cases": 4}}))
    cases = ["case_a", "case_b", "case_c"]
    (model / "labeled_cases.json").write_text(json.dumps(
        {"labeled": ["case_a"], "unlabeled": cases[1:], "hidden_labels": cases[1:]}))
    predictions = root / "runs" / RUN / "predictions_train"
    for case in cases:
        _write_label(raw / "labelsTr" / f"{case}.nii.gz", _cube(1, 2, 8))
    # case_a perfect, case_b half of the cube (Dice 66.7), case_c nothing
    _write_label(predictions / "case_a.nii.gz", _cube(1, 2, 8))
    half = _cube(1, 2, 8)
    half[:, :, 5:] = 0
    _write_label(predictions / "case_b.nii.gz", half)
    _write_label(predictions / "case_c.nii.gz", np.zeros((6, 10, 10), np.uint8))
    for case in cases:
        (predictions / "without_postprocessing").mkdir(exist_ok=True)
        _write_label(predictions / "without_postprocessing" / f"{case}.nii.gz", _cube(1, 2, 8))
    record = {"status": "ok", "job": {"method_label": "CPS", "seed": 0}, "model_folder": str(model),
              "metrics": {"mean_dice": 70.0}, "metrics_validation": {"mean_dice": 72.0},
              "pseudo_label_curves": {"dice_hidden_A": [[5, 0.4], [10, 0.5]]}}
    work.result_path(RUN).parent.mkdir(parents=True, exist_ok=True)
    work.result_path(RUN).write_text(json.dumps(record))
    return work


def test_measure_run_splits_labeled_and_unlabeled_cases(tmp_path: Path) -> None:
    row = measure_run(_work_folder(tmp_path), RUN)
    half_dice = 100.0 * 2 * (4 * 6 * 3) / (4 * 6 * 3 + 4 * 6 * 6)  # 3 of 6 columns predicted
    assert row["labeled_post"] == pytest.approx(100.0)
    assert row["unlabeled_post"] == pytest.approx((half_dice + 0.0) / 2)
    assert row["unlabeled_raw"] == pytest.approx(100.0)
    assert row["curve_cases"] == ["case_b", "case_c"]
    assert row["test"] == 70.0 and row["validation"] == 72.0 and row["curve_last"] == pytest.approx(50.0)
    assert "| CPS s0 | 33.3 | 100.0 |" in render([row])


def test_measure_run_names_a_missing_record(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no finished job record"):
        measure_run(WorkFolder(tmp_path), "not_a_run")


def test_case_mean_dice_skips_classes_empty_in_both() -> None:
    record = {"classes": {"a": {"dice_percent": 80.0}, "b": {"dice_percent": math.nan}, "c": {"dice_percent": 40.0}}}
    assert case_mean_dice(record) == pytest.approx(60.0)
