"""``cctr_train``: semi-supervised training of a preprocessed dataset."""
from __future__ import annotations

import argparse
import sys

from cctrnet.cli.common import add_device_argument, add_threads_argument, fail
from cctrnet.training.trainers.registry import TRAINER_DESCRIPTIONS


def build_parser() -> argparse.ArgumentParser:
    trainers = "\n".join(f"  {name:20s} {text}" for name, text in TRAINER_DESCRIPTIONS.items())
    parser = argparse.ArgumentParser(
        prog="cctr_train", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train on a dataset prepared by cctr_plan_and_preprocess; writes a model folder under "
                    "$cctr_results/DatasetXXX_Name/<trainer>__labeled<N>__seed<S>/.",
        epilog=f"trainers (-tr):\n{trainers}\n\nablations and weights: --set rsl=false brs=false scl=false "
               "reps=false w_rs=1.0 w_c=0.001 tau=0.1 n_anchors=1000 ... (cctr_train --list-settings)")
    parser.add_argument("dataset", nargs="?", help="dataset id or name")
    parser.add_argument("--labeled", type=int, default=None, metavar="N",
                        help="train with N labeled cases chosen by a seeded rule; the others' labels are hidden "
                             "(default: every case that has a label)")
    parser.add_argument("--labeled-cases", nargs="+", default=None, metavar="CASE",
                        help="name the labeled cases instead of --labeled")
    parser.add_argument("-tr", "--trainer", default="CCTRTrainer", help="trainer name (default: %(default)s)")
    parser.add_argument("--iterations", type=int, default=None, help="iterations (default: the plan's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the labeled-case choice and of training")
    add_device_argument(parser, "where to train")
    add_threads_argument(parser)
    parser.add_argument("--c", "--continue", dest="resume", action="store_true",
                        help="resume from checkpoint_latest.pth of the same run")
    parser.add_argument("--val", action="store_true",
                        help="after training, predict imagesTs and evaluate against labelsTs "
                             "(model folder/validation/summary.json)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override trainer settings")
    parser.add_argument("--list-settings", action="store_true", help="print every setting with its default and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from cctrnet.training.config import TrainerConfig, parse_set_arguments

    if args.list_settings:
        for key, value in TrainerConfig().to_dict().items():
            print(f"{key} = {value}")
        return 0
    if args.dataset is None:
        parser.error("the dataset id or name is required")
    try:
        overrides = parse_set_arguments(args.set)
    except ValueError as error:
        return fail(str(error))
    from cctrnet.utilities.cpu_threads import apply_cpu_threads

    try:
        apply_cpu_threads(args.threads)
    except ValueError as error:
        return fail(str(error))
    from cctrnet.training.train_run import TrainingRunError, train

    try:
        train(args.dataset, trainer_name=args.trainer, num_labeled=args.labeled, labeled_cases=args.labeled_cases,
              seed=args.seed, iterations=args.iterations, device_name=args.device, resume=args.resume,
              overrides=overrides, progress=not args.no_progress, validate=args.val)
    except TrainingRunError as error:
        return fail(str(error))
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    return 0


if __name__ == "__main__":
    sys.exit(main())
