"""Appearance version 2 of the ACDC-like population: determinism, and each effect measured on tiny patients'
arrays against the ranges documented in documentation/phantom.md."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dataset_conversion.acdc_appearance_v2_config import EFFECTS, AppearanceV2Config
from dataset_conversion.acdc_population import build_parser, main, write_preview_png
from dataset_conversion.acdc_population_config import AcdcPopulationConfig
from dataset_conversion.acdc_population_patient import generate_patient
from dataset_conversion.coil_sensitivity import LoopCoil, array_sensitivity
from dataset_conversion.generated_dataset import case_seed
from dataset_conversion.ssfp_signal import bssfp_signal

RV, MYO, LV = 1, 2, 3
# blood / myocardium bSSFP signal over AppearanceV2Config's whole parameter box (a 5-point grid on each of
# the 7 ranges, computed once with ssfp_signal.bssfp_signal), as documented in phantom.md
BLOOD_TO_MYOCARDIUM = {1.5: (2.38, 5.61), 3.0: (1.60, 4.04)}
TINY = AcdcPopulationConfig.tiny()
# noise, texture, bias and blur all but off, one sample through the slice: voxels show their tissue's intensity
CLEAN = TINY.with_changes(noise_fraction_1p5t=(1e-6, 1e-6), noise_fraction_3t=(1e-6, 1e-6), max_bias_log_1p5t=0.0,
                          max_bias_log_3t=0.0, texture_amplitude_range=(1e-6, 1e-6),
                          acquisition=TINY.acquisition.with_changes(in_plane_blur_sigma_px=0.0))


def _version_2(config: AcdcPopulationConfig, effects: tuple[str, ...] = EFFECTS) -> AcdcPopulationConfig:
    return config.with_changes(appearance_version=2, appearance_v2=AppearanceV2Config(effects=effects))


def _patients(config: AcdcPopulationConfig, indices, seed: int = 5):
    return [generate_patient(i, case_seed(seed, i), config) for i in indices]


def test_version_2_is_deterministic_differs_from_version_1_and_without_effects_is_version_1():
    first, again = (generate_patient(0, 123, _version_2(TINY)) for _ in range(2))
    version_1 = generate_patient(0, 123, TINY)
    no_effects = generate_patient(0, 123, _version_2(TINY, ()))
    for frame in ("ED", "ES"):
        assert np.array_equal(first.images[frame], again.images[frame])
        assert np.array_equal(first.labels[frame], again.labels[frame])
        assert not np.array_equal(first.images[frame], version_1.images[frame])
        assert np.array_equal(no_effects.images[frame], version_1.images[frame])
        assert np.array_equal(no_effects.labels[frame], version_1.labels[frame])
    assert first.info() == again.info() and first.info()["appearance"]["version"] == 2
    assert json.loads(json.dumps(first.info())) == first.info()
    # the anatomy, scanner and grid come from streams version 2 does not touch
    assert {k: v for k, v in first.info().items() if k != "appearance"} == version_1.info()


def test_bssfp_signal_matches_the_short_tr_limit_and_bands_at_half_a_turn_per_tr():
    flip = np.deg2rad(60.0)
    for t1, t2 in ((1441.0, 290.0), (1030.0, 40.0)):
        limit = np.sin(flip) / ((1 + np.cos(flip)) + (1 - np.cos(flip)) * t1 / t2)
        assert float(bssfp_signal(t1, t2, 60.0, 3.2)) == pytest.approx(limit, rel=2e-3)
        assert float(bssfp_signal(t1, t2, 60.0, 3.2, np.pi)) < 0.05 * limit


def test_blood_to_myocardium_contrast_lies_in_the_documented_range_at_both_field_strengths():
    patients = _patients(_version_2(CLEAN, ("contrast",)), range(8))
    fields = set()
    for patient in patients:
        drawn = patient.info()["appearance"]["contrast"]["blood_to_myocardium"]
        field = patient.scanner.field_strength_t
        fields.add(field)
        low, high = BLOOD_TO_MYOCARDIUM[field]
        assert low <= drawn <= high, (patient.patient, field, drawn)
        image, label = patient.images["ED"].astype(float), patient.labels["ED"]
        # medians: papillary muscles and trabeculae inside the LV label are myocardium-dark
        measured = np.median(image[label == LV]) / np.median(image[label == MYO])
        assert measured == pytest.approx(drawn, rel=0.03), (patient.patient, measured, drawn)
    assert fields == {1.5, 3.0}
    ratios = {p.scanner.field_strength_t: [] for p in patients}
    for p in patients:
        ratios[p.scanner.field_strength_t].append(p.info()["appearance"]["contrast"]["blood_to_myocardium"])
    assert len(set(ratios[3.0])) == len(ratios[3.0])  # a contrast per patient, not per scanner


def _physical_y_mm(geometry) -> np.ndarray:
    """Physical y (mm; LPS: towards posterior) of every voxel centre, (z, y, x)."""
    index_zyx = np.indices(geometry.shape_zyx).reshape(3, -1).T
    return geometry.index_zyx_to_physical_xyz(index_zyx)[:, 1].reshape(geometry.shape_zyx)


def test_coil_shading_brightens_the_anterior_half_of_the_heart_as_much_as_its_residual_exponent_says():
    shaded = _patients(_version_2(CLEAN, ("contrast", "coil_shading")), range(6))
    plain = _patients(_version_2(CLEAN, ("contrast",)), range(6))
    checked = 0
    for with_coils, without in zip(shaded, plain):
        heart = without.labels["ED"] > 0
        assert np.array_equal(with_coils.labels["ED"], without.labels["ED"])
        ratio = with_coils.images["ED"][heart].astype(float) / without.images["ED"][heart]
        y = _physical_y_mm(without.geometry)[heart]
        anterior, posterior = ratio[y < np.median(y)].mean(), ratio[y >= np.median(y)].mean()
        exponent = with_coils.info()["appearance"]["coil_shading"]["residual_exponent"]
        assert 0.0 <= exponent <= 1.0
        if exponent > 0.2:
            assert anterior > posterior * (1 + 0.05 * exponent), (with_coils.patient, exponent, anterior, posterior)
            checked += 1
        else:  # nearly corrected by the scanner: nearly version 1's flat image
            assert abs(anterior / posterior - 1) < 0.3
    assert checked >= 2


def test_a_loop_coil_falls_off_with_depth_as_the_on_axis_law():
    coil = LoopCoil((0.0, 0.0, 0.0), (0.0, 1.0, 0.0), 60.0)
    depth = np.array([10.0, 60.0, 120.0])
    on_axis = array_sensitivity([coil], np.zeros(3), depth, np.zeros(3))
    assert np.allclose(on_axis, np.pi * 60.0 ** 2 / (2 * (60.0 ** 2 + depth ** 2) ** 1.5))


def _centroid_yx(mask: np.ndarray) -> np.ndarray:
    return np.array(np.nonzero(mask)).mean(axis=1)


def test_breath_hold_shifts_move_image_and_label_of_a_slice_together_within_the_documented_magnitude():
    config_v2 = AppearanceV2Config()
    moved = _patients(_version_2(CLEAN, ("contrast", "breath_hold")), range(4))
    still = _patients(_version_2(CLEAN, ("contrast",)), range(4))
    distinct_shifts = 0
    for shifted, reference in zip(moved, still):
        record = shifted.info()["appearance"]["breath_hold"]
        shifts_mm = np.array(record["shift_xy_mm"])
        spacing_x, spacing_y = shifted.geometry.spacing_xyz[:2]
        assert shifts_mm.shape == (shifted.geometry.shape_zyx[0], 2)
        assert np.all(np.linalg.norm(shifts_mm, axis=1) <= config_v2.max_breath_hold_shift_mm + 1e-6)
        assert np.all(np.abs(record["rotation_deg"]) <= config_v2.max_breath_hold_rotation_deg)
        distinct_shifts += len({tuple(s) for s in shifts_mm.tolist()}) > 1
        for frame in ("ED", "ES"):  # both frames of a slice come from one breath-hold
            for z, (shift_x, shift_y) in enumerate(shifts_mm):
                before, after = reference.labels[frame][z] > 0, shifted.labels[frame][z] > 0
                if before.sum() < 20 or after.sum() < 20:
                    continue
                moved_yx = _centroid_yx(after) - _centroid_yx(before)
                assert np.allclose(moved_yx, (shift_y / spacing_y, shift_x / spacing_x), atol=1.0), (
                    shifted.patient, frame, z, moved_yx, shift_x, shift_y)
            # the image moved with the label: the contrast measured under the moved label is the drawn one
            image, label = shifted.images[frame].astype(float), shifted.labels[frame]
            drawn = shifted.info()["appearance"]["contrast"]["blood_to_myocardium"]
            assert np.median(image[label == LV]) / np.median(image[label == MYO]) == pytest.approx(drawn, rel=0.03)
    assert distinct_shifts >= 3


def test_bands_appear_at_3_t_only():
    banded = _patients(_version_2(CLEAN, ("contrast", "banding")), range(6), seed=0)
    plain = _patients(_version_2(CLEAN, ("contrast",)), range(6), seed=0)
    fields, dark_bands = set(), 0
    for with_bands, without in zip(banded, plain):
        field = with_bands.scanner.field_strength_t
        fields.add(field)
        assert with_bands.info()["appearance"]["banding"]["applied"] == (field == 3.0)
        if field == 1.5:
            for frame in ("ED", "ES"):
                assert np.array_equal(with_bands.images[frame], without.images[frame])
            continue
        image, reference = with_bands.images["ED"].astype(float), without.images["ED"].astype(float)
        body = reference > 0.1 * np.percentile(reference, 99)
        ratio = image[body] / reference[body]
        # beside a band the bSSFP profile rises a little above its on-resonance value, never more than that
        assert ratio.max() <= 1.02 * with_bands.appearance.off_resonance().tissue_profile.max()
        dark_bands += bool((ratio < 0.3).any())
    assert fields == {1.5, 3.0} and dark_bands >= 2


def test_the_cli_option_reaches_dataset_json_and_patients_json(tmp_path):
    assert build_parser().parse_args([]).appearance_version == 1
    main(["--tiny", "--patients", "2", "--split", "0.5", "0.0", "0.5", "--raw-root", str(tmp_path), "-d", "43",
          "--name", "PopV2", "--appearance-version", "2"])
    folder = tmp_path / "Dataset043_PopV2"
    generator = json.loads((folder / "dataset.json").read_text())["generator"]
    assert generator["appearance_version"] == 2 and generator["config"]["appearance_version"] == 2
    assert generator["config"]["appearance_v2"]["effects"] == list(EFFECTS)
    assert "Sl07" in generator["config"]["appearance_v2"]["sources"]
    patients = json.loads((folder / "patients.json").read_text())
    assert sorted(patients) == ["patient001", "patient002"]
    assert all(entry["appearance"]["version"] == 2 for entry in patients.values())


def test_the_preview_draws_version_2(tmp_path):
    path = write_preview_png(tmp_path / "v2.png", config=_version_2(TINY))
    assert path.is_file() and path.stat().st_size > 10_000
