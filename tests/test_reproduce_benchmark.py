"""Fast tests of benchmarks/reproduce: job list, resume/skip, aggregation over seeds, markdown, epoch split."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))

from benchmarks.reproduce.jobs import (ABLATION_METHODS, CORE_METHODS, ROBUSTNESS_METHODS, Job, Method,  # noqa: E402
                                       Selection, build_jobs, default_iterations, quality_every, table_methods)
from benchmarks.reproduce.nnunet import epoch_split  # noqa: E402
from benchmarks.reproduce.runner import metrics_from_summary, train_command  # noqa: E402
from benchmarks.reproduce.store import WorkFolder  # noqa: E402
from cctrnet.utilities.file_io import save_json  # noqa: E402
from benchmarks.reproduce.tables import aggregate_row, build_table, mean_std, render_markdown  # noqa: E402


def test_core_job_list_counts_and_fs_once_per_seed():
    jobs = build_jobs(Selection(datasets=["phantom", "brain"], labeled=[1, 2], seeds=[0, 1]), 300)
    ids = [j.job_id for j in jobs]
    assert len(ids) == len(set(ids))
    # per dataset and seed: 6 methods x 2 N + FS once
    assert len(jobs) == 2 * 2 * (6 * 2 + 1)
    fs = [j for j in jobs if j.method.all_labels]
    assert len(fs) == 4 and all(j.labeled is None for j in fs)
    assert "phantom__CTSTrainer__L1__s0__it300" in ids
    assert "phantom__regonly-reg_engine_torch__L2__s1" in ids  # no budget in the id: registration only does not train
    # registration only runs after the trained runs of its dataset and seed (it reuses labeled_cases.json)
    phantom0 = [j for j in jobs if j.dataset == "phantom" and j.seed == 0]
    assert phantom0[-1].method.kind == "regonly"


def test_ablation_reuses_core_runs_and_stays_on_phantom():
    core = build_jobs(Selection(datasets=["phantom", "brain"], labeled=[1], seeds=[0], tables=["core"]), 100)
    both = build_jobs(Selection(datasets=["phantom", "brain"], labeled=[1], seeds=[0], tables=["core", "ablation"]),
                      100)
    extra = {j.job_id for j in both} - {j.job_id for j in core}
    # CTS and all (CCT-R) are the core table's runs; with one labeled case +RSL and +RSL+BRS are one run
    assert len(extra) == 4
    assert all(i.startswith("phantom__CCTRTrainer-") for i in extra)
    assert "phantom__CCTRTrainer-reps_false-scl_false__L1__s0__it100" in extra


def test_method_selection_and_unknown_method():
    selection = Selection(methods=["LS", "CCTR", "regonly"])
    assert [m.label for m in table_methods("core", selection)] == ["LS", "CCT-R", "registration only"]
    assert len(table_methods("ablation", selection)) == len(ABLATION_METHODS)
    with pytest.raises(ValueError, match="unknown method"):
        build_jobs(Selection(methods=["XYZ"]), 10)


def test_train_command_settings_and_resume():
    job = Job("phantom", ABLATION_METHODS[1], 2, 3, 200)
    command = train_command(job, {"dataset_id": 1}, resume=False)
    assert command[:4] == ["cctr_train", "1", "-tr", "CCTRTrainer"]
    assert command[command.index("--labeled") + 1] == "2" and command[command.index("--seed") + 1] == "3"
    settings = command[command.index("--set") + 1:]
    assert "log_every=20" in settings and "pseudo_label_quality_every=20" in settings
    assert {"brs=false", "reps=false", "scl=false"} <= set(settings)
    assert train_command(job, {"dataset_id": 1}, resume=True)[-1] == "--c"
    fs = Job("phantom", CORE_METHODS[-1], None, 0, 200)
    assert "--labeled" not in train_command(fs, {"dataset_id": 1}, resume=False)
    assert command[command.index("--device") + 1] == "cpu"  # the recorded tables' device unless asked
    on_gpu = train_command(job, {"dataset_id": 1}, resume=False, device="cuda")
    assert on_gpu[on_gpu.index("--device") + 1] == "cuda"


def test_default_iterations_fit_the_target_and_quality_points():
    selection = Selection(datasets=["phantom"], labeled=[1], seeds=[0], methods=["LS"])
    short = default_iterations(selection, 0.6, target_seconds=600)
    long = default_iterations(selection, 0.6, target_seconds=6000)
    assert long > short >= 100 and long % 50 == 0
    assert quality_every(300) == 30 and quality_every(5) == 1


def test_resume_skips_only_finished_jobs(tmp_path):
    work = WorkFolder(tmp_path)
    save_json({"status": "ok"}, work.result_path("a"))
    save_json({"status": "failed", "error": "x"}, work.result_path("b"))
    assert work.finished("a") and not work.finished("b") and not work.finished("c")
    (work.root / "jobs" / "broken.json").write_text("{half")
    assert not work.finished("broken")
    assert set(work.all_results()) == {"a", "b"}
    assert not list((work.root / "jobs").glob(".*"))  # no temporary files left behind
    env = work.environment(tmp_path / "r")
    assert env["cctr_raw"] == str(work.raw) and env["cctr_results"] == str(tmp_path / "r")


def test_mean_std_over_seeds():
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)), 2)
    assert mean_std([5.0, None, float("nan")]) == (5.0, None, 1)
    assert mean_std([]) == (None, None, 0)


def _result(seed, dice_a, dice_b, hd, status="ok", method="LS"):
    return {"status": status, "job": {"seed": seed, "method_label": method},
            "metrics": {"dice": {"A": dice_a, "B": dice_b}, "hd95": {"A": hd, "B": None},
                        "mean_dice": (dice_a + dice_b) / 2, "mean_hd95": hd}}


def test_aggregate_row_and_markdown():
    row = aggregate_row([_result(0, 80.0, 60.0, 4.0), _result(1, 90.0, 70.0, 6.0),
                         {"status": "failed", "job": {"seed": 2}}])
    assert row["n_seeds"] == 2 and row["failed"] == [2]
    assert row["dice"]["A"]["mean"] == 85.0 and row["dice"]["A"]["std"] == pytest.approx(7.0711, 1e-4)
    assert row["mean_dice"]["mean"] == 75.0
    assert row["hd95"]["B"]["mean"] is None
    text = render_markdown("T", [{"dataset": "phantom", "labeled": 1, "rows": [{"method": "LS", **row}]}],
                           ["budget line"])
    assert "## phantom, 1 labeled case\n" in text and "budget line" in text
    assert "| LS | 2 (1 failed) | 85.0 ± 7.1 | 65.0 ± 7.1 | 75.0 ± 7.1 | 5.0 ± 1.4 | – | 5.0 ± 1.4 |" in text
    assert "| method | n | Dice A | Dice B | Dice mean | HD95 A | HD95 B | HD95 mean |" in text


def test_build_table_groups_by_dataset_and_labeled():
    selection = Selection(datasets=["phantom"], labeled=[1, 2], seeds=[0], methods=["LS", "FS"])
    jobs = build_jobs(selection, 50)
    results = {j.job_id: _result(0, 50.0 + (j.labeled or 10), 40.0, 3.0) for j in jobs}
    blocks = build_table("core", selection, 50, results)
    assert [(b["dataset"], b["labeled"]) for b in blocks] == [("phantom", 1), ("phantom", 2)]
    ls1 = blocks[0]["rows"][0]
    assert ls1["method"] == "LS" and ls1["dice"]["A"]["mean"] == 51.0 and ls1["dice"]["A"]["std"] is None
    # FS does not depend on N: the same run in both blocks
    assert blocks[0]["rows"][1]["job_ids"] == blocks[1]["rows"][1]["job_ids"]


def test_budget_table_runs_each_budget_and_shares_the_registration_run(tmp_path):
    selection = Selection(datasets=["phantom", "acdc"], labeled=[1], seeds=[0], tables=["registration", "budget"],
                          budgets=[1000, 300])
    jobs = build_jobs(selection, 2000)
    ids = [j.job_id for j in jobs]
    assert len(ids) == len(set(ids))
    assert "acdc__LabeledOnlyTrainer__L1__s0__it300" in ids and "acdc__CTSTrainer__L1__s0__it1000" in ids
    assert not any(i.startswith("phantom__") and "__it300" in i for i in ids)  # the budget curve is ACDC-like only
    # the 2000-iteration CCT-R (affine+deformable) of the registration table is the budget table's run at 2000
    with_2000 = build_jobs(Selection(datasets=["acdc"], labeled=[1], seeds=[0], tables=["registration", "budget"],
                                     budgets=[300, 2000]), 2000)
    deformable = [j for j in with_2000 if j.slug == "CCTRTrainer-registration_method_affine_deformable"]
    assert sorted(j.iterations for j in deformable) == [300, 2000]
    results = {j.job_id: _result(0, 40.0 + j.iterations / 100, 40.0, 3.0) for j in jobs}
    blocks = build_table("budget", selection, 2000, results)
    rows = blocks[0]["rows"]
    assert [r["method"] for r in rows[:2]] == ["LS @ 300 it", "LS @ 1000 it"]
    assert [r["dice"]["A"]["mean"] for r in rows[:2]] == [43.0, 50.0]
    # the appearance-version-2 population has the same tables as the first
    robust2 = build_jobs(Selection(datasets=["acdc2"], labeled=[1], seeds=[0], tables=["robustness", "budget"],
                                   budgets=[300]), 2000)
    assert {j.dataset for j in robust2} == {"acdc2"} and len(robust2) == len(ROBUSTNESS_METHODS) + 3
    assert "patient" in render_markdown("T", build_table("budget", Selection(datasets=["acdc2"], labeled=[1],
                                                                              seeds=[0], tables=["budget"],
                                                                              budgets=[300]), 2000, {}))
    from benchmarks.reproduce.figures import budget_curve

    assert budget_curve(blocks, "Budget curve", tmp_path / "budget.png").stat().st_size > 0


def test_metrics_from_summary():
    summary = {"mean_per_class": {"RV": {"dice_percent": 70.0, "hd95_mm": 5.0}, "LV": {"dice_percent": 90.0,
                                                                                     "hd95_mm": None}},
               "mean": {"dice_percent": 80.0, "hd95_mm": 5.0}}
    metrics = metrics_from_summary(json.loads(json.dumps(summary)))
    assert metrics["dice"] == {"RV": 70.0, "LV": 90.0} and metrics["mean_dice"] == 80.0
    assert metrics["per_case_dice"] == {} and metrics["num_cases"] == 0
    summary["per_case"] = [{"case": "p1_ED", "classes": {"RV": {"dice_percent": 60.0}, "LV": {"dice_percent": 80.0}}},
                           {"case": "p1_ES", "classes": {"RV": {"dice_percent": None}, "LV": {"dice_percent": 100.0}}}]
    metrics = metrics_from_summary(summary)
    assert metrics["num_cases"] == 2
    assert metrics["per_case_dice"] == {"p1_ED": {"RV": 60.0, "LV": 80.0}, "p1_ES": {"RV": None, "LV": 100.0}}


def test_group_table_averages_cases_then_seeds_and_skips_runs_without_per_case_dice(tmp_path):
    from benchmarks.reproduce.report import patient_groups
    from benchmarks.reproduce.store import WorkFolder
    from benchmarks.reproduce.tables import group_blocks, render_group_markdown

    def run(per_case):
        return {"status": "ok", "metrics": {"per_case_dice": per_case}}

    groups = {"acdc2": {"a_ED": "HCM", "a_ES": "HCM", "b_ED": "NOR"}}
    results = {"s0": run({"a_ED": {"RV": 40.0, "LV": 60.0}, "a_ES": {"RV": 70.0, "LV": None}, "b_ED": {"RV": 90.0}}),
               "s1": run({"a_ED": {"RV": 60.0, "LV": 80.0}, "a_ES": {"RV": 90.0, "LV": 90.0}, "b_ED": {"RV": 80.0}}),
               "s2": {"status": "ok", "metrics": {"mean_dice": 1.0}}}  # recorded before per-case Dice was kept
    blocks = [{"dataset": "acdc2", "labeled": 1, "rows": [{"method": "LS", "job_ids": ["s0", "s1", "s2", "s3"]}]},
              {"dataset": "phantom", "labeled": 1, "rows": [{"method": "LS", "job_ids": ["s0"]}]}]
    table = group_blocks(blocks, results, groups)
    assert len(table) == 1 and table[0]["group_names"] == ["HCM", "NOR"]  # the phantom has no groups
    row = table[0]["rows"][0]
    assert row["n_seeds"] == 2
    # seed 0: HCM (50 + 70) / 2 = 60, NOR 90; seed 1: HCM (70 + 90) / 2 = 80, NOR 80
    assert row["groups"]["HCM"]["mean"] == pytest.approx(70.0) and row["groups"]["HCM"]["std"] == pytest.approx(
        math.sqrt(200))
    assert row["groups"]["NOR"]["mean"] == pytest.approx(85.0)
    assert row["groups"]["all"]["mean"] == pytest.approx(((50 + 70 + 90) / 3 + (70 + 90 + 80) / 3) / 2)
    text = render_group_markdown("T", table)
    assert "| LS | 2 | 70.0 ± 14.1 | 85.0 ± 7.1 |" in text and "### acdc2, 1 labeled patient\n" in text

    work = WorkFolder(tmp_path)
    (tmp_path / "prepare").mkdir()
    (tmp_path / "prepare" / "acdc2.json").write_text(json.dumps({"dataset_name": "Dataset004_X"}))
    assert patient_groups(work, "acdc2") == {}  # no patients.json: no groups
    (tmp_path / "cctr_raw" / "Dataset004_X").mkdir(parents=True)
    (tmp_path / "cctr_raw" / "Dataset004_X" / "patients.json").write_text(json.dumps(
        {"p1": {"group": "DCM", "cases": {"ED": "p1_ED", "ES": "p1_ES"}}, "p2": {"cases": {"ED": "p2_ED"}}}))
    assert patient_groups(work, "acdc2") == {"p1_ED": "DCM", "p1_ES": "DCM"}

    from benchmarks.reproduce.report import with_per_case_dice

    old = {"old": {"status": "ok", "metrics": {"mean_dice": 50.0}}, "new": run({"x": {"RV": 1.0}})}
    (tmp_path / "runs" / "old" / "predictions").mkdir(parents=True)
    (tmp_path / "runs" / "old" / "predictions" / "summary.json").write_text(json.dumps(
        {"mean_per_class": {"RV": {"dice_percent": 50.0, "hd95_mm": 1.0}}, "mean": {"dice_percent": 50.0, "hd95_mm": 1.0},
         "per_case": [{"case": "p1_ED", "classes": {"RV": {"dice_percent": 50.0}}}]}))
    filled = with_per_case_dice(work, old)
    assert filled["old"]["metrics"]["per_case_dice"] == {"p1_ED": {"RV": 50.0}} and "per_case_dice" not in old["old"]["metrics"]
    assert filled["new"] is old["new"]


@pytest.mark.parametrize("iterations,expected", [(20, (1, 20)), (300, (6, 50)), (130, (5, 26)), (101, (101, 1))])
def test_epoch_split_keeps_the_iteration_budget(iterations, expected):
    epochs, per_epoch = epoch_split(iterations)
    assert (epochs, per_epoch) == expected and epochs * per_epoch == iterations


def _timed_result(job: Job, per_iteration: float, outside: float, resumed: bool = False) -> dict:
    training = per_iteration * job.iterations
    steps = [{"name": "train", "wall_seconds": training}, {"name": "predict", "wall_seconds": outside - 1.0},
             {"name": "evaluate", "wall_seconds": 1.0}]
    record = {"id": job.job_id, "dataset": job.dataset, "kind": job.method.kind, "trainer": job.method.trainer,
              "settings": list(job.method.settings), "labeled": job.labeled, "seed": job.seed,
              "iterations": job.iterations}
    return {"job": record, "status": "ok", "resumed": resumed, "steps": steps,
            "train_seconds_per_iteration": per_iteration}


def test_calibration_from_finished_jobs_replaces_built_in_estimates():
    from benchmarks.reproduce.jobs import calibration

    cts = CORE_METHODS[2]
    ablation = ABLATION_METHODS[1]
    results = {"a": _timed_result(Job("phantom", cts, 1, 0, 300), 1.0, 60.0),
               "b": _timed_result(Job("phantom", cts, 2, 0, 300), 2.0, 80.0),
               "c": _timed_result(Job("phantom", cts, 1, 1, 300), 9.0, 999.0, resumed=True),  # not a timing
               "d": _timed_result(Job("phantom", ablation, 1, 0, 300), 3.0, 50.0)}
    measured = calibration(results)
    assert measured["phantom/CTSTrainer"] == pytest.approx((1.5, 70.0))
    # a resumed job is timed by the trainer's own logged step time, not by its partial training command
    results["c"]["logged_step_seconds"] = 2.5
    assert calibration(results)["phantom/CTSTrainer"] == pytest.approx((2.0, 80.0))
    del results["c"]
    assert measured["phantom/CCTRTrainer-brs_false-reps_false-scl_false"] == pytest.approx((3.0, 50.0))
    assert Job("phantom", cts, 1, 5, 100).estimated_seconds(0.6, measured) == pytest.approx(70.0 + 150.0)
    # an untimed variant: its built-in cost at the speed the dataset's timed trainers ran (median ratio)
    cctr = next(m for m in CORE_METHODS if m.trainer == "CCTRTrainer")
    measured["phantom/CCTRTrainer"] = (4.0, 90.0)  # 2.0 x its built-in 2.0 s; CTS ran at 1.5 / 1.25 = 1.2 x
    speed, overhead = (2.0 + 1.2) / 2, (90.0 + 70.0) / 2
    robust = Method("w_rs 0.3", "train", "CCTRTrainer", ("w_rs=0.3",))  # every module on: CCT-R's cost
    assert Job("phantom", robust, 1, 0, 100).estimated_seconds(0.6, measured) == pytest.approx(
        overhead + 100 * 2.0 * speed)
    assert Job("phantom", cctr, 1, 0, 100).estimated_seconds(0.6, measured) == pytest.approx(90.0 + 400.0)
    untimed_ablation = ABLATION_METHODS[2]  # +RSL+BRS: SCL and REPS off, the cheaper ablation rate
    assert Job("phantom", untimed_ablation, 1, 0, 100).estimated_seconds(0.6, measured) == pytest.approx(
        overhead + 100 * 1.8 * speed)
    # another dataset keeps the built-in estimate
    assert Job("brain", cts, 1, 0, 100).estimated_seconds(0.6, measured) == Job("brain", cts, 1, 0, 100).estimated_seconds(0.6)
    # two workers: twice the job time fits the same wall-clock target
    selection = Selection(datasets=["phantom"], labeled=[1], seeds=[0])
    assert default_iterations(selection, 0.6, 3600, workers=2) > default_iterations(selection, 0.6, 3600, workers=1)


def test_nnunet_entry_holds_torch_threads(monkeypatch):
    import torch

    from benchmarks.reproduce import nnunet_entry

    before = torch.get_num_threads()
    original = torch.set_num_threads
    try:
        nnunet_entry.hold_torch_threads(1)
        torch.set_num_threads(8)  # what nnU-Net's CPU entry points do
        assert torch.get_num_threads() == 1
    finally:
        monkeypatch.setattr(torch, "set_num_threads", original)
        torch.set_num_threads(before)
    assert nnunet_entry.main(["nnUNetv2_unknown"]) == 2
    assert set(nnunet_entry.ENTRY_POINTS) >= {"nnUNetv2_train", "nnUNetv2_predict"}


def test_check_commands_names_a_broken_install(tmp_path):
    from benchmarks.reproduce.runner import check_commands

    assert "not on PATH" in check_commands({"PATH": str(tmp_path)})
    broken = tmp_path / "cctr_train"
    broken.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'cctrnet'\" >&2\nexit 1\n")
    broken.chmod(0o755)
    for name in ("cctr_predict", "cctr_evaluate"):
        (tmp_path / name).symlink_to(broken)
    problem = check_commands({"PATH": str(tmp_path)})
    assert "does not start" in problem and "No module named 'cctrnet'" in problem


def test_stop_passes_sigint_to_running_commands(tmp_path):
    import threading
    import time

    from benchmarks.reproduce import runner

    script = tmp_path / "child.py"
    script.write_text("import signal, sys, time\n"
                      "signal.signal(signal.SIGINT, lambda *a: (print('saved', flush=True), sys.exit(3)))\n"
                      "print('started', flush=True)\ntime.sleep(60)\n")
    log = tmp_path / "child.log"
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.setdefault(
        "result", runner.run_logged([sys.executable, str(script)], {}, log)))
    thread.start()
    for _ in range(200):
        if log.exists() and "started" in log.read_text():
            break
        time.sleep(0.05)
    try:
        runner.stop_running_commands(grace_seconds=10)
        thread.join(20)
        assert outcome["result"][0] == 3 and "saved" in log.read_text()
        assert runner.STOPPING.is_set()
    finally:
        runner.STOPPING.clear()


def test_brs_rows_share_a_run_with_one_labeled_case():
    jobs = build_jobs(Selection(datasets=["phantom"], labeled=[1, 2], seeds=[0], tables=["ablation"]), 100)
    rsl, rsl_brs = ABLATION_METHODS[1], ABLATION_METHODS[2]
    assert Job("phantom", rsl, 1, 0, 100).job_id == Job("phantom", rsl_brs, 1, 0, 100).job_id
    assert Job("phantom", rsl, 2, 0, 100).job_id != Job("phantom", rsl_brs, 2, 0, 100).job_id
    assert "brs=false" not in train_command(Job("phantom", rsl, 1, 0, 100), {"dataset_id": 1}, resume=False)
    assert "brs=false" in train_command(Job("phantom", rsl, 2, 0, 100), {"dataset_id": 1}, resume=False)
    assert len(jobs) == 7 + 6  # N=1: 6 distinct runs for 7 rows; N=2: 7
    shared = Job("phantom", rsl, 1, 0, 100).job_id
    result = {"job": {"seed": 0}, "status": "ok", "metrics": {"dice": {"LV": 50.0}, "hd95": {"LV": 5.0},
                                                             "mean_dice": 50.0, "mean_hd95": 5.0}}
    blocks = build_table("ablation", Selection(datasets=["phantom"], labeled=[1], seeds=[0], tables=["ablation"]),
                         100, {shared: result})
    rows = {row["method"]: row for row in blocks[0]["rows"]}
    assert rows["+RSL"]["mean_dice"]["mean"] == rows["+RSL+BRS"]["mean_dice"]["mean"] == 50.0


def test_a_row_forcing_the_method_auto_chose_is_recorded_as_the_auto_run(tmp_path):
    """The registration table's CCT-R (affine+deformable) is the core CCT-R when `auto` chose affine_deformable."""
    import benchmarks.reproduce as package  # noqa: F401  (the runner script imports as benchmarks.reproduce.*)
    from benchmarks.reproduce.jobs import registration_twin
    from benchmarks.reproduce.runner import auto_registration_choice

    reproduce = _runner_script()
    jobs = build_jobs(Selection(datasets=["acdc2"], labeled=[1], seeds=[0], methods=["CCTR"],
                                tables=["core", "registration"]), 2000)
    by_slug = {j.slug: j for j in jobs}
    auto = by_slug["CCTRTrainer"]
    deformable = by_slug["CCTRTrainer-registration_method_affine_deformable"]
    affine = by_slug["CCTRTrainer-registration_method_affine"]
    twin, method = registration_twin(deformable)
    assert (twin.job_id, method) == (auto.job_id, "affine_deformable")
    assert registration_twin(auto) is None and registration_twin(by_slug["regonly-reg_method_affine_deformable"]) is None
    work = WorkFolder(tmp_path)
    listed = {j.job_id for j in jobs}
    assert reproduce.job_state(work, deformable, listed) == "after twin"
    assert reproduce.job_state(work, deformable, listed - {auto.job_id}) == "to run"  # no twin to wait for
    assert not reproduce.record_shared_run(work, deformable, "x")  # the twin has not run
    log = work.run_folder(auto.job_id) / "logs" / "00_train.log"
    log.parent.mkdir(parents=True)
    log.write_text("[cctrnet] registration auto: affine_deformable (one labeled patient: ...)\n")
    assert auto_registration_choice(work, auto) == "affine_deformable"
    assert not reproduce.record_shared_run(work, deformable, "x")  # ... nor finished
    save_json(_record_of(auto), work.result_path(auto.job_id))
    assert not reproduce.record_shared_run(work, affine, "x")  # auto chose another method: affine must train
    assert not work.finished(affine.job_id)
    assert reproduce.job_state(work, deformable, listed) == "shared"
    assert reproduce.job_state(work, affine, listed) == "to run"
    assert reproduce.record_shared_run(work, deformable, "x")
    assert reproduce.job_state(work, deformable, listed) == "done"
    shared = work.load_result(deformable.job_id)
    assert shared["same_run_as"] == auto.job_id and shared["metrics"]["mean_dice"] == 70.0
    assert shared["job"]["id"] == deformable.job_id


