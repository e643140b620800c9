"""``cctr_plan_and_preprocess``: integrity check, fingerprint, plan and preprocessing of raw datasets."""
from __future__ import annotations

import argparse
import sys
import time

from cctrnet.cli.common import add_device_argument, default_num_processes, fail
from cctrnet.registration.settings import REGISTRATION_CHOICES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cctr_plan_and_preprocess",
        description="Check raw datasets, extract their fingerprint, plan a 2D configuration for this machine's "
                    "hardware and preprocess every training case. Reads $cctr_raw, writes $cctr_preprocessed.")
    parser.add_argument("-d", "--dataset", nargs="+", required=True,
                        help="dataset id(s) (1 or 001) or full folder name(s) (Dataset001_CardiacPhantom)")
    parser.add_argument("-np", "--num-processes", type=int, default=default_num_processes(),
                        help="worker processes for fingerprinting and preprocessing (default: %(default)s)")
    add_device_argument(parser, "the hardware to plan for")
    parser.add_argument("--gpu-memory-target", type=float, default=None, metavar="GB",
                        help="GPU memory the plan may use for both networks (default: 85%% of the GPU's memory)")
    parser.add_argument("--cpu-step-seconds", type=float, default=None, metavar="S",
                        help="CPU plans: estimated seconds per training step for both networks (default: 0.6)")
    parser.add_argument("--branch-b", choices=("auto", "Primus2D", "ResidualEncoderUNet"), default="auto",
                        help="network family of branch B (default: auto, see documentation/planning.md)")
    parser.add_argument("--plan-only", action="store_true", help="write fingerprint and plan, do not preprocess")
    parser.add_argument("--registration", choices=REGISTRATION_CHOICES, default="auto",
                        help="registrations between training volumes computed after preprocessing; auto: affine and "
                        "affine_deformable, the better one on the labeled cases recorded as the dataset's choice "
                        "(default: auto)")
    parser.add_argument("--registration-engine", choices=("torch", "simpleitk"), default="torch",
                        help="torch: batched, CPU or GPU; simpleitk: the reference engine (default: %(default)s)")
    parser.add_argument("--dask-scheduler", default=None, metavar="tcp://host:port",
                        help="run the registration pairs on an existing Dask cluster ('local': a local cluster "
                             "of -np worker processes)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cctrnet.plan_and_preprocess import plan_and_preprocess_dataset, PipelineError
    from cctrnet.planning.planner import PlannerSettings
    from cctrnet.registration.runner import PairsNotComputed
    from cctrnet.utilities.file_io import FileWriteError

    settings = PlannerSettings(branch_b=args.branch_b, gpu_memory_target_gb=args.gpu_memory_target)
    if args.cpu_step_seconds is not None:
        settings.cpu_step_seconds_budget = args.cpu_step_seconds
    failed, write_failed = [], []
    for identifier in args.dataset:
        start = time.perf_counter()
        try:
            folder = plan_and_preprocess_dataset(identifier, settings=settings, device_name=args.device,
                                                 num_processes=args.num_processes, preprocess=not args.plan_only,
                                                 progress=not args.no_progress)
            if not args.plan_only and args.registration != "none":
                from cctrnet.registration.stage import run_registration_stage

                print(f"[{folder.name}] registering training volumes ({args.registration})")
                run_registration_stage(folder, None, method=args.registration, engine=args.registration_engine,
                                       num_processes=args.num_processes, dask_scheduler=args.dask_scheduler)
        except PipelineError as error:
            print(f"\nerror: {error}", file=sys.stderr)
            failed.append(identifier)
            continue
        except PairsNotComputed as error:  # preprocessing and the finished pairs are kept
            print(f"\nerror: {error}", file=sys.stderr)
            failed.append(f"{identifier} (registration incomplete)")
            continue
        except FileWriteError as error:  # disk full, read-only output: the files written before stay complete
            print(f"\nerror: {error}", file=sys.stderr)
            failed.append(identifier)
            write_failed.append(identifier)
            continue
        print(f"dataset {identifier}: done in {time.perf_counter() - start:.1f} s")
    if failed:
        if write_failed:
            return fail(f"{len(failed)} dataset(s) failed: {', '.join(failed)}; a file that could not be written "
                        "keeps its previous complete version, and a rerun continues from the files written")
        return fail(f"{len(failed)} dataset(s) failed: {', '.join(failed)}; nothing was written for them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
