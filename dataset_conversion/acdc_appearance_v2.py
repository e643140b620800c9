"""One patient's appearance in version 2 of the ACDC-like population: what it drew and what the renderer gets.

``sample_patient_appearance`` draws, from the patient's own appearance stream and in a fixed order, the tissue
contrast, the receive coils, the B0 field and the breath-hold poses (the ranges and their sources are in
``acdc_appearance_v2_config``). ``PatientAppearance.apply`` turns them into the renderer's inputs: tissue
intensities from the bSSFP steady state (``ssfp_signal``), a coil-shading field (``coil_sensitivity``), an
``OffResonance`` at 3 T and a ``SliceMotion`` (``phantom_effects``). Both frames share all of it: ED and ES of a
slice come from the same breath-hold of the same cine acquisition.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from dataset_conversion.acdc_appearance_v2_config import RELAXATION_TISSUES, AppearanceV2Config
from dataset_conversion.coil_sensitivity import LoopCoil, array_sensitivity
from dataset_conversion.phantom_anatomy import Acquisition, Appearance, BodyLayout, HeartShape, Tissue
from dataset_conversion.phantom_effects import PROFILE_BINS, OffResonance, SliceMotion
from dataset_conversion.ssfp_signal import bssfp_signal

# which relaxation times each rendered tissue takes; tissues [St05] does not cover take blood's, so a band crosses
# them too (modelling choice; their on-resonance intensities stay version 1's)
RELAXATION_OF_TISSUE = {Tissue.MYOCARDIUM: "myocardium", Tissue.MUSCLE: "muscle", Tissue.LIVER: "liver"}
# the ventricles' centre in the heart frame: half way down the epicardial long axis, shifted towards the RV
VENTRICLES_CENTRE_TOWARDS_RV_MM = 10.0
# the heart ball is sampled on this lattice (points per axis) to normalise fields over it
HEART_LATTICE_POINTS = 9


def _heart_ball_points(centre_xyz_mm: np.ndarray, radius_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    axis = np.linspace(-1.0, 1.0, HEART_LATTICE_POINTS)
    u = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    u = u[(u * u).sum(axis=1) <= 1.0]
    points = centre_xyz_mm[None, :] + radius_mm * u
    return points[:, 0], points[:, 1], points[:, 2]


@dataclass(frozen=True)
class ReceiveShading:
    """Coil shading: (root-sum-of-squares sensitivity / its mean over the heart) ** residual exponent."""

    coils: tuple[LoopCoil, ...]
    reference: float
    residual_exponent: float

    def __call__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        relative = array_sensitivity(self.coils, x, y, z) / self.reference
        return np.power(relative, self.residual_exponent).astype(np.float32)


@dataclass(frozen=True)
class SmoothB0Field:
    """Off-resonance (Hz) = centre offset + half the spread x the polynomial g.u + w u'Qu (u = (p - centre) /
    radius) rescaled so that it spans exactly [-1, 1] over the heart ball."""

    centre_xyz_mm: tuple[float, float, float]
    radius_mm: float
    gradient: tuple[float, float, float]
    quadratic: tuple[tuple[float, float, float], ...]
    spread_hz: float
    centre_offset_hz: float
    polynomial_range: tuple[float, float]  # min and max of the raw polynomial over the heart ball

    def polynomial(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        u = [(np.asarray(c, dtype=np.float64) - m) / self.radius_mm for c, m in zip((x, y, z), self.centre_xyz_mm)]
        value = sum(g * c for g, c in zip(self.gradient, u))
        for i in range(3):
            for j in range(3):
                value = value + self.quadratic[i][j] * u[i] * u[j]
        return value

    def __call__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        low, high = self.polynomial_range
        normalised = (2.0 * self.polynomial(x, y, z) - (high + low)) / (high - low)
        return self.centre_offset_hz + 0.5 * self.spread_hz * normalised


@dataclass(frozen=True)
class PatientAppearance:
    """What one patient drew for appearance version 2 (patients.json ``"appearance"``)."""

    effects: tuple[str, ...]
    field_strength_t: float
    flip_prescribed_deg: float
    transmit_factor: float
    tr_ms: float
    relaxation_ms: dict[str, tuple[float, float]]  # tissue -> (T1, T2) after the patient's factors
    coils: tuple[LoopCoil, LoopCoil]  # anterior, posterior
    coil_residual_exponent: float
    heart_centre_xyz_mm: tuple[float, float, float]
    b0_field: SmoothB0Field
    slices_per_breath_hold: int
    shift_xy_mm: np.ndarray  # (nz, 2) patient displacement seen by each slice, along the grid's x and y axes
    rotation_deg: np.ndarray  # (nz,)
    off_resonance_heart_radius_mm: float

    @property
    def flip_deg(self) -> float:
        return self.flip_prescribed_deg * self.transmit_factor

    @property
    def has_banding(self) -> bool:
        """Bands are drawn at 3 T only (see ``AppearanceV2Config``)."""
        return "banding" in self.effects and self.field_strength_t >= 2.0

    def signal(self, tissue: str, off_resonance_rad: np.ndarray | float = 0.0) -> np.ndarray:
        t1, t2 = self.relaxation_ms[tissue]
        return bssfp_signal(t1, t2, self.flip_deg, self.tr_ms, off_resonance_rad)

    def relative_signal(self) -> dict[str, float]:
        """On-resonance bSSFP signal of each relaxation tissue relative to blood."""
        blood = float(self.signal("blood"))
        return {tissue: float(self.signal(tissue)) / blood for tissue in RELAXATION_TISSUES}

    def receive_shading(self) -> ReceiveShading:
        reference = float(array_sensitivity(self.coils, *_heart_ball_points(
            np.asarray(self.heart_centre_xyz_mm), self.off_resonance_heart_radius_mm)).mean())
        return ReceiveShading(self.coils, reference, self.coil_residual_exponent)

    def off_resonance(self) -> OffResonance:
        phase = -np.pi + 2 * np.pi * np.arange(PROFILE_BINS) / PROFILE_BINS
        profiles = {name: self.signal(name, phase) / self.signal(name) for name in RELAXATION_TISSUES}
        table = np.empty((len(Tissue), PROFILE_BINS), dtype=np.float32)
        for tissue in Tissue:
            table[tissue] = profiles[RELAXATION_OF_TISSUE.get(tissue, "blood")]
        return OffResonance(self.b0_field, self.tr_ms, table)

    def apply(self, appearance: Appearance, acquisition: Acquisition) -> tuple[Appearance, Acquisition]:
        """The renderer's inputs with this patient's effects added to version 1's ``appearance`` (without its
        3 T brightening, which the bSSFP contrast replaces) and ``acquisition``."""
        if "contrast" in self.effects:
            intensity = appearance.tissue_intensity.copy()
            relative = self.relative_signal()
            for tissue, name in RELAXATION_OF_TISSUE.items():
                intensity[tissue] = np.float32(relative[name])
            appearance = replace(appearance, tissue_intensity=intensity)
        if "coil_shading" in self.effects:
            appearance = replace(appearance, receive_field=self.receive_shading())
        if self.has_banding:
            appearance = replace(appearance, off_resonance=self.off_resonance())
        if "breath_hold" in self.effects:
            motion = SliceMotion(self.shift_xy_mm.astype(np.float64), np.deg2rad(self.rotation_deg))
            acquisition = replace(acquisition, slice_motion=motion)
        return appearance, acquisition

    def to_dict(self) -> dict[str, Any]:
        def r(value: float, digits: int = 4) -> float:
            return round(float(value), digits)

        relative = self.relative_signal()
        anterior, posterior = self.coils
        return {
            "version": 2, "effects": list(self.effects),
            "contrast": {"flip_prescribed_deg": r(self.flip_prescribed_deg, 2),
                         "transmit_factor": r(self.transmit_factor), "flip_deg": r(self.flip_deg, 2),
                         "tr_ms": r(self.tr_ms, 3),
                         "t1_ms": {k: r(v[0], 1) for k, v in self.relaxation_ms.items()},
                         "t2_ms": {k: r(v[1], 1) for k, v in self.relaxation_ms.items()},
                         "signal_relative_to_blood": {k: r(v) for k, v in relative.items()},
                         "blood_to_myocardium": r(1.0 / relative["myocardium"])},
            "coil_shading": {"radius_mm": r(anterior.radius_mm, 1),
                             "anterior_centre_xyz_mm": [r(v, 1) for v in anterior.centre_xyz_mm],
                             "posterior_centre_xyz_mm": [r(v, 1) for v in posterior.centre_xyz_mm],
                             "residual_exponent": r(self.coil_residual_exponent)},
            "banding": {"applied": self.has_banding, "spread_over_heart_hz": r(self.b0_field.spread_hz, 1),
                        "centre_offset_hz": r(self.b0_field.centre_offset_hz, 1),
                        "heart_centre_xyz_mm": [r(v, 1) for v in self.heart_centre_xyz_mm]},
            "breath_hold": {"slices_per_breath_hold": self.slices_per_breath_hold,
                            "shift_xy_mm": [[r(a, 3), r(b, 3)] for a, b in self.shift_xy_mm],
                            "rotation_deg": [r(a, 3) for a in self.rotation_deg]},
        }


def ventricles_centre_xyz_mm(heart: HeartShape, heart_rotation: np.ndarray) -> np.ndarray:
    """World position (mm) of the middle of the ventricles: the heart frame's origin is the LV base centre."""
    return heart_rotation @ np.array([VENTRICLES_CENTRE_TOWARDS_RV_MM, 0.0, 0.5 * heart.epi_length_mm])


