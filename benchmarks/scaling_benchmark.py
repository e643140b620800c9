"""Scaling out on one machine: prediction in parts against one run, and Dask registration against local.

Prediction: the phantom's test images (``cctr_generate_phantom``, not timed), a model folder with the CPU
plan's two branches (random weights: weights do not change the time), predicted by ``cctr_predict``
(a fresh process per command, as a user runs it)
- in one run (``--threads T``);
- in 2 parts run one after the other (``-num_parts 2 -part_id i``, each ``--threads T``): the sum is what one
  machine pays, the larger part what two machines would take;
- with ``--num-gpus 2`` on CPU: 2 worker processes side by side, each with half the threads.
Every variant's label maps must equal the single run's, file for file.

Registration: synthetic subjects (``cctrnet.registration.synthetic_pairs``) stored as preprocessed cases;
the same pairs registered by the torch engine locally (one process, ``-np`` threads) and on a Dask
``LocalCluster`` of ``-np`` one-thread worker processes, affine then deformable; pairs per second (wall, from
the first submission to the last stored pair, cluster start-up counted separately) and the largest
difference between the two stores' transforms and fields.

Prints Markdown tables and writes ``benchmarks/results/scaling_benchmark_<time>.json``.

    python benchmarks/scaling_benchmark.py                       # ~5 min on 2 busy cores
    python benchmarks/scaling_benchmark.py --sections registration --pairs 8 --shape 8 96 96
"""
from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):  # run as a file: make the sibling modules importable as ``benchmarks.*``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.environment import point_paths_to  # noqa: E402
from benchmarks.machine_info import REPOSITORY_ROOT, machine_info  # noqa: E402

RESULTS_FOLDER = REPOSITORY_ROOT / "benchmarks" / "results"
DATASET_ID = 982


# --- prediction -------------------------------------------------------------------------------------------
def prepare_prediction(work: Path, num_training: int, num_test: int) -> tuple[Path, Path]:
    """(model folder, folder of test images): the phantom planned for CPU, a model of that plan."""
    import torch

    from cctrnet import paths
    from cctrnet.networks.branch import SegmentationBranch
    from cctrnet.plan_and_preprocess import plan_and_preprocess_dataset
    from cctrnet.utilities.file_io import load_json, save_json
    from dataset_conversion.phantom import generate_phantom_dataset

    point_paths_to(work)
    name = f"Dataset{DATASET_ID:03d}_CardiacPhantom"
    raw = paths.raw_folder() / name
    if not raw.exists():
        generate_phantom_dataset(paths.raw_folder(), dataset_id=DATASET_ID, num_training=num_training,
                                 num_test=num_test, seed=0, show_progress=False)
    preprocessed = paths.preprocessed_folder() / name
    if not (preprocessed / "plans.json").exists():
        plan_and_preprocess_dataset(str(DATASET_ID), device_name="cpu", preprocess=False, progress=False)
    plans, dataset_json = load_json(preprocessed / "plans.json"), load_json(preprocessed / "dataset.json")
    configuration = plans["configurations"]["2d"]
    model = paths.results_folder() / name / "CCTRTrainer__labeled2__seed0"
    if not (model / "checkpoint_final.pth").exists():
        branches = ["branch_a", "branch_b"]
        save_json(plans, model / "plans.json")
        save_json(dataset_json, model / "dataset.json")
        save_json({"trainer": "CCTRTrainer", "branches": branches,
                   "architectures": {b: configuration[b] for b in branches}}, model / "config.json")
        torch.manual_seed(0)
        channels, classes = len(dataset_json["channel_names"]), len(dataset_json["labels"])
        weights = {b: SegmentationBranch(configuration[b], channels, classes).state_dict() for b in branches}
        torch.save({"network_weights": weights, "iteration": 0}, model / "checkpoint_final.pth")
    return model, raw / "imagesTs"


def run_predict(model: Path, images: Path, output: Path, extra: Sequence[str]) -> float:
    """Wall seconds of one ``cctr_predict`` command (a fresh interpreter, as a user runs it)."""
    command = [sys.executable, "-m", "cctrnet.cli.predict", "-i", str(images), "-o", str(output), "-m", str(model),
               "--device", "cpu", "--disable-tta", "--quiet", *extra]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPOSITORY_ROOT)))
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return seconds


def same_label_maps(a: Path, b: Path) -> bool:
    import numpy as np

    from cctrnet.dataset.image_io import read_image

    names_a, names_b = sorted(p.name for p in a.glob("*.nii.gz")), sorted(p.name for p in b.glob("*.nii.gz"))
    return names_a == names_b and all(
        np.array_equal(read_image(a / n, np.int16)[0], read_image(b / n, np.int16)[0]) for n in names_a)


