"""Random choices of a training sample: which case and slice, which foreground voxel, where to crop."""
from __future__ import annotations

from typing import Callable, Literal, Mapping, Sequence

import numpy as np

SliceSampling = Literal["slice", "case"]


def draw_case_and_slice(rng: np.random.Generator, num_slices_per_case: Sequence[int],
                        sampling: SliceSampling = "slice") -> tuple[int, int]:
    """(position of the case in the list, z index).

    ``"slice"``: every slice of every case equally likely (the dataset of 2D slices the method trains on);
    ``"case"``: a case uniformly, then one of its slices (nnU-Net's 2D loader).
    """
    counts = np.asarray(num_slices_per_case, dtype=np.int64)
    if counts.size == 0 or np.any(counts <= 0):
        raise ValueError(f"every case needs at least one slice, got slice counts {counts.tolist()}")
    if sampling == "slice":
        flat = int(rng.integers(int(counts.sum())))
        case = int(np.searchsorted(np.cumsum(counts), flat, side="right"))
        z = flat - int(counts[:case].sum())
        return case, z
    if sampling == "case":
        case = int(rng.integers(counts.size))
        return case, int(rng.integers(counts[case]))
    raise ValueError(f"slice sampling must be 'slice' or 'case', got {sampling!r}")


def draw_foreground_voxel(rng: np.random.Generator, class_slices: Mapping[int, Sequence[int]],
                          read_label_slice: Callable[[int], np.ndarray]) -> tuple[int, int, int] | None:
    """(z, y, x) of a voxel of a random foreground class present in the case; None when there is none.

    As nnU-Net: the class first (uniformly among the classes the case contains), then one of the
    slices that contain it (``class_slices``), then one of its voxels in that slice.
    """
    present = sorted(c for c, slices in class_slices.items() if c != 0 and len(slices) > 0)
    if not present:
        return None
    label_class = present[int(rng.integers(len(present)))]
    slices = class_slices[label_class]
    z = int(slices[int(rng.integers(len(slices)))])
    ys, xs = np.nonzero(np.asarray(read_label_slice(z)) == label_class)
    if ys.size == 0:
        raise ValueError(f"class_slices says class {label_class} is in slice {z}, but the label slice has none of it")
    pick = int(rng.integers(ys.size))
    return z, int(ys[pick]), int(xs[pick])


def crop_center_yx(rng: np.random.Generator, shape_yx: Sequence[int], patch_size_yx: Sequence[int],
                   foreground_yx: Sequence[int] | None = None) -> tuple[float, float]:
    """Centre of the patch's grid, aligned so that an unaugmented patch is an integer crop.

    Random: the crop lies inside the slice where the slice is larger than the patch, and the slice lies
    inside the crop (zero-padded around it) where it is smaller. Foreground: the chosen voxel is the
    centre pixel, the one point that stays in the patch under any rotation, scaling and mirroring.
    """
    center = []
    for axis, (size, patch) in enumerate(zip(shape_yx, patch_size_yx)):
        if foreground_yx is not None:
            start = int(foreground_yx[axis]) - (patch - 1) // 2
        else:
            low, high = min(0, size - patch), max(0, size - patch)
            start = int(rng.integers(low, high + 1))
        center.append(start + (patch - 1) / 2.0)
    return center[0], center[1]
