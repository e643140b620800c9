import math

import pytest
import torch
import torch.nn.functional as F

from cctrnet.training.losses.cross_pseudo_supervision import (
    cross_pseudo_supervision_loss,
    symmetric_cross_pseudo_supervision,
)
from cctrnet.training.losses.dice_ce import DiceSettings, cross_entropy_loss, dice_ce_loss, soft_dice_loss
from cctrnet.training.losses.registration_positives import (
    RegisteredPositiveSettings,
    anchor_voxel_points,
    combine_positive_keys,
    registered_positive_keys,
)
from cctrnet.training.losses.registration_supervision import registration_supervision_loss
from cctrnet.training.losses.supervised_contrastive import (
    ContrastiveSettings,
    class_positive_keys,
    contrastive_loss_from_map,
    sample_contrastive_pixels,
    supervised_contrastive_loss,
)
from cctrnet.training.memory_bank import FeatureMemoryBank, MemoryBankSettings
from cctrnet.training.projector import ProjectionHead, ProjectorSettings

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]  # skipped without a GPU (conftest)
SMOOTH = DiceSettings().smooth


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def logits_from_probabilities(probabilities: list[list[float]]) -> torch.Tensor:
    """(1, c, 1, n) logits whose softmax is the given per-pixel class probabilities."""
    return torch.log(torch.tensor(probabilities)).t().reshape(1, len(probabilities[0]), 1, len(probabilities))


def dice_term(intersection: float, denominator: float) -> float:
    return (2 * intersection + SMOOTH) / (denominator + SMOOTH)


# --- Dice + CE -------------------------------------------------------------------------------------
def test_dice_and_ce_match_hand_computation():
    logits = logits_from_probabilities([[0.8, 0.2], [0.4, 0.6]])
    target = torch.tensor([[[0, 1]]])
    # class 0: intersection 0.8, sum p^2 = 0.64 + 0.16, sum y = 1; class 1: 0.6, 0.04 + 0.36, 1
    expected_dice = 1 - (dice_term(0.8, 1.8) + dice_term(0.6, 1.4)) / 2
    expected_ce = -(math.log(0.8) + math.log(0.6)) / 2
    assert soft_dice_loss(logits, target).item() == pytest.approx(expected_dice, rel=1e-5)
    assert cross_entropy_loss(logits, target).item() == pytest.approx(expected_ce, rel=1e-5)
    assert dice_ce_loss(logits, target).item() == pytest.approx(expected_dice + expected_ce, rel=1e-5)
    no_background = DiceSettings(include_background=False)
    assert soft_dice_loss(logits, target, no_background).item() == pytest.approx(1 - dice_term(0.6, 1.4), rel=1e-5)
    linear = DiceSettings(squared_denominator=False)
    expected_linear = 1 - (dice_term(0.8, 1.2 + 1) + dice_term(0.6, 0.8 + 1)) / 2
    assert soft_dice_loss(logits, target, linear).item() == pytest.approx(expected_linear, rel=1e-5)


def test_batch_dice_differs_from_per_sample_dice():
    logits = torch.cat([logits_from_probabilities([[0.9, 0.1], [0.9, 0.1]]), logits_from_probabilities([[0.3, 0.7], [0.3, 0.7]])])
    target = torch.tensor([[[0, 0]], [[1, 1]]])
    # batch: class 0 I=1.8, den=0.81*2+0.09*2+2; class 1 I=1.4, den=0.01*2+0.49*2+2
    batch = 1 - (dice_term(1.8, 3.8) + dice_term(1.4, 3.0)) / 2
    # per sample: sample 0 has no class-1 voxels (dice of class 1 = smooth/(0.02+smooth) ~ 0)
    sample0 = (dice_term(1.8, 3.62) + dice_term(0.0, 0.02)) / 2
    sample1 = (dice_term(0.0, 0.18) + dice_term(1.4, 2.98)) / 2
    per_sample = 1 - (sample0 + sample1) / 2
    assert soft_dice_loss(logits, target).item() == pytest.approx(batch, rel=1e-5)
    assert soft_dice_loss(logits, target, DiceSettings(batch_dice=False)).item() == pytest.approx(per_sample, rel=1e-5)


