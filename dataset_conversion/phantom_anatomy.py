"""Random anatomy, pose, acquisition and appearance of one phantom subject.

Everything physical is in mm. The world frame is the patient frame in ITK's LPS convention
(x to the patient's left, y posterior, z superior). The heart frame has its origin at the centre of
the LV base; its third axis is the long axis pointing from base to apex and its first axis points
from the LV towards the RV. All random draws come from one ``numpy.random.Generator`` in a fixed
order, so a seed fixes the subject.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from dataset_conversion.phantom_config import PhantomConfig
from dataset_conversion.phantom_effects import OffResonance, SliceMotion, SpatialField


class Tissue(IntEnum):
    """Tissue classes that set the image intensity (the segmentation labels are separate)."""

    AIR = 0
    MUSCLE = 1
    FAT = 2
    LUNG = 3
    LIVER = 4
    BONE = 5
    CSF = 6
    OTHER_BLOOD = 7  # atria and aorta: bright like the ventricles but not labeled
    MYOCARDIUM = 8  # LV myocardium, RV free wall, papillary muscles
    LV_BLOOD = 9
    RV_BLOOD = 10


# Relative intensities of balanced-SSFP cine MRI (blood brightest); each subject draws within these.
TISSUE_INTENSITY_RANGES: dict[Tissue, tuple[float, float]] = {
    Tissue.AIR: (0.0, 0.0),
    Tissue.MUSCLE: (0.18, 0.30),
    Tissue.FAT: (0.70, 0.95),
    Tissue.LUNG: (0.02, 0.08),
    Tissue.LIVER: (0.25, 0.40),
    Tissue.BONE: (0.30, 0.50),
    Tissue.CSF: (0.70, 0.95),
    Tissue.OTHER_BLOOD: (0.70, 1.00),
    Tissue.MYOCARDIUM: (0.20, 0.35),
    Tissue.LV_BLOOD: (1.0, 1.0),
    Tissue.RV_BLOOD: (0.85, 1.00),
}

NUM_HARMONICS = 4
ANGLE_BINS = 512  # a power of two: angles wrap with a bit mask
HEIGHT_BINS = 65
# nominal LV long axis (base -> apex) in LPS: towards the patient's left, anterior and inferior
NOMINAL_LONG_AXIS_LPS = (0.6, -0.45, -0.65)
RIGHT_ANTERIOR_LPS = (-1.0, -1.0, 0.0)
NOMINAL_IN_PLANE_ROTATION_DEG = 30.0


@dataclass(frozen=True)
class ContourPerturbation:
    """Smooth relative change of a contour radius: a Fourier series in the angle whose coefficients
    are quadratic (Legendre) polynomials of the normalised height t in [0, 1].

    Evaluated through a fine table (ANGLE_BINS x HEIGHT_BINS, nearest entry): the table step moves a
    30 mm contour by about 0.1 mm, and a lookup costs a few operations instead of a Fourier sum.
    """

    coefficients: np.ndarray  # (NUM_HARMONICS, 2 [cos, sin], 3 [P0, P1, P2])

    def __post_init__(self) -> None:
        theta = np.arange(ANGLE_BINS) * (2 * np.pi / ANGLE_BINS)
        t = np.linspace(0.0, 1.0, HEIGHT_BINS)
        table = self.exact(theta[None, :], t[:, None]).astype(np.float32)
        object.__setattr__(self, "_table", table.ravel())
        object.__setattr__(self, "max_abs", float(np.abs(table).max()) + 1e-3)

    @classmethod
    def sample(cls, rng: np.random.Generator, amplitude: float) -> "ContourPerturbation":
        harmonic_sd = amplitude / np.arange(1, NUM_HARMONICS + 1) ** 0.7
        height_sd = np.array([1.0, 0.6, 0.4])
        noise = rng.standard_normal((NUM_HARMONICS, 2, 3))
        return cls(noise * harmonic_sd[:, None, None] * height_sd[None, None, :])

    def exact(self, theta_rad: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The series itself (float64), clipped to [-0.4, 0.4]."""
        s = 2.0 * np.clip(t, 0.0, 1.0) - 1.0
        legendre = (np.ones_like(s), s, 1.5 * s * s - 0.5)
        total = 0.0
        for k in range(NUM_HARMONICS):
            a_k = sum(self.coefficients[k, 0, j] * legendre[j] for j in range(3))
            b_k = sum(self.coefficients[k, 1, j] * legendre[j] for j in range(3))
            total = total + a_k * np.cos((k + 1) * theta_rad) + b_k * np.sin((k + 1) * theta_rad)
        return np.clip(total, -0.4, 0.4)

    def __call__(self, theta_rad: np.ndarray, t: np.ndarray | float) -> np.ndarray:
        """Relative radius change (float32) at angles ``theta_rad`` and heights ``t`` (clipped to [0, 1])."""
        angle_index = (np.asarray(theta_rad, dtype=np.float32) * np.float32(ANGLE_BINS / (2 * np.pi))
                       + np.float32(ANGLE_BINS + 0.5)).astype(np.int32) & (ANGLE_BINS - 1)
        height_index = (np.clip(t, 0.0, 1.0) * np.float32(HEIGHT_BINS - 1) + np.float32(0.5)).astype(np.int32)
        return self._table[height_index * ANGLE_BINS + angle_index]


@dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid with axes along the world axes, its surface perturbed around the z axis."""

    center_xyz_mm: tuple[float, float, float]
    semi_axes_xyz_mm: tuple[float, float, float]
    perturbation: ContourPerturbation


@dataclass(frozen=True)
class HeartShape:
    """Ventricles, pericardial fat and atria in the heart frame (mm)."""

    endo_radius_mm: float  # LV cavity radius at the base
    wall_mm: float  # myocardial thickness at the base
    endo_length_mm: float  # LV cavity length, base to endocardial apex
    apex_wall_mm: float  # myocardial thickness at the apex
    endo_exponent: float  # super-ellipse exponent of the taper (small: conical, large: bullet-shaped)
    epi_exponent: float
    mid_bulge: float  # relative widening at mid-ventricle
    axis_bend_mm: float  # sideways displacement of the apex: a curved long axis
    axis_bend_angle_rad: float
    base_tilt_mm: float  # the base plane is not perpendicular to the long axis
    base_tilt_angle_rad: float
    endo_perturbation: ContourPerturbation
    epi_perturbation: ContourPerturbation
    rv_length_fraction: float  # RV length as a fraction of the LV cavity length (RV ends before the apex)
    rv_width_mm: float  # largest width of the RV crescent, at the base
    rv_center_fraction: float  # RV ellipse centre as a fraction of the LV epicardial radius
    rv_wrap: float  # how far the RV wraps around the LV (ellipse half-width / LV epicardial radius)
    rv_offset_mm: float  # shift of the RV along the second heart axis
    rv_wall_mm: float
    rv_perturbation: ContourPerturbation
    fat_mm: float  # pericardial fat thickness, patchy via fat_perturbation
    fat_perturbation: ContourPerturbation
    papillary_radius_mm: float
    papillary_angles_rad: tuple[float, float]
    papillary_radial_fraction: float
    papillary_height_range: tuple[float, float]  # as fractions of the cavity length
    left_atrium: Ellipsoid
    right_atrium: Ellipsoid
    # features of the ACDC-like population (dataset_conversion/acdc_population_heart.py); the defaults leave
    # the cardiac phantom as it was
    septal_extra_wall_mm: float = 0.0  # extra wall thickness of the septum (towards the RV): asymmetric hypertrophy
    septal_half_width_rad: float = 1.0
    trabeculation_depth_mm: float = 0.0  # thin myocardial strands lining the cavities (labeled as cavity)
    trabeculation_strands: int = 0
    infarct_wall_mm: float = 0.0  # wall thickness in the infarcted sector; 0: no infarct
    infarct_angle_rad: float = 0.0
    infarct_half_width_rad: float = 0.0
    infarct_height_range: tuple[float, float] = (0.0, 1.0)  # fractions of the cavity length
    infarct_endo_scale: float = 1.0  # endocardial radius factor in the sector (>1 at ES: the akinetic wall stays out)

    @property
    def epi_radius_mm(self) -> float:
        return self.endo_radius_mm + self.wall_mm

    @property
    def epi_length_mm(self) -> float:
        return self.endo_length_mm + self.apex_wall_mm

    @property
    def rv_length_mm(self) -> float:
        return self.rv_length_fraction * self.endo_length_mm


@dataclass(frozen=True)
class BodyLayout:
    """Torso and the unlabeled organs around the heart, in the world frame (mm)."""

    torso_center_xy_mm: tuple[float, float]
    torso_semi_axes_xy_mm: tuple[float, float]
    torso_perturbation: ContourPerturbation
    subcutaneous_fat_mm: float
    lungs: tuple[Ellipsoid, Ellipsoid]
    liver: Ellipsoid
    spine_center_xy_mm: tuple[float, float]
    spine_radius_mm: float
    canal_center_xy_mm: tuple[float, float]
    canal_radius_mm: float
    aorta_center_xy_mm: tuple[float, float]
    aorta_radius_mm: float


@dataclass(frozen=True)
class Acquisition:
    """The image grid in the world frame: the short-axis stack."""

    shape_zyx: tuple[int, int, int]
    spacing_xyz_mm: tuple[float, float, float]
    slice_thickness_mm: float
    oblique_direction: np.ndarray  # 3x3, columns: world directions of the x, y, z index axes
    oblique_origin_xyz_mm: np.ndarray  # patient-frame point of voxel (0, 0, 0)
    patient_offset_xyz_mm: np.ndarray  # scanner position of the patient frame's origin (added to the written origin)
    slice_motion: SliceMotion | None = None  # per-slice breath-hold displacement; None: every slice sees one pose


@dataclass(frozen=True)
class Appearance:
    tissue_intensity: np.ndarray  # relative intensity per Tissue value
    intensity_scale: float
    noise_fraction: float
    bias_coefficients: np.ndarray  # 3 linear then 6 quadratic terms of the log bias field
    bias_log_amplitude: float
    off_resonance: OffResonance | None = None  # bSSFP banding; None: every voxel on resonance
    receive_field: SpatialField | None = None  # surface-coil shading of the noise-free image; None: none


@dataclass(frozen=True)
class SubjectParameters:
    heart: HeartShape
    heart_rotation: np.ndarray  # 3x3, columns: world directions of the heart axes (RV, second, long axis)
    body: BodyLayout
    acquisition: Acquisition
    appearance: Appearance


def sample_subject_parameters(rng: np.random.Generator, config: PhantomConfig) -> SubjectParameters:
    """Draw one subject; every random number comes from ``rng`` in a fixed order."""
    heart = sample_heart(rng, config.shape_perturbation_scale)
    heart_rotation = sample_heart_rotation(rng)
    body = sample_body(rng, config.shape_perturbation_scale)
    acquisition = sample_acquisition(rng, config, heart, heart_rotation)
    appearance = sample_appearance(rng, config)
    return SubjectParameters(heart, heart_rotation, body, acquisition, appearance)


def sample_heart(rng: np.random.Generator, perturbation_scale: float) -> HeartShape:
    u = rng.uniform
    endo_radius = u(20.0, 30.0)
    endo_length = u(65.0, 90.0)
    endo_exponent = u(1.6, 3.0)

    def amplitude(low: float, high: float) -> float:
        return u(low, high) * perturbation_scale

    endo_perturbation = ContourPerturbation.sample(rng, amplitude(0.04, 0.10))
    epi_perturbation = ContourPerturbation.sample(rng, amplitude(0.03, 0.08))
    rv_perturbation = ContourPerturbation.sample(rng, amplitude(0.04, 0.10))
    fat_perturbation = ContourPerturbation.sample(rng, 0.5)
    papillary_base_angle = np.pi + u(-0.4, 0.4)  # on the free wall, opposite the RV
    papillary_spread = u(0.6, 1.2)
    left_atrium = Ellipsoid((u(-15.0, -5.0), u(5.0, 20.0), u(-28.0, -18.0)), (u(18.0, 28.0), u(18.0, 28.0), u(16.0, 24.0)),
                            ContourPerturbation.sample(rng, 0.08))
    right_atrium = Ellipsoid((u(25.0, 40.0), u(0.0, 15.0), u(-25.0, -15.0)), (u(18.0, 26.0), u(18.0, 26.0), u(16.0, 24.0)),
                             ContourPerturbation.sample(rng, 0.08))
    return HeartShape(
        endo_radius_mm=endo_radius,
        wall_mm=u(6.0, 12.0),
        endo_length_mm=endo_length,
        apex_wall_mm=u(5.0, 10.0),
        endo_exponent=endo_exponent,
        epi_exponent=max(1.4, endo_exponent + u(-0.3, 0.3)),
        mid_bulge=u(-0.05, 0.15),
        axis_bend_mm=u(0.0, 10.0),
        axis_bend_angle_rad=u(0.0, 2 * np.pi),
        base_tilt_mm=u(0.0, 8.0),
        base_tilt_angle_rad=u(0.0, 2 * np.pi),
        endo_perturbation=endo_perturbation,
        epi_perturbation=epi_perturbation,
        rv_length_fraction=u(0.55, 0.85),
        rv_width_mm=u(15.0, 32.0),
        rv_center_fraction=u(0.35, 0.65),
        rv_wrap=u(1.0, 1.4),
        rv_offset_mm=u(-8.0, 8.0),
        rv_wall_mm=u(2.0, 4.0),
        rv_perturbation=rv_perturbation,
        fat_mm=u(0.5, 5.0),
        fat_perturbation=fat_perturbation,
        papillary_radius_mm=u(2.5, 4.5),
        papillary_angles_rad=(papillary_base_angle - papillary_spread / 2, papillary_base_angle + papillary_spread / 2),
        papillary_radial_fraction=u(0.55, 0.8),
        papillary_height_range=(u(0.1, 0.3), u(0.55, 0.75)),
        left_atrium=left_atrium,
        right_atrium=right_atrium,
    )


def rotation_about_axis(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """3x3 rotation by ``angle_rad`` about the unit vector ``axis`` (Rodrigues)."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * cross + (1 - np.cos(angle_rad)) * cross @ cross


