"""The registration-only baseline (METHOD.md §8): segment a new image with a labeled training case's label.

For each new image, preprocessed with the training plan: register it with every labeled training case
("atlas") in both directions with the registration stage's default engine (torch; SimpleITK's by choice), choose the atlas by BRS (cycle RMSE and
mutual information, :mod:`cctrnet.registration.brs`), warp that atlas's label onto the image (nearest
neighbour; where the warp leaves the atlas the label is background), and put it back on the input grid.
No network is involved.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cctrnet.dataset.geometry import Geometry
from cctrnet.dataset.image_io import read_case_images, write_image
from cctrnet.inference.parts import CasePart
from cctrnet.inference.predictor import FolderPredictionReport, cases_of_part, predict_each_case
from cctrnet.preprocessing.preprocessor import preprocess_arrays
from cctrnet.preprocessing.revert import label_to_raw
from cctrnet.registration.brs import mutual_information, select_labeled
from cctrnet.registration.settings import RegistrationSettings
from cctrnet.registration.transforms import resample

_NEW_IMAGE = "new_image"
LABELED_CASES_JSON = "labeled_cases.json"  # in a model folder: {"labeled": [case ids], ...}


class RegistrationOnlyError(RuntimeError):
    """The baseline cannot run (no preprocessed dataset, no labeled case); the message says what to do."""


@dataclass
class Atlas:
    """A labeled training case on its preprocessed grid: the registered channel and its label."""

    case_id: str
    image_zyx: np.ndarray
    label_zyx: np.ndarray
    geometry: Geometry


@dataclass
class Propagation:
    """The label carried onto one new image, and which atlas it came from."""

    label_zyx: np.ndarray
    atlas_id: str
    failed_atlases: dict[str, str]


def register(fixed_zyx: np.ndarray, fixed_geometry: Geometry, moving_zyx: np.ndarray, moving_geometry: Geometry,
             method: str, settings: RegistrationSettings, names: tuple[str, str],
             engine: str = "torch") -> tuple[Any | None, str | None]:
    """(fixed -> moving transform, None) or (None, reason), with ``engine`` where the method allows a choice."""
    from cctrnet.registration.single_pair import register_pair, result_transform

    result = register_pair(fixed_zyx, fixed_geometry, moving_zyx, moving_geometry, method, settings, names,
                           engine=engine)
    return (result_transform(result), None) if result.ok else (None, result.reason or "failed")


def cycle_scores(image_zyx: np.ndarray, geometry: Geometry, atlas: Atlas, to_atlas: Any, from_atlas: Any,
                 settings: RegistrationSettings) -> dict[str, float]:
    """{"rmse", "mi"} of the image against itself carried onto the atlas grid and back (BRS's cycle)."""
    on_atlas = resample(image_zyx, geometry, atlas.geometry, to_atlas)
    cycle = resample(on_atlas, atlas.geometry, geometry, from_atlas)
    inside_atlas = resample(np.ones(geometry.shape_zyx, np.uint8), geometry, atlas.geometry, to_atlas, nearest=True)
    inside = resample(inside_atlas, atlas.geometry, geometry, from_atlas, nearest=True).astype(bool)
    if not inside.any():
        return {"rmse": float("nan"), "mi": float("nan")}
    difference = cycle[inside].astype(np.float64) - image_zyx[inside]
    return {"rmse": float(np.sqrt(np.mean(difference ** 2))),
            "mi": mutual_information(cycle[inside], image_zyx[inside], settings.brs_histogram_bins)}


def propagate_label(image_zyx: np.ndarray, geometry: Geometry, atlases: Sequence[Atlas], method: str = "affine",
                    settings: RegistrationSettings | None = None, engine: str = "torch") -> Propagation:
    """The BRS-chosen atlas's label on the image's grid; ValueError when no atlas registers."""
    settings = settings or RegistrationSettings()
    from_atlas: dict[str, Any] = {}
    failed: dict[str, str] = {}
    scores: dict[str, dict[str, float]] = {}
    for atlas in atlases:
        # atlas moving onto the image: resamples the atlas's label onto the image grid
        backward, reason = register(image_zyx, geometry, atlas.image_zyx, atlas.geometry, method, settings,
                                    (atlas.case_id, _NEW_IMAGE), engine)
        if backward is None:
            failed[atlas.case_id] = reason or "failed"
            continue
        from_atlas[atlas.case_id] = backward
        if len(atlases) == 1:
            break  # BRS with one candidate: that candidate, no cycle needed
        forward, reason = register(atlas.image_zyx, atlas.geometry, image_zyx, geometry, method, settings,
                                   (_NEW_IMAGE, atlas.case_id), engine)
        if forward is None:
            failed[atlas.case_id] = f"reverse registration: {reason}"
            continue
        scores[atlas.case_id] = cycle_scores(image_zyx, geometry, atlas, forward, backward, settings)
    if len(atlases) == 1:
        chosen = next(iter(from_atlas), None)
    else:
        chosen = select_labeled({_NEW_IMAGE: scores}, _NEW_IMAGE, sorted(scores), settings)
    if chosen is None:
        reasons = "; ".join(f"{k}: {v}" for k, v in failed.items()) or "no usable cycle score"
        raise ValueError(f"no labeled case could be registered to the image ({reasons})")
    atlas = next(a for a in atlases if a.case_id == chosen)
    label = resample(atlas.label_zyx.astype(np.int16), atlas.geometry, geometry, from_atlas[chosen], nearest=True,
                     default_value=0)
    return Propagation(label.astype(np.int16), chosen, failed)


class RegistrationOnlyPredictor:
    """Segments raw images by registering labeled training cases to them (no network)."""

    def __init__(self, configuration: dict[str, Any], label_values: Sequence[int], atlases: Sequence[Atlas],
                 file_ending: str, method: str = "affine", settings: RegistrationSettings | None = None,
                 engine: str = "torch"):
        if not atlases:
            raise RegistrationOnlyError("the registration-only baseline needs at least one labeled training case")
        self.configuration = configuration
        self.label_values = sorted(int(v) for v in label_values)
        self.atlases = list(atlases)
        self.file_ending = file_ending
        self.method = method
        self.engine = engine
        self.settings = settings or RegistrationSettings()
        self.chosen_atlas: dict[str, str] = {}

    def predict_case(self, image_files: Sequence[str | os.PathLike], output_file: str | os.PathLike) -> np.ndarray:
        """Write the propagated label of one case on its input grid; returns it."""
        data, raw_geometry = read_case_images(image_files)
        data, _, properties = preprocess_arrays(data, None, raw_geometry, self.configuration, self.label_values)
        geometry = Geometry.from_dict(properties["geometry_preprocessed"])
        propagation = propagate_label(data[self.settings.channel], geometry, self.atlases, self.method, self.settings,
                                      self.engine)
        self.chosen_atlas[Path(output_file).name] = propagation.atlas_id
        label = label_to_raw(propagation.label_zyx, properties, self.label_values)
        dtype = np.uint8 if max(self.label_values) < 256 else np.int16
        write_image(label.astype(dtype), raw_geometry, output_file)
        return label

    def predict_folder(self, input_folder: str | os.PathLike, output_folder: str | os.PathLike,
                       overwrite: bool = True, progress: bool = True,
                       part: CasePart | None = None) -> FolderPredictionReport:
        """``part``'s share of the input cases (default all), as ``Predictor.predict_folder``."""
        num_channels = len(self.configuration["normalization"])
        cases, problems = cases_of_part(input_folder, num_channels, part)
        report = predict_each_case(cases, output_folder, self.file_ending, self.predict_case, overwrite, progress)
        report.skipped = {**problems, **report.skipped}
        return report


def load_atlases(data_folder: Path, case_ids: Sequence[str], channel: int = 0) -> list[Atlas]:
    """The preprocessed labeled cases ``case_ids`` of a training data folder."""
    from cctrnet.registration.volumes import load_label, load_volume

    atlases = []
    for case_id in case_ids:
        image, geometry = load_volume(data_folder, case_id, channel)
        label, _ = load_label(data_folder, case_id)
        if label is None:
            raise RegistrationOnlyError(f"{Path(data_folder) / case_id}: preprocessed case has no label")
        atlases.append(Atlas(case_id, image, label, geometry))
    return atlases


def predict_folder_by_registration(input_folder: Path, output_folder: Path, dataset: str | None,
                                   labeled: str | None, model_folder: str | None = None, seed: int | None = None,
                                   progress: bool = True, overwrite: bool = True,
                                   method: str = "affine", part: CasePart | None = None,
                                   engine: str = "torch") -> FolderPredictionReport:
    """``cctr_predict --reg-only``: find the preprocessed dataset and its labeled set, then predict a folder."""
    from cctrnet import paths
    from cctrnet.dataset.labeled_selection import select_labeled_cases
    from cctrnet.dataset.patients import patient_of_case
    from cctrnet.inference.model_folder import ModelFolder
    from cctrnet.preprocessing.case_storage import list_preprocessed_cases, load_properties
    from cctrnet.utilities.file_io import load_json

    run_labeled_cases = None
    if model_folder is not None:  # the model's dataset and its labeled set
        model = ModelFolder.load(model_folder)
        run = model.run_fields or {}
        dataset = dataset or model.dataset_name
        labeled = labeled if labeled is not None else run.get("labeled")
        seed = seed if seed is not None else int(run.get("seed", 0))
        if (model.path / LABELED_CASES_JSON).exists():  # written by the trainer: the run's exact choice
            run_labeled_cases = load_json(model.path / LABELED_CASES_JSON)["labeled"]
    preprocessed_root = paths.preprocessed_folder()
    dataset_folder = _find_preprocessed_dataset(preprocessed_root, dataset)
    plans_path = dataset_folder / paths.PLANS_JSON
    if not plans_path.exists():
        raise RegistrationOnlyError(f"{plans_path}: no plan (run cctr_plan_and_preprocess -d {dataset_folder.name})")
    plans = load_json(plans_path)
    dataset_json = load_json(dataset_folder / paths.DATASET_JSON)
    configuration = plans["configurations"]["2d"]
    data_folder = dataset_folder / configuration["data_identifier"]
    cases = list_preprocessed_cases(data_folder) if data_folder.is_dir() else []
    with_labels = [c for c in cases if load_properties(data_folder, c).get("is_labeled")]
    if not with_labels:
        raise RegistrationOnlyError(f"{data_folder}: no preprocessed labeled training case "
                                    f"(run cctr_plan_and_preprocess -d {dataset_folder.name})")
    if run_labeled_cases is not None:
        missing = sorted(set(run_labeled_cases) - set(with_labels))
        if missing:
            raise RegistrationOnlyError(f"{data_folder}: labeled case(s) {', '.join(missing)} of the run are not "
                                        "preprocessed with labels")
        chosen = sorted(run_labeled_cases)
    else:
        try:
            number = None if labeled in (None, "all") else int(labeled)
            chosen = select_labeled_cases(with_labels, number, seed or 0, patient_of_case(dataset_json))
        except ValueError as error:
            raise RegistrationOnlyError(str(error)) from None
    settings = RegistrationSettings()
    shown = method if method == "affine_deformable" else f"{method}, {engine} engine"
    print(f"registration-only ({shown}): {dataset_folder.name}, labeled case(s) {', '.join(chosen)}")
    predictor = RegistrationOnlyPredictor(configuration, sorted(dataset_json["labels"].values()),
                                          load_atlases(data_folder, chosen, settings.channel),
                                          dataset_json["file_ending"], method, settings, engine)
    return predictor.predict_folder(input_folder, output_folder, overwrite, progress, part)


def _find_preprocessed_dataset(root: Path, dataset: str | None) -> Path:
    from cctrnet.dataset.raw_dataset import DatasetNotFoundError, available_datasets, find_dataset_folder
    from cctrnet.paths import describe_root

    if dataset is None:
        found = available_datasets(root)
        if len(found) == 1:
            return root / found[0]
        listing = ", ".join(found) or "none"
        raise RegistrationOnlyError(f"--reg-only needs -d DATASET: preprocessed datasets in {describe_root(root)}: "
                                    f"{listing}")
    try:
        return find_dataset_folder(dataset, root)
    except DatasetNotFoundError as error:
        raise RegistrationOnlyError(str(error)) from None
