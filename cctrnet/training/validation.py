"""``cctr_train --val``: after training, predict the run's validation cases from their raw files and evaluate them.

The validation cases are those of the model folder's ``validation_cases.json``
(:mod:`cctrnet.training.validation_split`): the dataset's ``imagesVal`` (against ``labelsVal``) or the labeled
cases held out of training (their ``imagesTr`` files, against ``labelsTr``). Predictions and ``summary.json``
(the file ``cctr_evaluate`` writes) go to ``<model folder>/validation/``, with copies of the reference labels in
``validation/reference/`` so the folder is self-contained. A run without validation cases is refused with what
to do: the test set is never used unless named.

``--val --val-set test`` evaluates the test set (``imagesTs`` against ``labelsTs``) into ``<model folder>/test/``,
so test figures are never mistaken for validation ones.

Both are post-processed as the model folder's ``postprocessing.json`` says; with post-processing, the
predictions before it and their summary go to ``without_postprocessing/`` inside the output folder. These labels
are only reported, never used to decide the post-processing.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from cctrnet import paths
from cctrnet.postprocessing import UNPROCESSED_SUBFOLDER
from cctrnet.training.validation_split import SOURCE_HELD_OUT, VALIDATION_CASES_JSON, ValidationSplit

VALIDATION_SET = "validation"
TEST_SET = "test"
VALIDATION_SETS = (VALIDATION_SET, TEST_SET)
OUTPUT_SUBFOLDER = {VALIDATION_SET: "validation", TEST_SET: "test"}
REFERENCE_SUBFOLDER = "reference"


def check_same_validation(folder: Path, split: ValidationSplit) -> None:
    """A model folder that holds a run validated on other cases is another run: refuse to mix them."""
    path = Path(folder) / VALIDATION_CASES_JSON
    started = any((Path(folder) / name).exists() for name in ("checkpoint_latest.pth", "checkpoint_final.pth"))
    if not started or not path.exists():
        return
    from cctrnet.utilities.file_io import load_json

    recorded = load_json(path)
    if recorded.get("source") != split.source or list(recorded.get("cases", [])) != list(split.cases):
        raise ValueError(
            f"{path}: the run in {folder} validates on {recorded.get('source')} {recorded.get('cases')}, this command "
            f"on {split.source} {split.cases}; give the same --val-fraction/--val-cases as that run, or another "
            "--seed, or move the folder")


def check_evaluation_data(dataset_name: str, validation_set: str, split: ValidationSplit) -> None:
    """ValueError naming what is missing for ``--val`` on ``validation_set``."""
    root = paths.raw_folder()
    raw = root / dataset_name
    if validation_set == TEST_SET:
        parts = ("imagesTs", "labelsTs")
    elif not split.cases:
        raise ValueError(f"--val: this run has no validation cases ({split.note}). Hold some out with --val-fraction F "
                         "or --val-cases ID ..., give the dataset an imagesVal/labelsVal, or evaluate on the test set "
                         "by name: --val --val-set test")
    else:
        parts = split.raw_parts
    missing = [str(raw / sub) for sub in parts if not (raw / sub).is_dir()]
    if missing:
        raise ValueError(f"--val{' --val-set test' if validation_set == TEST_SET else ''} needs "
                         f"{' and '.join(missing)} (raw folder: {paths.describe_root(root)})")


def _validation_inputs(model_folder: Path, raw: Path, file_ending: str, num_channels: int, reference: Path):
    """(input cases, reference folder) of the recorded validation cases; the references are copied."""
    from cctrnet.dataset.raw_dataset import list_cases
    from cctrnet.inference.input_cases import InputCase
    from cctrnet.utilities.file_io import load_json

    record_path = model_folder / VALIDATION_CASES_JSON
    if not record_path.exists():
        raise ValueError(f"{record_path}: missing; the model folder does not record its validation cases "
                         "(trained before validation splits existed): evaluate on the test set with --val-set test")
    record = load_json(record_path)
    wanted = set(record.get("cases") or [])
    if not wanted:
        raise ValueError(f"{record_path}: no validation cases ({record.get('note', '')})")
    images, labels = ("imagesTr", "labelsTr") if record["source"] == SOURCE_HELD_OUT else ("imagesVal", "labelsVal")
    cases = [c for c in list_cases(raw / images, raw / labels, file_ending, num_channels) if c.case_id in wanted]
    missing = sorted(wanted - {c.case_id for c in cases if c.is_labeled})
    if missing:
        raise ValueError(f"{raw / images}, {raw / labels}: validation case(s) {', '.join(missing)} of {record_path} "
                         "have no image or label there")
    if reference.exists():
        shutil.rmtree(reference)
    reference.mkdir(parents=True)
    for case in cases:
        shutil.copyfile(case.label_file, reference / f"{case.case_id}{file_ending}")
    return [InputCase(c.case_id, list(c.image_files)) for c in cases], reference


def validate_model(model_folder: Path, dataset_name: str, device_name: str = "auto", progress: bool = True,
                   validation_set: str = VALIDATION_SET) -> dict[str, Any]:
    """Predict and evaluate ``validation_set`` (``"validation"`` or ``"test"``); returns the summary."""
    from cctrnet.evaluation.evaluate_folder import evaluate_folders, summary_table
    from cctrnet.inference.input_cases import list_input_cases
    from cctrnet.inference.model_folder import ModelFolder
    from cctrnet.inference.predictor import Predictor

    model_folder = Path(model_folder)
    raw = paths.raw_folder() / dataset_name
    output = model_folder / OUTPUT_SUBFOLDER[validation_set]
    model = ModelFolder.load(model_folder)
    if validation_set == TEST_SET:
        labels = raw / "labelsTs"
        cases, problems = list_input_cases(raw / "imagesTs", model.num_input_channels)
    else:
        cases, labels = _validation_inputs(model_folder, raw, model.file_ending, model.num_input_channels,
                                           output / REFERENCE_SUBFOLDER)
        problems = {}
    predictor = Predictor.from_model_folder(model, device=device_name, checkpoint="final")
    unprocessed = output / UNPROCESSED_SUBFOLDER if predictor.postprocessing is not None else None
    report = predictor.predict_cases(cases, output, overwrite=True, progress=progress, unprocessed_folder=unprocessed)
    for case, reason in {**problems, **report.skipped}.items():
        print(f"{validation_set}: {case}: {reason}; skipped")
    label_map, ending = model.dataset_json["labels"], model.dataset_json["file_ending"]
    if unprocessed is not None:
        before = evaluate_folders(labels, unprocessed, label_map, ending, show_progress=progress)
        print(f"without post-processing:\n{summary_table(before)}")
    summary = evaluate_folders(labels, output, label_map, ending, show_progress=progress)
    print(f"{validation_set} set, {summary['num_cases_evaluated']} case(s)"
          + (", with post-processing" if unprocessed is not None else "") + f":\n{summary_table(summary)}")
    print(f"{validation_set} summary written to {output / 'summary.json'}"
          + (f" and, without post-processing, {unprocessed / 'summary.json'}" if unprocessed is not None else ""))
    return summary
