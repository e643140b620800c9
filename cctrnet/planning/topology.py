"""U-Net topology for a 2D patch, by nnU-Net's rules.

An axis is downsampled (stride 2) while its feature map stays at least ``min_feature_map_size`` after
the stride and its spacing is at most twice the finest spacing at that stage; a 3x3 kernel is used
unless an axis is more than twice as coarse as the finest (then 1). The patch is rounded to the
nearest multiple of the network's total stride so every stage divides evenly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Topology:
    patch_size_yx: tuple[int, int]
    strides: tuple[tuple[int, int], ...]
    kernel_sizes: tuple[tuple[int, int], ...]
    features_per_stage: tuple[int, ...]

    @property
    def n_stages(self) -> int:
        return len(self.strides)

    @property
    def total_stride_yx(self) -> tuple[int, int]:
        return tuple(math.prod(s[a] for s in self.strides) for a in range(2))  # type: ignore[return-value]


def unet_topology(patch_size_yx: Sequence[int], spacing_yx: Sequence[float], base_features: int,
                  max_features: int, max_stages: int = 7, min_feature_map_size: int = 4) -> Topology:
    """Strides, kernel sizes and features per stage for a patch; the returned patch divides evenly."""
    size = [float(s) for s in patch_size_yx]
    spacing = [float(s) for s in spacing_yx]
    strides = [(1, 1)]
    kernels = [_kernel(spacing)]
    while len(strides) < max_stages:
        finest = min(spacing)
        stride = tuple(2 if size[a] / 2 >= min_feature_map_size and spacing[a] <= 2 * finest else 1 for a in range(2))
        if stride == (1, 1):
            break
        size = [s / st for s, st in zip(size, stride)]
        spacing = [sp * st for sp, st in zip(spacing, stride)]
        strides.append(stride)  # type: ignore[arg-type]
        kernels.append(_kernel(spacing))
    total = [math.prod(s[a] for s in strides) for a in range(2)]
    patch = tuple(max(t, int(round(p / t)) * t) for p, t in zip(patch_size_yx, total))
    features = tuple(min(base_features * 2 ** i, max_features) for i in range(len(strides)))
    return Topology(patch, tuple(strides), tuple(kernels), features)  # type: ignore[arg-type]


def _kernel(spacing_yx: Sequence[float]) -> tuple[int, int]:
    finest = min(spacing_yx)
    return tuple(3 if s <= 2 * finest else 1 for s in spacing_yx)  # type: ignore[return-value]
