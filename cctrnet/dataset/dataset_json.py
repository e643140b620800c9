"""The raw dataset's contract file ``dataset.json``: reading, checking and writing it.

Keys follow nnU-Net v2: ``channel_names`` ({"0": "MRI"}), ``labels`` (name -> int, background 0),
``numTraining``, ``file_ending``; ``name`` and ``description`` are optional, and so is ``patients``
(patient id -> its case ids, see ``cctrnet.dataset.patients``).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

from cctrnet.dataset.patients import PATIENTS_KEY, patients_problems
from cctrnet.utilities.file_io import load_json, save_json

REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")


def dataset_json_problems(content: Any, path: str | os.PathLike = "dataset.json") -> list[str]:
    """Every problem of a loaded dataset.json, each message naming the file; empty when valid.

    A key that is present is checked whatever its value (``"labels": null`` is a problem, not a missing check).
    """
    problems: list[str] = []
    if not isinstance(content, dict):
        return [f"{path}: must hold a JSON object, found {type(content).__name__}"]
    missing = [k for k in REQUIRED_KEYS if k not in content]
    if missing:
        problems.append(f"{path}: missing key(s) {', '.join(missing)} (required: {', '.join(REQUIRED_KEYS)})")
    if "channel_names" in content:
        channels = content["channel_names"]
        if not isinstance(channels, dict) or not channels:
            problems.append(f'{path}: "channel_names" must be a non-empty object such as {{"0": "MRI"}}, '
                            f"found {_shown(channels)}")
        else:
            keys = sorted(channels)
            if not all(_CHANNEL_KEY.match(k) for k in keys) or sorted(int(k) for k in keys) != list(range(len(keys))):
                problems.append(f'{path}: "channel_names" keys must be "0", "1", ... without gaps, found {keys}')
            bad = {k: v for k, v in channels.items() if not isinstance(v, str) or not v.strip()}
            if bad:
                problems.append(f'{path}: "channel_names" values must be modality names such as "MRI" or "CT", '
                                f"found {_shown(bad)}")
    if "labels" in content:
        labels = content["labels"]
        if not isinstance(labels, dict) or not labels:
            problems.append(f'{path}: "labels" must be a non-empty object mapping names to integers, '
                            f"found {_shown(labels)}")
        else:
            values = list(labels.values())
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                problems.append(f'{path}: "labels" values must be integers, found {_shown(values)} '
                                "(region-based labels are not supported)")
            else:
                if 0 not in values:
                    problems.append(f'{path}: "labels" must map a name (usually "background") to 0')
                if len(set(values)) != len(values):
                    problems.append(f'{path}: "labels" maps two names to the same value: {_shown(labels)}')
                if sorted(values) != list(range(len(values))):
                    problems.append(f'{path}: "labels" values must be consecutive 0..{len(values) - 1}, '
                                    f"found {_shown(sorted(values))}")
            if any(not isinstance(name, str) or not name.strip() for name in labels):
                problems.append(f'{path}: "labels" has an empty name: {_shown(labels)}')
    if "numTraining" in content:
        num_training = content["numTraining"]
        if not isinstance(num_training, int) or isinstance(num_training, bool) or num_training < 1:
            problems.append(f'{path}: "numTraining" must be a positive integer, found {_shown(num_training)}')
    if "file_ending" in content:
        file_ending = content["file_ending"]
        if not isinstance(file_ending, str) or not _FILE_ENDING.match(file_ending):
            problems.append(f'{path}: "file_ending" must be a string such as ".nii.gz", found {_shown(file_ending)}')
    for key in ("name", "description"):
        if key in content and not isinstance(content[key], str):
            problems.append(f'{path}: "{key}" must be a string, found {_shown(content[key])}')
    if PATIENTS_KEY in content:
        problems.extend(patients_problems(content[PATIENTS_KEY], path))
    return problems


_CHANNEL_KEY = re.compile(r"^[0-9]+$")  # ASCII digits only: "²" and "٣" are digits to str.isdigit but not channels
_FILE_ENDING = re.compile(r"^(\.[A-Za-z0-9]+)+$")


def _shown(value: Any, limit: int = 120) -> str:
    """``repr`` of a value from the file, shortened so that one problem stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_dataset_json(path: str | os.PathLike) -> dict[str, Any]:
    """Load and check a dataset.json; raises ValueError listing every problem."""
    path = Path(path)
    try:
        content = load_json(path)
    except FileNotFoundError:
        raise ValueError(f"{path}: not found (every raw dataset needs a dataset.json)") from None
    except ValueError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    except OSError as error:
        raise ValueError(f"{path}: cannot be read ({error.strerror or error})") from None
    problems = dataset_json_problems(content, path)
    if problems:
        raise ValueError("\n".join(problems))
    return content


def write_dataset_json(
    dataset_folder: str | os.PathLike,
    channel_names: Mapping[int | str, str],
    labels: Mapping[str, int],
    num_training: int,
    file_ending: str = ".nii.gz",
    **extra: Any,
) -> Path:
    """Write ``dataset_folder/dataset.json`` (atomically) and return its path."""
    content: dict[str, Any] = {
        "channel_names": {str(k): v for k, v in channel_names.items()},
        "labels": dict(labels),
        "numTraining": int(num_training),
        "file_ending": file_ending,
    }
    content.update(extra)
    problems = dataset_json_problems(content)
    if problems:
        raise ValueError("\n".join(problems))
    path = Path(dataset_folder) / "dataset.json"
    save_json(content, path)
    return path


def num_classes(dataset_json: Mapping[str, Any]) -> int:
    return len(dataset_json["labels"])


def is_ct_channel(channel_name: str) -> bool:
    """CT is detected by channel name, as in nnU-Net ("CT", "ct", "CT_abdomen" ...)."""
    return channel_name.strip().lower().startswith("ct")
