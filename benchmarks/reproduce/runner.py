"""Running one job: prepare a dataset once, train (or resume) a cctrnet run, predict, evaluate, collect numbers."""
from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from benchmarks.reproduce.jobs import DATASETS, Job, quality_every
from benchmarks.reproduce.store import WorkFolder, read_json
from cctrnet.inference.prediction_report import read_prediction_outcome
from cctrnet.postprocessing import UNPROCESSED_SUBFOLDER
from cctrnet.utilities.file_io import save_json


class JobError(RuntimeError):
    """A step of a job failed; the message names the command and the end of its output."""


class StepRecorder:
    """Runs a job's commands one after another, logging each, and keeps their command lines and times."""

    def __init__(self, log_folder: Path, env: dict[str, str], echo: bool = True):
        self.log_folder = Path(log_folder)
        self.env = env
        self.echo = echo
        self.steps: list[dict[str, Any]] = []

    def run(self, name: str, command: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
        log_path = self.log_folder / f"{len(self.steps):02d}_{name}.log"
        if self.echo:
            log(f"    $ {' '.join(command)}")
        return_code, wall, cpu = run_logged(command, env or self.env, log_path)
        step = {"name": name, "command": command, "return_code": return_code, "wall_seconds": round(wall, 2),
                "cpu_seconds": round(cpu, 2), "log": str(log_path)}
        self.steps.append(step)
        if return_code != 0:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
            raise JobError(f"{name} failed (exit {return_code}): {' '.join(command)}\n{tail}")
        return step


_RUNNING: set[subprocess.Popen] = set()  # commands running now, in any worker thread
_RUNNING_LOCK = threading.Lock()
STOPPING = threading.Event()  # set on Ctrl-C / SIGTERM: jobs that end now are not recorded as failed


def run_logged(command: list[str], env: dict[str, str], log_path: Path) -> tuple[int, float, float]:
    """Run a command with its output in ``log_path``; (exit code, wall seconds, CPU seconds of the children).

    The command gets its own process group and its output goes straight to the file (no pipe), so it
    survives the benchmark being killed. A stop (Ctrl-C, or SIGTERM via :func:`install_stop_signals`) is
    passed on to every running command as SIGINT, which makes cctr_train save checkpoint_latest.pth (resumed by
    the rerun with --c). CPU seconds count all children of this process, so with several workers they are
    only indicative.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cpu_before = _children_cpu_seconds()
    started = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        with _RUNNING_LOCK:
            _RUNNING.add(process)
        try:
            return_code = process.wait()
        except KeyboardInterrupt:
            stop_running_commands()
            raise
        finally:
            with _RUNNING_LOCK:
                _RUNNING.discard(process)
    return return_code, time.perf_counter() - started, _children_cpu_seconds() - cpu_before


def stop_running_commands(grace_seconds: float = 120.0) -> None:
    """SIGINT to every running command's process group; SIGKILL to those still running after the grace time."""
    STOPPING.set()
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for process in running:
        _signal_group(process, signal.SIGINT)
    deadline = time.monotonic() + grace_seconds
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)


def _signal_group(process: subprocess.Popen, signal_number: int) -> None:
    try:
        os.killpg(process.pid, signal_number)
    except ProcessLookupError:
        pass


def install_stop_signals() -> None:
    """Ctrl-C and SIGTERM both stop the benchmark cleanly (KeyboardInterrupt in the main thread).

    SIGINT is installed explicitly because a shell starts background commands (``nohup ... &``) with SIGINT
    ignored, and Python keeps it ignored: ``kill -INT`` then did nothing to the benchmark itself.
    """
    def interrupt(signal_number, frame):
        raise KeyboardInterrupt(f"signal {signal_number}")

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def check_commands(env: dict[str, str]) -> str | None:
    """None when cctrnet's console commands start in ``env``, else what is wrong (a stale editable install
    makes every job fail at once with ModuleNotFoundError)."""
    for command in ("cctr_train", "cctr_predict", "cctr_evaluate"):
        if shutil.which(command, path=env.get("PATH")) is None:
            return f"{command} is not on PATH: install cctrnet (pip install -e .)"
    found = subprocess.run(["cctr_train", "--help"], env=env, capture_output=True, text=True)
    if found.returncode != 0:
        tail = (found.stderr or found.stdout).strip().splitlines()[-1:]
        return f"cctr_train does not start ({' '.join(tail)}): reinstall cctrnet with pip install -e ."
    return None


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- datasets ----------------------------------------------------------------------------------------------
def dataset_folder_name(root: Path, dataset_id: int) -> str | None:
    """``DatasetXXX_Name`` of id ``dataset_id`` under ``root`` (raw or preprocessed), None when absent."""
    from cctrnet.dataset.raw_dataset import DatasetNotFoundError, find_dataset_folder

    try:
        return find_dataset_folder(dataset_id, Path(root)).name
    except DatasetNotFoundError:
        return None


