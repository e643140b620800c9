"""The plan-and-preprocess benchmark's own machinery: timing, phases, commands, plan reading, medians, ratios."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from benchmarks.plan_and_preprocess_benchmark import (TOOLS, BenchmarkError, BenchmarkSettings, build_command,
                                                       count_preprocessed_cases, format_report, nnunet_executable,
                                                       plan_summary, ratios, run_order, summarise_tool,
                                                       tool_environment)
from benchmarks.timed_command import PhaseMarker, phase_durations, run_timed

MARKERS = (PhaseMarker("first", r"^stage one done"), PhaseMarker("second", r"stage two done"),
           PhaseMarker("last", None))


def _python_command(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_run_timed_times_phases_from_marker_lines(tmp_path: Path) -> None:
    code = ("import time, sys\n"
            "time.sleep(0.3); print('stage one done')\n"
            "time.sleep(0.6); print('  stage two done', file=sys.stderr)\n"
            "time.sleep(0.2); print('bye')\n")
    run = run_timed(_python_command(code), dict(os.environ), MARKERS, tmp_path / "log.txt", timeout_seconds=30)
    assert run.succeeded and run.return_code == 0 and not run.timed_out
    phases = run.phase_seconds
    # output is line-buffered in the child (PYTHONUNBUFFERED), so marker times follow the sleeps
    assert 0.3 <= phases["first"] < run.wall_seconds
    assert 0.55 <= phases["second"] <= 0.6 + 1.0
    assert 0.15 <= phases["last"]
    assert sum(phases.values()) == pytest.approx(run.wall_seconds)
    assert "stage two done" in (tmp_path / "log.txt").read_text()  # stderr is merged into the log
    assert run.output_tail[-1] == "bye"


def test_run_timed_reports_failure_and_missing_markers(tmp_path: Path) -> None:
    run = run_timed(_python_command("print('stage one done'); raise SystemExit(3)"), dict(os.environ), MARKERS,
                    tmp_path / "log.txt", timeout_seconds=30)
    assert run.return_code == 3 and not run.succeeded
    assert run.phase_seconds["second"] is None and run.phase_seconds["last"] is not None


def test_run_timed_stops_a_command_that_runs_past_the_timeout(tmp_path: Path) -> None:
    start = time.perf_counter()
    run = run_timed(_python_command("import time; time.sleep(60)"), dict(os.environ), MARKERS,
                    tmp_path / "log.txt", timeout_seconds=1.0)
    assert time.perf_counter() - start < 20
    assert run.timed_out and not run.succeeded


def test_phase_durations_give_a_missing_phase_time_to_the_next_seen_one() -> None:
    durations = phase_durations({"first": 2.0}, MARKERS, end_seconds=10.0)
    assert durations == {"first": 2.0, "second": None, "last": 8.0}


def test_commands_use_the_same_process_count_and_nnunet_from_its_venv(tmp_path: Path) -> None:
    settings = BenchmarkSettings(num_processes=3, dataset_id=7)
    nnunet_bin = tmp_path / "venv" / "bin" / "nnUNetv2_plan_and_preprocess"
    nnunet = build_command(TOOLS["nnunet"], settings, nnunet_bin)
    assert nnunet[0] == str(nnunet_bin)
    assert nnunet[nnunet.index("-np") + 1] == "3" and nnunet[nnunet.index("-npfp") + 1] == "3"
    assert nnunet[nnunet.index("-c") + 1] == "2d" and nnunet[nnunet.index("-d") + 1] == "7"
    assert "--verify_dataset_integrity" in nnunet
    assert "--verify_dataset_integrity" not in build_command(TOOLS["nnunet_no_integrity"], settings, nnunet_bin)
    cctr = build_command(TOOLS["cctrnet"], settings, nnunet_bin)
    assert cctr[cctr.index("-np") + 1] == "3" and cctr[cctr.index("--device") + 1] == "cpu"
    assert "--cpu-step-seconds" in build_command(TOOLS["cctrnet_native_spacing"], settings, nnunet_bin)


def test_missing_nnunet_venv_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError, match="nnunet_env.sh"):
        nnunet_executable(tmp_path / "no_venv")


def test_tool_environment_points_only_the_tools_own_variables_into_the_run(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("nnUNet_raw", "/elsewhere")
    monkeypatch.setenv("cctr_preprocessed", "/elsewhere")
    env = tool_environment("nnunet", tmp_path / "raw", tmp_path / "run")
    assert env["nnUNet_raw"] == str(tmp_path / "raw")
    assert env["nnUNet_preprocessed"] == str(tmp_path / "run" / "preprocessed")
    assert "cctr_preprocessed" not in env
    env = tool_environment("cctrnet", tmp_path / "raw", tmp_path / "run")
    assert env["cctr_results"] == str(tmp_path / "run" / "results") and "nnUNet_raw" not in env


def _write(path: Path, content: dict | str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content) if isinstance(content, dict) else content)


def test_plans_and_case_counts_are_read_from_each_tools_files(tmp_path: Path) -> None:
    cctr = tmp_path / "cctr"
    _write(cctr / "plans.json", {"planned_for": {"device": "cpu"}, "configurations": {"2d": {
        "data_identifier": "2d", "spacing_yx": [2.0, 2.0], "patch_size_yx": [80, 96], "batch_size": 8,
        "labeled_per_batch": 4, "median_shape_yx_after_resampling": [100, 110],
        "branch_a": {"network_class": "PlainConvUNet", "kwargs": {"features_per_stage": [16, 32]}},
        "branch_b": {"network_class": "Primus2D", "kwargs": {}}}}})
    for case in ("a", "b"):
        _write(cctr / "2d" / f"{case}_data.npy")
        _write(cctr / "2d" / f"{case}_seg.npy")
    nnunet = tmp_path / "nnunet"
    _write(nnunet / "nnUNetPlans.json", {"configurations": {
        "2d": {"data_identifier": "nnUNetPlans_2d", "spacing": [1.5, 1.5], "patch_size": [192, 160],
               "batch_size": 14, "median_image_size_in_voxels": [180.0, 170.0],
               "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                                "arch_kwargs": {"features_per_stage": [32, 64]}}},
        "3d_fullres": {}}})
    for case in ("a", "b", "c"):
        _write(nnunet / "nnUNetPlans_2d" / f"{case}.pkl")
        _write(nnunet / "nnUNetPlans_2d" / f"{case}_seg.b2nd")
    assert count_preprocessed_cases("cctrnet", cctr) == 2
    assert count_preprocessed_cases("nnunet", nnunet) == 3
    assert count_preprocessed_cases("nnunet", tmp_path / "never_ran") == 0
    c, n = plan_summary("cctrnet", cctr), plan_summary("nnunet", nnunet)
    assert c["patch_size_yx"] == [80, 96] and c["batch_size"] == 8 and "Primus2D" in c["networks"]
    assert n["patch_size_yx"] == [192, 160] and n["spacing_yx_mm"] == [1.5, 1.5] and n["batch_size"] == 14
    assert n["networks"] == "PlainConvUNet [32, 64]" and n["configurations_planned"] == ["2d", "3d_fullres"]
    assert plan_summary("nnunet", tmp_path / "never_ran") is None


def _run(wall: float, cpu: float, ok: bool = True) -> dict:
    return {"succeeded": ok, "wall_seconds": wall, "cpu_seconds": cpu,
            "phase_seconds": {"fingerprint": wall / 2, "preprocess": wall / 2}}


def test_medians_skip_failed_runs_and_ratios_divide_nnunet_by_cctrnet() -> None:
    cctr = summarise_tool("cctrnet", [_run(10, 8), _run(30, 9), _run(12, 10), _run(1, 1, ok=False)], num_cases=4)
    assert cctr["successful_runs"] == 3 and cctr["runs"] == 4
    assert cctr["median_wall_seconds"] == 12 and cctr["median_seconds_per_case"] == 3
    assert (cctr["min_wall_seconds"], cctr["max_wall_seconds"]) == (10, 30)
    assert cctr["median_phase_seconds"]["preprocess"] == 6
    nnunet = summarise_tool("nnunet", [_run(48, 36), _run(60, 45)], num_cases=4)
    found = ratios({"cctrnet": cctr, "nnunet": nnunet})
    assert len(found) == 1  # the other pairs did not run
    assert found[0]["wall_time_ratio"] == pytest.approx(54 / 12)
    assert found[0]["cpu_time_ratio"] == pytest.approx(40.5 / 9)
    failed = summarise_tool("nnunet", [_run(5, 5, ok=False)], num_cases=4)
    assert failed["median_wall_seconds"] is None and ratios({"cctrnet": cctr, "nnunet": failed}) == []


def test_run_order_rotates_so_every_tool_takes_every_place() -> None:
    tools = ("a", "b", "c")
    orders = [run_order(tools, r) for r in range(3)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]


def test_report_table_holds_the_medians_and_the_ratio() -> None:
    summaries = {"cctrnet": summarise_tool("cctrnet", [_run(10, 8)], 4),
                 "nnunet": summarise_tool("nnunet", [_run(45, 30)], 4)}
    result = {"settings": {"num_training": 4, "num_processes": 2, "repetitions": 1}, "dataset": "Dataset001_X",
              "summaries": summaries, "ratios": ratios(summaries), "plans_2d": {},
              "machine": {"usable_cpu_count": 2, "cpu_model": "cpu", "python": "3", "torch": "2", "nnunetv2": "2.8",
                          "cctrnet_git": {"commit": "abc", "uncommitted_changes": False}},
              "load_average_1min_before_runs": {"min": 1.0, "max": 3.0}}
    report = format_report(result)
    assert "| cctrnet | 1/1 | 10.0 (10.0-10.0) | 2.50 | 8.0 |" in report
    assert "ratio nnunet / cctrnet: wall 4.50x, CPU 3.75x" in report
