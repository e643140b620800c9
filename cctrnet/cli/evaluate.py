"""cctr_evaluate: Dice and HD95 (mm) of a folder of predictions against a folder of reference labels."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cctr_evaluate",
        description=(
            "Per case and class: Dice (%), 95th percentile Hausdorff distance in mm and volumes in ml; "
            "means per class and overall. Files are matched by case id ({case}{file_ending}). Writes "
            "summary.json and prints a table. Conventions: documentation/evaluation.md."
        ),
    )
    parser.add_argument("-ref", required=True, help="folder of reference label maps")
    parser.add_argument("-pred", required=True, help="folder of predicted label maps")
    parser.add_argument(
        "-d", dest="dataset", default=None,
        help="raw dataset (id, DatasetXXX_Name or path) whose dataset.json gives labels and file ending",
    )
    parser.add_argument(
        "--labels", nargs="+", default=None,
        help="labels to evaluate, as values (1 2 3) or name=value (LV=1 RV=2); "
        "default: from -d, else every value found in the references",
    )
    parser.add_argument(
        "--file-ending", default=None,
        help="file ending such as .nii.gz, .nii, .mha, .nrrd; default: from -d, else the most common in -ref",
    )
    parser.add_argument("-o", dest="output", default=None, help="summary file (default: PRED/summary.json)")
    parser.add_argument(
        "-np", dest="num_processes", type=int, default=min(4, os.cpu_count() or 1),
        help="worker processes over cases (default: %(default)s)",
    )
    parser.add_argument(
        "--allow-missing", action="store_true",
        help="exit with 0 even when a reference has no prediction (it is still listed)",
    )
    parser.add_argument(
        "--hd95-one-empty", choices=("diagonal", "nan"), default="diagonal",
        help="HD95 when exactly one of prediction and reference is empty: the volume diagonal in mm "
        "(default) or NaN, left out of means",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("-m", "--model-folder", default=None, metavar="FOLDER",
                        help="the model that made the predictions: also write PRED/report.html (cctr_report) with "
                             "these metrics")
    return parser


def parse_labels(items: Sequence[str]) -> dict[str, int]:
    """``["1", "2"]`` -> {"label_1": 1, "label_2": 2}; ``["LV=1"]`` -> {"LV": 1}."""
    labels: dict[str, int] = {}
    for item in items:
        name, _, value = item.rpartition("=")
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"--labels: '{item}' is neither an integer nor name=integer") from None
        labels[name or f"label_{number}"] = number
    return labels


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cctrnet.dataset.raw_dataset import DatasetNotFoundError, RawDataset, find_dataset_folder
    from cctrnet.evaluation.evaluate_folder import (
        detect_file_ending,
        detect_labels,
        evaluate_folders,
        format_problems,
        list_label_files,
        summary_table,
    )
    from cctrnet.evaluation.metrics import EvaluationConventions
    from cctrnet.paths import raw_folder

    try:
        labels = parse_labels(args.labels) if args.labels else None
        file_ending = args.file_ending
        if args.dataset is not None:
            dataset = RawDataset.load(find_dataset_folder(args.dataset, raw_folder()))
            labels = labels or {name: int(v) for name, v in dataset.dataset_json["labels"].items()}
            file_ending = file_ending or dataset.file_ending
        file_ending = file_ending or detect_file_ending(args.ref)
        if labels is None:
            labels = detect_labels(list_label_files(args.ref, file_ending).values(), args.num_processes, not args.quiet)
        summary = evaluate_folders(
            args.ref, args.pred, labels, file_ending,
            num_processes=args.num_processes,
            output_file=args.output,
            conventions=EvaluationConventions(hd95_one_empty=args.hd95_one_empty),
            show_progress=not args.quiet,
        )
    except (DatasetNotFoundError, FileNotFoundError, ValueError) as error:
        print(f"cctr_evaluate: error: {error}", file=sys.stderr)
        return EXIT_USAGE

    print(summary_table(summary))
    print(f"{summary['num_cases_evaluated']} of {summary['num_reference_cases']} reference cases evaluated; "
          f"summary written to {summary['summary_file']}")
    if args.model_folder:
        from pathlib import Path

        from cctrnet.report.page import write_report_safely

        write_report_safely(Path(args.model_folder), Path(args.pred) / "report.html", Path(summary["summary_file"]))
    problems = summary["problems"]
    for line in format_problems(problems):
        print(f"problem: {line}", file=sys.stderr)
    failed = bool(problems["geometry_mismatch"] or problems["unreadable"])
    if problems["missing_predictions"] and not args.allow_missing:
        failed = True
    return EXIT_PROBLEMS if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
