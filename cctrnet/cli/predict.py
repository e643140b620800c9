"""cctr_predict: segment a folder of raw images with a trained model (or by registration only)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from cctrnet.cli.common import add_device_argument, add_threads_argument, fail
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
    add_device_argument(parser, "where the networks run")
    add_threads_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _print_report(report, output: Path) -> None:
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
    args = build_parser().parse_args(argv)
    input_folder, output_folder = Path(args.input), Path(args.output)
    if not input_folder.is_dir():
        return fail(f"{input_folder}: input folder does not exist", EXIT_USAGE)
    if input_folder.resolve() == output_folder.resolve():
        return fail("-o must differ from -i: predictions would mix with the images", EXIT_USAGE)
    if args.batch_size < 1 or not 0 < args.step_size <= 1:
        return fail("--batch-size must be at least 1 and --step-size in (0, 1]", EXIT_USAGE)
    from cctrnet.dataset.image_io import SUPPORTED_FILE_ENDINGS
    from cctrnet.inference.input_cases import image_files

    if not image_files(input_folder):
        return fail(f"{input_folder.resolve()}: no image to predict in this folder (files ending in "
                    f"{', '.join(SUPPORTED_FILE_ENDINGS)})", EXIT_USAGE)

    if args.reg_only:  # the registration engine sets its own thread count per process
        return _main_registration_only(args, input_folder, output_folder)
    from cctrnet.utilities.cpu_threads import apply_cpu_threads

    try:
        apply_cpu_threads(args.threads)
    except ValueError as error:
        return fail(str(error))

    from cctrnet import paths
    from cctrnet.inference.model_folder import ModelFolderError, find_model_folder
    from cctrnet.inference.predictor import Predictor
    from cctrnet.inference.sliding_window import SlidingWindowSettings

    try:
        model = find_model_folder(paths.results_folder(), args.dataset, args.trainer, args.labeled, args.seed,
                                  args.model_folder)
        settings = SlidingWindowSettings(step_fraction=args.step_size, mirroring=not args.disable_tta,
                                         patches_per_batch=args.batch_size)
        predictor = Predictor.from_model_folder(model, args.device, args.checkpoint, settings,
                                                postprocessing=not args.no_postprocessing)
    except (ModelFolderError, RuntimeError, ValueError) as error:
        return fail(str(error), EXIT_USAGE)
    print(f"model {model.describe()}: checkpoint {args.checkpoint}, branches {', '.join(model.branch_names)}, "
          f"device {predictor.device}, mirroring {'off' if args.disable_tta else 'on'}")
    print(_postprocessing_line(args, model, predictor.postprocessing))
    unprocessed = output_folder / UNPROCESSED_SUBFOLDER if args.save_without_postprocessing else None
    report = predictor.predict_folder(input_folder, output_folder, args.save_probabilities,
                                      overwrite=not args.continue_prediction, progress=not args.quiet,
                                      unprocessed_folder=unprocessed)
    _print_report(report, output_folder)
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


def _main_registration_only(args: argparse.Namespace, input_folder: Path, output_folder: Path) -> int:
    from cctrnet.inference.registration_only import RegistrationOnlyError, predict_folder_by_registration

    try:
        report = predict_folder_by_registration(input_folder, output_folder, args.dataset, args.labeled,
                                                args.model_folder, args.seed, progress=not args.quiet,
                                                overwrite=not args.continue_prediction)
    except (RegistrationOnlyError, OSError) as error:
        return fail(str(error), EXIT_USAGE)
    _print_report(report, output_folder)
    return EXIT_PROBLEMS if report.problems else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
