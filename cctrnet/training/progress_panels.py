"""``progress.png``: one panel per kind of curve, so that no curve hides another on a shared axis.

Panels (each drawn when its curves exist): loss terms (log axis); learning rates (log axis: they span
orders of magnitude as they decay); loss weights and ramps; seconds per iteration (raw and a running
median); pseudo-label Dice on unlabeled slices; validation Dice (``val_*``); without a validation set, the agreement of
branch A with the registered labels (``proxy_*``, training/validation_curve.py). A loss term keeps its colour in every
branch of its panel and a branch keeps its line style (A solid, B dashed), so ``loss_cps_A`` and ``loss_cps_B`` read as
one term of two branches.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

from cctrnet.utilities.file_io import atomic_path

Points = Sequence[tuple[int, float]]
PROXY_TITLE = "agreement with the registered labels (no validation set: an unsupervised proxy, not a validation)"
BRANCH_STYLES = {"A": "-", "B": "--", "branch_a": "-", "branch_b": "--"}
PANELS: list[tuple[str, Callable[[str], bool], str]] = [
    ("losses", lambda k: k.startswith("loss"), "log"),
    ("learning rates", lambda k: k.startswith("lr_"), "log"),
    ("loss weights and ramps", lambda k: k.startswith("w_") or k == "certain_fraction", "linear"),
    ("seconds per iteration", lambda k: k == "seconds_per_iteration", "linear"),
    ("pseudo-label Dice on unlabeled slices (hidden truth)", lambda k: k.startswith("dice"), "linear"),
    ("validation Dice", lambda k: k.startswith("val_"), "linear"),
    (PROXY_TITLE, lambda k: k.startswith("proxy_"), "linear"),
]


def split_key(key: str) -> tuple[str, str]:
    """``loss_cps_B`` -> (``loss_cps``, ``B``); ``lr_branch_a`` -> (``lr``, ``branch_a``); else (key, "")."""
    for branch in ("_branch_a", "_branch_b", "_A", "_B"):
        if key.endswith(branch):
            return key[: -len(branch)], branch[1:]
    return key, ""


def panels_of(history: Mapping[str, Points]) -> list[tuple[str, list[str], str]]:
    """(title, keys, y scale) of each panel that has curves."""
    out = []
    for title, belongs, scale in PANELS:
        keys = sorted(k for k, points in history.items() if points and belongs(k))
        if keys:
            out.append((title, keys, scale))
    return out


def running_median(values: Sequence[float], window: int) -> list[float]:
    import numpy as np

    array = np.asarray(values, dtype=float)
    half = window // 2
    return [float(np.median(array[max(0, i - half): i + half + 1])) for i in range(len(array))]


def plot_progress(history: Mapping[str, Points], path: Path) -> dict[str, tuple[str, object, str]]:
    """Draw the panels into ``path``; returns, per curve, (panel title, colour, line style)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = panels_of(history)
    drawn: dict[str, tuple[str, object, str]] = {}
    if not panels:
        return drawn
    palette = plt.get_cmap("tab10").colors  # ten well separated colours; a panel rarely holds more terms
    figure, axes = plt.subplots(len(panels), 1, figsize=(9, 2.8 * len(panels)), squeeze=False, sharex=True)
    for axis, (title, keys, scale) in zip(axes[:, 0], panels):
        terms = sorted({split_key(k)[0] for k in keys})
        colour = {term: palette[i % len(palette)] for i, term in enumerate(terms)}
        for key in keys:
            term, branch = split_key(key)
            iterations, values = [p[0] for p in history[key]], [p[1] for p in history[key]]
            style = {"color": colour[term], "linestyle": BRANCH_STYLES.get(branch, "-"), "linewidth": 1, "label": key}
            if key == "seconds_per_iteration":
                axis.plot(iterations, values, color="0.75", linewidth=0.6, label="each iteration")
                style.update(color="black", label=f"running median of {min(51, len(values))}")
                values = running_median(values, 51)
            if len(values) < 30 or title.startswith(("validation", "pseudo", "agreement")):
                style["marker"] = "o"
                style["markersize"] = 3
            axis.plot(iterations, values, **style)
            drawn[key] = (title, style["color"], style["linestyle"])
        if scale == "log" and all(v > 0 for k in keys for _, v in history[k]):
            axis.set_yscale("log")
        axis.set_title(title, fontsize=10)
        axis.legend(fontsize=7, ncol=4)
        axis.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("iteration")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=90)
    plt.close(figure)
    return drawn
