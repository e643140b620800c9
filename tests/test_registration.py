"""Registration stage: engines, pair store, failures, resume, BRS, registered labels, point maps, Dask."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cctrnet.dataset.geometry import Geometry
from cctrnet.preprocessing.case_storage import save_preprocessed_case
from cctrnet.registration import brs, runner
from cctrnet.registration.pair_store import PairStore, registration_folder
from cctrnet.registration.pairs import required_pairs
from cctrnet.registration.settings import IGNORE_LABEL, RegistrationSettings
from cctrnet.registration.sitk_engine import register_pair_sitk
from cctrnet.registration.stage import run_registration_stage
from cctrnet.registration.synthetic_pairs import dice, make_subject
from cctrnet.registration.torch_engine import PairVolumes, register_batch_torch
from cctrnet.registration.training_access import load_training_registration
from cctrnet.registration.transforms import affine_matrix_4x4, resample, transform_from_file

SHAPE_ZYX = (8, 80, 80)
SPACING_XYZ = (1.0, 1.0, 6.0)
FAST = RegistrationSettings(torch_points_per_pair=1024, pyramid_levels=(4, 2), torch_iterations_per_level=(60, 30))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The engines run one thread per process; spinning threads on a shared 2-core machine cost 10x."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def in_plane_affine(angle_deg: float, scale_xy: tuple[float, float], shift_xy_mm: tuple[float, float]) -> np.ndarray:
    """A 4x4 physical affine that leaves z alone, so thick slices sample the same anatomy."""
    angle = np.deg2rad(angle_deg)
    matrix = np.eye(4)
    matrix[:2, :2] = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ np.diag(scale_xy)
    matrix[:2, 3] = shift_xy_mm
    return matrix


KNOWN = in_plane_affine(7.0, (1.06, 0.96), (3.0, -2.5))


def subject(seed: int, world_to_subject: np.ndarray | None = None, deformation_mm: float = 0.0):
    return make_subject(SHAPE_ZYX, SPACING_XYZ, seed, world_to_subject, deformation_mm)


def write_dataset(root: Path, moved: dict[str, tuple[np.ndarray | None, bool]]) -> Path:
    """A tiny preprocessed dataset: case id -> (world_to_subject, has label)."""
    data_folder = root / "Dataset001_Tiny" / "2d"
    for index, (case_id, (affine, labeled)) in enumerate(moved.items()):
        image, label, geometry = subject(index, affine)
        save_preprocessed_case(data_folder, case_id, image[None], label if labeled else None,
                               {"geometry_preprocessed": geometry.to_dict()})
    return data_folder.parent


def standard_dataset(root: Path) -> Path:
    return write_dataset(root, {
        "c0": (None, True),
        "c1": (in_plane_affine(-5, (1.0, 1.04), (-2, 1)), True),
        "c2": (KNOWN, True),
        "c3": (in_plane_affine(4, (0.97, 1.0), (1.5, 2)), True),
    })


# --- engines -------------------------------------------------------------------------------------
def test_simpleitk_recovers_known_affine():
    fixed, fixed_label, fixed_geometry = subject(0)
    moving, moving_label, moving_geometry = subject(1, KNOWN)
    result = register_pair_sitk(fixed, fixed_geometry, moving, moving_geometry, "affine", RegistrationSettings())
    assert result.ok, result.reason
    transform = _transform(result.transform_text)
    warped = resample(moving_label, moving_geometry, fixed_geometry, transform, nearest=True)
    assert dice(warped, fixed_label) > 0.95 > dice(moving_label, fixed_label)
    found = affine_matrix_4x4(transform)
    truth = np.linalg.inv(KNOWN)  # the transform maps fixed points to moving points
    assert np.abs(found[:3, :3] - truth[:3, :3]).max() < 0.03
    assert np.abs(found[:2, 3] - truth[:2, 3]).max() < 1.0


def test_torch_engine_recovers_known_affines_in_one_batch():
    fixed, fixed_label, fixed_geometry = subject(0)
    truths = [KNOWN, in_plane_affine(-6, (0.95, 1.05), (-3, 2))]
    pairs, labels = [], []
    for i, truth in enumerate(truths):
        moving, moving_label, moving_geometry = subject(i + 1, truth)
        pairs.append(PairVolumes(f"m{i}", "f", fixed, fixed_geometry, moving, moving_geometry))
        labels.append((moving_label, moving_geometry))
    results = register_batch_torch(pairs, FAST, "cpu")
    for result, truth, (moving_label, moving_geometry) in zip(results, truths, labels):
        assert result.ok, result.reason
        transform = _transform(result.transform_text)
        warped = resample(moving_label, moving_geometry, fixed_geometry, transform, nearest=True)
        assert dice(warped, fixed_label) > 0.95
        assert np.abs(affine_matrix_4x4(transform)[:3, :3] - np.linalg.inv(truth)[:3, :3]).max() < 0.04


def test_torch_engine_keeps_a_start_it_cannot_improve():
    """Two frames of one patient start (almost) aligned. A copy of the fixed volume must come back as the
    identity, not as a failure; a slightly deformed copy with the default pyramid must not fail either (its
    start was once judged on the coarsest level and its result on the finest)."""
    fixed, _, fixed_geometry = subject(0)
    deformed, _, deformed_geometry = subject(0, deformation_mm=1.0)
    pairs = [PairVolumes("copy", "f", fixed, fixed_geometry, fixed.copy(), fixed_geometry),
             PairVolumes("deformed", "f", fixed, fixed_geometry, deformed, deformed_geometry)]
    copy, slightly_deformed = register_batch_torch(pairs, RegistrationSettings(), "cpu")
    assert copy.ok and copy.quality["start_kept"], copy.reason
    assert np.allclose(affine_matrix_4x4(_transform(copy.transform_text)), np.eye(4), atol=1e-6)
    assert slightly_deformed.ok, slightly_deformed.reason
    assert slightly_deformed.metric_final <= slightly_deformed.metric_initial


@pytest.mark.cuda
def test_torch_engine_on_cuda_gives_the_cpu_affines():
    fixed, _, fixed_geometry = subject(0)
    pairs = []
    for i, truth in enumerate([KNOWN, in_plane_affine(-6, (0.95, 1.05), (-3, 2))]):
        moving, _, moving_geometry = subject(i + 1, truth)
        pairs.append(PairVolumes(f"m{i}", "f", fixed, fixed_geometry, moving, moving_geometry))
    on_cpu, on_cuda = register_batch_torch(pairs, FAST, "cpu"), register_batch_torch(pairs, FAST, "cuda")
    for a, b in zip(on_cpu, on_cuda):
        assert a.ok and b.ok, (a.reason, b.reason)
        difference = affine_matrix_4x4(_transform(a.transform_text)) - affine_matrix_4x4(_transform(b.transform_text))
        assert np.abs(difference[:3, :3]).max() < 0.01 and np.abs(difference[:3, 3]).max() < 0.3  # mm


def test_bspline_beats_affine_on_smooth_deformation():
    fixed, fixed_label, fixed_geometry = subject(0)
    moving, moving_label, moving_geometry = subject(1, in_plane_affine(3, (1.0, 1.0), (1, 0)), deformation_mm=3.0)
    settings = RegistrationSettings(bspline_mesh_spacing_mm=30.0, bspline_iterations=15, bspline_levels=(2,))
    dices = {}
    for method in ("affine", "affine_bspline"):
        result = register_pair_sitk(fixed, fixed_geometry, moving, moving_geometry, method, settings)
        assert result.ok, result.reason
        warped = resample(moving_label, moving_geometry, fixed_geometry, _transform(result.transform_text), nearest=True)
        dices[method] = dice(warped, fixed_label)
    assert dices["affine_bspline"] > dices["affine"] + 0.01, dices


def test_degenerate_or_throwing_pair_is_a_failed_result():
    fixed, _, fixed_geometry = subject(0)
    flat = np.zeros(SHAPE_ZYX, np.float32)
    result = register_pair_sitk(fixed, fixed_geometry, flat, fixed_geometry, "affine", RegistrationSettings())
    assert not result.ok and result.reason and result.transform_text is None
    far = Geometry(SHAPE_ZYX, SPACING_XYZ, (5000.0, 0.0, 0.0))
    result = register_pair_sitk(fixed, fixed_geometry, fixed, far, "affine", RegistrationSettings(min_determinant=1.5))
    assert not result.ok


# --- pairs -------------------------------------------------------------------------------------
def test_required_pairs_cover_needs_once():
    cases = [f"c{i}" for i in range(6)]
    pairs = required_pairs(cases, ["c0", "c1"], False, "affine", "direct")
    assert len(pairs) == len(set(pairs))
    for q in ("c0", "c1"):
        for u in cases[2:]:
            assert (q, u) in pairs and (u, q) in pairs
    for i in cases:  # every volume reaches every other in some direction
        for j in cases:
            assert i == j or (i, j) in pairs or (j, i) in pairs
    everything = required_pairs(cases, cases, True, "affine", "direct")
    assert len(everything) == 30  # all ordered pairs; any later labeled set needs nothing new
    assert set(pairs) <= set(everything)
    reference = required_pairs([f"c{i}" for i in range(40)], ["c0"], False, "affine", "reference")
    assert len(reference) < 2 * 2 * 40


# --- stage: store, BRS, labels, point maps, failures, resume, dask ----------------------------------
def test_stage_brs_registered_labels_and_point_maps(tmp_path):
    dataset = standard_dataset(tmp_path)
    summary = run_registration_stage(dataset, ["c0", "c1"], engine="torch", settings=FAST)
    assert summary.num_computed == summary.num_pairs_needed == 10 and not summary.failed_pairs
    again = run_registration_stage(dataset, ["c0", "c1"], engine="torch", settings=FAST)
    assert again.num_computed == 0
    access = load_training_registration(dataset, ["c0", "c1"], settings=FAST)
    assert set(access.selected_labeled) == {"c2", "c3"}
    label = access.registered_label("c2")
    truth = np.load(dataset / "2d" / "c2_seg.npy")
    assert label.dtype == np.int16 and label.shape == truth.shape
    assert dice(label, truth) > 0.9
    report = dataset / "registration" / "2d" / "registration_report.json"
    assert report.exists() and (report.parent / "registration_report.png").exists()

    # point map agrees with resampling: labeled label at the mapped point == registered label at the source
    chosen = access.selected_labeled["c2"]
    chosen_label = np.load(dataset / "2d" / f"{chosen}_seg.npy")
    inside = np.argwhere(label != IGNORE_LABEL)
    points = torch.as_tensor(inside, dtype=torch.float64)
    mapped = access.point_mapper.map_points("c2", chosen, points).round().long().numpy()
    valid = np.all((mapped >= 0) & (mapped < np.array(chosen_label.shape)), axis=1)
    agreement = np.mean(chosen_label[tuple(mapped[valid].T)] == label[tuple(inside[valid].T)])
    assert valid.mean() > 0.95 and agreement > 0.99
    # c0 and c1 are registered in one direction only: the other direction is the exact inverse
    mapper = access.point_mapper
    assert torch.allclose(mapper.map_points("c1", "c0", mapper.map_points("c0", "c1", points)), points, atol=1e-6)
    # the batched form agrees with the single one
    many, available = access.point_mapper.map_points_to_many("c2", ["c0", "c1", "c3"], points.float())
    assert available.all()
    assert torch.allclose(many[2], access.point_mapper.map_points("c2", "c3", points.float()), atol=1e-4)


def test_cycle_score_ranks_good_registration_above_bad(tmp_path):
    dataset = standard_dataset(tmp_path)
    run_registration_stage(dataset, ["c0", "c1"], engine="torch", settings=FAST, write_report=False)
    store = PairStore(registration_folder(dataset, "2d", "affine"))
    good = brs.load_scores(store)["c2"]["c0"]
    # replace c2 <-> c1 by a deliberately wrong rotation and rescore
    import SimpleITK as sitk

    for moving, fixed in (("c2", "c1"), ("c1", "c2")):
        wrong = sitk.AffineTransform(3)
        wrong.SetMatrix([np.cos(0.5), -np.sin(0.5), 0, np.sin(0.5), np.cos(0.5), 0, 0, 0, 1])
        sitk.WriteTransform(wrong, str(store.transform_path(moving, fixed)))
    bad = brs.cycle_score(dataset / "2d", store, "c2", "c1", FAST)
    assert bad["rmse"] > good["rmse"] and bad["mi"] < good["mi"]
    scores = {"c2": {"c0": good, "c1": bad}}
    assert brs.select_labeled(scores, "c2", ["c0", "c1"], FAST) == "c0"
    assert brs.select_labeled(scores, "c2", ["c1"], FAST) == "c1"


def test_failing_pair_is_recorded_skipped_and_reported(tmp_path):
    dataset = standard_dataset(tmp_path)
    broken = dataset / "2d" / "c3_data.npy"
    np.save(broken, np.zeros((1, *SHAPE_ZYX), np.float32))
    summary = run_registration_stage(dataset, ["c0", "c1"], engine="simpleitk")
    failed = {(m, f) for m, f, _ in summary.failed_pairs}
    assert failed and all("c3" in pair for pair in failed)
    assert summary.num_computed == summary.num_pairs_needed  # the other pairs still ran
    access = load_training_registration(dataset, ["c0", "c1"])
    assert access.selected_labeled["c3"] is None and access.registered_label("c3") is None
    assert access.selected_labeled["c2"] in ("c0", "c1")
    report = (dataset / "registration" / "2d" / "registration_report.json").read_text()
    assert '"num_failed": ' + str(len(failed)) in report


def test_killed_run_resumes_without_recomputing(tmp_path, monkeypatch):
    dataset = standard_dataset(tmp_path)
    real_job = runner.compute_pair_job
    calls = []

    def dying_job(*args):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(args[1:3])
        return real_job(*args)

    monkeypatch.setattr(runner, "compute_pair_job", dying_job)
    with pytest.raises(KeyboardInterrupt):
        run_registration_stage(dataset, ["c0"], engine="simpleitk", settings=FAST)
    store = PairStore(registration_folder(dataset, "2d", "affine"))
    finished = {(r.moving, r.fixed): store.record_path(r.moving, r.fixed).stat().st_mtime_ns for r in store.all_results()}
    assert set(finished) == set(calls)
    calls.clear()
    monkeypatch.setattr(runner, "compute_pair_job", lambda *a: (calls.append(a[1:3]), real_job(*a))[1])
    summary = run_registration_stage(dataset, ["c0"], engine="simpleitk", settings=FAST, write_report=False)
    assert summary.num_reused == 3 and not set(calls) & set(finished)
    assert all(store.record_path(*pair).stat().st_mtime_ns == t for pair, t in finished.items())


def test_dask_path_gives_the_same_transforms_as_local(tmp_path):
    distributed = pytest.importorskip("distributed", reason="dask[distributed] is not installed")
    dataset = standard_dataset(tmp_path)
    data_folder = dataset / "2d"
    pairs = [("c1", "c0"), ("c2", "c0")]
    local = PairStore(tmp_path / "local")
    runner.compute_missing_pairs(data_folder, local, pairs, "affine", "simpleitk", FAST)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        remote = PairStore(tmp_path / "dask")
        runner.compute_missing_pairs(data_folder, remote, pairs, "affine", "simpleitk", FAST,
                                     dask_scheduler=cluster.scheduler_address)
    for pair in pairs:
        a = affine_matrix_4x4(transform_from_file(local.transform_path(*pair)))
        b = affine_matrix_4x4(transform_from_file(remote.transform_path(*pair)))
        assert np.allclose(a, b, atol=1e-6)


def test_point_mapping_of_many_points_is_cached_and_repeatable(tmp_path):
    """Functional part only; its speed (100,000 points) is measured by benchmarks/registration_benchmark.py."""
    dataset = standard_dataset(tmp_path)
    run_registration_stage(dataset, ["c0"], engine="torch", settings=FAST, write_report=False)
    mapper = load_training_registration(dataset, ["c0"]).point_mapper
    points = torch.rand(100_000, 3) * torch.tensor(SHAPE_ZYX, dtype=torch.float32)
    first = mapper.map_points("c1", "c0", points)  # builds and caches the map
    again = mapper.map_points("c1", "c0", points)
    assert first.shape == (100_000, 3) and torch.isfinite(first).all()
    assert torch.equal(first, again)


def test_cli_registers_a_dataset(tmp_path, monkeypatch):
    from cctrnet.cli.register import main

    standard_dataset(tmp_path)
    monkeypatch.setenv("cctr_preprocessed", str(tmp_path))
    assert main(["-d", "1", "--registration-engine", "torch", "--labeled-cases", "c0", "c1"]) == 0
    assert (tmp_path / "Dataset001_Tiny" / "registration" / "2d" / "affine" / "brs_scores.json").exists()
    assert main(["-d", "7"]) == 1


def _transform(text: str):
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".tfm", delete=False) as f:
        f.write(text)
    return transform_from_file(f.name)


def test_brs_prefers_the_lower_cycle_rmse_and_the_higher_mutual_information():
    settings = RegistrationSettings()
    scores = {"u": {"a": {"rmse": 1.0, "mi": 0.5}, "b": {"rmse": 1.0, "mi": 0.9}}}
    assert brs.select_labeled(scores, "u", ["a", "b"], settings) == "b"  # same RMSE: more MI wins
    scores = {"u": {"a": {"rmse": 0.4, "mi": 0.7}, "b": {"rmse": 0.9, "mi": 0.7}}}
    assert brs.select_labeled(scores, "u", ["a", "b"], settings) == "a"  # same MI: less RMSE wins
    scores = {"u": {"a": {"rmse": float("nan"), "mi": 0.7}, "b": {"rmse": 0.9, "mi": 0.1}}}
    assert brs.select_labeled(scores, "u", ["a", "b"], settings) == "b"  # a score that is not finite never wins


def test_brs_scores_only_pairs_registered_both_ways(tmp_path, monkeypatch):
    """The cycle goes there and back: a pair whose return registration failed gets no score and no call."""
    class Store:
        folder = tmp_path

        @staticmethod
        def successful(moving: str, fixed: str) -> bool:
            return (moving, fixed) != ("a", "u")  # u onto a worked, a onto u failed

    scored = []

    def fake_cycle_score(data_folder, store, unlabeled, labeled, settings):
        scored.append((unlabeled, labeled))
        return {"rmse": 1.0, "mi": 1.0}

    monkeypatch.setattr(brs, "cycle_score", fake_cycle_score)
    scores = brs.update_scores(tmp_path, Store(), [("u", "a"), ("u", "b")], RegistrationSettings())
    assert scored == [("u", "b")] and set(scores["u"]) == {"b"}


def test_a_store_records_its_settings_and_warns_before_mixing_others(tmp_path, capsys):
    import dataclasses

    from cctrnet.utilities.file_io import load_json

    data_folder = standard_dataset(tmp_path / "data")
    store = PairStore(tmp_path / "affine")
    runner.compute_missing_pairs(data_folder, store, [("c1", "c0")], "affine", "torch", FAST)
    stamp = load_json(store.folder / PairStore.SETTINGS_STAMP)
    assert stamp["torch_iterations_per_level"] == [60, 30]  # the settings the first pairs were computed with
    capsys.readouterr()
    runner.compute_missing_pairs(data_folder, store, [("c2", "c0")], "affine", "torch", FAST)
    assert "warning" not in capsys.readouterr().err  # same settings: nothing to say
    other = dataclasses.replace(FAST, torch_affine_local_normalisation_sigma_mm=0.0)
    runner.compute_missing_pairs(data_folder, store, [("c3", "c0")], "affine", "torch", other)
    warning = capsys.readouterr().err
    assert "warning" in warning and "torch_affine_local_normalisation_sigma_mm (40.0 then, 0.0 now)" in warning
    assert load_json(store.folder / PairStore.SETTINGS_STAMP) == stamp  # the stamp keeps the first settings
    (store.folder / PairStore.SETTINGS_STAMP).unlink()  # a store from before stamps existed
    runner.compute_missing_pairs(data_folder, store, [("c0", "c1")], "affine", "torch", FAST)
    assert "not recorded" in capsys.readouterr().err
