"""Prediction in parts: which cases a part predicts, and when a case's output counts as complete.

Parts follow nnU-Net v2's convention (``-num_parts N -part_id i``): the cases of the input folder, sorted by
case id, are dealt out in turn, so part ``i`` takes cases ``i, i + N, i + 2N, ...``. Dealing (not contiguous
blocks) keeps the parts within one case of each other in size also when the cases are sorted by size or
site. The parts of one folder are disjoint and together hold every case, whichever machines run them.

A case is complete when every file the run asks for exists: the label map, and, when asked for, the
probabilities and the label map before post-processing. Every file is written under a temporary hidden
name and renamed (``cctrnet/utilities/file_io.py``), and the label map is written last, so a file that
exists is whole, and a killed run leaves either nothing, stray temporaries, or some of a case's files, never
a label map without the files written before it. ``--continue`` predicts every case that is not complete
and removes the temporaries a killed run left for the cases it predicts (only this part's cases, so parts
running side by side never touch each other's files).
"""
from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class CasePart:
    """Part ``part_id`` (0-based) of ``num_parts``."""

    num_parts: int = 1
    part_id: int = 0

    def __post_init__(self) -> None:
        if self.num_parts < 1:
            raise ValueError(f"-num_parts must be at least 1, got {self.num_parts}")
        if not 0 <= self.part_id < self.num_parts:
            raise ValueError(f"-part_id must be in 0 ... {self.num_parts - 1} for -num_parts {self.num_parts}, "
                             f"got {self.part_id}")

    @property
    def is_whole(self) -> bool:
        return self.num_parts == 1

    def select(self, items_sorted: Sequence[T]) -> list[T]:
        """This part's items of a sorted sequence: every ``num_parts``-th, starting at ``part_id``."""
        return list(items_sorted[self.part_id::self.num_parts])

    def split(self, num_workers: int) -> list["CasePart"]:
        """This part dealt out again among ``num_workers`` processes: worker g takes part ``i + N g`` of ``N G``.

        (``cases[i::N][g::G]`` is ``cases[i + N g :: N G]``), so the workers' cases are exactly this part's.
        """
        if num_workers < 1:
            raise ValueError(f"the number of worker processes must be at least 1, got {num_workers}")
        return [CasePart(self.num_parts * num_workers, self.part_id + self.num_parts * g) for g in range(num_workers)]

    def describe(self) -> str:
        return f"part {self.part_id} of {self.num_parts} (0-based)"


def case_is_complete(required_files: Sequence[Path]) -> bool:
    """Whether every file of a case exists (each is written atomically, so existing means whole)."""
    return all(Path(path).is_file() for path in required_files)


def remove_stale_temporaries(final_path: Path) -> list[Path]:
    """Remove what a killed atomic write of ``final_path`` left behind (``.{name}.XXXX.tmp...``); returns them."""
    final_path = Path(final_path)
    if not final_path.parent.is_dir():
        return []
    removed = []
    for stray in final_path.parent.glob(glob.escape(f".{final_path.name}.") + "*.tmp*"):
        try:
            stray.unlink()
            removed.append(stray)
        except FileNotFoundError:
            pass
    return removed
