"""Settings of appearance model version 2 of the ACDC-like population, with the publications they come from.

Version 2 adds to version 1 (one tissue-intensity model for every patient) what varies between real cine SSFP
scans: the tissue contrast (relaxation times, flip angle and transmit field per patient and field strength), the
shading of the surface receive coils, the dark off-resonance bands of bSSFP at 3 T, and slices misregistered by
inconsistent breath-holds. Every range was fixed from the sources below or from physics before any method ran on
version 2; a number without a source is marked "modelling choice" (documentation/phantom.md has the table).

Sources:
- [St05] Stanisz et al., "T1, T2 relaxation and magnetization transfer in tissue at 3T", Magn Reson Med 54:507,
  2005 (T1 and T2 of blood, heart, skeletal muscle and liver at 1.5 T and 3 T, one method for all; the means
  used here were checked against a second tabulation of that paper, the paper itself was not at hand).
- [G19] Granitz et al., "Comparison of native myocardial T1 and T2 mapping at 1.5T and 3T in healthy volunteers",
  Wien Klin Wochenschr 131:143, 2019, doi:10.1007/s00508-018-1411-3 (60 volunteers: T1 995.8 +- 30.9 / 1183.8 +-
  37.5 ms, T2 55.8 +- 2.8 / 51.6 +- 3.0 ms at 1.5 / 3 T: between-subject spread 3 % (T1) and 5-6 % (T2)).
- [Li17] "Fast measurement of blood T1 in the human carotid artery at 3T", Magn Reson Med 2017, PMC5250597
  (arterial blood T1 1785 +- 55 ms in men, 1908 +- 77 ms in women: 3-4 %).
- [SE14] Srinivasan, Ennis et al., "Optimal flip angle for high contrast balanced SSFP cardiac cine imaging",
  Magn Reson Med, 2014 (the stationary-tissue optimum is 54 deg at 1.5 T; in vivo blood-myocardium CNR rises up
  to ~105 deg in short axis, so the highest angle SAR allows is used).
- [OS15] doi:10.1186/s12968-015-0144-y, JCMR 2015, Table 1 (a 1.5 T clinical cine SSFP protocol: TR 3.1-3.3 ms,
  flip angle 60 deg).
- [Kr13] "Evaluation of a subject specific dual-transmit approach for improving B1 field homogeneity in
  cardiovascular magnetic resonance at 3T", JCMR 15:68, 2013, doi:10.1186/1532-429X-15-68 (mean flip angle over
  the heart 81.2 +- 13.3 % of the prescribed one without RF shimming, 37 subjects).
- [Ke13] Kellman et al., "Influence of off-resonance in myocardial T1-mapping using SSFP based MOLLI method", JCMR
  15:63, 2013 (off-resonance across the heart after local shimming: 61.8 +- 15.5 Hz at 1.5 T, 125.0 +- 40.6 Hz
  at 3 T, 18 subjects each).
- [Ng15] Nguyen et al., "High-field MR imaging in pediatric congenital heart disease: initial results", Pediatr
  Radiol 45:42, 2015 (dark-band artefacts in 83 of 86 cine series at 3 T, mostly mild).
- [Sl07] Slomka et al., J Magn Reson Imaging 25:965, 2007, doi:10.1002/jmri.20909 (displacement between
  breath-hold acquisitions 2.8 +- 1.8 mm, at most 14 mm, >= 5 mm in 15 of 20 studies).
- [HR76] Hoult and Richards, J Magn Reson 24:71, 1976 (reciprocity: receive sensitivity = the coil's field);
  [Ro90] Roemer et al., "The NMR phased array", Magn Reson Med 16:192, 1990 (root-sum-of-squares combination).
- [SL03] Scheffler and Lehnhardt, "Principles and applications of balanced SSFP techniques", Eur Radiol 13:2409,
  2003 (bSSFP signal and its bands at an off-resonance phase of +-pi per TR).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dataset_conversion.generator_config import GeneratorConfig, Range

EFFECTS = ("contrast", "coil_shading", "banding", "breath_hold")
# tissues whose bSSFP signal follows from their relaxation times ([St05] has these four)
RELAXATION_TISSUES = ("blood", "myocardium", "muscle", "liver")
SOURCES = ("St05", "G19", "Li17", "SE14", "OS15", "Kr13", "Ke13", "Ng15", "Sl07", "HR76", "Ro90", "SL03")


def _relaxation_1p5t_ms() -> dict[str, tuple[float, float]]:
    return {"blood": (1441.0, 290.0), "myocardium": (1030.0, 40.0), "muscle": (1008.0, 44.0), "liver": (576.0, 46.0)}


def _relaxation_3t_ms() -> dict[str, tuple[float, float]]:
    return {"blood": (1932.0, 275.0), "myocardium": (1471.0, 47.0), "muscle": (1412.0, 50.0), "liver": (812.0, 42.0)}


@dataclass(frozen=True)
class AppearanceV2Config(GeneratorConfig):
    """Ranges of appearance version 2 (uniform draws unless a comment says otherwise), one patient at a time.

    ``effects`` switches effects on (all by default); the draws happen whether an effect is on or not, so
    switching one off leaves the others' numbers unchanged.
    """

    effects: tuple[str, ...] = EFFECTS
    # --- 1. contrast: bSSFP steady state of each tissue from its relaxation times and the flip angle ---
    # (T1, T2) in ms per tissue [St05]
    relaxation_1p5t_ms: dict[str, tuple[float, float]] = field(default_factory=_relaxation_1p5t_ms)
    relaxation_3t_ms: dict[str, tuple[float, float]] = field(default_factory=_relaxation_3t_ms)
    # per patient and tissue, factors on T1 and T2: +-2 x the between-subject spread of 3 % (T1: [G19]
    # myocardium, [Li17] blood) and 5 % (T2: [G19] myocardium); the same spread for muscle, liver and blood T2
    # is a modelling choice
    t1_factor_range: Range = (0.94, 1.06)
    t2_factor_range: Range = (0.90, 1.10)
    # prescribed flip angle: 1.5 T around [SE14]'s optimum 54 deg and [OS15]'s 60 deg up to what SAR allows
    # (modelling choice); 3 T lower because SAR grows with B0^2 x flip^2 (the range is a modelling choice)
    flip_1p5t_deg: Range = (50.0, 80.0)
    flip_3t_deg: Range = (35.0, 55.0)
    # actual / prescribed flip angle over the heart: 3 T 81.2 +- 13.3 % [Kr13] (mean +- 1 SD); 1.5 T near
    # nominal (modelling choice)
    transmit_factor_1p5t: Range = (0.90, 1.00)
    transmit_factor_3t: Range = (0.68, 0.95)
    # repetition time: 1.5 T [OS15]; 3 T the same widened by 0.3 ms for longer SAR-limited pulses (modelling
    # choice)
    tr_1p5t_ms: Range = (3.1, 3.3)
    tr_3t_ms: Range = (3.1, 3.6)
    # --- 2. coil shading: an anterior and a posterior receive loop, root sum of squares [HR76, Ro90] ---
    # effective loop radius of each array, placement error along left-right and head-foot, the loop's distance
    # from the skin (housing, padding, table) and the fraction of the profile left after the vendor's
    # intensity normalisation (0: fully corrected, as version 1; 1: raw array image): modelling choices
    coil_radius_mm: Range = (50.0, 80.0)
    coil_placement_error_mm: float = 30.0
    coil_standoff_mm: Range = (10.0, 25.0)
    coil_residual_exponent: Range = (0.0, 1.0)
    # --- 3. off-resonance bands at 3 T ---
    # spread (max - min) of the B0 field over the heart: 125.0 +- 2 x 40.6 Hz [Ke13]; over a ball of this radius
    # around the ventricles' centre ("the heart", modelling choice); the field is linear plus a quadratic part of
    # relative weight up to 0.5 (modelling choice), so it keeps growing beyond the heart and bands fall in the
    # field of view [Ng15]; centre-frequency error of the scanner +- this (modelling choice). At 1.5 T the
    # spread of 61.8 +- 2 x 15.5 Hz [Ke13] plus that error stays below 1 / (2 TR) = 150 Hz, so no band reaches
    # the heart and none is drawn.
    off_resonance_spread_3t_hz: Range = (43.8, 206.2)
    off_resonance_heart_radius_mm: float = 50.0
    off_resonance_quadratic_weight: Range = (0.0, 0.5)
    centre_frequency_error_hz: float = 50.0
    # --- 4. breath-hold misregistration: one rigid in-plane displacement per breath-hold ---
    # shift per breath-hold: Gaussian, this SD per in-plane axis, so that two breath-holds differ by 2.8 mm on
    # average (sd x sqrt(pi)) [Sl07]; at most half of [Sl07]'s 14 mm from the reference pose, so no two differ by
    # more than 14 mm
    breath_hold_shift_sd_mm: float = 1.58
    max_breath_hold_shift_mm: float = 7.0
    # in-plane rotation per breath-hold and slices acquired per breath-hold: modelling choices
    max_breath_hold_rotation_deg: float = 2.0
    slices_per_breath_hold: tuple[int, int] = (1, 2)
    sources: tuple[str, ...] = SOURCES

    def __post_init__(self) -> None:
        unknown = sorted(set(self.effects) - set(EFFECTS))
        if unknown:
            raise ValueError(f"AppearanceV2Config.effects must be among {', '.join(EFFECTS)}, got {unknown}")
        for name in ("relaxation_1p5t_ms", "relaxation_3t_ms"):
            table = getattr(self, name)
            if sorted(table) != sorted(RELAXATION_TISSUES) or any(t1 <= 0 or t2 <= 0 for t1, t2 in table.values()):
                raise ValueError(f"AppearanceV2Config.{name} must give positive (T1, T2) in ms for "
                                 f"{', '.join(RELAXATION_TISSUES)}, got {table}")
        self.check_ranges(("t1_factor_range", "t2_factor_range", "flip_1p5t_deg", "flip_3t_deg",
                           "transmit_factor_1p5t", "transmit_factor_3t", "tr_1p5t_ms", "tr_3t_ms", "coil_radius_mm",
                           "coil_standoff_mm", "off_resonance_spread_3t_hz", "slices_per_breath_hold"))
        self.check_ranges(("coil_residual_exponent", "off_resonance_quadratic_weight"), low_may_be_zero=True)
        self.check_non_negative(("coil_placement_error_mm", "centre_frequency_error_hz", "breath_hold_shift_sd_mm",
                                 "max_breath_hold_shift_mm", "max_breath_hold_rotation_deg"))
        if self.off_resonance_heart_radius_mm <= 0:
            raise ValueError("AppearanceV2Config.off_resonance_heart_radius_mm must be > 0, got "
                             f"{self.off_resonance_heart_radius_mm}")

    def relaxation_ms(self, field_strength_t: float) -> dict[str, tuple[float, float]]:
        """(T1, T2) per tissue at 1.5 T or 3 T."""
        return self.relaxation_3t_ms if field_strength_t >= 2.0 else self.relaxation_1p5t_ms

    def to_dict(self) -> dict[str, Any]:
        content = super().to_dict()
        content["effects"], content["sources"] = list(self.effects), list(self.sources)
        return content
