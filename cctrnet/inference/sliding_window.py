"""Sliding-window prediction of a volume, slice by slice, with 2D patches.

Every slice (z) is covered by patches of the plan's size placed with a step of half a patch; each patch's
class probabilities are weighted by a Gaussian centred on the patch (sigma 1/8 of its size, as nnU-Net),
so pixels near a patch border, which saw less context, count less. Slices smaller than the patch are
padded with zeros (the normalised mean) and the padding is cut off again. Patches of several slices go
through the network together. Test-time augmentation averages the probabilities over the mirrorings of
the two in-plane axes (4 combinations).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from cctrnet.inference.speed import DeviceSpeedSettings

# (b, c, y, x) input -> (b, classes, y, x) class probabilities, both torch tensors
ProbabilityFunction = Callable[[Any], Any]


@dataclass
class SlidingWindowSettings:
    """How a volume is tiled and predicted; defaults follow nnU-Net's predictor."""

    step_fraction: float = 0.5  # step between patches as a fraction of the patch size
    gaussian_sigma_fraction: float = 1.0 / 8.0  # sigma of the importance map as a fraction of the patch size
    mirroring: bool = True  # test-time augmentation: mirror y, x and both
    patches_per_batch: int = 16  # patches (of any slices) per forward pass
    # autocast precision, channels-last, torch.compile; the defaults (auto) are off on CPU (cctrnet/inference/speed.py)
    speed: DeviceSpeedSettings = field(default_factory=DeviceSpeedSettings)

    def __post_init__(self) -> None:
        if not 0 < self.step_fraction <= 1:
            raise ValueError(f"step_fraction must be in (0, 1], got {self.step_fraction}")
        if self.patches_per_batch < 1:
            raise ValueError(f"patches_per_batch must be at least 1, got {self.patches_per_batch}")


def gaussian_importance_map(patch_size_yx: Sequence[int], sigma_fraction: float = 1.0 / 8.0) -> np.ndarray:
    """(y, x) float32 weights: a Gaussian centred on the patch, maximum 1, no zero anywhere."""
    axes = []
    for size in patch_size_yx:
        centre = (size - 1) / 2.0
        sigma = max(size * sigma_fraction, 1e-6)
        axes.append(np.exp(-0.5 * ((np.arange(size) - centre) / sigma) ** 2))
    weights = np.outer(axes[0], axes[1])
    weights /= weights.max()
    positive = weights[weights > 0]
    floor = positive.min() if positive.size else 1.0
    # far from the centre the Gaussian underflows; a zero weight would leave a pixel undefined
    return np.maximum(weights, floor).astype(np.float32)


def window_starts(size: int, patch: int, step_fraction: float = 0.5) -> list[int]:
    """Start indices of patches covering [0, size) with at most ``step_fraction * patch`` between starts."""
    if size <= patch:
        return [0]
    max_step = patch * step_fraction
    num_steps = int(math.ceil((size - patch) / max_step)) + 1
    actual_step = (size - patch) / (num_steps - 1)
    return [int(round(actual_step * i)) for i in range(num_steps)]


def mirror_combinations(mirroring: bool) -> list[tuple[int, ...]]:
    """Tensor dimensions of a (b, c, y, x) batch to flip: none, then y, x and both when mirroring."""
    if not mirroring:
        return [()]
    return [combo for r in range(3) for combo in itertools.combinations((2, 3), r)]


def predict_with_mirroring(probability_fn: ProbabilityFunction, batch: Any, mirroring: bool) -> Any:
    """Mean class probabilities over the mirrored copies of a batch, each flipped back before averaging."""
    import torch

    combos = mirror_combinations(mirroring)
    total = None
    for dims in combos:
        flipped = torch.flip(batch, dims) if dims else batch
        probabilities = probability_fn(flipped).float()
        probabilities = torch.flip(probabilities, dims) if dims else probabilities
        total = probabilities if total is None else total + probabilities
    return total / len(combos)


