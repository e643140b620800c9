"""Registration-enhanced positive sampling, REPS (paper §3.4, Eq. 11-13).

For an anchor at voxel p of volume v, every other volume j gives a candidate positive at p_j = T_vj(p);
the memory bank answers with the stored feature there when slice round(z_j) of volume j is in the bank.
The registered positive a_p^r is the mean over the volumes found (Eq. 12), and the key used by SCL is
``normalise(w1 * a_p^c + w2 * normalise(a_p^r))`` where a registered positive exists, else a_p^c (Eq. 13).

Target volumes are the volumes with at least one slice in the bank (others cannot answer), optionally
limited to a random ``max_target_volumes`` of them per step to bound the number of point mappings.
All mapped points of one step go to the bank in a single vectorised lookup.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from cctrnet.training.memory_bank import FeatureMemoryBank

# map_points(source_volume, target_volume, points_zyx (n, 3) voxel coordinates) -> (n, 3) voxel coordinates;
# NaN rows where no registration exists (they are never found in the bank)
PointMapper = Callable[[int, int, torch.Tensor], torch.Tensor]
# map_points_to_many(source_volume, target_volumes, points_zyx (n, 3)) -> (len(targets), n, 3), one call per source
ManyPointMapper = Callable[[int, Sequence[int], torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RegisteredPositiveSettings:
    class_positive_weight: float = 0.5  # w1
    registered_positive_weight: float = 0.5  # w2
    max_target_volumes: int | None = None  # None: every volume in the bank except the anchor's own


def anchor_voxel_points(
    anchor_positions_byx: torch.Tensor, coords_zyx: torch.Tensor, volume_indices: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(volume (n,), voxel point zyx (n, 3)) of anchors at (batch, y, x), from the batch coordinate map (b, 3, h, w)."""
    if coords_zyx.ndim != 4 or coords_zyx.shape[1] != 3:
        raise ValueError(f"coords_zyx must be (b, 3, h, w), got {tuple(coords_zyx.shape)}")
    batch, y, x = anchor_positions_byx.to(coords_zyx.device).long().unbind(1)
    points = coords_zyx[batch, :, y, x].float()
    volumes = torch.as_tensor(volume_indices, device=coords_zyx.device).long()[batch]
    return volumes, points


def registered_positive_keys(
    anchor_volumes: torch.Tensor,
    anchor_points_zyx: torch.Tensor,
    bank: FeatureMemoryBank,
    map_points: PointMapper | None,
    settings: RegisteredPositiveSettings = RegisteredPositiveSettings(),
    generator: torch.Generator | None = None,
    map_points_to_many: ManyPointMapper | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """a_p^r per anchor (Eq. 11-12): (unit keys (n, d), found (n,)); rows without any hit are zero.

    Anchor points are voxel coordinates (z, y, x) of the preprocessed volume ``anchor_volumes``.
    ``map_points_to_many``, when given, replaces the per-pair calls of ``map_points`` with one call per
    source volume (e.g. all affine maps applied as one batched product).
    """
    if map_points is None and map_points_to_many is None:
        raise ValueError("registered_positive_keys needs map_points or map_points_to_many")
    n = int(anchor_points_zyx.shape[0])
    device = anchor_points_zyx.device
    keys = torch.zeros((n, bank.feature_channels), device=device)
    found = torch.zeros(n, dtype=torch.bool, device=device)
    targets = bank.volumes_present()
    if n == 0 or not targets:
        return keys, found
    limit = settings.max_target_volumes
    if limit is not None and len(targets) > limit:
        generator_device = generator.device if generator is not None else torch.device("cpu")
        pick = torch.randperm(len(targets), generator=generator, device=generator_device)[:limit]
        targets = sorted(targets[i] for i in pick.tolist())

    mapped_points, mapped_volumes, mapped_anchor = [], [], []
    anchor_volumes = anchor_volumes.to(device).long()
    for source in torch.unique(anchor_volumes).tolist():
        rows = torch.nonzero(anchor_volumes == source).squeeze(1)
        source_points = anchor_points_zyx[rows]
        source_targets = [t for t in targets if t != source]
        if not source_targets:
            continue
        if map_points_to_many is not None:
            points = map_points_to_many(source, source_targets, source_points)
            expected = (len(source_targets), *source_points.shape)
            if tuple(points.shape) != expected:
                raise ValueError(f"map_points_to_many({source}, ...) returned shape {tuple(points.shape)}, expected {expected}")
            mapped_points.append(points.reshape(-1, 3).to(device))
        else:
            for target in source_targets:
                points = map_points(source, target, source_points)
                if tuple(points.shape) != tuple(source_points.shape):
                    raise ValueError(
                        f"map_points({source}, {target}) returned shape {tuple(points.shape)}, "
                        f"expected {tuple(source_points.shape)}"
                    )
                mapped_points.append(points.to(device))
        target_ids = torch.tensor(source_targets, device=device)
        mapped_volumes.append(target_ids.repeat_interleave(rows.shape[0]))
        mapped_anchor.append(rows.repeat(len(source_targets)))
    if not mapped_points:
        return keys, found

    hit_rows, features = bank.gather_found(torch.cat(mapped_volumes), torch.cat(mapped_points))
    owner = torch.cat(mapped_anchor)[hit_rows.to(device)]
    sums = keys.index_add(0, owner, features.to(device))
    counts = torch.bincount(owner, minlength=n)
    found = counts > 0
    keys = torch.where(found.unsqueeze(1), F.normalize(sums / counts.clamp(min=1).unsqueeze(1), dim=1), keys)
    return keys, found


def combine_positive_keys(
    class_keys: torch.Tensor,
    registered_keys: torch.Tensor,
    registered_found: torch.Tensor,
    settings: RegisteredPositiveSettings = RegisteredPositiveSettings(),
) -> torch.Tensor:
    """Eq. 13: normalise(w1 * a_p^c + w2 * a_p^r) where a registered key exists, a_p^c elsewhere."""
    registered_keys = registered_keys.to(class_keys)
    combined = F.normalize(
        settings.class_positive_weight * class_keys + settings.registered_positive_weight * registered_keys, dim=1
    )
    return torch.where(registered_found.to(class_keys.device).unsqueeze(1), combined, class_keys)
