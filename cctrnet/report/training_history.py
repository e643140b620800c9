"""The scalar curves of a run, read back from its ``training_log.txt`` (no torch, no checkpoint needed).

A line reads ``2026-12-01 13:21:06 it 5: loss_total 8.047, loss_sup_A 1.724, ...``; other lines (start,
finish, extensions) are kept as events. The log holds the values every ``log_every`` iterations (and the
pseudo-label Dice every ``pseudo_label_quality_every``), which is what the curves show.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_LINE = re.compile(r"^(?P<stamp>\S+ \S+) it (?P<iteration>\d+): (?P<values>.*)$")


@dataclass
class TrainingHistory:
    """key -> [(iteration, value)], plus the log's other lines (with their time stamps)."""

    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    unreadable_lines: int = 0

    @property
    def last_iteration(self) -> int | None:
        return max((points[-1][0] for points in self.curves.values() if points), default=None)


def parse_training_log(path: Path) -> TrainingHistory:
    """The curves and events of ``path``; a value that is not a number is skipped and counted."""
    history = TrainingHistory()
    for line in Path(path).read_text(errors="replace").splitlines():
        match = _LINE.match(line.strip())
        if match is None:
            if line.strip():
                history.events.append(line.strip())
            continue
        iteration = int(match["iteration"])
        for item in match["values"].split(","):
            words = item.split()
            if len(words) != 2:
                history.unreadable_lines += 1
                continue
            try:
                history.curves.setdefault(words[0], []).append((iteration, float(words[1])))
            except ValueError:
                history.unreadable_lines += 1
    return history
