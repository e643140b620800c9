"""Data-parallel training on CPU: 2 gloo processes against 1 process with the same global batch.

Generates a tiny phantom (6 training volumes, 2 labeled) in a work folder, plans it with a small CPU plan
(batch 2 labeled + 2 unlabeled, so 1 + 1 per rank), and trains CCT-R three times with the same seed and
length through ``cctr_train``: 1 process; 2 processes with ``ddp_sampling=per_rank`` (the default: each rank
its own slices); 2 processes with ``ddp_sampling=shared`` (the batches of the single process). Reports
seconds per iteration (median over the iterations after the warm-up, as rank 0 records them: collectives
included) and the loss curves side by side, with the largest relative difference to the single process.

Prints Markdown tables and writes ``benchmarks/results/ddp_benchmark_<time>.json``.

    python benchmarks/ddp_benchmark.py                     # ~6 min on 2 busy cores
    python benchmarks/ddp_benchmark.py --iterations 10 --trainer LabeledOnlyTrainer
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the sibling modules importable as ``benchmarks.*``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.environment import point_paths_to  # noqa: E402
from benchmarks.machine_info import REPOSITORY_ROOT, machine_info  # noqa: E402

RESULTS_FOLDER = REPOSITORY_ROOT / "benchmarks" / "results"
DATASET_ID = 982
NUM_TRAINING_CASES = 6
NUM_LABELED = 2
WARMUP_ITERATIONS = 3  # left out of the timing (first steps allocate and warm caches)
FAST_SETTINGS = ["num_workers=0", "n_anchors=50", "n_negatives=50", "log_every=1"]
RUNS = {"1 process": (1, "per_rank"), "2 processes, per_rank": (2, "per_rank"), "2 processes, shared": (2, "shared")}


def prepare_dataset(work_dir: Path, seed: int) -> None:
    from cctrnet import paths
    from cctrnet.planning.planner import DeviceSettings, PlannerSettings
    from cctrnet.plan_and_preprocess import plan_and_preprocess_dataset
    from dataset_conversion.phantom import generate_phantom_dataset
    from dataset_conversion.phantom_config import PhantomConfig

    point_paths_to(work_dir)
    folder = f"Dataset{DATASET_ID:03d}_DDPPhantom"
    if not (paths.raw_folder() / folder).exists():
        generate_phantom_dataset(paths.raw_folder(), dataset_id=DATASET_ID, name="DDPPhantom",
                                 num_training=NUM_TRAINING_CASES, num_test=0, seed=seed, config=PhantomConfig.tiny(),
                                 show_progress=False)
    if not (paths.preprocessed_folder() / folder / "plans.json").exists():
        # batch 4 (2 labeled + 2 unlabeled), patch >= 48: the tests' small CPU plan
        small_plan = PlannerSettings(cpu=DeviceSettings(8, 32, 4, 4, 20, (1, 1, 1, 1, 1, 1, 1)), min_patch_size=48)
        plan_and_preprocess_dataset(str(DATASET_ID), settings=small_plan, device_name="cpu", progress=False)


def train(label: str, processes: int, sampling: str, trainer: str, iterations: int, seed: int) -> dict[str, Any]:
    from cctrnet import paths

    run_folder = (paths.results_folder() / f"Dataset{DATASET_ID:03d}_DDPPhantom" /
                  f"{trainer}__labeled{NUM_LABELED}__seed{seed}")
    if run_folder.exists():
        shutil.rmtree(run_folder)
    command = [sys.executable, "-m", "cctrnet.cli.train", str(DATASET_ID), "-tr", trainer, "--labeled", str(NUM_LABELED),
               "--seed", str(seed), "--iterations", str(iterations), "--device", "cpu", "--threads", "1",
               "--no-progress", "--set", *FAST_SETTINGS, f"ddp_sampling={sampling}"]
    if processes > 1:
        command += ["--num-processes", str(processes)]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall_seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{label}: cctr_train failed ({result.returncode}):\n{result.stderr[-3000:]}")
    import torch

    history = torch.load(run_folder / "checkpoint_final.pth", weights_only=True)["log"]
    seconds = [v for i, v in history["seconds_per_iteration"] if i > WARMUP_ITERATIONS]
    return {"processes": processes, "ddp_sampling": sampling, "wall_seconds": wall_seconds,
            "median_seconds_per_iteration": statistics.median(seconds), "mean_seconds_per_iteration": statistics.fmean(seconds),
            "loss_total": [v for _, v in history["loss_total"]],
            "losses": {k: [v for _, v in points] for k, points in history.items() if k.startswith("loss_")}}


def relative_difference(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a, b))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--trainer", default="CCTRTrainer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "cctrnet_ddp_benchmark",
                        help="dataset and runs (kept between runs: the dataset and registrations are reused)")
    args = parser.parse_args(argv)
    if args.iterations <= WARMUP_ITERATIONS:
        parser.error(f"--iterations must exceed the {WARMUP_ITERATIONS} warm-up iterations")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    prepare_dataset(args.work_dir, args.seed)
    # registration is computed by the first run and cached: a throw-away run keeps it out of the timings
    train("registration", 1, "per_rank", args.trainer, WARMUP_ITERATIONS + 1, args.seed)
    runs = {label: train(label, n, sampling, args.trainer, args.iterations, args.seed)
            for label, (n, sampling) in RUNS.items()}
    reference = runs["1 process"]
    for run in runs.values():
        run["max_relative_loss_difference_to_1_process"] = relative_difference(reference["loss_total"], run["loss_total"])
        run["mean_loss_total"] = statistics.fmean(run["loss_total"])
    print(f"\n{args.trainer}, {args.iterations} iterations, global batch {NUM_LABELED} labeled + 2 unlabeled slices\n")
    print("| run | median s/iteration | vs 1 process | wall s | mean loss_total | max rel. loss difference to 1 process |")
    print("|---|---|---|---|---|---|")
    for label, run in runs.items():
        ratio = run["median_seconds_per_iteration"] / reference["median_seconds_per_iteration"]
        print(f"| {label} | {run['median_seconds_per_iteration']:.3f} | {ratio:.2f}x | {run['wall_seconds']:.0f} | "
              f"{run['mean_loss_total']:.4f} | {run['max_relative_loss_difference_to_1_process']:.2e} |")
    print("\n| iteration | " + " | ".join(runs) + " |")
    print("|---" * (len(runs) + 1) + "|")
    for i in range(args.iterations):
        print(f"| {i + 1} | " + " | ".join(f"{run['loss_total'][i]:.5f}" for run in runs.values()) + " |")
    RESULTS_FOLDER.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
    out = RESULTS_FOLDER / f"ddp_benchmark_{stamp}.json"
    out.write_text(json.dumps({"machine": machine_info(), "trainer": args.trainer, "iterations": args.iterations,
                               "seed": args.seed, "warmup_iterations": WARMUP_ITERATIONS, "runs": runs}, indent=1))
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
