"""One patient of the ACDC-like population: its group, targets, scanner, and its ED and ES frames.

Both frames share the pose, the body, the acquisition grid, the scanner's contrast and bias field; only the
heart (ED or ES, ``acdc_population_heart``) and the image noise and texture differ. The patient seed is
split into independent streams (anatomy, acquisition, ED rendering, ES rendering, and appearance version 2's),
so a change in one part does not move the random draws of another; version 1 never reads the fifth stream.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from cctrnet.dataset.geometry import Geometry
from dataset_conversion.acdc_appearance_v2 import PatientAppearance, sample_patient_appearance
from dataset_conversion.acdc_population_config import AcdcPopulationConfig, Scanner, sample_scanner
from dataset_conversion.acdc_population_groups import GROUP_NAMES, GROUPS, CardiacTargets, sample_targets
from dataset_conversion.acdc_population_heart import end_diastolic_heart, end_systolic_heart, heart_volumes
from dataset_conversion.phantom import subject_geometry
from dataset_conversion.phantom_anatomy import (Acquisition, Appearance, SubjectParameters, Tissue, sample_acquisition,
                                                sample_appearance, sample_body, sample_heart, sample_heart_rotation)
from dataset_conversion.phantom_render import render_subject

FRAMES = ("ED", "ES")
# tissues whose brightness relative to blood changes with the field strength (Scanner.tissue_brightening)
BRIGHTENED_TISSUES = (Tissue.MYOCARDIUM, Tissue.MUSCLE, Tissue.LIVER)


def patient_id(patient_index: int) -> str:
    """``patient001`` for index 0, as ACDC numbers its patients from 1."""
    return f"patient{patient_index + 1:03d}"


def frame_case_id(patient: str, frame: str) -> str:
    return f"{patient}_{frame}"


def patient_group(patient_index: int) -> str:
    """Groups in turn (NOR, DCM, HCM, MINF, ARV, NOR, ...): 100 patients give 20 per group, as in ACDC."""
    return GROUP_NAMES[patient_index % len(GROUP_NAMES)]


@dataclass(frozen=True)
class PatientFrames:
    """A generated patient: per frame (``"ED"``, ``"ES"``) an int16 image, a uint8 label (both (z, y, x)) and
    the geometry they share, plus what was drawn (for patients.json)."""

    patient: str
    group: str
    targets: CardiacTargets
    scanner: Scanner
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    geometry: Geometry
    heart_volumes_ml: dict[str, dict[str, float]]  # per frame, painted on the solver grid (no slices)
    appearance: PatientAppearance | None = None  # appearance version 2's draws; None for version 1

    def info(self) -> dict[str, Any]:
        info = {"group": self.group, "cases": {frame: frame_case_id(self.patient, frame) for frame in FRAMES},
                "targets": self.targets.to_dict(), "scanner": self.scanner.to_dict(),
                "shape_zyx": list(self.geometry.shape_zyx),
                "spacing_xyz_mm": [round(float(s), 4) for s in self.geometry.spacing_xyz],
                "heart_volumes_ml": {frame: {k: round(v, 1) for k, v in volumes.items()}
                                     for frame, volumes in self.heart_volumes_ml.items()}}
        if self.appearance is not None:
            info["appearance"] = self.appearance.to_dict()
        return info


def _drop_slices(acquisition: Acquisition, base_slices: int, apex_slices: int, min_kept: int) -> Acquisition:
    """The same stack without its first (basal) and last (apical) slices: incomplete coverage."""
    nz, ny, nx = acquisition.shape_zyx
    base_slices = min(base_slices, max(0, nz - min_kept))
    apex_slices = min(apex_slices, max(0, nz - base_slices - min_kept))
    if base_slices == apex_slices == 0:
        return acquisition
    normal = acquisition.oblique_direction[:, 2]
    origin = acquisition.oblique_origin_xyz_mm + normal * acquisition.spacing_xyz_mm[2] * base_slices
    return replace(acquisition, shape_zyx=(nz - base_slices - apex_slices, ny, nx), oblique_origin_xyz_mm=origin)


def _scanner_contrast(appearance: Appearance, scanner: Scanner) -> Appearance:
    intensity = appearance.tissue_intensity.copy()
    for tissue in BRIGHTENED_TISSUES:
        intensity[tissue] *= np.float32(scanner.tissue_brightening)
    return replace(appearance, tissue_intensity=intensity)


def generate_patient(patient_index: int, patient_seed: int, config: AcdcPopulationConfig | None = None,
                     ) -> PatientFrames:
    """Patient ``patient_index`` (its group follows from the index) drawn from ``patient_seed``; the same
    arguments always give byte-identical frames."""
    config = config or AcdcPopulationConfig()
    group = patient_group(patient_index)
    # spawned children depend only on their index, so the first four streams are version 1's whatever follows
    anatomy_rng, acquisition_rng, ed_rng, es_rng, appearance_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(patient_seed)).spawn(5))
    targets = sample_targets(anatomy_rng, GROUPS[group])
    base_heart = sample_heart(anatomy_rng, config.acquisition.shape_perturbation_scale)
    hearts = {"ED": end_diastolic_heart(base_heart, targets, anatomy_rng, config.solver_spacing_mm)}
    hearts["ES"] = end_systolic_heart(hearts["ED"], targets, config.solver_spacing_mm)

    scanner = sample_scanner(acquisition_rng, config)
    phantom_config = scanner.phantom_config(config)
    rotation = sample_heart_rotation(acquisition_rng)
    body = sample_body(acquisition_rng, phantom_config.shape_perturbation_scale)
    acquisition = sample_acquisition(acquisition_rng, phantom_config, hearts["ED"], rotation)
    acquisition = _drop_slices(acquisition, scanner.missing_base_slices, scanner.missing_apex_slices,
                               config.min_slices_kept)
    appearance = sample_appearance(acquisition_rng, phantom_config)
    written_grid = subject_geometry(acquisition, phantom_config.oblique_direction)
    drawn_v2 = (sample_patient_appearance(appearance_rng, config.appearance_v2, scanner.field_strength_t,
                                          hearts["ED"], rotation, body, acquisition.shape_zyx[0])
                if config.appearance_version == 2 else None)
    if drawn_v2 is None or "contrast" not in drawn_v2.effects:  # version 2's contrast replaces this one
        appearance = _scanner_contrast(appearance, scanner)
    if drawn_v2 is not None:
        appearance, acquisition = drawn_v2.apply(appearance, acquisition)

    images, labels = {}, {}
    for frame, rng in zip(FRAMES, (ed_rng, es_rng)):
        subject = SubjectParameters(hearts[frame], rotation, body, acquisition, appearance)
        images[frame], labels[frame] = render_subject(subject, phantom_config, rng)
    volumes = {frame: heart_volumes(heart, True, config.solver_spacing_mm) for frame, heart in hearts.items()}
    return PatientFrames(patient_id(patient_index), group, targets, scanner, images, labels, written_grid, volumes,
                         drawn_v2)
