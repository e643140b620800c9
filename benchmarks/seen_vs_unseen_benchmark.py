"""Volumes a run trained on without labels against patients it never saw: where does a semi-supervised run's
advantage go?

The ACDC-like table (2026-12-03) holds a contradiction: branch A of CCT-R with two CNNs scored 15-18 points
above CPS on the training log's hidden-label curve (``dice_hidden_A``: branch A alone, 8 slices of 4 unlabeled
training volumes, tiles without overlap) and yet 1.2-1.9 points below it on the test patients. Either the curve
is not representative (few slices, one branch, no post-processing) or a run fits the volumes it sees unlabeled
(its registered labels teach exactly those) better than new patients. This script measures it with the tool's
own prediction: for each finished run of the reproduce runner it

1. predicts the training images (``imagesTr``) with ``cctr_predict`` as the runner predicts the test images
   (ensemble of the run's branches, no mirroring, post-processed and without; skipped when already there),
2. evaluates them against ``labelsTr`` (``cctr_evaluate``'s metrics, 3D, on the raw grid) and splits the cases
   into the run's labeled ones, its unlabeled ones (truth hidden during training) and, among those, the four
   the hidden-label curve measured,
3. prints one row per run beside its validation and test Dice (from the runner's job record) and the curve's
   last value, and writes everything to JSON.

    python benchmarks/seen_vs_unseen_benchmark.py --work-dir /work/acdcbench \\
        --runs acdc2__CPSTrainer__L1__s2__it2000 \\
               acdc2__CCTRTrainer-branch_b_same_as_a-registration_method_affine_deformable__L1__s2__it2000
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):  # run as a file: make the sibling modules importable as ``benchmarks.*``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.reproduce.runner import predict_command  # noqa: E402
from benchmarks.reproduce.store import WorkFolder  # noqa: E402
from cctrnet.evaluation.evaluate_folder import detect_file_ending, evaluate_folders  # noqa: E402
from cctrnet.postprocessing import UNPROCESSED_SUBFOLDER  # noqa: E402
from cctrnet.training.validation_curve import spread_choice  # noqa: E402
from cctrnet.utilities.file_io import load_json, save_json  # noqa: E402

def case_mean_dice(record: dict[str, Any]) -> float:
    """Mean Dice (%) over the classes a case's reference or prediction has (both empty: not counted)."""
    values = [c["dice_percent"] for c in record["classes"].values() if not math.isnan(c["dice_percent"])]
    return statistics.fmean(values) if values else math.nan


def group_mean(per_case: Sequence[dict[str, Any]], cases: Sequence[str]) -> float | None:
    wanted = set(cases)
    values = [case_mean_dice(r) for r in per_case if r["case"] in wanted]
    values = [v for v in values if not math.isnan(v)]
    return statistics.fmean(values) if values else None


def predict_training_images(work: WorkFolder, raw_dataset: Path, model_folder: Path, output: Path) -> None:
    """cctr_predict of imagesTr into ``output`` (post-processed) and its unprocessed subfolder, as the runner
    predicts the test images (no mirroring)."""
    if (output / UNPROCESSED_SUBFOLDER).is_dir() and any(output.glob("*.nii.gz")):
        return
    command = predict_command(raw_dataset / "imagesTr", output, model_folder, "cpu", disable_tta=True)
    subprocess.run(command, check=True, env=work.environment())


def measure_run(work: WorkFolder, run_id: str) -> dict[str, Any]:
    record = work.load_result(run_id)
    if not record or record.get("status") != "ok":
        raise SystemExit(f"{work.result_path(run_id)}: no finished job record for run {run_id}")
    model_folder = Path(record["model_folder"])
    if not (model_folder / "checkpoint_final.pth").is_file():
        raise SystemExit(f"{model_folder}: no checkpoint_final.pth (the run's model folder is gone; rerun the job)")
    dataset_name = model_folder.parent.name
    raw_dataset = work.raw / dataset_name
    split = load_json(model_folder / "labeled_cases.json")
    labeled, unlabeled = list(split["labeled"]), list(split.get("hidden_labels", []))
    # the cases the run's hidden-label curve measured (dice_hidden_A), by the run's own setting
    curve_count = int(load_json(model_folder / "config.json")["settings"]["validation_max_cases"])
    curve_cases = spread_choice(unlabeled, curve_count)
    output = work.root / "runs" / run_id / "predictions_train"
    predict_training_images(work, raw_dataset, model_folder, output)
    labels = {k: int(v) for k, v in load_json(raw_dataset / "dataset.json")["labels"].items() if int(v) != 0}
    reference = raw_dataset / "labelsTr"
    ending = detect_file_ending(reference)
    row: dict[str, Any] = {"run": run_id, "method": record["job"]["method_label"], "seed": record["job"]["seed"],
                           "labeled_cases": labeled, "unlabeled_cases": unlabeled, "curve_cases": curve_cases}
    for variant, folder in (("post", output), ("raw", output / UNPROCESSED_SUBFOLDER)):
        summary = evaluate_folders(reference, folder, labels, ending, show_progress=False,
                                   output_file=folder / "summary_train.json")
        per_case = summary["per_case"]
        row[f"labeled_{variant}"] = group_mean(per_case, labeled)
        row[f"unlabeled_{variant}"] = group_mean(per_case, unlabeled)
        row[f"curve_cases_{variant}"] = group_mean(per_case, curve_cases)
        row[f"per_case_{variant}"] = {r["case"]: case_mean_dice(r) for r in per_case}
    row["validation"] = (record.get("metrics_validation") or {}).get("mean_dice")
    row["test"] = (record.get("metrics") or {}).get("mean_dice")
    curve = (record.get("pseudo_label_curves") or {}).get("dice_hidden_A") or []
    row["curve_last"] = 100.0 * curve[-1][1] if curve else None
    return row


def render(rows: Sequence[dict[str, Any]]) -> str:
    def fmt(value: float | None) -> str:
        return "–" if value is None else f"{value:.1f}"

    lines = ["| run | unlabeled train (pp) | unlabeled train (raw) | curve's 4 cases 3D | curve (log, A only) | "
             "labeled train | validation | test |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} s{r['seed']} | {fmt(r['unlabeled_post'])} | {fmt(r['unlabeled_raw'])} | "
                     f"{fmt(r['curve_cases_post'])} | {fmt(r['curve_last'])} | {fmt(r['labeled_post'])} | "
                     f"{fmt(r['validation'])} | {fmt(r['test'])} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, required=True, help="the reproduce runner's work folder")
    parser.add_argument("--runs", nargs="+", required=True, help="job ids of finished runs (folders under runs/)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file (default: <work-dir>/seen_vs_unseen_<time>.json)")
    args = parser.parse_args(argv)
    work = WorkFolder(args.work_dir.resolve())
    os.environ.update(work.environment())
    rows = [measure_run(work, run_id) for run_id in args.runs]
    table = render(rows)
    print(table)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d_%H%M%S")
    output = args.output or work.root / f"seen_vs_unseen_{stamp}.json"
    save_json({"rows": rows, "table": table, "date": stamp}, output)
    print(f"written: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