def test_ignored_pixels_count_in_neither_term_and_get_no_gradient():
    base_logits = logits_from_probabilities([[0.8, 0.2], [0.4, 0.6]])
    extra = torch.tensor([3.0, -2.0]).reshape(1, 2, 1, 1)
    logits = torch.cat([base_logits, extra], dim=3).requires_grad_()
    target = torch.tensor([[[0, 1, -1]]])
    loss = dice_ce_loss(logits, target)
    assert loss.item() == pytest.approx(dice_ce_loss(base_logits, torch.tensor([[[0, 1]]])).item(), rel=1e-6)
    loss.backward()
    assert logits.grad[..., 2].abs().max() == 0
    assert logits.grad[..., :2].abs().max() > 0


def test_all_ignored_gives_zero_with_a_graph():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = dice_ce_loss(logits, torch.full((1, 2, 2), -1))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_bad_targets_are_rejected():
    logits = torch.zeros(1, 3, 2, 2)
    with pytest.raises(ValueError, match="outside"):
        soft_dice_loss(logits, torch.tensor([[[0, 3], [1, 2]]]))
    with pytest.raises(ValueError, match="shape"):
        soft_dice_loss(logits, torch.zeros(1, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        cross_entropy_loss(logits, torch.zeros(1, 2, 2))


# --- cross pseudo supervision ----------------------------------------------------------------------
def test_cps_uses_the_teachers_argmax_and_stops_its_gradient():
    student = logits_from_probabilities([[0.8, 0.2], [0.4, 0.6]]).requires_grad_()
    teacher = logits_from_probabilities([[0.3, 0.7], [0.9, 0.1]]).requires_grad_()  # argmax: [1, 0]
    loss = cross_pseudo_supervision_loss(student, teacher)
    # target [1, 0]: class 0 I=0.4, den=0.64+0.16+1; class 1 I=0.2, den=0.04+0.36+1
    assert loss.item() == pytest.approx(1 - (dice_term(0.4, 1.8) + dice_term(0.2, 1.4)) / 2, rel=1e-5)
    loss.backward()
    assert student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_symmetric_cps_teaches_each_branch_with_the_other():
    a = torch.randn(2, 4, 5, 5, requires_grad=True)
    b = torch.randn(2, 4, 5, 5, requires_grad=True)
    loss_a, loss_b = symmetric_cross_pseudo_supervision(a, b)
    assert loss_a.item() == pytest.approx(soft_dice_loss(a, b.argmax(1)).item())
    assert loss_b.item() == pytest.approx(soft_dice_loss(b, a.argmax(1)).item())
    loss_a.backward()
    assert a.grad.abs().sum() > 0 and b.grad is None


# --- registration supervision ----------------------------------------------------------------------
def test_rsl_ignores_voxels_outside_the_moving_volume():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 9, 6, 6, generator=generator)
    registered = torch.randint(0, 9, (2, 6, 6), generator=generator)
    registered[:, :2] = -1
    loss = registration_supervision_loss(logits, registered)
    changed = logits.clone()
    changed[:, :, :2] = torch.randn(2, 9, 2, 6, generator=generator)
    assert registration_supervision_loss(changed, registered).item() == pytest.approx(loss.item(), rel=1e-6)
    inside_only = dice_ce_loss(logits[:, :, 2:], registered[:, 2:])
    assert loss.item() == pytest.approx(inside_only.item(), rel=1e-5)


# --- projector --------------------------------------------------------------------------------------
def test_projector_gives_unit_vectors_and_acts_per_pixel():
    torch.manual_seed(0)
    head = ProjectionHead(16)
    features = torch.randn(2, 16, 5, 7)
    projected = head(features)
    assert projected.shape == (2, 128, 5, 7)
    assert torch.allclose(projected.norm(dim=1), torch.ones(2, 5, 7), atol=1e-5)
    pixel_vectors = features[1, :, 3, 4].unsqueeze(0)
    assert torch.allclose(head(pixel_vectors)[0], projected[1, :, 3, 4], atol=1e-5)
    with_bn = ProjectionHead(16, ProjectorSettings(hidden_channels=32, out_channels=8, batch_norm=True))
    assert with_bn(features).shape == (2, 8, 5, 7)
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in with_bn.modules())
    with pytest.raises(ValueError, match="16"):
        head(torch.randn(2, 8, 5, 7))


