"""Training data pipeline: coordinates, labels and registered labels through augmentation; batches; seeds."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cctrnet.preprocessing.case_storage import save_preprocessed_case
from cctrnet.training.data import (AugmentationSettings, DataLoaderSettings, SpatialParameters, TrainingDataLoader,
                                   build_volume_index, extract_patch)

PATCH = (16, 16)


def coded_volume(shape_zyx: tuple[int, int, int]) -> np.ndarray:
    """Voxel value = 10000 z + 100 y + x + 1, so a value names its voxel (0 is left for padding)."""
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape_zyx], indexing="ij")
    return (10000 * z + 100 * y + x + 1).astype(np.float32)


def decode(values: np.ndarray) -> np.ndarray:
    v = np.rint(values).astype(np.int64) - 1
    return np.stack([v // 10000, (v // 100) % 100, v % 100]).astype(np.float32)


def blocky_labels(shape_zyx: tuple[int, int, int], seed: int, block: int = 6) -> np.ndarray:
    """Labels 0..3 constant on block x block squares: large uniform regions for interpolation checks."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 4, size=(shape_zyx[0], -(-shape_zyx[1] // block), -(-shape_zyx[2] // block)))
    labels = coarse.repeat(block, axis=1).repeat(block, axis=2)[:, :shape_zyx[1], :shape_zyx[2]]
    return labels.astype(np.int16)


def write_case(folder: Path, case_id: str, shape_zyx: tuple[int, int, int], seg: np.ndarray | None,
               image: np.ndarray | None = None) -> None:
    image = coded_volume(shape_zyx) if image is None else image
    properties = {}
    if seg is not None:
        properties["class_slices"] = {str(c): np.flatnonzero((seg == c).any(axis=(1, 2))).tolist()
                                      for c in range(1, int(seg.max()) + 1)}
    save_preprocessed_case(folder, case_id, image[None], seg, properties)


@pytest.fixture
def dataset(tmp_path: Path) -> dict:
    """Two labeled cases (one smaller than the patch in x), two unlabeled ones (one with a hidden label)."""
    shapes = {"a_lab": (4, 30, 26), "b_lab": (3, 20, 12), "c_unl": (5, 24, 28), "d_hidden": (2, 22, 20)}
    segs = {k: blocky_labels(s, i) for i, (k, s) in enumerate(shapes.items())}
    write_case(tmp_path, "a_lab", shapes["a_lab"], segs["a_lab"])
    write_case(tmp_path, "b_lab", shapes["b_lab"], segs["b_lab"])
    write_case(tmp_path, "c_unl", shapes["c_unl"], None)
    write_case(tmp_path, "d_hidden", shapes["d_hidden"], segs["d_hidden"])
    registered = {"c_unl": blocky_labels(shapes["c_unl"], 7) - 1, "d_hidden": blocky_labels(shapes["d_hidden"], 8)}
    return {"folder": tmp_path, "labeled": ["a_lab", "b_lab"], "unlabeled": ["c_unl", "d_hidden"],
            "shapes": shapes, "segs": segs, "registered": registered}


def make_loader(dataset: dict, augmentation: AugmentationSettings, **settings) -> TrainingDataLoader:
    settings.setdefault("num_workers", 0)
    return TrainingDataLoader(dataset["folder"], dataset["labeled"], dataset["unlabeled"], PATCH, 4, 4,
                              registered_labels=dataset["registered"], augmentation=augmentation,
                              settings=DataLoaderSettings(**settings))


