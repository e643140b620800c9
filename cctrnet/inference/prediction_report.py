"""What a ``cctr_predict`` run did, on disk beside its predictions, for scripts and for the next stage.

``OUTPUT/prediction_report.json`` (``prediction_report_part{I}of{N}.json`` for a part of ``-num_parts``, so
parts and ``--num-gpus`` workers writing into one folder never overwrite each other) lists the cases
written, the cases kept by ``--continue``, and every skipped input with its reason, keyed by case id (or by
file name where no case id could be read from it). A script that must tell "skipped" from "never asked"
(an evaluation that scores a skipped case as a failure, a pipeline that retries) reads it instead of
parsing the ``skipped:`` lines of the log. Each run of a part replaces its own file.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from cctrnet.inference.parts import CasePart
from cctrnet.inference.predictor import FolderPredictionReport
from cctrnet.utilities.file_io import load_json, save_json

REPORT_STEM = "prediction_report"


def prediction_report_path(output_folder: str | os.PathLike, part: CasePart | None = None) -> Path:
    """Where the run of ``part`` (None: the whole folder) writes its report."""
    if part is None or part.is_whole:
        return Path(output_folder) / f"{REPORT_STEM}.json"
    return Path(output_folder) / f"{REPORT_STEM}_part{part.part_id}of{part.num_parts}.json"


def write_prediction_report(report: FolderPredictionReport, output_folder: str | os.PathLike,
                            part: CasePart | None = None) -> Path:
    """Write ``report`` (atomically) as the report of ``part``; returns its path."""
    path = prediction_report_path(output_folder, part)
    save_json({"written": sorted(report.predicted), "kept": sorted(report.already_done),
               "skipped": dict(report.skipped),
               "seconds_per_case": {case: round(s, 3) for case, s in sorted(report.seconds_per_case.items())},
               "part": None if part is None or part.is_whole else {"part_id": part.part_id,
                                                                     "num_parts": part.num_parts},
               "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, path)
    return path


def read_prediction_outcome(output_folder: str | os.PathLike) -> dict[str, Any]:
    """What the latest run of each part that wrote into ``output_folder`` left there, merged over the parts:
    ``predicted`` (cases written or kept, sorted) and ``skipped`` ({case: reason}).

    A case skipped by an earlier run and written by a later one (``--continue``) counts as predicted.
    Raises FileNotFoundError when no run wrote a report there.
    """
    paths = sorted(Path(output_folder).glob(f"{REPORT_STEM}*.json"))
    if not paths:
        raise FileNotFoundError(f"{Path(output_folder) / (REPORT_STEM + '.json')}: no prediction report; "
                                f"was cctr_predict run into this folder?")
    skipped: dict[str, str] = {}
    predicted: set[str] = set()
    for path in paths:
        report = load_json(path)
        skipped.update(report.get("skipped", {}))
        predicted.update(report.get("written", []) + report.get("kept", []))
    return {"predicted": sorted(predicted),
            "skipped": {case: reason for case, reason in skipped.items() if case not in predicted}}
