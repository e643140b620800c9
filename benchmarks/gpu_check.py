"""The GPU check of issue 14, in one process: training, registration and prediction speed and peak GPU memory.

Sections (each in its own try/except: a failing section records its error in the JSON, the others still run):
- training: seconds per iteration of LS, CTS and CCT-R at the paper's ACDC scale (patch 224 x 224, 8 labeled +
  8 unlabeled slices per batch, the branches of the GPU plan for an ACDC-like fingerprint), on the phantom
  dataset (planned and preprocessed here, not timed; its slices are padded or cropped to the patch by the
  loader, which does not change the step time); the data-wait share; hours for 30,000 iterations;
- registration: pairs per second of the torch engine, affine and affine + deformable, at ACDC size
  (10 x 224 x 224) and CT size (100 x 256 x 256), synthetic pairs (``cctrnet.registration.synthetic_pairs``);
- prediction: slices per second of the sliding-window predictor with both GPU-plan branches, mirroring on,
  the default speed settings (bfloat16 autocast and channels-last on CUDA);
- peak GPU memory of every section (``torch.cuda.max_memory_allocated``).

``--smoke`` makes everything tiny (patch 64, 2 + 2 slices, few steps, small volumes) so the script runs on a
CPU (12 minutes on the shared 2-core development machine, most of it CCT-R's registrations and steps of the
GPU-plan networks): that is how it was tested before it ever met a GPU.

    python benchmarks/gpu_check.py                 # on the GPU machine (benchmarks/gpu_check.sh runs it)
    python benchmarks/gpu_check.py --smoke --device cpu
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

if __package__ in (None, ""):  # run as a file: make the sibling modules importable as ``benchmarks.*``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.environment import point_paths_to  # noqa: E402
from benchmarks.machine_info import REPOSITORY_ROOT, machine_info  # noqa: E402

RESULTS_FOLDER = REPOSITORY_ROOT / "benchmarks" / "results"
DATASET_ID = 983
PAPER_ITERATIONS = 30_000
TARGET_HOURS = 1.0  # issue 14: the ACDC CCT-R run in under one hour on one H100-class GPU
TARGET_DATA_WAIT_SHARE = 0.05
# label -> (trainer, settings); the last row times CCT-R without channels-last, the CUDA default's one unmeasured gain
VARIANTS = {"LS": ("LabeledOnlyTrainer", {}), "CTS": ("CTSTrainer", {}), "CCT-R": ("CCTRTrainer", {}),
            "CCT-R, contiguous tensors": ("CCTRTrainer", {"memory_format": "contiguous"})}


def scale(smoke: bool) -> dict[str, Any]:
    """Sizes of the full check (paper scale) and of the smoke run."""
    if smoke:
        return {"patch": 64, "labeled": 2, "unlabeled": 2, "warmup": 2, "iterations": 3, "cases": 4,
                "registration": {"acdc": ((6, 48, 48), (1.5, 1.5, 10.0), 2), "ct": ((12, 48, 48), (0.8, 0.8, 2.5), 2)},
                "prediction_shape": (4, 64, 64), "prediction_cases": 1, "gpu_memory_gb": 8.0}
    return {"patch": 224, "labeled": 8, "unlabeled": 8, "warmup": 10, "iterations": 40, "cases": 8,
            "registration": {"acdc": ((10, 224, 224), (1.5, 1.5, 10.0), 16),
                             "ct": ((100, 256, 256), (0.8, 0.8, 2.5), 4)},
            "prediction_shape": (10, 224, 224), "prediction_cases": 4, "gpu_memory_gb": None}


# --- helpers ----------------------------------------------------------------------------------------------
def synchronize(device: Any) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: Any) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: Any) -> float | None:
    import torch

    if torch.device(device).type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 1024**3, 3)


def guarded(results: dict[str, Any], name: str, function: Callable[[], Any]) -> None:
    """``results[name] = function()``, or the error and its traceback when it fails."""
    started = time.perf_counter()
    try:
        results[name] = function()
    except Exception as error:  # noqa: BLE001 - one failed section must not lose the others
        results[name] = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-4000:]}
        print(f"[gpu_check] {name}: FAILED: {type(error).__name__}: {error}", file=sys.stderr)
    if isinstance(results[name], dict):
        results[name]["section_seconds"] = round(time.perf_counter() - started, 1)


def acdc_configuration(device: Any, sizes: dict[str, Any]) -> dict[str, Any]:
    """The 2d configuration the GPU planner makes for an ACDC-like dataset, at the paper's patch and batch."""
    import torch

    from cctrnet.planning.planner import plan_experiment

    memory = sizes["gpu_memory_gb"]
    if memory is None:
        memory = torch.cuda.get_device_properties(device).total_memory / 1024**3 if torch.cuda.is_available() else 80.0
    patch = sizes["patch"]
    fingerprint = {"dataset_name": "Dataset027_ACDC", "spacings_zyx": [[10.0, 1.5, 1.5]] * 100,
                   "shapes_after_crop_zyx": [[10, patch, patch]] * 100, "channel_names": {"0": "MRI"},
                   "ct_channels": [], "foreground_intensity_properties_per_channel": {"0": {}}}
    dataset_json = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "RV": 1, "MYO": 2, "LV": 3},
                    "numTraining": 100, "file_ending": ".nii.gz"}
    plans = plan_experiment(fingerprint, dataset_json, "cuda", gpu_name="gpu_check", gpu_total_memory_gb=memory)
    configuration = plans["configurations"]["2d"]
    configuration.update(patch_size_yx=[patch, patch], batch_size=sizes["labeled"] + sizes["unlabeled"],
                         labeled_per_batch=sizes["labeled"], unlabeled_per_batch=sizes["unlabeled"])
    return configuration


