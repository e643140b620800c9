"""cctr_suggest_labels: a clear cluster and a clear outlier give the expected choice, labeled cases are
honoured, the result is deterministic, and missing or failed pairs are handled."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cctrnet.preprocessing.case_storage import save_preprocessed_case
from cctrnet.registration.pair_result import STATUS_FAILED, STATUS_OK, PairResult
from cctrnet.registration.pair_store import PairStore, registration_folder
from cctrnet.registration.representatives import classical_mds, greedy_facility_location

CLUSTER = [f"a{i}" for i in range(5)]  # on a line: a2 is the medoid
OUTLIER = "z"


def _ncc(a: str, b: str) -> float:
    if OUTLIER in (a, b):
        return 0.2
    return 1.0 - 0.02 * abs(int(a[1]) - int(b[1]))


def _dataset(root: Path, skip: tuple[str, str] | None = None, fail: tuple[str, str] | None = None,
             deformable: bool = False) -> Path:
    """A preprocessed folder with 6 tiny cases and their stored pair records (no image is registered)."""
    folder = root / "Dataset042_Toy"
    cases = CLUSTER + [OUTLIER]
    for case in cases:
        save_preprocessed_case(folder / "2d", case, np.zeros((1, 2, 4, 4)), None, {})
    method = "affine_deformable" if deformable else "affine"
    store = PairStore(registration_folder(folder, "2d", method))
    for moving in cases:
        for fixed in cases:
            if moving >= fixed or (moving, fixed) == skip:
                continue
            failed = (moving, fixed) == fail
            quality = {"displacement_mm_mean": 10 * (1 - _ncc(moving, fixed))} if deformable else {}
            store.save(PairResult(moving, fixed, method, "torch", STATUS_FAILED if failed else STATUS_OK,
                                  reason="diverged" if failed else None,
                                  metric_name="negative_normalised_cross_correlation",
                                  metric_initial=0.0, metric_final=-_ncc(moving, fixed), quality=quality,
                                  transform_text=None if failed else "#Insight Transform File V1.0\n"))
    return folder


def test_a_cluster_and_an_outlier_give_the_medoid_then_the_outlier(tmp_path):
    from cctrnet.registration.label_suggestion import suggest_labels

    folder = _dataset(tmp_path)
    assert suggest_labels(folder, 1)["ids"] == ["a2"]
    suggestion = suggest_labels(folder, 2)
    assert suggestion["ids"] == ["a2", "z"]
    first, second = suggestion["suggested"]
    assert first["represents"] == CLUSTER and second["represents"] == ["z"]
    assert first["score"] >= second["score"] > 0
    assert suggestion["registration_method"] == "affine" and suggestion["dissimilarity"]["terms"] == ["image"]


def test_the_suggestion_names_its_near_ties_and_prints_them(tmp_path):
    from cctrnet.registration.label_suggestion import describe, suggest_labels

    folder = _dataset(tmp_path)
    strict = suggest_labels(folder, 1, near_tie_share=0.0)
    assert strict["suggested"][0]["near_ties"] == [] and "near tie" not in describe(strict)
    loose = suggest_labels(folder, 1, near_tie_share=10.0)
    ties = loose["suggested"][0]["near_ties"]
    # a1 and a3 are the medoid's neighbours on the line, equally far from being the medoid; the outlier is last
    assert [t["case"] for t in ties[:2]] == ["a1", "a3"] and ties[-1]["case"] == "z"
    assert ties[0]["extra_cost_share"] == ties[1]["extra_cost_share"] > 0
    assert "near ties" in describe(loose) and "a1 (+" in describe(loose)


def test_already_labeled_cases_are_kept_and_never_suggested(tmp_path):
    from cctrnet.registration.label_suggestion import SuggestionError, suggest_labels

    folder = _dataset(tmp_path)
    suggestion = suggest_labels(folder, 1, labeled_cases=["a0"])
    assert suggestion["ids"] == ["z"]  # the cluster is already represented by a0
    assert suggestion["already_labeled"][0]["case"] == "a0"
    assert suggest_labels(folder, 2, labeled_cases=["z"])["ids"][0] == "a2"
    with pytest.raises(SuggestionError, match="not among"):
        suggest_labels(folder, 1, labeled_cases=["nope"])
    with pytest.raises(SuggestionError, match="only 1 of the 6"):
        suggest_labels(folder, 2, labeled_cases=CLUSTER)


def test_the_suggestion_and_its_files_are_deterministic(tmp_path):
    from cctrnet.registration.label_suggestion import suggest_labels, write_suggestion

    folder = _dataset(tmp_path, deformable=True)
    first = suggest_labels(folder, 2)
    assert first["dissimilarity"]["terms"] == ["image", "deformation"]
    json_path, figure_path = write_suggestion(first, folder)
    text = json_path.read_text()
    again = suggest_labels(folder, 2)
    write_suggestion(again, folder)
    assert json_path.read_text() == text and figure_path.stat().st_size > 1000
    assert json.loads(text)["ids"] == ["a2", "z"]


def test_missing_pairs_are_refused_with_the_command_and_failed_pairs_count_as_far(tmp_path):
    from cctrnet.registration.label_suggestion import SuggestionError, suggest_labels

    folder = _dataset(tmp_path / "missing", skip=("a0", "a1"))
    with pytest.raises(SuggestionError, match=r"1 of the 15 pairs have no affine registration.*cctr_register"):
        suggest_labels(folder, 1, register_missing=False)
    folder = _dataset(tmp_path / "failed", fail=("a1", "a2"))
    suggestion = suggest_labels(folder, 2)
    assert suggestion["dissimilarity"]["failed_pairs"] == [{"cases": "a1 / a2", "reason": "diverged"}]
    matrix = np.array(suggestion["dissimilarity_matrix"])
    assert matrix[1, 2] == matrix.max()


def test_greedy_and_mds_on_points_of_a_plane():
    points = np.array([[0, 0], [1, 0], [0, 1], [10, 10], [10, 11]], dtype=float)
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    picks = greedy_facility_location(distances, 2)
    chosen = sorted(p.index for p in picks)
    assert chosen[0] in (0, 1, 2) and chosen[1] in (3, 4)  # one case of each group
    coordinates, share = classical_mds(distances)
    embedded = np.linalg.norm(coordinates[:, None] - coordinates[None], axis=-1)
    assert share == pytest.approx(1.0) and np.allclose(embedded, distances, atol=1e-6)


def test_near_ties_are_the_candidates_within_the_tolerance_of_the_chosen_cost():
    positions = np.array([0.0, 1.0, 2.05])
    distances = np.abs(positions[:, None] - positions[None])
    # costs of choosing 0 / 1 / 2: 3.05, 2.05, 3.10; the extra shares over 2.05: 1.00 / 2.05 and 1.05 / 2.05
    pick, = greedy_facility_location(distances, 1, near_tie_share=0.5)
    assert pick.index == 1 and len(pick.near_ties) == 1
    assert pick.near_ties[0][0] == 0 and pick.near_ties[0][1] == pytest.approx(1.0 / 2.05)
    assert greedy_facility_location(distances, 1)[0].near_ties == []  # no tolerance
    wider, = greedy_facility_location(distances, 1, near_tie_share=0.52)
    assert [index for index, _ in wider.near_ties] == [0, 2]  # nearest first
    line = np.abs(np.arange(4.0)[:, None] - np.arange(4.0)[None])  # 1 and 2 cost 4 each: an exact tie
    tied, = greedy_facility_location(line, 1)
    assert tied.index == 1 and tied.near_ties == [(2, 0.0)]


def test_cli_ids_only_prints_just_the_ids(tmp_path, monkeypatch):
    _dataset(tmp_path)
    monkeypatch.setenv("cctr_preprocessed", str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "cctrnet.cli.suggest_labels", "-d", "42", "-n", "2", "--ids-only"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["a2", "z"] and "represents" in out.stderr
    assert (tmp_path / "Dataset042_Toy" / "registration" / "2d" / "suggested_labels.png").is_file()
    refused = subprocess.run([sys.executable, "-m", "cctrnet.cli.suggest_labels", "-d", "42", "-n", "9"],
                             capture_output=True, text=True)
    assert refused.returncode == 1 and "only 6 of the 6" in refused.stderr


PATIENTS = {"p0": ["a0", "a1"], "p1": ["a2", "a3"], "p2": ["a4", "z"]}


def _with_patients(folder: Path) -> Path:
    (folder / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "x": 1}, "patients": PATIENTS}))
    return folder


def test_with_patients_whole_patients_are_suggested_and_a_patient_covers_by_its_nearest_frame(tmp_path):
    from cctrnet.registration.label_suggestion import SuggestionError, describe, suggest_labels

    folder = _with_patients(_dataset(tmp_path))
    # p2 holds the outlier and the cluster's end: labeling it covers z exactly and the cluster from a4, which
    # no other patient does (p1 = a2, a3 would leave z at the largest distance)
    first = suggest_labels(folder, 1)
    assert first["unit"] == "patient" and first["num_units"] == 3
    assert first["ids"] == ["a4", "z"] and first["suggested"][0]["patient"] == "p2"
    assert first["suggested"][0]["represents"] == ["a0", "a1", "a2", "a3", "a4", "z"]
    second = suggest_labels(folder, 2)
    assert [s["patient"] for s in second["suggested"]] == ["p2", "p0"]
    assert second["ids"] == ["a4", "z", "a0", "a1"]
    assert second["nearest_labeled"]["a2"] == "a1" and second["nearest_labeled"]["a3"] == "a4"
    assert "p2 (a4, z)" in describe(second) and "2 patients to label next (4 volumes)" in describe(second)
    # a labeled frame makes its patient labeled, with that frame only: p0 by a1 represents a2 better than
    # p2 would from a4, so p2 is still worth it for z, and p1 is never needed first
    after = suggest_labels(folder, 1, labeled_cases=["a1"])
    assert after["already_labeled"] == [{"patient": "p0", "cases": ["a1"], "represents": ["a0", "a1", "a2"]}]
    assert after["ids"] == ["a4", "z"]
    with pytest.raises(SuggestionError, match="2 patient.s. asked for, but only 1 of the 3"):
        suggest_labels(folder, 2, labeled_cases=["a0", "a2"])
    # single volumes on request: the case suggestion of the tests above
    assert suggest_labels(folder, 2, group_by_patient=False)["ids"] == ["a2", "z"]


def test_a_case_outside_the_declared_patients_is_named(tmp_path):
    from cctrnet.registration.label_suggestion import SuggestionError, suggest_labels

    folder = _dataset(tmp_path)
    (folder / "dataset.json").write_text(json.dumps({"patients": {"p0": ["a0", "a1"]}}))
    with pytest.raises(SuggestionError, match=r"dataset.json declares patients, but case\(s\) a2, a3, a4, z"):
        suggest_labels(folder, 1)


def test_greedy_over_patients_counts_volumes():
    # three volumes on a line at 0, 1 and 10; candidate units {0, 1} and {10}: one unit covers more volumes
    distances_to_volumes = np.abs(np.subtract.outer([0.0, 1.0, 10.0], [0.0, 1.0, 10.0]))
    units = np.stack([distances_to_volumes[:, [0, 1]].min(axis=1), distances_to_volumes[:, 2]], axis=1)
    picks = greedy_facility_location(units, 1, unit="patient")
    assert [p.index for p in picks] == [0]  # cost 9 against 19
    with pytest.raises(ValueError, match="3 patient.s. asked for, but only 2 of the 2"):
        greedy_facility_location(units, 3, unit="patient")


def test_cli_with_patients_prints_every_frame_of_the_suggested_patient(tmp_path, monkeypatch):
    _with_patients(_dataset(tmp_path))
    monkeypatch.setenv("cctr_preprocessed", str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "cctrnet.cli.suggest_labels", "-d", "42", "-n", "1", "--ids-only"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["a4", "z"]
    per_volume = subprocess.run([sys.executable, "-m", "cctrnet.cli.suggest_labels", "-d", "42", "-n", "1",
                                 "--ids-only", "--per-volume"], capture_output=True, text=True, check=True)
    assert per_volume.stdout.split() == ["a2"]
