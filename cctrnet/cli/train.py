"""``cctr_train``: semi-supervised training of a preprocessed dataset."""
from __future__ import annotations

import argparse
import signal
import sys

from cctrnet.cli.common import add_device_argument, add_threads_argument, fail
from cctrnet.training.trainers.registry import TRAINER_DESCRIPTIONS, trainer_names


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
    parser.add_argument("-tr", "--trainer", default="CCTRTrainer", choices=trainer_names(), metavar="TRAINER",
                        help="trainer name, listed below (default: %(default)s)")
    parser.add_argument("--iterations", type=int, default=None, help="iterations (default: the plan's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the labeled-case choice and of training")
    add_device_argument(parser, "where to train")
    add_threads_argument(parser)
    continuation = parser.add_mutually_exclusive_group()
    continuation.add_argument("--c", "--continue", dest="resume", action="store_true",
                              help="continue an unfinished run from its checkpoint_latest.pth to its recorded length "
                                   "(config.json); a finished run is refused")
    continuation.add_argument("--extend-to", type=int, default=None, metavar="N",
                              help="train a finished run on to N iterations in total: checkpoint_final.pth is kept "
                                   "as checkpoint_final_<iterations>.pth, the learning rate restarts at its initial "
                                   "value and decays to 0 at N, w_cps holds its maximum")
    holdout = parser.add_mutually_exclusive_group()
    holdout.add_argument("--val-fraction", type=float, default=None, metavar="F",
                         help="hold out a seeded fraction F of the run's labeled cases (patients when dataset.json "
                              "declares them; at least 3 needed) as the validation set; they are not trained on at "
                              "all. Refused when the dataset has its own imagesVal, which is used by default")
    holdout.add_argument("--val-cases", nargs="+", default=None, metavar="ID",
                         help="hold out these labeled cases (or patients) as the validation set instead")
    parser.add_argument("--val", action="store_true",
                        help="after training, predict the validation cases (imagesVal, or the held-out ones) from "
                             "their raw files and evaluate them (model folder/validation/summary.json)")
    parser.add_argument("--val-set", choices=("validation", "test"), default="validation",
                        help="with --val: 'test' evaluates imagesTs against labelsTs instead, into "
                             "model folder/test/summary.json (default: %(default)s)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override trainer settings")
    parser.add_argument("--list-settings", action="store_true", help="print every setting with its default and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    from cctrnet.training.distributed_launch import add_process_arguments

    add_process_arguments(parser)
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
    if args.extend_to is not None and args.iterations is not None:
        parser.error("--extend-to N sets the new length; leave out --iterations")
    if args.val_set != "validation" and not args.val:
        parser.error("--val-set chooses what --val evaluates; add --val")
    if args.extend_to is not None and args.extend_to < 1 or args.iterations is not None and args.iterations < 1:
        parser.error("--iterations and --extend-to need a positive number")
    try:
        overrides = parse_set_arguments(args.set)
    except ValueError as error:
        return fail(str(error))
    from cctrnet.training.train_run import TrainingRunError, TrainingStopped, check_prepared, train

    if args.threads is not None and args.threads < 1:
        return fail(f"--threads must be at least 1, got {args.threads}")
    try:  # before torch loads and the free cores are measured: a wrong dataset is said at once
        check_prepared(args.dataset)
    except TrainingRunError as error:
        return fail(str(error))
    from cctrnet.utilities.cpu_threads import apply_cpu_threads

    try:
        apply_cpu_threads(args.threads)
    except ValueError as error:
        return fail(str(error))
    from cctrnet.training.distributed_launch import LaunchError, start_or_join_processes

    try:
        launched = start_or_join_processes(args, sys.argv[1:] if argv is None else argv)
    except LaunchError as error:
        return fail(str(error))
    if launched is not None:  # --num-processes N: this process started N ranks and watched them
        return launched
    from cctrnet.utilities.file_io import FileWriteError
    from cctrnet.utilities.stop_signals import StopRequested, exit_code, raise_on_sigterm

    raise_on_sigterm()  # outside the training loop too: finally blocks run, no worker is left behind
    try:
        train(args.dataset, trainer_name=args.trainer, num_labeled=args.labeled, labeled_cases=args.labeled_cases,
              seed=args.seed, iterations=args.iterations, device_name=args.device, resume=args.resume,
              overrides=overrides, progress=not args.no_progress, validate=args.val, extend_to=args.extend_to,
              val_fraction=args.val_fraction, val_cases=args.val_cases, validation_set=args.val_set)
    except TrainingRunError as error:
        return fail(str(error))
    except FileWriteError as error:  # disk full, read-only: the file keeps its previous complete version
        return fail(f"{error}; the previous version of that file is unchanged: free the space (or make the folder "
                    "writable) and continue the run with --c")
    except TrainingStopped as stop:
        print(str(stop), file=sys.stderr)
        return exit_code(stop.signum)
    except KeyboardInterrupt:
        print("stopped by Ctrl-C outside the training loop; no iteration was lost", file=sys.stderr)
        return exit_code(signal.SIGINT)
    except StopRequested as stop:
        print(f"stopped by {stop} outside the training loop; no iteration was lost", file=sys.stderr)
        return exit_code(stop.signum)
    return 0


if __name__ == "__main__":
    sys.exit(main())
