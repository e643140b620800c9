"""Branch B candidates side by side with branch A: cost, accuracy alone and how different their errors are.

Issue 4 asked to choose branch B "by cost and by how different their errors are from branch A's". The
planner's cost model covers the first part; this script measures the second on the phantom dataset:

1. Generates the phantom (``cctr_generate_phantom``: 20 training, 10 test cases) and plans and preprocesses
   it for the CPU (``cctr_plan_and_preprocess --device cpu --registration none``) in a work folder
   (``benchmarks/results/branch_b_work``; kept, every stage is skipped when its output exists).
2. Trains, on the same N labeled cases (``--labeled``, chosen by the seeded rule) for the same iterations,
   one run per candidate: ``LabeledOnlyTrainer --set two_branches=true branch_b=X`` trains branch A (the
   plan's PlainConvUNet) and candidate X side by side, each with its own supervised loss only (no cross
   teaching, no unlabeled slices), on identical batches. X: ``same_as_a`` (a second PlainConvUNet, drawn
   after A from the same seed, as CPSTrainer builds its partner), ``ResidualEncoderUNet`` and ``Primus2D``
   (both at the plan's patch and topology, by the planner's rules). Unfinished runs resume.
3. Predicts the test images (``imagesTs``) with the package's predictor, one network at a time, saving the
   class probabilities on the raw grid (as ``cctr_predict --save-probabilities``: ``{case}.npz``).
4. Per candidate, against the A of the same run: foreground Dice of A, of B and of the mean of their softmax
   (the ensemble CCT-R predicts with); over the foreground-relevant voxels (truth or either prediction not
   background, pooled over the test cases) the fraction A gets wrong, B gets wrong, both get wrong (joint
   error), where A and B disagree, and P(B wrong | A wrong). Cost: parameters, seconds per training step of
   each network alone at the plan's full batch (interleaved timing, median) and the planner's estimate.

Prints a Markdown table and writes ``benchmarks/results/branch_b_benchmark_<time>.json``.

    python benchmarks/branch_b_benchmark.py --iterations 200 --max-test-cases 5   # ~20 min on 2 busy cores
    python benchmarks/branch_b_benchmark.py --iterations 100 --candidates ResidualEncoderUNet
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

if __package__ in (None, ""):  # run as a file: make the sibling modules importable as ``benchmarks.*``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.environment import point_paths_to  # noqa: E402
from benchmarks.machine_info import REPOSITORY_ROOT, machine_info  # noqa: E402

RESULTS_FOLDER = REPOSITORY_ROOT / "benchmarks" / "results"
DATASET_ID = 982
DATASET_NAME = f"Dataset{DATASET_ID:03d}_CardiacPhantom"
TRAINER = "LabeledOnlyTrainer"
# label -> value of the trainer setting branch_b
CANDIDATES = {"PlainConvUNet (2nd init)": "same_as_a", "ResidualEncoderUNet": "ResidualEncoderUNet",
              "Primus2D": "Primus2D"}


# --- data ---------------------------------------------------------------------------------------------------
def prepare_dataset(work_dir: Path, num_training: int, num_test: int, num_processes: int) -> Path:
    """Phantom dataset in the work folder, planned and preprocessed for the CPU; returns the raw folder."""
    point_paths_to(work_dir)
    raw = work_dir / "raw" / DATASET_NAME
    if not (raw / "dataset.json").exists():
        _run(["cctr_generate_phantom", "-d", str(DATASET_ID), "--num-training", str(num_training),
              "--num-test", str(num_test), "--overwrite"])
    preprocessed = work_dir / "preprocessed" / DATASET_NAME
    if not (preprocessed / "plans.json").exists() or len(list((preprocessed / "2d").glob("*.json"))) < num_training:
        _run(["cctr_plan_and_preprocess", "-d", str(DATASET_ID), "-np", str(num_processes), "--device", "cpu",
              "--registration", "none", "--no-progress"])
    return raw


def _run(command: list[str]) -> None:
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True, env=os.environ.copy())


# --- training -----------------------------------------------------------------------------------------------
def train_candidate(branch_b: str, labeled_cases: list[str], args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Branch A and candidate ``branch_b`` trained side by side, supervised only; resumes an unfinished run."""
    from cctrnet.training.train_run import make_trainer
    from cctrnet.utilities.file_io import load_json, save_json

    info_path = folder / "benchmark_run.json"
    if (folder / "checkpoint_final.pth").exists() and info_path.exists():
        print(f"{folder.name}: trained already", flush=True)
        return load_json(info_path)
    overrides = {"two_branches": True, "branch_b": branch_b}
    trainer = make_trainer(DATASET_NAME, TRAINER, labeled_cases=labeled_cases, seed=args.seed,
                           iterations=args.iterations, device_name=args.device, overrides=overrides,
                           output_folder=folder)
    previous = load_json(info_path) if info_path.exists() else {"wall_seconds": 0.0, "step_seconds": 0.0,
                                                                  "iterations_timed": 0}
    if (folder / "checkpoint_latest.pth").exists():
        trainer.load(folder / "checkpoint_latest.pth")
        print(f"{folder.name}: resuming at iteration {trainer.iteration}", flush=True)
    start_iteration, start = trainer.iteration, time.perf_counter()
    print(f"{folder.name}: training {TRAINER} --set two_branches=true branch_b={branch_b}, "
          f"{trainer.num_iterations} iterations", flush=True)
    trainer.run(progress=args.progress)
    info = {"trainer": TRAINER, "overrides": overrides, "iterations": trainer.num_iterations,
            "wall_seconds": previous["wall_seconds"] + time.perf_counter() - start,
            "step_seconds": previous["step_seconds"] + trainer.step_seconds,
            "iterations_timed": previous["iterations_timed"] + trainer.num_iterations - start_iteration,
            "resumed_at_iteration": start_iteration or None,
            "architectures": {k: v["network_class"] for k, v in trainer.architectures.items()}}
    # both networks, labeled half of the batch only; a run resumed from a checkpoint misses the lost iterations
    info["seconds_per_iteration_both"] = info["step_seconds"] / max(1, info["iterations_timed"])
    save_json(info, info_path)
    return info


