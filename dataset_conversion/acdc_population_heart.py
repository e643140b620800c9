"""End-diastolic and end-systolic hearts of one ACDC-like patient, built to the patient's target volumes.

The cardiac phantom draws a heart (``phantom_anatomy.sample_heart``: shape, contour irregularity, papillary
muscles, atria); this module rescales it so that its painted label volumes meet the targets:

- ED: the LV cavity radius gives the LV EDV, the RV crescent's width the RV EDV; walls are the group's
  (HCM: a thicker septum, MINF: a thin sector); trabeculae line both cavities.
- ES, from ED: the long axis shortens by ``LONG_AXIS_SHORTENING_PER_EF`` times the EF, the LV cavity shrinks
  to EDV x (1 - EF) (a MINF sector stays where it was: akinetic), the walls thicken so that the myocardial
  volume is that of ED (myocardium is incompressible), and the RV crescent narrows to RV EDV x (1 - RVEF).

Volumes are measured by ``phantom_render.ventricle_label_volumes_ml`` on a grid of ``SOLVER_SPACING_MM``.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np

from dataset_conversion.acdc_population_groups import CardiacTargets
from dataset_conversion.phantom_anatomy import HeartShape
from dataset_conversion.phantom_render import ventricle_label_volumes_ml

SOLVER_SPACING_MM = 3.0  # volumes within about 0.5 % of a 1 mm grid, a few hundredths of a second each
# relative long-axis shortening per unit of EF: 15 % at EF 60 %, the normal mitral-annular excursion of
# ~13-15 mm on a ~90 mm ventricle; proportional to EF (a modelling choice, not a published law)
LONG_AXIS_SHORTENING_PER_EF = 0.25
# cavity length grows with the fifth root of the volume, the radius with the rest: dilated ventricles become
# more spherical, as they do clinically
LENGTH_VOLUME_EXPONENT = 0.2
REFERENCE_LV_EDV_ML = 120.0
LV_LENGTH_RANGE_MM = (55.0, 125.0)
NORMAL_WALL_MM = 9.0  # the phantom's mean base wall; its apex wall is scaled by wall / NORMAL_WALL_MM
TRABECULATION_DEPTH_MM = (1.5, 3.5)
TRABECULATION_STRANDS = (10, 18)
RV_WIDTH_LIMIT_MM = 120.0


def heart_volumes(heart: HeartShape, include_rv: bool = True, spacing_mm: float = SOLVER_SPACING_MM) -> dict[str, float]:
    """Label volumes (ml) of a heart: RV (when included), MYO, LV."""
    return ventricle_label_volumes_ml(heart, spacing_mm, include_rv)


def solve_increasing(function: Callable[[float], float], target: float, first_guess: float, second_guess: float,
                     low: float, high: float, relative_tolerance: float = 0.005, max_evaluations: int = 12) -> float:
    """``x`` in [low, high] where the increasing ``function`` meets ``target``: secant steps from two guesses
    near the answer (far bounds would paint needlessly large hearts), bisection of the bracket found so far
    whenever a secant step leaves it; the best point seen when the budget runs out."""
    below, above = low, high
    best_x, best_error = first_guess, float("inf")

    def error_at(x: float) -> float:
        nonlocal below, above, best_x, best_error
        error = function(x) - target
        below, above = (max(below, x), above) if error < 0 else (below, min(above, x))
        if abs(error) < best_error:
            best_x, best_error = x, abs(error)
        return error

    x_old, f_old = first_guess, error_at(first_guess)
    x, f = second_guess, error_at(second_guess)
    for _ in range(max_evaluations - 2):
        if best_error <= relative_tolerance * abs(target):
            break
        step = x - f * (x - x_old) / (f - f_old) if f != f_old else below - 1.0
        if not below < step < above:
            step = 0.5 * (below + above)
        x_old, f_old, x = x, f, step
        f = error_at(x)
    return best_x


def _scale_lv_cavity(heart: HeartShape, target_ml: float, spacing_mm: float,
                     keep_infarct_radius_mm: float | None = None) -> HeartShape:
    """The LV cavity volume grows with the square of its radius (papillary muscles included), so a few
    multiplicative steps meet the target; a MINF sector keeps ``keep_infarct_radius_mm`` (akinetic)."""
    for _ in range(2):
        if keep_infarct_radius_mm is not None and heart.infarct_wall_mm > 0:
            heart = replace(heart, infarct_endo_scale=keep_infarct_radius_mm / heart.endo_radius_mm)
        volume = heart_volumes(heart, False, spacing_mm)["LV"]
        heart = replace(heart, endo_radius_mm=heart.endo_radius_mm * float(np.sqrt(target_ml / volume)))
    return heart


def _fit_rv(heart: HeartShape, target_ml: float, widest_mm: float, spacing_mm: float) -> HeartShape:
    guess = min(heart.rv_width_mm, widest_mm)
    width = solve_increasing(lambda w: heart_volumes(replace(heart, rv_width_mm=w), True, spacing_mm)["RV"], target_ml,
                             guess, 0.8 * guess, 0.5, widest_mm)
    return replace(heart, rv_width_mm=width)


def end_diastolic_heart(base: HeartShape, targets: CardiacTargets, rng: np.random.Generator,
                        spacing_mm: float = SOLVER_SPACING_MM) -> HeartShape:
    """The phantom heart ``base`` rescaled to the patient's ED targets (draws from ``rng`` in a fixed order)."""
    u = rng.uniform
    length = float(np.clip(base.endo_length_mm * (targets.lv_edv_ml / REFERENCE_LV_EDV_ML) ** LENGTH_VOLUME_EXPONENT,
                           *LV_LENGTH_RANGE_MM))
    wall = targets.lv_wall_ed_mm
    septal_half_width, trabeculation_depth = u(0.8, 1.3), u(*TRABECULATION_DEPTH_MM)
    strands = int(rng.integers(TRABECULATION_STRANDS[0], TRABECULATION_STRANDS[1] + 1))
    infarct_angle, infarct_low, infarct_extent = u(0.0, 2 * np.pi), u(0.05, 0.5), u(0.35, 0.7)
    heart = replace(
        base, endo_length_mm=length, wall_mm=wall, apex_wall_mm=max(3.0, base.apex_wall_mm * wall / NORMAL_WALL_MM),
        septal_extra_wall_mm=max(0.0, targets.max_wall_ed_mm - wall), septal_half_width_rad=septal_half_width,
        trabeculation_depth_mm=trabeculation_depth, trabeculation_strands=strands,
        rv_length_fraction=targets.rv_length_fraction,
        # a larger RV wraps further around the LV
        rv_wrap=float(np.clip(base.rv_wrap * (targets.rv_edv_ml / 160.0) ** 0.25, 0.9, 1.8)))
    if targets.infarct_wall_ed_mm is not None:
        heart = replace(heart, infarct_wall_mm=targets.infarct_wall_ed_mm, infarct_angle_rad=infarct_angle,
                        infarct_half_width_rad=float(np.deg2rad(targets.infarct_half_width_deg)),
                        infarct_height_range=(infarct_low, min(1.0, infarct_low + infarct_extent)))
    heart = _scale_lv_cavity(heart, targets.lv_edv_ml, spacing_mm)
    return _fit_rv(heart, targets.rv_edv_ml, RV_WIDTH_LIMIT_MM, spacing_mm)


