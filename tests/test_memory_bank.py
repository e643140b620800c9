import math

import pytest
import torch

from cctrnet.training.memory_bank import FeatureMemoryBank, MemoryBankSettings, bank_capacity

EXACT = MemoryBankSettings(downsample_factor=1, storage_dtype="float32")


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def grid_coords(z: float, h: int, w: int, offset_y: float = 0.0, offset_x: float = 0.0) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h) + offset_y, torch.arange(w) + offset_x, indexing="ij")
    return torch.stack([torch.full((h, w), float(z)), yy.float(), xx.float()])


def constant_features(value: float, d: int, h: int, w: int) -> torch.Tensor:
    return torch.full((d, h, w), value)


def test_capacity_is_a_fifth_of_the_training_slices():
    assert bank_capacity(1930) == 386
    assert bank_capacity(2) == 1
    bank = FeatureMemoryBank([(10, 8, 8), (5, 8, 8)], feature_channels=2)
    assert bank.capacity == 3
    with pytest.raises(ValueError):
        bank_capacity(0)


def test_fifo_evicts_the_oldest_slice():
    bank = FeatureMemoryBank([(4, 4, 4)] * 2, 1, EXACT, capacity=2)
    for volume, z in [(0, 0), (0, 1), (1, 2)]:
        bank.insert(volume, constant_features(float(z), 1, 4, 4), grid_coords(z, 4, 4))
    assert bank.keys() == [(0, 1), (1, 2)]
    assert (0, 0) not in bank and len(bank) == 2
    _, found = bank.gather(torch.tensor([0, 0]), torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]]))
    assert found.tolist() == [False, True]


def test_reinserted_slice_is_replaced_and_becomes_newest():
    bank = FeatureMemoryBank([(4, 4, 4)], 1, EXACT, capacity=2)
    bank.insert(0, constant_features(1.0, 1, 4, 4), grid_coords(0, 4, 4))
    bank.insert(0, constant_features(2.0, 1, 4, 4), grid_coords(1, 4, 4))
    bank.insert(0, constant_features(3.0, 1, 4, 4), grid_coords(0, 4, 4))  # same slice again
    assert len(bank) == 2 and bank.keys() == [(0, 1), (0, 0)]
    features, _ = bank.gather(torch.tensor([0]), torch.tensor([[0.0, 2.0, 2.0]]))
    assert features.item() == pytest.approx(3.0)
    bank.insert(0, constant_features(4.0, 1, 4, 4), grid_coords(2, 4, 4))  # evicts (0, 1), the oldest now
    assert bank.keys() == [(0, 0), (0, 2)]


def test_insertion_averages_pixels_per_reduced_cell():
    bank = FeatureMemoryBank([(1, 4, 4)], 1, MemoryBankSettings(downsample_factor=2, storage_dtype="float32"))
    values = torch.arange(16.0).reshape(1, 4, 4)
    bank.insert(0, values, grid_coords(0, 4, 4))
    expected = {(0, 0): (0 + 1 + 4 + 5) / 4, (0, 3): (2 + 3 + 6 + 7) / 4, (3, 0): (8 + 9 + 12 + 13) / 4, (2, 2): (10 + 11 + 14 + 15) / 4}
    points = torch.tensor([[0.0, y, x] for y, x in expected], dtype=torch.float32)
    features, found = bank.gather(torch.zeros(4, dtype=torch.long), points)
    assert found.all()
    assert features[:, 0].tolist() == pytest.approx(list(expected.values()))


def test_augmented_crop_is_stored_in_the_canonical_grid():
    """A crop flipped in x and shifted: every pixel goes back to its own voxel."""
    bank = FeatureMemoryBank([(3, 6, 6)], 2, EXACT)
    coords = grid_coords(2, 3, 4, offset_y=1, offset_x=2).flip(-1)  # pixel (i, j) shows voxel (1+i, 5-j)
    features = torch.stack([coords[1], coords[2]])  # feature = the voxel's own (y, x)
    bank.insert(0, features, coords)
    points = torch.tensor([[2.0, 1.0, 2.0], [2.0, 3.0, 5.0], [2.0, 2.0, 4.0]])
    looked_up, found = bank.gather(torch.zeros(3, dtype=torch.long), points)
    assert found.all()
    assert torch.equal(looked_up, points[:, 1:])
    # voxels the crop did not reach are not found
    _, found = bank.gather(torch.zeros(2, dtype=torch.long), torch.tensor([[2.0, 0.0, 0.0], [2.0, 5.0, 5.0]]))
    assert not found.any()


def test_lookup_outside_volume_or_bank_is_not_found():
    bank = FeatureMemoryBank([(2, 8, 8), (2, 4, 4)], 1, EXACT, capacity=4)
    bank.insert(1, constant_features(1.0, 1, 4, 4), grid_coords(0, 4, 4))
    bank.insert(0, constant_features(2.0, 1, 8, 8), grid_coords(0, 8, 8))
    points = torch.tensor(
        [[0.0, 3.0, 3.0], [0.0, 6.0, 6.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 1.0], [0.2, 1.0, 1.0], [math.nan, 1.0, 1.0]]
    )
    volumes = torch.tensor([1, 1, 1, 1, 1, 1])
    features, found = bank.gather(volumes, points)
    # (6, 6) is inside the shared grid but outside volume 1; z=1 is not stored; z=-1 outside; z=0.2 -> 0
    assert found.tolist() == [True, False, False, False, True, False]
    assert features[~found].abs().sum() == 0
    _, found = bank.gather(torch.tensor([5]), torch.tensor([[0.0, 1.0, 1.0]]))  # unknown volume
    assert not found.any()


