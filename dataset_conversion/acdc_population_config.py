"""Settings of the ACDC-like population generator: acquisition, scanners, coverage; and one patient's scanner.

The anatomy ranges per group are in ``acdc_population_groups``; this file holds how the patients are imaged.
ACDC itself ([ACDC] Bernard et al. 2018, section II-B): two scanners, 1.5 T and 3.0 T, SSFP short-axis cine,
slice thickness 5-8 mm with gaps up to 10 mm, 1.37-1.68 mm pixels; the task widens the pixels to 1.3-1.9 mm.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dataset_conversion.acdc_appearance_v2_config import AppearanceV2Config
from dataset_conversion.generator_config import GeneratorConfig, Range
from dataset_conversion.phantom_config import PhantomConfig

APPEARANCE_VERSIONS = (1, 2)


def _default_acquisition() -> PhantomConfig:
    return PhantomConfig(in_plane_size_range_px=(160, 240), in_plane_spacing_mm_range=(1.3, 1.9),
                         num_slices_range=(8, 20), slice_spacing_mm_range=(5.0, 10.0))


@dataclass(frozen=True)
class AcdcPopulationConfig(GeneratorConfig):
    """How every patient is imaged; each patient draws one scanner and keeps it for both frames.

    ``acquisition`` gives the grid (160-240 px of 1.3-1.9 mm: a 210-455 mm field of view; 8-16 slices 5-10 mm
    apart, thickness 0.8-1.0 x the spacing), pose and field-of-view ranges of the cardiac phantom; its noise,
    bias and texture settings are replaced per patient by the scanner's below.
    """

    acquisition: PhantomConfig = field(default_factory=_default_acquisition)
    # ACDC used a 1.5 T and a 3.0 T scanner; the share of each is not published, so half and half
    fraction_3t: float = 0.5
    # Rician noise sd relative to blood: SNR grows roughly linearly with field strength (about 2x at 3 T)
    noise_fraction_1p5t: Range = (0.035, 0.07)
    noise_fraction_3t: Range = (0.015, 0.04)
    # largest |log| of the bias field: B1 inhomogeneity is larger at 3 T (x0.64..x1.57 at 0.45)
    max_bias_log_1p5t: float = 0.2
    max_bias_log_3t: float = 0.45
    # myocardium and skeletal muscle relative to blood at 3 T (longer T1 lowers the SSFP blood-tissue contrast)
    tissue_brightening_3t: Range = (1.05, 1.3)
    texture_amplitude_range: Range = (0.04, 0.10)
    texture_length_mm_range: Range = (8.0, 20.0)
    # incomplete coverage: the stack misses 1..max basal or apical slices with these probabilities
    missing_base_probability: float = 0.2
    missing_apex_probability: float = 0.3
    max_missing_slices: int = 2
    min_slices_kept: int = 5
    # grid on which the heart's volumes are measured while it is fitted to its targets (3 mm: within ~0.5 %
    # of a 1 mm grid)
    solver_spacing_mm: float = 3.0
    # 1: one tissue-intensity model for all (the version every documented result so far used); 2: adds per-patient
    # contrast, coil shading, 3 T bands and breath-hold misregistration (``appearance_v2``)
    appearance_version: int = 1
    appearance_v2: AppearanceV2Config = field(default_factory=AppearanceV2Config)

    def __post_init__(self) -> None:
        self.check_ranges(("noise_fraction_1p5t", "noise_fraction_3t", "tissue_brightening_3t",
                           "texture_amplitude_range", "texture_length_mm_range"))
        self.check_non_negative(("max_bias_log_1p5t", "max_bias_log_3t", "max_missing_slices"))
        if self.solver_spacing_mm <= 0:
            raise ValueError(f"AcdcPopulationConfig.solver_spacing_mm must be > 0, got {self.solver_spacing_mm}")
        if self.appearance_version not in APPEARANCE_VERSIONS:
            raise ValueError(f"AcdcPopulationConfig.appearance_version must be one of {APPEARANCE_VERSIONS}, got "
                             f"{self.appearance_version!r}")
        for name in ("fraction_3t", "missing_base_probability", "missing_apex_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"AcdcPopulationConfig.{name} must be in [0, 1], got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        """All settings; version 2's only when it is the one used."""
        content = {key: value for key, value in super().to_dict().items() if key != "appearance_v2"}
        if self.appearance_version == 2:
            content["appearance_v2"] = self.appearance_v2.to_dict()
        return content

    @classmethod
    def tiny(cls, **overrides: Any) -> "AcdcPopulationConfig":
        """80x80 px of 2.4-2.6 mm, 6-9 slices 10-14 mm apart, one sample through the slice, volumes fitted on
        a 4.5 mm grid (about 1-2 % off): for tests."""
        settings: dict[str, Any] = dict(solver_spacing_mm=4.5, acquisition=PhantomConfig(
            in_plane_size_range_px=(80, 80), in_plane_spacing_mm_range=(2.4, 2.6), num_slices_range=(6, 9),
            slice_spacing_mm_range=(10.0, 14.0), slice_profile_samples=1, max_in_plane_translation_mm=5.0))
        settings.update(overrides)
        return cls(**settings)


@dataclass(frozen=True)
class Scanner:
    """One patient's scanner and acquisition quirks, the same for its ED and ES frames."""

    field_strength_t: float
    noise_fraction: float
    max_bias_log_amplitude: float
    tissue_brightening: float
    texture_amplitude: float
    texture_length_mm: float
    missing_base_slices: int
    missing_apex_slices: int

    def phantom_config(self, config: AcdcPopulationConfig) -> PhantomConfig:
        """The phantom settings this scanner renders with."""
        return config.acquisition.with_changes(
            noise_fraction_range=(self.noise_fraction, self.noise_fraction),
            max_bias_log_amplitude=self.max_bias_log_amplitude, texture_amplitude=self.texture_amplitude,
            texture_length_mm=self.texture_length_mm)

    def to_dict(self) -> dict[str, Any]:
        return {key: (round(value, 4) if isinstance(value, float) else value) for key, value in vars(self).items()}


def sample_scanner(rng: np.random.Generator, config: AcdcPopulationConfig) -> Scanner:
    """One patient's scanner (every draw from ``rng``, in a fixed order)."""
    u = rng.uniform
    is_3t = u() < config.fraction_3t
    missing = []
    for probability in (config.missing_base_probability, config.missing_apex_probability):
        hit = u() < probability
        count = int(rng.integers(1, config.max_missing_slices + 1)) if config.max_missing_slices else 0
        missing.append(count if hit else 0)
    return Scanner(
        field_strength_t=3.0 if is_3t else 1.5,
        noise_fraction=u(*(config.noise_fraction_3t if is_3t else config.noise_fraction_1p5t)),
        max_bias_log_amplitude=config.max_bias_log_3t if is_3t else config.max_bias_log_1p5t,
        tissue_brightening=u(*config.tissue_brightening_3t) if is_3t else 1.0,
        texture_amplitude=u(*config.texture_amplitude_range),
        texture_length_mm=u(*config.texture_length_mm_range),
        missing_base_slices=missing[0], missing_apex_slices=missing[1])