# --- supervised contrastive loss -------------------------------------------------------------------
def test_scl_matches_hand_computation():
    vectors = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-0.6, 0.8]])  # classes 0, 0, 1, 1
    features = vectors.t().reshape(1, 2, 1, 4)
    labels = torch.tensor([[[0, 0, 1, 1]]])
    probabilities = torch.full((1, 1, 4), 0.9)
    tau = 0.1
    dot = vectors @ vectors.t()

    def anchor_loss(i: int, positive: int, negatives: list[int]) -> float:
        numerator = math.exp(dot[i, positive] / tau)
        return -math.log(numerator / (numerator + sum(math.exp(dot[i, n] / tau) for n in negatives)))

    # with two anchors per class, the positive key of one is the other (unit length already)
    class0 = (anchor_loss(0, 1, [2, 3]) + anchor_loss(1, 0, [2, 3])) / 2
    class1 = (anchor_loss(2, 3, [0, 1]) + anchor_loss(3, 2, [0, 1])) / 2
    loss = contrastive_loss_from_map(features, labels, probabilities)
    assert loss.item() == pytest.approx((class0 + class1) / 2, rel=1e-5)


def test_anchor_selection_respects_threshold_ignore_and_cap():
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 3, (2, 10, 10), generator=generator)
    labels[0, :2] = -1
    probabilities = torch.rand(2, 10, 10, generator=generator)
    settings = ContrastiveSettings(anchors_per_class=7, negatives_per_class=6)
    pixels = sample_contrastive_pixels(labels, probabilities, settings, torch.Generator().manual_seed(0))
    b, y, x = pixels.anchor_positions_byx.unbind(1)
    assert torch.equal(labels[b, y, x], pixels.anchor_classes)
    assert (probabilities[b, y, x] > 0.5).all()
    assert pixels.class_ids == [0, 1, 2] and pixels.anchor_counts == [7, 7, 7]
    assert len(set(pixels.anchor_flat.tolist())) == 21  # without replacement
    nb, ny, nx = pixels.negative_positions_byx.unbind(1)
    assert (labels[nb, ny, nx] >= 0).all() and (probabilities[nb, ny, nx] > 0.5).all()
    # anchors of each class are confined to that class, negatives to the others
    start = 0
    for c, count in zip(pixels.class_ids, pixels.negative_counts):
        assert (pixels.negative_classes[start : start + count] != c).all()
        start += count


def test_negatives_are_split_evenly_over_the_other_classes():
    labels = torch.tensor([0] * 40 + [1] * 40 + [2] * 40 + [3] * 2).reshape(1, 1, -1)
    probabilities = torch.ones_like(labels, dtype=torch.float32)
    settings = ContrastiveSettings(negatives_per_class=10)
    pixels = sample_contrastive_pixels(labels, probabilities, settings, torch.Generator().manual_seed(0))
    per_class = torch.split(pixels.negative_classes, pixels.negative_counts)
    counts = {c: torch.bincount(n, minlength=4).tolist() for c, n in zip(pixels.class_ids, per_class)}
    # 10 over 3 other classes: 4, 3, 3 (remainder to the lowest index); class 3 has only 2 pixels to give
    assert counts[0] == [0, 4, 3, 2]
    assert counts[3] == [4, 3, 3, 0]
    unconfident = torch.tensor([0.9] * 80 + [0.1] * 40 + [0.9] * 2).reshape(1, 1, -1)
    both = sample_contrastive_pixels(labels, unconfident, ContrastiveSettings(negatives_per_class=10, confident_negatives=False))
    confident_only = sample_contrastive_pixels(labels, unconfident, settings)
    assert 2 in both.negative_classes.tolist() and 2 not in confident_only.negative_classes.tolist()


