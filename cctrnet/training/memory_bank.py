"""Memory bank of projected slice feature maps for REPS (paper §3.4, METHOD.md §7).

- FIFO of whole slices keyed by (volume index, z index); capacity ``max(1, round(0.2 * n_slices))``.
  Inserting a slice that is already stored replaces its features and makes it the newest entry.
- Entries live in the slice's canonical grid (the preprocessed volume's (y, x) voxel grid), reduced by
  ``downsample_factor``: reduced cell (i, j) covers voxels [i*f, (i+1)*f) x [j*f, (j+1)*f). A lookup
  at a voxel point is then an index (or a bilinear blend of 4 cells), never a search.
- Insertion takes the batch feature map with, per pixel, its (z, y, x) voxel coordinates in the
  preprocessed volume (the coordinate map pushed through the same augmentation), and averages all
  pixels that land in a cell ("scatter-mean"). Cells that no pixel of the newest crop reached stay
  empty and a lookup there reports "not found"; the bilinear lookup blends only the filled cells of
  the 4 (weights renormalised).
- Volumes of different in-plane sizes share one storage grid sized for the largest; points outside
  their own volume are never found.
- Storage is channels-last (capacity, h_r, w_r, d) so that a lookup reads contiguous feature vectors,
  in float16 by default (unit vectors lose ~1e-3); lookups return float32.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

import torch


@dataclass(frozen=True)
class MemoryBankSettings:
    bank_fraction: float = 0.2  # capacity = (M + K) / 5 slices
    downsample_factor: int = 4  # canonical grid reduced by this factor in y and x
    storage_dtype: str = "float16"
    bilinear: bool = False  # False: the value of the reduced cell holding the point


def bank_capacity(n_training_slices: int, bank_fraction: float = MemoryBankSettings.bank_fraction) -> int:
    """Number of slices the bank holds: max(1, round(bank_fraction * n_training_slices))."""
    if n_training_slices <= 0 or bank_fraction <= 0:
        raise ValueError(f"need positive slice count and fraction, got {n_training_slices} and {bank_fraction}")
    return max(1, round(bank_fraction * n_training_slices))


class FeatureMemoryBank:
    """FIFO of detached slice feature maps in canonical reduced grids, looked up by voxel position."""

    def __init__(
        self,
        volume_shapes_zyx: Sequence[Sequence[int]],
        feature_channels: int,
        settings: MemoryBankSettings = MemoryBankSettings(),
        capacity: int | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if len(volume_shapes_zyx) == 0 or any(len(s) != 3 or min(s) <= 0 for s in volume_shapes_zyx):
            raise ValueError(f"volume_shapes_zyx must list positive (z, y, x) shapes, got {volume_shapes_zyx}")
        if settings.downsample_factor < 1:
            raise ValueError(f"downsample_factor must be >= 1, got {settings.downsample_factor}")
        self.device = torch.device(device)
        self.settings = settings
        self.feature_channels = int(feature_channels)
        self.downsample_factor = int(settings.downsample_factor)
        self.volume_shapes_zyx = torch.tensor([list(s) for s in volume_shapes_zyx], dtype=torch.long, device=self.device)
        n_slices = int(self.volume_shapes_zyx[:, 0].sum())
        self.capacity = capacity if capacity is not None else bank_capacity(n_slices, settings.bank_fraction)
        if self.capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {self.capacity}")
        max_z, max_y, max_x = (int(v) for v in self.volume_shapes_zyx.max(0).values)
        self.grid_hw = (math.ceil(max_y / self.downsample_factor), math.ceil(max_x / self.downsample_factor))
        dtype = getattr(torch, settings.storage_dtype)
        self.features = torch.zeros((self.capacity, *self.grid_hw, self.feature_channels), dtype=dtype, device=self.device)
        self.cell_filled = torch.zeros((self.capacity, *self.grid_hw), dtype=torch.bool, device=self.device)
        self.slot_table = torch.full((len(volume_shapes_zyx), max_z), -1, dtype=torch.long, device=self.device)
        self._slots: OrderedDict[tuple[int, int], int] = OrderedDict()  # oldest first
        self._free_slots = list(range(self.capacity - 1, -1, -1))

    # --- bookkeeping ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, key: tuple[int, int]) -> bool:
        return (int(key[0]), int(key[1])) in self._slots

    def keys(self) -> list[tuple[int, int]]:
        """(volume, z) of the stored slices, oldest first."""
        return list(self._slots)

    def volumes_present(self) -> list[int]:
        return sorted({volume for volume, _ in self._slots})

    @property
    def nbytes(self) -> int:
        return self.features.element_size() * self.features.nelement() + self.cell_filled.nelement()

    def state_dict(self) -> dict[str, Any]:
        """Stored slices, oldest first, as plain tensors and lists (loadable with ``weights_only=True``)."""
        keys = self.keys()
        slots = torch.tensor([self._slots[key] for key in keys], dtype=torch.long, device=self.device)
        return {
            "keys": [list(key) for key in keys],
            "features": self.features[slots].cpu(),
            "cell_filled": self.cell_filled[slots].cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` of a bank with the same volumes, channels and settings."""
        keys = [(int(volume), int(z)) for volume, z in state["keys"]]
        features: torch.Tensor = state["features"]
        filled: torch.Tensor = state["cell_filled"]
        expected = (len(keys), *self.grid_hw, self.feature_channels)
        if len(keys) > self.capacity or tuple(features.shape) != expected or tuple(filled.shape) != expected[:3]:
            raise ValueError(
                f"memory bank state holds {len(keys)} slices of shape {tuple(features.shape)[1:]}; this bank "
                f"takes at most {self.capacity} of shape {expected[1:]} (different volumes, channels or settings?)"
            )
        self._slots.clear()
        self.slot_table.fill_(-1)
        self._free_slots = list(range(self.capacity - 1, -1, -1))
        for row, key in enumerate(keys):
            slot = self._claim_slot(key)
            self.features[slot] = features[row].to(self.device, self.features.dtype)
            self.cell_filled[slot] = filled[row].to(self.device)

    def _claim_slot(self, key: tuple[int, int]) -> int:
        if key in self._slots:
            self._slots.move_to_end(key)
            return self._slots[key]
        if self._free_slots:
            slot = self._free_slots.pop()
        else:
            (old_volume, old_z), slot = self._slots.popitem(last=False)
            self.slot_table[old_volume, old_z] = -1
        self._slots[key] = slot
        self.slot_table[key[0], key[1]] = slot
        return slot

    # --- insertion -----------------------------------------------------------------------------
    def insert(self, volume_index: int, features: torch.Tensor, coords_zyx: torch.Tensor) -> None:
        """Store one slice: features (d, h, w), coords_zyx (3, h, w) voxel positions of its pixels."""
        self.insert_batch(torch.tensor([volume_index]), features.unsqueeze(0), coords_zyx.unsqueeze(0))

    @torch.no_grad()
    def insert_batch(self, volume_indices: torch.Tensor, features: torch.Tensor, coords_zyx: torch.Tensor) -> None:
        """Store a batch of slices: volume_indices (b,), features (b, d, h, w), coords_zyx (b, 3, h, w).

        Pixels whose coordinates are not finite or fall outside their volume (padding introduced by the
        augmentation) are skipped. All other pixels of a slice must share one rounded z (in-plane
        augmentation). If a batch holds the same slice twice, the later copy is stored.
        """
        b, d, h, w = features.shape
        if d != self.feature_channels or tuple(coords_zyx.shape) != (b, 3, h, w) or len(volume_indices) != b:
            raise ValueError(
                f"expected features (b, {self.feature_channels}, h, w), coords_zyx (b, 3, h, w) and b volume "
                f"indices, got {tuple(features.shape)}, {tuple(coords_zyx.shape)} and {len(volume_indices)}"
            )
        volumes = torch.as_tensor(volume_indices, device=self.device).long()
        if bool(((volumes < 0) | (volumes >= len(self.volume_shapes_zyx))).any()):
            raise ValueError(f"volume indices {volumes.tolist()} outside [0, {len(self.volume_shapes_zyx)})")
        coords = coords_zyx.detach().to(self.device, torch.float32)
        rounded = torch.round(torch.nan_to_num(coords, nan=-1.0, posinf=-1.0, neginf=-1.0)).long()
        shapes = self.volume_shapes_zyx[volumes].view(b, 3, 1, 1)
        inside = torch.isfinite(coords).all(1) & ((rounded >= 0) & (rounded < shapes)).all(1)  # (b, h, w)

        z_big = torch.iinfo(torch.long).max
        z_min = torch.where(inside, rounded[:, 0], z_big).flatten(1).min(1).values
        z_max = torch.where(inside, rounded[:, 0], -1).flatten(1).max(1).values
        latest: dict[tuple[int, int], int] = {}
        for i, (volume, low, high) in enumerate(zip(volumes.tolist(), z_min.tolist(), z_max.tolist())):
            if high < 0:
                continue  # no pixel of this crop lies inside its volume
            if low != high:
                raise ValueError(f"slice {i} of the batch spans z {low}..{high}; the bank expects in-plane slices")
            latest[(volume, low)] = i
        if not latest:
            return
        kept = list(latest.items())[-self.capacity :]  # more slices than slots: the first would be evicted at once
        batch_rows = [row for _, row in kept]
        slots = [self._claim_slot(key) for key, _ in kept]

        f = self.downsample_factor
        h_r, w_r = self.grid_hw
        n_cells = h_r * w_r
        sums = torch.zeros((len(batch_rows), d, n_cells + 1), device=self.device)  # last column: discarded pixels
        counts = torch.zeros((len(batch_rows), n_cells + 1), device=self.device)
        for k, row in enumerate(batch_rows):
            # index_add_ along the pixel axis reads the (d, h*w) map in place, with no channels-last copy
            cell = (rounded[row, 1] // f) * w_r + rounded[row, 2] // f
            cell = torch.where(inside[row], cell, n_cells).reshape(-1)
            pixels = features[row].detach().to(self.device, torch.float32).reshape(d, h * w)
            sums[k].index_add_(1, cell, pixels)
            counts[k] = torch.bincount(cell, minlength=n_cells + 1).to(counts.dtype)
        means = sums[:, :, :n_cells] / counts[:, None, :n_cells].clamp(min=1)
        slot_index = torch.tensor(slots, device=self.device)
        self.features[slot_index] = means.transpose(1, 2).reshape(len(batch_rows), h_r, w_r, d).to(self.features.dtype)
        self.cell_filled[slot_index] = (counts[:, :n_cells] > 0).reshape(len(batch_rows), h_r, w_r)

    # --- lookup --------------------------------------------------------------------------------
    @torch.no_grad()
    def gather(self, volume_indices: torch.Tensor, points_zyx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features at voxel points: volume_indices (n,), points_zyx (n, 3) -> (features (n, d) float32, found (n,)).

        A point is found when slice round(z) of its volume is stored, the point lies inside the volume
        and the reduced cell holding it (bilinear: at least one of the 4 around it) has features.
        Rows not found are zero.
        """
        rows, features = self.gather_found(volume_indices, points_zyx)
        n = int(torch.as_tensor(volume_indices).shape[0])
        result = torch.zeros((n, self.feature_channels), device=self.device)
        found = torch.zeros(n, dtype=torch.bool, device=self.device)
        result[rows] = features
        found[rows] = True
        return result, found

    @torch.no_grad()
    def gather_found(self, volume_indices: torch.Tensor, points_zyx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`gather`, but only the hits: (row indices (m,) into the query, features (m, d) float32)."""
        points = torch.as_tensor(points_zyx, device=self.device).float()
        volumes = torch.as_tensor(volume_indices, device=self.device).long()
        n = points.shape[0]
        if tuple(points.shape) != (n, 3) or tuple(volumes.shape) != (n,):
            raise ValueError(
                f"expected volume_indices (n,) and points_zyx (n, 3), got {tuple(volumes.shape)} and {tuple(points.shape)}"
            )
        # The slice test (z) runs on every query and discards most of them; the in-plane tests run on the
        # remaining candidates only. No boolean-mask copies of the full query.
        n_volumes, max_z = self.slot_table.shape
        clamped_volumes = volumes.clamp(0, n_volumes - 1)
        z = torch.round(torch.nan_to_num(points[:, 0], nan=-1.0, posinf=-1.0, neginf=-1.0)).long()
        slice_known = (volumes == clamped_volumes) & (z >= 0) & (z < self.volume_shapes_zyx[clamped_volumes, 0])
        slot = self.slot_table[clamped_volumes, z.clamp(0, max_z - 1)]
        rows = torch.nonzero(slice_known & (slot >= 0)).squeeze(1)
        points_yx = points[rows, 1:]
        rounded_yx = torch.round(torch.nan_to_num(points_yx, nan=-1.0, posinf=-1.0, neginf=-1.0)).long()
        inside = (rounded_yx >= 0) & (rounded_yx < self.volume_shapes_zyx[volumes[rows], 1:])
        keep = torch.nonzero(inside.all(1) & torch.isfinite(points_yx).all(1)).squeeze(1)
        rows, slot, points_yx, rounded_yx = rows[keep], slot[rows[keep]], points_yx[keep], rounded_yx[keep]
        if self.settings.bilinear:
            return self._bilinear(rows, slot, points_yx)
        cell_yx = rounded_yx // self.downsample_factor  # rounded_yx >= 0 here
        filled = self.cell_filled[slot, cell_yx[:, 0], cell_yx[:, 1]]
        rows, slot, cell_yx = rows[filled], slot[filled], cell_yx[filled]
        return rows, self.features[slot, cell_yx[:, 0], cell_yx[:, 1]].float()

    def _bilinear(self, rows: torch.Tensor, slots: torch.Tensor, points_yx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Blend the filled cells among the 4 around each point, weights renormalised over them."""
        f = self.downsample_factor
        h_r, w_r = self.grid_hw
        u = (points_yx - (f - 1) / 2.0) / f  # reduced-grid position: cell i is centred on voxel i*f + (f-1)/2
        base = torch.floor(u)
        fraction = u - base
        base = base.long()
        blended = torch.zeros((rows.shape[0], self.feature_channels), device=self.device)
        weight_sum = torch.zeros(rows.shape[0], device=self.device)
        for dy in (0, 1):
            for dx in (0, 1):
                cy, cx = base[:, 0] + dy, base[:, 1] + dx
                weight = (fraction[:, 0] if dy else 1 - fraction[:, 0]) * (fraction[:, 1] if dx else 1 - fraction[:, 1])
                in_grid = (cy >= 0) & (cy < h_r) & (cx >= 0) & (cx < w_r)
                cy, cx = cy.clamp(0, h_r - 1), cx.clamp(0, w_r - 1)
                weight = weight * (in_grid & self.cell_filled[slots, cy, cx])
                blended += weight.unsqueeze(1) * self.features[slots, cy, cx].float()
                weight_sum += weight
        hit = weight_sum > 1e-6
        return rows[hit], blended[hit] / weight_sum[hit].unsqueeze(1)
