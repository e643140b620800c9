"""The brain phantom: determinism, diffeomorphic warps, labels, written files; a synthetic template, no nilearn."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cctrnet.dataset.image_io import read_image
from cctrnet.dataset.raw_dataset import RawDataset
from dataset_conversion import brain_phantom
from dataset_conversion.brain_phantom import (
    BrainPhantomConfig,
    BrainTemplate,
    TemplateNotFoundError,
    generate_brain_dataset,
    generate_brain_subject,
)
from dataset_conversion.deformation import (
    SubjectWarp,
    identity_grid_zyx,
    integrate_velocity,
    jacobian_determinant,
    random_subject_warp,
    random_velocity_field,
    sample_volume,
)
from dataset_conversion.phantom import case_seed

SHAPE_ZYX = (40, 40, 40)
SPACING_MM = 2.0
LABELS = {"background": 0, "outer": 1, "middle": 2, "inner": 3}
# semi-axes (z, y, x) in mm of the nested ellipsoids of the synthetic template, outermost first
ELLIPSOIDS_MM = ((30.0, 34.0, 28.0), (22.0, 26.0, 20.0), (12.0, 14.0, 10.0))
INTENSITIES = (0.5, 1.0, 0.3)
VOLUME_TOLERANCE = 0.30
CONFIG = BrainPhantomConfig()


@pytest.fixture(scope="module")
def template() -> BrainTemplate:
    """Nested ellipsoids (labels 1, 2, 3 from the outside in) on a 40^3 grid of 2 mm voxels."""
    centre = (np.asarray(SHAPE_ZYX) - 1) / 2 * SPACING_MM
    grid = np.stack(np.meshgrid(*[np.arange(n) * SPACING_MM for n in SHAPE_ZYX], indexing="ij"), axis=-1) - centre
    image = np.zeros(SHAPE_ZYX, np.float32)
    label = np.zeros(SHAPE_ZYX, np.uint8)
    for value, (semi_axes, intensity) in enumerate(zip(ELLIPSOIDS_MM, INTENSITIES), start=1):
        inside = ((grid / np.asarray(semi_axes)) ** 2).sum(axis=-1) <= 1.0
        image[inside], label[inside] = intensity, value
    return BrainTemplate.from_arrays(image, label, (SPACING_MM,) * 3, LABELS, source="ellipsoids")


@pytest.fixture(scope="module", autouse=True)
def one_thread(single_torch_thread):
    yield


def _label_volumes_mm3(label: np.ndarray, spacing_xyz) -> np.ndarray:
    return np.bincount(label.ravel(), minlength=len(LABELS))[1:] * float(np.prod(spacing_xyz))


# --- determinism -----------------------------------------------------------------------------------

def test_same_seed_gives_identical_arrays_and_geometry(template):
    image_a, label_a, geometry_a = generate_brain_subject(template, 11)
    image_b, label_b, geometry_b = generate_brain_subject(template, 11)
    assert image_a.dtype == np.int16 and label_a.dtype == np.uint8
    assert image_a.tobytes() == image_b.tobytes() and label_a.tobytes() == label_b.tobytes()
    assert geometry_a == geometry_b
    image_c, label_c, _ = generate_brain_subject(template, 12)
    assert image_c.shape != image_a.shape or not np.array_equal(image_c, image_a)


# --- the deformation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generated_deformation_is_diffeomorphic(template, seed):
    rng = np.random.default_rng(seed)
    largest_velocity = CONFIG.max_velocity_mm_range[1]
    warp = random_subject_warp(rng, template.extent_zyx_mm, template.extent_zyx_mm / 2, CONFIG.field_spacing_mm,
                               CONFIG.control_spacing_mm, CONFIG.control_smoothing_cells, largest_velocity,
                               CONFIG.squaring_steps, CONFIG.max_rotation_deg, CONFIG.max_scale_change,
                               CONFIG.max_translation_mm)
    determinant = jacobian_determinant(warp.displacement_mm, warp.field_spacing_mm)
    assert determinant.min() > 0 and warp.min_jacobian_determinant() > 0
    assert np.abs(warp.displacement_mm).max() > 0.5 * largest_velocity  # it really deforms


def test_scaling_and_squaring_keeps_a_strong_velocity_invertible():
    rng = np.random.default_rng(3)
    velocity = random_velocity_field(rng, (20, 20, 20), 4.0, 16.0, 1.0, max_velocity_mm=20.0)
    assert jacobian_determinant(integrate_velocity(velocity, 4.0, 8), 4.0).min() > 0


def test_zero_velocity_and_identity_affine_is_the_identity(template):
    velocity = np.zeros((3, 12, 12, 12), np.float32)
    displacement = integrate_velocity(velocity, 4.0, 6)
    assert not displacement.any()
    warp = SubjectWarp(np.eye(3), np.full(3, 40.0), np.zeros(3), displacement, 4.0)
    points_mm = identity_grid_zyx(SHAPE_ZYX) * SPACING_MM
    mapped = warp(points_mm)
    assert torch.allclose(mapped, points_mm, atol=1e-4)
    image = sample_volume(torch.from_numpy(template.image_zyx)[None], mapped / SPACING_MM)[0].numpy()
    label = sample_volume(torch.from_numpy(template.label_zyx.astype(np.float32))[None], mapped / SPACING_MM,
                          "nearest")[0].numpy()
    assert np.allclose(image, template.image_zyx, atol=1e-5)
    assert np.array_equal(label.astype(np.uint8), template.label_zyx)


# --- labels and volumes --------------------------------------------------------------------------------

def test_labels_stay_within_declared_values_and_each_structure_appears(template):
    for seed in range(3):
        image, label, geometry = generate_brain_subject(template, seed)
        assert set(np.unique(label)) == set(LABELS.values())
        assert image.shape == label.shape == geometry.shape_zyx
        assert image.min() >= 0 and image[label == LABELS["middle"]].mean() > image[label == 0].mean()


def test_label_volumes_vary_plausibly(template):
    reference = _label_volumes_mm3(template.label_zyx, (SPACING_MM,) * 3)
    volumes = np.array([_label_volumes_mm3(label, geometry.spacing_xyz)
                        for _, label, geometry in (generate_brain_subject(template, seed) for seed in range(5))])
    relative = volumes / reference
    assert np.all(np.abs(relative - 1) < VOLUME_TOLERANCE), relative
    assert np.all(relative.std(axis=0) > 0.01), relative  # subjects differ


def test_requested_slice_thickness_and_in_plane_range(template):
    for seed, thickness in ((0, 4.0), (1, 6.0)):
        image, _, geometry = generate_brain_subject(template, seed, slice_thickness_mm=thickness)
        sx, sy, sz = geometry.spacing_xyz
        assert sz == thickness and sx == sy
        assert CONFIG.in_plane_spacing_mm_range[0] <= sx <= CONFIG.in_plane_spacing_mm_range[1]
        expected_slices = np.ceil((np.diff(template.field_of_view_zyx_mm[0])[0] + 2 * CONFIG.crop_margin_mm) / thickness)
        assert image.shape[0] == expected_slices


def test_thick_slices_average_the_slab(template):
    """A slab that straddles two tissues gets an intermediate intensity (partial volume), not one of them."""
    config = CONFIG.with_changes(max_velocity_mm_range=(0.0, 0.0), max_rotation_deg=0.0, max_scale_change=0.0,
                                 max_translation_mm=0.0, max_bias_log_amplitude=0.0, gamma_range=(1.0, 1.0),
                                 noise_fraction_range=(0.0, 0.0), intensity_scale_range=(1000.0, 1000.0))
    thin = generate_brain_subject(template, 0, config.with_changes(slab_samples=1), slice_thickness_mm=8.0)[0]
    thick = generate_brain_subject(template, 0, config, slice_thickness_mm=8.0)[0]
    assert thin.shape == thick.shape
    intermediate = lambda image: np.isin(image, (0, 300, 500, 1000), invert=True).mean()  # noqa: E731
    assert intermediate(thick) > intermediate(thin)


# --- the written dataset ---------------------------------------------------------------------------------

def test_written_dataset_has_the_requested_geometry_and_labels(template, tmp_path: Path):
    folder = generate_brain_dataset(tmp_path, dataset_id=12, name="TinyBrain", num_training=3, num_test=1,
                                    num_unlabeled=1, seed=4, slice_thickness_mm=5.0, template=template,
                                    show_progress=False)
    assert folder.name == "Dataset012_TinyBrain" and sorted(p.name for p in tmp_path.iterdir()) == [folder.name]
    content = json.loads((folder / "dataset.json").read_text())
    assert content["labels"] == LABELS and content["numTraining"] == 3
    assert content["generator"]["program"] == "cctr_generate_brain" and content["generator"]["seed"] == 4
    dataset = RawDataset.load(folder)
    training, test = dataset.training_cases(), dataset.test_cases()
    assert [c.is_labeled for c in training] == [True, True, False] and test[0].is_labeled
    for case in training + test:
        image, geometry = read_image(case.image_files[0], dtype=np.int16)
        expected_image, expected_label, expected_geometry = generate_brain_subject(
            template, case_seed(4, int(case.case_id.split("_")[1])), slice_thickness_mm=5.0)
        assert np.array_equal(image, expected_image) and geometry.same_grid(expected_geometry)
        assert geometry.spacing_xyz[2] == pytest.approx(5.0)
        if case.label_file is not None:
            label, label_geometry = read_image(case.label_file, dtype=np.uint8)
            assert np.array_equal(label, expected_label) and label_geometry.same_grid(geometry)
            assert set(np.unique(label)) <= set(LABELS.values())
    with pytest.raises(FileExistsError):
        generate_brain_dataset(tmp_path, dataset_id=12, name="TinyBrain", num_training=1, num_test=0,
                               template=template, show_progress=False)


def test_cli_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        brain_phantom.main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("-d", "--num-training", "--num-test", "--seed", "--source", "--slice-thickness"):
        assert option in help_text


# --- sources ---------------------------------------------------------------------------------------------

def test_missing_nilearn_names_what_to_install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(brain_phantom.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TemplateNotFoundError, match="pip install --no-deps nilearn"):
        brain_phantom.template_files("mni")
    with pytest.raises(ValueError, match="source must be one of"):
        brain_phantom.template_files("colin")


@pytest.mark.skipif(importlib.util.find_spec("nilearn") is None,
                    reason="nilearn is not installed (pip install --no-deps nilearn): no MNI152 template")
def test_real_mni_template_gives_a_brain_with_three_tissues():
    real = brain_phantom.load_template("mni")
    assert real.spacing_zyx_mm == (2.0, 2.0, 2.0)
    image, label, geometry = generate_brain_subject(real, case_seed(0, 0))
    assert set(np.unique(label)) == set(brain_phantom.MNI_LABELS.values())
    assert 20 <= image.shape[0] <= 40 and all(80 <= n <= 140 for n in image.shape[1:])
    fractions = np.bincount(label.ravel(), minlength=4)[1:] / (label > 0).sum()
    assert fractions[1] > fractions[2] > fractions[0]  # GM > WM > CSF
