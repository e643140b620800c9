"""Dice, HD95 in mm and folder evaluation against hand-computed and brute-force values."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from cctrnet.cli.evaluate import main as evaluate_main
from cctrnet.cli.evaluate import parse_labels
from cctrnet.dataset.dataset_json import write_dataset_json
from cctrnet.dataset.geometry import Geometry
from cctrnet.dataset.image_io import write_image
from cctrnet.evaluation.evaluate_folder import detect_file_ending, detect_labels, evaluate_folders, list_label_files
from cctrnet.evaluation.metrics import (
    EvaluationConventions,
    dice_score,
    evaluate_case,
    hd95_mm,
    surface_mask,
    volume_diagonal_mm,
)
from cctrnet.evaluation.summary import format_table, mean_per_class, overall_mean


# --- independent brute-force reference --------------------------------------------------------
def brute_surface_points(mask: np.ndarray) -> np.ndarray:
    """Voxel indices of mask voxels with a face neighbour outside the mask (outside the array counts)."""
    padded = np.pad(mask, 1)
    points = []
    for z, y, x in zip(*np.nonzero(mask)):
        zp, yp, xp = z + 1, y + 1, x + 1
        neighbours = [
            padded[zp - 1, yp, xp], padded[zp + 1, yp, xp], padded[zp, yp - 1, xp],
            padded[zp, yp + 1, xp], padded[zp, yp, xp - 1], padded[zp, yp, xp + 1],
        ]
        if not all(neighbours):
            points.append((z, y, x))
    return np.array(points, dtype=np.float64)


def brute_distances(pred: np.ndarray, ref: np.ndarray, spacing_zyx) -> np.ndarray:
    p = brute_surface_points(pred) * np.asarray(spacing_zyx)
    r = brute_surface_points(ref) * np.asarray(spacing_zyx)
    d = cdist(p, r)
    return np.concatenate([d.min(axis=1), d.min(axis=0)])


def box_mask(shape, start, stop) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(a, b) for a, b in zip(start, stop))] = True
    return mask


# --- Dice ----------------------------------------------------------------------------------------
def test_dice_of_overlapping_boxes():
    ref = box_mask((8, 8, 8), (0, 0, 0), (4, 4, 4))  # 64 voxels
    shifted = box_mask((8, 8, 8), (0, 0, 2), (4, 4, 6))  # overlap 4*4*2 = 32
    inside = box_mask((8, 8, 8), (0, 0, 0), (2, 4, 4))  # 32 voxels, all inside
    assert dice_score(shifted, ref) == pytest.approx(0.5)
    assert dice_score(inside, ref) == pytest.approx(2 * 32 / 96)
    assert dice_score(ref, ref) == 1.0
    assert dice_score(~ref, ref) == 0.0


# --- HD95 ----------------------------------------------------------------------------------------
def test_hd95_slab_shifted_one_voxel_along_z_with_5mm_spacing_is_5mm():
    ref = box_mask((6, 12, 12), (2, 3, 3), (3, 9, 9))
    pred = box_mask((6, 12, 12), (3, 3, 3), (4, 9, 9))
    assert hd95_mm(pred, ref, (5.0, 1.0, 1.0)) == pytest.approx(5.0)
    # the same shift along x with 0.7 mm spacing: 0.7 mm; z spacing no longer matters
    pred_x = box_mask((6, 12, 12), (2, 3, 4), (3, 9, 10))
    assert hd95_mm(pred_x, ref, (5.0, 1.0, 0.7)) == pytest.approx(0.7)


def test_hd95_differs_from_max_with_one_outlier_voxel():
    spacing = (2.0, 1.0, 1.0)
    ref = box_mask((20, 10, 10), (2, 2, 2), (8, 8, 8))
    pred = ref.copy()
    pred[17, 4, 4] = True  # 10 slices above the cube's top face (z = 7): 20 mm
    assert hd95_mm(pred, ref, spacing) == 0.0
    assert brute_distances(pred, ref, spacing).max() == pytest.approx(20.0)
    full_hausdorff = EvaluationConventions(hd95_percentile=100.0)
    assert hd95_mm(pred, ref, spacing, full_hausdorff) == pytest.approx(20.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_matches_brute_force_with_anisotropic_spacing(seed):
    rng = np.random.default_rng(seed)
    shape = (7, 14, 13)
    ref = box_mask(shape, (1, 2, 3), (5, 10, 9))
    ref[rng.random(shape) < 0.05] = True  # scattered voxels, also on the array border
    pred = np.roll(ref, (1, 2, -1), axis=(0, 1, 2))
    pred[rng.random(shape) < 0.05] = False
    spacing = (4.5, 0.8, 1.3)
    expected = float(np.percentile(brute_distances(pred, ref, spacing), 95))
    assert hd95_mm(pred, ref, spacing) == pytest.approx(expected)
    assert hd95_mm(ref, pred, spacing) == pytest.approx(expected)  # symmetric


def test_hd95_matches_distance_transform_definition():
    """Same numbers as the erosion + distance-transform recipe (medpy's hd95, here in mm)."""
    from scipy import ndimage

    rng = np.random.default_rng(5)
    shape, spacing = (9, 20, 18), (3.0, 0.9, 1.1)
    ref = ndimage.binary_dilation(rng.random(shape) < 0.02, iterations=2)
    pred = ndimage.binary_dilation(rng.random(shape) < 0.02, iterations=2)
    cross = ndimage.generate_binary_structure(3, 1)
    ref_surface = ref & ~ndimage.binary_erosion(ref, cross)
    pred_surface = pred & ~ndimage.binary_erosion(pred, cross)
    forward = ndimage.distance_transform_edt(~ref_surface, sampling=spacing)[pred_surface]
    backward = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)[ref_surface]
    assert hd95_mm(pred, ref, spacing) == pytest.approx(np.percentile(np.concatenate([forward, backward]), 95))


