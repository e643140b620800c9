"""nnU-Net v2 (2d) trained on a run's labeled cases only, in its own environment, with the same iterations.

Budget rule: nnU-Net trains num_epochs x num_iterations_per_epoch = the cctrnet trainers' iterations
(``nnUNetTrainer_CCTRBench``, written by this module into the benchmark's own nnU-Net environment, one
validation batch per epoch, no final validation, a checkpoint every epoch so a killed run resumes with --c).
Its plan: ``--nnunet-plan own`` keeps nnU-Net's 2d plan (spacing, patch, batch, network); ``ours`` (the
default, because nnU-Net's own 2d plan is several times slower per iteration on 2 CPU cores) puts cctrnet's
plan into nnU-Net's plans.json: spacing, patch, batch size and branch A's PlainConvUNet topology, with
nnU-Net's own preprocessing, augmentation, loss (deep supervision), optimiser and schedule.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.environment import NNUNET_VENV
from benchmarks.reproduce.jobs import Job
from benchmarks.reproduce.runner import JobError, StepRecorder, evaluate, labeled_cases_for
from benchmarks.reproduce.store import WorkFolder, read_json
from cctrnet.utilities.file_io import save_json

TRAINER = "nnUNetTrainer_CCTRBench"
ENTRY_SCRIPT = Path(__file__).resolve().with_name("nnunet_entry.py")
MAX_ITERATIONS_PER_EPOCH = 50
TRAINER_SOURCE = '''"""Written by cctrnet's benchmarks/reproduce/nnunet.py: nnU-Net with the benchmark's iteration budget."""
import os

import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainer_CCTRBench(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = int(os.environ["CCTR_BENCH_EPOCHS"])
        self.num_iterations_per_epoch = int(os.environ["CCTR_BENCH_ITERATIONS_PER_EPOCH"])
        self.num_val_iterations_per_epoch = 1
        self.save_every = 1

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("cctrnet benchmark: final validation skipped")
'''


def epoch_split(iterations: int, max_per_epoch: int = MAX_ITERATIONS_PER_EPOCH) -> tuple[int, int]:
    """(epochs, iterations per epoch) with epochs x per epoch == iterations and per epoch <= max_per_epoch."""
    for epochs in range(1, iterations + 1):
        if iterations % epochs == 0 and iterations // epochs <= max_per_epoch:
            return epochs, iterations // epochs
    return iterations, 1


def install_trainer(venv: Path) -> Path:
    """Drop the trainer into the venv's nnunetv2/training/nnUNetTrainer/variants/ (found by class name)."""
    python = venv / "bin" / "python"
    if not python.exists():
        raise JobError(f"{python}: no nnU-Net environment; run bash benchmarks/nnunet_env.sh")
    found = subprocess.run([str(python), "-c", "import importlib.util as u; "
                            "print(u.find_spec('nnunetv2').submodule_search_locations[0])"],
                           capture_output=True, text=True)
    if found.returncode != 0:
        raise JobError(f"{python}: nnunetv2 not importable: {found.stderr[-500:]}")
    folder = Path(found.stdout.strip()) / "training" / "nnUNetTrainer" / "variants" / "cctr_benchmark"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "__init__.py").write_text("")
    target = folder / f"{TRAINER}.py"
    if not target.exists() or target.read_text() != TRAINER_SOURCE:
        target.write_text(TRAINER_SOURCE)
    return target


def write_raw_dataset(raw_root: Path, dataset_id: int, source: Path, labeled: list[str]) -> Path:
    """nnU-Net raw dataset with only the labeled cases (symlinks into the cctrnet raw dataset)."""
    source_json = read_json(source / "dataset.json")
    ending = source_json["file_ending"]
    folder = raw_root / f"Dataset{dataset_id:03d}_{source_json.get('name', 'Bench')}"
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    channels = len(source_json["channel_names"])
    for case in labeled:
        links = [(source / "labelsTr" / f"{case}{ending}", folder / "labelsTr" / f"{case}{ending}")]
        links += [(source / "imagesTr" / f"{case}_{c:04d}{ending}", folder / "imagesTr" / f"{case}_{c:04d}{ending}")
                  for c in range(channels)]
        for target, link in links:
            if not target.exists():
                raise JobError(f"{target}: missing in the raw dataset")
            if not link.exists():
                link.symlink_to(target)
    dataset_json = {"channel_names": source_json["channel_names"], "labels": source_json["labels"],
                    "numTraining": len(labeled), "file_ending": ending, "name": source_json.get("name", "Bench")}
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return folder


def apply_our_plan(plans_path: Path, our_configuration: dict) -> dict[str, Any]:
    """Put cctrnet's spacing, patch, batch and branch A topology into nnU-Net's 2d configuration."""
    plans = read_json(plans_path)
    configuration = plans["configurations"]["2d"]
    before = {k: configuration.get(k) for k in ("spacing", "patch_size", "batch_size")}
    before["features_per_stage"] = configuration["architecture"]["arch_kwargs"].get("features_per_stage")
    kwargs = dict(configuration["architecture"]["arch_kwargs"])
    ours = our_configuration["branch_a"]["kwargs"]
    for key in ("n_stages", "features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage",
                "n_conv_per_stage_decoder"):
        kwargs[key] = ours[key]
    configuration["architecture"]["arch_kwargs"] = kwargs
    configuration["spacing"] = list(our_configuration["spacing_yx"])
    configuration["patch_size"] = list(our_configuration["patch_size_yx"])
    configuration["batch_size"] = int(our_configuration["batch_size"])
    configuration["data_identifier"] = "nnUNetPlans_2d_cctrplan"
    save_json(plans, plans_path)
    after = {"spacing": configuration["spacing"], "patch_size": configuration["patch_size"],
             "batch_size": configuration["batch_size"], "features_per_stage": kwargs["features_per_stage"]}
    return {"nnunet_own_plan": before, "used_plan": after}


