"""Bar chart of mean Dice per method (grouped by dataset and N) and pseudo-label-quality curves."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(blocks: Sequence[dict[str, Any]], title: str, path: Path) -> Path | None:
    """Groups = (dataset, N); bars = methods; height = mean Dice over seeds, error bar = std."""
    if not blocks:
        return None
    plt = _pyplot()
    methods: list[str] = []
    for block in blocks:
        methods += [r["method"] for r in block["rows"] if r["method"] not in methods]
    width = 0.8 / max(1, len(methods))
    figure, axis = plt.subplots(figsize=(max(6.0, 1.6 * len(blocks) * max(1, len(methods)) * 0.35 + 2), 4.2))
    colours = plt.get_cmap("tab10")
    for m, method in enumerate(methods):
        xs, heights, errors = [], [], []
        for b, block in enumerate(blocks):
            row = next((r for r in block["rows"] if r["method"] == method), None)
            cell = row["mean_dice"] if row else None
            if cell and cell.get("mean") is not None:
                xs.append(b + (m - (len(methods) - 1) / 2) * width)
                heights.append(cell["mean"])
                errors.append(cell.get("std") or 0.0)
        axis.bar(xs, heights, width, yerr=errors, capsize=2, label=method, color=colours(m % 10))
    axis.set_xticks(range(len(blocks)))
    axis.set_xticklabels([f"{b['dataset']}\n{b['labeled']} labeled" for b in blocks])
    axis.set_ylabel("mean Dice (%)")
    axis.set_ylim(0, 100)
    axis.set_title(title)
    axis.legend(fontsize=7, ncol=min(4, len(methods)), loc="upper left")
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def budget_curve(blocks: Sequence[dict[str, Any]], title: str, path: Path) -> Path | None:
    """One panel per (dataset, N): mean test Dice against training iterations, a line per method (error bars:
    std over seeds), from the budget table's rows (each carrying ``method_label`` and ``iterations``)."""
    if not blocks:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(blocks), figsize=(5.0 * len(blocks), 3.8), squeeze=False)
    for axis, block in zip(axes.flat, blocks):
        methods = list(dict.fromkeys(r["method_label"] for r in block["rows"]))
        for method in methods:
            points = [(r["iterations"], r["mean_dice"]) for r in block["rows"] if r["method_label"] == method
                      and r["mean_dice"].get("mean") is not None]
            if points:
                axis.errorbar([p[0] for p in points], [p[1]["mean"] for p in points],
                              yerr=[p[1].get("std") or 0.0 for p in points], marker="o", capsize=3, label=method)
        axis.set_xscale("log")
        axis.set_xlabel("training iterations")
        axis.set_ylabel("mean test Dice (%)")
        axis.set_ylim(0, 100)
        axis.set_title(f"{title}: {block['dataset']}, {block['labeled']} labeled", fontsize=9)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


CURVE_LABELS = {"dice_pseudo_A": "branch A pseudo-labels", "dice_pseudo_B": "branch B pseudo-labels",
                "dice_registered": "registered labels",
                # the same fixed slices at every point (cctrnet.training.validation_curve), the steadier measure
                "dice_hidden_A": "branch A, fixed slices"}


def pseudo_label_curves(results: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """One panel per (dataset, N, method): each curve's mean over seeds vs iteration (thin lines: seeds)."""
    panels: dict[tuple, list[dict]] = {}
    for r in results:
        if r.get("status") == "ok" and r.get("pseudo_label_curves"):
            job = r["job"]
            panels.setdefault((job["dataset"], job["labeled"], job["method_label"]), []).append(r)
    if not panels:
        return None
    plt = _pyplot()
    keys = sorted(panels, key=lambda k: (k[0], k[1] or 0, k[2]))
    columns = min(3, len(keys))
    rows = (len(keys) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.3 * rows), squeeze=False)
    colours = {"dice_pseudo_A": "tab:blue", "dice_pseudo_B": "tab:orange", "dice_registered": "tab:green",
               "dice_hidden_A": "tab:purple"}
    for axis, key in zip(axes.flat, keys):
        for curve, label in CURVE_LABELS.items():
            series = [r["pseudo_label_curves"][curve] for r in panels[key] if curve in r["pseudo_label_curves"]]
            for points in series:
                axis.plot([p[0] for p in points], [100 * p[1] for p in points], color=colours[curve], alpha=0.3, lw=0.8)
            if series:
                iterations = sorted({p[0] for points in series for p in points})
                means = []
                for it in iterations:
                    values = [p[1] for points in series for p in points if p[0] == it]
                    means.append(100 * sum(values) / len(values))
                axis.plot(iterations, means, color=colours[curve], lw=1.8, label=label)
        axis.set_title(f"{key[0]}, {key[1]} labeled: {key[2]}", fontsize=9)
        axis.set_xlabel("iteration")
        axis.set_ylabel("Dice on unlabeled slices (%)")
        axis.set_ylim(0, 100)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(keys):]:
        axis.axis("off")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
