"""Deformable stage: field algebra, known deformation recovered, batching, failures, storage, stage and auto."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cctrnet.dataset.geometry import Geometry
from cctrnet.preprocessing.case_storage import save_preprocessed_case
from cctrnet.registration import method_choice, velocity_field as vf
from cctrnet.registration.deformable_engine import field_quality, register_batch_deformable
from cctrnet.registration.pair_store import PairStore, registration_folder
from cctrnet.registration.settings import IGNORE_LABEL, RegistrationSettings
from cctrnet.registration.single_pair import register_pair, result_transform
from cctrnet.registration.stage import run_registration_stage
from cctrnet.registration.synthetic_pairs import dice, make_subject
from cctrnet.registration.torch_engine import PairVolumes
from cctrnet.registration.training_access import load_training_registration
from cctrnet.registration.transforms import resample
from cctrnet.utilities.file_io import load_json, save_json

SHAPE_ZYX = (6, 64, 64)
SPACING_XYZ = (1.5, 1.5, 6.0)
FAST = RegistrationSettings(torch_points_per_pair=1024, pyramid_levels=(4, 2), torch_iterations_per_level=(60, 30),
                            deformable_iterations_per_level=(40, 20))

pytestmark = pytest.mark.usefixtures("single_torch_thread")  # conftest: the engines run one thread per process


def bump_displacement(geometry: Geometry, amplitude_mm: float) -> np.ndarray:
    """(3, Z, Y, X) smooth in-plane field (mm): a Gaussian bump pushing x, a wave in y."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in geometry.shape_zyx], indexing="ij"), axis=-1)
    points = geometry.index_zyx_to_physical_xyz(index.reshape(-1, 3)).reshape(*geometry.shape_zyx, 3)
    centre = geometry.index_zyx_to_physical_xyz((np.asarray(geometry.shape_zyx) - 1) / 2)
    radius = 0.3 * geometry.shape_zyx[2] * geometry.spacing_xyz[0]
    bump = np.exp(-np.sum(((points - centre)[..., :2] / radius) ** 2, axis=-1))
    displacement = np.zeros((3, *geometry.shape_zyx))
    displacement[0] = amplitude_mm * bump
    displacement[1] = 0.5 * amplitude_mm * np.sin((points[..., 0] - centre[0]) / radius) * bump
    return displacement


def warped_by(image: np.ndarray, geometry: Geometry, velocity_mm: np.ndarray, nearest: bool = False) -> np.ndarray:
    """The moving image whose registration onto ``image`` is ``exp(v)``: ``image`` resampled through ``exp(-v)``."""
    import SimpleITK as sitk

    inverse = vf.displacement_of_velocity(velocity_mm, geometry, -1.0)
    field = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(inverse, 0, -1)), isVector=True)
    return resample(image, geometry, geometry, sitk.DisplacementFieldTransform(geometry.apply_to_sitk(field)), nearest=nearest)


def identity_affine_text() -> str:
    import SimpleITK as sitk

    from cctrnet.registration.transforms import transform_to_text

    return transform_to_text(sitk.AffineTransform(3))


# --- field algebra ----------------------------------------------------------------------------------
def test_exponential_of_a_constant_field_is_the_shift_and_its_inverse_the_opposite():
    geometry = Geometry((4, 16, 16), (2.0, 2.0, 5.0), (0.0, 0.0, 0.0))
    velocity = np.zeros((3, 4, 16, 16), np.float32)
    velocity[0] = 1.5  # mm along x, in-plane
    forward = vf.displacement_of_velocity(velocity, geometry, 1.0)
    backward = vf.displacement_of_velocity(velocity, geometry, -1.0)
    assert np.allclose(forward[0], 1.5, atol=1e-6) and np.allclose(backward[0], -1.5, atol=1e-6)
    assert np.allclose(vf.jacobian_determinant(forward, geometry), 1.0)
    assert vf.inverse_consistency_mm(forward, backward, geometry)[:, :, 2:-2].max() < 1e-6


def test_jacobian_finds_a_folding_displacement():
    geometry = Geometry((3, 10, 10), (1.0, 1.0, 4.0), (0.0, 0.0, 0.0))
    index = np.stack(np.meshgrid(*[np.arange(n) for n in geometry.shape_zyx], indexing="ij"), axis=0).astype(float)
    displacement = np.zeros((3, *geometry.shape_zyx))
    displacement[0] = -2.0 * index[2]  # x -> -x: the map reverses orientation everywhere
    assert np.all(vf.jacobian_determinant(displacement, geometry) < 0)
    displacement[0] = 0.5 * index[2]  # a stretch by 1.5 keeps it
    assert np.allclose(vf.jacobian_determinant(displacement, geometry), 1.5)


