"""The torch affine engine's metric settings on prepared datasets: failed pairs, registered-label Dice, time.

For each preprocessed dataset folder and each ``SIGMA_MM:FLOOR`` (``torch_affine_local_normalisation_sigma_mm``
and ``torch_affine_local_variance_floor``; sigma 0 is the global NCC of the raw images), the folder is copied
without its ``registration`` folder into ``--work-dir`` and ``--registration affine`` (torch engine) is run with
every training case a labeled candidate, one run after another; with ``--deformable`` also
``--registration affine_deformable`` on the affines each setting stored. Reported per run:

- failed pairs (of all ordered pairs), and the affine starts kept;
- the registration report's Dice of the BRS-selected registered label, leave-one-out (``registered_label_dice``);
- the leave-one-out Dice of every labeled label carried onto every case of another patient, the quantity
  ``--registration auto`` compares (a failed pair counts 0), and the same over the successful pairs only;
- per class for both Dice figures, and the median seconds per pair the records hold.

Training cases' labels only (the preprocessed ``2d`` folder holds the training cases): no validation or test case
is read, so the numbers may choose the settings' defaults.

    OMP_NUM_THREADS=1 python benchmarks/affine_metric_benchmark.py \\
        --datasets /work/acdcbench/cctr_preprocessed/Dataset004_ACDCPopulationV2 \\
        --settings 0:0.01 10:0.01 20:0.1 40:0.1 --work-dir /tmp/affine_metric
"""
from __future__ import annotations

import argparse
import datetime
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).resolve().parent / "results" / "affine_metric_benchmark.json"


def copy_without_registration(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name == "registration" or (target / item.name).exists():
            continue
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, target / item.name)


def measure(folder: Path, sigma_mm: float, floor: float, configuration: str, method: str = "affine") -> dict[str, Any]:
    from cctrnet.registration import brs
    from cctrnet.registration.method_choice import leave_one_out_dice
    from cctrnet.registration.pair_store import PairStore, registration_folder
    from cctrnet.registration.report import class_dice
    from cctrnet.registration.settings import RegistrationSettings
    from cctrnet.registration.stage import dataset_patients, run_registration_stage
    from cctrnet.registration.volumes import load_label
    from cctrnet.utilities.file_io import load_json

    settings = RegistrationSettings(torch_affine_local_normalisation_sigma_mm=sigma_mm,
                                    torch_affine_local_variance_floor=floor)
    run_registration_stage(folder, None, method=method, engine="torch", configuration=configuration,
                           settings=settings)
    data_folder = folder / configuration
    store = PairStore(registration_folder(folder, configuration, method))
    report = load_json(store.folder.parent / "registration_report.json")
    entry = report["methods"][method]
    labeled = report["labeled_cases"]
    selected: dict[int, list[float]] = {}
    for case, selected_record in entry["registered_label_dice"].items():
        truth, _ = load_label(data_folder, case)
        for value, score in class_dice(brs.registered_label(data_folder, store, case, selected_record["labeled"]), truth,
                                       [int(c) for c in np.unique(truth) if c > 0]).items():
            selected.setdefault(value, []).append(score)
    patients = dataset_patients(folder)
    between = leave_one_out_dice(data_folder, store, labeled, patients)
    return {
        "method": method, "sigma_mm": sigma_mm, "floor": floor, "num_pairs": entry["num_pairs"], "num_failed": entry["num_failed"],
        "failures": entry["failures"], "affine_start_kept": entry["quality"].get("affine_start_kept", 0),
        "seconds_per_pair_median": entry["seconds_per_pair_median"],
        "selected_dice_mean": entry["registered_label_dice_mean"],
        "selected_dice_per_class": {str(c): float(np.mean(v)) for c, v in sorted(selected.items())},
        "between_patients_dice_mean": between["mean"], "between_patients_dice_per_class": between["per_class"],
        "between_patients_pairs": between["pairs"],
        "between_patients_dice_mean_successful": between["mean_successful"],
        "quality": entry["quality"],
    }


def table(runs: list[dict[str, Any]]) -> str:
    lines = ["| dataset | method | sigma mm | floor | failed pairs | BRS-selected Dice (RV / MYO / LV) | between patients, "
             "failed = 0 (RV / MYO / LV) | between patients, successful | s per pair (median) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        per = lambda values: " / ".join(f"{v:.3f}" for v in values.values())  # noqa: E731
        sigma = "off" if run["sigma_mm"] == 0 else f"{run['sigma_mm']:g}"
        lines.append(f"| {run['dataset']} | {run.get('method', 'affine')} | {sigma} | {run['floor'] if run['sigma_mm'] else '–'} | "
                     f"{run['num_failed']} / {run['num_pairs']} | {run['selected_dice_mean']:.3f} "
                     f"({per(run['selected_dice_per_class'])}) | {run['between_patients_dice_mean']:.3f} "
                     f"({per(run['between_patients_dice_per_class'])}) | "
                     f"{run['between_patients_dice_mean_successful']:.3f} | {run['seconds_per_pair_median']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", type=Path, required=True,
                        help="preprocessed dataset folders (DatasetXXX_Name), read only")
    parser.add_argument("--settings", nargs="+", default=["0:0.01", "40:0.1"], metavar="SIGMA_MM:FLOOR")
    parser.add_argument("--work-dir", type=Path, required=True, help="one copy of each dataset per setting goes here")
    parser.add_argument("-c", "--configuration", default="2d")
    parser.add_argument("--deformable", action="store_true",
                        help="also run the deformable stage on each setting's affines (affine_deformable) and measure it")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from benchmarks.machine_info import machine_info
    from cctrnet.utilities.file_io import save_json

    args.output.parent.mkdir(parents=True, exist_ok=True)
    runs = []
    for dataset in args.datasets:
        for setting in args.settings:
            sigma_text, floor_text = setting.split(":")
            sigma_mm, floor = float(sigma_text), float(floor_text)
            folder = args.work_dir / f"sigma{sigma_mm:g}_floor{floor:g}" / dataset.name
            copy_without_registration(dataset, folder)
            print(f"[benchmark] {dataset.name}: sigma {sigma_mm:g} mm, floor {floor:g}", file=sys.stderr, flush=True)
            runs.append({"dataset": dataset.name, **measure(folder, sigma_mm, floor, args.configuration)})
            if args.deformable:  # on top of the affines just stored, with the same affine settings
                print(f"[benchmark] {dataset.name}: affine_deformable on those affines", file=sys.stderr, flush=True)
                runs.append({"dataset": dataset.name,
                             **measure(folder, sigma_mm, floor, args.configuration, "affine_deformable")})
            save_json({"date": datetime.date.today().isoformat(), "machine": machine_info(), "runs": runs},
                      args.output)  # after every run, so an interrupted benchmark keeps what it measured
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
