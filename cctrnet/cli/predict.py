"""cctr_predict: segment a folder of raw images with a trained model (or by registration only)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from cctrnet.cli.common import add_device_argument, add_threads_argument, fail
from cctrnet.inference.speed import MEMORY_FORMAT_CHOICES, PRECISION_CHOICES
from cctrnet.postprocessing import UNPROCESSED_SUBFOLDER

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cctr_predict",
        description=(
            "Predict every case of INPUT (files {case}_{XXXX}{ending} in any format SimpleITK reads; one file "
            "per case is fine for one-channel models) and write {case}{file_ending} to OUTPUT with the input's "
            "spacing, origin and direction. With one trained model in cctr_results, -i and -o are all it "
            "needs. Details: documentation/prediction.md."
        ),
    )
    parser.add_argument("-i", dest="input", required=True, help="folder of images to segment")
    parser.add_argument("-o", dest="output", required=True, help="folder for the predictions (created)")
    parser.add_argument("-d", dest="dataset", default=None,
                        help="dataset whose model to use: id (1), DatasetXXX_Name or Name")
    parser.add_argument("-m", dest="model_folder", default=None,
                        help="a trained model folder (…/DatasetXXX_Name/TRAINER__labeledN__seedS); overrides -d/-tr")
    parser.add_argument("-tr", dest="trainer", default=None, help="trainer name of the model to use")
    parser.add_argument("--labeled", default=None,
                        help="number of labeled cases the model was trained with (or 'all')")
    parser.add_argument("--seed", type=int, default=None, help="seed of the model's training run")
    parser.add_argument("--checkpoint", choices=("final", "latest"), default="final",
                        help="which checkpoint to load (default: final; latest for an unfinished run)")
    parser.add_argument("--disable-tta", action="store_true",
                        help="no mirroring test-time augmentation (about 4x faster, usually slightly worse)")
    parser.add_argument("--step-size", type=float, default=0.5,
                        help="sliding-window step as a fraction of the patch size (default: 0.5)")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="patches per forward pass, taken from several slices (default: 16)")
    parser.add_argument("--save-probabilities", action="store_true",
                        help="also write {case}.npz with the class probabilities on the input grid")
    parser.add_argument("--no-postprocessing", action="store_true",
                        help="write the label maps as predicted, without the model folder's postprocessing.json")
    parser.add_argument("--save-without-postprocessing", action="store_true",
                        help=f"also write the label maps before post-processing to OUTPUT/{UNPROCESSED_SUBFOLDER}/ "
                             "(to evaluate with and without it from one run)")
    parser.add_argument("--continue", dest="continue_prediction", action="store_true",
                        help="keep predictions already in OUTPUT and predict only the missing cases")
    parser.add_argument("--reg-only", action="store_true",
                        help="registration-only baseline: propagate the label of the labeled training case chosen "
                             "by BRS to each image (no network; the labeled cases are the preprocessed training "
                             "cases of -d chosen as for --labeled N --seed S, or those of -m's run)")
    parser.add_argument("--reg-method", choices=("affine", "affine_deformable"), default="affine",
                        help="with --reg-only: the registration of each input volume to the labeled cases "
                             "(default: affine, the paper's baseline; affine_deformable: the torch engine's "
                             "diffeomorphic stage on top)")
    parser.add_argument("--reg-engine", choices=("torch", "simpleitk"), default="torch",
                        help="with --reg-only --reg-method affine: the affine engine (default: torch, the engine "
                             "cctr_plan_and_preprocess registers the training volumes with; simpleitk: the "
                             "reference engine). affine_deformable always uses torch")
    parser.add_argument("-num_parts", type=int, default=1, metavar="N",
                        help="split the cases into N parts (sorted by case id, dealt out in turn) and predict one "
                             "(default: 1, all cases); run the parts on any machines into the same OUTPUT")
    parser.add_argument("-part_id", type=int, default=0, metavar="I",
                        help="which part this command predicts, 0 ... N-1 (default: 0)")
    parser.add_argument("--num-gpus", type=int, default=1, metavar="G",
                        help="worker processes on this machine, each with its own GPU (on a machine without one: "
                             "processes sharing the free CPU cores); they split this command's cases (default: 1)")
    add_device_argument(parser, "where the networks run")
    parser.add_argument("--precision", default="auto", choices=PRECISION_CHOICES,
                        help="autocast precision: auto = bfloat16 on CUDA GPUs that support it, else float16 on "
                             "CUDA; float32 (no autocast) on CPU (default: auto)")
    parser.add_argument("--memory-format", default="auto", choices=MEMORY_FORMAT_CHOICES,
                        help="tensor layout: auto = channels_last on CUDA, contiguous on CPU (default: auto)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the networks (slow first batches; pays off for large folders)")
    add_threads_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


# options the worker processes of --num-gpus are given by the parent itself (cctrnet/inference/workers.py)
_SET_PER_WORKER = ("num_parts", "part_id", "num_gpus", "device", "threads", "quiet", "help")


def worker_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The command line that repeats ``args`` (every option that differs from its default), for a worker."""
    argv: list[str] = []
    for action in parser._actions:
        if action.dest in _SET_PER_WORKER or not action.option_strings:
            continue
        value = getattr(args, action.dest)
        if value == action.default:
            continue
        option = max(action.option_strings, key=len)
        if isinstance(action, argparse._StoreTrueAction):
            argv.append(option)
        else:
            argv += [option, str(value)]
    return argv