def test_waiting_jobs_run_after_their_twin_or_share_its_run(tmp_path, monkeypatch):
    reproduce = _runner_script()
    jobs = build_jobs(Selection(datasets=["acdc2"], labeled=[1], seeds=[0], methods=["CCTR"],
                                tables=["core", "registration"]), 2000)
    trained = [j for j in jobs if j.method.kind == "train"]
    work, order = WorkFolder(tmp_path), []

    def run_job(work_folder, job, prepared, args):
        order.append(job.job_id)
        if job.slug == "CCTRTrainer":
            log = work_folder.run_folder(job.job_id) / "logs" / "00_train.log"
            log.parent.mkdir(parents=True)
            log.write_text("registration auto: affine_deformable\n")
        record = {**_record_of(job), "wall_seconds": 0.0}
        save_json(record, work_folder.result_path(job.job_id))
        return record

    monkeypatch.setattr(reproduce, "run_job", run_job)
    args = type("Args", (), {"workers": 1, "cpu_step_seconds": 0.6})()
    waiting = [(j.job_id, j) for j in trained if j.slug != "CCTRTrainer"]
    reproduce.run_pool([(j.job_id, j) for j in trained if j.slug == "CCTRTrainer"], waiting, work,
                       {"acdc2": {}}, args, {})
    auto = next(j.job_id for j in trained if j.slug == "CCTRTrainer")
    assert order == [auto, next(j.job_id for j in trained if j.slug.endswith("_affine"))]
    assert all(work.finished(j.job_id) for j in trained)


