"""Prediction: sliding window, branch averaging, export on the input grid, model discovery, the CLI."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cctrnet.dataset.geometry import Geometry
from cctrnet.dataset.image_io import read_image, write_image
from cctrnet.inference.input_cases import list_input_cases
from cctrnet.inference.model_folder import ModelFolder, ModelFolderError, find_model_folder, model_folder_name
from cctrnet.inference.predictor import Predictor
from cctrnet.inference.sliding_window import (
    BranchEnsemble,
    SlidingWindowSettings,
    gaussian_importance_map,
    predict_volume,
    predict_with_mirroring,
    window_starts,
)
from cctrnet.utilities.file_io import load_json, save_json
from tests.conftest import OBLIQUE_DIRECTION, blob_case

torch.set_num_threads(1)

LABELS = {"background": 0, "a": 1, "b": 2}
DATASET_JSON = {"channel_names": {"0": "MRI"}, "labels": LABELS, "numTraining": 4, "file_ending": ".nii.gz"}
_CONV = {"conv_op": "torch.nn.Conv2d", "conv_bias": True, "norm_op": "torch.nn.InstanceNorm2d",
         "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
         "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}, "deep_supervision": False}
TINY_TOPOLOGY = {"n_stages": 3, "features_per_stage": [4, 8, 16], "kernel_sizes": [[3, 3]] * 3,
                 "strides": [[1, 1], [2, 2], [2, 2]], "n_conv_per_stage_decoder": [1, 1]}
TINY_ARCHITECTURES = {
    "branch_a": {"network_class": "PlainConvUNet", "kwargs": {**TINY_TOPOLOGY, "n_conv_per_stage": [1, 1, 1], **_CONV}},
    "branch_b": {"network_class": "ResidualEncoderUNet",
                 "kwargs": {**TINY_TOPOLOGY, "n_blocks_per_stage": [1, 1, 1], **_CONV}},
}


# --- helpers -----------------------------------------------------------------------------------------
def make_plans(spacing_yx=(1.5, 1.5), patch_size_yx=(32, 32)) -> dict:
    configuration = {"data_identifier": "2d", "spacing_yx": list(spacing_yx), "patch_size_yx": list(patch_size_yx),
                     "normalization": [{"channel": 0, "name": "MRI", "scheme": "ZScoreNormalization",
                                        "parameters": {}}],
                     **TINY_ARCHITECTURES}
    return {"labels": LABELS, "num_classes": 3, "configurations": {"2d": configuration}}


def write_model_folder(results: Path, dataset: str = "Dataset001_Blobs", labeled: int | str = 3, seed: int = 0,
                       branches=("branch_a", "branch_b"), checkpoints=("final",), plans: dict | None = None,
                       file_ending: str = ".nii.gz") -> Path:
    """A model folder in the trainer's format with randomly initialised tiny branches."""
    from cctrnet.networks.branch import SegmentationBranch

    folder = results / dataset / model_folder_name("CCTRTrainer", labeled, seed)
    save_json(plans or make_plans(), folder / "plans.json")
    save_json({**DATASET_JSON, "file_ending": file_ending}, folder / "dataset.json")
    save_json({"trainer": "CCTRTrainer", "branches": list(branches),
               "architectures": {b: TINY_ARCHITECTURES[b] for b in branches}}, folder / "config.json")
    torch.manual_seed(seed)
    weights = {b: SegmentationBranch(TINY_ARCHITECTURES[b], 1, 3).state_dict() for b in branches}
    for checkpoint in checkpoints:
        torch.save({"network_weights": weights, "iteration": 7}, folder / f"checkpoint_{checkpoint}.pth")
    return folder


class PixelwiseLogits(torch.nn.Module):
    """A stand-in network: logits are fixed functions of each pixel's intensity, ignoring its position."""

    def __init__(self, scales=(0.0, 1.0, -2.0)):
        super().__init__()
        self.scales = torch.tensor(scales).view(1, -1, 1, 1)

    def forward(self, x):
        return x[:, :1] * self.scales.to(x.device)


class NearestLevelLogits(torch.nn.Module):
    """Class c wins where the normalised intensity is closest to ``levels[c]``: a known map of the input."""

    def __init__(self, levels):
        super().__init__()
        self.levels = torch.tensor(levels, dtype=torch.float32).view(1, -1, 1, 1)

    def forward(self, x):
        return -100.0 * (x[:, :1] - self.levels) ** 2


