"""Seconds per case of prediction: cctrnet next to nnU-Net v2's predictor, same volumes, same machine, one run.

Both predict the same synthetic raw volumes from files to files (read, preprocess, sliding window, export),
with and without mirroring, one case after another:
- nnU-Net v2: ``nnUNetPredictor.predict_from_files_sequential`` with its own 2d plan of the volumes and an
  untrained network of that plan (weights do not change the time);
- cctrnet, 1 branch: the same PlainConvUNet (nnU-Net's 2d architecture, patch and spacing);
- cctrnet, 2 branches: that network plus a ResidualEncoderUNet of the same topology (a CCT-R model).

nnU-Net runs in its own virtual environment (``--nnunet-python``, default
``~/.cache/cctrnet-bench/venv-nnunet/bin/python``), in a subprocess that calls this file with ``--worker``;
the worker imports only nnunetv2 and torch. Nothing is downloaded.

    python benchmarks/prediction_benchmark.py --shape 10 160 160 --cases 2 --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the sibling modules importable as ``benchmarks.*``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.environment import NNUNET_VENV  # noqa: E402

DATASET_ID, DATASET_NAME = 999, "Dataset999_PredictionBenchmark"
DEFAULT_NNUNET_PYTHON = NNUNET_VENV / "bin" / "python"


# --- nnU-Net side (runs inside the nnU-Net environment) ---------------------------------------------------
def _nnunet_environment(root: Path) -> None:
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[name] = str(root / name)


def worker_plan(root: Path) -> dict:
    """Fingerprint and plan the benchmark dataset; save an untrained 2d model; return the 2d configuration."""
    _nnunet_environment(root)
    import torch
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    extract_fingerprints([DATASET_ID], num_processes=1, check_dataset_integrity=False, verbose=False)
    plan_experiments([DATASET_ID])
    plans = json.loads((root / "nnUNet_preprocessed" / DATASET_NAME / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((root / "nnUNet_raw" / DATASET_NAME / "dataset.json").read_text())
    manager = PlansManager(plans)
    configuration = manager.get_configuration("2d")
    num_classes = manager.get_label_manager(dataset_json).num_segmentation_heads
    network = nnUNetTrainer.build_network_architecture(
        manager, configuration, len(dataset_json["channel_names"]), num_classes, enable_deep_supervision=False)
    model_folder = root / "nnUNet_results" / DATASET_NAME / "nnUNetTrainer__nnUNetPlans__2d"
    (model_folder / "fold_0").mkdir(parents=True, exist_ok=True)
    (model_folder / "plans.json").write_text(json.dumps(plans))
    (model_folder / "dataset.json").write_text(json.dumps(dataset_json))
    torch.save({"network_weights": network.state_dict(), "trainer_name": "nnUNetTrainer",
                "init_args": {"configuration": "2d"}, "inference_allowed_mirroring_axes": (0, 1)},
               model_folder / "fold_0" / "checkpoint_final.pth")
    return {"model_folder": str(model_folder), "configuration": plans["configurations"]["2d"]}


def worker_time(root: Path, model_folder: str, input_folder: str, output_folder: str, mirroring: bool,
                threads: int) -> float:
    """Seconds per case of nnU-Net's sequential predictor (model loading excluded)."""
    _nnunet_environment(root)
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    torch.set_num_threads(threads)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model_folder, use_folds=(0,))
    cases = sorted({p.name.rsplit("_", 1)[0] for p in Path(input_folder).iterdir()})
    Path(output_folder).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    predictor.predict_from_files_sequential(input_folder, output_folder, save_probabilities=False, overwrite=True)
    return (time.perf_counter() - started) / len(cases)


def run_worker(python: Path, *args: str) -> dict:
    completed = subprocess.run([str(python), __file__, "--worker", *args], capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"nnU-Net worker failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


# --- cctrnet side -----------------------------------------------------------------------------------------
def write_volumes(raw: Path, shape_zyx: tuple[int, int, int], cases: int, spacing_xyz: tuple[float, float, float]
                  ) -> Path:
    """Blob volumes with labels in nnU-Net's raw layout (also cctrnet's), .nii.gz."""
    import numpy as np

    from cctrnet.dataset.dataset_json import write_dataset_json
    from cctrnet.dataset.geometry import Geometry
    from cctrnet.dataset.image_io import write_image

    folder = raw / DATASET_NAME
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape_zyx], indexing="ij")
    for index in range(cases):
        rng = np.random.default_rng(index)
        cy, cx = shape_zyx[1] * rng.uniform(0.4, 0.6), shape_zyx[2] * rng.uniform(0.4, 0.6)
        label = np.zeros(shape_zyx, np.uint8)
        label[((y - cy) / (0.2 * shape_zyx[1])) ** 2 + ((x - cx) / (0.15 * shape_zyx[2])) ** 2 < 1] = 1
        label[((y - cy) / (0.08 * shape_zyx[1])) ** 2 + ((x - cx) / (0.08 * shape_zyx[2])) ** 2 < 1] = 2
        image = (100 + 20 * rng.standard_normal(shape_zyx) + 120 * label).astype(np.float32)
        geometry = Geometry(shape_zyx, spacing_xyz, (0.0, 0.0, 0.0))
        write_image(image, geometry, folder / "imagesTr" / f"case{index:03d}_0000.nii.gz")
        write_image(label, geometry, folder / "labelsTr" / f"case{index:03d}.nii.gz")
    write_dataset_json(folder, {0: "MRI"}, {"background": 0, "outer": 1, "inner": 2}, cases, ".nii.gz")
    return folder


