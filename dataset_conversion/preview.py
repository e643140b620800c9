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

    num_labels = len(label_colours_rgb)
    overlay = _overlay_colormap(label_colours_rgb)
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
    return _save_figure(figure, title, path)


def write_frames_preview(path: Path, rows: Sequence[tuple[str, Sequence[tuple[str, np.ndarray, np.ndarray]], Geometry]],
                         label_colours_rgb: Sequence[Sequence[float]], title: str,
                         panel_width_inches: float = 2.2, margin_mm: float = 40.0) -> Path:
    """One row per ``(title, [(frame name, image, label), ...], geometry)``: the first frame's mid-ventricular
    short-axis slice without labels, then per frame that slice and a long-axis cut (all slices, base at the
    top, along the array row through the heart) with labels overlaid. Cut positions and the crop around the
    heart (``margin_mm``) come from the first frame, so the frames compare."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_labels = len(label_colours_rgb)
    overlay = _overlay_colormap(label_colours_rgb)
    columns = 1 + 2 * max(len(frames) for _, frames, _ in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(panel_width_inches * columns, 2.4 * len(rows)),
                                squeeze=False)
    for row, (row_title, frames, geometry) in enumerate(rows):
        first_label = frames[0][2]
        labeled = np.flatnonzero(first_label.reshape(first_label.shape[0], -1).any(axis=1))
        z_mid = int(labeled[len(labeled) // 2]) if labeled.size else first_label.shape[0] // 2
        sx, sy, sz = geometry.spacing_xyz
        ys, xs = np.nonzero(first_label.any(axis=0)) if labeled.size else ([0, first_label.shape[1] - 1],
                                                                            [0, first_label.shape[2] - 1])
        y_cut = int(np.median(np.nonzero(first_label[z_mid].any(axis=1))[0])) if labeled.size else first_label.shape[1] // 2
        margin_y, margin_x = int(margin_mm / sy), int(margin_mm / sx)
        crop_y = slice(max(0, min(ys) - margin_y), max(ys) + margin_y + 1)
        crop_x = slice(max(0, min(xs) - margin_x), max(xs) + margin_x + 1)
        display_max = float(np.percentile(frames[0][1], DISPLAY_PERCENTILE))
        axes[row, 0].imshow(frames[0][1][z_mid, crop_y, crop_x], cmap="gray", vmin=0, vmax=display_max, aspect=sy / sx)
        axes[row, 0].set_title(f"{row_title}\n{frames[0][0]} z={z_mid}/{first_label.shape[0] - 1} without labels",
                               fontsize=8)
        for number, (frame, image, label) in enumerate(frames):
            short_axis, long_axis = axes[row, 1 + 2 * number], axes[row, 2 + 2 * number]
            for axis, image_2d, label_2d, aspect in (
                    (short_axis, image[z_mid, crop_y, crop_x], label[z_mid, crop_y, crop_x], sy / sx),
                    (long_axis, image[:, y_cut, crop_x], label[:, y_cut, crop_x], sz / sx)):
                axis.imshow(image_2d, cmap="gray", vmin=0, vmax=display_max, aspect=aspect)
                axis.imshow(label_2d, cmap=overlay, vmin=0, vmax=num_labels, interpolation="nearest", aspect=aspect)
            short_axis.set_title(f"{frame} short axis z={z_mid}", fontsize=8)
            long_axis.set_title(f"{frame} long-axis cut, row {y_cut}\n{sx:.2f} x {sy:.2f} x {sz:.1f} mm", fontsize=8)
        for axis in axes[row]:
            axis.set_axis_off()
    return _save_figure(figure, title, path)


def _overlay_colormap(label_colours_rgb: Sequence[Sequence[float]]):
    from matplotlib.colors import ListedColormap

    return ListedColormap([(0, 0, 0, 0)] + [(*rgb[:3], OVERLAY_ALPHA) for rgb in label_colours_rgb])


def _save_figure(figure, title: str, path: Path) -> Path:
    """Title, layout and an atomic PNG write; closes the figure."""
    import matplotlib.pyplot as plt

    from cctrnet.utilities.file_io import atomic_path

    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=72, format="png")
    plt.close(figure)
    return path