def _direct_softmax(data_czyx: np.ndarray, network) -> np.ndarray:
    slices = torch.from_numpy(data_czyx).permute(1, 0, 2, 3)
    return torch.softmax(network(slices), dim=1).permute(1, 0, 2, 3).numpy()


def _noise_free_case(shape_zyx=(6, 32, 40), spacing_xyz=(1.5, 1.5, 6.0)):
    """Three intensity levels (body 100, class a 250, class b 400) on zero padding, and its label."""
    _, label, geometry = blob_case(2, shape_zyx=shape_zyx, spacing_xyz=spacing_xyz)
    image = np.where(label == 1, 250.0, np.where(label == 2, 400.0, 100.0)).astype(np.float32)
    image[:, :3] = 0
    image[:, :, -2:] = 0
    return image, label, geometry


def _normalised_levels(image: np.ndarray) -> list[float]:
    """Where 100, 250 and 400 land after the z-score of the non-zero bounding box (computed independently)."""
    z, y, x = np.nonzero(image)
    crop = image[z.min():z.max() + 1, y.min():y.max() + 1, x.min():x.max() + 1]
    return [(level - crop.mean()) / crop.std() for level in (100.0, 250.0, 400.0)]


def _dice(a, b, value):
    a, b = a == value, b == value
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


# --- sliding window ----------------------------------------------------------------------------------
def test_gaussian_importance_map_is_centred_positive_and_scaled_by_sigma():
    weights = gaussian_importance_map((33, 17), 1 / 8)
    assert weights.shape == (33, 17) and weights.max() == pytest.approx(1.0)
    assert np.unravel_index(weights.argmax(), weights.shape) == (16, 8)
    np.testing.assert_allclose(weights, weights[::-1, ::-1], rtol=1e-6)
    assert weights.min() > 0
    sigma_y = 33 / 8
    assert weights[16 + 4, 8] == pytest.approx(np.exp(-0.5 * (4 / sigma_y) ** 2), rel=1e-5)


@pytest.mark.parametrize("size,patch", [(100, 32), (33, 32), (64, 32), (32, 32), (10, 32), (257, 64)])
def test_window_starts_cover_the_slice_with_at_most_half_a_patch_between_starts(size, patch):
    starts = window_starts(size, patch, 0.5)
    assert starts[0] == 0 and starts[-1] == max(0, size - patch)
    assert all(0 < b - a <= patch * 0.5 for a, b in zip(starts, starts[1:]))
    covered = np.zeros(max(size, patch), bool)
    for s in starts:
        covered[s:s + patch] = True
    assert covered[:size].all()


@pytest.mark.parametrize("shape_zyx,patch,mirroring,per_batch", [
    ((3, 50, 37), (16, 16), True, 5),   # many patches per slice, batches spanning slices
    ((2, 20, 12), (32, 32), False, 16),  # slice smaller than the patch: padded, then cut back
    ((4, 40, 29), (16, 32), True, 1),
])
def test_sliding_window_reproduces_a_pixelwise_network_exactly(shape_zyx, patch, mirroring, per_batch):
    data = np.random.default_rng(0).normal(size=(1, *shape_zyx)).astype(np.float32)
    network = PixelwiseLogits()
    settings = SlidingWindowSettings(mirroring=mirroring, patches_per_batch=per_batch)
    ensemble = BranchEnsemble([network])
    probabilities = predict_volume(data, ensemble, patch, 3, settings)
    assert probabilities.shape == (3, *shape_zyx) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, _direct_softmax(data, network), atol=1e-5)


def test_mirroring_averages_the_four_flips_each_flipped_back():
    pattern = torch.rand(2, 3, 8, 6)
    calls = []

    def position_dependent(batch):  # ignores its input: a flip-back error would show
        calls.append(batch)
        return pattern

    batch = torch.rand(2, 1, 8, 6)
    out = predict_with_mirroring(position_dependent, batch, mirroring=True)
    expected = (pattern + pattern.flip(2) + pattern.flip(3) + pattern.flip(2, 3)) / 4
    torch.testing.assert_close(out, expected)
    assert len(calls) == 4 and any(torch.equal(c, batch.flip(2, 3)) for c in calls)
    torch.testing.assert_close(predict_with_mirroring(position_dependent, batch, mirroring=False), pattern)


