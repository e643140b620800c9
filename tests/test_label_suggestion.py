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