def test_positive_key_is_the_leave_one_out_mean_of_the_class_anchors():
    vectors = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 0.0, 0.0]]), dim=1)
    features = vectors.t().reshape(1, 3, 1, 5)
    labels = torch.tensor([[[0, 0, 0, 0, 1]]])
    pixels = sample_contrastive_pixels(labels, torch.ones(1, 1, 5), ContrastiveSettings(), torch.Generator().manual_seed(0))
    anchors, _ = pixels.gather(features)
    keys = class_positive_keys(anchors, pixels)
    for k in range(4):
        flat = int(pixels.anchor_flat[k])
        if flat == 4:
            continue  # class 1 has a single pixel and is skipped
        others = [vectors[i] for i in range(4) if i != flat]
        assert torch.allclose(keys[k], F.normalize(torch.stack(others).sum(0), dim=0), atol=1e-6)
    assert pixels.class_ids == [0]


def test_classes_without_two_anchors_or_negatives_give_zero_with_graph():
    features = F.normalize(torch.randn(1, 4, 3, 3), dim=1).requires_grad_()
    labels = torch.zeros(1, 3, 3, dtype=torch.long)  # one class only: no negatives
    loss = contrastive_loss_from_map(features, labels, torch.ones(1, 3, 3))
    assert loss.item() == 0.0
    loss.backward()
    assert features.grad is not None


def test_sampling_is_reproducible_with_a_generator():
    labels = torch.randint(0, 4, (2, 16, 16), generator=torch.Generator().manual_seed(3))
    probabilities = torch.ones(2, 16, 16)
    settings = ContrastiveSettings(anchors_per_class=10, negatives_per_class=9)
    first = sample_contrastive_pixels(labels, probabilities, settings, torch.Generator().manual_seed(5))
    again = sample_contrastive_pixels(labels, probabilities, settings, torch.Generator().manual_seed(5))
    other = sample_contrastive_pixels(labels, probabilities, settings, torch.Generator().manual_seed(6))
    assert torch.equal(first.anchor_flat, again.anchor_flat) and torch.equal(first.negative_flat, again.negative_flat)
    assert not torch.equal(first.anchor_flat, other.anchor_flat)


def test_scl_decreases_when_features_are_optimised():
    generator = torch.Generator().manual_seed(0)
    raw = torch.randn(2, 8, 12, 12, generator=generator, requires_grad=True)
    labels = torch.randint(0, 3, (2, 12, 12), generator=generator)
    probabilities = torch.ones(2, 12, 12)
    settings = ContrastiveSettings(anchors_per_class=50, negatives_per_class=40)

    def same_class_similarity() -> float:
        vectors = F.normalize(raw.detach(), dim=1).permute(0, 2, 3, 1).reshape(-1, 8)
        same = labels.reshape(-1, 1) == labels.reshape(1, -1)
        return (vectors @ vectors.t())[same].mean().item()

    similarity_before = same_class_similarity()
    losses = []
    for step in range(15):  # plain gradient descent on a free tensor
        loss = contrastive_loss_from_map(F.normalize(raw, dim=1), labels, probabilities, settings, torch.Generator().manual_seed(step))
        assert torch.isfinite(loss)
        loss.backward()
        with torch.no_grad():
            raw -= 10.0 * raw.grad
        raw.grad = None
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert same_class_similarity() > similarity_before + 0.2