def describe_configuration(configuration: dict[str, Any]) -> dict[str, Any]:
    return {"patch_size_yx": configuration["patch_size_yx"], "batch_size": configuration["batch_size"],
            "labeled_per_batch": configuration["labeled_per_batch"],
            "unlabeled_per_batch": configuration["unlabeled_per_batch"],
            **{branch: {"network_class": configuration[branch]["network_class"],
                        "features_per_stage": configuration[branch]["kwargs"].get("features_per_stage")}
               for branch in ("branch_a", "branch_b")}}


# --- training ---------------------------------------------------------------------------------------------
def prepare_dataset(work: Path, cases: int, device_name: str) -> str:
    from cctrnet import paths
    from cctrnet.plan_and_preprocess import plan_and_preprocess_dataset
    from dataset_conversion.phantom import generate_phantom_dataset

    point_paths_to(work)
    if not (paths.raw_folder() / f"Dataset{DATASET_ID:03d}_CardiacPhantom").exists():
        generate_phantom_dataset(paths.raw_folder(), dataset_id=DATASET_ID, num_training=cases, num_test=0, seed=0,
                                 show_progress=False)
    plan_and_preprocess_dataset(str(DATASET_ID), device_name=device_name, num_processes=min(8, os.cpu_count() or 1),
                                progress=False)
    return str(DATASET_ID)


