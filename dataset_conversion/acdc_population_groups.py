"""The five ACDC patient groups as ranges of cardiac measurements, with the publications they come from.

Every patient of the ACDC-like population draws its targets uniformly within its group's ranges
(``sample_targets``); ``acdc_population_heart`` then builds an end-diastolic and an end-systolic heart that
have these volumes. Nothing here was tuned to a segmentation result.

Sources (documentation/phantom.md has the table):
- [ACDC] Bernard et al., "Deep learning techniques for automatic MRI cardiac multi-structures segmentation
  and diagnosis: is the problem solved?", IEEE TMI 37(11), 2018, section II (group definitions: DCM LV EDV
  > 100 ml/m2 and LVEF < 40 %; HCM wall > 15 mm in diastole and normal EF; MINF LVEF < 40 % with abnormally
  contracting segments; ARV RV EDV > 110 ml/m2 (men) / > 100 ml/m2 (women) or RVEF < 40 %).
- [KB15] Kawel-Boehm et al., "Normal values for cardiovascular magnetic resonance in adults and children",
  JCMR 17:29, 2015 (SSFP normal ranges: LV EDV/BSA, LVEF, wall thickness, RV EDV/BSA, RVEF).
- [ESC14] Elliott et al., 2014 ESC guidelines on hypertrophic cardiomyopathy, Eur Heart J 35:2733 (wall
  thickness >= 15 mm in one or more segments).
- [S13] Shah et al., "Prevalence of regional myocardial thinning ... in CAD", JAMA 309:909, 2013 (chronic
  infarct thinning: end-diastolic wall thickness <= 5.5 mm).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dataset_conversion.generator_config import Range

# adult body-surface area (m2); indexed volumes times BSA give millilitres
BSA_RANGE_M2: Range = (1.6, 2.1)


@dataclass(frozen=True)
class GroupRanges:
    """Uniform sampling ranges of one group. Volumes are indexed to body-surface area (ml/m2), ejection
    fractions are fractions (0.55 = 55 %), wall thicknesses are end-diastolic, in mm."""

    name: str
    description: str
    lv_edv_ml_per_m2: Range
    lv_ef: Range
    lv_wall_ed_mm: Range  # wall of the unaffected (remote) myocardium
    rv_edv_ml_per_m2: Range
    rv_ef: Range
    max_wall_ed_mm: Range | None = None  # HCM: thickest (septal) segment
    infarct_wall_ed_mm: Range | None = None  # MINF: thinned, akinetic sector
    infarct_half_width_deg: Range = (30.0, 75.0)  # MINF: 1 to 2.5 of the 6 segments of a ring
    rv_length_fraction: Range = (0.55, 0.85)  # RV length / LV cavity length (the phantom's default)
    sources: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


GROUPS: dict[str, GroupRanges] = {
    "NOR": GroupRanges(
        "NOR", "normal subjects",
        lv_edv_ml_per_m2=(60.0, 100.0), lv_ef=(0.55, 0.75), lv_wall_ed_mm=(7.0, 11.0),
        rv_edv_ml_per_m2=(65.0, 105.0), rv_ef=(0.50, 0.70),
        sources="[KB15] normal ranges (mean +- 2 SD, rounded)"),
    "DCM": GroupRanges(
        "DCM", "dilated cardiomyopathy",
        lv_edv_ml_per_m2=(105.0, 170.0), lv_ef=(0.10, 0.38), lv_wall_ed_mm=(6.0, 10.0),
        rv_edv_ml_per_m2=(65.0, 120.0), rv_ef=(0.30, 0.60),
        sources="[ACDC] EDV > 100 ml/m2, EF < 40 %; wall normal to thin"),
    "HCM": GroupRanges(
        "HCM", "hypertrophic cardiomyopathy",
        lv_edv_ml_per_m2=(55.0, 95.0), lv_ef=(0.60, 0.80), lv_wall_ed_mm=(9.0, 13.0),
        rv_edv_ml_per_m2=(60.0, 100.0), rv_ef=(0.55, 0.75), max_wall_ed_mm=(16.0, 25.0),
        sources="[ACDC] wall > 15 mm in diastole, normal EF; [ESC14] >= 15 mm; cavity normal to small"),
    "MINF": GroupRanges(
        "MINF", "previous myocardial infarction",
        lv_edv_ml_per_m2=(85.0, 140.0), lv_ef=(0.15, 0.38), lv_wall_ed_mm=(7.0, 11.0),
        rv_edv_ml_per_m2=(60.0, 110.0), rv_ef=(0.40, 0.65), infarct_wall_ed_mm=(3.0, 5.5),
        sources="[ACDC] EF < 40 % with abnormally contracting segments; [S13] infarct wall <= 5.5 mm"),
    "ARV": GroupRanges(
        "ARV", "abnormal right ventricle",
        lv_edv_ml_per_m2=(55.0, 95.0), lv_ef=(0.50, 0.70), lv_wall_ed_mm=(6.0, 10.0),
        rv_edv_ml_per_m2=(115.0, 180.0), rv_ef=(0.15, 0.38), rv_length_fraction=(0.75, 0.92),
        sources="[ACDC] RV EDV > 110 ml/m2 and/or RVEF < 40 % (here both); LV [KB15] normal"),
}
GROUP_NAMES = tuple(GROUPS)


@dataclass(frozen=True)
class CardiacTargets:
    """What one patient's two frames must show: absolute volumes (ml), ejection fractions, walls (mm)."""

    group: str
    bsa_m2: float
    lv_edv_ml: float
    lv_ef: float
    lv_wall_ed_mm: float
    max_wall_ed_mm: float
    rv_edv_ml: float
    rv_ef: float
    rv_length_fraction: float
    infarct_wall_ed_mm: float | None
    infarct_half_width_deg: float | None

    @property
    def lv_esv_ml(self) -> float:
        return self.lv_edv_ml * (1.0 - self.lv_ef)

    @property
    def rv_esv_ml(self) -> float:
        return self.rv_edv_ml * (1.0 - self.rv_ef)

    def to_dict(self) -> dict[str, Any]:
        return {key: (round(value, 4) if isinstance(value, float) else value) for key, value in asdict(self).items()}


def sample_targets(rng: np.random.Generator, group: GroupRanges, bsa_range_m2: Range = BSA_RANGE_M2) -> CardiacTargets:
    """One patient's targets, uniform within the group's ranges (every draw from ``rng``, in a fixed order)."""
    u = rng.uniform
    bsa = u(*bsa_range_m2)
    wall = u(*group.lv_wall_ed_mm)
    max_wall = u(*group.max_wall_ed_mm) if group.max_wall_ed_mm is not None else wall
    infarct_wall = u(*group.infarct_wall_ed_mm) if group.infarct_wall_ed_mm is not None else None
    infarct_width = u(*group.infarct_half_width_deg) if group.infarct_wall_ed_mm is not None else None
    return CardiacTargets(
        group=group.name, bsa_m2=bsa, lv_edv_ml=u(*group.lv_edv_ml_per_m2) * bsa, lv_ef=u(*group.lv_ef),
        lv_wall_ed_mm=wall, max_wall_ed_mm=max_wall, rv_edv_ml=u(*group.rv_edv_ml_per_m2) * bsa,
        rv_ef=u(*group.rv_ef), rv_length_fraction=u(*group.rv_length_fraction),
        infarct_wall_ed_mm=infarct_wall, infarct_half_width_deg=infarct_width)