def test_positive_override_replaces_keys_where_masked():
    generator = torch.Generator().manual_seed(2)
    features = F.normalize(torch.randn(1, 6, 8, 8, generator=generator), dim=1)
    labels = torch.randint(0, 3, (1, 8, 8), generator=generator)
    pixels = sample_contrastive_pixels(labels, torch.ones(1, 8, 8), generator=generator)
    anchors, negatives = pixels.gather(features)
    plain = supervised_contrastive_loss(anchors, negatives, pixels)
    none_masked = torch.zeros(pixels.n_anchors, dtype=torch.bool)
    assert supervised_contrastive_loss(anchors, negatives, pixels, positive_override=-anchors, override_mask=none_masked) == plain
    # the anchor itself is the best possible positive key: the loss must drop
    best = supervised_contrastive_loss(anchors, negatives, pixels, positive_override=anchors)
    assert best < plain
    with pytest.raises(ValueError, match="positive_override"):
        supervised_contrastive_loss(anchors, negatives, pixels, positive_override=anchors[:3])


def test_scl_gradient_reaches_the_decoder_through_gathered_pixels_only():
    torch.manual_seed(0)
    head = ProjectionHead(5, ProjectorSettings(hidden_channels=16, out_channels=8))
    decoder = torch.randn(2, 5, 6, 6, requires_grad=True)
    labels = torch.randint(0, 2, (2, 6, 6))
    labels[1, 0, 0] = -1
    pixels = sample_contrastive_pixels(labels, torch.ones(2, 6, 6), ContrastiveSettings(anchors_per_class=5, negatives_per_class=4))
    anchor_input, negative_input = pixels.gather(decoder)
    projected = head(torch.cat([anchor_input, negative_input]))
    loss = supervised_contrastive_loss(projected[: pixels.n_anchors], projected[pixels.n_anchors :], pixels)
    loss.backward()
    touched = decoder.grad.abs().sum(1) > 0
    used = torch.zeros(2, 6, 6, dtype=torch.bool)
    for b, y, x in torch.cat([pixels.anchor_positions_byx, pixels.negative_positions_byx]).tolist():
        used[b, y, x] = True
    assert torch.equal(touched, used) and not touched[1, 0, 0]
    # projecting gathered pixels equals gathering projected pixels (the head acts per pixel)
    anchors_from_map, _ = pixels.gather(head(decoder))
    assert torch.allclose(anchors_from_map, projected[: pixels.n_anchors], atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_losses_stay_on_the_input_device(device):
    logits = torch.randn(2, 4, 8, 8, device=device)
    labels = torch.randint(0, 4, (2, 8, 8), device=device)
    assert dice_ce_loss(logits, labels).device.type == device
    assert cross_pseudo_supervision_loss(logits, logits.flip(0)).device.type == device
    features = F.normalize(torch.randn(2, 6, 8, 8, device=device), dim=1)
    generator = torch.Generator(device=device).manual_seed(0)
    assert contrastive_loss_from_map(features, labels, torch.ones(2, 8, 8, device=device), generator=generator).device.type == device
    bank = FeatureMemoryBank([(2, 8, 8)] * 2, 6, device=device, capacity=4)
    coords = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(8.0), torch.arange(8.0), indexing="ij"))[:, 0]
    bank.insert(1, features[0], coords.to(device))
    keys, found = registered_positive_keys(
        torch.zeros(3, dtype=torch.long, device=device), coords[:, 0, :3].t().to(device), bank, lambda s, t, p: p
    )
    assert keys.device.type == device and found.all()


# --- registration-enhanced positives ---------------------------------------------------------------
def position_features(shape_yx: tuple[int, int], shift_yx: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """(4, h, w) unit features that encode the anatomical position (y - shift_y, x - shift_x)."""
    yy, xx = torch.meshgrid(torch.arange(shape_yx[0]).float() - shift_yx[0], torch.arange(shape_yx[1]).float() - shift_yx[1], indexing="ij")
    return F.normalize(torch.stack([torch.cos(yy / 3), torch.sin(yy / 3), torch.cos(xx / 3), torch.sin(xx / 3)]), dim=0)


def slice_coords(z: int, shape_yx: tuple[int, int]) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(shape_yx[0]).float(), torch.arange(shape_yx[1]).float(), indexing="ij")
    return torch.stack([torch.full(shape_yx, float(z)), yy, xx])