def _random_unit_vector(rng: np.random.Generator) -> np.ndarray:
    vector = rng.standard_normal(3)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def sample_patient_appearance(rng: np.random.Generator, config: AppearanceV2Config, field_strength_t: float,
                              heart: HeartShape, heart_rotation: np.ndarray, body: BodyLayout,
                              num_slices: int) -> PatientAppearance:
    """One patient's version-2 appearance; every draw comes from ``rng`` in a fixed order, whichever effects are
    on and whatever the field strength (the number of slices only sets how many breath-holds are drawn, last)."""
    u = rng.uniform
    is_3t = field_strength_t >= 2.0
    # 1. contrast
    flip = u(*(config.flip_3t_deg if is_3t else config.flip_1p5t_deg))
    transmit = u(*(config.transmit_factor_3t if is_3t else config.transmit_factor_1p5t))
    tr_ms = u(*(config.tr_3t_ms if is_3t else config.tr_1p5t_ms))
    relaxation = {}
    for tissue in sorted(config.relaxation_ms(field_strength_t)):
        t1, t2 = config.relaxation_ms(field_strength_t)[tissue]
        relaxation[tissue] = (t1 * u(*config.t1_factor_range), t2 * u(*config.t2_factor_range))
    # 2. coils: loops on the anterior chest and under the back, facing the heart
    centre = ventricles_centre_xyz_mm(heart, heart_rotation)
    radius = u(*config.coil_radius_mm)
    (torso_x, torso_y), (torso_semi_x, torso_semi_y) = body.torso_center_xy_mm, body.torso_semi_axes_xy_mm
    coils = []
    for away in (-1.0, 1.0):  # anterior (towards -y in LPS), posterior
        error = config.coil_placement_error_mm
        lateral, head_foot, standoff = u(-error, error), u(-error, error), u(*config.coil_standoff_mm)
        x = float(centre[0] + lateral)
        # the torso's outline at x, pushed out by its largest contour perturbation: the loop never touches skin
        depth = (torso_semi_y * float(np.sqrt(max(0.0, 1.0 - ((x - torso_x) / torso_semi_x) ** 2)))
                 * (1.0 + body.torso_perturbation.max_abs))
        coils.append(LoopCoil((x, float(torso_y + away * (depth + standoff)), float(centre[2] + head_foot)),
                              (0.0, 1.0, 0.0), radius))
    residual = u(*config.coil_residual_exponent)
    # 3. B0 field (drawn at both field strengths; used at 3 T)
    spread = u(*config.off_resonance_spread_3t_hz)
    offset = u(-config.centre_frequency_error_hz, config.centre_frequency_error_hz)
    gradient = _random_unit_vector(rng)
    symmetric = rng.standard_normal((3, 3))
    symmetric = 0.5 * (symmetric + symmetric.T)
    largest_eigenvalue = max(float(np.abs(np.linalg.eigvalsh(symmetric)).max()), 1e-12)
    symmetric *= u(*config.off_resonance_quadratic_weight) / largest_eigenvalue
    field = SmoothB0Field(tuple(float(c) for c in centre), config.off_resonance_heart_radius_mm,
                          tuple(float(g) for g in gradient), tuple(tuple(float(v) for v in row) for row in symmetric),
                          spread, offset, (0.0, 1.0))
    raw = field.polynomial(*_heart_ball_points(centre, config.off_resonance_heart_radius_mm))
    field = replace(field, polynomial_range=(float(raw.min()), float(raw.max())))
    # 4. breath-holds, one pose per group of consecutive slices
    per_hold = int(rng.integers(config.slices_per_breath_hold[0], config.slices_per_breath_hold[1] + 1))
    holds = -(-num_slices // per_hold)
    shifts = rng.standard_normal((holds, 2)) * config.breath_hold_shift_sd_mm
    length = np.linalg.norm(shifts, axis=1, keepdims=True)
    shifts *= np.minimum(1.0, config.max_breath_hold_shift_mm / np.maximum(length, 1e-12))
    rotations = u(-config.max_breath_hold_rotation_deg, config.max_breath_hold_rotation_deg, holds)
    hold_of_slice = np.arange(num_slices) // per_hold
    return PatientAppearance(tuple(config.effects), field_strength_t, flip, transmit, tr_ms, relaxation, tuple(coils),
                             residual, tuple(float(c) for c in centre), field, per_hold, shifts[hold_of_slice],
                             rotations[hold_of_slice], config.off_resonance_heart_radius_mm)
