"""Predicting raw images with a trained model: preprocess as in training, slide, average branches, export.

One case: read its channels -> ``preprocess_arrays`` (crop, normalise, resample in plane, the training code)
-> sliding-window class probabilities of every slice, mean of the branches' softmax -> back to the input's
grid -> label map, post-processed as the model folder's ``postprocessing.json`` says -> the dataset's file
format (and the probabilities with ``with_probabilities``).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from cctrnet.dataset.geometry import Geometry
from cctrnet.dataset.image_io import ImageReadError, read_case_images
from cctrnet.inference.export import export_prediction, probabilities_path_for
from cctrnet.inference.input_cases import InputCase, list_input_cases
from cctrnet.inference.model_folder import ModelFolder
from cctrnet.inference.parts import CasePart, case_is_complete, remove_stale_temporaries
from cctrnet.inference.sliding_window import BranchEnsemble, SlidingWindowSettings, predict_volume
from cctrnet.postprocessing.plan import PostprocessingPlan, load_postprocessing
from cctrnet.preprocessing.preprocessor import preprocess_arrays


@dataclass
class FolderPredictionReport:
    """What a folder prediction did: cases written, inputs skipped ({case id or file name: reason}), time per case."""

    predicted: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds_per_case: dict[str, float] = field(default_factory=dict)
    already_done: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """One line per skipped input, as printed."""
        return [f"{case}: {reason}; skipped" for case, reason in self.skipped.items()]


def predict_each_case(cases: Sequence[InputCase], output_folder: str | os.PathLike, file_ending: str,
                      predict_one: Callable[[Sequence[Path], Path], Any], overwrite: bool = True,
                      progress: bool = True,
                      companion_files: Callable[[Path], Sequence[Path]] | None = None) -> FolderPredictionReport:
    """Run ``predict_one(image_files, output_file)`` per case, writing ``{case}{file_ending}``.

    A case whose input cannot be read or processed (ImageReadError, ValueError) is reported and skipped,
    so the other cases are still predicted. With ``overwrite=False`` (``--continue``) a case is kept when it
    is complete: its label map and every ``companion_files(label_map)`` exist (cctrnet/inference/parts.py).
    """
    from tqdm import tqdm

    from cctrnet.utilities.progress_bars import quiet_bar_options

    output_folder = Path(output_folder)
    output_folder.mkdir(parents=True, exist_ok=True)
    report = FolderPredictionReport()
    for case in tqdm(cases, desc="predict", unit="case", **quiet_bar_options(progress)):
        output_file = output_folder / f"{case.case_id}{file_ending}"
        required = [output_file, *(companion_files(output_file) if companion_files else [])]
        if not overwrite:
            if case_is_complete(required):
                report.already_done.append(case.case_id)
                continue
            for path in required:  # what a killed run of this case left; no other process owns this case
                remove_stale_temporaries(path)
        started = time.perf_counter()
        try:
            predict_one(case.image_files, output_file)
        except (ImageReadError, ValueError) as error:
            report.skipped[case.case_id] = str(error)
            continue
        report.predicted.append(case.case_id)
        report.seconds_per_case[case.case_id] = time.perf_counter() - started
    return report


def cases_of_part(input_folder: str | os.PathLike, num_channels: int, part: CasePart | None
                  ) -> tuple[list[InputCase], dict[str, str]]:
    """The input cases of ``part`` (all for None) and the listing problems.

    A listing problem concerns a case that is not listed, so it belongs to no part by the rule; part 0
    reports it, so each problem is reported (and sets the exit status) once over the parts.
    """
    cases, problems = list_input_cases(input_folder, num_channels)
    if part is None or part.is_whole:
        return cases, problems
    return part.select(cases), problems if part.part_id == 0 else {}


class Predictor:
    """A trained model ready to predict: its plan, label values and eval-mode networks on one device.

    ``postprocessing``: applied to every label map before it is written (None: none).
    """

    def __init__(self, model: ModelFolder, networks: Sequence[Any], device: Any,
                 settings: SlidingWindowSettings | None = None, postprocessing: PostprocessingPlan | None = None):
        import torch

        self.model = model
        self.device = torch.device(device)
        self.settings = settings or SlidingWindowSettings()
        self.speed = self.settings.speed.resolve(self.device)  # raises ValueError for a choice the device lacks
        self.ensemble = BranchEnsemble([self.speed.prepare_network(network) for network in networks])
        self.postprocessing = postprocessing

    @classmethod
    def from_model_folder(cls, model: ModelFolder, device: str = "auto", checkpoint: str = "final",
                          settings: SlidingWindowSettings | None = None, postprocessing: bool = True
                          ) -> "Predictor":
        """``postprocessing``: use the folder's ``postprocessing.json`` (when it has one)."""
        from cctrnet.utilities.device import resolve_device

        torch_device = resolve_device(device)
        networks = model.load_networks(torch_device, checkpoint)
        plan = load_postprocessing(model.path) if postprocessing else None
        return cls(model, list(networks.values()), torch_device, settings, plan)

    # --- arrays -------------------------------------------------------------------------------------
    def preprocess(self, data_czyx: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, dict[str, Any]]:
        """The training preprocessing of one case's raw channels: (data, properties)."""
        if data_czyx.shape[0] != self.model.num_input_channels:
            raise ValueError(f"{data_czyx.shape[0]} channel(s) given, "
                             f"the model expects {self.model.num_input_channels}")
        data, _, properties = preprocess_arrays(data_czyx, None, geometry, self.model.configuration,
                                                self.model.label_values)
        return data, properties

    def predict_preprocessed(self, data_czyx: np.ndarray, progress: bool = False,
                             description: str = "slices") -> np.ndarray:
        """Class probabilities (classes, z, y, x) on the preprocessed grid."""
        return predict_volume(data_czyx, self.ensemble, self.model.configuration["patch_size_yx"],
                              len(self.model.label_values), self.settings, self.device, progress, description)

    # --- files --------------------------------------------------------------------------------------
    def predict_case(self, image_files: Sequence[str | os.PathLike], output_file: str | os.PathLike,
                     with_probabilities: bool = False, progress: bool = False,
                     unprocessed_file: str | os.PathLike | None = None) -> np.ndarray:
        """Predict one case from its channel files and write it; returns the label map on the input grid.

        ``unprocessed_file``: also write the label map before post-processing there.
        """
        data, geometry = read_case_images(image_files)
        data, properties = self.preprocess(data, geometry)
        probabilities = self.predict_preprocessed(data, progress, description=Path(output_file).name)
        return export_prediction(probabilities, properties, self.model.label_values, output_file,
                                 self.model.file_ending, with_probabilities, self.postprocessing, unprocessed_file)

    def companion_files(self, output_file: Path, with_probabilities: bool,
                        unprocessed_folder: str | os.PathLike | None) -> list[Path]:
        """The files written with a case's label map, which a complete case must have."""
        files = [probabilities_path_for(output_file, self.model.file_ending)] if with_probabilities else []
        return files + ([Path(unprocessed_folder) / output_file.name] if unprocessed_folder is not None else [])

    def predict_cases(self, cases: Sequence[InputCase], output_folder: str | os.PathLike,
                      with_probabilities: bool = False, overwrite: bool = True, progress: bool = True,
                      unprocessed_folder: str | os.PathLike | None = None) -> FolderPredictionReport:
        """Predict every case; one that cannot be read or preprocessed is reported and skipped.

        ``unprocessed_folder``: also write each label map before post-processing there, under the same name.
        """
        def predict_one(image_files: Sequence[Path], output_file: Path) -> None:
            unprocessed = None if unprocessed_folder is None else Path(unprocessed_folder) / output_file.name
            self.predict_case(image_files, output_file, with_probabilities, progress, unprocessed)

        return predict_each_case(cases, output_folder, self.model.file_ending, predict_one, overwrite, progress,
                                 lambda output_file: self.companion_files(output_file, with_probabilities,
                                                                          unprocessed_folder))

    def predict_folder(self, input_folder: str | os.PathLike, output_folder: str | os.PathLike,
                       with_probabilities: bool = False, overwrite: bool = True, progress: bool = True,
                       unprocessed_folder: str | os.PathLike | None = None,
                       part: CasePart | None = None) -> FolderPredictionReport:
        """Predict the cases of ``input_folder`` (``part``'s share, default all) as ``{case}{file_ending}``."""
        cases, listing_problems = cases_of_part(input_folder, self.model.num_input_channels, part)
        report = self.predict_cases(cases, output_folder, with_probabilities, overwrite, progress, unprocessed_folder)
        report.skipped = {**listing_problems, **report.skipped}
        return report
