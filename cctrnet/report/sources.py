"""Everything a report shows, read from the model folder and the dataset's preprocessed folder.

Each reader returns what exists and adds one sentence per missing or unreadable part to
``ReportSources.missing`` (naming the file), so a run in progress, a run without registration or a folder
with a damaged file still gives a page.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cctrnet.report.training_history import TrainingHistory, parse_training_log

#: registration configuration the report reads (the one cctr_train uses)
CONFIGURATION = "2d"


@dataclass
class ReportSources:
    model_folder: Path
    config: dict[str, Any] | None = None
    plans: dict[str, Any] | None = None
    dataset_json: dict[str, Any] | None = None
    labeled_cases: dict[str, Any] | None = None
    postprocessing: dict[str, Any] | None = None
    history: TrainingHistory | None = None
    registration_report: dict[str, Any] | None = None
    registration_folder: Path | None = None
    preprocessed_folder: Path | None = None
    suggestion: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    evaluation_path: Path | None = None
    finished: bool = False
    has_checkpoint: bool = False
    missing: list[str] = field(default_factory=list)


def _read_json(path: Path, what: str, missing: list[str], required: bool = True) -> dict[str, Any] | None:
    if not path.is_file():
        if required:
            missing.append(f"{what}: {path} does not exist")
        return None
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError) as error:
        missing.append(f"{what}: {path} is unreadable ({error})")
        return None
    if not isinstance(value, dict):
        missing.append(f"{what}: {path} holds a {type(value).__name__}, not an object")
        return None
    return value


def _preprocessed_dataset_folder(dataset_name: str | None) -> Path | None:
    if not dataset_name:
        return None
    from cctrnet.paths import preprocessed_folder

    folder = preprocessed_folder() / dataset_name
    return folder if folder.is_dir() else None


def read_sources(model_folder: Path, evaluation_summary: Path | None = None) -> ReportSources:
    """Read every part; ``evaluation_summary`` (a cctr_evaluate summary.json) replaces the model folder's
    ``validation/summary.json``."""
    folder = Path(model_folder)
    sources = ReportSources(folder)
    missing = sources.missing
    if not folder.is_dir():
        missing.append(f"model folder: {folder} does not exist")
        return sources
    sources.config = _read_json(folder / "config.json", "run settings", missing)
    sources.plans = _read_json(folder / "plans.json", "plan", missing)
    sources.dataset_json = _read_json(folder / "dataset.json", "dataset description", missing)
    sources.labeled_cases = _read_json(folder / "labeled_cases.json", "labeled / unlabeled cases", missing)
    sources.postprocessing = _read_json(folder / "postprocessing.json", "post-processing decision", missing,
                                        required=False)
    sources.finished = (folder / "checkpoint_final.pth").is_file()
    sources.has_checkpoint = sources.finished or (folder / "checkpoint_latest.pth").is_file()
    log = folder / "training_log.txt"
    if log.is_file():
        try:
            sources.history = parse_training_log(log)
        except OSError as error:
            missing.append(f"training curves: {log} is unreadable ({error})")
    else:
        missing.append(f"training curves: {log} does not exist")
    dataset_name = (sources.config or {}).get("dataset_name") or (sources.plans or {}).get("dataset_name")
    sources.preprocessed_folder = _preprocessed_dataset_folder(dataset_name)
    if sources.preprocessed_folder is None:
        missing.append(f"registration report: the preprocessed dataset {dataset_name or '(unknown name)'} was not found "
                       "under $cctr_preprocessed")
    else:
        registration = sources.preprocessed_folder / "registration" / CONFIGURATION
        sources.registration_folder = registration
        report_path = registration / "registration_report.json"
        if report_path.is_file():
            sources.registration_report = _read_json(report_path, "registration report", missing)
        else:
            missing.append(f"registration report: {report_path} does not exist (cctr_plan_and_preprocess and "
                           f"cctr_register -d {dataset_name} write it; training registers its pairs without it)")
        sources.suggestion = _read_json(registration / "suggested_labels.json", "label suggestion", missing,
                                        required=False)
    if evaluation_summary is not None:
        evaluation = Path(evaluation_summary)
    else:  # cctr_train --val writes validation/, --val --val-set test writes test/; the validation set first
        candidates = [folder / part / "summary.json" for part in ("validation", "test")]
        evaluation = next((c for c in candidates if c.is_file()), candidates[0])
    sources.evaluation_path = evaluation
    sources.evaluation = _read_json(evaluation, "validation / test metrics", [])
    if sources.evaluation is None:
        missing.append(f"validation / test metrics: {evaluation} does not exist or is unreadable (cctr_train --val "
                       "[--val-set test] or cctr_evaluate -m writes it)")
    return sources
