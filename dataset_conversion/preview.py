"""Preview figure of generated subjects: a few labeled slices per subject with the labels overlaid."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from cctrnet.dataset.geometry import Geometry

OVERLAY_ALPHA = 0.45
DISPLAY_PERCENTILE = 99.5


def write_subjects_preview(path: Path, subjects: Sequence[tuple[str, np.ndarray, np.ndarray, Geometry]],
                           label_colours_rgb: Sequence[Sequence[float]], title: str, slices_per_subject: int = 4,
                           include_end_slices: bool = True, panel_width_inches: float = 2.6) -> Path:
    """One row per ``(case id, image, label, geometry)``: ``slices_per_subject`` slices spread over the labeled
    ones (the first and last included or not), then the middle one without labels; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from cctrnet.utilities.file_io import atomic_path

    num_labels = len(label_colours_rgb)
    overlay = ListedColormap([(0, 0, 0, 0)] + [(*rgb[:3], OVERLAY_ALPHA) for rgb in label_colours_rgb])
    columns = slices_per_subject + 1
    figure, axes = plt.subplots(len(subjects), columns, figsize=(panel_width_inches * columns, 2.8 * len(subjects)),
                                squeeze=False)
    for row, (case, image, label, geometry) in enumerate(subjects):
        labeled = np.flatnonzero(label.reshape(label.shape[0], -1).any(axis=1))
        if include_end_slices:
            positions = np.linspace(labeled[0], labeled[-1], slices_per_subject)
        else:
            positions = np.linspace(labeled[0], labeled[-1], slices_per_subject + 2)[1:-1]
        chosen = positions.round().astype(int)
        display_max = float(np.percentile(image, DISPLAY_PERCENTILE))
        sx, sy, sz = geometry.spacing_xyz
        for column, z in enumerate(chosen):
            axis = axes[row, column]
            axis.imshow(image[z], cmap="gray", vmin=0, vmax=display_max, aspect=sy / sx)
            axis.imshow(label[z], cmap=overlay, vmin=0, vmax=num_labels, interpolation="nearest", aspect=sy / sx)
            axis.set_title(f"{case} z={z}/{image.shape[0] - 1}", fontsize=8)
        middle = int(chosen[len(chosen) // 2])
        axes[row, -1].imshow(image[middle], cmap="gray", vmin=0, vmax=display_max, aspect=sy / sx)
        axes[row, -1].set_title(f"z={middle} without labels\n{sx:.2f} x {sy:.2f} x {sz:.1f} mm", fontsize=8)
        for axis in axes[row]:
            axis.set_axis_off()
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=72, format="png")
    plt.close(figure)
    return path