# --- prediction ---------------------------------------------------------------------------------------------
def predict_branches(model_folder: Path, images: Path, out: Path, args: argparse.Namespace,
                     check_ensemble: bool = False) -> tuple[dict[str, Path], float | None]:
    """Each branch of the run alone on the test images, with probabilities; cases already there are kept.

    With ``check_ensemble``, also the largest difference between the mean of the saved probabilities and the
    predictor's own two-branch output on the first case (the same loaded networks).
    """
    from cctrnet.inference.input_cases import list_input_cases
    from cctrnet.inference.model_folder import ModelFolder
    from cctrnet.inference.predictor import Predictor
    from cctrnet.inference.sliding_window import SlidingWindowSettings
    from cctrnet.utilities.device import resolve_device

    model = ModelFolder.load(model_folder)
    device = resolve_device(args.device)
    networks = model.load_networks(device)
    settings = SlidingWindowSettings(mirroring=args.tta)
    folders = {}
    for name, network in networks.items():
        folder = out / name
        for segmentation in folder.glob(f"*{model.file_ending}") if folder.exists() else []:
            stem = segmentation.name[: -len(model.file_ending)]
            if not (folder / f"{stem}.npz").exists():
                segmentation.unlink()  # interrupted between the label map and its probabilities
        start = time.perf_counter()
        cases = list_input_cases(images, model.num_input_channels)[0][: args.max_test_cases]
        report = Predictor(model, [network], device, settings).predict_cases(
            cases, folder, with_probabilities=True, overwrite=False, progress=False)
        if report.problems:
            raise RuntimeError(f"prediction problems in {folder}: {report.problems}")
        if report.predicted:
            print(f"{model_folder.name}/{name}: predicted {len(report.predicted)} case(s) in "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
        folders[name] = folder
    if not check_ensemble:
        return folders, None
    import tempfile

    predictor = Predictor(model, list(networks.values()), device, settings)
    case = list_input_cases(images, model.num_input_channels)[0][0]  # the test images' first case
    with tempfile.TemporaryDirectory() as tmp:
        predictor.predict_case(case.image_files, Path(tmp) / f"{case.case_id}{model.file_ending}", True)
        both = np.load(Path(tmp) / f"{case.case_id}.npz")["probabilities"]
    mean = sum(np.load(f / f"{case.case_id}.npz")["probabilities"] for f in folders.values()) / len(folders)
    return folders, float(np.abs(both - mean).max())


# --- metrics ------------------------------------------------------------------------------------------------
def foreground_dice(prediction: np.ndarray, truth: np.ndarray, foreground: Sequence[int]) -> float:
    """Mean Dice over the foreground labels present in either map (both empty: left out)."""
    from cctrnet.evaluation.metrics import dice_score

    values = [dice_score(prediction == v, truth == v) for v in foreground]
    values = [v for v in values if v == v]
    return float(np.mean(values)) if values else float("nan")


def compare(folder_a: Path, folder_b: Path, labels_folder: Path, file_ending: str,
            max_cases: int | None = None) -> dict[str, Any]:
    """Dice of A, B and their softmax mean, and the error overlap of A and B, over every test case."""
    from cctrnet.dataset.image_io import read_image

    counts = dict.fromkeys(("relevant", "a_wrong", "b_wrong", "both_wrong", "disagree", "ensemble_wrong"), 0)
    per_case = {}
    for probabilities_file in sorted(folder_a.glob("*.npz"))[:max_cases]:
        case = probabilities_file.stem
        truth_file = labels_folder / f"{case}{file_ending}"
        truth = read_image(truth_file, np.int16)[0]
        loaded_a, loaded_b = np.load(folder_a / f"{case}.npz"), np.load(folder_b / f"{case}.npz")
        values = loaded_a["label_values"]
        p_a, p_b = loaded_a["probabilities"], loaded_b["probabilities"]
        if p_a.shape[1:] != truth.shape or p_b.shape != p_a.shape:
            raise ValueError(f"{case}: probabilities {p_a.shape}, {p_b.shape} do not fit the label map {truth.shape}")
        a, b = values[np.argmax(p_a, 0)], values[np.argmax(p_b, 0)]
        ensemble = values[np.argmax(p_a + p_b, 0)]
        foreground = [int(v) for v in values if v != 0]
        relevant = (truth != 0) | (a != 0) | (b != 0)
        wrong_a, wrong_b = (a != truth) & relevant, (b != truth) & relevant
        case_counts = {"relevant": relevant.sum(), "a_wrong": wrong_a.sum(), "b_wrong": wrong_b.sum(),
                       "both_wrong": (wrong_a & wrong_b).sum(), "disagree": ((a != b) & relevant).sum(),
                       "ensemble_wrong": ((ensemble != truth) & relevant).sum()}
        for key, value in case_counts.items():
            counts[key] += int(value)
        per_case[case] = {"dice_a": foreground_dice(a, truth, foreground), "dice_b": foreground_dice(b, truth, foreground),
                          "dice_ensemble": foreground_dice(ensemble, truth, foreground),
                          **{k: int(v) for k, v in case_counts.items()}}
    n = counts["relevant"]
    mean = lambda key: float(np.nanmean([c[key] for c in per_case.values()]))  # noqa: E731
    return {
        "cases": len(per_case), "dice_a": mean("dice_a"), "dice_b": mean("dice_b"),
        "dice_ensemble": mean("dice_ensemble"), "relevant_voxels": n,
        "a_wrong": counts["a_wrong"] / n, "b_wrong": counts["b_wrong"] / n,
        "both_wrong": counts["both_wrong"] / n, "disagree": counts["disagree"] / n,
        "ensemble_wrong": counts["ensemble_wrong"] / n,
        "b_wrong_given_a_wrong": counts["both_wrong"] / counts["a_wrong"] if counts["a_wrong"] else float("nan"),
        # 1: errors as if independent; larger: they coincide more than chance
        "joint_error_over_independent": (counts["both_wrong"] / n) / ((counts["a_wrong"] / n) * (counts["b_wrong"] / n))
        if counts["a_wrong"] and counts["b_wrong"] else float("nan"),
        "per_case": per_case,
    }


# --- cost ---------------------------------------------------------------------------------------------------
def time_training_steps(architectures: dict[str, dict[str, Any]], plans: dict[str, Any], args: argparse.Namespace
                        ) -> dict[str, dict[str, Any]]:
    """Seconds per training step (forward, Dice + CE backward, AdamW) of each network alone at the plan's full
    batch, measured in interleaved rounds; median over the timed steps."""
    import torch

    from cctrnet.networks.branch import SegmentationBranch
    from cctrnet.training.losses.dice_ce import dice_ce_loss

    configuration = plans["configurations"]["2d"]
    batch, patch = configuration["batch_size"], configuration["patch_size_yx"]
    channels, classes = len(plans["channel_names"]), plans["num_classes"]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((batch, channels, *patch), generator=generator)
    target = torch.randint(0, classes, (batch, *patch), generator=generator)
    torch.manual_seed(0)
    nets = {label: SegmentationBranch(arch, channels, classes) for label, arch in architectures.items()}
    optimizers = {label: torch.optim.AdamW(net.parameters(), lr=1e-4) for label, net in nets.items()}
    times: dict[str, list[float]] = {label: [] for label in nets}

    def step(label: str) -> float:
        start = time.perf_counter()
        optimizers[label].zero_grad(set_to_none=True)
        dice_ce_loss(nets[label](x).logits, target).backward()
        optimizers[label].step()
        return time.perf_counter() - start

    for label in nets:
        for _ in range(args.timing_warmup):
            step(label)
    for r in range(args.timing_rounds):
        for label in (list(nets) if r % 2 == 0 else list(reversed(nets))):
            times[label] += [step(label) for _ in range(args.timing_steps)]
    return {label: {"batch_size": batch, "median_seconds": statistics.median(t), "min_seconds": min(t),
                    "max_seconds": max(t), "steps": len(t),
                    "parameters": sum(p.numel() for p in nets[label].parameters())}
            for label, t in times.items()}


# --- report -------------------------------------------------------------------------------------------------
def print_table(results: dict[str, Any]) -> None:
    plan = results["plan"]
    print(f"\n{results['settings']['labeled']} labeled cases, {results['settings']['iterations']} iterations, "
          f"{results['test_cases']} test cases; plan: patch {plan['patch_size_yx']}, batch {plan['batch_size']}, "
          f"branch B chosen by the planner: {plan['branch_b']}\n")
    print("| branch B candidate | params (M) | s/step, batch "
          f"{plan['batch_size']} (planner estimate) | Dice A | Dice B | Dice mean(A, B) | A wrong | B wrong | "
          "both wrong | disagree | P(B wrong \\| A wrong) | joint / independent |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    a_cost = results["cost"]["PlainConvUNet"]
    print(f"| (branch A: PlainConvUNet) | {a_cost['parameters'] / 1e6:.2f} | {a_cost['median_seconds']:.3f} "
          f"({plan['estimated_cpu_step_seconds']['PlainConvUNet']:.3f}) | | | | | | | | | |")
    for label, row in results["candidates"].items():
        cost = results["cost"][row["network_class"]]
        estimate = plan["estimated_cpu_step_seconds"].get(row["network_class"])
        m = row["metrics"]
        print(f"| {label} | {cost['parameters'] / 1e6:.2f} | {cost['median_seconds']:.3f} "
              f"({estimate:.3f}) | {m['dice_a']:.3f} | {m['dice_b']:.3f} | {m['dice_ensemble']:.3f} | "
              f"{100 * m['a_wrong']:.1f} % | {100 * m['b_wrong']:.1f} % | {100 * m['both_wrong']:.1f} % | "
              f"{100 * m['disagree']:.1f} % | {m['b_wrong_given_a_wrong']:.2f} | {m['joint_error_over_independent']:.2f} |")
    print("\nTraining runs (A and the candidate side by side): " + "; ".join(
        f"{label} {row['run']['wall_seconds'] / 60:.1f} min" for label, row in results["candidates"].items()))


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--iterations", type=int, default=400, help="training iterations of every run")
    parser.add_argument("--labeled", type=int, default=4, help="labeled training cases (seeded choice)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the labeled-case choice and of training")
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES),
                        help="branch B candidates to train (default: all)")
    parser.add_argument("--cases", type=int, default=20, help="phantom training cases")
    parser.add_argument("--test-cases", type=int, default=10, help="phantom test cases")
    parser.add_argument("--device", default="cpu", help="where to train and predict (default: cpu)")
    parser.add_argument("--tta", action="store_true",
                        help="predict with mirroring (4x the forward passes; default off: the networks themselves)")
    parser.add_argument("--max-test-cases", type=int, default=None,
                        help="predict and measure only the first N test cases (default: all)")
    parser.add_argument("--timing-rounds", type=int, default=3)
    parser.add_argument("--timing-steps", type=int, default=3, help="timed steps per network and round")
    parser.add_argument("--timing-warmup", type=int, default=2)
    parser.add_argument("-np", "--num-processes", type=int, default=2, help="preprocessing processes")
    parser.add_argument("--progress", action="store_true", help="progress bars while training")
    parser.add_argument("--work-dir", type=Path, default=RESULTS_FOLDER / "branch_b_work",
                        help="phantom data, preprocessing, runs and predictions (kept and reused)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    import signal

    from cctrnet.training.run_setup import prepare_run
    from cctrnet.planning.planner import branch_b_of_family
    from cctrnet.utilities.file_io import save_json

    args = parse_arguments(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))  # unwind, so data workers stop too
    started = time.perf_counter()
    work_dir = args.work_dir.resolve()
    raw = prepare_dataset(work_dir, args.cases, args.test_cases, args.num_processes)
    setup = prepare_run(DATASET_NAME, args.labeled, None, args.seed)
    plans, configuration = setup.plans, setup.configuration
    file_ending = setup.dataset_json["file_ending"]
    estimates = configuration["estimated_cost"]
    results: dict[str, Any] = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "trainer": f"{TRAINER} --set two_branches=true branch_b=<candidate>",
        "labeled_cases": setup.labeled_cases,
        "plan": {"patch_size_yx": configuration["patch_size_yx"], "batch_size": configuration["batch_size"],
                 "spacing_yx": configuration["spacing_yx"], "branch_b": configuration["branch_b"]["network_class"],
                 "estimated_cpu_step_seconds": {"PlainConvUNet": estimates["branch_a"]["cpu_step_seconds"],
                                                **{k: v["cpu_step_seconds"]
                                                   for k, v in estimates["branch_b_candidates"].items()}}},
        "machine": machine_info(), "candidates": {}}
    runs_folder = work_dir / "results" / DATASET_NAME
    predictions_folder = work_dir / ("predictions_tta" if args.tta else "predictions")
    out = RESULTS_FOLDER / f"branch_b_benchmark_{datetime.datetime.now().strftime('%Y%m%d_%H%M%S')}.json"
    for label in args.candidates:
        branch_b = CANDIDATES[label]
        slug = f"{TRAINER}__{branch_b}__labeled{args.labeled}__seed{args.seed}__it{args.iterations}"
        run = train_candidate(branch_b, setup.labeled_cases, args, runs_folder / slug)
        first = not results["candidates"]  # the saved probabilities must average to the two-branch output
        folders, difference = predict_branches(runs_folder / slug, raw / "imagesTs", predictions_folder / slug, args,
                                               check_ensemble=first)
        if first:
            results["ensemble_check_max_abs_difference"] = difference
        metrics = compare(folders["branch_a"], folders["branch_b"], raw / "labelsTs", file_ending, args.max_test_cases)
        results["candidates"][label] = {"branch_b_setting": branch_b, "network_class": run["architectures"]["branch_b"],
                                        "run": run, "metrics": metrics}
        print(f"{label}: Dice A {metrics['dice_a']:.3f}, B {metrics['dice_b']:.3f}, mean {metrics['dice_ensemble']:.3f}; "
              f"joint error {100 * metrics['both_wrong']:.1f} %, disagree {100 * metrics['disagree']:.1f} %", flush=True)
        save_json(results, out)  # what is measured so far survives an interruption
    first = next(iter(results["candidates"].values()), None)
    classes = {"PlainConvUNet": configuration["branch_a"], "ResidualEncoderUNet": None, "Primus2D": None}
    for name in ("ResidualEncoderUNet", "Primus2D"):
        classes[name] = branch_b_of_family(plans, name)
    results["cost"] = time_training_steps(classes, plans, args)
    results["test_cases"] = first["metrics"]["cases"] if first else 0
    results["total_seconds"] = time.perf_counter() - started
    results["machine"]["load_average_1_5_15min_at_end"] = list(os.getloadavg())
    save_json(results, out)
    print_table(results)
    print(f"\ntotal {results['total_seconds'] / 60:.1f} min; written: {out}")


if __name__ == "__main__":
    main()
