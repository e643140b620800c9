"""Training log (``training_log.txt``) and progress plot (``progress.png``), redrawn as training goes."""
from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from cctrnet.training.progress_panels import plot_progress


class ProgressLog:
    """Per-iteration scalars (losses, learning rates, pseudo-label Dice) kept for the plot and checkpoints."""

    def __init__(self, output_folder: Path, writes: bool = True):
        self.output_folder = Path(output_folder)
        self.writes = writes  # False on the ranks other than 0 of a data-parallel run
        self.history: dict[str, list[tuple[int, float]]] = defaultdict(list)

    def record(self, iteration: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.history[key].append((iteration, float(value)))

    def write_line(self, text: str) -> None:
        if not self.writes:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.output_folder / "training_log.txt", "a") as f:
            f.write(f"{stamp} {text}\n")

    def state_dict(self) -> dict[str, Any]:
        return {k: [list(p) for p in v] for k, v in self.history.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = defaultdict(list, {k: [(int(i), float(v)) for i, v in pts] for k, pts in state.items()})

    def plot(self) -> None:
        """``progress.png``: the panels of :func:`cctrnet.training.progress_panels.plot_progress`."""
        if not self.writes:
            return
        plot_progress(self.history, self.output_folder / "progress.png")