def test_invalid_pixels_are_skipped_and_mixed_z_is_rejected():
    bank = FeatureMemoryBank([(2, 4, 4)], 1, EXACT)
    coords = grid_coords(1, 4, 4)
    coords[:, 0, :] = math.nan  # padding row of an augmented crop
    coords[1:, 1, :] = -5.0  # outside the volume
    bank.insert(0, constant_features(1.0, 1, 4, 4), coords)
    _, found = bank.gather(torch.zeros(4, dtype=torch.long), torch.tensor([[1.0, r, 0.0] for r in range(4)]))
    assert found.tolist() == [False, False, True, True]
    fully_outside = torch.full((3, 4, 4), -3.0)
    bank.insert(0, constant_features(1.0, 1, 4, 4), fully_outside)
    assert bank.keys() == [(0, 1)]
    mixed = grid_coords(0, 4, 4)
    mixed[0, 2:] = 1.0
    with pytest.raises(ValueError, match="in-plane"):
        bank.insert(0, constant_features(1.0, 1, 4, 4), mixed)


def test_batched_insert_keeps_the_later_copy_of_a_repeated_slice():
    bank = FeatureMemoryBank([(2, 4, 4)] * 2, 1, EXACT, capacity=4)
    features = torch.stack([constant_features(v, 1, 4, 4) for v in (1.0, 2.0, 3.0)])
    coords = torch.stack([grid_coords(0, 4, 4), grid_coords(1, 4, 4), grid_coords(0, 4, 4)])
    bank.insert_batch(torch.tensor([0, 1, 0]), features, coords)
    assert sorted(bank.keys()) == [(0, 0), (1, 1)]
    looked_up, _ = bank.gather(torch.tensor([0, 1]), torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]]))
    assert looked_up[:, 0].tolist() == [3.0, 2.0]
    assert bank.volumes_present() == [0, 1]


def test_bilinear_lookup_blends_filled_cells():
    settings = MemoryBankSettings(downsample_factor=2, storage_dtype="float32", bilinear=True)
    bank = FeatureMemoryBank([(1, 4, 8)], 1, settings)
    values = torch.tensor([0.0, 0.0, 2.0, 2.0, 4.0, 4.0, 6.0, 6.0]).expand(1, 4, 8)
    coords = grid_coords(0, 4, 8)
    bank.insert(0, values[:, :, :6], coords[:, :, :6])  # last reduced column stays empty
    # cell x-centres are voxels 0.5, 2.5, 4.5: x=1.5 is half-way between cells 0 and 1
    features, found = bank.gather(torch.zeros(3, dtype=torch.long), torch.tensor([[0.0, 0.5, 1.5], [0.0, 0.5, 3.0], [0.0, 0.5, 5.5]]))
    assert found.all()
    assert features[:, 0].tolist() == pytest.approx([1.0, 2.5, 4.0])  # x=5.5: only cell 2 is filled


def test_float16_storage_returns_float32_close_values():
    bank = FeatureMemoryBank([(1, 4, 4)], 3, MemoryBankSettings(downsample_factor=1))
    features = torch.nn.functional.normalize(torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(0)), dim=0)
    bank.insert(0, features, grid_coords(0, 4, 4))
    looked_up, found = bank.gather(torch.zeros(1, dtype=torch.long), torch.tensor([[0.0, 2.0, 1.0]]))
    assert looked_up.dtype == torch.float32 and found.all()
    assert torch.allclose(looked_up[0], features[:, 2, 1], atol=2e-3)
    assert bank.features.dtype == torch.float16


def test_shape_errors_name_the_problem():
    bank = FeatureMemoryBank([(1, 4, 4)], 2, EXACT)
    with pytest.raises(ValueError, match="features"):
        bank.insert(0, torch.zeros(3, 4, 4), grid_coords(0, 4, 4))
    with pytest.raises(ValueError, match="volume indices"):
        bank.insert(3, torch.zeros(2, 4, 4), grid_coords(0, 4, 4))
    with pytest.raises(ValueError, match="volume_shapes_zyx"):
        FeatureMemoryBank([(0, 4, 4)], 2)


