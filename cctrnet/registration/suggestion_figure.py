"""``suggested_labels.png``: the 2D classical-MDS embedding of the dissimilarity, suggested cases marked (every
frame of a suggested patient, with the patient's rank)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from cctrnet.utilities.file_io import atomic_path

FIGURE_SIZE_INCHES = (7.0, 6.0)
FIGURE_DPI = 110


def plot_suggestion(suggestion: dict[str, Any], path: Path) -> None:
    """Every case a dot, a line to the labeled or suggested case that represents it; stars: suggested (with
    rank), squares: already labeled."""
    import matplotlib

    from cctrnet.registration.label_suggestion import entry_cases

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = suggestion["embedding_2d"]["coordinates"]
    nearest = suggestion["nearest_labeled"]
    suggested = {case: entry["rank"] for entry in suggestion["suggested"] for case in entry_cases(entry)}
    labeled = {case for entry in suggestion["already_labeled"] for case in entry_cases(entry)}
    representatives = sorted(set(nearest.values()))
    colours = {case: plt.get_cmap("tab10")(k % 10) for k, case in enumerate(representatives)}
    figure, axis = plt.subplots(figsize=FIGURE_SIZE_INCHES)
    for case, (x, y) in points.items():
        rx, ry = points[nearest[case]]
        axis.plot([x, rx], [y, ry], color=colours[nearest[case]], alpha=0.35, linewidth=1, zorder=1)
    for case, (x, y) in points.items():
        colour = colours[nearest[case]]
        if case in suggested:
            axis.scatter(x, y, marker="*", s=380, color=colour, edgecolor="black", linewidth=1.2, zorder=3)
            axis.annotate(f"#{suggested[case]} {case}", (x, y), xytext=(8, 8), textcoords="offset points",
                          fontsize=10, fontweight="bold")
        elif case in labeled:
            axis.scatter(x, y, marker="s", s=140, color=colour, edgecolor="black", linewidth=1.2, zorder=3)
            axis.annotate(f"{case} (labeled)", (x, y), xytext=(8, 8), textcoords="offset points", fontsize=9)
        else:
            axis.scatter(x, y, s=40, color=colour, zorder=2)
            axis.annotate(case, (x, y), xytext=(4, -10), textcoords="offset points", fontsize=7, color="0.35")
    axis.scatter([], [], marker="*", s=200, color="white", edgecolor="black", label="suggested (rank)")
    if labeled:
        axis.scatter([], [], marker="s", s=80, color="white", edgecolor="black", label="already labeled")
    axis.scatter([], [], s=30, color="0.5", label="case; line to its representative")
    axis.legend(loc="best", fontsize=8)
    share = suggestion["embedding_2d"]["share_of_variance"]
    axis.set_title(f"{suggestion['dataset']}: cases to label next\nclassical MDS of the "
                   f"{suggestion['registration_method']} dissimilarity ({100 * share:.0f}% of its variance)",
                   fontsize=10)
    axis.set_xlabel("MDS axis 1 (dissimilarity units)")
    axis.set_ylabel("MDS axis 2")
    axis.margins(0.15)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=FIGURE_DPI)
    plt.close(figure)