def check_generator(dataset: str) -> str | None:
    """None when the dataset's generator command is installed, else a message saying what is missing."""
    command = DATASETS[dataset][1][0]
    if shutil.which(command):
        return None
    return (f"{command} not found: the {dataset} dataset's generator is not installed (for brain: "
            f"dataset_conversion/brain_phantom.py with its console entry; then pip install -e .); "
            f"leave it out with --datasets")


def prepare_dataset(work: WorkFolder, dataset: str, cpu_step_seconds: float, echo: bool = True) -> dict[str, Any]:
    """Generate, plan, preprocess and register a dataset once; later calls read prepare/<dataset>.json."""
    path = work.prepare_path(dataset)
    previous = read_json(path)
    if previous and previous.get("status") == "ok":
        if abs(previous["cpu_step_seconds"] - cpu_step_seconds) > 1e-9:
            raise JobError(f"{work.root} holds {dataset} planned with --cpu-step-seconds "
                           f"{previous['cpu_step_seconds']}, not {cpu_step_seconds}: use another --work-dir")
        return previous
    dataset_id, generate = DATASETS[dataset]
    recorder = StepRecorder(work.root / "prepare" / dataset, work.environment(), echo)
    started = time.perf_counter()
    if dataset_folder_name(work.raw, dataset_id) is None:
        missing = check_generator(dataset)
        if missing:
            raise JobError(missing)
        recorder.run("generate", generate)
    recorder.run("plan_and_preprocess", ["cctr_plan_and_preprocess", "-d", str(dataset_id), "--device", "cpu",
                                         "--cpu-step-seconds", str(cpu_step_seconds), "--no-progress"])
    name = dataset_folder_name(work.preprocessed, dataset_id)
    plans = read_json(work.preprocessed / name / "plans.json")
    configuration = plans["configurations"]["2d"]
    result = {"status": "ok", "dataset": dataset, "dataset_id": dataset_id, "dataset_name": name,
              "cpu_step_seconds": cpu_step_seconds, "data_identifier": configuration["data_identifier"], "wall_seconds": round(time.perf_counter() - started, 1),
              "plan": {k: configuration.get(k) for k in ("spacing_yx", "patch_size_yx", "batch_size",
                                                         "labeled_per_batch", "unlabeled_per_batch")},
              "branch_a": configuration["branch_a"]["network_class"],
              "branch_b": configuration["branch_b"]["network_class"],
              "estimated_step_seconds": configuration.get("estimated_cost", {}).get("step_seconds_both_branches"),
              "labels": plans.get("labels"), "steps": recorder.steps}
    save_json(result, path)
    return result


# --- evaluation ---------------------------------------------------------------------------------------------
def predict_command(images: Path, output: Path, model: Path, device: str, disable_tta: bool) -> list[str]:
    """How every benchmark prediction runs: cctr_predict, post-processed and (--save-without-postprocessing)
    without, so that every table has both."""
    command = ["cctr_predict", "-i", str(images), "-o", str(output), "-m", str(model), "--device", device, "--quiet",
               "--save-without-postprocessing"]
    return command + (["--disable-tta"] if disable_tta else [])


