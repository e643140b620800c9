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
