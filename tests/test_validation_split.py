"""Validation without the test set: imagesVal, a seeded held-out split, the curve during training, --val."""
from __future__ import annotations

from pathlib import Path

import pytest

from cctrnet.dataset.validation_selection import named_validation_cases, select_validation_cases
from tests.conftest import blob_case, write_raw_dataset

FAST = {"num_workers": 0, "log_every": 1, "n_anchors": 20, "n_negatives": 20, "validation_every": 2,
        "validation_max_slices_per_case": 3, "registration_method": "affine", "bank_fraction": 0.5}


def _small_plan():
    from cctrnet.planning.planner import DeviceSettings, PlannerSettings

    return PlannerSettings(cpu=DeviceSettings(8, 32, 4, 4, 20, (1, 1, 1, 1, 1, 1, 1)), min_patch_size=48)


def _write_cases(folder: Path, images: str, labels: str | None, seeds: range, prefix: str) -> None:
    from cctrnet.dataset.image_io import write_image

    for seed in seeds:
        image, label, geometry = blob_case(seed, shape_zyx=(4, 32, 40))
        write_image(image, geometry, folder / images / f"{prefix}{seed:03d}_0000.nii.gz")
        if labels is not None:
            write_image(label, geometry, folder / labels / f"{prefix}{seed:03d}.nii.gz")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, single_torch_thread):
    """Dataset 1: 5 labeled + 2 unlabeled training cases and a test case; dataset 2: the same with an imagesVal."""
    from cctrnet.plan_and_preprocess import plan_and_preprocess_dataset

    root = tmp_path_factory.mktemp("valsplit")
    env = {name: root / name for name in ("cctr_raw", "cctr_preprocessed", "cctr_results")}
    monkeypatch = pytest.MonkeyPatch()
    for name, folder in env.items():
        monkeypatch.setenv(name, str(folder))
    for dataset_id in (1, 2):
        folder = write_raw_dataset(env["cctr_raw"], num_labeled=5, num_unlabeled=2, dataset_id=dataset_id)
        _write_cases(folder, "imagesTs", "labelsTs", range(20, 21), "test")
        if dataset_id == 2:
            _write_cases(folder, "imagesVal", "labelsVal", range(30, 32), "val")
        plan_and_preprocess_dataset(str(dataset_id), settings=_small_plan(), device_name="cpu", progress=False)
    yield env
    monkeypatch.undo()


def test_held_out_choice_is_seeded_whole_patients_and_leaves_training_cases():
    cases = [f"c{i}" for i in range(10)]
    first = select_validation_cases(cases, 0.2, seed=0)
    assert first == select_validation_cases(list(reversed(cases)), 0.2, seed=0)  # order of input does not matter
    assert len(first) == 2 and set(first) <= set(cases)
    assert {tuple(select_validation_cases(cases, 0.2, seed=s)) for s in range(6)} != {tuple(first)}  # seed matters
    patients = {c: f"p{int(c[1:]) // 2}" for c in cases}  # two frames per patient
    by_patient = select_validation_cases(cases, 0.2, seed=0, patient_of_case=patients)
    assert {patients[c] for c in by_patient} and all(
        f"c{2 * int(patients[c][1:])}" in by_patient and f"c{2 * int(patients[c][1:]) + 1}" in by_patient
        for c in by_patient)  # every held-out patient with both of its frames
    assert select_validation_cases(cases[:3], 0.9, seed=0).__len__() == 2  # one labeled case always trains
    assert named_validation_cases(cases, ["c3"], patients) == ["c2", "c3"]  # a case widens to its patient
    with pytest.raises(ValueError, match="2 labeled cases; a held-out validation set needs at least 3"):
        select_validation_cases(cases[:2], 0.5)
    with pytest.raises(ValueError, match="not labeled cases"):
        named_validation_cases(cases, ["nope"])
    with pytest.raises(ValueError, match="every labeled case"):
        named_validation_cases(cases[:2], ["c0", "c1"])