def _write_and_print_report(report, output: Path, part) -> None:
    """Print what the run did and write it to OUTPUT/prediction_report*.json (cctrnet/inference/prediction_report.py)."""
    from cctrnet.inference.prediction_report import write_prediction_report

    write_prediction_report(report, output, part)
    for problem in report.problems:
        print(f"skipped: {problem}", file=sys.stderr)
    if report.already_done:
        print(f"{len(report.already_done)} case(s) already in {output}, kept (--continue)")
    if report.seconds_per_case:
        mean = sum(report.seconds_per_case.values()) / len(report.seconds_per_case)
        print(f"predicted {len(report.predicted)} case(s) into {output} ({mean:.1f} s per case)")
    else:
        print(f"predicted no case into {output}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    input_folder, output_folder = Path(args.input), Path(args.output)
    if not input_folder.is_dir():
        return fail(f"{input_folder}: input folder does not exist", EXIT_USAGE)
    if input_folder.resolve() == output_folder.resolve():
        return fail("-o must differ from -i: predictions would mix with the images", EXIT_USAGE)
    if args.batch_size < 1 or not 0 < args.step_size <= 1:
        return fail("--batch-size must be at least 1 and --step-size in (0, 1]", EXIT_USAGE)
    from cctrnet.inference.parts import CasePart

    try:
        part = CasePart(args.num_parts, args.part_id)
    except ValueError as error:
        return fail(str(error), EXIT_USAGE)
    if args.num_gpus < 1:
        return fail(f"--num-gpus must be at least 1, got {args.num_gpus}", EXIT_USAGE)
    from cctrnet.dataset.image_io import SUPPORTED_FILE_ENDINGS
    from cctrnet.inference.input_cases import image_files

    if not image_files(input_folder):
        return fail(f"{input_folder.resolve()}: no image to predict in this folder (files ending in "
                    f"{', '.join(SUPPORTED_FILE_ENDINGS)})", EXIT_USAGE)

    if args.num_gpus > 1:
        return _main_workers(parser, args, part)
    if args.reg_only:  # the registration engine sets its own thread count per process
        return _main_registration_only(args, input_folder, output_folder, part)
    from cctrnet.utilities.cpu_threads import apply_cpu_threads

    try:
        apply_cpu_threads(args.threads)
    except ValueError as error:
        return fail(str(error))

    from cctrnet import paths
    from cctrnet.inference.model_folder import ModelFolderError, find_model_folder
    from cctrnet.inference.predictor import Predictor
    from cctrnet.inference.sliding_window import SlidingWindowSettings
    from cctrnet.inference.speed import DeviceSpeedSettings

    try:
        model = find_model_folder(paths.results_folder(), args.dataset, args.trainer, args.labeled, args.seed,
                                  args.model_folder)
        settings = SlidingWindowSettings(step_fraction=args.step_size, mirroring=not args.disable_tta,
                                         patches_per_batch=args.batch_size,
                                         speed=DeviceSpeedSettings(args.precision, args.memory_format, args.compile))
        predictor = Predictor.from_model_folder(model, args.device, args.checkpoint, settings,
                                                postprocessing=not args.no_postprocessing)
    except (ModelFolderError, RuntimeError, ValueError) as error:
        return fail(str(error), EXIT_USAGE)
    print(f"model {model.describe()}: checkpoint {args.checkpoint}, branches {', '.join(model.branch_names)}, "
          f"device {predictor.device} ({predictor.speed.describe()}), mirroring {'off' if args.disable_tta else 'on'}"
          + ("" if part.is_whole else f", {part.describe()}"))
    print(_postprocessing_line(args, model, predictor.postprocessing))
    unprocessed = output_folder / UNPROCESSED_SUBFOLDER if args.save_without_postprocessing else None
    report = predictor.predict_folder(input_folder, output_folder, args.save_probabilities,
                                      overwrite=not args.continue_prediction, progress=not args.quiet,
                                      unprocessed_folder=unprocessed, part=part)
    _write_and_print_report(report, output_folder, part)
    return EXIT_PROBLEMS if report.problems else EXIT_OK


def _postprocessing_line(args: argparse.Namespace, model, plan) -> str:
    from cctrnet.postprocessing.plan import POSTPROCESSING_FILE

    if args.no_postprocessing:
        return "post-processing: off (--no-postprocessing)"
    if plan is None:
        return (f"post-processing: none, {model.path / POSTPROCESSING_FILE} does not exist "
                f"(cctr_determine_postprocessing -m {model.path} decides it)")
    names = {int(v): name for name, v in model.dataset_json["labels"].items()}
    return f"post-processing: {plan.describe(names)} ({model.path / POSTPROCESSING_FILE})"


def _main_workers(parser: argparse.ArgumentParser, args: argparse.Namespace, part) -> int:
    from cctrnet.inference.workers import plan_workers, run_workers

    try:
        plans = plan_workers(part, args.num_gpus, args.device, args.threads)
    except ValueError as error:
        return fail(str(error), EXIT_USAGE)
    return run_workers(plans, worker_arguments(parser, args))


def _main_registration_only(args: argparse.Namespace, input_folder: Path, output_folder: Path, part) -> int:
    from cctrnet.inference.registration_only import RegistrationOnlyError, predict_folder_by_registration

    try:
        report = predict_folder_by_registration(input_folder, output_folder, args.dataset, args.labeled,
                                                args.model_folder, args.seed, progress=not args.quiet,
                                                overwrite=not args.continue_prediction,
                                                method=args.reg_method, part=part,
                                                engine=args.reg_engine)
    except (RegistrationOnlyError, OSError) as error:
        return fail(str(error), EXIT_USAGE)
    _write_and_print_report(report, output_folder, part)
    return EXIT_PROBLEMS if report.problems else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