def cctrnet_architectures(nnunet_configuration: dict) -> dict:
    """nnU-Net's 2d PlainConvUNet as branch A, a ResidualEncoderUNet of the same topology as branch B."""
    kwargs = dict(nnunet_configuration["architecture"]["arch_kwargs"])
    kwargs["deep_supervision"] = False
    resenc = {k: v for k, v in kwargs.items() if k != "n_conv_per_stage"}
    resenc["n_blocks_per_stage"] = [1, 2, 2, 2, 2, 2, 2, 2][: kwargs["n_stages"]]
    resenc["n_conv_per_stage_decoder"] = [1] * (kwargs["n_stages"] - 1)
    return {"branch_a": {"network_class": "PlainConvUNet", "kwargs": kwargs},
            "branch_b": {"network_class": "ResidualEncoderUNet", "kwargs": resenc}}


def write_cctrnet_model(folder: Path, nnunet_configuration: dict, dataset_json: dict, branches: list[str]) -> Path:
    import torch

    from cctrnet.networks.branch import SegmentationBranch
    from cctrnet.utilities.file_io import save_json

    architectures = cctrnet_architectures(nnunet_configuration)
    spacing_zyx = nnunet_configuration["spacing"]
    configuration = {"data_identifier": "2d", "spacing_yx": list(spacing_zyx[-2:]),
                     "patch_size_yx": list(nnunet_configuration["patch_size"]),
                     "normalization": [{"channel": 0, "name": "MRI", "scheme": "ZScoreNormalization", "parameters": {}}],
                     **architectures}
    save_json({"labels": dataset_json["labels"], "configurations": {"2d": configuration}}, folder / "plans.json")
    save_json(dataset_json, folder / "dataset.json")
    save_json({"trainer": "benchmark", "branches": branches,
               "architectures": {b: architectures[b] for b in branches}}, folder / "config.json")
    weights = {b: SegmentationBranch(architectures[b], 1, len(dataset_json["labels"])).state_dict() for b in branches}
    torch.save({"network_weights": weights}, folder / "checkpoint_final.pth")
    return folder


def time_cctrnet(model_folder: Path, input_folder: Path, output_folder: Path, mirroring: bool) -> float:
    from cctrnet.inference.model_folder import ModelFolder
    from cctrnet.inference.predictor import Predictor
    from cctrnet.inference.sliding_window import SlidingWindowSettings

    predictor = Predictor.from_model_folder(ModelFolder.load(model_folder), "cpu", "final",
                                            SlidingWindowSettings(mirroring=mirroring))
    started = time.perf_counter()
    report = predictor.predict_folder(input_folder, output_folder, progress=False)
    if report.problems:
        raise RuntimeError("; ".join(report.problems))
    return (time.perf_counter() - started) / len(report.predicted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(10, 160, 160), metavar=("Z", "Y", "X"))
    parser.add_argument("--spacing", type=float, nargs=3, default=(1.5, 1.5, 8.0), metavar=("X", "Y", "Z"))
    parser.add_argument("--cases", type=int, default=2, help="volumes predicted per measurement")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both tools")
    parser.add_argument("--nnunet-python", type=Path, default=DEFAULT_NNUNET_PYTHON)
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        phase, root, *rest = args.worker
        if phase == "plan":
            print(json.dumps(worker_plan(Path(root))))
        else:
            model_folder, input_folder, output_folder, mirroring, threads = rest
            print(json.dumps({"seconds_per_case": worker_time(Path(root), model_folder, input_folder, output_folder,
                                                              mirroring == "1", int(threads))}))
        return

    import torch

    torch.set_num_threads(args.threads)
    if not args.nnunet_python.exists():
        sys.exit(f"{args.nnunet_python}: no nnU-Net environment (python3 -m venv --system-site-packages DIR; "
                 "DIR/bin/pip install nnunetv2), or pass --nnunet-python")
    with tempfile.TemporaryDirectory(prefix="cctr_prediction_benchmark_") as tmp:
        root = Path(tmp)
        raw_folder = write_volumes(root / "nnUNet_raw", tuple(args.shape), args.cases, tuple(args.spacing))
        planned = run_worker(args.nnunet_python, "plan", str(root))
        nnunet_configuration = planned["configuration"]
        dataset_json = json.loads((raw_folder / "dataset.json").read_text())
        models = {f"cctrnet, {len(b)} branch{'es' if len(b) > 1 else ''}":
                  write_cctrnet_model(root / "cctr" / "_".join(b), nnunet_configuration, dataset_json, b)
                  for b in (["branch_a"], ["branch_a", "branch_b"])}
        inputs = raw_folder / "imagesTr"
        print(f"volumes {args.cases} x {tuple(args.shape)} (z, y, x), patch {nnunet_configuration['patch_size']}, "
              f"spacing {nnunet_configuration['spacing']}, {args.threads} torch thread(s), CPU")
        rows = []
        for mirroring in (True, False):
            nnunet = run_worker(args.nnunet_python, "time", str(root), planned["model_folder"], str(inputs),
                                str(root / "out_nnunet"), "1" if mirroring else "0", str(args.threads))
            rows.append(("nnU-Net v2 predictor (2d)", mirroring, nnunet["seconds_per_case"]))
            for name, folder in models.items():
                rows.append((name, mirroring, time_cctrnet(folder, inputs, root / f"out_{folder.name}", mirroring)))
        print("| predictor | mirroring | seconds per case |\n|---|---|---|")
        for name, mirroring, seconds in rows:
            print(f"| {name} | {'on' if mirroring else 'off'} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