def test_branch_ensemble_averages_softmax_not_logits():
    a, b = PixelwiseLogits((0.0, 5.0, 0.0)), PixelwiseLogits((0.0, 0.0, 1.0))
    x = torch.full((1, 1, 2, 2), 2.0)
    expected = (torch.softmax(a(x), 1) + torch.softmax(b(x), 1)) / 2
    torch.testing.assert_close(BranchEnsemble([a, b])(x), expected)


# --- one case, the input's grid ----------------------------------------------------------------------
@pytest.mark.parametrize("input_ending,dataset_ending", [(".nii.gz", ".nii.gz"), (".mha", ".nii.gz"),
                                                         (".nrrd", ".mha")])
def test_known_map_gives_the_exact_label_file_back_on_the_input_geometry(tmp_path, input_ending, dataset_ending):
    image, label, geometry = _noise_free_case()
    assert geometry.direction_xyz == tuple(float(v) for v in OBLIQUE_DIRECTION)
    write_image(image, geometry, tmp_path / "in" / f"patient_0000{input_ending}")
    model_dir = write_model_folder(tmp_path / "results", file_ending=dataset_ending)
    model = ModelFolder.load(model_dir)
    predictor = Predictor(model, [NearestLevelLogits(_normalised_levels(image))], "cpu",
                          SlidingWindowSettings(patches_per_batch=4))
    report = predictor.predict_folder(tmp_path / "in", tmp_path / "out", with_probabilities=True, progress=False)
    assert report.predicted == ["patient"] and report.problems == []

    written, written_geometry = read_image(tmp_path / "out" / f"patient{dataset_ending}", dtype=np.int16)
    np.testing.assert_array_equal(written, label)
    assert written_geometry.same_grid(geometry, rtol=1e-6, atol_mm=1e-5)
    np.testing.assert_allclose(written_geometry.direction_xyz, geometry.direction_xyz, atol=1e-6)
    stored = np.load(tmp_path / "out" / "patient.npz")
    assert stored["probabilities"].shape == (3, *label.shape)
    np.testing.assert_allclose(stored["probabilities"].sum(axis=0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(stored["probabilities"].argmax(axis=0), label)
    np.testing.assert_allclose(stored["spacing_xyz"], geometry.spacing_xyz)


def test_prediction_with_resampling_returns_to_the_anisotropic_input_grid(tmp_path):
    image, label, geometry = _noise_free_case(shape_zyx=(5, 40, 48), spacing_xyz=(0.8, 1.1, 7.0))
    model = ModelFolder.load(write_model_folder(tmp_path / "results", plans=make_plans((1.3, 1.2), (32, 32))))
    predictor = Predictor(model, [NearestLevelLogits(_normalised_levels(image))], "cpu")
    data, properties = predictor.preprocess(image[None], geometry)
    assert data.shape[2:] != image.shape[1:]  # it was resampled
    write_image(image, geometry, tmp_path / "in" / "p_0000.nii.gz")
    predictor.predict_folder(tmp_path / "in", tmp_path / "out", progress=False)
    written, written_geometry = read_image(tmp_path / "out" / "p.nii.gz", dtype=np.int16)
    assert written.shape == label.shape and written_geometry.same_grid(geometry, rtol=1e-6, atol_mm=1e-5)
    # interpolation blurs the 100 -> 400 edge of class b through 250, so class a rings b by a voxel
    assert _dice(written, label, 1) > 0.8 and _dice(written, label, 2) > 0.8


# --- input folders and bad inputs --------------------------------------------------------------------
def test_input_listing_accepts_single_files_for_one_channel_and_reports_channel_mistakes(tmp_path):
    for name in ("a_0000.nii.gz", "b.mha", "c_0003.nrrd", "d_0000.nii.gz", "d_0001.nii.gz", "readme.txt"):
        (tmp_path / name).write_bytes(b"")
    cases, problems = list_input_cases(tmp_path, num_channels=1)
    assert [(c.case_id, [p.name for p in c.image_files]) for c in cases] == [
        ("a", ["a_0000.nii.gz"]), ("b", ["b.mha"]), ("c_0003", ["c_0003.nrrd"])]
    assert list(problems) == ["d"] and problems["d"].startswith("wrong number of channels")
    cases, problems = list_input_cases(tmp_path, num_channels=2)
    assert [c.case_id for c in cases] == ["d"]
    assert problems["a"].startswith("wrong number of channels")
    assert problems["b.mha"].startswith("no channel suffix")


def test_unreadable_and_wrong_channel_inputs_are_reported_and_the_rest_predicted(tmp_path, cctr_folders, capsys):
    from cctrnet.cli.predict import main

    write_model_folder(cctr_folders["cctr_results"])
    image, _, geometry = blob_case(1, shape_zyx=(3, 24, 28))
    inputs = tmp_path / "imgs"
    write_image(image, geometry, inputs / "good_0000.nii.gz")
    write_image(image, geometry, inputs / "two_0000.nii.gz")
    write_image(image, geometry, inputs / "two_0001.nii.gz")
    (inputs / "broken_0000.nii.gz").write_text("not an image")
    code = main(["-i", str(inputs), "-o", str(tmp_path / "preds"), "--device", "cpu", "--quiet", "--disable-tta"])
    err = capsys.readouterr().err
    assert code == 1
    assert "broken" in err and "cannot be read" in err and "two: wrong number of channels" in err
    assert sorted(p.name for p in (tmp_path / "preds").iterdir()) == ["good.nii.gz", "prediction_report.json"]
    report = load_json(tmp_path / "preds" / "prediction_report.json")
    assert report["written"] == ["good"] and report["kept"] == [] and sorted(report["skipped"]) == ["broken", "two"]
    assert report["skipped"]["two"].startswith("wrong number of channels")
    written, written_geometry = read_image(tmp_path / "preds" / "good.nii.gz", dtype=np.int16)
    assert written.shape == image.shape and set(np.unique(written)) <= {0, 1, 2}
    assert written_geometry.same_grid(geometry)


# --- model folders -----------------------------------------------------------------------------------
def test_model_folder_loads_each_branch_with_its_own_architecture_and_weights(tmp_path):
    folder = write_model_folder(tmp_path, checkpoints=("final", "latest"))
    model = ModelFolder.load(folder)
    networks = model.load_networks(torch.device("cpu"), "latest")
    assert list(networks) == ["branch_a", "branch_b"]
    assert networks["branch_b"].network_class == "ResidualEncoderUNet" and not networks["branch_a"].training
    saved = torch.load(folder / "checkpoint_latest.pth", weights_only=True)["network_weights"]
    for name, network in networks.items():
        for key, value in network.state_dict().items():
            torch.testing.assert_close(value, saved[name][key])


def test_model_folder_without_architectures_in_its_config_uses_the_plans(tmp_path):
    folder = write_model_folder(tmp_path, branches=("branch_a",))
    save_json({"trainer": "CCTRTrainer", "branches": ["branch_a"]}, folder / "config.json")
    networks = ModelFolder.load(folder).load_networks(torch.device("cpu"))
    assert list(networks) == ["branch_a"] and networks["branch_a"].network_class == "PlainConvUNet"
    save_json({"trainer": "CCTRTrainer", "branches": ["branch_c"]}, folder / "config.json")
    with pytest.raises(ModelFolderError, match="branch_c"):
        ModelFolder.load(folder)


def test_cli_predicts_with_the_only_model_and_writes_probabilities(tmp_path, cctr_folders):
    from cctrnet.cli.predict import main

    folder = write_model_folder(cctr_folders["cctr_results"], branches=("branch_a",))
    image, _, geometry = blob_case(4, shape_zyx=(3, 24, 28))
    write_image(image, geometry, tmp_path / "imgs" / "case7.nii.gz")
    code = main(["-i", str(tmp_path / "imgs"), "-o", str(tmp_path / "preds"), "--device", "cpu", "--quiet",
                 "--save-probabilities", "--batch-size", "3"])
    assert code == 0
    written, _ = read_image(tmp_path / "preds" / "case7.nii.gz", dtype=np.int16)
    stored = np.load(tmp_path / "preds" / "case7.npz")["probabilities"]
    np.testing.assert_array_equal(stored.argmax(axis=0), written)

    # the same weights through the predictor directly give the same probabilities on the preprocessed grid
    predictor = Predictor.from_model_folder(ModelFolder.load(folder), "cpu")
    data, properties = predictor.preprocess(image[None], geometry)
    from cctrnet.preprocessing.revert import probabilities_to_raw
    np.testing.assert_allclose(probabilities_to_raw(predictor.predict_preprocessed(data), properties), stored,
                               atol=1e-5)


def test_model_discovery_without_arguments_and_its_errors(tmp_path):
    with pytest.raises(ModelFolderError, match="(?s)no trained model found.*cctr_train"):
        find_model_folder(tmp_path)
    only = write_model_folder(tmp_path, labeled=3)
    assert find_model_folder(tmp_path).path == only
    write_model_folder(tmp_path, labeled="all")
    write_model_folder(tmp_path, dataset="Dataset002_Other", labeled=1)
    with pytest.raises(ModelFolderError) as several:
        find_model_folder(tmp_path)
    message = str(several.value)
    assert "3 trained models" in message and "-d" in message and "-m" in message
    assert "CCTRTrainer__labeled3__seed0" in message and "Dataset002_Other" in message
    assert find_model_folder(tmp_path, dataset=2).dataset_name == "Dataset002_Other"
    assert find_model_folder(tmp_path, dataset="Blobs", labeled="all").run_name == "CCTRTrainer__labeledall__seed0"
    assert find_model_folder(tmp_path, model_folder=only).path == only
    with pytest.raises(ModelFolderError, match="matches the filters dataset=1, labeled=7"):
        find_model_folder(tmp_path, dataset=1, labeled=7)


def test_a_missing_checkpoint_names_the_one_that_exists(tmp_path, cctr_folders, capsys):
    from cctrnet.cli.predict import main

    write_model_folder(cctr_folders["cctr_results"], checkpoints=("latest",))
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "case_0000.nii.gz").write_bytes(b"")  # an input, so the checkpoint is what is missing
    assert main(["-i", str(tmp_path / "imgs"), "-o", str(tmp_path / "p"), "--device", "cpu"]) == 2
    assert "--checkpoint latest" in capsys.readouterr().err
    with pytest.raises(ModelFolderError, match="not a trained model folder, config.json missing"):
        (tmp_path / "half").mkdir()
        save_json({}, tmp_path / "half" / "plans.json")
        save_json({}, tmp_path / "half" / "dataset.json")
        ModelFolder.load(tmp_path / "half")


def test_predict_help():
    """Its speed is measured by benchmarks/cli_latency_benchmark.py, not asserted here."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "cctrnet.cli.predict", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--disable-tta" in result.stdout


# --- registration-only baseline ----------------------------------------------------------------------
def _in_plane_affine(angle_deg: float, scale_xy, shift_xy_mm) -> np.ndarray:
    angle = np.deg2rad(angle_deg)
    matrix = np.eye(4)
    matrix[:2, :2] = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ np.diag(scale_xy)
    matrix[:2, 3] = shift_xy_mm
    return matrix


def _atlas_and_subject(world_to_subject: np.ndarray, deformation_mm: float = 0.0):
    """(plan configuration, a preprocessed labeled atlas, a new subject's image, label and geometry)."""
    from cctrnet.inference.registration_only import Atlas
    from cctrnet.preprocessing.preprocessor import preprocess_arrays
    from cctrnet.registration.synthetic_pairs import make_subject

    shape_zyx, spacing_xyz = (8, 64, 64), (1.2, 1.2, 6.0)
    configuration = make_plans(spacing_yx=(1.2, 1.2))["configurations"]["2d"]
    atlas_image, atlas_label, atlas_geometry = make_subject(shape_zyx, spacing_xyz, 0)
    atlas_data, atlas_seg, atlas_properties = preprocess_arrays(atlas_image[None], atlas_label, atlas_geometry,
                                                                configuration, [0, 1, 2, 3])
    atlas = Atlas("atlas", atlas_data[0], atlas_seg, Geometry.from_dict(atlas_properties["geometry_preprocessed"]))
    return configuration, atlas, atlas_label, make_subject(shape_zyx, spacing_xyz, 1, world_to_subject, deformation_mm)


@pytest.mark.parametrize("engine", ["torch", "simpleitk"])
def test_registration_only_recovers_the_label_of_a_known_affine_pair(tmp_path, engine):
    """Both affine engines; torch is the default, the engine the dataset's own pairs are stored with."""
    from cctrnet.inference.registration_only import RegistrationOnlyPredictor
    from cctrnet.registration.synthetic_pairs import dice

    configuration, atlas, atlas_label, (new_image, new_label, new_geometry) = _atlas_and_subject(
        _in_plane_affine(8, (1.07, 0.95), (4.0, -3.0)))
    moved_geometry = Geometry(new_geometry.shape_zyx, new_geometry.spacing_xyz, (3.0, -7.0, 2.0), OBLIQUE_DIRECTION)
    write_image(new_image, moved_geometry, tmp_path / "in" / "new_0000.nii.gz")

    predictor = RegistrationOnlyPredictor(configuration, [0, 1, 2, 3], [atlas], ".nii.gz", engine=engine)
    report = predictor.predict_folder(tmp_path / "in", tmp_path / "out", progress=False)
    assert report.predicted == ["new"], report.problems
    written, written_geometry = read_image(tmp_path / "out" / "new.nii.gz", dtype=np.int16)
    assert written_geometry.same_grid(moved_geometry, rtol=1e-6, atol_mm=1e-5)
    unregistered = atlas_label  # the atlas's label taken voxel for voxel, without registration
    assert dice(unregistered, new_label) < 0.8
    assert dice(written, new_label) > 0.9
    assert predictor.chosen_atlas == {"new.nii.gz": "atlas"}


def test_registration_only_with_the_deformable_stage_beats_affine_on_a_deformed_subject(tmp_path):
    """--reg-method affine_deformable: the torch engine's deformable stage on top of the affine."""
    from cctrnet.inference.registration_only import RegistrationOnlyPredictor
    from cctrnet.registration.synthetic_pairs import dice

    configuration, atlas, _, (new_image, new_label, new_geometry) = _atlas_and_subject(
        _in_plane_affine(4, (1.03, 0.97), (2.0, -1.0)), deformation_mm=4.0)
    write_image(new_image, new_geometry, tmp_path / "in" / "new_0000.nii.gz")
    dices = {}
    for method in ("affine", "affine_deformable"):
        predictor = RegistrationOnlyPredictor(configuration, [0, 1, 2, 3], [atlas], ".nii.gz", method)
        report = predictor.predict_folder(tmp_path / "in", tmp_path / method, progress=False)
        assert report.predicted == ["new"], report.problems
        dices[method] = dice(read_image(tmp_path / method / "new.nii.gz", dtype=np.int16)[0], new_label)
    assert dices["affine_deformable"] > dices["affine"], dices


def test_registration_only_cli_says_what_is_missing(tmp_path, cctr_folders, capsys):
    from cctrnet.cli.predict import main

    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "case_0000.nii.gz").write_bytes(b"")
    assert main(["-i", str(tmp_path / "imgs"), "-o", str(tmp_path / "p"), "--reg-only"]) == 2
    assert "--reg-only needs -d DATASET" in capsys.readouterr().err


def test_registration_only_chooses_the_atlas_by_best_registration_selection():
    from cctrnet.inference.registration_only import Atlas, propagate_label
    from cctrnet.preprocessing.preprocessor import preprocess_arrays
    from cctrnet.registration.synthetic_pairs import dice, make_subject

    shape_zyx, spacing_xyz = (8, 64, 64), (1.2, 1.2, 6.0)
    configuration = make_plans(spacing_yx=(1.2, 1.2))["configurations"]["2d"]

    def atlas(name, image, label, geometry):
        data, seg, properties = preprocess_arrays(image[None], label, geometry, configuration, [0, 1, 2, 3])
        return Atlas(name, data[0], seg, Geometry.from_dict(properties["geometry_preprocessed"]))

    image, label, geometry = make_subject(shape_zyx, spacing_xyz, 0)
    good = atlas("b_same_anatomy", image, label, geometry)
    # anatomy turned by 180 degrees in plane: no affine from the centred start brings it back
    turned = atlas("a_turned", np.ascontiguousarray(image[:, ::-1, ::-1]), np.ascontiguousarray(label[:, ::-1, ::-1]),
                   geometry)
    new_image, new_label, new_geometry = make_subject(shape_zyx, spacing_xyz, 1,
                                                      _in_plane_affine(8, (1.07, 0.95), (4.0, -3.0)))
    data, _, properties = preprocess_arrays(new_image[None], None, new_geometry, configuration, [0, 1, 2, 3])
    result = propagate_label(data[0], Geometry.from_dict(properties["geometry_preprocessed"]), [turned, good])
    assert result.atlas_id == "b_same_anatomy"
    assert dice(result.label_zyx, new_label) > 0.9
