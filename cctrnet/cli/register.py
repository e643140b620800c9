"""``cctr_register -d 1``: (re)compute the registrations of a preprocessed dataset.

Only pairs without a stored record are computed, so the command resumes after a kill and is cheap to
repeat. Heavy libraries are imported after argument parsing so ``--help`` answers at once.
"""
from __future__ import annotations

import argparse
import sys

from cctrnet.registration.settings import REGISTRATION_CHOICES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cctr_register",
        description="Register the preprocessed training volumes of a dataset (pairs for RSL, BRS and REPS). "
        "Results go to $cctr_preprocessed/DatasetXXX_Name/registration/.",
    )
    parser.add_argument("-d", "--dataset", required=True, help="dataset id (1, 001) or folder name (Dataset001_Name)")
    parser.add_argument("--registration", default="auto", choices=REGISTRATION_CHOICES,
                        help="transform model; auto: affine or affine_deformable, whichever gives the labeled cases' "
                        "labels better leave-one-out (default: auto, see documentation/registration.md)")
    parser.add_argument("--registration-engine", default="torch", choices=["simpleitk", "torch"],
                        help="simpleitk: reference, one pair per process; torch: batched affine on CPU or GPU "
                        "(default: torch; affine_bspline always uses simpleitk, affine_deformable torch)")
    parser.add_argument("-np", "--num-processes", type=int, default=1, help="parallel pair jobs on this machine (default: 1)")
    parser.add_argument("--dask-scheduler", default=None, metavar="tcp://host:port",
                        help="submit the pair jobs (torch engine: batches) to this running Dask scheduler (workers "
                        "must see the preprocessed folder); 'local': a local Dask cluster of -np worker processes")
    parser.add_argument("--labeled-cases", nargs="+", default=None, metavar="CASE",
                        help="labeled case ids (default: every case with a label is a candidate)")
    parser.add_argument("-c", "--configuration", default="2d", help="preprocessed configuration folder (default: 2d)")
    parser.add_argument("--retry-failed", action="store_true", help="compute pairs recorded as failed again")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.num_processes < 1:
        print("cctr_register: -np must be at least 1", file=sys.stderr)
        return 2
    from cctrnet.dataset.raw_dataset import DatasetNotFoundError, find_dataset_folder
    from cctrnet.paths import preprocessed_folder
    from cctrnet.registration.runner import PairsNotComputed
    from cctrnet.registration.stage import run_registration_stage

    try:
        dataset_folder = find_dataset_folder(args.dataset, preprocessed_folder())
    except DatasetNotFoundError as error:
        print(f"cctr_register: {error}\n  (a dataset is prepared by: cctr_plan_and_preprocess -d {args.dataset})",
              file=sys.stderr)
        return 1
    try:
        summary = run_registration_stage(
            dataset_folder, args.labeled_cases, method=args.registration, engine=args.registration_engine,
            num_processes=args.num_processes, dask_scheduler=args.dask_scheduler, configuration=args.configuration,
            retry_failed=args.retry_failed,
        )
    except (FileNotFoundError, ValueError, ImportError, PairsNotComputed) as error:
        print(f"cctr_register: {error}", file=sys.stderr)
        return 1
    return 1 if summary.failed_pairs and summary.num_pairs_needed == len(summary.failed_pairs) else 0


if __name__ == "__main__":
    sys.exit(main())