def test_held_out_cases_leave_the_run_and_the_curve_is_recorded(prepared):
    from cctrnet.training.run_setup import prepare_run
    from cctrnet.training.train_run import make_trainer
    from cctrnet.utilities.file_io import load_json

    setup = prepare_run("1", val_fraction=0.4, seed=3)
    held_out = setup.validation.cases
    assert setup.validation.source == "held_out" and len(held_out) == 2
    assert prepare_run("1", val_fraction=0.4, seed=3).validation.cases == held_out  # seeded
    assert set(held_out).isdisjoint(setup.labeled_cases + setup.unlabeled_cases + setup.all_cases)
    assert len(setup.labeled_cases) == 3 and len(setup.unlabeled_cases) == 2

    trainer = make_trainer("1", "LabeledOnlyTrainer", iterations=4, device_name="cpu", overrides=FAST,
                           output_folder=prepared["cctr_results"] / "heldout", setup=setup)
    loader = trainer.build_loader()
    sampled = {int(v) for _ in range(3) for v in loader.next_batch()["labeled"]["volume_index"]}
    loader.close()
    assert {setup.all_cases[i] for i in sampled} <= set(setup.labeled_cases)
    trainer.run(progress=False)
    assert [i for i, _ in trainer.log.history["val_dice_A"]] == [2, 4]
    assert all(0.0 <= v <= 1.0 for _, v in trainer.log.history["val_dice_A"])
    folder = trainer.output_folder
    record = load_json(folder / "validation_cases.json")
    assert record["source"] == "held_out" and record["cases"] == held_out and record["rule"]["val_fraction"] == 0.4
    assert set(held_out).isdisjoint(load_json(folder / "labeled_cases.json")["unlabeled"])
    log = (folder / "training_log.txt").read_text()
    assert "2 labeled case(s) held out, not trained on at all" in log and "it 4: val_dice_A" in log

    from cctrnet.postprocessing.determine import held_out_validation_cases, registered_label_maps

    assert held_out_validation_cases(folder) == sorted(held_out)
    from cctrnet.registration.stage import run_registration_stage

    preprocessed = Path(prepared["cctr_preprocessed"]) / setup.dataset_name
    run_registration_stage(preprocessed, setup.labeled_cases, method="affine", write_report=False)
    _, every_map = registered_label_maps(preprocessed, setup.labeled_cases, "affine", "2d")
    assert set(held_out) <= {case for case, _ in every_map()}  # the held-out images are registered ...
    _, maps = registered_label_maps(preprocessed, setup.labeled_cases, "affine", "2d", held_out)
    assert set(held_out).isdisjoint(case for case, _ in maps())  # ... and left out of the decision


def test_images_val_is_preprocessed_apart_and_used_as_the_validation_set(prepared):
    from cctrnet.training.run_setup import RunSetupError, prepare_run

    pre = prepared["cctr_preprocessed"] / "Dataset002_Blobs"
    assert sorted(p.name for p in (pre / "2d_validation").glob("*.json")) == ["val030.json", "val031.json"]
    assert not list((pre / "2d").glob("val*"))  # registration and training list 2d/ only
    setup = prepare_run("2", num_labeled=2)
    assert setup.validation.source == "imagesVal" and setup.validation.cases == ["val030", "val031"]
    assert not set(setup.validation.cases) & set(setup.all_cases)
    with pytest.raises(RunSetupError, match="has its own validation set"):
        prepare_run("2", val_fraction=0.4)


def test_val_evaluates_the_validation_cases_and_never_reads_images_ts(prepared):
    from cctrnet.training.train_run import train
    from cctrnet.utilities.file_io import load_json

    raw = prepared["cctr_raw"] / "Dataset001_Blobs"
    decoy = raw / "imagesTs" / "broken_0000.nii.gz"
    decoy.write_bytes(b"not an image")  # reading imagesTs would report it
    try:
        folder = train("1", "LabeledOnlyTrainer", val_cases=["case001", "case004"], iterations=2, device_name="cpu",
                       overrides=FAST, progress=False, validate=True)
    finally:
        decoy.unlink()
    summary = load_json(folder / "validation" / "summary.json")
    assert sorted(c["case"] for c in summary["per_case"]) == ["case001", "case004"]
    assert sorted(p.name for p in (folder / "validation" / "reference").iterdir()) == ["case001.nii.gz",
                                                                                     "case004.nii.gz"]
    assert not (folder / "test").exists()
    assert folder.name == "LabeledOnlyTrainer__labeled3__seed0"
    # the test set only when named, into its own folder
    train("1", "LabeledOnlyTrainer", val_cases=["case001", "case004"], extend_to=3, device_name="cpu",
          overrides={}, progress=False, validate=True, validation_set="test")
    assert [c["case"] for c in load_json(folder / "test" / "summary.json")["per_case"]] == ["test020"]


