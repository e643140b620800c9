"""Seconds per training iteration of LS, CTS and CCT-R at the planned configuration, side by side in one run.

Generates the phantom dataset (not timed) in a work folder, plans and preprocesses it for this machine's
CPU (the "planned configuration"), builds every trainer variant with ``--labeled 2`` (the CCT-R variants
compute their missing registrations once; cached in the work folder, so later runs start fast) and then,
for each torch thread count, times the variants in interleaved blocks: round r runs every variant once
(reversed order on odd rounds), each block a few warm-up iterations and then measured ones. Per variant:
median / mean seconds per iteration, the share of the time spent waiting for a batch, the load average
and the CPU that other processes used while the block ran. Then the overhead of CCT-R (and of each
added module: RSL, SCL, REPS) over CTS. When the overhead exceeds its target or a data wait share exceeds
its target, the variant is profiled (cProfile) and the hotspots are printed.

Prints Markdown tables and writes ``benchmarks/results/training_benchmark_<time>.json``.

    python benchmarks/training_benchmark.py                    # ~10 min on 2 busy cores
    python benchmarks/training_benchmark.py --iterations 10 --threads 1 --no-breakdown --no-in-process-data
    python benchmarks/training_benchmark.py --variants LS=LabeledOnlyTrainer "CCTR, no BRS=CCTRTrainer:brs=false"
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):  # run as a file: make the sibling modules importable as ``benchmarks.*``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.environment import point_paths_to  # noqa: E402
from benchmarks.machine_info import REPOSITORY_ROOT, machine_info  # noqa: E402
from cctrnet.utilities.cpu_threads import busy_cpu_seconds, others_busy_cores, own_cpu_seconds  # noqa: E402

RESULTS_FOLDER = REPOSITORY_ROOT / "benchmarks" / "results"
DATASET_ID = 981
OVERHEAD_TARGET_PERCENT = 25.0  # issue 4: SCL + REPS over CTS
DATA_WAIT_TARGET_PERCENT = 5.0  # issue 4: share of the time waiting for data
QUIET_CHECK_SECONDS = 1.0  # window of the "is the machine quiet" check before each measurement


@dataclass(frozen=True)
class Variant:
    """One trainer set-up to time: a label, a registered trainer name and ``--set`` overrides."""
    label: str
    trainer_name: str
    overrides: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        settings = ",".join(f"{k}={v}" for k, v in self.overrides.items())
        return self.trainer_name + (f" --set {settings}" if settings else "")


MAIN_VARIANTS = [Variant("LS", "LabeledOnlyTrainer"), Variant("CTS", "CTSTrainer"), Variant("CCTR", "CCTRTrainer")]
# CTS plus one module after another, so the differences split CCT-R's extra time
BREAKDOWN_VARIANTS = [Variant("CTS+RSL", "CCTRTrainer", {"scl": False, "reps": False}),
                      Variant("CTS+RSL+SCL", "CCTRTrainer", {"reps": False})]


def parse_variant(spec: str) -> Variant:
    """``[LABEL=]Trainer[:key=value,key=value]`` -> Variant (values typed as ``cctr_train --set``)."""
    from cctrnet.training.config import parse_set_arguments
    from cctrnet.training.trainers.registry import get_trainer_class

    head, _, settings = spec.partition(":")
    label, _, trainer_name = head.rpartition("=")
    get_trainer_class(trainer_name)  # refuses an unknown name with the list of known ones
    overrides = parse_set_arguments([s for s in settings.split(",") if s]) if settings else {}
    return Variant(label or spec, trainer_name, overrides)


def in_process_variant(variant: Variant) -> Variant:
    """The same variant with batches made in the training process (no data workers)."""
    return Variant(f"{variant.label} (0 workers)", variant.trainer_name, {**variant.overrides, "num_workers": 0})


# --- data ---------------------------------------------------------------------------------------------------
def prepare_dataset(work_dir: Path, num_cases: int, seed: int) -> dict[str, Any]:
    """Phantom dataset, planned and preprocessed for this CPU (reused when already there); returns plans.json."""
    from cctrnet import paths
    from cctrnet.plan_and_preprocess import plan_and_preprocess_dataset
    from cctrnet.utilities.file_io import load_json
    from dataset_conversion.phantom import generate_phantom_dataset

    point_paths_to(work_dir)
    folder_name = f"Dataset{DATASET_ID:03d}_CardiacPhantom"
    raw = paths.raw_folder() / folder_name
    preprocessed = paths.preprocessed_folder() / folder_name
    if not raw.exists():
        generate_phantom_dataset(paths.raw_folder(), dataset_id=DATASET_ID, num_training=num_cases, num_test=0,
                                 seed=seed, show_progress=False)
    plans_path = preprocessed / "plans.json"
    data_folder = preprocessed / "2d"
    if not plans_path.exists() or len(list(data_folder.glob("*.json"))) < num_cases:
        plan_and_preprocess_dataset(str(DATASET_ID), device_name="cpu", progress=False)
    return load_json(plans_path)


# --- machine state ------------------------------------------------------------------------------------------
def wait_for_quiet_machine(max_other_cores: float, max_wait_seconds: float) -> dict[str, float]:
    """Wait (up to ``max_wait_seconds``) until other processes use at most ``max_other_cores``; report the state."""
    waited = 0.0
    other = others_busy_cores(QUIET_CHECK_SECONDS)
    while other > max_other_cores and waited < max_wait_seconds:
        time.sleep(4.0)
        waited += 5.0
        other = others_busy_cores(QUIET_CHECK_SECONDS)
    return {"load_average_1min": os.getloadavg()[0], "other_cores_before": round(other, 2),
            "waited_seconds": waited}


# --- timing -------------------------------------------------------------------------------------------------
def build_trainer(variant: Variant, dataset: str, num_labeled: int, seed: int, run_folder: Path):
    from cctrnet.training.train_run import make_trainer

    start = time.perf_counter()
    trainer = make_trainer(dataset, variant.trainer_name, num_labeled=num_labeled, seed=seed, iterations=None,
                           device_name="cpu", overrides=dict(variant.overrides), output_folder=run_folder)
    trainer.loader = trainer.build_loader()
    return trainer, time.perf_counter() - start


@dataclass
class BlockTimes:
    iteration_seconds: list[float] = field(default_factory=list)
    wait_seconds: list[float] = field(default_factory=list)
    main_cpu_seconds: list[float] = field(default_factory=list)  # training process, all its threads
    worker_cpu_seconds: float = 0.0  # data worker processes, over the measured iterations
    blocks: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        s = self.iteration_seconds
        total = sum(s)
        return {"iterations": len(s), "median_seconds": statistics.median(s), "mean_seconds": statistics.fmean(s),
                "min_seconds": min(s), "max_seconds": max(s),
                "median_main_cpu_seconds": statistics.median(self.main_cpu_seconds),
                "worker_cpu_seconds_per_iteration": self.worker_cpu_seconds / len(s),
                "data_wait_share": sum(self.wait_seconds) / total if total > 0 else 0.0,
                "load_average_1min": [b["load_average_1min"] for b in self.blocks],
                "other_cores_before": [b["other_cores_before"] for b in self.blocks],
                "other_cores_during": [b["other_cores_during"] for b in self.blocks]}


def run_block(trainer, warmup: int, measured: int, times: BlockTimes, state: dict[str, float]) -> None:
    """``warmup`` untimed iterations, then ``measured`` timed ones (wall time and data wait of each)."""
    for _ in range(warmup):
        trainer.train_one_iteration()
    busy, own, start = busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
    main_cpu_start = time.process_time()
    for _ in range(measured):
        wait_before = trainer.data_wait_seconds
        started, cpu_started = time.perf_counter(), time.process_time()
        trainer.train_one_iteration()
        times.iteration_seconds.append(time.perf_counter() - started)
        times.main_cpu_seconds.append(time.process_time() - cpu_started)
        times.wait_seconds.append(trainer.data_wait_seconds - wait_before)
    elapsed = time.perf_counter() - start
    own_used = own_cpu_seconds() - own
    times.worker_cpu_seconds += max(0.0, own_used - (time.process_time() - main_cpu_start))
    other = max(0.0, (busy_cpu_seconds() - busy) - own_used) / elapsed
    times.blocks.append({**state, "other_cores_during": round(other, 2)})


def measure(variants: Sequence[Variant], threads: int, args: argparse.Namespace, dataset: str,
            runs_folder: Path) -> dict[str, dict[str, Any]]:
    """Interleaved blocks of every variant with ``threads`` torch threads; summary per variant label."""
    import torch
    from tqdm import tqdm

    torch.set_num_threads(threads)
    trainers, setup_seconds = {}, {}
    try:
        for variant in variants:
            trainers[variant.label], setup_seconds[variant.label] = build_trainer(
                variant, dataset, args.labeled, args.seed, runs_folder / f"{_slug(variant.label)}_t{threads}")
        times = {v.label: BlockTimes() for v in variants}
        for trainer in trainers.values():  # fills the memory banks and the data queues before any timing
            for _ in range(args.first_warmup):
                trainer.train_one_iteration()
        per_round = _split(args.iterations, args.rounds)
        bar = tqdm(total=len(variants) * args.rounds, desc=f"{threads} thread(s)", unit="block", leave=False)
        for round_index, measured in enumerate(per_round):
            order = list(variants) if round_index % 2 == 0 else list(reversed(variants))
            for variant in order:
                state = wait_for_quiet_machine(args.max_other_cores, args.max_wait_seconds)
                run_block(trainers[variant.label], args.warmup, measured, times[variant.label], state)
                bar.update(1)
        bar.close()
    finally:
        for trainer in trainers.values():
            if trainer.loader is not None:
                trainer.loader.close()
    return {v.label: {"variant": v.describe(), "setup_seconds": round(setup_seconds[v.label], 2),
                      "num_workers": trainers[v.label].config.num_workers, **times[v.label].summary()}
            for v in variants}


def _split(total: int, parts: int) -> list[int]:
    sizes = [total // parts + (1 if i < total % parts else 0) for i in range(parts)]
    return [size for size in sizes if size > 0]


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label)


# --- overhead and profiles ----------------------------------------------------------------------------------
def overheads(summary: dict[str, dict[str, Any]], base: str = "CTS", key: str = "median_seconds") -> dict[str, float]:
    """Percent extra ``key`` (median wall or CPU seconds per iteration) of each variant over ``base``.

    A variant with batches made in process is compared with ``base`` made the same way.
    """
    out = {}
    for label, row in summary.items():
        same_workers_base = base if "(0 workers)" not in label else f"{base} (0 workers)"
        if label == same_workers_base or same_workers_base not in summary:
            continue
        reference = summary[same_workers_base][key]
        out[label] = 100.0 * (row[key] - reference) / reference
    return out


def profile_variant(variant: Variant, threads: int, args: argparse.Namespace, dataset: str, runs_folder: Path,
                    top: int = 25) -> dict[str, Any]:
    """cProfile over ``args.profile_iterations`` iterations after a warm-up: cctrnet functions by cumulative time."""
    import cProfile
    import pstats

    import torch

    torch.set_num_threads(threads)
    trainer, _ = build_trainer(variant, dataset, args.labeled, args.seed,
                               runs_folder / f"profile_{_slug(variant.label)}_t{threads}")
    try:
        for _ in range(args.first_warmup + args.warmup):
            trainer.train_one_iteration()
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.enable()
        for _ in range(args.profile_iterations):
            trainer.train_one_iteration()
        profiler.disable()
        elapsed = time.perf_counter() - start
    finally:
        trainer.loader.close()
    n = args.profile_iterations
    stats = pstats.Stats(profiler).stats  # (file, line, function) -> (calls, ncalls, tottime, cumtime, callers)
    rows = []
    for (filename, line, function), (_, ncalls, tottime, cumtime, _) in stats.items():
        in_repo = str(REPOSITORY_ROOT) in filename
        rows.append({"function": f"{_short(filename)}:{line}({function})" if filename != "~" else function,
                     "in_cctrnet": in_repo, "calls_per_iteration": ncalls / n,
                     "cumulative_ms_per_iteration": 1000 * cumtime / n, "own_ms_per_iteration": 1000 * tottime / n})
    by_cumulative = sorted((r for r in rows if r["in_cctrnet"]), key=lambda r: -r["cumulative_ms_per_iteration"])
    by_own = sorted(rows, key=lambda r: -r["own_ms_per_iteration"])
    return {"variant": variant.describe(), "threads": threads, "iterations": n,
            "seconds_per_iteration_profiled": elapsed / n,
            "cctrnet_by_cumulative_time": by_cumulative[:top], "all_by_own_time": by_own[:top]}


def _short(filename: str) -> str:
    for marker in (str(REPOSITORY_ROOT) + os.sep, "site-packages" + os.sep):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


# --- report -------------------------------------------------------------------------------------------------
def print_tables(results: dict[str, Any]) -> None:
    for threads, summary in results["by_threads"].items():
        print(f"\n### {threads} torch thread(s)\n")
        print("| variant | trainer | workers | median s/it | mean s/it | min-max s/it | main-process CPU s/it | "
              "worker CPU s/it | data wait | load avg 1 min | other cores (before / during) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for label, row in summary["variants"].items():
            loads = "/".join(f"{x:.1f}" for x in row["load_average_1min"])
            others = ", ".join(f"{b:.1f}/{d:.1f}" for b, d in zip(row["other_cores_before"], row["other_cores_during"]))
            print(f"| {label} | {row['variant']} | {row['num_workers']} | {row['median_seconds']:.3f} | "
                  f"{row['mean_seconds']:.3f} | {row['min_seconds']:.3f}-{row['max_seconds']:.3f} | "
                  f"{row['median_main_cpu_seconds']:.3f} | {row['worker_cpu_seconds_per_iteration']:.3f} | {100 * row['data_wait_share']:.1f} % | {loads} | {others} |")
        for key, what in (("overhead_over_cts_percent", "median wall s/it"),
                          ("cpu_overhead_over_cts_percent", "median main-process CPU s/it")):
            if summary[key]:
                print(f"\nOverhead over CTS ({what}): " + ", ".join(
                    f"{label} {value:+.1f} %" for label, value in summary[key].items()))
    for profile in results.get("profiles", []):
        print(f"\n### Profile: {profile['variant']}, {profile['threads']} thread(s), {profile['iterations']} "
              f"iterations, {profile['seconds_per_iteration_profiled']:.3f} s/it under cProfile\n")
        print("| cctrnet function | calls/it | cumulative ms/it | own ms/it |\n|---|---|---|---|")
        for r in profile["cctrnet_by_cumulative_time"]:
            print(f"| {r['function']} | {r['calls_per_iteration']:.1f} | {r['cumulative_ms_per_iteration']:.1f} | "
                  f"{r['own_ms_per_iteration']:.1f} |")
        print("\n| any function, by own time | calls/it | own ms/it |\n|---|---|---|")
        for r in profile["all_by_own_time"][:15]:
            print(f"| {r['function']} | {r['calls_per_iteration']:.1f} | {r['own_ms_per_iteration']:.1f} |")


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--iterations", type=int, default=30, help="measured iterations per variant and thread count")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations before each block")
    parser.add_argument("--first-warmup", type=int, default=8,
                        help="untimed iterations of every variant before the first block (fills REPS's memory bank)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved blocks per variant (iterations split)")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch thread counts to measure (default: torch's default count, and 1)")
    parser.add_argument("--variants", nargs="+", default=None, metavar="[LABEL=]Trainer[:key=value,...]",
                        help="variants to time (default: LS, CTS, CCTR)")
    parser.add_argument("--no-breakdown", action="store_true", help="leave out CTS+RSL and CTS+RSL+SCL")
    parser.add_argument("--no-in-process-data", action="store_true",
                        help="leave out the num_workers=0 copies of the variants")
    parser.add_argument("--labeled", type=int, default=2)
    parser.add_argument("--cases", type=int, default=20, help="phantom training cases")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", nargs="*", default=None, metavar="LABEL",
                        help="profile these variants (default: only those missing a target)")
    parser.add_argument("--no-auto-profile", action="store_true")
    parser.add_argument("--profile-only", action="store_true", help="skip the timing; only profile --profile's variants")
    parser.add_argument("--profile-iterations", type=int, default=15)
    parser.add_argument("--max-other-cores", type=float, default=0.5,
                        help="wait before a block while other processes keep more cores busy than this")
    parser.add_argument("--max-wait-seconds", type=float, default=60.0)
    parser.add_argument("--work-dir", type=Path, default=RESULTS_FOLDER / "training_work",
                        help="phantom data, preprocessing, registrations and run folders (kept and reused)")
    args = parser.parse_args(argv)
    if args.profile_only and not args.profile:
        parser.error("--profile-only needs --profile LABEL ...")
    if args.iterations < 1 or args.rounds < 1 or args.warmup < 0 or args.first_warmup < 0:
        parser.error("need --iterations >= 1, --rounds >= 1, --warmup >= 0, --first-warmup >= 0")
    if args.threads is None:
        import torch

        args.threads = sorted({torch.get_num_threads(), 1}, reverse=True)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    import signal

    from cctrnet.utilities.file_io import save_json

    args = parse_arguments(argv)
    # on SIGTERM unwind normally, so the data loaders' worker processes are stopped too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    variants = [parse_variant(s) for s in args.variants] if args.variants else list(MAIN_VARIANTS)
    if not args.variants and not args.no_breakdown:
        variants[2:2] = BREAKDOWN_VARIANTS
    if not args.no_in_process_data:
        variants += [in_process_variant(v) for v in variants if v.label in ("LS", "CTS", "CCTR")]
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        sys.exit(f"variant labels must differ: {labels}")
    work_dir = args.work_dir.resolve()
    plans = prepare_dataset(work_dir, args.cases, args.seed)
    configuration = plans["configurations"]["2d"]
    runs_folder = work_dir / "benchmark_runs"
    results: dict[str, Any] = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "variants": {v.label: v.describe() for v in variants},
        "plan": {"patch_size_yx": configuration["patch_size_yx"], "batch_size": configuration["batch_size"],
                 "labeled_per_batch": configuration["labeled_per_batch"],
                 "unlabeled_per_batch": configuration["unlabeled_per_batch"],
                 "spacing_yx": configuration["spacing_yx"],
                 "branch_a": {"network_class": configuration["branch_a"]["network_class"],
                              "features_per_stage": configuration["branch_a"]["kwargs"]["features_per_stage"]},
                 "branch_b": {"network_class": configuration["branch_b"]["network_class"],
                              "features_per_stage": configuration["branch_b"]["kwargs"].get("features_per_stage")},
                 "estimated_step_seconds_both_branches": configuration.get("estimated_cost", {}).get(
                     "step_seconds_both_branches")},
        "machine": machine_info(), "by_threads": {}, "profiles": []}
    print(f"plan: patch {configuration['patch_size_yx']}, batch {configuration['batch_size']} "
          f"({configuration['labeled_per_batch']} labeled + {configuration['unlabeled_per_batch']} unlabeled), "
          f"{configuration['branch_a']['network_class']} + {configuration['branch_b']['network_class']}; "
          f"threads {args.threads}; {args.iterations} iterations x {len(variants)} variants")
    dataset = str(DATASET_ID)
    out = RESULTS_FOLDER / f"training_benchmark_{datetime.datetime.now().strftime('%Y%m%d_%H%M%S')}.json"
    for threads in [] if args.profile_only else args.threads:
        summary = measure(variants, threads, args, dataset, runs_folder)
        results["by_threads"][str(threads)] = {
            "variants": summary, "overhead_over_cts_percent": overheads(summary),
            "cpu_overhead_over_cts_percent": overheads(summary, key="median_main_cpu_seconds")}
        save_json(results, out)  # what is measured so far survives an interrupted run

    to_profile = set(args.profile or [])
    if args.profile is None and not args.no_auto_profile:
        for summary in results["by_threads"].values():
            if summary["overhead_over_cts_percent"].get("CCTR", 0.0) > OVERHEAD_TARGET_PERCENT:
                to_profile.add("CCTR")
            to_profile |= {label for label, row in summary["variants"].items()
                           if row["num_workers"] > 0 and 100 * row["data_wait_share"] > DATA_WAIT_TARGET_PERCENT}
    for label in [v.label for v in variants if v.label in to_profile]:
        variant = next(v for v in variants if v.label == label)
        results["profiles"].append(profile_variant(variant, args.threads[0], args, dataset, runs_folder))

    results["machine"]["load_average_1_5_15min_at_end"] = list(os.getloadavg())
    print_tables(results)
    save_json(results, out)
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