def _random_perpendicular(rng: np.random.Generator, vector: np.ndarray) -> np.ndarray:
    helper = np.array([1.0, 0.0, 0.0]) if abs(vector[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    first = np.cross(vector, helper)
    first /= np.linalg.norm(first)
    second = np.cross(vector, first)
    angle = rng.uniform(0.0, 2 * np.pi)
    return np.cos(angle) * first + np.sin(angle) * second


def _unit_projection(vector: np.ndarray, normal: np.ndarray) -> np.ndarray:
    projected = np.asarray(vector, dtype=np.float64) - np.dot(vector, normal) * normal
    return projected / np.linalg.norm(projected)


def sample_heart_rotation(rng: np.random.Generator) -> np.ndarray:
    nominal = np.asarray(NOMINAL_LONG_AXIS_LPS) / np.linalg.norm(NOMINAL_LONG_AXIS_LPS)
    long_axis = rotation_about_axis(_random_perpendicular(rng, nominal), np.deg2rad(rng.uniform(0.0, 15.0))) @ nominal
    towards_rv = _unit_projection(np.asarray(RIGHT_ANTERIOR_LPS), long_axis)
    towards_rv = rotation_about_axis(long_axis, np.deg2rad(rng.uniform(-15.0, 15.0))) @ towards_rv
    return np.stack([towards_rv, np.cross(long_axis, towards_rv), long_axis], axis=1)


def sample_body(rng: np.random.Generator, perturbation_scale: float) -> BodyLayout:
    u = rng.uniform
    # the heart (world origin) lies left of and anterior to the torso centre
    cx, cy = -u(10.0, 30.0), u(20.0, 40.0)
    ax, ay = u(135.0, 175.0), u(95.0, 125.0)
    torso_perturbation = ContourPerturbation.sample(rng, 0.04 * perturbation_scale)
    fat = u(5.0, 22.0)
    # the lungs fill the chest on both sides and border the heart (painted over them)
    right_lung = Ellipsoid((cx - u(60.0, 80.0), cy + u(-10.0, 15.0), u(10.0, 40.0)),
                           (u(55.0, 70.0), u(70.0, 90.0), u(110.0, 140.0)),
                           ContourPerturbation.sample(rng, 0.08 * perturbation_scale))
    left_lung = Ellipsoid((cx + u(70.0, 90.0), cy + u(-10.0, 15.0), u(10.0, 40.0)),
                          (u(50.0, 65.0), u(65.0, 85.0), u(100.0, 130.0)),
                          ContourPerturbation.sample(rng, 0.08 * perturbation_scale))
    # the liver dome lies below the heart, reaching up to about the level of the apex
    liver = Ellipsoid((cx - u(30.0, 60.0), cy + u(0.0, 25.0), -u(110.0, 130.0)), (u(80.0, 110.0), u(65.0, 85.0), u(60.0, 80.0)),
                      ContourPerturbation.sample(rng, 0.06 * perturbation_scale))
    spine_radius = u(14.0, 19.0)
    spine_center = (cx + u(-5.0, 5.0), cy + ay - u(40.0, 55.0))
    canal_radius = u(6.0, 8.0)
    canal_center = (spine_center[0], spine_center[1] + spine_radius + canal_radius + u(1.0, 4.0))
    aorta_radius = u(9.0, 13.0)
    aorta_center = (spine_center[0] + u(15.0, 30.0), spine_center[1] - spine_radius - u(5.0, 15.0))
    return BodyLayout((cx, cy), (ax, ay), torso_perturbation, fat, (right_lung, left_lung), liver,
                      spine_center, spine_radius, canal_center, canal_radius, aorta_center, aorta_radius)


def sample_acquisition(rng: np.random.Generator, config: PhantomConfig, heart: HeartShape,
                        heart_rotation: np.ndarray) -> Acquisition:
    u = rng.uniform
    long_axis = heart_rotation[:, 2]
    # slice normal: the long axis tilted by a planning error
    tilt = np.deg2rad(u(0.0, config.max_long_axis_tilt_deg))
    normal = rotation_about_axis(_random_perpendicular(rng, long_axis), tilt) @ long_axis
    # in-plane axes: x towards the RV, then turned so that the RV lies up and to the right of the LV in the
    # array (anterior up), plus a random in-plane rotation; proper rotation, slices ordered base to apex
    column_axis = _unit_projection(heart_rotation[:, 0], normal)
    row_axis = np.cross(normal, column_axis)
    in_plane_deg = NOMINAL_IN_PLANE_ROTATION_DEG + u(-1.0, 1.0) * config.max_in_plane_rotation_deg
    direction = rotation_about_axis(normal, np.deg2rad(in_plane_deg)) @ np.stack([column_axis, row_axis, normal], axis=1)

    size_low, size_high = config.in_plane_size_range_px
    size_x, size_y = (int(rng.integers(size_low, size_high + 1)) for _ in range(2))
    spacing_in_plane = u(*config.in_plane_spacing_mm_range)

    # choose the number of slices first, then the spacing that covers base to apex, within the ranges
    n_low, n_high = config.num_slices_range
    spacing_low, spacing_high = config.slice_spacing_mm_range
    above_base_fraction, beyond_apex_fraction = u(0.0, 0.5), u(-0.2, 0.6)
    wanted_slices = int(rng.integers(n_low, n_high + 1))
    coverage_mm = heart.epi_length_mm
    denominator = max(wanted_slices - 1 - above_base_fraction - beyond_apex_fraction, 0.5)
    slice_spacing = float(np.clip(coverage_mm / denominator, spacing_low, spacing_high))
    num_slices = int(np.clip(round(coverage_mm / slice_spacing + above_base_fraction + beyond_apex_fraction) + 1, n_low, n_high))
    thickness = slice_spacing * u(*config.slice_thickness_fraction_range)

    heart_complex_center = heart_rotation[:, 0] * u(8.0, 15.0)  # between LV and RV
    shift = config.max_in_plane_translation_mm
    stack_center = heart_complex_center + direction[:, 0] * u(-shift, shift) + direction[:, 1] * u(-shift, shift)
    first_slice_offset = -above_base_fraction * slice_spacing
    origin = (stack_center + normal * first_slice_offset
              - direction[:, 0] * spacing_in_plane * (size_x - 1) / 2 - direction[:, 1] * spacing_in_plane * (size_y - 1) / 2)
    # where the patient lies in scanner coordinates: the hearts of two subjects do not coincide in physical space
    patient_offset = rng.uniform(-1.0, 1.0, 3) * config.max_patient_offset_mm
    return Acquisition((num_slices, size_y, size_x), (spacing_in_plane, spacing_in_plane, slice_spacing), thickness,
                       direction, origin, patient_offset)


def sample_appearance(rng: np.random.Generator, config: PhantomConfig) -> Appearance:
    intensity = np.zeros(len(Tissue), dtype=np.float32)
    for tissue in Tissue:
        intensity[tissue] = rng.uniform(*TISSUE_INTENSITY_RANGES[tissue])
    scale = rng.uniform(*config.intensity_scale_range)
    noise = rng.uniform(*config.noise_fraction_range)
    bias = rng.standard_normal(9) * np.array([1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    amplitude = rng.uniform(0.3, 1.0) * config.max_bias_log_amplitude
    return Appearance(intensity, scale, noise, bias, amplitude)