def test_state_dict_round_trip_keeps_order_and_features(tmp_path):
    bank = FeatureMemoryBank([(3, 4, 4)] * 2, 2, MemoryBankSettings(downsample_factor=2), capacity=3)
    generator = torch.Generator().manual_seed(0)
    for volume, z in [(0, 0), (1, 2), (0, 1)]:
        bank.insert(volume, torch.randn(2, 4, 4, generator=generator), grid_coords(z, 4, 4))
    torch.save(bank.state_dict(), tmp_path / "bank.pt")
    restored = FeatureMemoryBank([(3, 4, 4)] * 2, 2, MemoryBankSettings(downsample_factor=2), capacity=3)
    restored.load_state_dict(torch.load(tmp_path / "bank.pt", weights_only=True))
    assert restored.keys() == bank.keys()
    points = torch.tensor([[0.0, 1.0, 1.0], [2.0, 3.0, 0.0], [1.0, 2.0, 2.0]])
    volumes = torch.tensor([0, 1, 0])
    assert torch.equal(restored.gather(volumes, points)[0], bank.gather(volumes, points)[0])
    restored.insert(1, torch.zeros(2, 4, 4), grid_coords(0, 4, 4))  # FIFO continues: (0, 0) is the oldest
    assert (0, 0) not in restored and (1, 0) in restored
    other_grid = FeatureMemoryBank([(3, 8, 8)] * 2, 2, MemoryBankSettings(downsample_factor=2), capacity=3)
    with pytest.raises(ValueError, match="memory bank state"):
        other_grid.load_state_dict(bank.state_dict())


def test_batch_larger_than_the_bank_keeps_its_last_slices():
    bank = FeatureMemoryBank([(4, 4, 4)], 1, EXACT, capacity=2)
    features = torch.stack([constant_features(float(z), 1, 4, 4) for z in range(4)])
    coords = torch.stack([grid_coords(z, 4, 4) for z in range(4)])
    bank.insert_batch(torch.zeros(4, dtype=torch.long), features, coords)
    assert bank.keys() == [(0, 2), (0, 3)]
    looked_up, found = bank.gather(torch.zeros(2, dtype=torch.long), torch.tensor([[2.0, 1.0, 1.0], [3.0, 1.0, 1.0]]))
    assert found.all() and looked_up[:, 0].tolist() == [2.0, 3.0]


# --- lookups at non-integer coordinates (issue 13: weak places) ------------------------------------------------
def _ramp_bank(settings: MemoryBankSettings, shape_zyx=(3, 6, 9)) -> FeatureMemoryBank:
    """One stored slice z=1 whose two feature channels are the voxel's own y and x (unequal sizes: 6 x 9)."""
    _, h, w = shape_zyx
    bank = FeatureMemoryBank([shape_zyx, (2, 4, 4)], 2, settings)
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    bank.insert(0, torch.stack([yy, xx]), grid_coords(1, h, w))
    return bank


def test_nearest_lookup_rounds_non_integer_points_per_axis():
    bank = _ramp_bank(EXACT)
    points = torch.tensor([[1.4, 2.3, 6.6], [0.6, 4.7, 1.2], [1.0, 0.49, 8.4], [1.49, 5.4, 7.51]])
    features, found = bank.gather(torch.zeros(4, dtype=torch.long), points)
    assert found.tolist() == [True, True, True, True]  # z 1.4, 0.6 and 1.49 round to the stored slice 1
    assert features.tolist() == [[2.0, 7.0], [5.0, 1.0], [0.0, 8.0], [5.0, 8.0]]  # (y, x), never swapped


def test_points_rounding_outside_the_slice_or_volume_are_not_found():
    bank = _ramp_bank(EXACT)
    points = torch.tensor([[1.6, 2.0, 2.0], [0.4, 2.0, 2.0], [1.0, 5.6, 2.0], [1.0, 2.0, 8.6], [1.0, -0.6, 2.0],
                           [1.0, 2.0, -0.51], [1.0, 5.4, 8.4], [float("nan"), 1.0, 1.0]])
    _, found = bank.gather(torch.zeros(len(points), dtype=torch.long), points)
    assert found.tolist() == [False, False, False, False, False, False, True, False]
    _, other_volume = bank.gather(torch.tensor([1]), torch.tensor([[1.0, 2.0, 2.0]]))
    assert other_volume.tolist() == [False]  # same slice index, another volume: not stored


def test_bilinear_lookup_interpolates_between_cells():
    bank = _ramp_bank(MemoryBankSettings(downsample_factor=1, storage_dtype="float32", bilinear=True))
    points = torch.tensor([[1.2, 2.25, 6.5], [1.0, 0.75, 3.1], [1.0, 4.0, 7.0]])
    features, found = bank.gather(torch.zeros(3, dtype=torch.long), points)
    assert found.all()
    assert torch.allclose(features, points[:, 1:], atol=1e-5)  # a linear ramp is reproduced exactly


def test_bilinear_lookup_with_a_reduced_grid_follows_cell_centres():
    bank = _ramp_bank(MemoryBankSettings(downsample_factor=3, storage_dtype="float32", bilinear=True), (3, 6, 9))
    # reduced cell i holds the mean of voxels 3i..3i+2, centred on voxel 3i+1: the ramp is linear there too
    points = torch.tensor([[1.0, 1.0, 1.0], [1.0, 2.5, 4.0], [1.0, 4.0, 5.5], [1.0, 1.75, 7.0]])
    features, found = bank.gather(torch.zeros(4, dtype=torch.long), points)
    assert found.all()
    assert torch.allclose(features, points[:, 1:], atol=1e-5)
