"""Fast tests of the reproduction runner's jobs (benchmarks/reproduce/runner.py) with the commands faked."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))

from benchmarks.reproduce import runner  # noqa: E402
from benchmarks.reproduce.jobs import CORE_METHODS, Job  # noqa: E402
from benchmarks.reproduce.store import WorkFolder  # noqa: E402
from cctrnet.inference.predictor import FolderPredictionReport  # noqa: E402
from cctrnet.inference.prediction_report import write_prediction_report  # noqa: E402
from cctrnet.utilities.file_io import save_json  # noqa: E402


@pytest.mark.parametrize("folder_exists", [True, False])
def test_registration_only_uses_the_trained_folder_only_where_it_exists(tmp_path, monkeypatch, folder_exists):
    """A record restored from another machine names a model folder that is not here: the seeded rule is used."""
    work = WorkFolder(tmp_path)
    model_folder = tmp_path / "cctr_results" / "model"
    if folder_exists:
        model_folder.mkdir(parents=True)
    save_json({"status": "ok", "job": {"kind": "train", "dataset": "acdc2", "labeled": 1, "seed": 2},
               "model_folder": str(model_folder), "labeled_cases": ["p1_ED", "p1_ES"]}, work.result_path("trained"))
    regonly = next(m for m in CORE_METHODS if m.kind == "regonly")
    job = Job("acdc2", regonly, 1, 2, 2000)
    commands = []

    def fake_run(self, name, command, env=None):
        commands.append(command)
        log_path = self.log_folder / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("registration only from labeled case(s) p1_ES, p1_ED\n")
        return {"name": name, "command": command, "log": str(log_path)}

    monkeypatch.setattr(runner.StepRecorder, "run", fake_run)
    monkeypatch.setattr(runner, "evaluate", lambda *args, **kwargs: {"mean_dice": 1.0})
    result = runner.run_regonly_job(work, job, {"dataset_name": "Dataset001_X", "dataset_id": 1}, echo=False)
    command = commands[0]
    if folder_exists:
        assert command[command.index("-m") + 1] == str(model_folder) and "-d" not in command
        assert result["labeled_cases_from"] == str(model_folder)
    else:
        assert "-m" not in command and command[command.index("--seed") + 1] == "2"
        assert result["labeled_cases_from"] == "select_labeled_cases rule"
    assert result["labeled_cases"] == ["p1_ES", "p1_ED"]
    # the seeded rule must give the trained run's cases, or the job fails
    save_json({"status": "ok", "job": {"kind": "train", "dataset": "acdc2", "labeled": 1, "seed": 2},
               "model_folder": str(model_folder), "labeled_cases": ["p9_ED", "p9_ES"]}, work.result_path("trained"))
    with pytest.raises(runner.JobError, match="registration-only used"):
        runner.run_regonly_job(work, job, {"dataset_name": "Dataset001_X", "dataset_id": 1}, echo=False)


def test_registration_only_keeps_a_run_that_skipped_cases_and_fails_one_that_predicted_nothing(tmp_path, monkeypatch):
    work = WorkFolder(tmp_path)
    regonly = next(m for m in CORE_METHODS if m.kind == "regonly")
    job = Job("acdc2", regonly, 1, 0, 2000)
    log_text = {"value": "registration-only (affine): X, labeled case(s) p1_ED\n"}
    outcome = {"value": FolderPredictionReport(predicted=["p1", "p2", "p3"], skipped={
        "p7_ES": "no labeled case could be registered to the image (determinant)"})}

    def fake_run(self, name, command, env=None):  # cctr_predict's log and report, and its exit 1 for a skip
        log_path = self.log_folder / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(log_text["value"])
        write_prediction_report(outcome["value"], command[command.index("-o") + 1])
        self.steps.append({"name": name, "command": command, "log": str(log_path)})
        raise runner.JobError(f"{name} failed (exit 1)")

    monkeypatch.setattr(runner.StepRecorder, "run", fake_run)
    monkeypatch.setattr(runner, "evaluate", lambda *args, **kwargs: {
        "dice": {"RV": 50.0}, "hd95": {"RV": 3.0}, "mean_dice": 50.0, "mean_hd95": 3.0, "num_cases": 3,
        "per_case_dice": {c: {"RV": 50.0} for c in ("p1", "p2", "p3")}})
    result = runner.run_regonly_job(work, job, {"dataset_name": "X", "dataset_id": 1}, echo=False)
    assert list(result["unpredicted_cases"]) == ["p7_ES"]
    assert result["metrics"]["mean_dice"] == pytest.approx(37.5) and result["metrics"]["cases_scored_zero"] == ["p7_ES"]
    outcome["value"] = FolderPredictionReport(skipped={"p7_ES": "unreadable"})
    with pytest.raises(runner.JobError):
        runner.run_regonly_job(work, job, {"dataset_name": "X", "dataset_id": 1}, echo=False)


def test_a_case_without_prediction_scores_dice_zero():
    metrics = {"dice": {"RV": 80.0, "LV": 60.0}, "hd95": {"RV": 5.0, "LV": 7.0}, "mean_dice": 70.0, "mean_hd95": 6.0,
               "num_cases": 1, "per_case_dice": {"a": {"RV": 80.0, "LV": 60.0}}}
    scored = runner.score_missing_as_zero(metrics, ["b"])
    assert scored["dice"] == {"RV": 40.0, "LV": 30.0} and scored["mean_dice"] == 35.0 and scored["num_cases"] == 2
    assert scored["per_case_dice"]["b"] == {"RV": 0.0, "LV": 0.0} and scored["mean_dice_predicted_cases_only"] == 70.0
    assert scored["mean_hd95"] == 6.0 and scored["cases_scored_zero"] == ["b"]
    assert runner.score_missing_as_zero(metrics, []) is metrics


def test_evaluation_accepts_only_the_missing_predictions_it_was_told_of(tmp_path, monkeypatch):
    work, predictions = WorkFolder(tmp_path), tmp_path / "predictions"
    summary = {"mean_per_class": {"RV": {"dice_percent": 50.0, "hd95_mm": 3.0}},
               "mean": {"dice_percent": 50.0, "hd95_mm": 3.0}, "per_case": [],
               "problems": {"missing_predictions": ["p7_ES"], "geometry_mismatch": []}}
    save_json(summary, predictions / "summary.json")

    def failing_run(self, name, command, env=None):
        raise runner.JobError(f"{name} failed (exit 1)")

    monkeypatch.setattr(runner.StepRecorder, "run", failing_run)
    recorder = runner.StepRecorder(tmp_path / "logs", {}, echo=False)
    prepared = {"dataset_name": "X", "dataset_id": 1}
    assert runner.evaluate(recorder, work, prepared, predictions, expected_missing=["p7_ES"])["mean_dice"] == 50.0
    with pytest.raises(runner.JobError):
        runner.evaluate(recorder, work, prepared, predictions)
    summary["problems"]["geometry_mismatch"] = [{"case": "p1_ED", "differences": ["spacing"]}]
    save_json(summary, predictions / "summary.json")
    with pytest.raises(runner.JobError):
        runner.evaluate(recorder, work, prepared, predictions, expected_missing=["p7_ES"])