def _runner_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("reproduce_script", REPOSITORY / "benchmarks" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rows_select_rows_of_the_non_core_tables_by_label():
    selection = Selection(datasets=["acdc2"], labeled=[1], seeds=[1, 2], methods=["CTS", "CCTR"],
                          tables=["core", "robustness"], rows=["w_rs 1 (the paper's)"])
    jobs = build_jobs(selection, 2000)
    assert sorted({j.method.label for j in jobs}) == ["CCT-R", "CTS", "w_rs 1 (the paper's)"]  # core rows are --methods'
    assert sorted({j.seed for j in jobs}) == [1, 2] and len(jobs) == 6
    with pytest.raises(ValueError, match="unknown row"):
        build_jobs(Selection(datasets=["acdc2"], labeled=[1], seeds=[0], tables=["robustness"], rows=["w_rs 3"]), 10)


def test_curves_and_step_time_are_read_from_the_trainers_progress_log(tmp_path):
    import torch

    from benchmarks.reproduce.runner import logged_step_seconds, progress_history, pseudo_label_curves

    log = {"dice_pseudo_A": [(10, 0.5), (20, 0.625)], "seconds_per_iteration": [(10, 1.0), (20, 3.0), (30, 2.0)],
           "loss_total": [(10, 0.9)]}
    checkpoint = tmp_path / "checkpoint_final.pth"
    torch.save({"log": log}, checkpoint)
    history = progress_history(checkpoint)
    assert pseudo_label_curves(history) == {"dice_pseudo_A": [[10, 0.5], [20, 0.625]]}
    assert logged_step_seconds(history) == 2.0
    torch.save({}, checkpoint)
    assert progress_history(checkpoint) == {} and logged_step_seconds({}) is None


def _record_of(job: Job, **changed) -> dict:
    """A finished training record as run_job writes it, trained with the job's settings and ``changed``."""
    import benchmarks.reproduce as package  # noqa: F401
    from benchmarks.reproduce.record_validity import expected_settings

    reproduce = _runner_script()
    return {"status": "ok", "job": reproduce.job_record(job), "settings": {**expected_settings(job), **changed},
            "metrics": {"mean_dice": 70.0}, "model_folder": "MODEL"}


def _save_run(work: WorkFolder, job: Job, record: dict, auto_log: str | None = None) -> None:
    folder = work.run_folder(job.job_id)
    (folder / "logs").mkdir(parents=True)
    record = {**record, "model_folder": str(folder / "cctr_results" / "model")}
    if auto_log:
        (folder / "logs" / "00_train.log").write_text(f"[cctrnet] registration auto: {auto_log} (one labeled case)\n")
    save_json(record, work.result_path(job.job_id))


def _with_w_rs_default(monkeypatch, value: float) -> None:
    """As if cctrnet's default registration-supervision weight had been changed to ``value``."""
    import dataclasses

    from cctrnet.training.config import TrainerConfig

    names = [f.name for f in dataclasses.fields(TrainerConfig)]
    defaults = list(TrainerConfig.__init__.__defaults__)
    defaults[names.index("w_rs")] = value
    monkeypatch.setattr(TrainerConfig.__init__, "__defaults__", tuple(defaults))
    assert TrainerConfig().w_rs == value


def _w_rs_values() -> tuple[float, float]:
    """(today's default w_rs, another value to pretend the default changed to)."""
    from cctrnet.training.config import TrainerConfig

    old = TrainerConfig().w_rs
    return old, (0.3 if old != 0.3 else 1.0)


def test_a_changed_default_makes_a_record_stale_and_it_is_refiled_to_the_row_it_is(tmp_path, monkeypatch):
    """A job id names a row's settings on top of the defaults: after a default changes, the old record is moved
    to the row that names its settings, and a forced-registration run with the new settings stands for the
    default row, so nothing trains twice and nothing is lost."""
    from benchmarks.reproduce.jobs import _train
    from benchmarks.reproduce import record_validity

    reproduce = _runner_script()
    old, new = _w_rs_values()
    ls, cctr = build_jobs(Selection(datasets=["acdc2"], labeled=[1], seeds=[0], methods=["LS", "CCTR"]), 2000)
    forced = Job("acdc2", _train("new weight", "CCTRTrainer", "registration_method=affine_deformable", f"w_rs={new}"),
                 1, 0, 2000)
    previous = Job("acdc2", _train("old weight", "CCTRTrainer", f"w_rs={old}"), 1, 0, 2000)
    jobs = [ls, cctr, forced, previous]
    work, listed = WorkFolder(tmp_path), {j.job_id for j in jobs}
    for job in (ls, cctr, forced):
        _save_run(work, job, _record_of(job), auto_log="affine_deformable" if job is cctr else None)
    assert [reproduce.job_state(work, j, listed) for j in jobs] == ["done"] * 3 + ["shared"]

    _with_w_rs_default(monkeypatch, new)
    # LS has RSL off: w_rs is inert there, so its record stands
    assert reproduce.job_state(work, ls, listed) == "done"
    assert reproduce.job_state(work, cctr, listed) == "stale"
    assert f"w_rs {old!r} (now {new!r})" in record_validity.stale_reason_of(work, cctr, work.all_results())
    assert reproduce.job_state(work, forced, listed) == "done"  # it names its weight itself
    assert record_validity.refile_plan(work, jobs, work.all_results()) == {cctr.job_id: previous.job_id}  # the dry run's
    shown, notes = record_validity.tabled_results(work, jobs)  # what a report shows before anything moves
    assert shown[previous.job_id]["settings"]["w_rs"] == old and shown[cctr.job_id]["same_run_as"] == forced.job_id
    assert len(notes) == 1 and notes[0].startswith(cctr.job_id) and previous.job_id in notes[0]
    reproduce.set_aside_stale_records(work, jobs)
    moved = work.load_result(previous.job_id)
    assert moved["moved_from"]["job_id"] == cctr.job_id and moved["job"]["id"] == previous.job_id
    assert moved["model_folder"].startswith(str(work.run_folder(previous.job_id)))
    assert (work.run_folder(previous.job_id) / "logs" / "00_train.log").exists()
    assert not work.run_folder(cctr.job_id).exists() and not work.finished(cctr.job_id)
    # auto chose affine_deformable for these labeled cases (the moved run's log), so the forced run is CCT-R's
    assert record_validity.auto_choice(work, "acdc2", 1, 0) == "affine_deformable"
    assert reproduce.job_state(work, cctr, listed) == "shared"
    assert reproduce.record_shared_run(work, cctr, "x")
    assert work.load_result(cctr.job_id)["same_run_as"] == forced.job_id
    assert reproduce.job_state(work, previous, listed) == "done" and reproduce.job_state(work, cctr, listed) == "done"


def test_a_stale_record_without_a_row_is_set_aside_and_its_job_trains_anew(tmp_path, monkeypatch):
    from benchmarks.reproduce import record_validity

    reproduce = _runner_script()
    old, new = _w_rs_values()
    jobs = build_jobs(Selection(datasets=["acdc2"], labeled=[1], seeds=[0], methods=["CCTR"]), 2000)
    (cctr,) = jobs
    work = WorkFolder(tmp_path)
    _save_run(work, cctr, _record_of(cctr), auto_log="affine_deformable")
    _with_w_rs_default(monkeypatch, new)
    reproduce.set_aside_stale_records(work, jobs)
    kept = tmp_path / record_validity.STALE_FOLDER / cctr.job_id
    assert (kept / "job.json").exists() and (kept / "run" / "logs" / "00_train.log").exists()
    assert json.loads((kept / "job.json").read_text())["settings"]["w_rs"] == old
    assert reproduce.job_state(work, cctr, {cctr.job_id}) == "to run"
    assert record_validity.auto_choice(work, "acdc2", 1, 0) == "affine_deformable"  # read from the set-aside run
    # a second change sets the next stale record beside the first, never over it
    _save_run(work, cctr, _record_of(cctr, w_rs=0.5))
    reproduce.set_aside_stale_records(work, jobs)
    assert (tmp_path / record_validity.STALE_FOLDER / f"{cctr.job_id}.1" / "job.json").exists()


def test_records_differing_only_in_monitoring_or_later_added_settings_stand():
    from benchmarks.reproduce.record_validity import serves, stale_reason

    (cctr,) = build_jobs(Selection(datasets=["acdc2"], labeled=[1], seeds=[0], methods=["CCTR"]), 2000)
    record = _record_of(cctr, log_every=50, num_workers=0)
    del record["settings"]["rsl_fade"]  # a setting added after the run: its default keeps the old behaviour
    assert stale_reason(record, cctr) is None and serves(record, cctr)
    assert "seed" in stale_reason(_record_of(cctr, seed=3), cctr)
    assert not serves(_record_of(cctr, registration_method="affine"), cctr, "affine_deformable")
    assert serves(_record_of(cctr, registration_method="affine_deformable"), cctr, "affine_deformable")
    assert not serves(_record_of(cctr, registration_method="affine_deformable"), cctr, None)  # choice unknown


def test_two_rows_with_the_same_settings_train_once(tmp_path, monkeypatch):
    """A row naming today's default value explicitly is the default row's run: one trains, the other is recorded
    as it; a row with other settings trains."""
    from benchmarks.reproduce.jobs import _train
    from benchmarks.reproduce.record_validity import may_be_same_run

    reproduce = _runner_script()
    old, other = _w_rs_values()
    (default,) = build_jobs(Selection(datasets=["acdc2"], labeled=[1], seeds=[0], methods=["CCTR"]), 2000)
    explicit = Job("acdc2", _train("explicit", "CCTRTrainer", f"w_rs={old}"), 1, 0, 2000)
    forced = Job("acdc2", _train("forced", "CCTRTrainer", "registration_method=affine_deformable"), 1, 0, 2000)
    different = Job("acdc2", _train("different", "CCTRTrainer", f"w_rs={other}"), 1, 0, 2000)
    assert may_be_same_run(default, explicit) and may_be_same_run(default, forced)
    assert not may_be_same_run(forced, default) and not may_be_same_run(default, different)
    todo, waiting, twins = reproduce.wait_for_same_runs([(j.job_id, j) for j in (default, explicit, different)], [])
    assert [j for _, j in todo] == [default, different] and [j for _, j in waiting] == [explicit]
    assert twins == {explicit.job_id: default.job_id}
    work, order = WorkFolder(tmp_path), []

    def run_job(work_folder, job, prepared, args):
        order.append(job.job_id)
        record = {**_record_of(job), "wall_seconds": 0.0}
        save_json(record, work_folder.result_path(job.job_id))
        return record

    monkeypatch.setattr(reproduce, "run_job", run_job)
    args = type("Args", (), {"workers": 1, "cpu_step_seconds": 0.6})()
    reproduce.run_pool(todo, waiting, work, {"acdc2": {}}, args, {}, twins)
    assert order == [default.job_id, different.job_id]
    assert work.load_result(explicit.job_id)["same_run_as"] == default.job_id
