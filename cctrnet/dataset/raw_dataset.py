"""Finding a raw dataset by id or name, and listing its cases and their files.

Layout (nnU-Net v2 conventions)::

    DatasetXXX_Name/
        dataset.json
        imagesTr/{case}_{channel:04d}{file_ending}
        labelsTr/{case}{file_ending}          # a case without a label file is unlabeled
        imagesVal/{case}_{channel:04d}{file_ending}   # optional validation part (our extension)
        labelsVal/{case}{file_ending}
        imagesTs/{case}_{channel:04d}{file_ending}
        labelsTs/{case}{file_ending}          # optional
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cctrnet.dataset.dataset_json import load_dataset_json
from cctrnet.paths import describe_root, root_kind

_DATASET_FOLDER = re.compile(r"^Dataset(\d{3})_(.+)$")


class DatasetNotFoundError(LookupError):
    """No raw dataset matches the identifier; the message lists what exists and where we looked."""


@dataclass
class RawCase:
    """One case of a raw dataset: its channel files and, when labeled, its label file."""

    case_id: str
    image_files: list[Path]
    label_file: Path | None = None

    @property
    def is_labeled(self) -> bool:
        return self.label_file is not None


@dataclass
class RawDataset:
    """A raw dataset folder with its dataset.json loaded."""

    folder: Path
    dataset_json: dict[str, Any] = field(repr=False)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def dataset_id(self) -> int | None:
        match = _DATASET_FOLDER.match(self.folder.name)
        return int(match.group(1)) if match else None

    @property
    def file_ending(self) -> str:
        return self.dataset_json["file_ending"]

    @property
    def num_channels(self) -> int:
        return len(self.dataset_json["channel_names"])

    def training_cases(self) -> list[RawCase]:
        return list_cases(self.folder / "imagesTr", self.folder / "labelsTr", self.file_ending, self.num_channels)

    def validation_cases(self) -> list[RawCase]:
        """The dataset's own validation part (``imagesVal``/``labelsVal``); empty when it has none."""
        return list_cases(self.folder / "imagesVal", self.folder / "labelsVal", self.file_ending, self.num_channels)

    def test_cases(self) -> list[RawCase]:
        return list_cases(self.folder / "imagesTs", self.folder / "labelsTs", self.file_ending, self.num_channels)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "RawDataset":
        folder = Path(folder)
        return cls(folder, load_dataset_json(folder / "dataset.json"))


def dataset_folder_name(dataset_id: int, name: str) -> str:
    return f"Dataset{int(dataset_id):03d}_{name}"


def available_datasets(raw_root: Path) -> list[str]:
    if not raw_root.is_dir():
        return []
    return sorted(p.name for p in raw_root.iterdir() if p.is_dir() and _DATASET_FOLDER.match(p.name))


def find_dataset_folder(identifier: str | int, raw_root: Path) -> Path:
    """Resolve ``1``, ``"1"``, ``"001"``, ``"Dataset001_Heart"`` or a path to a dataset folder under ``raw_root``
    (the raw or the preprocessed folder: the error names the one it looked in and how it was chosen)."""
    text = str(identifier)
    as_path = Path(text)
    if as_path.is_dir() and (as_path / "dataset.json").exists():
        return as_path.resolve()
    candidates = available_datasets(raw_root)
    if text.isdigit():
        matches = [c for c in candidates if int(_DATASET_FOLDER.match(c).group(1)) == int(text)]
    else:
        matches = [c for c in candidates if c == text]
    if len(matches) == 1:
        return raw_root / matches[0]
    if len(matches) > 1:
        raise DatasetNotFoundError(f"dataset id {text} is ambiguous in {raw_root}: {', '.join(matches)}")
    listing = ", ".join(candidates) if candidates else "none"
    kind = root_kind(raw_root)
    raise DatasetNotFoundError(
        f"no {kind + ' ' if kind else ''}dataset '{text}' found.\n  looked in: {describe_root(raw_root)}\n"
        f"  datasets there: {listing}"
    )


def list_cases(images_folder: Path, labels_folder: Path, file_ending: str, num_channels: int) -> list[RawCase]:
    """Group channel files by case; a case's label is ``labels_folder/{case}{file_ending}`` if it exists.

    Files whose names do not follow ``{case}_{XXXX}{file_ending}`` are ignored here; the integrity
    check reports them.
    """
    if not images_folder.is_dir():
        return []
    pattern = re.compile(r"^(.+)_(\d{4})" + re.escape(file_ending) + "$")
    channels: dict[str, dict[int, Path]] = {}
    for path in sorted(images_folder.iterdir()):
        match = pattern.match(path.name)
        if match:
            channels.setdefault(match.group(1), {})[int(match.group(2))] = path
    cases = []
    for case_id, files in sorted(channels.items()):
        label = labels_folder / f"{case_id}{file_ending}"
        ordered = [files[c] for c in range(num_channels) if c in files]
        cases.append(RawCase(case_id, ordered, label if label.exists() else None))
    return cases
