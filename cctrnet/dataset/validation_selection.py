"""Which of a run's labeled cases are held out for validation (when the dataset has no ``imagesVal``).

Rule (``--val-fraction F``): the units are the labeled cases, or their patients when dataset.json declares
``"patients"``; sorted by id, ``K = round(F * units)`` of them (at least 1, at most units - 1, so at least one
unit still trains) are drawn without replacement with ``numpy.random.default_rng([seed, VALIDATION_STREAM])``,
a stream apart from the labeled-case draw's ``default_rng(seed)``. Every case of a drawn patient is held out.
The same (labeled cases, F, seed, patients) always gives the same split. It needs at least
``MIN_LABELED_UNITS_FOR_HOLD_OUT`` (3) units: with 1 or 2 labeled cases a held-out case would take half or
all of the training labels.

Named cases (``--val-cases``): case ids or patient ids; a case is widened to its whole patient, so no patient
is both trained and validated on.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

MIN_LABELED_UNITS_FOR_HOLD_OUT = 3
VALIDATION_STREAM = 1  # second word of the seed: the held-out draw never repeats the labeled draw


def _units(labeled_cases: Sequence[str], patient_of_case: Mapping[str, str] | None) -> dict[str, list[str]]:
    """Unit id (patient, or the case itself) -> its labeled cases, sorted."""
    units: dict[str, list[str]] = {}
    for case in sorted(labeled_cases):
        unit = patient_of_case.get(case, case) if patient_of_case is not None else case
        units.setdefault(unit, []).append(case)
    return units


def select_validation_cases(labeled_cases: Sequence[str], fraction: float, seed: int = 0,
                            patient_of_case: Mapping[str, str] | None = None) -> list[str]:
    """The held-out case ids (sorted) for ``--val-fraction fraction``; ValueError when the run cannot spare any."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"--val-fraction must lie between 0 and 1 (exclusive), got {fraction}")
    units = _units(labeled_cases, patient_of_case)
    kind = "patients" if patient_of_case is not None else "cases"
    if len(units) < MIN_LABELED_UNITS_FOR_HOLD_OUT:
        raise ValueError(f"--val-fraction {fraction}: the run has {len(units)} labeled {kind}; a held-out validation "
                         f"set needs at least {MIN_LABELED_UNITS_FOR_HOLD_OUT} (some to validate, the rest to train)")
    count = min(max(1, round(fraction * len(units))), len(units) - 1)
    ids = sorted(units)
    rng = np.random.default_rng([seed, VALIDATION_STREAM])
    chosen = {ids[i] for i in rng.choice(len(ids), size=count, replace=False)}
    return sorted(case for unit in chosen for case in units[unit])


def named_validation_cases(labeled_cases: Sequence[str], names: Sequence[str],
                           patient_of_case: Mapping[str, str] | None = None) -> list[str]:
    """The held-out case ids (sorted) for ``--val-cases names`` (case or patient ids, widened to whole patients)."""
    units = _units(labeled_cases, patient_of_case)
    unit_of = {case: unit for unit, cases in units.items() for case in cases}
    unknown = sorted(n for n in set(names) if n not in units and n not in unit_of)
    if unknown:
        listing = ", ".join(sorted(units) if patient_of_case is not None else sorted(unit_of))
        raise ValueError(f"--val-cases {', '.join(unknown)}: not labeled cases (or patients) of this run; its labeled "
                         f"{'patients' if patient_of_case is not None else 'cases'}: {listing}")
    chosen = {unit_of.get(n, n) for n in names}
    if len(chosen) >= len(units):
        raise ValueError(f"--val-cases would hold out every labeled case of the run ({', '.join(sorted(unit_of))}); "
                         "keep at least one to train on")
    return sorted(case for unit in chosen for case in units[unit])