def test_one_or_two_labeled_cases_say_there_is_nothing_to_validate_and_draw_the_proxy(prepared, capsys):
    from cctrnet.training.train_run import TrainingRunError, make_trainer, train

    with pytest.raises(TrainingRunError, match=r"no validation cases \(nothing to validate on: .*2 labeled cases "
                                               r"are too few.*--val --val-set test"):
        train("1", "LabeledOnlyTrainer", num_labeled=2, iterations=2, device_name="cpu", overrides=FAST,
              progress=False, validate=True)
    with pytest.raises(TrainingRunError, match="at least 3"):
        train("1", "LabeledOnlyTrainer", num_labeled=2, val_fraction=0.5, device_name="cpu", overrides=FAST)
    trainer = make_trainer("1", "CCTRTrainer", num_labeled=1, iterations=2, device_name="cpu",
                           overrides={**FAST, "scl": False, "reps": False},
                           output_folder=prepared["cctr_results"] / "proxy")
    trainer.run(progress=False)
    assert "nothing to validate on" in capsys.readouterr().out
    log = (trainer.output_folder / "training_log.txt").read_text()
    assert "nothing to validate on" in log and "Unsupervised proxy instead" in log
    assert [i for i, _ in trainer.log.history["proxy_registered_agreement_A"]] == [2]
    assert "val_dice_A" not in trainer.log.history
    # the dataset knows the unlabeled cases' labels (simulated semi-supervision): the steadier hidden-label curve
    assert trainer.setup.hidden_label_cases and [i for i, _ in trainer.log.history["dice_hidden_A"]] == [2]
    assert 0.0 <= trainer.log.history["dice_hidden_A"][0][1] <= 1.0 and "hidden-label curve" in log


def test_hidden_label_curve_measures_fixed_slices_spread_over_the_cases(prepared):
    from cctrnet.training.train_run import make_trainer
    from cctrnet.training.validation_curve import build_hidden_label_curve, spread_choice

    assert spread_choice(["d", "a", "c", "b", "e"], 3) == ["a", "c", "e"] and spread_choice(["b", "a"], 0) == ["a", "b"]
    trainer = make_trainer("1", "CCTRTrainer", num_labeled=1, iterations=2, device_name="cpu",
                           overrides={**FAST, "validation_max_cases": 2, "validation_max_slices_per_case": 3},
                           output_folder=prepared["cctr_results"] / "hidden")
    curve, message = build_hidden_label_curve(trainer)
    assert [v.case_id for v in curve.volumes] == spread_choice(trainer.setup.hidden_label_cases, 2)
    assert all(v.reference_zyx.shape[0] == 3 for v in curve.volumes) and "6 slices of 2" in message
    off = make_trainer("1", "CCTRTrainer", num_labeled=1, iterations=2, device_name="cpu",
                       overrides={**FAST, "hidden_label_curve": False}, output_folder=prepared["cctr_results"] / "off")
    assert build_hidden_label_curve(off) == (None, None)


def test_proxy_curve_has_its_own_panel():
    from cctrnet.training.progress_panels import PROXY_TITLE, panels_of

    titles = {title: keys for title, keys, _ in panels_of({"val_dice_A": [(2, 0.5)],
                                                           "proxy_registered_agreement_A": [(2, 0.7)]})}
    assert titles["validation Dice"] == ["val_dice_A"] and titles[PROXY_TITLE] == ["proxy_registered_agreement_A"]


def test_validation_images_need_labels(cctr_folders):
    from cctrnet.dataset.integrity import layout_problems

    folder = write_raw_dataset(cctr_folders["cctr_raw"], num_labeled=1, num_unlabeled=0)
    _write_cases(folder, "imagesVal", None, range(40, 41), "val")
    problems, _ = layout_problems(folder)
    assert any("validation case(s) val040" in p and "labelsVal" in p for p in problems), problems


def test_cli_val_set_needs_val_and_explicit_and_fraction_exclude_each_other():
    from cctrnet.cli.train import main

    with pytest.raises(SystemExit):
        main(["1", "--val-set", "test"])
    with pytest.raises(SystemExit):
        main(["1", "--val-fraction", "0.2", "--val-cases", "a"])
