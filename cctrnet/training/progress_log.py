"""Training log (``training_log.txt``) and progress plot (``progress.png``), redrawn as training goes."""
from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from cctrnet.utilities.file_io import atomic_path


class ProgressLog:
    """Per-iteration scalars (losses, learning rates, pseudo-label Dice) kept for the plot and checkpoints."""

    def __init__(self, output_folder: Path):
        self.output_folder = Path(output_folder)
        self.history: dict[str, list[tuple[int, float]]] = defaultdict(list)

    def record(self, iteration: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.history[key].append((iteration, float(value)))

    def write_line(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.output_folder / "training_log.txt", "a") as f:
            f.write(f"{stamp} {text}\n")

    def state_dict(self) -> dict[str, Any]:
        return {k: [list(p) for p in v] for k, v in self.history.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = defaultdict(list, {k: [(int(i), float(v)) for i, v in pts] for k, pts in state.items()})

    def plot(self) -> None:
        """Three panels: loss terms, learning rates and weights, pseudo-label Dice (when known)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        groups = {
            "losses": [k for k in self.history if k.startswith("loss")],
            "learning rates and weights": [k for k in self.history if k.startswith(("lr", "w_"))],
            "pseudo-label Dice on unlabeled slices (hidden truth)": [k for k in self.history if k.startswith("dice")],
        }
        groups = {title: keys for title, keys in groups.items() if keys}
        if not groups:
            return
        figure, axes = plt.subplots(len(groups), 1, figsize=(9, 3.2 * len(groups)), squeeze=False)
        for axis, (title, keys) in zip(axes[:, 0], groups.items()):
            for key in sorted(keys):
                points = self.history[key]
                axis.plot([p[0] for p in points], [p[1] for p in points], label=key, linewidth=1)
            axis.set_title(title)
            axis.set_xlabel("iteration")
            if title.startswith("losses"):
                axis.set_yscale("log")
            axis.legend(fontsize=7, ncol=3)
            axis.grid(alpha=0.3)
        figure.tight_layout()
        with atomic_path(self.output_folder / "progress.png") as tmp:
            figure.savefig(tmp, dpi=90)
        plt.close(figure)
