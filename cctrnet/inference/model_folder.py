"""Trained model folders: their layout, finding one without arguments, and loading its networks.

Layout written by the trainer (one folder per run)::

    cctr_results/DatasetXXX_Name/<Trainer>__labeled<N>__seed<S>/    # N: labeled cases, or "all"
        plans.json  dataset.json  config.json
        checkpoint_final.pth  and/or  checkpoint_latest.pth
        postprocessing.json   (optional: connected-component rules, cctrnet.postprocessing)

``config.json`` names the branches present (``"branches"``) and their architectures (``"architectures"``),
which may differ from the plan's (the CPS trainer's branch B is a second U-Net). A checkpoint holds
``{"network_weights": {branch name: state_dict}}``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cctrnet.paths import describe_root
from cctrnet.utilities.file_io import load_json

CHECKPOINT_CHOICES = ("final", "latest")
REQUIRED_FILES = ("plans.json", "dataset.json", "config.json")
_RUN_FOLDER = re.compile(r"^(?P<trainer>.+)__labeled(?P<labeled>\d+|all)__seed(?P<seed>-?\d+)$")
_DATASET_FOLDER = re.compile(r"^Dataset(\d{3})_(.+)$")


class ModelFolderError(LookupError):
    """No usable model folder, or several where one was expected; the message says what to do."""


def model_folder_name(trainer: str, labeled: int | str, seed: int) -> str:
    """``CCTRTrainer__labeled3__seed0``; ``labeled`` is a number of cases or ``"all"``."""
    return f"{trainer}__labeled{labeled}__seed{seed}"


def checkpoint_file_name(checkpoint: str) -> str:
    if checkpoint not in CHECKPOINT_CHOICES:
        raise ValueError(f"checkpoint must be one of {CHECKPOINT_CHOICES}, got {checkpoint!r}")
    return f"checkpoint_{checkpoint}.pth"


@dataclass
class ModelFolder:
    """A trained run's folder with its contract files loaded."""

    path: Path
    plans: dict[str, Any] = field(repr=False)
    dataset_json: dict[str, Any] = field(repr=False)
    config: dict[str, Any] = field(repr=False)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ModelFolder":
        path = Path(path)
        if not path.is_dir():
            raise ModelFolderError(f"{path}: model folder does not exist")
        missing = [name for name in REQUIRED_FILES if not (path / name).exists()]
        if missing:
            raise ModelFolderError(f"{path}: not a trained model folder, {', '.join(missing)} missing")
        folder = cls(path, load_json(path / "plans.json"), load_json(path / "dataset.json"),
                     load_json(path / "config.json"))
        unknown = [b for b in folder.branch_names if b not in folder.architectures]
        if not folder.branch_names or unknown:
            raise ModelFolderError(f"{path / 'config.json'}: 'branches' {folder.branch_names} need an entry each "
                                   f"in 'architectures' (missing: {unknown or 'no branch listed'})")
        return folder

    # --- what the run is --------------------------------------------------------------------------
    @property
    def dataset_name(self) -> str:
        return self.path.parent.name

    @property
    def run_name(self) -> str:
        return self.path.name

    @property
    def run_fields(self) -> dict[str, str] | None:
        """``{"trainer", "labeled", "seed"}`` parsed from the folder name, None when it has another form."""
        match = _RUN_FOLDER.match(self.path.name)
        return match.groupdict() if match else None

    @property
    def configuration(self) -> dict[str, Any]:
        return self.plans["configurations"]["2d"]

    @property
    def branch_names(self) -> list[str]:
        return list(self.config.get("branches", []))

    @property
    def architectures(self) -> dict[str, Any]:
        """Branch name -> architecture entry: config.json's, else the plan's entry of that name."""
        stored = self.config.get("architectures") or {}
        return {name: stored.get(name, self.configuration.get(name)) for name in self.branch_names
                if stored.get(name, self.configuration.get(name)) is not None}

    @property
    def label_values(self) -> list[int]:
        """Label values in network output order (class index i predicts the i-th smallest value)."""
        return sorted(int(v) for v in self.dataset_json["labels"].values())

    @property
    def num_input_channels(self) -> int:
        return len(self.dataset_json["channel_names"])

    @property
    def file_ending(self) -> str:
        return self.dataset_json["file_ending"]

    def checkpoint_path(self, checkpoint: str = "final") -> Path:
        return self.path / checkpoint_file_name(checkpoint)

    def available_checkpoints(self) -> list[str]:
        return [c for c in CHECKPOINT_CHOICES if self.checkpoint_path(c).exists()]

    def describe(self) -> str:
        checkpoints = ", ".join(self.available_checkpoints()) or "no checkpoint"
        return f"{self.dataset_name}/{self.run_name} ({checkpoints})"

    # --- networks ----------------------------------------------------------------------------------
    def load_networks(self, device: Any, checkpoint: str = "final") -> dict[str, Any]:
        """Every branch as an eval-mode ``SegmentationBranch`` on ``device``, weights from the checkpoint."""
        import torch

        from cctrnet.networks.branch import SegmentationBranch

        path = self.checkpoint_path(checkpoint)
        if not path.exists():
            have = self.available_checkpoints()
            hint = f"; available: {', '.join(have)} (use --checkpoint {have[0]})" if have else \
                "; the run saved no checkpoint yet"
            raise ModelFolderError(f"{path}: checkpoint '{checkpoint}' does not exist{hint}")
        try:
            saved = torch.load(path, map_location=device, weights_only=True)
        except Exception as error:  # a truncated or foreign file: say which one
            raise ModelFolderError(f"{path}: cannot be loaded as a checkpoint ({error})") from error
        weights = saved.get("network_weights", {}) if isinstance(saved, dict) else {}
        missing = [b for b in self.branch_names if b not in weights]
        if missing:
            raise ModelFolderError(f"{path}: no weights for branch(es) {missing} (found: {sorted(weights)})")
        networks = {}
        for name in self.branch_names:
            branch = SegmentationBranch(self.architectures[name], self.num_input_channels, len(self.label_values))
            try:
                branch.load_state_dict(weights[name])
            except RuntimeError as error:
                raise ModelFolderError(f"{path}: weights of {name} do not fit its architecture in config.json "
                                       f"({str(error).splitlines()[0]})") from error
            networks[name] = branch.to(device).eval()
        return networks


