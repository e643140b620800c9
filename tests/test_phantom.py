"""The cardiac phantom: determinism, anatomy of the labels, acquisition ranges, the written dataset, CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cctrnet.dataset.image_io import read_image
from cctrnet.dataset.raw_dataset import RawDataset
from dataset_conversion import phantom
from dataset_conversion.phantom import (
    LABELS,
    case_seed,
    generate_phantom_dataset,
    generate_phantom_subject,
    write_preview_png,
)
from dataset_conversion.phantom_anatomy import sample_subject_parameters
from dataset_conversion.phantom_config import PhantomConfig

RV, MYO, LV = LABELS["RV"], LABELS["MYO"], LABELS["LV"]
TINY = PhantomConfig.tiny()


@pytest.fixture(scope="module")
def default_subjects():
    """Three full-size subjects (the default configuration), as the first training cases of seed 0."""
    return [generate_phantom_subject(case_seed(0, index)) for index in range(3)]


def _four_neighbours(mask: np.ndarray) -> np.ndarray:
    out = np.zeros_like(mask)
    out[1:, :] |= mask[:-1, :]
    out[:-1, :] |= mask[1:, :]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def _labeled_slices(label: np.ndarray) -> list[int]:
    return [z for z in range(label.shape[0]) if label[z].any()]


# --- determinism ---------------------------------------------------------------------------------

def test_same_seed_gives_identical_arrays_and_geometry(default_subjects):
    image, label, geometry = generate_phantom_subject(case_seed(0, 0))
    first_image, first_label, first_geometry = default_subjects[0]
    assert image.tobytes() == first_image.tobytes()
    assert label.tobytes() == first_label.tobytes()
    assert geometry == first_geometry


def test_different_seeds_give_different_subjects():
    image_a, label_a, geometry_a = generate_phantom_subject(1, TINY)
    image_b, label_b, geometry_b = generate_phantom_subject(2, TINY)
    assert geometry_a != geometry_b
    assert image_a.shape != image_b.shape or not np.array_equal(image_a, image_b)
    assert label_a.shape != label_b.shape or not np.array_equal(label_a, label_b)


def test_case_seeds_are_distinct_and_reproducible():
    seeds = [case_seed(0, index) for index in range(50)]
    assert len(set(seeds)) == 50
    assert seeds == [case_seed(0, index) for index in range(50)]
    assert case_seed(1, 0) != case_seed(0, 0)


def test_direction_option_changes_geometry_only():
    image_oblique, label_oblique, oblique = generate_phantom_subject(3, TINY)
    image_plain, label_plain, plain = generate_phantom_subject(3, TINY.with_changes(oblique_direction=False))
    assert np.array_equal(image_oblique, image_plain) and np.array_equal(label_oblique, label_plain)
    assert np.allclose(plain.direction_matrix, np.eye(3))
    assert not np.allclose(oblique.direction_matrix, np.eye(3))
    assert np.allclose(oblique.direction_matrix.T @ oblique.direction_matrix, np.eye(3), atol=1e-9)
    assert np.linalg.det(oblique.direction_matrix) == pytest.approx(1.0)


# --- anatomy of the labels -----------------------------------------------------------------------

def test_all_labels_present_and_dtypes(default_subjects):
    for image, label, geometry in default_subjects:
        assert image.dtype == np.int16 and label.dtype == np.uint8
        assert image.shape == label.shape == geometry.shape_zyx
        assert set(np.unique(label)) == {0, RV, MYO, LV}
        assert image.min() >= 0 and image.max() > 100


def test_myocardium_surrounds_lv_in_mid_slices(default_subjects):
    for _, label, _ in default_subjects:
        lv_slices = [z for z in range(label.shape[0]) if (label[z] == LV).sum() > 20]
        middle = lv_slices[len(lv_slices) // 2]
        for z in (middle - 1, middle, middle + 1):
            lv = label[z] == LV
            around_lv = _four_neighbours(lv) & ~lv
            assert np.all(label[z][around_lv] == MYO), f"slice {z}: LV touches labels {np.unique(label[z][around_lv])}"


def test_rv_borders_the_myocardium(default_subjects):
    for _, label, _ in default_subjects:
        rv_sizes = [(label[z] == RV).sum() for z in range(label.shape[0])]
        z = int(np.argmax(rv_sizes))
        rv = label[z] == RV
        assert (_four_neighbours(rv) & (label[z] == MYO)).sum() > 5


def test_apex_slices_lack_rv_and_lv_shrinks_to_apex(default_subjects):
    for _, label, _ in default_subjects:
        slices = _labeled_slices(label)
        apical = slices[-1]
        assert (label[apical] == MYO).any() and not (label[apical] == RV).any()
        rv_slices = [z for z in slices if (label[z] == RV).any()]
        assert max(rv_slices) < apical
        lv_area = [(label[z] == LV).sum() for z in slices]
        peak = int(np.argmax(lv_area))
        assert all(a >= b for a, b in zip(lv_area[peak:], lv_area[peak + 1:])) or lv_area[-1] < 0.3 * lv_area[peak]


def test_structure_volumes_are_plausible(default_subjects):
    for _, label, geometry in default_subjects:
        voxel_ml = float(np.prod(geometry.spacing_xyz)) / 1000.0
        volume_ml = {name: (label == value).sum() * voxel_ml for name, value in LABELS.items() if value}
        assert 30 < volume_ml["LV"] < 300, volume_ml
        assert 40 < volume_ml["MYO"] < 300, volume_ml
        assert 20 < volume_ml["RV"] < 300, volume_ml
        heart_fraction = (label > 0).mean()
        assert 0.01 < heart_fraction < 0.2


def test_long_axis_points_to_the_patients_left_front_and_feet(default_subjects):
    """The direction matrix puts the apex where anatomy has it (LPS: +x left, -y anterior, -z inferior)."""
    for _, label, geometry in default_subjects:
        slices = _labeled_slices(label)
        centres = []
        for z in (slices[1], slices[-1]):
            ys, xs = np.nonzero(label[z] > 0)
            centres.append(geometry.index_zyx_to_physical_xyz([z, ys.mean(), xs.mean()]))
        base_to_apex = centres[1] - centres[0]
        assert base_to_apex[0] > 0 and base_to_apex[1] < 0 and base_to_apex[2] < 0, base_to_apex


def test_the_body_is_there_but_unlabeled(default_subjects):
    """Bright tissue (fat, atria, aorta) lies outside the labels, so intensity alone does not segment."""
    for image, label, _ in default_subjects:
        lv_level = np.median(image[label == LV])
        bright_background = (image > 0.6 * lv_level) & (label == 0)
        assert bright_background.sum() > (label == LV).sum()


def test_tissue_map_agrees_with_labels():
    """Each label sits on the tissue it names; unlabeled voxels never hold ventricular blood."""
    from dataset_conversion.phantom_anatomy import Tissue
    from dataset_conversion.phantom_render import _world_points, render_tissue_and_label

    subject = sample_subject_parameters(np.random.default_rng(11), PhantomConfig())
    tissue, label = render_tissue_and_label(*_world_points(subject, 0.0), subject)
    assert np.all(tissue[label == RV] == Tissue.RV_BLOOD)
    assert np.all(tissue[label == MYO] == Tissue.MYOCARDIUM)
    assert set(np.unique(tissue[label == LV])) == {Tissue.LV_BLOOD, Tissue.MYOCARDIUM}  # papillary muscles
    assert not np.isin(tissue[label == 0], [Tissue.LV_BLOOD, Tissue.RV_BLOOD]).any()
    for unlabeled in (Tissue.LUNG, Tissue.FAT, Tissue.MUSCLE, Tissue.OTHER_BLOOD):
        assert (tissue == unlabeled).any()


# --- acquisition ranges --------------------------------------------------------------------------

def test_acquisition_within_configured_ranges(default_subjects):
    config = PhantomConfig()
    for seed in range(40):
        acquisition = sample_subject_parameters(np.random.default_rng(seed), config).acquisition
        nz, ny, nx = acquisition.shape_zyx
        sx, sy, sz = acquisition.spacing_xyz_mm
        assert 8 <= nz <= 14 and 176 <= ny <= 216 and 176 <= nx <= 216
        assert 1.3 <= sx == sy <= 1.8 and 5.0 <= sz <= 10.0
        assert 0.8 * sz <= acquisition.slice_thickness_mm <= sz
    for _, _, geometry in default_subjects:
        assert 1.3 <= geometry.spacing_xyz[0] <= 1.8 and 5.0 <= geometry.spacing_xyz[2] <= 10.0


def test_tiny_config_is_small():
    image, label, geometry = generate_phantom_subject(0, TINY)
    assert image.shape == (6, 64, 64)
    assert {RV, MYO, LV} <= set(np.unique(label))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="slice_profile_samples"):
        PhantomConfig(slice_profile_samples=2)
    with pytest.raises(ValueError, match="num_slices_range"):
        PhantomConfig(num_slices_range=(10, 8))


# --- the written dataset -------------------------------------------------------------------------

@pytest.mark.parametrize("file_ending", [".nii.gz", ".mha"])
def test_dataset_layout_and_files(tmp_path: Path, file_ending: str):
    folder = generate_phantom_dataset(tmp_path, dataset_id=7, name="TinyHeart", num_training=4, num_test=2,
                                      num_unlabeled=2, seed=5, file_ending=file_ending, config=TINY,
                                      show_progress=False)
    assert folder == tmp_path / "Dataset007_TinyHeart"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset007_TinyHeart"]  # no leftovers
    content = json.loads((folder / "dataset.json").read_text())
    assert content["labels"] == {"background": 0, "RV": 1, "MYO": 2, "LV": 3}
    assert content["channel_names"] == {"0": "MRI"}
    assert content["numTraining"] == 4 and content["file_ending"] == file_ending

    dataset = RawDataset.load(folder)
    training, test = dataset.training_cases(), dataset.test_cases()
    assert [c.case_id for c in training] == ["phantom_000", "phantom_001", "phantom_002", "phantom_003"]
    assert [c.is_labeled for c in training] == [True, True, False, False]
    assert [c.case_id for c in test] == ["phantom_004", "phantom_005"] and all(c.is_labeled for c in test)
    assert len(list((folder / "labelsTr").iterdir())) == 2

    for case in training + test:
        image, image_geometry = read_image(case.image_files[0], dtype=np.int16)
        expected_image, expected_label, expected_geometry = generate_phantom_subject(
            case_seed(5, int(case.case_id.split("_")[1])), TINY)
        assert np.array_equal(image, expected_image)
        assert image_geometry.same_grid(expected_geometry)
        if case.label_file is not None:
            label, label_geometry = read_image(case.label_file, dtype=np.uint8)
            assert label_geometry.same_grid(image_geometry), label_geometry.differences(image_geometry)
            assert np.array_equal(label, expected_label)


def test_overwrite_protection(tmp_path: Path):
    first = generate_phantom_dataset(tmp_path, num_training=3, num_test=0, config=TINY, show_progress=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        generate_phantom_dataset(tmp_path, num_training=2, num_test=0, config=TINY, show_progress=False)
    assert len(list((first / "imagesTr").iterdir())) == 3
    again = generate_phantom_dataset(tmp_path, num_training=2, num_test=0, config=TINY, overwrite=True,
                                     show_progress=False)
    assert again == first and len(list((first / "imagesTr").iterdir())) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]
    with pytest.raises(FileExistsError, match="already used"):
        generate_phantom_dataset(tmp_path, name="OtherName", num_training=2, num_test=0, config=TINY,
                                 show_progress=False)


def test_interrupted_run_leaves_no_dataset(tmp_path: Path, monkeypatch):
    import cctrnet.dataset.image_io as image_io

    original_write = image_io.write_image
    calls = []

    def failing_write(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        original_write(*args, **kwargs)

    monkeypatch.setattr(image_io, "write_image", failing_write)
    with pytest.raises(KeyboardInterrupt):
        generate_phantom_dataset(tmp_path, num_training=3, num_test=1, config=TINY, show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_are_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="num_unlabeled"):
        generate_phantom_dataset(tmp_path, num_training=2, num_unlabeled=2, config=TINY, show_progress=False)
    with pytest.raises(ValueError, match="file ending"):
        generate_phantom_dataset(tmp_path, num_training=2, file_ending=".png", config=TINY, show_progress=False)
    with pytest.raises(ValueError, match="dataset id"):
        generate_phantom_dataset(tmp_path, dataset_id=1000, config=TINY, show_progress=False)
    assert list(tmp_path.iterdir()) == []


# --- command line and preview --------------------------------------------------------------------

def test_cli_help_is_light():
    code = ("import sys; from dataset_conversion import phantom; "
            "heavy = [m for m in ('SimpleITK', 'matplotlib', 'scipy', 'torch') if m in sys.modules]; "
            "print('HEAVY', heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in result.stdout
    help_result = subprocess.run([sys.executable, "-m", "dataset_conversion.phantom", "--help"],
                                 capture_output=True, text=True)
    assert help_result.returncode == 0
    for option in ("--num-unlabeled", "--overwrite", "--preview", "--file-ending", "--direction"):
        assert option in help_result.stdout


def test_cli_writes_dataset_and_refuses_overwrite(tmp_path: Path):
    arguments = ["--raw-root", str(tmp_path), "--num-training", "2", "--num-test", "1", "--num-unlabeled", "1",
                 "-d", "3", "--name", "Cli", "--tiny"]
    phantom.main(arguments)
    folder = tmp_path / "Dataset003_Cli"
    assert (folder / "labelsTr" / "phantom_000.nii.gz").exists()
    assert not (folder / "labelsTr" / "phantom_001.nii.gz").exists()
    with pytest.raises(SystemExit, match="already exists"):
        phantom.main(arguments)


def test_preview_png(tmp_path: Path):
    path = write_preview_png(tmp_path / "preview.png", num_subjects=1, slices_per_subject=2, config=TINY)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