def end_systolic_heart(ed: HeartShape, targets: CardiacTargets, spacing_mm: float = SOLVER_SPACING_MM) -> HeartShape:
    """The ES heart of the same patient: no random draw, everything follows from ED and the ejection fractions."""
    myocardium_ml = heart_volumes(ed, False, spacing_mm)["MYO"]
    es = replace(ed, endo_length_mm=ed.endo_length_mm * (1.0 - LONG_AXIS_SHORTENING_PER_EF * targets.lv_ef))
    es = _scale_lv_cavity(es, targets.lv_esv_ml, spacing_mm, keep_infarct_radius_mm=ed.endo_radius_mm)

    def thickened(factor: float) -> HeartShape:  # the infarcted sector does not thicken
        return replace(es, wall_mm=ed.wall_mm * factor, apex_wall_mm=ed.apex_wall_mm * factor,
                       septal_extra_wall_mm=ed.septal_extra_wall_mm * factor)

    es = thickened(solve_increasing(lambda f: heart_volumes(thickened(f), False, spacing_mm)["MYO"], myocardium_ml, 1.0, 1.3, 0.6, 4.0))
    return _contract_rv(es, ed, targets.rv_esv_ml, spacing_mm)


def _contract_rv(es: HeartShape, ed: HeartShape, target_ml: float, spacing_mm: float) -> HeartShape:
    """The RV of ``es`` at ``target_ml``: one factor k scales the ED crescent's width and, below 1, draws its
    wrap towards the narrowest ellipse that still touches the LV (volume 0 at k = 0). k may exceed 1: the
    crescent is drawn around the LV, which shrinks at ES, so a low RVEF can need a wider crescent."""
    narrow = float(np.sqrt(1.0 - ed.rv_center_fraction ** 2))

    def contracted(k: float) -> HeartShape:
        return replace(es, rv_width_mm=ed.rv_width_mm * k, rv_wrap=narrow + (ed.rv_wrap - narrow) * min(1.0, k))

    k = solve_increasing(lambda k: heart_volumes(contracted(k), True, spacing_mm)["RV"], target_ml, 0.7, 0.5,
                         0.0, RV_WIDTH_LIMIT_MM / ed.rv_width_mm)
    return contracted(k)