def test_surface_counts_array_border_as_background():
    full = np.ones((3, 4, 5), dtype=bool)
    surface = surface_mask(full)
    assert surface.sum() == full.size - 1 * 2 * 3  # only the 1x2x3 core is interior
    assert len(brute_surface_points(full)) == surface.sum()


# --- empty conventions -------------------------------------------------------------------------
def test_empty_conventions():
    shape, spacing = (4, 10, 10), (5.0, 1.0, 1.0)
    empty = np.zeros(shape, dtype=bool)
    cube = box_mask(shape, (1, 2, 2), (3, 5, 5))
    diagonal = math.sqrt(20.0**2 + 10.0**2 + 10.0**2)
    assert volume_diagonal_mm(shape, spacing) == pytest.approx(diagonal)
    assert math.isnan(dice_score(empty, empty))
    assert math.isnan(hd95_mm(empty, empty, spacing))
    assert dice_score(empty, cube) == 0.0 and dice_score(cube, empty) == 0.0
    assert hd95_mm(empty, cube, spacing) == pytest.approx(diagonal)
    assert hd95_mm(cube, empty, spacing) == pytest.approx(diagonal)
    as_nan = EvaluationConventions(hd95_one_empty="nan")
    assert math.isnan(hd95_mm(cube, empty, spacing, as_nan))
    with pytest.raises(ValueError, match="hd95_one_empty"):
        EvaluationConventions(hd95_one_empty="zero")


# --- evaluate_case ------------------------------------------------------------------------------
def test_evaluate_case_per_label_matches_mask_functions_and_volumes():
    shape, spacing = (6, 16, 16), (3.0, 0.5, 0.5)
    ref = np.zeros(shape, dtype=np.int16)
    ref[1:5, 0:6, 2:9] = 1  # touches the array border at y = 0
    ref[2:4, 9:14, 9:15] = 2
    pred = np.zeros_like(ref)
    pred[1:6, 0:5, 3:9] = 1
    pred[0:2, 12:16, 0:3] = 3  # label 3 only in the prediction
    result = evaluate_case(pred, ref, spacing, [1, 2, 3, 4])
    voxel_ml = 3.0 * 0.5 * 0.5 / 1000.0
    one = result[1]
    assert one["dice_percent"] == pytest.approx(100 * dice_score(pred == 1, ref == 1))
    assert one["hd95_mm"] == pytest.approx(float(np.percentile(brute_distances(pred == 1, ref == 1, spacing), 95)))
    assert one["volume_ref_ml"] == pytest.approx(4 * 6 * 7 * voxel_ml)
    assert one["volume_pred_ml"] == pytest.approx(5 * 5 * 6 * voxel_ml)
    diagonal = volume_diagonal_mm(shape, spacing)
    assert result[2]["dice_percent"] == 0.0 and result[2]["hd95_mm"] == pytest.approx(diagonal)
    assert result[2]["pred_empty"] and not result[2]["ref_empty"]
    assert result[3]["dice_percent"] == 0.0 and result[3]["ref_empty"]
    assert math.isnan(result[4]["dice_percent"]) and math.isnan(result[4]["hd95_mm"])
    with pytest.raises(ValueError, match="shape"):
        evaluate_case(pred[:-1], ref, spacing, [1])
    with pytest.raises(ValueError, match="integer label map"):
        evaluate_case(pred + 0.5, ref, spacing, [1])