def test_stored_velocity_round_trip_is_within_the_quantum():
    geometry = Geometry((3, 8, 9), (1.2, 1.3, 5.0), (4.0, -2.0, 1.0))
    velocity = np.random.default_rng(0).normal(0, 3, (3, 3, 8, 9)).astype(np.float32)
    restored, restored_geometry = vf.velocity_from_bytes(vf.velocity_to_bytes(velocity, geometry))
    assert restored_geometry.same_grid(geometry)
    assert np.abs(restored - velocity).max() <= vf.STORAGE_QUANTUM_MM / 2 + 1e-6


# --- engine -----------------------------------------------------------------------------------------
def known_pair(seed: int = 0, shape_zyx=SHAPE_ZYX, amplitude_mm: float = 3.0):
    fixed, label, geometry = make_subject(shape_zyx, SPACING_XYZ, seed)
    velocity = bump_displacement(geometry, amplitude_mm)
    moving = warped_by(fixed, geometry, velocity).astype(np.float32)
    moving_label = warped_by(label, geometry, velocity, nearest=True)
    return fixed, label, moving, moving_label, geometry, vf.displacement_of_velocity(velocity, geometry)


def test_known_deformation_is_recovered():
    fixed, label, moving, moving_label, geometry, truth = known_pair()
    pair = PairVolumes("m", "f", fixed, geometry, moving, geometry)
    result = register_batch_deformable([pair], [np.eye(4)], [identity_affine_text()], FAST)[0]
    assert result.ok, result.reason
    velocity, grid = vf.velocity_from_bytes(result.field_bytes)
    recovered = vf.displacement_of_velocity(velocity, grid)
    truth_on_grid = vf.resample_field(torch.as_tensor(truth, dtype=torch.float32)[None], geometry, grid)[0].numpy()
    interior = (slice(None), slice(None), slice(4, -4), slice(4, -4))
    error = np.linalg.norm(recovered - truth_on_grid, axis=0)[interior[1:]]
    assert error.mean() < 0.6, f"mean displacement error {error.mean():.2f} mm for a 3 mm deformation"
    assert np.abs(recovered[2]).max() < 1e-3  # thick slices: the field stays in-plane
    warped = resample(moving_label, geometry, geometry, result_transform(result), nearest=True)
    assert dice(warped, label) > dice(moving_label, label) + 0.03
    assert result.quality["folded_fraction"] == 0.0 and result.quality["inverse_consistency_mm_p95"] < 0.3
    assert result.metric_final < result.metric_initial


def test_pairs_of_different_grids_in_one_batch_match_each_alone():
    first = known_pair(1)
    second = known_pair(2, shape_zyx=(5, 56, 72), amplitude_mm=2.0)
    pairs = [PairVolumes(f"m{i}", "f", p[0], p[4], p[2], p[4]) for i, p in enumerate((first, second))]
    starts = [np.eye(4), np.eye(4)]
    texts = [identity_affine_text()] * 2
    batched = register_batch_deformable(pairs, starts, texts, FAST)
    for i, pair in enumerate(pairs):
        alone = register_batch_deformable([pair], starts[:1], texts[:1], FAST)[0]
        together = vf.velocity_from_bytes(batched[i].field_bytes)[0]
        assert np.abs(together - vf.velocity_from_bytes(alone.field_bytes)[0]).max() < 0.02
        assert batched[i].metric_final == pytest.approx(alone.metric_final, abs=1e-4)


def test_diverged_pair_is_failed_and_good_pair_beside_it_is_not():
    fixed, _, moving, _, geometry, _ = known_pair()
    broken = moving.copy()
    broken[2, 20:30, 20:30] = np.nan
    pairs = [PairVolumes("good", "f", fixed, geometry, moving, geometry),
             PairVolumes("broken", "f", fixed, geometry, broken, geometry)]
    good, bad = register_batch_deformable(pairs, [np.eye(4)] * 2, [identity_affine_text()] * 2, FAST)
    assert good.ok, good.reason
    assert not bad.ok and "not finite" in bad.reason and bad.field_bytes is None


def test_quality_bounds_fail_a_pair():
    fixed, _, moving, _, geometry, _ = known_pair()
    strict = RegistrationSettings(**{**FAST.to_dict(), "deformable_max_inverse_error_voxels": 0.0})
    result = register_batch_deformable([PairVolumes("m", "f", fixed, geometry, moving, geometry)], [np.eye(4)],
                                       [identity_affine_text()], strict)[0]
    assert not result.ok and "inverse consistency" in result.reason