def test_reps_with_identity_transforms_returns_the_same_anatomical_position():
    shape = (10, 12)
    bank = FeatureMemoryBank([(3, *shape)] * 3, 4, MemoryBankSettings(downsample_factor=1, storage_dtype="float32"), capacity=3)
    for volume in (1, 2):
        bank.insert(volume, position_features(shape), slice_coords(2, shape))
    bank.insert(0, -position_features(shape), slice_coords(2, shape))  # the anchor's own volume must not count
    points = torch.tensor([[2.0, 3.0, 4.0], [2.0, 7.0, 1.0], [1.0, 3.0, 4.0]])  # the last: slice z=1 not stored
    keys, found = registered_positive_keys(torch.zeros(3, dtype=torch.long), points, bank, lambda s, t, p: p.clone())
    assert found.tolist() == [True, True, False]
    expected = position_features(shape)
    assert torch.allclose(keys[0], expected[:, 3, 4], atol=1e-6)
    assert torch.allclose(keys[1], expected[:, 7, 1], atol=1e-6)
    assert keys[2].abs().sum() == 0


def test_reps_follows_a_known_translation():
    shape = (12, 12)
    shift = (2.0, -3.0)  # anatomy of volume 1 sits 2 voxels lower and 3 to the left of volume 0's
    bank = FeatureMemoryBank([(4, *shape)] * 2, 4, MemoryBankSettings(downsample_factor=1, storage_dtype="float32"))
    bank.insert(1, position_features(shape, shift), slice_coords(1, shape))
    translation = torch.tensor([0.0, *shift])

    def map_points(source: int, target: int, points_zyx: torch.Tensor) -> torch.Tensor:
        assert (source, target) == (0, 1)
        return points_zyx + translation

    points = torch.tensor([[1.0, 4.0, 6.0], [1.0, 11.0, 5.0]])  # the second maps outside the volume (y=13)
    keys, found = registered_positive_keys(torch.zeros(2, dtype=torch.long), points, bank, map_points)
    assert found.tolist() == [True, False]
    assert torch.allclose(keys[0], position_features(shape)[:, 4, 6], atol=1e-6)


def test_reps_averages_over_the_volumes_found_and_can_limit_targets():
    shape = (4, 4)
    bank = FeatureMemoryBank([(1, *shape)] * 3, 2, MemoryBankSettings(downsample_factor=1, storage_dtype="float32"), capacity=3)
    bank.insert(1, torch.tensor([1.0, 0.0]).view(2, 1, 1).expand(2, *shape), slice_coords(0, shape))
    bank.insert(2, torch.tensor([0.0, 1.0]).view(2, 1, 1).expand(2, *shape), slice_coords(0, shape))
    point = torch.tensor([[0.0, 1.0, 1.0]])
    keys, found = registered_positive_keys(torch.tensor([0]), point, bank, lambda s, t, p: p)
    assert found.item() and torch.allclose(keys[0], F.normalize(torch.tensor([0.5, 0.5]), dim=0))
    limited = RegisteredPositiveSettings(max_target_volumes=1)
    keys, found = registered_positive_keys(torch.tensor([0]), point, bank, lambda s, t, p: p, limited, torch.Generator().manual_seed(0))
    assert found.item() and sorted(keys[0].tolist()) == [0.0, 1.0]


def test_combined_positive_key_uses_registered_key_only_where_found():
    class_keys = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    registered = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    combined = combine_positive_keys(class_keys, registered, torch.tensor([True, False]))
    assert torch.allclose(combined[0], F.normalize(torch.tensor([0.5, 0.5]), dim=0))
    assert torch.equal(combined[1], class_keys[1])
    weighted = combine_positive_keys(class_keys, registered, torch.tensor([True, False]), RegisteredPositiveSettings(0.25, 0.75))
    assert torch.allclose(weighted[0], F.normalize(torch.tensor([0.25, 0.75]), dim=0))