def test_evaluate_case_agrees_with_mask_functions_for_every_label():
    rng = np.random.default_rng(3)
    ref = rng.integers(0, 3, size=(5, 9, 11)).astype(np.uint8)
    pred = np.where(rng.random(ref.shape) < 0.8, ref, rng.integers(0, 3, size=ref.shape)).astype(np.uint8)
    spacing = (2.0, 0.7, 0.9)
    result = evaluate_case(pred, ref, spacing, [0, 1, 2])
    for label in (0, 1, 2):
        assert result[label]["dice_percent"] == pytest.approx(100 * dice_score(pred == label, ref == label))
        assert result[label]["hd95_mm"] == pytest.approx(hd95_mm(pred == label, ref == label, spacing))
    shifted = evaluate_case(pred.astype(np.int32) - 1, ref.astype(np.int32) - 1, spacing, [-1, 0, 1])
    assert [shifted[v]["dice_percent"] for v in (-1, 0, 1)] == pytest.approx([result[v]["dice_percent"] for v in (0, 1, 2)])


def test_means_skip_nan_and_average_cases_then_classes():
    labels = {"a": 1, "b": 2}
    entry = lambda d, h, re=False, pe=False: {  # noqa: E731
        "dice_percent": d, "hd95_mm": h, "volume_ref_ml": 1.0, "volume_pred_ml": 2.0, "ref_empty": re, "pred_empty": pe,
    }
    per_case = [
        {"classes": {"a": entry(80.0, 2.0), "b": entry(math.nan, math.nan, True, True)}},
        {"classes": {"a": entry(60.0, 4.0), "b": entry(50.0, 10.0)}},
    ]
    per_class = mean_per_class(per_case, labels)
    assert per_class["a"]["dice_percent"] == pytest.approx(70.0)
    assert per_class["b"]["dice_percent"] == pytest.approx(50.0)
    assert per_class["b"]["num_cases_in_dice_mean"] == 1 and per_class["b"]["num_cases_both_empty"] == 1
    mean = overall_mean(per_class)
    assert mean["dice_percent"] == pytest.approx(60.0) and mean["hd95_mm"] == pytest.approx((3.0 + 10.0) / 2)
    table = format_table(per_class, mean).splitlines()
    assert table[0].split() == ["class", "label", "Dice", "%", "HD95", "mm", "cases"]
    assert table[-1].split() == ["mean", "60.00", "6.50"]
    assert len({len(line) for line in table}) == 1  # aligned


# --- folders ------------------------------------------------------------------------------------
GEOMETRY = Geometry((5, 12, 12), (0.8, 0.8, 4.0), (10.0, -5.0, 2.0))


def _write_case(folder, case_id, array, geometry=GEOMETRY, ending=".nii.gz"):
    folder.mkdir(parents=True, exist_ok=True)
    write_image(array.astype(np.uint8), geometry, folder / f"{case_id}{ending}")


def _label_map(shift_x: int) -> np.ndarray:
    seg = np.zeros(GEOMETRY.shape_zyx, dtype=np.uint8)
    seg[1:4, 2:7, 2 + shift_x:7 + shift_x] = 1
    seg[2:4, 8:11, 3:9] = 2
    return seg


