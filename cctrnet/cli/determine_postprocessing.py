"""cctr_determine_postprocessing: decide a trained model's connected-component post-processing."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from cctrnet.cli.common import fail

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cctr_determine_postprocessing",
        description=(
            "Decide per class (and for the whole foreground) whether cctr_predict keeps only the largest "
            "connected component, from data the user has: the topology of the run's training labels and of "
            "the registered labels on its unlabeled cases. Writes postprocessing.json into the model folder "
            "(cctr_train does this at the end of training). Details: documentation/prediction.md."
        ),
    )
    parser.add_argument("-m", dest="model_folder", default=None,
                        help="a trained model folder (…/DatasetXXX_Name/TRAINER__labeledN__seedS)")
    parser.add_argument("-d", dest="dataset", default=None,
                        help="dataset whose model to use: id (1), DatasetXXX_Name or Name")
    parser.add_argument("-tr", dest="trainer", default=None, help="trainer name of the model")
    parser.add_argument("--labeled", default=None, help="number of labeled cases of the model (or 'all')")
    parser.add_argument("--seed", type=int, default=None, help="seed of the model's training run")
    parser.add_argument("--no-registration", action="store_true",
                        help="decide from the training labels alone, without the registered labels")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cctrnet import paths
    from cctrnet.inference.model_folder import ModelFolderError, find_model_folder
    from cctrnet.postprocessing.determine import PostprocessingDecisionError, determine_postprocessing

    try:
        model = find_model_folder(paths.results_folder(), args.dataset, args.trainer, args.labeled, args.seed,
                                  args.model_folder)
    except ModelFolderError as error:
        return fail(str(error), EXIT_USAGE)
    try:
        determine_postprocessing(model.path, use_registration=not args.no_registration)
    except (PostprocessingDecisionError, OSError, ValueError, LookupError) as error:
        return fail(str(error), EXIT_PROBLEMS)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
