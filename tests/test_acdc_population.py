"""The ACDC-like population: determinism, group statistics, ED/ES pairing, the patient split, and
``--labeled N`` counting patients when dataset.json declares them."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from dataset_conversion.acdc_population import generate_acdc_population_dataset, split_counts, split_patients
from dataset_conversion.acdc_population_config import AcdcPopulationConfig
from dataset_conversion.acdc_population_groups import GROUP_NAMES, GROUPS, sample_targets
from dataset_conversion.acdc_population_patient import generate_patient, patient_group
from dataset_conversion.generated_dataset import case_seed

RV, MYO, LV = 1, 2, 3
# full coverage, so that label volumes measure the whole heart
FULL_COVERAGE = AcdcPopulationConfig.tiny(missing_base_probability=0.0, missing_apex_probability=0.0)
# label volumes on thick tiny slices miss part of the base; see documentation/phantom.md for the default grid
VOLUME_TOLERANCE = 0.12
EF_TOLERANCE = 0.05


def _volumes_ml(label: np.ndarray, spacing_xyz: tuple[float, float, float]) -> dict[int, float]:
    voxel_ml = float(np.prod(spacing_xyz)) / 1000.0
    return {value: float((label == value).sum()) * voxel_ml for value in (RV, MYO, LV)}


@pytest.fixture(scope="module")
def one_patient_per_group():
    return [generate_patient(index, case_seed(5, index), FULL_COVERAGE) for index in range(len(GROUP_NAMES))]


def test_a_patient_is_the_same_for_the_same_seed_and_differs_for_another():
    first = generate_patient(0, 123, AcdcPopulationConfig.tiny())
    again = generate_patient(0, 123, AcdcPopulationConfig.tiny())
    other = generate_patient(0, 124, AcdcPopulationConfig.tiny())
    for frame in ("ED", "ES"):
        assert np.array_equal(first.images[frame], again.images[frame])
        assert np.array_equal(first.labels[frame], again.labels[frame])
        assert first.images[frame].dtype == np.int16 and first.labels[frame].dtype == np.uint8
    assert first.geometry == again.geometry and first.info() == again.info()
    assert first.info() != other.info()


# sha256 of a tiny patient's ED/ES images and labels (dtype, shape, bytes) and its patients.json entry, computed
# with the code of commit 50094cc (before appearance version 2 existed) by running ``_patient_digest`` on
# generate_patient(index, case_seed(0, index), config); appearance version 1 must keep producing exactly these.
VERSION_1_DIGESTS = {
    (0, "tiny"): "7467a03c70a56092ed2cf68b51c39cfa886175d19002d9aebd016067f7dabe1f",  # NOR, 3 T
    (4, "tiny"): "a76201ff69f9dfaf653fb8fcff614f5215121a7d6556bd41a9ad33c1355d20c9",  # ARV, 1.5 T
    (4, "tiny, 3 samples through the slice"): "fc80367ecc130448412dd38d9cf23d77f4bc629b9428b8b5ad2be717302e345e",
}


def _patient_digest(patient) -> str:
    digest = hashlib.sha256()
    for frame in ("ED", "ES"):
        for array in (patient.images[frame], patient.labels[frame]):
            digest.update(str((array.dtype.str, array.shape)).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(json.dumps(patient.info(), sort_keys=True).encode())
    return digest.hexdigest()


def test_appearance_version_1_is_byte_for_byte_what_it_was():
    tiny = AcdcPopulationConfig.tiny()
    configs = {"tiny": tiny, "tiny, 3 samples through the slice":
               tiny.with_changes(acquisition=tiny.acquisition.with_changes(slice_profile_samples=3))}
    assert tiny.appearance_version == 1 == AcdcPopulationConfig().appearance_version
    for (index, name), expected in VERSION_1_DIGESTS.items():
        assert _patient_digest(generate_patient(index, case_seed(0, index), configs[name])) == expected, (index, name)


def test_sampled_targets_lie_within_the_documented_ranges():
    rng = np.random.default_rng(0)
    for group in GROUPS.values():
        for _ in range(50):
            targets = sample_targets(rng, group)
            assert group.lv_edv_ml_per_m2[0] <= targets.lv_edv_ml / targets.bsa_m2 <= group.lv_edv_ml_per_m2[1]
            assert group.rv_edv_ml_per_m2[0] <= targets.rv_edv_ml / targets.bsa_m2 <= group.rv_edv_ml_per_m2[1]
            assert group.lv_ef[0] <= targets.lv_ef <= group.lv_ef[1]
            assert group.rv_ef[0] <= targets.rv_ef <= group.rv_ef[1]
    # the ACDC definitions (Bernard et al. 2018) hold for every range
    assert GROUPS["DCM"].lv_edv_ml_per_m2[0] > 100 and GROUPS["DCM"].lv_ef[1] < 0.40
    assert GROUPS["HCM"].max_wall_ed_mm[0] > 15 and GROUPS["HCM"].lv_ef[0] >= 0.55
    assert GROUPS["MINF"].lv_ef[1] < 0.40 and GROUPS["MINF"].infarct_wall_ed_mm[1] <= 5.5
    assert GROUPS["ARV"].rv_edv_ml_per_m2[0] > 110 and GROUPS["ARV"].rv_ef[1] < 0.40


def test_label_volumes_of_every_group_fall_into_its_ranges(one_patient_per_group):
    for index, patient in enumerate(one_patient_per_group):
        group = GROUPS[patient_group(index)]
        assert patient.group == group.name
        bsa = patient.targets.bsa_m2
        spacing = patient.geometry.spacing_xyz
        ed, es = (_volumes_ml(patient.labels[frame], spacing) for frame in ("ED", "ES"))
        low, high = group.lv_edv_ml_per_m2
        assert low * (1 - VOLUME_TOLERANCE) <= ed[LV] / bsa <= high * (1 + VOLUME_TOLERANCE), (group.name, ed[LV] / bsa)
        low, high = group.rv_edv_ml_per_m2
        assert low * (1 - VOLUME_TOLERANCE) <= ed[RV] / bsa <= high * (1 + VOLUME_TOLERANCE), (group.name, ed[RV] / bsa)
        lv_ef, rv_ef = 1 - es[LV] / ed[LV], 1 - es[RV] / ed[RV]
        assert group.lv_ef[0] - EF_TOLERANCE <= lv_ef <= group.lv_ef[1] + EF_TOLERANCE, (group.name, lv_ef)
        assert group.rv_ef[0] - EF_TOLERANCE <= rv_ef <= group.rv_ef[1] + EF_TOLERANCE, (group.name, rv_ef)
    hcm = one_patient_per_group[GROUP_NAMES.index("HCM")]
    assert hcm.targets.max_wall_ed_mm > 15
    minf = one_patient_per_group[GROUP_NAMES.index("MINF")]
    assert minf.targets.infarct_wall_ed_mm <= 5.5


def test_es_is_the_same_patient_and_grid_with_the_volumes_of_its_ejection_fractions(one_patient_per_group):
    for patient in one_patient_per_group:
        assert patient.images["ED"].shape == patient.images["ES"].shape == patient.geometry.shape_zyx
        assert not np.array_equal(patient.labels["ED"], patient.labels["ES"])
        ed, es = (_volumes_ml(patient.labels[frame], patient.geometry.spacing_xyz) for frame in ("ED", "ES"))
        assert es[LV] < ed[LV] and es[RV] < ed[RV]
        assert abs((1 - es[LV] / ed[LV]) - patient.targets.lv_ef) < EF_TOLERANCE
        assert abs((1 - es[RV] / ed[RV]) - patient.targets.rv_ef) < EF_TOLERANCE
        # the myocardium thickens but keeps its volume
        assert abs(es[MYO] - ed[MYO]) < 0.1 * ed[MYO]
        # the body away from the heart does not move between the frames (only noise and texture differ)
        heart = (patient.labels["ED"] > 0) | (patient.labels["ES"] > 0)
        far = ~binary_dilation(heart, iterations=6)
        correlation = np.corrcoef(patient.images["ED"][far].astype(float), patient.images["ES"][far].astype(float))[0, 1]
        assert correlation > 0.9


def test_the_split_is_70_10_20_by_patient_with_the_groups_in_equal_shares():
    assert split_counts(100) == {"train": 70, "val": 10, "test": 20}
    split = split_patients(100)
    for part, per_group in (("train", 14), ("val", 2), ("test", 4)):
        groups = [patient_group(int(p[len("patient"):]) - 1) for p in split[part]]
        assert all(groups.count(g) == per_group for g in GROUP_NAMES), part
    assert len({p for ids in split.values() for p in ids}) == 100
    assert all(split_counts(n)[part] >= 1 for n in (3, 7, 10) for part in ("train", "val", "test"))
    assert split_counts(20, (0.5, 0.0, 0.5)) == {"train": 10, "val": 0, "test": 10}
    with pytest.raises(ValueError):
        split_counts(10, (0.0, 0.5, 0.5))


def test_the_written_dataset_keeps_both_frames_of_a_patient_in_one_part(tmp_path):
    from cctrnet.dataset.integrity import layout_problems

    folder = generate_acdc_population_dataset(tmp_path, dataset_id=41, name="Pop", num_patients=5,
                                              split_fractions=(0.6, 0.2, 0.2), config=AcdcPopulationConfig.tiny(),
                                              show_progress=False)
    content = json.loads((folder / "dataset.json").read_text())
    split = json.loads((folder / "splits.json").read_text())
    assert [len(split[p]) for p in ("train", "val", "test")] == [3, 1, 1]
    assert content["numTraining"] == 6 and content["numValidation"] == 2 and content["numTest"] == 2
    for part, suffix in (("train", "Tr"), ("val", "Val"), ("test", "Ts")):
        for patient in split[part]:
            for case in content["patients"][patient]:
                assert (folder / f"images{suffix}" / f"{case}_0000.nii.gz").is_file()
                assert (folder / f"labels{suffix}" / f"{case}.nii.gz").is_file()
    assert layout_problems(folder)[0] == []
    info = json.loads((folder / "patients.json").read_text())
    assert [info[p]["group"] for p in sorted(info)] == list(GROUP_NAMES)
    assert content["generator"]["appearance_version"] == 1 and "appearance_v2" not in content["generator"]["config"]
    assert all("appearance" not in entry for entry in info.values())


def test_the_integrity_check_refuses_a_patient_split_across_parts_and_a_case_in_two_patients(tmp_path):
    from cctrnet.dataset.dataset_json import dataset_json_problems
    from cctrnet.dataset.patients import patients_layout_problems

    content = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "LV": 1}, "numTraining": 2,
               "file_ending": ".nii.gz", "patients": {"p1": ["a", "b"], "p2": ["b", "c"]}}
    assert any('"b" belongs to patient "p1" and to "p2"' in p for p in dataset_json_problems(content))
    content["patients"] = {"p1": ["a", "b"], "p2": ["c"]}
    assert dataset_json_problems(content) == []
    problems = patients_layout_problems(tmp_path, content, {"imagesTr": {"a", "d"}, "imagesTs": {"b", "c"}})
    assert any('patient "p1" has cases in imagesTr and imagesTs' in p for p in problems)
    assert any("training case(s) d belong to no patient" in p for p in problems)


def _fake_preprocessed_dataset(root, patients, unlabeled=()):
    """A preprocessed folder with only what prepare_run reads: dataset.json, plans.json, case properties."""
    folder = root / "Dataset042_Grouped"
    data = folder / "2d"
    data.mkdir(parents=True)
    cases = [c for members in patients.values() for c in members]
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "labels": {"background": 0, "LV": 1}, "numTraining": len(cases),
        "file_ending": ".nii.gz", "patients": patients}))
    (folder / "plans.json").write_text(json.dumps({"configurations": {"2d": {"data_identifier": "2d"}}}))
    for case in cases:
        (data / f"{case}.json").write_text(json.dumps({"is_labeled": case not in unlabeled,
                                                        "geometry_preprocessed": {"shape_zyx": [4, 8, 8]}}))


def test_labeled_counts_patients_when_the_dataset_declares_them(tmp_path, monkeypatch, capsys):
    from cctrnet.training.run_setup import RunSetupError, prepare_run

    patients = {f"patient{i:03d}": [f"patient{i:03d}_ED", f"patient{i:03d}_ES"] for i in range(1, 7)}
    _fake_preprocessed_dataset(tmp_path, patients)
    monkeypatch.setenv("cctr_preprocessed", str(tmp_path))
    setup = prepare_run("42", num_labeled=2, seed=3)
    chosen = sorted({case.split("_")[0] for case in setup.labeled_cases})
    assert len(chosen) == 2 and setup.labeled_cases == sorted(c for p in chosen for c in patients[p])
    assert len(setup.unlabeled_cases) == 8 and not set(setup.labeled_cases) & set(setup.unlabeled_cases)
    assert setup.labeled_patients == chosen and setup.num_labeled == 2  # the run folder says labeled2
    line = capsys.readouterr().out
    assert f"2 patients = 4 cases: {chosen[0]} ({chosen[0]}_ED, {chosen[0]}_ES)" in line
    assert prepare_run("42", num_labeled=2, seed=3).labeled_cases == setup.labeled_cases
    assert len(prepare_run("42", num_labeled=1, seed=0).labeled_cases) == 2
    with pytest.raises(RunSetupError, match="more labeled patients than the 6"):
        prepare_run("42", num_labeled=7)


def test_labeled_still_counts_cases_without_patients():
    from cctrnet.dataset.labeled_selection import describe_labeled_cases, select_labeled_cases

    cases = [f"case{i}" for i in range(6)]
    chosen = select_labeled_cases(cases, 2, seed=3)
    assert len(chosen) == 2 and describe_labeled_cases(chosen) == f"2 cases: {chosen[0]}, {chosen[1]}"
    grouped = select_labeled_cases(cases, 2, seed=3, patient_of_case={c: f"p{i // 2}" for i, c in enumerate(cases)})
    assert len(grouped) == 4