def test_field_quality_of_stored_velocity():
    geometry = Geometry((3, 12, 12), (2.0, 2.0, 6.0), (0.0, 0.0, 0.0))
    velocity = bump_displacement(geometry, 2.0).astype(np.float32)
    quality = field_quality(velocity, geometry)
    assert quality["folded_fraction"] == 0.0 and quality["displacement_mm_max"] == pytest.approx(2.0, rel=0.2)


def test_single_pair_with_affine_start_beats_affine_alone():
    fixed, label, geometry = make_subject(SHAPE_ZYX, SPACING_XYZ, 0)
    moving, moving_label, moving_geometry = make_subject(SHAPE_ZYX, SPACING_XYZ, 3, _shift(2.0), deformation_mm=2.5)
    affine = register_pair(fixed, geometry, moving, moving_geometry, "affine", FAST)
    deformable = register_pair(fixed, geometry, moving, moving_geometry, "affine_deformable", FAST)
    assert deformable.ok, deformable.reason
    scores = [dice(resample(moving_label, moving_geometry, geometry, result_transform(r), nearest=True), label)
              for r in (affine, deformable)]
    assert scores[1] > scores[0]


def _shift(mm: float) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:2, 3] = (mm, -mm)
    return matrix


# --- the stage with deformable pairs -----------------------------------------------------------------------
def write_dataset(root, count: int = 4):
    data_folder = root / "Dataset001_Tiny" / "2d"
    for index in range(count):
        image, label, geometry = make_subject(SHAPE_ZYX, SPACING_XYZ, index, _shift(1.5 * index) if index else None,
                                              deformation_mm=2.0 if index else 0.0)
        save_preprocessed_case(data_folder, f"c{index}", image[None], label, {"geometry_preprocessed": geometry.to_dict()})
    return data_folder.parent


def test_stage_brs_labels_point_maps_and_resume(tmp_path):
    dataset = write_dataset(tmp_path)
    summary = run_registration_stage(dataset, ["c0"], method="affine_deformable", settings=FAST)
    assert summary.num_computed == summary.num_pairs_needed and not summary.failed_pairs
    store = PairStore(registration_folder(dataset, "2d", "affine_deformable"))
    assert PairStore(registration_folder(dataset, "2d", "affine")).successful("c0", "c1")  # started from the affine
    assert store.field_path("c0", "c1").exists() and store.field_path("c0", "c1").stat().st_size < 200_000
    registration = load_training_registration(dataset, ["c0"], "affine_deformable")
    assert registration.selected_labeled["c1"] == "c0"
    registered = registration.registered_label("c1")
    truth = np.load(dataset / "2d" / "c1_seg.npy")
    assert dice(np.where(registered == IGNORE_LABEL, 0, registered), truth) > 0.85
    # a point map agrees with the warped label: c0's label at the mapped points is c1's registered label
    label_c0 = np.load(dataset / "2d" / "c0_seg.npy")
    index = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE_ZYX], indexing="ij"), -1).reshape(-1, 3)
    mapped = registration.point_mapper.map_points("c1", "c0", torch.as_tensor(index, dtype=torch.float64)).numpy()
    rounded = np.round(mapped).astype(int)
    inside = np.all((rounded >= 0) & (rounded < np.asarray(SHAPE_ZYX)), axis=1)
    carried = label_c0[tuple(rounded[inside].T)]
    assert np.mean(carried == registered.reshape(-1)[inside]) > 0.97
    # one registration per unordered pair serves both directions of REPS (exp(-v))
    there = registration.point_mapper.map_points("c2", "c3", torch.as_tensor(index[:500], dtype=torch.float64))
    back = registration.point_mapper.map_points("c3", "c2", there)
    assert (back - torch.as_tensor(index[:500], dtype=torch.float64))[:, 1:].abs().mean() < 0.3
    # killed half-way: the pairs with records are kept, only the others are computed again
    removed = [("c3", "c0"), ("c0", "c2")]
    for pair in removed:
        store.record_path(*pair).unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in store.pairs_folder.glob("*.json")}
    again = run_registration_stage(dataset, ["c0"], method="affine_deformable", settings=FAST, write_report=False)
    assert again.num_computed == len(removed)
    assert all(p.stat().st_mtime_ns == kept[p.name] for p in store.pairs_folder.glob("*.json") if p.name in kept)


