"""``cctr_train --val``: after training, predict the raw dataset's test images and evaluate them.

Writes the predictions and ``summary.json`` (the same file ``cctr_evaluate`` writes) to
``<model folder>/validation/``, post-processed as the model folder's ``postprocessing.json`` says; with
post-processing, the predictions before it and their summary go to ``validation/without_postprocessing/``.
Needs ``imagesTs`` and ``labelsTs`` in the raw dataset. These labels are only reported, never used to decide
the post-processing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from cctrnet import paths
from cctrnet.postprocessing import UNPROCESSED_SUBFOLDER


def validate_model(model_folder: Path, dataset_name: str, device_name: str = "auto", progress: bool = True
                   ) -> dict[str, Any]:
    from cctrnet.evaluation.evaluate_folder import evaluate_folders, summary_table
    from cctrnet.inference.model_folder import ModelFolder
    from cctrnet.inference.predictor import Predictor
    from cctrnet.utilities.file_io import load_json

    raw = paths.raw_folder() / dataset_name
    images, labels = raw / "imagesTs", raw / "labelsTs"
    output = Path(model_folder) / "validation"
    model = ModelFolder.load(model_folder)
    predictor = Predictor.from_model_folder(model, device=device_name, checkpoint="final")
    unprocessed = output / UNPROCESSED_SUBFOLDER if predictor.postprocessing is not None else None
    report = predictor.predict_folder(images, output, overwrite=True, progress=progress,
                                      unprocessed_folder=unprocessed)
    for problem in report.problems:
        print(f"validation: {problem}")
    dataset_json = load_json(Path(model_folder) / "dataset.json")
    if unprocessed is not None:
        before = evaluate_folders(labels, unprocessed, dataset_json["labels"], dataset_json["file_ending"],
                                  show_progress=progress)
        print(f"without post-processing:\n{summary_table(before)}")
    summary = evaluate_folders(labels, output, dataset_json["labels"], dataset_json["file_ending"],
                               show_progress=progress)
    print(("with post-processing:\n" if unprocessed is not None else "") + summary_table(summary))
    print(f"validation summary written to {output / 'summary.json'}"
          + (f" and, without post-processing, {unprocessed / 'summary.json'}" if unprocessed is not None else ""))
    return summary