def measure_prediction(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    model, images = prepare_prediction(work, args.training_cases, args.test_cases)
    num_cases = len(list(images.glob("*.nii.gz")))
    threads = str(args.threads)
    runs: dict[str, list[dict[str, Any]]] = {"one run": [], "2 parts, one after the other": [],
                                            "--num-gpus 2 (2 CPU processes)": []}
    for repeat in range(args.repeats):
        root = work / "predictions" / f"r{repeat}"
        one = run_predict(model, images, root / "one", ["--threads", threads])
        parts = [run_predict(model, images, root / "parts", ["--threads", threads, "-num_parts", "2", "-part_id", str(i)])
                 for i in range(2)]
        workers = run_predict(model, images, root / "workers", ["--num-gpus", "2"]
                              + (["--threads", str(max(1, args.threads // 2))]))
        runs["one run"].append({"seconds": one, "identical": True})
        runs["2 parts, one after the other"].append({"seconds": sum(parts), "seconds_per_part": parts,
                                                     "identical": same_label_maps(root / "one", root / "parts")})
        runs["--num-gpus 2 (2 CPU processes)"].append({"seconds": workers,
                                                       "identical": same_label_maps(root / "one", root / "workers")})
    return {"cases": num_cases, "threads": args.threads, "model": str(model), "runs": runs}


# --- registration -----------------------------------------------------------------------------------------
def prepare_registration(root: Path, count: int, shape_zyx: Sequence[int], spacing_xyz: Sequence[float]) -> Path:
    from cctrnet.preprocessing.case_storage import save_preprocessed_case
    from cctrnet.registration.synthetic_pairs import make_subject, random_affine

    data = root / "2d"
    for i in range(count):
        image, label, geometry = make_subject(tuple(shape_zyx), tuple(spacing_xyz), i, random_affine(i) if i else None, 2.0)
        save_preprocessed_case(data, f"c{i}", image[None], label, {"geometry_preprocessed": geometry.to_dict()})
    return data


def time_stage(data: Path, root: Path, pairs, settings, scheduler: str | None, num_processes: int) -> dict[str, Any]:
    from cctrnet.registration.pair_store import PairStore
    from cctrnet.registration.runner import compute_missing_pairs

    out: dict[str, Any] = {}
    affine, deformable = PairStore(root / "affine"), PairStore(root / "affine_deformable")
    started = time.perf_counter()
    compute_missing_pairs(data, affine, pairs, "affine", "torch", settings, num_processes, scheduler)
    out["affine_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    compute_missing_pairs(data, deformable, pairs, "affine_deformable", "torch", settings, num_processes, scheduler,
                          affine_store=affine)
    out["deformable_seconds"] = time.perf_counter() - started
    out["affine_pairs_per_second"] = len(pairs) / out["affine_seconds"]
    out["deformable_pairs_per_second"] = len(pairs) / out["deformable_seconds"]
    return out


def store_differences(root_a: Path, root_b: Path, pairs) -> dict[str, float]:
    import numpy as np

    from cctrnet.registration import velocity_field as vf
    from cctrnet.registration.pair_store import PairStore
    from cctrnet.registration.transforms import affine_matrix_4x4, transform_from_file

    a_aff, b_aff = PairStore(root_a / "affine"), PairStore(root_b / "affine")
    a_def, b_def = PairStore(root_a / "affine_deformable"), PairStore(root_b / "affine_deformable")
    matrix, field, failed = 0.0, 0.0, 0
    for pair in pairs:
        if not (a_aff.successful(*pair) and b_aff.successful(*pair)):
            failed += 1
            continue
        matrix = max(matrix, float(np.abs(affine_matrix_4x4(transform_from_file(a_aff.transform_path(*pair)))
                                          - affine_matrix_4x4(transform_from_file(b_aff.transform_path(*pair)))).max()))
        if a_def.field_path(*pair).exists() and b_def.field_path(*pair).exists():
            va = vf.velocity_from_bytes(a_def.field_path(*pair).read_bytes())[0]
            vb = vf.velocity_from_bytes(b_def.field_path(*pair).read_bytes())[0]
            field = max(field, float(np.abs(va - vb).max()))
    return {"affine_matrix_max_abs_difference": matrix, "velocity_max_abs_difference_mm": field,
            "pairs_not_in_both": failed}


def measure_registration(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch

    from cctrnet.registration.settings import RegistrationSettings

    root = work / "registration"
    data = prepare_registration(root, args.subjects, args.shape, args.spacing)
    cases = [f"c{i}" for i in range(args.subjects)]
    pairs = [(m, f) for f in cases for m in cases if m != f][: args.pairs]
    settings = RegistrationSettings(torch_batch_size=args.batch_size)
    out: dict[str, Any] = {"pairs": len(pairs), "shape_zyx": list(args.shape), "spacing_xyz": list(args.spacing),
                           "batch_size": args.batch_size, "workers": args.np, "runs": []}
    for repeat in range(args.repeats):
        torch.set_num_threads(args.np)
        local = time_stage(data, root / f"local_r{repeat}", pairs, settings, None, args.np)
        from distributed import Client, LocalCluster

        started = time.perf_counter()
        with LocalCluster(n_workers=args.np, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            with Client(cluster) as client:
                client.submit(sum, [1], pure=False).result()  # the workers are up
                start_up = time.perf_counter() - started
                dask = time_stage(data, root / f"dask_r{repeat}", pairs, settings, cluster.scheduler_address, args.np)
        out["runs"].append({"local": local, "dask": {**dask, "cluster_start_seconds": start_up},
                            "differences": store_differences(root / f"local_r{repeat}", root / f"dask_r{repeat}", pairs)})
    return out


# --- report -----------------------------------------------------------------------------------------------
def print_tables(results: dict[str, Any]) -> None:
    import statistics

    prediction = results.get("prediction")
    if isinstance(prediction, dict) and "runs" in prediction:
        print(f"\n### Prediction, {prediction['cases']} phantom test cases, no mirroring, "
              f"{prediction['threads']} thread(s) per run\n")
        print("| variant | wall s (median, min-max) | cases/s | same label maps as one run |\n|---|---|---|---|")
        for label, runs in prediction["runs"].items():
            seconds = [r["seconds"] for r in runs]
            median = statistics.median(seconds)
            extra = ""
            if "seconds_per_part" in runs[0]:
                extra = " (parts: " + ", ".join(f"{s:.1f}" for s in runs[0]["seconds_per_part"]) + " s)"
            print(f"| {label} | {median:.1f} ({min(seconds):.1f}-{max(seconds):.1f}){extra} | "
                  f"{prediction['cases'] / median:.2f} | {all(r['identical'] for r in runs)} |")
    registration = results.get("registration")
    if isinstance(registration, dict) and "runs" in registration:
        print(f"\n### Registration, {registration['pairs']} pairs of {registration['shape_zyx']} voxels, torch engine, "
              f"batch {registration['batch_size']}, {registration['workers']} worker(s) / thread(s)\n")
        print("| stage | local pairs/s | Dask pairs/s | Dask cluster start s | largest difference | pairs ok in both |\n"
              "|---|---|---|---|---|---|")
        compared = registration["pairs"] - max(r["differences"]["pairs_not_in_both"] for r in registration["runs"])
        for stage, key in (("affine", "affine_matrix_max_abs_difference"),
                           ("affine + deformable (deformable part)", "velocity_max_abs_difference_mm")):
            short = "affine" if stage == "affine" else "deformable"
            local = statistics.median(r["local"][f"{short}_pairs_per_second"] for r in registration["runs"])
            dask = statistics.median(r["dask"][f"{short}_pairs_per_second"] for r in registration["runs"])
            start = statistics.median(r["dask"]["cluster_start_seconds"] for r in registration["runs"])
            difference = max(r["differences"][key] for r in registration["runs"])
            print(f"| {stage} | {local:.3f} | {dask:.3f} | {start:.1f} | {difference:.2g}"
                  f"{' mm' if short == 'deformable' else ''} | {compared} of {registration['pairs']} |")
    for section in ("prediction", "registration"):
        if isinstance(results.get(section), dict) and "error" in results[section]:
            print(f"\n{section}: failed: {results[section]['error']}")


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--sections", nargs="+", default=["prediction", "registration"],
                        choices=["prediction", "registration"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each prediction run")
    parser.add_argument("--training-cases", type=int, default=4, help="phantom training cases (planning only)")
    parser.add_argument("--test-cases", type=int, default=6, help="phantom test cases to predict")
    parser.add_argument("--subjects", type=int, default=4, help="synthetic subjects for registration")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--shape", type=int, nargs=3, default=[8, 96, 96], metavar=("Z", "Y", "X"))
    parser.add_argument("--spacing", type=float, nargs=3, default=[1.5, 1.5, 8.0], metavar=("X", "Y", "Z"))
    parser.add_argument("--batch-size", type=int, default=2, help="pairs per torch batch (one Dask task)")
    parser.add_argument("-np", type=int, default=2, help="Dask worker processes; local threads")
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a temporary folder")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    from cctrnet.utilities.file_io import save_json

    args = parse_arguments(argv)
    results: dict[str, Any] = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                               "machine": machine_info()}
    out = RESULTS_FOLDER / f"scaling_benchmark_{datetime.datetime.now().strftime('%Y%m%d_%H%M%S')}.json"
    with tempfile.TemporaryDirectory() as temporary:
        work = (args.work_dir or Path(temporary)).resolve()
        for section, measure in (("prediction", measure_prediction), ("registration", measure_registration)):
            if section not in args.sections:
                continue
            try:
                results[section] = measure(args, work)
            except Exception as error:  # one section's failure keeps the other's numbers
                results[section] = {"error": f"{type(error).__name__}: {error}"}
            save_json(results, out)
    results["machine"]["load_average_1_5_15min_at_end"] = list(os.getloadavg())
    save_json(results, out)
    print_tables(results)
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