def test_auto_chooses_from_the_labeled_cases_and_records_both(tmp_path):
    dataset = write_dataset(tmp_path)
    summary = run_registration_stage(dataset, ["c0", "c1", "c2"], method="auto", settings=FAST)
    choice = summary.choice
    assert summary.method == choice.method
    affine, deformable = (choice.leave_one_out_dice[m]["mean"] for m in ("affine", "affine_deformable"))
    assert choice.method == ("affine_deformable" if deformable > affine else "affine")
    assert choice.leave_one_out_dice["affine"]["pairs"] == 6
    # failed pairs count 0 in the mean and are left out of mean_successful, which is therefore never lower
    assert all(choice.leave_one_out_dice[m]["mean_successful"] >= choice.leave_one_out_dice[m]["mean"]
               for m in ("affine", "affine_deformable"))
    stored = method_choice.load_choices(dataset / "registration" / "2d")
    assert stored["c0,c1,c2"]["method"] == choice.method
    report = load_json(dataset / "registration" / "2d" / "registration_report.json")
    assert report["choices"]["c0,c1,c2"]["method"] == choice.method
    assert "folded_fraction_max" in report["methods"]["affine_deformable"]["quality"]
    one = run_registration_stage(dataset, ["c3"], method="auto", settings=FAST, write_report=False)
    assert one.method == "affine_deformable" and "one labeled case" in one.choice.reason


def test_auto_with_patients_ignores_pairs_within_one_patient(tmp_path):
    assert method_choice.leave_one_out_pairs(["a1", "a2", "b1"], {"a1": "a", "a2": "a", "b1": "b"}) == [
        ("b1", "a1"), ("b1", "a2"), ("a1", "b1"), ("a2", "b1")]
    assert len(method_choice.leave_one_out_pairs(["a1", "a2", "b1"])) == 6  # without patients: every ordered pair
    dataset = write_dataset(tmp_path)
    dataset_json = load_json(dataset / "dataset.json") if (dataset / "dataset.json").exists() else {}
    dataset_json["patients"] = {"p0": ["c0", "c1"], "p1": ["c2"], "p2": ["c3"]}
    save_json(dataset_json, dataset / "dataset.json")
    # two frames of one patient: nothing to compare between patients, the one-labeled-patient rule decides
    one_patient = run_registration_stage(dataset, ["c0", "c1"], method="auto", settings=FAST, write_report=False)
    assert "one labeled patient" in one_patient.choice.reason and not one_patient.choice.leave_one_out_dice
    two_patients = run_registration_stage(dataset, ["c0", "c1", "c2"], method="auto", settings=FAST,
                                          write_report=False)
    assert two_patients.choice.leave_one_out_dice["affine"]["pairs"] == 4  # c0<->c2, c1<->c2 both ways
    assert "different patients" in two_patients.choice.reason


def test_dask_batches_give_the_same_pairs_as_local(tmp_path):
    distributed = pytest.importorskip("distributed", reason="dask[distributed] is not installed")
    from cctrnet.registration import runner

    dataset = write_dataset(tmp_path, count=3)
    data_folder = dataset / "2d"
    pairs = [("c1", "c0"), ("c2", "c0")]
    affine = PairStore(tmp_path / "affine")
    runner.compute_missing_pairs(data_folder, affine, pairs, "affine", "torch", FAST)
    local = PairStore(tmp_path / "local")
    runner.compute_missing_pairs(data_folder, local, pairs, "affine_deformable", "torch", FAST, affine_store=affine)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        remote = PairStore(tmp_path / "dask")
        runner.compute_missing_pairs(data_folder, remote, pairs, "affine_deformable", "torch",
                                     RegistrationSettings(**{**FAST.to_dict(), "torch_batch_size": 1}),
                                     dask_scheduler=cluster.scheduler_address, affine_store=affine)
    for pair in pairs:
        a = vf.velocity_from_bytes(local.field_path(*pair).read_bytes())[0]
        b = vf.velocity_from_bytes(remote.field_path(*pair).read_bytes())[0]
        assert np.abs(a - b).max() < 0.02


def test_single_pair_affine_engine_is_a_choice():
    """The registration-only baseline registers a new image with the engine the stage stores pairs with
    (torch) unless SimpleITK's is asked for; both engines recovering a known affine is checked in
    test_inference.py on a larger subject."""
    fixed, label, geometry = make_subject(SHAPE_ZYX, SPACING_XYZ, 0)
    moving, moving_label, moving_geometry = make_subject(SHAPE_ZYX, SPACING_XYZ, 0, _shift(2.0))
    result = register_pair(fixed, geometry, moving, moving_geometry, "affine", FAST)
    assert result.ok and result.engine == "torch", result.reason
    warped = resample(moving_label, moving_geometry, geometry, result_transform(result), nearest=True)
    assert dice(warped, label) > 0.9
    asked = register_pair(fixed, geometry, moving, moving_geometry, "affine", FAST, engine="simpleitk")
    assert asked.engine == "simpleitk"
    with pytest.raises(ValueError, match="unknown registration engine"):
        register_pair(fixed, geometry, moving, moving_geometry, "affine", FAST, engine="elastix")