def _pad_amounts(shape_yx: Sequence[int], patch_size_yx: Sequence[int]) -> list[tuple[int, int]]:
    out = []
    for size, patch in zip(shape_yx, patch_size_yx):
        missing = max(0, patch - size)
        out.append((missing // 2, missing - missing // 2))
    return out


def predict_volume(data_czyx: np.ndarray, probability_fn: ProbabilityFunction, patch_size_yx: Sequence[int],
                   num_classes: int, settings: SlidingWindowSettings | None = None, device: Any = "cpu",
                   progress: bool = False, description: str = "slices") -> np.ndarray:
    """Class probabilities (classes, z, y, x) float32 of a preprocessed volume (c, z, y, x)."""
    import torch
    from tqdm import tqdm

    from cctrnet.utilities.progress_bars import quiet_bar_options

    settings = settings or SlidingWindowSettings()
    device = torch.device(device)
    patch_y, patch_x = (int(p) for p in patch_size_yx)
    _, num_slices, size_y, size_x = data_czyx.shape
    (pad_y0, pad_y1), (pad_x0, pad_x1) = _pad_amounts((size_y, size_x), (patch_y, patch_x))

    speed = settings.speed.resolve(device)
    data = torch.from_numpy(np.ascontiguousarray(data_czyx, dtype=np.float32))
    if device.type == "cuda":  # pinned host memory: the copy runs asynchronously, ordered on the stream
        data = data.pin_memory().to(device, non_blocking=True)
    if pad_y0 + pad_y1 + pad_x0 + pad_x1:
        data = torch.nn.functional.pad(data, (pad_x0, pad_x1, pad_y0, pad_y1))
    padded_y, padded_x = data.shape[-2:]
    starts_y = window_starts(padded_y, patch_y, settings.step_fraction)
    starts_x = window_starts(padded_x, patch_x, settings.step_fraction)
    gaussian = torch.as_tensor(gaussian_importance_map((patch_y, patch_x), settings.gaussian_sigma_fraction),
                               device=device)
    # every slice is tiled alike, so the sum of weights is one (y, x) plane shared by all slices
    weight_sum = torch.zeros((padded_y, padded_x), dtype=torch.float32, device=device)
    for y0, x0 in itertools.product(starts_y, starts_x):
        weight_sum[y0:y0 + patch_y, x0:x0 + patch_x] += gaussian
    accumulated = torch.zeros((num_classes, num_slices, padded_y, padded_x), dtype=torch.float32, device=device)

    tiles = [(z, y0, x0) for z in range(num_slices) for y0 in starts_y for x0 in starts_x]
    batches = [tiles[i:i + settings.patches_per_batch] for i in range(0, len(tiles), settings.patches_per_batch)]
    autocast_dtype = speed.autocast_dtype
    with torch.inference_mode():
        for batch_tiles in tqdm(batches, desc=description, leave=False, unit="batch",
                                **quiet_bar_options(progress, nested=True)):
            batch = speed.prepare_batch(
                torch.stack([data[:, z, y0:y0 + patch_y, x0:x0 + patch_x] for z, y0, x0 in batch_tiles]))
            with torch.autocast(device_type=device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                probabilities = predict_with_mirroring(probability_fn, batch, settings.mirroring)
            if probabilities.shape[1] != num_classes:
                raise ValueError(f"the network predicts {probabilities.shape[1]} classes, expected {num_classes}")
            for (z, y0, x0), patch_probabilities in zip(batch_tiles, probabilities.float()):
                accumulated[:, z, y0:y0 + patch_y, x0:x0 + patch_x] += patch_probabilities * gaussian
        accumulated /= weight_sum
    accumulated = accumulated[:, :, pad_y0:padded_y - pad_y1, pad_x0:padded_x - pad_x1]
    return accumulated.cpu().numpy()


class BranchEnsemble:
    """The trained branches as one probability function: the mean of their softmax outputs (METHOD.md §2)."""

    def __init__(self, networks: Sequence[Any]):
        if not networks:
            raise ValueError("BranchEnsemble needs at least one network")
        self.networks = list(networks)

    def __call__(self, batch: Any) -> Any:
        import torch

        total = None
        for network in self.networks:
            output = network(batch)
            logits = output.logits if hasattr(output, "logits") else output
            probabilities = torch.softmax(logits.float(), dim=1)
            total = probabilities if total is None else total + probabilities
        return total / len(self.networks)
