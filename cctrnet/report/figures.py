"""The report's images, each returned as a ``data:image/png;base64,...`` URI (never a file of its own)."""
from __future__ import annotations

import base64
import io
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

THUMBNAIL_HEIGHT_INCHES = 2.4
THUMBNAIL_DPI = 80
#: label colours (class 1, 2, ...), alpha of the overlay
LABEL_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c")
OVERLAY_ALPHA = 0.45


def png_uri(png_bytes: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes).decode("ascii")


def file_uri(path: Path) -> str:
    return png_uri(Path(path).read_bytes())


def curves_uri(curves: Mapping[str, Sequence[tuple[int, float]]]) -> str | None:
    """The training stage's own progress panels, drawn from the log's curves (None when there is none)."""
    from cctrnet.training.progress_panels import plot_progress

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "curves.png"
        plot_progress(curves, path)
        return file_uri(path) if path.exists() else None


def _figure_uri(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=THUMBNAIL_DPI, bbox_inches="tight", pad_inches=0.05)
    plt.close(figure)
    return png_uri(buffer.getvalue())


def _coloured(label_yx: np.ndarray) -> np.ndarray:
    from matplotlib.colors import to_rgba

    rgba = np.zeros((*label_yx.shape, 4))
    for value in np.unique(label_yx):
        if value > 0:
            rgba[label_yx == value] = to_rgba(LABEL_COLOURS[(int(value) - 1) % len(LABEL_COLOURS)], OVERLAY_ALPHA)
    return rgba


def best_slice(*labels_zyx: np.ndarray | None) -> int:
    """The slice with the most foreground in the first label given (the middle slice without any)."""
    for label in labels_zyx:
        if label is not None and np.any(label > 0):
            return int(np.argmax((label > 0).reshape(label.shape[0], -1).sum(axis=1)))
    shapes = [label.shape[0] for label in labels_zyx if label is not None]
    return shapes[0] // 2 if shapes else 0


def overlay_row_uri(image_zyx: np.ndarray | None, panels: Sequence[tuple[str, np.ndarray | None]],
                    slice_index: int, aspect: float = 1.0) -> str:
    """One row: the image alone, then the image under each labelled panel (title, label (z, y, x))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [("image", None)] + list(panels) if image_zyx is not None else list(panels)
    shape = next(a.shape for a in [image_zyx, *[p[1] for p in panels]] if a is not None)
    width = THUMBNAIL_HEIGHT_INCHES * shape[2] / max(shape[1] * aspect, 1)
    figure, axes = plt.subplots(1, len(columns), figsize=(width * len(columns), THUMBNAIL_HEIGHT_INCHES + 0.3),
                                squeeze=False)
    for axis, (title, label) in zip(axes[0], columns):
        if image_zyx is not None:
            image = np.asarray(image_zyx[slice_index], dtype=float)
            low, high = np.percentile(image, [1, 99])
            axis.imshow(image, cmap="gray", vmin=low, vmax=high if high > low else low + 1, aspect=aspect)
        if label is not None:
            axis.imshow(_coloured(np.asarray(label[slice_index])), aspect=aspect, interpolation="nearest")
        axis.set_title(title, fontsize=9)
        axis.axis("off")
    return _figure_uri(figure)


def parameter_counts(architectures: Mapping[str, dict], input_channels: int, num_classes: int) -> dict[str, int]:
    """Trainable parameters per branch, from the recorded architectures (builds each network once)."""
    from cctrnet.networks.build import build_network

    counts = {}
    for branch, architecture in architectures.items():
        network = build_network(architecture, input_channels, num_classes)
        counts[branch] = int(sum(p.numel() for p in network.parameters() if p.requires_grad))
    return counts