def label_at(volume: np.ndarray, coords_zyx: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Label of the nearest voxel of every valid pixel's coordinates."""
    idx = np.floor(coords_zyx[:, valid] + 0.5).astype(np.int64)
    return volume[idx[0], idx[1], idx[2]]


def test_identity_augmentation_keeps_true_voxel_coordinates(dataset):
    loader = make_loader(dataset, AugmentationSettings.identity())
    saw_padding = False
    for _ in range(6):
        batch = loader.next_batch()
        for stream in ("labeled", "unlabeled"):
            part = batch[stream]
            for i, case_id in enumerate(part["case_ids"]):
                image = part["image"][i, 0].numpy()
                coords = part["coords_zyx"][i].numpy()
                valid = part["coords_valid"][i].numpy()
                inside = image != 0
                assert np.array_equal(valid, inside)
                np.testing.assert_array_equal(coords[:, valid], decode(image)[:, valid])
                assert np.all(coords[:, ~valid] == -1)
                assert np.all(coords[0, valid] == part["slice_z"][i].item())
                assert part["volume_index"][i].item() == loader.volume_index[case_id]
                saw_padding |= bool((~valid).any())
                truth = dataset["segs"][case_id] if stream == "labeled" else dataset["registered"][case_id]
                target = part["target"][i].numpy()
                np.testing.assert_array_equal(target[valid], label_at(truth, coords, valid))
                assert np.all(target[~valid] == -1)
    assert saw_padding, "b_lab is narrower than the patch, so some samples must be padded"


def _slice_and_views(dataset: dict, case_id: str, z: int):
    image = coded_volume(dataset["shapes"][case_id])[None, z]
    return image, [dataset["segs"][case_id][z]]


def test_mirror_flips_coordinates(dataset):
    image, labels = _slice_and_views(dataset, "a_lab", 2)
    center = (14.5, 12.5)
    plain = extract_patch(image, labels, 2, center, PATCH, SpatialParameters())
    flipped_x = extract_patch(image, labels, 2, center, PATCH, SpatialParameters(mirror_x=True))
    flipped_y = extract_patch(image, labels, 2, center, PATCH, SpatialParameters(mirror_y=True))
    np.testing.assert_array_equal(flipped_x.coords_zyx, plain.coords_zyx[:, :, ::-1])
    np.testing.assert_array_equal(flipped_x.image, plain.image[:, :, ::-1])
    np.testing.assert_array_equal(flipped_x.labels, plain.labels[:, :, ::-1])
    np.testing.assert_array_equal(flipped_y.coords_zyx, plain.coords_zyx[:, ::-1, :])
    # the x coordinate now decreases along x: the pixel at column j came from column (w - 1 - j)
    assert np.all(np.diff(flipped_x.coords_zyx[2], axis=1) == -1)
    np.testing.assert_array_equal(flipped_x.coords_zyx[:, flipped_x.coords_valid],
                                  decode(flipped_x.image[0])[:, flipped_x.coords_valid])


def test_rotation_by_90_degrees_permutes_coordinates(dataset):
    image, labels = _slice_and_views(dataset, "a_lab", 1)
    center = (14.5, 12.5)
    plain = extract_patch(image, labels, 1, center, PATCH, SpatialParameters())
    rotated = extract_patch(image, labels, 1, center, PATCH, SpatialParameters(rotation_rad=math.pi / 2))
    matches = [k for k in (1, -1) if np.allclose(rotated.coords_zyx, np.rot90(plain.coords_zyx, k, axes=(1, 2)),
                                                 atol=1e-4)]
    assert len(matches) == 1
    np.testing.assert_array_equal(rotated.labels, np.rot90(plain.labels, matches[0], axes=(1, 2)))
    # each output pixel's coordinates point at the voxel whose value the pixel shows (cubic spline: interior)
    interior = np.zeros(PATCH, dtype=bool)
    interior[3:-3, 3:-3] = True
    np.testing.assert_allclose(rotated.image[0][interior], coded_volume(dataset["shapes"]["a_lab"])[
        1, np.rint(rotated.coords_zyx[1][interior]).astype(int), np.rint(rotated.coords_zyx[2][interior]).astype(int)],
        atol=0.05)


def test_registered_label_follows_the_image_through_random_spatial_augmentation(dataset, tmp_path):
    shape = dataset["shapes"]["c_unl"]
    registered = dataset["registered"]["c_unl"]
    # overwrite the unlabeled case's image with its registered label values
    write_case(dataset["folder"], "c_unl", shape, None, image=registered.astype(np.float32) + 10)
    dataset = dict(dataset, unlabeled=["c_unl"])
    augmentation = AugmentationSettings(p_rotation=1.0, p_scale=1.0, p_elastic=1.0, elastic_alpha=(0.0, 60.0)
                                        ).spatial_only()
    loader = make_loader(dataset, augmentation, seed=3)
    compared, saw_outside = 0, False
    for _ in range(5):
        part = loader.next_batch()["unlabeled"]
        for i in range(len(part["case_ids"])):
            image = part["image"][i, 0].numpy()
            target = part["target"][i].numpy()
            valid = part["coords_valid"][i].numpy()
            coords = part["coords_zyx"][i].numpy()
            np.testing.assert_array_equal(target[valid], label_at(registered, coords, valid))
            saw_outside |= bool((~valid).any())
            assert np.all(target[~valid] == -1) and np.all(image[~valid] == 0)
            # away from label edges and slice borders, the spline-interpolated image equals label + 10
            target_padded = np.pad(target, 2, constant_values=-2)
            windows = np.lib.stride_tricks.sliding_window_view(target_padded, (5, 5))
            uniform = (windows.min(axis=(2, 3)) == windows.max(axis=(2, 3))) & (target >= 0)
            np.testing.assert_allclose(image[uniform], target[uniform] + 10, atol=0.25)
            compared += int(uniform.sum())
    assert compared > 200 and saw_outside


def test_outside_the_slice_is_ignore_label_zero_image_and_invalid_coordinates(dataset):
    image, labels = _slice_and_views(dataset, "b_lab", 0)  # 20 x 12 slice, 16 x 16 patch
    angle, center = 0.3, (9.5, 5.5)
    sample = extract_patch(image, labels + [None], 0, center, PATCH, SpatialParameters(rotation_rad=angle))
    a, b = np.meshgrid(np.arange(16) - 7.5, np.arange(16) - 7.5, indexing="ij")
    y = center[0] + math.cos(angle) * a - math.sin(angle) * b
    x = center[1] + math.sin(angle) * a + math.cos(angle) * b
    inside = (y >= 0) & (y <= 19) & (x >= 0) & (x <= 11)
    assert 0 < inside.sum() < inside.size
    np.testing.assert_array_equal(sample.coords_valid, inside)
    np.testing.assert_allclose(sample.coords_zyx[1][inside], y[inside], atol=1e-5)
    np.testing.assert_allclose(sample.coords_zyx[2][inside], x[inside], atol=1e-5)
    assert np.all(sample.coords_zyx[:, ~inside] == -1)
    assert np.all(sample.labels[0][~inside] == -1) and np.all(sample.image[0][~inside] == 0)
    assert np.all(sample.labels[0][inside] >= 0)
    assert np.all(sample.labels[1] == -1), "a missing label channel is ignore everywhere"


def test_batch_composition_shapes_dtypes_and_streams(dataset):
    plans = {"configurations": {"2d": {"patch_size_yx": [16, 16], "labeled_per_batch": 3, "unlabeled_per_batch": 2}}}
    loader = TrainingDataLoader.from_plan(dataset["folder"], plans, dataset["labeled"], dataset["unlabeled"],
                                          registered_labels=dataset["registered"],
                                          settings=DataLoaderSettings(num_workers=0, provide_hidden_truth=True))
    assert loader.volume_index == {"a_lab": 0, "b_lab": 1, "c_unl": 2, "d_hidden": 3}
    assert loader.num_training_slices == 4 + 3 + 5 + 2
    batch = loader.next_batch()
    for stream, b in (("labeled", 3), ("unlabeled", 2)):
        part = batch[stream]
        assert part["image"].shape == (b, 1, 16, 16) and part["image"].dtype == torch.float32
        assert part["target"].shape == (b, 16, 16) and part["target"].dtype == torch.int64
        assert part["coords_zyx"].shape == (b, 3, 16, 16) and part["coords_zyx"].dtype == torch.float32
        assert part["coords_valid"].shape == (b, 16, 16) and part["coords_valid"].dtype == torch.bool
        assert part["volume_index"].shape == (b,) and part["volume_index"].dtype == torch.int64
        assert part["slice_z"].shape == (b,) and part["slice_z"].dtype == torch.int64
        assert len(part["case_ids"]) == b
        assert set(part["case_ids"]) <= set(dataset[stream])
    assert "hidden_truth" not in batch["labeled"]
    assert batch["unlabeled"]["hidden_truth"].shape == (2, 16, 16)
    assert loader.wait_seconds > 0 and loader.batches_served == 1


def test_hidden_truth_is_reported_but_never_the_target(dataset):
    loader = TrainingDataLoader(dataset["folder"], dataset["labeled"], ["d_hidden", "c_unl"], PATCH, 1, 6,
                                registered_labels=None, augmentation=AugmentationSettings().spatial_only(),
                                settings=DataLoaderSettings(num_workers=0, provide_hidden_truth=True, seed=5))
    part = loader.next_batch()["unlabeled"]
    assert torch.all(part["target"] == -1), "without registered labels the unlabeled target is all ignore"
    for i, case_id in enumerate(part["case_ids"]):
        hidden = part["hidden_truth"][i].numpy()
        valid = part["coords_valid"][i].numpy()
        if case_id == "d_hidden":
            np.testing.assert_array_equal(hidden[valid], label_at(dataset["segs"]["d_hidden"],
                                                                  part["coords_zyx"][i].numpy(), valid))
        else:
            assert np.all(hidden == -1)
    default = TrainingDataLoader(dataset["folder"], dataset["labeled"], ["d_hidden"], PATCH, 1, 2,
                                 settings=DataLoaderSettings(num_workers=0))
    assert "hidden_truth" not in default.next_batch()["unlabeled"]
    assert default.unlabeled_source._arrays(default.unlabeled_source.cases[0])[1] is None


def test_foreground_oversampling_raises_the_share_of_foreground_slices(tmp_path):
    shape = (20, 24, 24)
    seg = np.zeros(shape, dtype=np.int16)
    seg[7, 10:13, 4:7] = 1  # one small object in one slice of twenty
    write_case(tmp_path, "fg", shape, seg)
    write_case(tmp_path, "u", (2, 24, 24), None)

    def foreground_share(fraction: float) -> float:
        loader = TrainingDataLoader(tmp_path, ["fg"], ["u"], PATCH, 8, 0, augmentation=AugmentationSettings(),
                                    settings=DataLoaderSettings(num_workers=0, oversample_foreground_fraction=fraction))
        targets = torch.cat([loader.next_batch()["labeled"]["target"] for _ in range(10)])
        return (targets == 1).flatten(1).any(dim=1).float().mean().item()

    assert foreground_share(1.0) == 1.0
    share_default, share_none = foreground_share(0.33), foreground_share(0.0)
    assert share_none < 0.15 < 0.2 < share_default


def _batches(loader: TrainingDataLoader, n: int) -> list[dict]:
    return [loader.next_batch() for _ in range(n)]


def _assert_same(a: dict, b: dict) -> None:
    for stream in ("labeled", "unlabeled"):
        assert a[stream]["case_ids"] == b[stream]["case_ids"]
        for key in ("image", "target", "coords_zyx", "coords_valid", "slice_z"):
            assert torch.equal(a[stream][key], b[stream][key]), key


def test_seeded_sequence_is_reproducible_and_resumable(dataset):
    first = _batches(make_loader(dataset, AugmentationSettings(), seed=11), 4)
    second = _batches(make_loader(dataset, AugmentationSettings(), seed=11), 4)
    for a, b in zip(first, second):
        _assert_same(a, b)
    np.random.seed(99)
    expected_draw = np.random.random()
    np.random.seed(99)
    other = make_loader(dataset, AugmentationSettings(), seed=12).next_batch()
    assert np.random.random() == expected_draw, "the caller's global numpy generator is left as it was"

    assert not torch.equal(other["labeled"]["image"], first[0]["labeled"]["image"])
    resumed = TrainingDataLoader(dataset["folder"], dataset["labeled"], dataset["unlabeled"], PATCH, 4, 4,
                                 registered_labels=dataset["registered"],
                                 settings=DataLoaderSettings(num_workers=0, seed=11), start_iteration=2)
    _assert_same(resumed.next_batch(), first[2])


def test_worker_processes_give_the_in_process_sequence(dataset):
    expected = _batches(make_loader(dataset, AugmentationSettings(), seed=4), 5)
    with make_loader(dataset, AugmentationSettings(), seed=4, num_workers=2) as loader:
        produced = _batches(loader, 5)
    for a, b in zip(produced, expected):
        _assert_same(a, b)
        assert a["batch_index"] == b["batch_index"]


def test_bad_inputs_name_the_problem(dataset):
    with pytest.raises(ValueError, match="c_unl.*labeled stream"):
        TrainingDataLoader(dataset["folder"], ["c_unl"], ["d_hidden"], PATCH, 1, 1)
    wrong = dict(dataset["registered"], c_unl=np.zeros((5, 24, 27), dtype=np.int16))
    with pytest.raises(ValueError, match="registered label of case 'c_unl'"):
        TrainingDataLoader(dataset["folder"], dataset["labeled"], dataset["unlabeled"], PATCH, 1, 1,
                           registered_labels=wrong)
    with pytest.raises(FileNotFoundError, match="nope"):
        TrainingDataLoader(dataset["folder"], ["a_lab", "nope"], [], PATCH, 1, 0)
    with pytest.raises(ValueError, match="unique"):
        build_volume_index(["a", "b", "a"])
