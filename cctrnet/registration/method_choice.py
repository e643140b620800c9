"""``--registration auto``: affine or affine + deformable, chosen from the labeled cases alone.

With two or more labeled cases, every labeled case's label is predicted from each other labeled case by
registration only (ordered pairs q onto q'), once through the affine and once through the affine +
deformable transforms; the method with the higher mean Dice over those pairs is kept (ties: affine, the
simpler model). With one labeled case there is nothing to compare against, so the deformable stage is kept
unless more than ``auto_max_failed_fraction`` of its pairs failed their folding, inverse-consistency or
metric checks. Both numbers and the choice go to ``registration/<configuration>/registration_choice.json``
(one entry per labeled set) and into the registration report.

When dataset.json groups cases into patients, only pairs between different patients count: two frames of one
patient (ACDC's end-diastole and end-systole) register far better onto each other than onto anyone else, so
they say little about registering the unlabeled patients, and a labeled set of one patient takes the
one-labeled-case rule.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from cctrnet.registration import brs
from cctrnet.registration.pair_store import PairStore
from cctrnet.registration.report import class_dice
from cctrnet.registration.settings import RegistrationSettings
from cctrnet.registration.volumes import load_label
from cctrnet.utilities.file_io import load_json, save_json

CANDIDATES = ("affine", "affine_deformable")
CHOICE_FILE = "registration_choice.json"


@dataclass
class MethodChoice:
    """The chosen method and the evidence."""

    method: str
    labeled_cases: list[str]
    reason: str
    #: method -> {"mean": Dice, "per_class": {class: Dice}, "pairs": number of ordered pairs}
    leave_one_out_dice: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: method -> fraction of the run's pairs that failed
    failed_fraction: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        numbers = ", ".join(f"{m} {v['mean']:.3f}" for m, v in self.leave_one_out_dice.items() if v.get("mean") is not None)
        return f"registration auto: {self.method} ({self.reason}{'; leave-one-out Dice ' + numbers if numbers else ''})"


def leave_one_out_pairs(labeled: Sequence[str], patient_of: Mapping[str, str] | None = None
                        ) -> list[tuple[str, str]]:
    """Ordered (moving, fixed) pairs between distinct labeled cases, of different patients when ``patient_of``
    (case id -> patient id; a case it does not name is its own patient) is given."""
    return [(q, target) for target in sorted(labeled) for q in sorted(labeled)
            if q != target and _patient(q, patient_of) != _patient(target, patient_of)]


def labeled_patients(labeled: Sequence[str], patient_of: Mapping[str, str] | None = None) -> int:
    return len({_patient(c, patient_of) for c in labeled})


def _patient(case: str, patient_of: Mapping[str, str] | None) -> str:
    return (patient_of or {}).get(case, case)


def leave_one_out_dice(data_folder: Path, store: PairStore, labeled: Sequence[str],
                       patient_of: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Mean and per-class Dice of each labeled label carried onto every other labeled case (of another patient
    when ``patient_of`` is given; failed pairs: 0, and left out of ``mean_successful``)."""
    per_class: dict[int, list[float]] = {}
    means, successful = [], []
    for moving, fixed in leave_one_out_pairs(labeled, patient_of):
        truth, _ = load_label(data_folder, fixed)
        classes = [int(c) for c in np.unique(truth) if c > 0]
        if store.successful(moving, fixed):
            scores = class_dice(brs.registered_label(data_folder, store, fixed, moving), truth, classes)
        else:
            scores = {c: 0.0 for c in classes}  # a pair that failed gives the unlabeled case no label at all
        for value, score in scores.items():
            per_class.setdefault(value, []).append(score)
        if scores:
            means.append(float(np.mean(list(scores.values()))))
            if store.successful(moving, fixed):
                successful.append(means[-1])
    return {
        "mean": float(np.mean(means)) if means else None,
        "mean_successful": float(np.mean(successful)) if successful else None,  # the failed pairs left out
        "per_class": {str(c): float(np.mean(v)) for c, v in sorted(per_class.items())},
        "pairs": len(means),
    }


def failed_fraction(store: PairStore, pairs: Sequence[tuple[str, str]]) -> float:
    results = [store.load(m, f) for m, f in pairs]
    finished = [r for r in results if r is not None]
    return float(np.mean([not r.ok for r in finished])) if finished else 1.0


def choose(data_folder: Path, stores: dict[str, PairStore], labeled: Sequence[str], run_pairs: Sequence[tuple[str, str]],
           settings: RegistrationSettings, patient_of: Mapping[str, str] | None = None) -> MethodChoice:
    """The choice among ``CANDIDATES`` for one labeled set; every pair it reads must be computed already.
    ``patient_of``: case id -> patient id (dataset.json's patients), or None when cases are patients."""
    labeled = sorted(labeled)
    failures = {m: failed_fraction(stores[m], run_pairs) for m in CANDIDATES}
    one = "one labeled patient" if patient_of else "one labeled case"
    if labeled_patients(labeled, patient_of) >= 2:
        dice = {m: leave_one_out_dice(data_folder, stores[m], labeled, patient_of) for m in CANDIDATES}
        affine, deformable = (dice[m]["mean"] or 0.0 for m in CANDIDATES)
        method = "affine_deformable" if deformable > affine else "affine"
        between = "labeled pairs of different patients" if patient_of else "labeled pairs"
        reason = f"higher leave-one-out Dice over {dice['affine']['pairs']} {between}"
        return MethodChoice(method, labeled, reason, dice, failures)
    if failures["affine_deformable"] <= settings.auto_max_failed_fraction:
        reason = (f"{one}: deformable pairs pass their checks "
                  f"({100 * failures['affine_deformable']:.1f}% failed)")
        return MethodChoice("affine_deformable", labeled, reason, {}, failures)
    reason = (f"{one}: {100 * failures['affine_deformable']:.1f}% of the deformable pairs failed their "
              f"checks (limit {100 * settings.auto_max_failed_fraction:.0f}%)")
    return MethodChoice("affine", labeled, reason, {}, failures)


def choice_key(labeled: Sequence[str] | None) -> str:
    return "all labeled cases" if labeled is None else ",".join(sorted(labeled))


def save_choice(registration_root: Path, key: str, choice: MethodChoice) -> None:
    path = Path(registration_root) / CHOICE_FILE
    stored = load_json(path) if path.exists() else {"choices": {}}
    stored["choices"][key] = asdict(choice)
    save_json(stored, path)
    print(f"[cctrnet] {choice.describe()}", file=sys.stderr)


def load_choices(registration_root: Path) -> dict[str, Any]:
    path = Path(registration_root) / CHOICE_FILE
    return load_json(path)["choices"] if path.exists() else {}


def resolved_method(registration_root: Path, labeled: Sequence[str]) -> str | None:
    """The method ``auto`` chose for this labeled set, or None when it never ran for it."""
    choice = load_choices(registration_root).get(choice_key(labeled))
    return None if choice is None else choice["method"]
