"""``cctr_suggest_labels -d 1 -n 2``: which training volumes to label first, from the stored registrations.

``--ids-only`` prints only the suggested case ids on stdout (everything else on stderr), for
``cctr_train 1 --labeled-cases $(cctr_suggest_labels -d 1 -n 2 --ids-only)``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cctrnet.cli.common import fail


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cctr_suggest_labels",
        description="Suggest the training volumes that best represent the dataset, to label first (greedy "
                    "facility location on the post-registration dissimilarity). Writes "
                    "$cctr_preprocessed/DatasetXXX_Name/registration/<configuration>/suggested_labels.json and .png.")
    parser.add_argument("-d", "--dataset", required=True, help="dataset id (1, 001) or folder name")
    parser.add_argument("-n", "--num-cases", type=int, required=True,
                        help="how many cases to suggest; patients when dataset.json declares them (as cctr_train "
                             "--labeled counts them), and every frame of a suggested patient is listed")
    parser.add_argument("--labeled-cases", nargs="+", default=[], metavar="CASE",
                        help="cases already labeled: kept, and the suggestion adds to them")
    parser.add_argument("--registration", default="auto", choices=("auto", "affine", "affine_deformable", "affine_bspline"),
                        help="whose stored pairs to read; auto: affine_deformable when stored, else affine")
    parser.add_argument("-c", "--configuration", default="2d", help="preprocessed configuration (default: 2d)")
    parser.add_argument("--no-register", action="store_true",
                        help="refuse instead of registering the pairs that are not stored yet")
    parser.add_argument("--deformation-weight", type=float, default=None, metavar="W",
                        help="weight of the deformation size against the image term (default 0.5; 0: image only)")
    parser.add_argument("--near-tie-share", type=float, default=None, metavar="S",
                        help="list, beside each suggestion, the candidates whose coverage cost is at most this "
                             "share above it (default 0.02: 2 %%)")
    parser.add_argument("-o", "--output-folder", type=Path, default=None,
                        help="where the JSON and PNG go (default: the registration folder)")
    parser.add_argument("--per-volume", action="store_true",
                        help="suggest single volumes even when dataset.json groups them into patients")
    parser.add_argument("--ids-only", action="store_true", help="print only the suggested ids (stdout)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.num_cases < 1:
        return fail(f"-n must be at least 1, got {args.num_cases}")
    from cctrnet.dataset.raw_dataset import DatasetNotFoundError, find_dataset_folder
    from cctrnet.paths import preprocessed_folder
    from cctrnet.registration.dissimilarity import DissimilaritySettings
    from cctrnet.registration.label_suggestion import (NEAR_TIE_SHARE, SuggestionError, describe, suggest_labels,
                                                       write_suggestion)

    try:
        folder = find_dataset_folder(args.dataset, preprocessed_folder())
    except DatasetNotFoundError as error:
        return fail(f"{error}\n  (a dataset is prepared by: cctr_plan_and_preprocess -d {args.dataset})")
    settings = DissimilaritySettings()
    if args.deformation_weight is not None:
        if args.deformation_weight < 0:
            return fail(f"--deformation-weight must be at least 0, got {args.deformation_weight}")
        settings = DissimilaritySettings(deformation_weight=args.deformation_weight)
    near_tie_share = NEAR_TIE_SHARE if args.near_tie_share is None else args.near_tie_share
    if near_tie_share < 0:
        return fail(f"--near-tie-share must be at least 0, got {args.near_tie_share}")
    try:
        suggestion = suggest_labels(folder, args.num_cases, args.labeled_cases, args.configuration,
                                    args.registration, register_missing=not args.no_register, settings=settings,
                                    group_by_patient=not args.per_volume, near_tie_share=near_tie_share)
        json_path, figure_path = write_suggestion(suggestion, folder, args.output_folder)
    except (SuggestionError, FileNotFoundError, ValueError, OSError) as error:
        return fail(str(error))
    text = f"{describe(suggestion)}\nwrote {json_path} and {figure_path}"
    if args.ids_only:
        print(text, file=sys.stderr)
        print(" ".join(suggestion["ids"]))
    else:
        labeled = sorted({*args.labeled_cases, *suggestion["ids"]})
        print(f"{text}\nonce labeled (and preprocessed again if they were unlabeled): "
              f"cctr_train {args.dataset} --labeled-cases {' '.join(labeled)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