def _matches_dataset(folder_name: str, dataset: str | int | None) -> bool:
    if dataset is None:
        return True
    text = str(dataset)
    match = _DATASET_FOLDER.match(folder_name)
    if text.isdigit():
        return bool(match) and int(match.group(1)) == int(text)
    return folder_name == text or (bool(match) and match.group(2) == text)


def discover_model_folders(results_root: Path, dataset: str | int | None = None, trainer: str | None = None,
                           labeled: int | str | None = None, seed: int | None = None) -> list[ModelFolder]:
    """Every trained model folder under ``results_root`` that has a checkpoint and fits the filters."""
    results_root = Path(results_root)
    if not results_root.is_dir():
        return []
    found = []
    for dataset_folder in sorted(p for p in results_root.iterdir() if p.is_dir()):
        if not _matches_dataset(dataset_folder.name, dataset):
            continue
        for run_folder in sorted(p for p in dataset_folder.iterdir() if p.is_dir()):
            if not all((run_folder / name).exists() for name in REQUIRED_FILES):
                continue
            if not any((run_folder / checkpoint_file_name(c)).exists() for c in CHECKPOINT_CHOICES):
                continue
            match = _RUN_FOLDER.match(run_folder.name)
            if trainer is not None and (not match or match.group("trainer") != trainer):
                continue
            if labeled is not None and (not match or match.group("labeled") != str(labeled)):
                continue
            if seed is not None and (not match or int(match.group("seed")) != int(seed)):
                continue
            found.append(ModelFolder.load(run_folder))
    return found


def find_model_folder(results_root: Path, dataset: str | int | None = None, trainer: str | None = None,
                      labeled: int | str | None = None, seed: int | None = None,
                      model_folder: str | os.PathLike | None = None) -> ModelFolder:
    """The one model folder the arguments point to; otherwise an error that lists the candidates."""
    if model_folder is not None:
        return ModelFolder.load(model_folder)
    candidates = discover_model_folders(results_root, dataset, trainer, labeled, seed)
    if len(candidates) == 1:
        return candidates[0]
    filters = _describe_filters(dataset, trainer, labeled, seed)
    if not candidates:
        everything = discover_model_folders(results_root)
        if everything:
            listing = "\n".join(f"  {m.describe()}" for m in everything)
            raise ModelFolderError(f"no trained model in {describe_root(results_root)} matches {filters}; "
                                   f"trained models:\n{listing}")
        raise ModelFolderError(f"no trained model found in {describe_root(results_root)}.\n  {_how_to_train(dataset)}, "
                               "or point to a model folder with -m FOLDER (documentation/prediction.md)")
    listing = "\n".join(f"  {m.describe()}" for m in candidates)
    raise ModelFolderError(
        f"{len(candidates)} trained models in {describe_root(results_root)} match {filters}:\n{listing}\n"
        "  choose one with -d DATASET (and -tr TRAINER, --labeled N, --seed S), or -m MODEL_FOLDER")


def _how_to_train(dataset: str | int | None) -> str:
    """A command that trains a model: for a dataset already prepared, else the preparation first."""
    from cctrnet import paths
    from cctrnet.dataset.raw_dataset import available_datasets

    preprocessed = paths.preprocessed_folder()
    prepared = available_datasets(preprocessed)
    if dataset is not None:
        return f"train one first: cctr_train {dataset} (after cctr_plan_and_preprocess -d {dataset} if not yet done)"
    if prepared:
        number = int(prepared[0][len("Dataset"):len("Dataset") + 3])
        return (f"train one first, e.g.: cctr_train {number} (prepared datasets in "
                f"{paths.describe_root(preprocessed)}: {', '.join(prepared)})")
    return ("no dataset is prepared either: prepare one with: cctr_plan_and_preprocess -d DATASET; then train it "
            "with: cctr_train DATASET")


def _describe_filters(dataset: Any, trainer: Any, labeled: Any, seed: Any) -> str:
    parts = [f"{name}={value}" for name, value in
             (("dataset", dataset), ("trainer", trainer), ("labeled", labeled), ("seed", seed)) if value is not None]
    return "the filters " + ", ".join(parts) if parts else "no filter"

