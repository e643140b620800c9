"""Finding the cases of an input folder: channel files ``{case}_{XXXX}{ending}`` in any SimpleITK format.

For a one-channel model a file without the channel suffix is a case of its own (``patient7.nii.gz``), and
so are numbered files that lack a ``_0000`` sibling (``scan_0003.mha`` alone). A case whose channels do not
match the model's is reported by name, not guessed at.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from cctrnet.dataset.image_io import SUPPORTED_FILE_ENDINGS, file_ending_of

_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass
class InputCase:
    """One case to predict: its channel files in channel order."""

    case_id: str
    image_files: list[Path]


def image_files(folder: Path) -> list[Path]:
    """Files of ``folder`` in a format SimpleITK reads (hidden files left out), sorted."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and file_ending_of(p) in SUPPORTED_FILE_ENDINGS)


def _stem(path: Path) -> str:
    return path.name[: len(path.name) - len(file_ending_of(path))]


def list_input_cases(folder: str | Path, num_channels: int) -> tuple[list[InputCase], dict[str, str]]:
    """Cases found in ``folder`` and the inputs skipped: {case id (file name where none can be read): reason}."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: input folder does not exist")
    grouped: dict[str, dict[int, list[Path]]] = {}
    singles: list[Path] = []
    for path in image_files(folder):
        match = _CHANNEL_SUFFIX.match(_stem(path))
        if match:
            grouped.setdefault(match.group("case"), {}).setdefault(int(match.group("channel")), []).append(path)
        else:
            singles.append(path)

    cases: list[InputCase] = []
    skipped: dict[str, str] = {}
    for case_id, channels in sorted(grouped.items()):
        if num_channels == 1 and 0 not in channels:
            singles.extend(p for paths in channels.values() for p in paths)
            continue
        duplicates = [p.name for paths in channels.values() if len(paths) > 1 for p in paths]
        if duplicates:
            skipped[case_id] = f"one channel in several files ({', '.join(duplicates)})"
        elif sorted(channels) != list(range(num_channels)):
            found = ", ".join(f"{c:04d}" for c in sorted(channels))
            expected = ", ".join(f"{c:04d}" for c in range(num_channels))
            skipped[case_id] = (f"wrong number of channels, found _{found.replace(', ', ', _')} but the model "
                                f"expects {num_channels} (_{expected.replace(', ', ', _')})")
        else:
            cases.append(InputCase(case_id, [channels[c][0] for c in range(num_channels)]))

    for path in sorted(singles):
        if num_channels != 1:
            case_id = _stem(path)
            skipped[path.name] = (f"no channel suffix _XXXX, but the model expects {num_channels} channels "
                                  f"({case_id}_0000 ... {case_id}_{num_channels - 1:04d})")
        else:
            cases.append(InputCase(_stem(path), [path]))
    counts = Counter(c.case_id for c in cases)
    for case_id in sorted(k for k, n in counts.items() if n > 1):
        names = ", ".join(p.name for c in cases if c.case_id == case_id for p in c.image_files)
        skipped[case_id] = f"given more than once ({names})"
    cases = sorted((c for c in cases if counts[c.case_id] == 1), key=lambda c: c.case_id)
    return cases, skipped