def time_training(work: Path, device_name: str, sizes: dict[str, Any], configuration: dict[str, Any]) -> dict[str, Any]:
    import torch

    from cctrnet.training.run_setup import prepare_run
    from cctrnet.training.train_run import make_trainer
    from cctrnet.utilities.device import resolve_device

    dataset = prepare_dataset(work, sizes["cases"], device_name)
    device = resolve_device(device_name)
    out: dict[str, Any] = {"configuration": describe_configuration(configuration), "variants": {}}
    for label, (trainer_name, settings) in VARIANTS.items():
        row: dict[str, Any] = {"trainer": trainer_name, "settings": settings}
        out["variants"][label] = row
        trainer = None
        try:
            setup = prepare_run(dataset, 2, None, 0)
            setup.plans["configurations"]["2d"].update(configuration)
            trainer = make_trainer(dataset, trainer_name, num_labeled=2, seed=0, device_name=device_name,
                                   output_folder=work / "runs" / label.replace(" ", "_").replace(",", ""),
                                   setup=setup, overrides=dict(settings))
            trainer.loader = trainer.build_loader()
            for _ in range(sizes["warmup"]):
                trainer.train_one_iteration()
            synchronize(device)
            reset_peak(device)
            wait_before, started = trainer.data_wait_seconds, time.perf_counter()
            for _ in range(sizes["iterations"]):
                trainer.train_one_iteration()
            synchronize(device)
            seconds = (time.perf_counter() - started) / sizes["iterations"]
            wait_share = (trainer.data_wait_seconds - wait_before) / (seconds * sizes["iterations"])
            row.update(seconds_per_iteration=round(seconds, 4), data_wait_share=round(wait_share, 4),
                       hours_for_30000_iterations=round(seconds * PAPER_ITERATIONS / 3600, 3),
                       peak_gpu_memory_gb=peak_gb(device), num_workers=trainer.config.num_workers,
                       mixed_precision=bool(getattr(trainer, "use_amp", False)),
                       channels_last=bool(getattr(trainer, "channels_last", False)))
        except Exception as error:  # noqa: BLE001 - the other variants still run
            row["error"] = f"{type(error).__name__}: {error}"
            row["traceback"] = traceback.format_exc()[-4000:]
        finally:
            if trainer is not None and trainer.loader is not None:
                trainer.loader.close()
            del trainer
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return out


# --- registration -----------------------------------------------------------------------------------------
def time_registration(device_name: str, sizes: dict[str, Any]) -> dict[str, Any]:
    import torch

    from cctrnet.registration.deformable_engine import register_batch_deformable
    from cctrnet.registration.settings import RegistrationSettings
    from cctrnet.registration.single_pair import affine_matrix_of_text
    from cctrnet.registration.synthetic_pairs import make_subject, random_affine
    from cctrnet.registration.torch_engine import PairVolumes, register_batch_torch
    from cctrnet.utilities.device import resolve_device

    device = resolve_device(device_name)
    settings = RegistrationSettings()
    out: dict[str, Any] = {}
    for size, (shape, spacing, count) in sizes["registration"].items():
        row: dict[str, Any] = {"shape_zyx": list(shape), "spacing_xyz": list(spacing), "pairs": count}
        out[size] = row
        try:
            fixed = make_subject(shape, spacing, 0)
            movings = [make_subject(shape, spacing, 100 + i, random_affine(i), 2.0) for i in range(count)]
            pairs = [PairVolumes(f"m{i}", "f", fixed[0], fixed[2], m[0], m[2]) for i, m in enumerate(movings)]
            register_batch_torch(pairs[:1], settings, device)  # warm-up: kernels, allocator
            synchronize(device)
            reset_peak(device)
            started = time.perf_counter()
            affine = register_batch_torch(pairs, settings, device)
            synchronize(device)
            affine_seconds = time.perf_counter() - started
            ok = [i for i, r in enumerate(affine) if r.ok]
            row.update(affine_pairs_per_second=round(count / affine_seconds, 3), affine_ok=len(ok),
                       affine_peak_gpu_memory_gb=peak_gb(device))
            reset_peak(device)
            started = time.perf_counter()
            deformable = register_batch_deformable([pairs[i] for i in ok],
                                                   [affine_matrix_of_text(affine[i].transform_text) for i in ok],
                                                   [affine[i].transform_text for i in ok], settings, device)
            synchronize(device)
            deformable_seconds = time.perf_counter() - started
            row.update(deformable_pairs_per_second=round(len(ok) / deformable_seconds, 3) if ok else None,
                       affine_plus_deformable_pairs_per_second=round(len(ok) / (affine_seconds + deformable_seconds), 3)
                       if ok else None,
                       deformable_ok=sum(r.ok for r in deformable), deformable_peak_gpu_memory_gb=peak_gb(device))
        except Exception as error:  # noqa: BLE001
            row["error"] = f"{type(error).__name__}: {error}"
            row["traceback"] = traceback.format_exc()[-4000:]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return out