def evaluate(recorder: StepRecorder, work: WorkFolder, prepared: dict, predictions: Path,
             step_name: str = "evaluate", reference: str = "labelsTs",
             expected_missing: Sequence[str] = ()) -> dict[str, Any]:
    raw = work.raw / prepared["dataset_name"]
    try:
        recorder.run(step_name, ["cctr_evaluate", "-ref", str(raw / reference), "-pred", str(predictions),
                                 "-d", str(prepared["dataset_id"]), "--quiet"])
        failure = None
    except JobError as error:  # cctr_evaluate exits 1 on any problem; cases known to have no prediction are not one
        failure = error
    summary = read_json(predictions / "summary.json")
    if failure is not None:
        problems = {kind: entries for kind, entries in (summary or {}).get("problems", {}).items() if entries}
        if summary is None or set(problems) != {"missing_predictions"} \
                or not set(problems["missing_predictions"]) <= set(expected_missing):
            raise failure
    return metrics_from_summary(summary)


def metrics_from_summary(summary: dict) -> dict[str, Any]:
    """Dice % and HD95 mm per class and their means from cctr_evaluate's summary.json."""
    per_class = summary["mean_per_class"]
    per_case = summary.get("per_case", summary.get("cases", [])) or []
    return {"dice": {name: c["dice_percent"] for name, c in per_class.items()},
            "hd95": {name: c["hd95_mm"] for name, c in per_class.items()},
            "mean_dice": summary["mean"]["dice_percent"], "mean_hd95": summary["mean"]["hd95_mm"],
            "num_cases": len(per_case),
            # per case and class, so tables by patient group (or any other grouping) need no predictions
            "per_case_dice": {r["case"]: {name: c.get("dice_percent") for name, c in r.get("classes", {}).items()}
                              for r in per_case if "case" in r}}


# --- trained cctrnet runs -----------------------------------------------------------------------------------
def model_folder_of(results_root: Path, dataset_name: str, job: Job) -> Path | None:
    pattern = f"{job.method.trainer}__labeled*__seed{job.seed}"
    found = sorted((results_root / dataset_name).glob(pattern)) if (results_root / dataset_name).is_dir() else []
    return found[0] if found else None


def train_command(job: Job, prepared: dict, resume: bool, device: str = "cpu") -> list[str]:
    command = ["cctr_train", str(prepared["dataset_id"]), "-tr", job.method.trainer, "--seed", str(job.seed),
               "--iterations", str(job.iterations), "--device", device, "--no-progress"]
    if job.labeled is not None:
        command += ["--labeled", str(job.labeled)]
    every = quality_every(job.iterations)
    command += ["--set", f"log_every={every}", f"pseudo_label_quality_every={every}", *job.run_settings]
    return command + (["--c"] if resume else [])


def progress_history(checkpoint: Path) -> dict[str, list]:
    """The trainer's progress log (key -> [(iteration, value), ...]) stored in a checkpoint."""
    import torch

    return torch.load(checkpoint, map_location="cpu", weights_only=True).get("log", {})


def pseudo_label_curves(history: dict[str, list]) -> dict[str, list[list[float]]]:
    """The history of pseudo-label Dice (keys dice_*) from a progress log."""
    return {k: [[int(i), float(v)] for i, v in points] for k, points in history.items() if k.startswith("dice")}


def logged_step_seconds(history: dict[str, list]) -> float | None:
    """Median of the trainer's own logged seconds per iteration (whole runs and resumed ones alike)."""
    values = [float(v) for _, v in history.get("seconds_per_iteration", [])]
    return round(statistics.median(values), 4) if values else None


def auto_registration_choice(work: WorkFolder, job: Job) -> str | None:
    """The method ``--registration auto`` chose in a training job, read from its training log (None: not logged)."""
    from benchmarks.reproduce.record_validity import logged_auto_choice

    return logged_auto_choice(work.run_folder(job.job_id))


