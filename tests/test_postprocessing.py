"""Connected-component post-processing: the rules, the decision from label topology, and cctr_predict."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cctrnet.postprocessing.components import largest_component, largest_component_share
from cctrnet.postprocessing.decision import (
    SOURCE_LABELED,
    SOURCE_REGISTERED,
    PostprocessingSettings,
    decide_postprocessing,
)
from cctrnet.postprocessing.plan import (
    POSTPROCESSING_FILE,
    RULE_LARGEST_COMPONENT,
    RULE_NONE,
    PostprocessingFileError,
    PostprocessingPlan,
    load_postprocessing,
    save_postprocessing,
)
from cctrnet.postprocessing.topology import measure_topology
from cctrnet.utilities.file_io import load_json, save_json

LARGEST, NONE = RULE_LARGEST_COMPONENT, RULE_NONE
NAMES = {0: "background", 1: "heart", 2: "kidney"}


def _volume(shape_zyx=(6, 24, 24)) -> np.ndarray:
    return np.zeros(shape_zyx, dtype=np.int16)


def _anatomy(shape_zyx=(6, 24, 24), kidneys_apart: bool = True) -> np.ndarray:
    """Class 1 one box; class 2 two boxes (a left and a right kidney) that touch nothing but the box of 1."""
    label = _volume(shape_zyx)
    label[1:5, 8:16, 8:16] = 1
    label[1:5, 10:14, 2:8] = 2  # touches class 1 along x = 8
    if kidneys_apart:
        label[1:5, 10:14, 18:22] = 2  # a second piece, apart from the first
    return label


# --- components and rules ----------------------------------------------------------------------------
def test_a_known_stray_component_is_removed_and_the_structure_kept():
    prediction = _anatomy(kidneys_apart=False)
    prediction[2, 20:22, 20:22] = 1  # a stray of class 1, 8 voxels
    plan = PostprocessingPlan(RULE_NONE, {1: LARGEST, 2: LARGEST})
    cleaned = plan.apply(prediction)
    expected = _anatomy(kidneys_apart=False)
    np.testing.assert_array_equal(cleaned, expected)
    assert prediction[2, 20, 20] == 1  # the input is not changed in place
    assert cleaned.dtype == prediction.dtype


def test_a_genuinely_two_component_class_is_kept_when_its_rule_is_none():
    prediction = _anatomy(kidneys_apart=True)
    prediction[2, 20:22, 2:4] = 1  # stray of class 1
    cleaned = PostprocessingPlan(RULE_NONE, {1: LARGEST, 2: NONE}).apply(prediction)
    assert cleaned[2, 20, 2] == 0
    np.testing.assert_array_equal(cleaned == 2, prediction == 2)  # both kidneys survive


def test_the_foreground_rule_removes_what_touches_no_anatomy_and_keeps_touching_classes():
    prediction = _anatomy(kidneys_apart=True)
    cleaned = PostprocessingPlan(LARGEST, {1: NONE, 2: NONE}).apply(prediction)
    expected = _anatomy(kidneys_apart=False)  # the right kidney touches nothing: removed with the foreground rule
    np.testing.assert_array_equal(cleaned, expected)
    assert not PostprocessingPlan(RULE_NONE, {1: NONE}).does_anything


def test_thick_slice_neighbours_that_meet_only_at_a_corner_are_one_component_by_default():
    mask = np.zeros((3, 6, 6), dtype=bool)
    mask[0, 1:3, 1:3] = True
    mask[1, 3:5, 3:5] = True  # the next slice's cross section is shifted diagonally
    assert largest_component_share(mask) == 1.0  # 26-neighbourhood (connectivity 3)
    assert largest_component_share(mask, connectivity=1) == 0.5
    np.testing.assert_array_equal(largest_component(mask), mask)
    assert largest_component_share(np.zeros((2, 2, 2), bool)) is None


def test_plan_file_round_trip_hand_edits_and_a_broken_file(tmp_path):
    plan = PostprocessingPlan(LARGEST, {1: LARGEST, 2: NONE}, connectivity=2)
    path = save_postprocessing(plan, tmp_path, NAMES, evidence={"heart": {"why": "test"}})
    content = load_json(path)
    assert content["classes"]["heart"] == {"label_value": 1, "rule": LARGEST, "evidence": {"why": "test"}}
    assert load_postprocessing(tmp_path) == plan
    content["classes"]["heart"]["rule"] = NONE  # a person switches one class off
    save_json(content, path)
    assert load_postprocessing(tmp_path).class_rules == {1: NONE, 2: NONE}
    content["classes"]["heart"]["rule"] = "biggest"
    save_json(content, path)
    with pytest.raises(PostprocessingFileError, match=f"{POSTPROCESSING_FILE}.*biggest"):
        load_postprocessing(tmp_path)
    assert load_postprocessing(tmp_path / "elsewhere") is None


# --- the decision --------------------------------------------------------------------------------------
def _registered(kidneys_apart: bool, seed: int) -> np.ndarray:
    """A warped label: the anatomy shifted a little, with -1 where the warp left the atlas, and a speck."""
    label = np.roll(_anatomy(kidneys_apart=kidneys_apart), shift=seed % 2, axis=1)
    label[:, :, :1] = -1
    return label


def test_decision_from_registered_label_topology_keeps_a_two_component_class():
    settings = PostprocessingSettings()
    registered = [(f"u{i}", _registered(kidneys_apart=True, seed=i)) for i in range(10)]
    registered[3][1][0, 0, 23] = 1  # one voxel of class 1 apart: a speck under 5%, still "one component"
    registered[4][1][1:5, 16:20, 18:22] = 1  # one warp cut the heart in two: tolerated as 1 of 10
    evidence = [measure_topology(SOURCE_REGISTERED, registered, [1, 2], settings.connectivity,
                                 settings.single_component_min_share)]
    plan, records = decide_postprocessing(evidence, [0, 1, 2], NAMES, settings)
    assert plan.class_rules == {1: LARGEST, 2: NONE}
    assert plan.foreground_rule == NONE  # the right kidney lies apart from the rest
    heart = records["heart"][SOURCE_REGISTERED]
    assert heart["volumes_with_structure"] == 10 and heart["volumes_one_component"] == 9
    assert heart["cases_with_several_components"] == ["u4"]
    assert records["kidney"][SOURCE_REGISTERED]["fraction_one_component"] == 0.0

    # a prediction with a stray heart blob and two kidneys: the stray goes, both kidneys stay
    prediction = _anatomy(kidneys_apart=True)
    prediction[4, 20:23, 1:3] = 1
    cleaned = plan.apply(prediction)
    np.testing.assert_array_equal(cleaned, _anatomy(kidneys_apart=True))


def test_every_source_must_agree_and_the_training_labels_must_be_one_component_in_every_case():
    settings = PostprocessingSettings()
    one_piece = [(f"u{i}", _registered(kidneys_apart=False, seed=i)) for i in range(10)]
    registered = measure_topology(SOURCE_REGISTERED, one_piece, [1, 2], 3, settings.single_component_min_share)
    labeled_ok = measure_topology(SOURCE_LABELED, [("a", _anatomy(kidneys_apart=False))], [1, 2], 3,
                                  settings.single_component_min_share)
    plan, _ = decide_postprocessing([labeled_ok, registered], [0, 1, 2], NAMES, settings)
    assert plan.class_rules == {1: LARGEST, 2: LARGEST} and plan.foreground_rule == LARGEST

    labeled_split = measure_topology(SOURCE_LABELED, [("a", _anatomy(kidneys_apart=False)),
                                                      ("b", _anatomy(kidneys_apart=True))], [1, 2], 3,
                                     settings.single_component_min_share)
    plan, records = decide_postprocessing([labeled_split, registered], [0, 1, 2], NAMES, settings)
    assert plan.class_rules == {1: LARGEST, 2: NONE}  # one of two training labels has two kidneys
    assert records["kidney"]["reason"] == "several components in at least one source"

    # the training labels alone (no registration) decide as well; a class absent everywhere gets "none"
    plan, records = decide_postprocessing([labeled_ok], [0, 1, 2, 3], {**NAMES, 3: "absent"}, settings)
    assert plan.class_rules == {1: LARGEST, 2: LARGEST, 3: NONE}
    assert records["absent"]["reason"].startswith("no evidence source")


def test_settings_refuse_thresholds_outside_their_range():
    with pytest.raises(ValueError, match="registered_min_fraction"):
        PostprocessingSettings(registered_min_fraction=1.5)
    with pytest.raises(ValueError, match="connectivity"):
        PostprocessingSettings(connectivity=4)


# --- from a model folder ---------------------------------------------------------------------------------
def _write_run(results: Path, preprocessed: Path, labeled_labels: dict[str, np.ndarray],
               registered_labels: dict[str, np.ndarray]) -> Path:
    """A model folder (contract files only) and a preprocessed dataset whose registration store holds the
    registered labels (cached .npy, as BRS writes them) and BRS scores selecting the one labeled case."""
    from cctrnet.preprocessing.case_storage import save_preprocessed_case
    from cctrnet.registration.brs import registered_label_path, scores_path
    from cctrnet.registration.pair_store import PairStore, registration_folder

    dataset = "Dataset001_Organs"
    data_folder = preprocessed / dataset / "2d"
    cases = {**labeled_labels, **{u: None for u in registered_labels}}
    for case, label in cases.items():
        save_preprocessed_case(data_folder, case, np.zeros((1, 6, 24, 24), np.float32), label, {})
    store = PairStore(registration_folder(preprocessed / dataset, "2d", "affine"))
    (atlas,) = labeled_labels
    for unlabeled, label in registered_labels.items():
        path = registered_label_path(store, unlabeled, atlas)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, label)
    save_json({"scores": {u: {atlas: {"rmse": 1.0, "mi": 0.5}} for u in registered_labels}}, scores_path(store))

    folder = results / dataset / "CCTRTrainer__labeled1__seed0"
    architecture = {"network_class": "PlainConvUNet", "kwargs": {}}
    save_json({"configurations": {"2d": {"data_identifier": "2d"}}}, folder / "plans.json")
    save_json({"channel_names": {"0": "CT"}, "labels": {v: k for k, v in NAMES.items()}, "numTraining": 4,
               "file_ending": ".nii.gz"}, folder / "dataset.json")
    save_json({"branches": ["branch_a"], "architectures": {"branch_a": architecture}, "dataset_name": dataset,
               "settings": {"registration_method": "affine"}}, folder / "config.json")
    save_json({"labeled": list(labeled_labels), "unlabeled": list(registered_labels)},
              folder / "labeled_cases.json")
    return folder


def test_determine_from_one_labeled_case_and_its_registered_labels_writes_the_decision(tmp_path):
    from cctrnet.postprocessing.determine import determine_postprocessing

    registered = {f"u{i}": _registered(kidneys_apart=True, seed=i) for i in range(4)}
    folder = _write_run(tmp_path / "res", tmp_path / "pre", {"a": _anatomy(kidneys_apart=True)}, registered)
    lines = []
    plan = determine_postprocessing(folder, tmp_path / "pre", log=lines.append)
    assert plan == PostprocessingPlan(NONE, {1: LARGEST, 2: NONE})
    assert load_postprocessing(folder) == plan
    content = load_json(folder / POSTPROCESSING_FILE)
    assert content["sources"][SOURCE_LABELED] == ["a"]
    assert content["sources"][SOURCE_REGISTERED]["volumes"] == 4
    assert content["classes"]["heart"]["evidence"][SOURCE_REGISTERED]["volumes_one_component"] == 4
    assert content["settings"]["single_component_min_share"] == 0.95
    assert "registered_labels (4 volumes)" in lines[0]

    plan = determine_postprocessing(folder, tmp_path / "pre", use_registration=False, log=lines.append)
    assert load_json(folder / POSTPROCESSING_FILE)["sources"][SOURCE_REGISTERED]["not_used"] == "switched off"


def test_determine_command_names_a_missing_preprocessed_folder(tmp_path, monkeypatch, capsys):
    from cctrnet.cli.determine_postprocessing import main

    folder = _write_run(tmp_path / "res", tmp_path / "pre", {"a": _anatomy()}, {"u0": _registered(True, 0)})
    monkeypatch.setenv("cctr_preprocessed", str(tmp_path / "elsewhere"))
    assert main(["-m", str(folder)]) == 1
    assert "elsewhere/Dataset001_Organs/2d" in capsys.readouterr().err
    monkeypatch.setenv("cctr_preprocessed", str(tmp_path / "pre"))
    assert main(["-m", str(folder)]) == 0
    assert (folder / POSTPROCESSING_FILE).exists()


# --- prediction ----------------------------------------------------------------------------------------
def test_predictor_removes_a_stray_before_export_and_keeps_the_geometry(tmp_path):
    from cctrnet.dataset.image_io import read_image, write_image
    from cctrnet.inference.model_folder import ModelFolder
    from cctrnet.inference.predictor import Predictor
    from cctrnet.inference.sliding_window import SlidingWindowSettings
    from tests.test_inference import NearestLevelLogits, _normalised_levels, _noise_free_case, write_model_folder

    image, label, geometry = _noise_free_case()
    image[2:4, 4:6, 4:6] = 250.0  # a stray with the intensity of class a, far from its ellipse
    write_image(image, geometry, tmp_path / "in" / "p_0000.nii.gz")
    model = ModelFolder.load(write_model_folder(tmp_path / "results", branches=("branch_a",)))
    plan = PostprocessingPlan(RULE_NONE, {1: LARGEST, 2: LARGEST})
    predictor = Predictor(model, [NearestLevelLogits(_normalised_levels(image))], "cpu",
                          SlidingWindowSettings(mirroring=False), postprocessing=plan)
    predictor.predict_folder(tmp_path / "in", tmp_path / "out", progress=False,
                             unprocessed_folder=tmp_path / "out" / "raw")
    written, written_geometry = read_image(tmp_path / "out" / "p.nii.gz", dtype=np.int16)
    unprocessed, _ = read_image(tmp_path / "out" / "raw" / "p.nii.gz", dtype=np.int16)
    assert (unprocessed[2:4, 4:6, 4:6] == 1).all()  # the network did predict the stray
    np.testing.assert_array_equal(written, label)  # and post-processing removed exactly it
    assert written_geometry.same_grid(geometry, rtol=1e-6, atol_mm=1e-5)


def test_cctr_predict_applies_postprocessing_by_default_and_honours_no_postprocessing(tmp_path, cctr_folders,
                                                                                       capsys):
    from cctrnet.cli.predict import main
    from cctrnet.dataset.image_io import read_image, write_image
    from tests.conftest import blob_case
    from tests.test_inference import write_model_folder

    folder = write_model_folder(cctr_folders["cctr_results"], branches=("branch_a",))
    image, _, geometry = blob_case(4, shape_zyx=(3, 24, 28))
    write_image(image, geometry, tmp_path / "imgs" / "case7.nii.gz")
    common = ["-i", str(tmp_path / "imgs"), "--device", "cpu", "--quiet", "--disable-tta"]

    assert main(common + ["-o", str(tmp_path / "plain")]) == 0
    assert "postprocessing.json does not exist" in capsys.readouterr().out

    plan = PostprocessingPlan(LARGEST, {1: LARGEST, 2: LARGEST})
    save_postprocessing(plan, folder, {0: "background", 1: "a", 2: "b"})
    assert main(common + ["-o", str(tmp_path / "pp"), "--save-without-postprocessing"]) == 0
    assert "post-processing: foreground: largest component; a: largest component" in capsys.readouterr().out
    assert main(common + ["-o", str(tmp_path / "off"), "--no-postprocessing"]) == 0
    assert "post-processing: off (--no-postprocessing)" in capsys.readouterr().out

    processed, _ = read_image(tmp_path / "pp" / "case7.nii.gz", dtype=np.int16)
    before, _ = read_image(tmp_path / "pp" / "without_postprocessing" / "case7.nii.gz", dtype=np.int16)
    off, _ = read_image(tmp_path / "off" / "case7.nii.gz", dtype=np.int16)
    plain, _ = read_image(tmp_path / "plain" / "case7.nii.gz", dtype=np.int16)
    np.testing.assert_array_equal(off, before)
    np.testing.assert_array_equal(plain, before)
    np.testing.assert_array_equal(processed, plan.apply(before))


def test_determine_help():
    """Its speed is measured by benchmarks/cli_latency_benchmark.py, not asserted here."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "cctrnet.cli.determine_postprocessing", "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "-m" in result.stdout
