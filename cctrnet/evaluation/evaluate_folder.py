"""Evaluate a folder of predictions against a folder of reference label maps; write summary.json.

Files are matched by case id: ``{case}{file_ending}`` in both folders. Every reference must have a
prediction on the same grid; the ones that do not are listed under ``problems`` in the summary and
left out, the rest are evaluated.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
from tqdm import tqdm

from cctrnet.dataset.image_io import SUPPORTED_FILE_ENDINGS, ImageReadError, file_ending_of, read_image
from cctrnet.evaluation.metrics import DEFAULT_CONVENTIONS, EvaluationConventions, evaluate_case
from cctrnet.evaluation.summary import format_table, json_safe, mean_per_class, overall_mean
from cctrnet.utilities.file_io import save_json
from cctrnet.utilities.progress_bars import quiet_bar_options

SUMMARY_FILE_NAME = "summary.json"


def list_label_files(folder: str | os.PathLike, file_ending: str) -> dict[str, Path]:
    """{case id: path} of the files ``{case}{file_ending}`` in a folder (hidden files skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder not found")
    return {
        p.name[: -len(file_ending)]: p
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name.endswith(file_ending) and not p.name.startswith(".")
    }


def detect_file_ending(folder: str | os.PathLike) -> str:
    """The most frequent supported image ending among a folder's files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder not found")
    endings = Counter(
        file_ending_of(p) for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
    )
    supported = [(n, e) for e, n in endings.items() if e in SUPPORTED_FILE_ENDINGS]
    if not supported:
        raise ValueError(
            f"{folder}: no image files found (supported endings: {', '.join(SUPPORTED_FILE_ENDINGS)})"
        )
    return max(supported)[1]


def detect_labels(
    reference_files: Iterable[Path], num_processes: int = 1, show_progress: bool = True
) -> dict[str, int]:
    """{"label_1": 1, ...}: every foreground value present in the reference files."""
    files = list(reference_files)
    found: set[int] = set()
    for values in _map(_label_values, files, num_processes, show_progress, "finding labels"):
        found.update(values)
    return {f"label_{v}": v for v in sorted(found) if v > 0}


def evaluate_folders(
    ref_folder: str | os.PathLike,
    pred_folder: str | os.PathLike,
    labels: Mapping[str, int],
    file_ending: str,
    num_processes: int = 1,
    output_file: str | os.PathLike | None = None,
    conventions: EvaluationConventions = DEFAULT_CONVENTIONS,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Evaluate every reference case that has a matching prediction; write and return the summary.

    ``labels`` maps class names to label values (background, value 0, is skipped). The summary is
    written to ``output_file`` (default ``pred_folder/summary.json``).
    """
    ref_folder, pred_folder = Path(ref_folder).resolve(), Path(pred_folder).resolve()
    foreground = {name: int(v) for name, v in labels.items() if int(v) != 0}
    if not foreground:
        raise ValueError(f"no foreground label to evaluate in {dict(labels)}")
    references = list_label_files(ref_folder, file_ending)
    if not references:
        raise ValueError(f"{ref_folder}: no reference files ending in {file_ending}")
    predictions = list_label_files(pred_folder, file_ending)
    problems: dict[str, list[Any]] = {
        "missing_predictions": sorted(set(references) - set(predictions)),
        "predictions_without_reference": sorted(set(predictions) - set(references)),
        "geometry_mismatch": [],
        "unreadable": [],
        "unexpected_label_values": [],
    }
    jobs = [
        (case_id, references[case_id], predictions[case_id], foreground, conventions)
        for case_id in sorted(references)
        if case_id in predictions
    ]
    per_case: list[dict[str, Any]] = []
    for outcome in _map(_evaluate_case_files, jobs, num_processes, show_progress, "evaluating"):
        for kind, entry in outcome["problems"]:
            problems[kind].append(entry)
        if outcome["record"] is not None:
            per_case.append(outcome["record"])
    per_class = mean_per_class(per_case, foreground)
    summary = {
        "reference_folder": str(ref_folder),
        "prediction_folder": str(pred_folder),
        "file_ending": file_ending,
        "labels": foreground,
        "conventions": conventions.to_dict(),
        "num_reference_cases": len(references),
        "num_cases_evaluated": len(per_case),
        "problems": problems,
        "mean": overall_mean(per_class),
        "mean_per_class": per_class,
        "per_case": per_case,
    }
    summary = json_safe(summary)
    output_file = Path(output_file) if output_file is not None else pred_folder / SUMMARY_FILE_NAME
    save_json(summary, output_file)
    summary["summary_file"] = str(output_file)
    return summary


def format_problems(problems: Mapping[str, list[Any]]) -> list[str]:
    """Human-readable lines, one per problem found during a folder evaluation."""
    lines = []
    for case_id in problems.get("missing_predictions", []):
        lines.append(f"missing prediction for case {case_id}")
    for entry in problems.get("geometry_mismatch", []):
        lines.append(f"geometry mismatch for case {entry['case']}: {'; '.join(entry['differences'])}")
    for entry in problems.get("unreadable", []):
        lines.append(f"unreadable file for case {entry['case']}: {entry['error']}")
    for entry in problems.get("unexpected_label_values", []):
        lines.append(
            f"case {entry['case']}: {entry['which']} holds label values {entry['values']} that are not evaluated"
        )
    extra = problems.get("predictions_without_reference", [])
    if extra:
        lines.append(f"{len(extra)} prediction(s) without reference, ignored: {', '.join(extra)}")
    return lines


def summary_table(summary: Mapping[str, Any]) -> str:
    """The printed table of a summary: one row per class and the mean."""
    return format_table(summary["mean_per_class"], summary["mean"])


# --- workers -----------------------------------------------------------------------------------
def _evaluate_case_files(job: tuple) -> dict[str, Any]:
    case_id, ref_path, pred_path, labels, conventions = job
    start = time.perf_counter()
    problems: list[tuple[str, Any]] = []
    try:
        ref_zyx, ref_geometry = _read_label_map(ref_path)
        pred_zyx, pred_geometry = _read_label_map(pred_path)
    except (ImageReadError, ValueError) as error:
        return {"record": None, "problems": [("unreadable", {"case": case_id, "error": str(error)})]}
    if not ref_geometry.same_grid(pred_geometry):
        entry = {
            "case": case_id,
            "differences": [f"reference vs prediction: {d}" for d in ref_geometry.differences(pred_geometry)]
            or ["grids differ within tolerance of the comparison"],
        }
        return {"record": None, "problems": [("geometry_mismatch", entry)]}
    known = set(labels.values()) | {0}
    for which, array in (("reference", ref_zyx), ("prediction", pred_zyx)):
        unexpected = [v for v in _values_present(array) if v not in known]
        if unexpected:
            problems.append(("unexpected_label_values", {"case": case_id, "which": which, "values": unexpected}))
    spacing_zyx = ref_geometry.spacing_zyx
    metrics = evaluate_case(pred_zyx, ref_zyx, spacing_zyx, list(labels.values()), conventions)
    record = {
        "case": case_id,
        "reference_file": str(ref_path),
        "prediction_file": str(pred_path),
        "spacing_zyx": list(spacing_zyx),
        "classes": {name: {"label": label, **metrics[label]} for name, label in labels.items()},
        "seconds": time.perf_counter() - start,
    }
    return {"record": record, "problems": problems}


def _read_label_map(path: Path) -> tuple[np.ndarray, Any]:
    array, geometry = read_image(path, dtype=np.float32)
    if not np.array_equal(array, np.round(array)):
        raise ValueError(f"{path}: a label map must hold integer values, found non-integer values")
    return array.astype(np.int32), geometry


def _label_values(path: Path) -> list[int]:
    array, _ = _read_label_map(path)
    return _values_present(array)


def _values_present(label_map: np.ndarray) -> list[int]:
    """Sorted distinct values of an integer label map (bincount: much faster than np.unique on big volumes)."""
    low = int(label_map.min())
    counts = np.bincount((label_map.ravel() - low) if low < 0 else label_map.ravel())
    return [int(v) + min(low, 0) for v in np.flatnonzero(counts)]


def _map(function, items: list, num_processes: int, show_progress: bool, description: str) -> Iterator[Any]:
    """Apply ``function`` to each item (in order), in worker processes when ``num_processes > 1``."""
    bar = tqdm(total=len(items), desc=description, unit="case", **quiet_bar_options(show_progress))
    try:
        if num_processes <= 1 or len(items) <= 1:
            for item in items:
                yield function(item)
                bar.update()
            return
        # spawn, not fork: the caller may hold threads (torch, ITK) that a forked child would inherit broken
        with ProcessPoolExecutor(max_workers=min(num_processes, len(items)), mp_context=get_context("spawn")) as pool:
            for result in pool.map(function, items):
                yield result
                bar.update()
    finally:
        bar.close()