def run_training_job(work: WorkFolder, job: Job, prepared: dict, disable_tta: bool, echo: bool = True,
                     device: str = "cpu") -> dict[str, Any]:
    """Train (or resume), predict the test and validation images, evaluate; ``device`` runs training and
    prediction (the plan stays the CPU plan of prepare_dataset, so rows on either device train the same networks)."""
    folder = work.run_folder(job.job_id)
    results_root = folder / "cctr_results"  # one per job: ablation runs share a trainer name and folder name
    env = work.environment(results_root)
    recorder = StepRecorder(folder / "logs", env, echo)
    result: dict[str, Any] = {"steps": recorder.steps}
    model = model_folder_of(results_root, prepared["dataset_name"], job)
    if model is None or not (model / "checkpoint_final.pth").exists():
        resume = model is not None and (model / "checkpoint_latest.pth").exists()
        result["resumed"] = resume
        recorder.run("train", train_command(job, prepared, resume, device))
        model = model_folder_of(results_root, prepared["dataset_name"], job)
    if model is None:
        raise JobError(f"no model folder under {results_root} after training")

    def predict(step: str, images: str, output: Path) -> None:
        recorder.run(step, predict_command(work.raw / prepared["dataset_name"] / images, output, model, device,
                                           disable_tta))

    predictions = folder / "predictions"
    predict("predict", "imagesTs", predictions)
    config = read_json(model / "config.json") or {}
    unprocessed = predictions / UNPROCESSED_SUBFOLDER
    validation_images = work.raw / prepared["dataset_name"] / "imagesVal"
    if validation_images.is_dir():  # settings beyond the paper are chosen on these, never on the test volumes
        validation_predictions = folder / "predictions_validation"
        predict("predict_validation", "imagesVal", validation_predictions)
        result["metrics_validation"] = evaluate(recorder, work, prepared, validation_predictions,
                                                "evaluate_validation", "labelsVal")
        result["metrics_validation_without_postprocessing"] = evaluate(
            recorder, work, prepared, validation_predictions / UNPROCESSED_SUBFOLDER,
            "evaluate_validation_without_postprocessing", "labelsVal")
    history = progress_history(model / "checkpoint_final.pth")
    result.update({"model_folder": str(model), "labeled_cases": read_json(model / "labeled_cases.json")["labeled"],
                   "settings": config.get("settings"), "num_iterations": config.get("num_iterations"),
                   "metrics": evaluate(recorder, work, prepared, predictions),
                   "postprocessing": read_json(model / "postprocessing.json"),
                   "metrics_without_postprocessing": (evaluate(recorder, work, prepared, unprocessed,
                                                               "evaluate_without_postprocessing")
                                                      if unprocessed.is_dir() else None),
                   "pseudo_label_curves": pseudo_label_curves(history),
                   "train_seconds_per_iteration": _seconds_per_iteration(recorder.steps, job.iterations),
                   "logged_step_seconds": logged_step_seconds(history),
                   "registration_auto_choice": auto_registration_choice(work, job)})
    return result


def _seconds_per_iteration(steps: list[dict], iterations: int) -> float | None:
    train = [s for s in steps if s["name"] == "train"]
    return round(train[-1]["wall_seconds"] / iterations, 3) if train and iterations else None


# --- registration only --------------------------------------------------------------------------------------
def trained_run_for(work: WorkFolder, job: Job) -> dict | None:
    """A finished trained run of the same dataset, N and seed (its labeled_cases.json is the run's choice)."""
    for result in work.all_results().values():
        j = result.get("job", {})
        if (result.get("status") == "ok" and j.get("kind") == "train" and j.get("dataset") == job.dataset
                and j.get("labeled") == job.labeled and j.get("seed") == job.seed and result.get("model_folder")):
            return result
    return None


