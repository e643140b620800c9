"""Which training cases count as labeled in a run with ``--labeled N``.

Rule: among the cases that have a label file, sorted by case id, draw N without replacement with
``numpy.random.default_rng(seed)``; the result is returned sorted. The same (cases, N, seed) always
gives the same choice, and the choice for N is not required to contain the one for N-1.

When the dataset declares patients (``"patients"`` in dataset.json, ``cctrnet.dataset.patients``), N counts
patients instead: the same draw runs over the sorted ids of the patients that have a labeled case, and every
labeled case of a drawn patient is labeled (both frames of an ACDC patient, as in the semi-supervised
literature's protocol).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def select_labeled_cases(cases_with_labels: Sequence[str], num_labeled: int | None, seed: int = 0,
                         patient_of_case: Mapping[str, str] | None = None) -> list[str]:
    """The case ids whose labels a run may train on (all of them when ``num_labeled`` is None);
    ``num_labeled`` counts patients when ``patient_of_case`` (case id -> patient id) is given."""
    pool = sorted(cases_with_labels)
    if num_labeled is None:
        return pool
    if num_labeled < 1:
        raise ValueError(f"--labeled must be at least 1, got {num_labeled}")
    if patient_of_case is None:
        if num_labeled > len(pool):
            raise ValueError(f"--labeled {num_labeled} asks for more labeled cases than the {len(pool)} that have labels")
        rng = np.random.default_rng(seed)
        chosen = rng.choice(len(pool), size=num_labeled, replace=False)
        return sorted(pool[i] for i in chosen)
    orphans = [case for case in pool if case not in patient_of_case]
    if orphans:
        raise ValueError(f"dataset.json declares patients, but labeled case(s) {', '.join(orphans)} belong to none")
    patients = sorted({patient_of_case[case] for case in pool})
    if num_labeled > len(patients):
        raise ValueError(f"--labeled {num_labeled} asks for more labeled patients than the {len(patients)} that "
                         "have labeled cases (dataset.json declares patients, so --labeled counts patients)")
    rng = np.random.default_rng(seed)
    chosen = {patients[i] for i in rng.choice(len(patients), size=num_labeled, replace=False)}
    return [case for case in pool if patient_of_case[case] in chosen]


def describe_labeled_cases(cases: Sequence[str], patient_of_case: Mapping[str, str] | None = None) -> str:
    """``"2 patients = 4 cases: p1 (p1_ED, p1_ES), p2 (...)"``, or ``"3 cases: a, b, c"`` without patients."""
    if patient_of_case is None:
        return f"{len(cases)} case{'s' if len(cases) != 1 else ''}: {', '.join(cases)}"
    by_patient: dict[str, list[str]] = {}
    for case in sorted(cases):
        by_patient.setdefault(patient_of_case.get(case, case), []).append(case)
    listing = ", ".join(f"{patient} ({', '.join(members)})" for patient, members in sorted(by_patient.items()))
    return (f"{len(by_patient)} patient{'s' if len(by_patient) != 1 else ''} = {len(cases)} "
            f"case{'s' if len(cases) != 1 else ''}: {listing}")