@pytest.fixture
def folders(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    _write_case(ref, "case_a", _label_map(0))
    _write_case(pred, "case_a", _label_map(1))
    _write_case(ref, "case_b", _label_map(0))  # no prediction
    _write_case(ref, "case_c", _label_map(0))
    other = Geometry(GEOMETRY.shape_zyx, (0.8, 0.8, 5.0), GEOMETRY.origin_xyz)
    _write_case(pred, "case_c", _label_map(0), geometry=other)  # geometry mismatch
    _write_case(pred, "case_x", _label_map(0))  # no reference
    return ref, pred


def test_evaluate_folders_reports_missing_and_mismatch_and_writes_summary(folders):
    ref, pred = folders
    summary = evaluate_folders(ref, pred, {"background": 0, "big": 1, "small": 2}, ".nii.gz", show_progress=False)
    problems = summary["problems"]
    assert problems["missing_predictions"] == ["case_b"]
    assert problems["predictions_without_reference"] == ["case_x"]
    assert [m["case"] for m in problems["geometry_mismatch"]] == ["case_c"]
    assert "spacing" in problems["geometry_mismatch"][0]["differences"][0]
    assert summary["num_cases_evaluated"] == 1 and summary["num_reference_cases"] == 3

    on_disk = json.loads((pred / "summary.json").read_text())
    assert on_disk["labels"] == {"big": 1, "small": 2}
    case = on_disk["per_case"][0]
    assert case["case"] == "case_a" and case["spacing_zyx"] == pytest.approx([4.0, 0.8, 0.8])
    big, small = case["classes"]["big"], case["classes"]["small"]
    assert big["dice_percent"] == pytest.approx(100 * 2 * 3 * 5 * 4 / (2 * 75))  # overlap 3x5x4 of 75 each
    expected_hd95 = np.percentile(brute_distances(_label_map(1) == 1, _label_map(0) == 1, (4.0, 0.8, 0.8)), 95)
    assert big["hd95_mm"] == pytest.approx(expected_hd95)
    assert small["dice_percent"] == pytest.approx(100.0) and small["hd95_mm"] == 0.0
    assert big["volume_ref_ml"] == pytest.approx(75 * 0.8 * 0.8 * 4.0 / 1000)
    assert on_disk["mean_per_class"]["big"]["dice_percent"] == pytest.approx(big["dice_percent"])
    assert on_disk["mean"]["dice_percent"] == pytest.approx((big["dice_percent"] + 100.0) / 2)
    assert on_disk["conventions"]["hd95_percentile"] == 95.0
    assert not list(pred.glob(".summary.json*"))  # no temporary file left behind


def test_parallel_evaluation_gives_the_same_summary(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    for i in range(3):
        _write_case(ref, f"c{i}", _label_map(0), ending=".mha")
        _write_case(pred, f"c{i}", _label_map(i % 2), ending=".mha")
    kwargs = dict(labels={"big": 1, "small": 2}, file_ending=".mha", show_progress=False)
    serial = evaluate_folders(ref, pred, output_file=tmp_path / "s1.json", num_processes=1, **kwargs)
    parallel = evaluate_folders(ref, pred, output_file=tmp_path / "s2.json", num_processes=2, **kwargs)
    assert serial["mean"] == parallel["mean"]
    assert [c["case"] for c in parallel["per_case"]] == ["c0", "c1", "c2"]


def test_detection_of_file_ending_and_labels(folders):
    ref, _ = folders
    assert detect_file_ending(ref) == ".nii.gz"
    files = list_label_files(ref, ".nii.gz")
    assert sorted(files) == ["case_a", "case_b", "case_c"]
    assert detect_labels(files.values(), show_progress=False) == {"label_1": 1, "label_2": 2}


# --- command line -------------------------------------------------------------------------------
def test_cli_help():
    """Its speed is measured by benchmarks/cli_latency_benchmark.py, not asserted here (a busy machine fails it)."""
    done = subprocess.run([sys.executable, "-m", "cctrnet.cli.evaluate", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "-pred" in done.stdout and "--allow-missing" in done.stdout


def test_cli_exit_codes_table_and_dataset_labels(folders, tmp_path, monkeypatch, capsys):
    ref, pred = folders
    raw = tmp_path / "raw"
    write_dataset_json(raw / "Dataset007_Toy", {0: "MRI"}, {"background": 0, "liver": 1, "kidney": 2}, 3)
    monkeypatch.setenv("cctr_raw", str(raw))
    out = tmp_path / "out" / "s.json"
    code = evaluate_main(["-ref", str(ref), "-pred", str(pred), "-d", "7", "-o", str(out), "-np", "1", "--quiet"])
    captured = capsys.readouterr()
    assert code == 1  # a missing prediction and a geometry mismatch
    assert "liver" in captured.out and "kidney" in captured.out and "mean" in captured.out
    assert "missing prediction for case case_b" in captured.err
    assert "geometry mismatch for case case_c" in captured.err
    assert json.loads(out.read_text())["labels"] == {"liver": 1, "kidney": 2}

    (pred / "case_c.nii.gz").unlink()
    code = evaluate_main(["-ref", str(ref), "-pred", str(pred), "--labels", "1", "--allow-missing", "--quiet", "-np", "1"])
    assert code == 0
    assert json.loads((pred / "summary.json").read_text())["labels"] == {"label_1": 1}
    assert evaluate_main(["-ref", str(tmp_path / "nowhere"), "-pred", str(pred), "--quiet"]) == 2


def test_parse_labels():
    assert parse_labels(["1", "3"]) == {"label_1": 1, "label_3": 3}
    assert parse_labels(["LV=1", "RV=2"]) == {"LV": 1, "RV": 2}
    with pytest.raises(ValueError, match="LV"):
        parse_labels(["LV"])