# --- prediction -------------------------------------------------------------------------------------------
def time_prediction(device_name: str, sizes: dict[str, Any], configuration: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from cctrnet.inference.sliding_window import BranchEnsemble, SlidingWindowSettings, predict_volume
    from cctrnet.inference.speed import DeviceSpeedSettings
    from cctrnet.networks.branch import SegmentationBranch
    from cctrnet.utilities.device import resolve_device

    device = resolve_device(device_name)
    settings = SlidingWindowSettings(mirroring=True, speed=DeviceSpeedSettings())
    speed = settings.speed.resolve(device)
    networks = [speed.prepare_network(SegmentationBranch(configuration[b], 1, 4).to(device).eval())
                for b in ("branch_a", "branch_b")]
    ensemble = BranchEnsemble(networks)
    rng = np.random.default_rng(0)
    volumes = [rng.standard_normal((1, *sizes["prediction_shape"])).astype(np.float32)
               for _ in range(sizes["prediction_cases"] + 1)]
    patch = configuration["patch_size_yx"]
    predict_volume(volumes[0], ensemble, patch, 4, settings, device)  # warm-up
    synchronize(device)
    reset_peak(device)
    started = time.perf_counter()
    for volume in volumes[1:]:
        predict_volume(volume, ensemble, patch, 4, settings, device)
    synchronize(device)
    seconds = time.perf_counter() - started
    slices = sum(v.shape[1] for v in volumes[1:])
    return {"speed_settings": speed.describe(), "mirroring": True, "branches": 2, "volume_shape_zyx":
            list(sizes["prediction_shape"]), "volumes": len(volumes) - 1, "slices_per_second": round(slices / seconds, 2),
            "peak_gpu_memory_gb": peak_gb(device)}


# --- report -----------------------------------------------------------------------------------------------
def print_table(results: dict[str, Any]) -> None:
    def cell(row: dict[str, Any], key: str, fmt: str = "{:.3f}") -> str:
        if "error" in row:
            return "error"
        value = row.get(key)
        return "-" if value is None else fmt.format(value)

    print(f"\n## GPU check: {results['device']} ({'smoke' if results['smoke'] else 'full'}), {results['date']}\n")
    training = results.get("training", {})
    if "variants" in training:
        print(f"Training, {training['configuration']}\n")
        print("| variant | s/iteration | h for 30,000 it | data wait | peak GPU GB |\n|---|---|---|---|---|")
        for label, row in training["variants"].items():
            print(f"| {label} | {cell(row, 'seconds_per_iteration', '{:.4f}')} | "
                  f"{cell(row, 'hours_for_30000_iterations', '{:.2f}')} | {cell(row, 'data_wait_share', '{:.1%}')} | "
                  f"{cell(row, 'peak_gpu_memory_gb', '{:.2f}')} |")
    elif training:
        print(f"training: {training.get('error')}")
    registration = results.get("registration", {})
    if "error" not in registration and registration:
        print("\n| registration | pairs | affine pairs/s | deformable pairs/s | affine + deformable pairs/s | "
              "peak GPU GB (affine / deformable) |\n|---|---|---|---|---|---|")
        for size, row in registration.items():
            if not isinstance(row, dict):
                continue
            print(f"| {size} {row.get('shape_zyx')} | {row.get('pairs')} | {cell(row, 'affine_pairs_per_second')} | "
                  f"{cell(row, 'deformable_pairs_per_second')} | {cell(row, 'affine_plus_deformable_pairs_per_second')} | "
                  f"{cell(row, 'affine_peak_gpu_memory_gb', '{:.2f}')} / {cell(row, 'deformable_peak_gpu_memory_gb', '{:.2f}')} |")
    elif registration:
        print(f"registration: {registration.get('error')}")
    prediction = results.get("prediction", {})
    if "slices_per_second" in prediction:
        print(f"\nPrediction ({prediction['speed_settings']}, mirroring, 2 branches): "
              f"{prediction['slices_per_second']:.1f} slices/s, peak GPU {prediction['peak_gpu_memory_gb']} GB")
    elif prediction:
        print(f"prediction: {prediction.get('error')}")


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and few steps (runs on a CPU)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--sections", nargs="+", default=["training", "registration", "prediction"],
                        choices=["training", "registration", "prediction"])
    parser.add_argument("--iterations", type=int, default=None, help="measured training iterations per variant")
    parser.add_argument("--output", type=Path, default=None, help="JSON file (default: benchmarks/results/gpu_check_<time>.json)")
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--pytest-json", type=Path, default=None,
                        help="a JSON of the CUDA-marked tests' outcome to include (written by gpu_check.sh)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(argv)
    from cctrnet.utilities.device import resolve_device
    from cctrnet.utilities.file_io import save_json

    sizes = scale(args.smoke)
    if args.iterations is not None:
        sizes["iterations"] = args.iterations
    device = resolve_device(args.device)
    device_name = "cuda" if device.type == "cuda" else "cpu"
    results: dict[str, Any] = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "smoke": args.smoke,
                               "device": device_name, "sizes": {k: v for k, v in sizes.items() if k != "registration"}}
    out = args.output or RESULTS_FOLDER / f"gpu_check_{datetime.datetime.now().strftime('%Y%m%d_%H%M%S')}.json"
    guarded(results, "machine", machine_info)
    if device.type == "cuda":
        import torch

        guarded(results, "gpu", lambda: {"name": torch.cuda.get_device_name(device),
                                         "memory_gb": round(torch.cuda.get_device_properties(device).total_memory / 1024**3, 1),
                                         "bfloat16": bool(torch.cuda.is_bf16_supported()),
                                         "torch_cuda": torch.version.cuda})
    if args.pytest_json is not None and args.pytest_json.exists():
        guarded(results, "cuda_tests", lambda: json.loads(args.pytest_json.read_text()))
    configuration: dict[str, Any] = {}
    guarded(results, "plan", lambda: describe_configuration(configuration.update(acdc_configuration(device, sizes))
                                                            or configuration))
    with tempfile.TemporaryDirectory() as temporary:
        work = (args.work_dir or Path(temporary)).resolve()
        sections = {"training": lambda: time_training(work, device_name, sizes, configuration),
                    "registration": lambda: time_registration(device_name, sizes),
                    "prediction": lambda: time_prediction(device_name, sizes, configuration)}
        for name in args.sections:
            if name != "registration" and not configuration:
                results[name] = {"error": "no plan (see 'plan')"}
                continue
            guarded(results, name, sections[name])
            save_json(results, out)  # what is measured so far survives a later crash or time-out
    cctr = results.get("training", {}).get("variants", {}).get("CCT-R", {})
    if "seconds_per_iteration" in cctr:
        results["targets"] = {"cctr_hours_for_30000_iterations": cctr["hours_for_30000_iterations"],
                              "under_one_hour": cctr["hours_for_30000_iterations"] < TARGET_HOURS,
                              "data_wait_under_5_percent": cctr["data_wait_share"] < TARGET_DATA_WAIT_SHARE}
    save_json(results, out)
    print_table(results)
    print(f"\nwritten: {out}")
    failed = [name for name in ("training", "registration", "prediction") if isinstance(results.get(name), dict)
              and "error" in results[name]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