def run_regonly_job(work: WorkFolder, job: Job, prepared: dict, echo: bool = True) -> dict[str, Any]:
    folder = work.run_folder(job.job_id)
    recorder = StepRecorder(folder / "logs", work.environment(), echo)
    predictions = folder / "predictions"
    command = ["cctr_predict", "--reg-only", "-i", str(work.raw / prepared["dataset_name"] / "imagesTs"),
               "-o", str(predictions), "--quiet"]
    for setting in job.method.settings:  # key=value -> --key value (reg_method=affine_deformable)
        key, value = setting.split("=", 1)
        command += [f"--{key.replace('_', '-')}", value]
    trained = trained_run_for(work, job)
    # A record restored on another machine names a model folder that is not here: the seeded rule then picks
    # the labeled cases, and the check below still holds them to the trained run's.
    use_folder = trained is not None and Path(trained["model_folder"]).is_dir()
    if use_folder:  # the trained runs' exact labeled cases
        command += ["-m", trained["model_folder"]]
    else:  # the same seeded rule cctr_train uses
        command += ["-d", str(prepared["dataset_id"]), "--labeled", str(job.labeled), "--seed", str(job.seed)]
    failure: JobError | None = None
    for stale in predictions.glob("prediction_report*.json"):  # an earlier try's report must not answer for this one
        stale.unlink()
    try:
        step = recorder.run("predict_reg_only", command)
    except JobError as error:  # exit 1 also when cctr_predict skipped a case; only predicting nothing fails
        step, failure = recorder.steps[-1], error
    log_text = Path(step["log"]).read_text()
    try:
        outcome = read_prediction_outcome(predictions)
    except FileNotFoundError:
        outcome = {"predicted": [], "skipped": {}}
    if failure is not None and not outcome["predicted"]:
        raise failure
    unpredicted = outcome["skipped"]
    match = re.search(r"labeled case\(s\) (.+)$", log_text, re.MULTILINE)
    labeled = [c.strip() for c in match.group(1).split(",")] if match else None
    if trained is not None and labeled is not None and sorted(labeled) != sorted(trained["labeled_cases"]):
        raise JobError(f"registration-only used {labeled}, the trained run {trained['labeled_cases']}")
    return {"steps": recorder.steps, "labeled_cases": labeled,
            "labeled_cases_from": trained["model_folder"] if use_folder else "select_labeled_cases rule",
            "unpredicted_cases": unpredicted,
            "metrics": score_missing_as_zero(evaluate(recorder, work, prepared, predictions,
                                                      expected_missing=list(unpredicted)), list(unpredicted))}


def score_missing_as_zero(metrics: dict[str, Any], missing_cases: list[str]) -> dict[str, Any]:
    """Dice 0 for every test case a method gave no prediction for (registration only, where no labeled case
    registered to it): leaving the case out would rank a method higher the more hard cases it drops. HD95 stays
    the mean over the predicted cases (it has no value for an empty prediction); the dropped cases are named."""
    if not missing_cases:
        return metrics
    zero = {name: 0.0 for name in metrics["dice"]}
    per_case = {**metrics["per_case_dice"], **{case: dict(zero) for case in missing_cases}}
    dice = {name: statistics.mean(c[name] for c in per_case.values() if c.get(name) is not None)
            for name in metrics["dice"]}
    return {**metrics, "dice": dice, "mean_dice": sum(dice.values()) / len(dice), "num_cases": len(per_case),
            "per_case_dice": per_case, "cases_scored_zero": sorted(missing_cases),
            "mean_dice_predicted_cases_only": metrics["mean_dice"]}


def labeled_cases_for(work: WorkFolder, job: Job, prepared: dict) -> tuple[list[str], str]:
    """The labeled cases of (dataset, N, seed): a trained run's labeled_cases.json, else cctr_train's rule."""
    trained = trained_run_for(work, job)
    if trained is not None:
        return sorted(trained["labeled_cases"]), trained["model_folder"]
    from cctrnet.dataset.labeled_selection import select_labeled_cases
    from cctrnet.dataset.patients import patient_of_case
    from cctrnet.preprocessing.case_storage import list_preprocessed_cases, load_properties

    data = work.preprocessed / prepared["dataset_name"] / prepared.get("data_identifier", "2d")
    with_labels = [c for c in list_preprocessed_cases(data) if load_properties(data, c).get("is_labeled")]
    patients = patient_of_case(read_json(work.raw / prepared["dataset_name"] / "dataset.json") or {})
    return select_labeled_cases(with_labels, job.labeled, job.seed, patients), "select_labeled_cases rule"


def describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if not isinstance(error, JobError) else str(error)


_LOG_LOCK = threading.Lock()


def log(message: str) -> None:
    """One whole line on stdout, also when several worker threads log at once."""
    with _LOG_LOCK:
        sys.stdout.write(message + "\n")
        sys.stdout.flush()