def test_anchor_voxel_points_read_the_coordinate_map():
    coords = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    positions = torch.tensor([[0, 1, 2], [1, 3, 4]])
    volumes, points = anchor_voxel_points(positions, coords, torch.tensor([7, 9]))
    assert volumes.tolist() == [7, 9]
    assert torch.equal(points[1], coords[1, :, 3, 4]) and torch.equal(points[0], coords[0, :, 1, 2])


def test_scl_with_reps_end_to_end():
    """The trainer's sequence: choose pixels, look up registered positives for those anchors, loss."""
    shape = (8, 8)
    generator = torch.Generator().manual_seed(0)
    features = F.normalize(torch.randn(2, 4, *shape, generator=generator), dim=1)
    labels = torch.randint(0, 2, (2, *shape), generator=generator)
    coords = torch.stack([slice_coords(0, shape), slice_coords(1, shape)])
    volumes = torch.tensor([0, 1])
    bank = FeatureMemoryBank([(2, *shape)] * 2, 4, MemoryBankSettings(downsample_factor=2), capacity=2)
    bank.insert_batch(volumes, features, coords)
    pixels = sample_contrastive_pixels(labels, torch.ones(2, *shape), generator=generator)
    anchors, negatives = pixels.gather(features)
    anchor_volumes, points = anchor_voxel_points(pixels.anchor_positions_byx, coords, volumes)
    # the bank holds slice 0 of volume 0 and slice 1 of volume 1; this mapper sends each onto the other
    to_other_slice = lambda s, t, p: p + torch.tensor([1.0 if t == 1 else -1.0, 0.0, 0.0])
    registered, found = registered_positive_keys(anchor_volumes, points, bank, to_other_slice)
    assert torch.equal(found, torch.ones_like(found))  # every anchor maps onto the other volume's stored slice
    positives = combine_positive_keys(class_positive_keys(anchors, pixels), registered, found)
    loss = supervised_contrastive_loss(anchors, negatives, pixels, positive_override=positives, override_mask=found)
    assert torch.isfinite(loss) and loss != supervised_contrastive_loss(anchors, negatives, pixels)


