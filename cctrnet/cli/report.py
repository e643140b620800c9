"""``cctr_report -m MODEL_FOLDER [-o report.html]``: one self-contained HTML page of a model folder."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cctrnet.cli.common import fail


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cctr_report",
        description="Write one self-contained HTML page (images embedded, no network) of a model folder: plan, "
                    "cases, registration, training curves, metrics, overlays. Regenerated from the files on disk; a "
                    "run in progress or with missing parts gives a page that names what is missing.")
    parser.add_argument("-m", "--model-folder", type=Path, required=True, help="the model folder")
    parser.add_argument("-o", "--output", type=Path, default=None, help="the HTML file (default: MODEL_FOLDER/report.html)")
    parser.add_argument("--summary", type=Path, default=None,
                        help="a cctr_evaluate summary.json to show instead of MODEL_FOLDER/validation/summary.json")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.model_folder.is_dir():
        return fail(f"{args.model_folder} is not a folder (a model folder is under $cctr_results/DatasetXXX_Name/)")
    from cctrnet.report.page import write_report

    try:
        path = write_report(args.model_folder, args.output, args.summary)
    except OSError as error:
        return fail(f"cannot write the report: {error}")
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
