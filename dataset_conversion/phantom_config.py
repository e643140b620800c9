"""Settings of the cardiac phantom generator: acquisition ranges and how strongly subjects vary."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dataset_conversion.generator_config import GeneratorConfig, Range


@dataclass(frozen=True)
class PhantomConfig(GeneratorConfig):
    """Ranges from which every subject draws its acquisition and appearance (uniformly).

    Defaults give ACDC-like short-axis cine MRI: 176-216 px at 1.3-1.8 mm in plane (a 230-390 mm
    field of view), 8-14 slices 5-10 mm apart. ``PhantomConfig.tiny()`` gives 64x64x6 volumes for tests.
    """

    in_plane_size_range_px: tuple[int, int] = (176, 216)
    in_plane_spacing_mm_range: Range = (1.3, 1.8)
    num_slices_range: tuple[int, int] = (8, 14)
    slice_spacing_mm_range: Range = (5.0, 10.0)
    # slice thickness as a fraction of the slice spacing (clinical stacks often leave a gap)
    slice_thickness_fraction_range: Range = (0.8, 1.0)
    # points sampled through the slice thickness and averaged: the through-plane partial-volume effect
    slice_profile_samples: int = 3
    # oblique short-axis direction matrix (True) or identity direction (False); the arrays are the same
    oblique_direction: bool = True
    # multiplies the amplitudes of the smooth random contour perturbations (0 gives smooth ellipsoids)
    shape_perturbation_scale: float = 1.0
    max_in_plane_rotation_deg: float = 25.0
    # angle between the slice normal and the heart's long axis (planning error)
    max_long_axis_tilt_deg: float = 10.0
    max_in_plane_translation_mm: float = 15.0
    # shift of the whole patient in scanner (physical) coordinates, per axis; with the identity direction the
    # grid is centred on the origin instead
    max_patient_offset_mm: float = 30.0
    intensity_scale_range: Range = (300.0, 1200.0)
    # standard deviation of the Rician noise relative to the blood-pool intensity
    noise_fraction_range: Range = (0.02, 0.06)
    # largest |log| of the multiplicative bias field over the field of view (0.3 -> x0.74..x1.35)
    max_bias_log_amplitude: float = 0.3
    # smooth multiplicative inhomogeneity of the tissues: relative amplitude and length scale
    texture_amplitude: float = 0.06
    texture_length_mm: float = 20.0
    # Gaussian blur in plane, in pixels, imitating the limited k-space resolution
    in_plane_blur_sigma_px: float = 0.5

    def __post_init__(self) -> None:
        self.check_ranges(("in_plane_size_range_px", "in_plane_spacing_mm_range", "num_slices_range",
                           "slice_spacing_mm_range", "slice_thickness_fraction_range", "intensity_scale_range",
                           "noise_fraction_range"))
        if self.in_plane_size_range_px[0] < 16:
            raise ValueError(f"PhantomConfig.in_plane_size_range_px must be at least 16 px, got {self.in_plane_size_range_px}")
        if self.num_slices_range[0] < 2:
            raise ValueError(f"PhantomConfig.num_slices_range must allow at least 2 slices, got {self.num_slices_range}")
        if self.slice_profile_samples < 1 or self.slice_profile_samples % 2 == 0:
            raise ValueError(f"PhantomConfig.slice_profile_samples must be odd and >= 1 (the middle sample "
                             f"gives the label), got {self.slice_profile_samples}")
        if self.slice_thickness_fraction_range[1] > 1.0:
            raise ValueError("PhantomConfig.slice_thickness_fraction_range must not exceed 1.0 (overlapping "
                             f"slices are not modelled), got {self.slice_thickness_fraction_range}")
        self.check_non_negative(("shape_perturbation_scale", "max_in_plane_rotation_deg", "max_long_axis_tilt_deg",
                                 "max_in_plane_translation_mm", "max_patient_offset_mm", "max_bias_log_amplitude",
                                 "in_plane_blur_sigma_px", "texture_amplitude", "texture_length_mm"))

    @classmethod
    def tiny(cls, **overrides: Any) -> "PhantomConfig":
        """64x64 px, 6 slices, coarse spacing: a whole chest in a few tens of milliseconds, for tests."""
        settings: dict[str, Any] = dict(
            in_plane_size_range_px=(64, 64),
            in_plane_spacing_mm_range=(3.0, 3.4),
            num_slices_range=(6, 6),
            slice_spacing_mm_range=(12.0, 20.0),
            slice_profile_samples=1,
        )
        settings.update(overrides)
        return cls(**settings)