def test_batched_point_mapper_gives_the_same_positives_and_nan_means_unregistered():
    shape = (6, 6)
    generator = torch.Generator().manual_seed(4)
    bank = FeatureMemoryBank([(2, *shape)] * 4, 3, MemoryBankSettings(downsample_factor=2), capacity=8)
    for volume in range(4):
        bank.insert(volume, F.normalize(torch.randn(3, *shape, generator=generator), dim=0), slice_coords(1, shape))
    shifts = {t: torch.tensor([0.0, float(t % 2), -float(t // 2)]) for t in range(4)}
    per_pair = lambda s, t, p: p + shifts[t] if t != 3 else torch.full_like(p, math.nan)  # volume 3 unregistered
    many = lambda s, targets, p: torch.stack([per_pair(s, t, p) for t in targets])
    volumes = torch.tensor([0, 0, 1, 2])
    points = torch.tensor([[1.0, 2.0, 3.0], [1.0, 4.0, 5.0], [1.0, 0.0, 2.0], [1.0, 3.0, 3.0]])
    keys, found = registered_positive_keys(volumes, points, bank, per_pair)
    keys_many, found_many = registered_positive_keys(volumes, points, bank, None, map_points_to_many=many)
    assert torch.equal(found, found_many) and torch.allclose(keys, keys_many)
    assert found.any()
    bank_of_three = FeatureMemoryBank([(2, *shape)] * 4, 3, MemoryBankSettings(downsample_factor=2), capacity=8)
    bank_of_three.insert(3, F.normalize(torch.randn(3, *shape, generator=generator), dim=0), slice_coords(1, shape))
    _, found_nan = registered_positive_keys(volumes, points, bank_of_three, per_pair)
    assert not found_nan.any()  # the only stored volume has no registration (NaN points)


# --- gradient stopping of the positive keys (issue 13: the setting was never tested) ------------------------------
def _contrastive_setup(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    features = F.normalize(torch.randn(2, 6, 4, 5, generator=generator), dim=1)
    labels = torch.randint(0, 3, (2, 4, 5), generator=generator)
    settings = ContrastiveSettings(anchors_per_class=20, negatives_per_class=20)
    pixels = sample_contrastive_pixels(labels, torch.ones(2, 4, 5), settings, torch.Generator().manual_seed(1))
    anchors, negatives = pixels.gather(features)
    return anchors.detach(), negatives.detach(), pixels, settings


def _anchor_gradient(anchors, negatives, pixels, settings, override=None):
    anchors = anchors.clone().requires_grad_()
    supervised_contrastive_loss(anchors, negatives, pixels, settings, override).backward()
    return anchors.grad


def test_detached_positive_keys_act_as_constants():
    from dataclasses import replace

    anchors, negatives, pixels, settings = _contrastive_setup()
    assert settings.detach_positive_keys  # the default
    detached = _anchor_gradient(anchors, negatives, pixels, settings)
    # the same loss with the keys computed beforehand and passed in as constants
    constant_keys = class_positive_keys(anchors, pixels, detach=True)
    attached = replace(settings, detach_positive_keys=False)
    as_constants = _anchor_gradient(anchors, negatives, pixels, attached, override=constant_keys)
    assert torch.allclose(detached, as_constants, atol=1e-6)
    # without detaching, the gradient also flows through the keys, and differs
    through_keys = _anchor_gradient(anchors, negatives, pixels, attached)
    assert (through_keys - detached).abs().max() > 1e-4


def test_class_positive_keys_detach_flag_controls_their_graph():
    anchors, _, pixels, _ = _contrastive_setup()
    anchors = anchors.clone().requires_grad_()
    assert not class_positive_keys(anchors, pixels, detach=True).requires_grad
    keys = class_positive_keys(anchors, pixels, detach=False)
    keys.sum().backward()
    assert anchors.grad is not None and anchors.grad.abs().sum() > 0


@pytest.mark.parametrize("shape", [(2, 2, 4, 4), (2, 3, 4), (2, 4, 4, 4)])
def test_anchor_voxel_points_refuse_a_coordinate_map_of_the_wrong_shape(shape):
    with pytest.raises(ValueError, match=r"coords_zyx must be \(b, 3, h, w\)"):
        anchor_voxel_points(torch.zeros((1, 3), dtype=torch.long), torch.zeros(shape), torch.zeros(2, dtype=torch.long))


def test_masked_consistency_matches_hand_computation_and_ignores_uncertain_pixels():
    from cctrnet.training.losses.masked_consistency import masked_consistency_loss

    student = torch.tensor([[[[0.9, 0.5]], [[0.1, 0.5]]]])  # (b=1, C=2, y=1, x=2)
    teacher = torch.tensor([[[[0.6, 0.0]], [[0.4, 1.0]]]])
    certain = torch.tensor([[[[1.0, 0.0]]]])  # only the first pixel counts
    # (0.3^2 + 0.3^2) / (2 * 1 pixel * 2 classes) = 0.045; the uncertain pixel's 0.25 + 0.25 is left out
    assert float(masked_consistency_loss(student, teacher, certain)) == pytest.approx(0.045)
    assert float(masked_consistency_loss(student, teacher, torch.zeros_like(certain))) == 0.0
    # with batch sums (data-parallel), numerator and denominator are summed over the global batch
    doubled = masked_consistency_loss(student, teacher, certain, batch_sum=lambda value: 2 * value)
    assert float(doubled) == pytest.approx(0.045)


def test_teacher_input_noise_is_centred_and_clipped_to_two_std():
    from cctrnet.training.losses.masked_consistency import teacher_input_noise

    torch.manual_seed(0)
    noise = teacher_input_noise(torch.zeros(200_000), 0.1)
    assert float(noise.min()) == pytest.approx(-0.2) and float(noise.max()) == pytest.approx(0.2)
    assert abs(float(noise.mean())) < 1e-3 and float(noise.std()) == pytest.approx(0.096, abs=0.002)  # clipped, not truncated