def seconds_per_iteration_from_log(results_folder: Path, iterations_per_epoch: int) -> float | None:
    """Median nnU-Net 'Epoch time' (training iterations + 1 validation batch) / iterations per epoch."""
    times = []
    for log in sorted(results_folder.rglob("training_log_*.txt")):
        times += [float(t) for t in re.findall(r"Epoch time: ([0-9.]+) s", log.read_text())]
    if not times:
        return None
    times.sort()
    return round(times[len(times) // 2] / iterations_per_epoch, 3)


def nnunet_command(venv: Path, command: str) -> list[str]:
    """An nnU-Net console command run through nnunet_entry.py, which holds torch at $OMP_NUM_THREADS."""
    return [str(venv / "bin" / "python"), str(ENTRY_SCRIPT), command]


def run_nnunet_job(work: WorkFolder, job: Job, prepared: dict, plan_mode: str, disable_tta: bool,
                   venv: Path = NNUNET_VENV, echo: bool = True) -> dict[str, Any]:
    install_trainer(venv)
    folder = work.run_folder(job.job_id)
    root = folder / "nnunet"
    nnunet_id = 900 + prepared["dataset_id"]
    epochs, per_epoch = epoch_split(job.iterations)
    env = work.environment()
    env.update({"nnUNet_raw": str(root / "nnUNet_raw"), "nnUNet_preprocessed": str(root / "nnUNet_preprocessed"),
                "nnUNet_results": str(root / "nnUNet_results"), "nnUNet_n_proc_DA": "2",
                "CCTR_BENCH_EPOCHS": str(epochs), "CCTR_BENCH_ITERATIONS_PER_EPOCH": str(per_epoch),
                "nnUNet_compile": "false", "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"})
    env.pop("PYTHONPATH", None)
    recorder = StepRecorder(folder / "logs", env, echo)
    labeled, labeled_from = labeled_cases_for(work, job, prepared)
    raw_source = work.raw / prepared["dataset_name"]
    raw = write_raw_dataset(root / "nnUNet_raw", nnunet_id, raw_source, labeled)
    nnunet = partial(nnunet_command, venv)
    plans_path = root / "nnUNet_preprocessed" / raw.name / "nnUNetPlans.json"
    plan_record = read_json(folder / "nnunet_plan.json")
    if plan_record is None:
        recorder.run("nnunet_plan", [*nnunet("nnUNetv2_plan_and_preprocess"), "-d", str(nnunet_id), "-c", "2d",
                                     "-np", "1", "-npfp", "1", "--no_pp"])
        if plan_mode == "ours":
            our = read_json(work.preprocessed / prepared["dataset_name"] / "plans.json")["configurations"]["2d"]
            plan_record = {"mode": "ours", **apply_our_plan(plans_path, our)}
        else:
            configuration = read_json(plans_path)["configurations"]["2d"]
            plan_record = {"mode": "own", "used_plan": {k: configuration.get(k)
                                                        for k in ("spacing", "patch_size", "batch_size")}}
        recorder.run("nnunet_preprocess", [*nnunet("nnUNetv2_preprocess"), "-d", str(nnunet_id), "-c", "2d",
                                           "-np", "1"])
        save_json(plan_record, folder / "nnunet_plan.json")
    model = root / "nnUNet_results" / raw.name / f"{TRAINER}__nnUNetPlans__2d" / "fold_all"
    if not (model / "checkpoint_final.pth").exists():
        resume = (model / "checkpoint_latest.pth").exists()
        recorder.run("nnunet_train", [*nnunet("nnUNetv2_train"), str(nnunet_id), "2d", "all", "-tr", TRAINER,
                                      "-device", "cpu", *(["--c"] if resume else [])])
    predictions = folder / "predictions"
    command = [*nnunet("nnUNetv2_predict"), "-i", str(raw_source / "imagesTs"), "-o", str(predictions),
               "-d", str(nnunet_id), "-c", "2d", "-f", "all", "-tr", TRAINER, "-device", "cpu",
               "-chk", "checkpoint_final.pth", "-npp", "1", "-nps", "1"]
    recorder.run("nnunet_predict", command + (["--disable_tta"] if disable_tta else []))
    train_steps = [s for s in recorder.steps if s["name"] == "nnunet_train"]
    return {"steps": recorder.steps, "labeled_cases": labeled, "labeled_cases_from": labeled_from,
            "nnunet_plan": plan_record, "epochs": epochs, "iterations_per_epoch": per_epoch,
            "num_iterations": epochs * per_epoch,
            "train_seconds_per_iteration": seconds_per_iteration_from_log(model, per_epoch),
            "train_wall_seconds": train_steps[-1]["wall_seconds"] if train_steps else None,
            "metrics": evaluate(recorder, work, prepared, predictions)}
