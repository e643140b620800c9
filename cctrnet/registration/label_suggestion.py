"""Which training volumes to label first: ``cctr_suggest_labels``, from the stored registrations alone.

``suggest_labels(folder, num_cases, labeled_cases)`` builds the dissimilarity of
:mod:`cctrnet.registration.dissimilarity` between every two preprocessed training volumes, runs the greedy
facility location of :mod:`cctrnet.registration.representatives` from the cases already labeled, and
returns the contract written to ``registration/<configuration>/suggested_labels.json`` (with the figure
``suggested_labels.png`` beside it): the suggested cases in rank order, each with its score and the cases it
represents. No label is read, so a dataset without any label works.

When the dataset declares patients (``"patients"`` in dataset.json, e.g. the two frames of an ACDC patient),
the suggestion chooses patients, as ``cctr_train --labeled N`` counts them: a patient represents a volume by its
nearest frame, ``num_cases`` counts patients, and ``ids`` lists every frame of the suggested patients (a user
labels a patient's frames together). A patient with an already labeled case is labeled, with those cases only.
``group_by_patient=False`` suggests single volumes anyway.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cctrnet.preprocessing.case_storage import list_preprocessed_cases
from cctrnet.registration.dissimilarity import (Dissimilarity, DissimilaritySettings, build_dissimilarity,
                                                missing_pairs)
from cctrnet.registration.pair_store import PairStore, registration_folder
from cctrnet.registration.representatives import (assign_to_nearest, classical_mds, coverage_cost,
                                                  greedy_facility_location)
from cctrnet.registration.settings import AFFINE_BASED_METHODS, RegistrationSettings
from cctrnet.utilities.file_io import save_json

SUGGESTION_FILE = "suggested_labels.json"
FIGURE_FILE = "suggested_labels.png"
#: ``--registration auto`` uses the first of these with stored pairs: the deformable records also measure
#: the size of the deformation and the local NCC that remains after it
AUTO_ORDER = ("affine_deformable", "affine", "affine_bspline")
#: decimals kept for the matrix in the JSON
MATRIX_DECIMALS = 4
#: a candidate whose coverage cost is at most this share above the chosen one's is listed as a near tie: the
#: order between them is within what registering the same volumes again can change (on the ACDC-like
#: population a new store moved the first choice's lead by 0.9 %, and the choice flipped; benchmarks.md)
NEAR_TIE_SHARE = 0.02


class SuggestionError(RuntimeError):
    """The suggestion cannot be made; the message names the file or folder and what to do."""


def resolve_method(preprocessed_dataset_folder: Path, configuration: str, method: str) -> str:
    """``auto``: the first method of :data:`AUTO_ORDER` with stored pairs (affine when none has any)."""
    if method != "auto":
        return method
    for candidate in AUTO_ORDER:
        pairs = registration_folder(preprocessed_dataset_folder, configuration, candidate) / "pairs"
        if pairs.is_dir() and any(pairs.glob("*.json")):
            return candidate
    return "affine"


def register_missing_pairs(preprocessed_dataset_folder: Path, configuration: str, method: str,
                           pairs: Sequence[tuple[str, str]], settings: RegistrationSettings) -> None:
    """Register ``pairs`` (moving, fixed) with the torch engine (progress bar on stderr)."""
    from cctrnet.registration.runner import compute_missing_pairs

    data_folder = Path(preprocessed_dataset_folder) / configuration
    store = PairStore(registration_folder(preprocessed_dataset_folder, configuration, method))
    engine = "simpleitk" if method == "affine_bspline" else "torch"
    affine_store = None
    if method in AFFINE_BASED_METHODS:
        affine_store = PairStore(registration_folder(preprocessed_dataset_folder, configuration, "affine"))
        compute_missing_pairs(data_folder, affine_store, pairs, "affine", "torch", settings)
    compute_missing_pairs(data_folder, store, pairs, method, engine, settings, affine_store=affine_store)


def suggest_labels(preprocessed_dataset_folder: Path, num_cases: int, labeled_cases: Sequence[str] = (),
                   configuration: str = "2d", method: str = "auto", register_missing: bool = True,
                   settings: DissimilaritySettings | None = None,
                   registration_settings: RegistrationSettings | None = None,
                   group_by_patient: bool = True, near_tie_share: float = NEAR_TIE_SHARE) -> dict[str, Any]:
    """The suggestion contract (see the module docstring); nothing is written. ``num_cases`` counts patients
    when the dataset declares them and ``group_by_patient`` is on. Each suggested entry lists its near ties:
    the candidates whose coverage cost at that rank is at most ``near_tie_share`` above the chosen one's."""
    folder = Path(preprocessed_dataset_folder)
    data_folder = folder / configuration
    cases = sorted(list_preprocessed_cases(data_folder)) if data_folder.is_dir() else []
    if not cases:
        raise SuggestionError(f"no preprocessed cases in {data_folder}; run cctr_plan_and_preprocess first")
    unknown = [c for c in labeled_cases if c not in cases]
    if unknown:
        raise SuggestionError(f"--labeled-cases {' '.join(unknown)}: not among the {len(cases)} preprocessed cases "
                              f"of {data_folder} (e.g. {', '.join(cases[:3])})")
    method = resolve_method(folder, configuration, method)
    store = PairStore(registration_folder(folder, configuration, method))
    gaps = missing_pairs(store, cases)
    if gaps and not register_missing:
        raise SuggestionError(f"{len(gaps)} of the {len(cases) * (len(cases) - 1) // 2} pairs have no {method} "
                              f"registration in {store.pairs_folder}; run cctr_register -d {folder.name} "
                              f"--registration {method}, or leave out --no-register")
    if gaps:
        print(f"[cctrnet] {len(gaps)} pair(s) not registered yet ({method}); registering them", file=sys.stderr)
        register_missing_pairs(folder, configuration, method, gaps, registration_settings or RegistrationSettings())
    try:
        dissimilarity = build_dissimilarity(store, cases, method, settings)
    except ValueError as error:
        raise SuggestionError(str(error)) from None
    labeled = sorted(dict.fromkeys(labeled_cases))
    patient_of = _patients(folder, cases) if group_by_patient else None
    units = _units(cases, labeled, patient_of)
    position = {case: i for i, case in enumerate(cases)}
    unit_distances = np.stack([dissimilarity.values[:, [position[c] for c in members]].min(axis=1)
                               for _, members in units], axis=1)  # (volumes, units)
    labeled_units = _labeled_units(labeled, patient_of)
    fixed = [k for k, (name, _) in enumerate(units) if name in labeled_units]
    try:
        picks = greedy_facility_location(unit_distances, num_cases, fixed, "patient" if patient_of else "case",
                                         near_tie_share=near_tie_share)
    except ValueError as error:
        raise SuggestionError(str(error)) from None
    return _contract(folder, configuration, dissimilarity, units, unit_distances, fixed, picks,
                     settings or DissimilaritySettings(), patient_of is not None, near_tie_share)


def _patients(folder: Path, cases: Sequence[str]) -> dict[str, str] | None:
    """Case id -> patient id from the preprocessed dataset.json, or None when it declares no patients."""
    from cctrnet.registration.stage import dataset_patients

    patient_of = dataset_patients(folder)
    if not patient_of:
        return None
    orphans = [c for c in cases if c not in patient_of]
    if orphans:
        raise SuggestionError(f"{folder / 'dataset.json'} declares patients, but case(s) {', '.join(orphans[:5])} "
                              "belong to none; add them to \"patients\" or use --per-volume")
    return dict(patient_of)


def _labeled_units(labeled: Sequence[str], patient_of: dict[str, str] | None) -> set[str]:
    return set(labeled) if patient_of is None else {patient_of[c] for c in labeled}


def _units(cases: Sequence[str], labeled: Sequence[str], patient_of: dict[str, str] | None
           ) -> list[tuple[str, list[str]]]:
    """(name, member cases) of every unit a suggestion may choose or starts from: a volume each, or a patient
    each (a labeled patient with its labeled cases only, since those are what the labels cover)."""
    if patient_of is None:
        return [(c, [c]) for c in cases]
    labeled_units = _labeled_units(labeled, patient_of)
    members: dict[str, list[str]] = {}
    for case in cases:
        if patient_of[case] not in labeled_units or case in labeled:
            members.setdefault(patient_of[case], []).append(case)
    return sorted(members.items())


def _contract(folder: Path, configuration: str, dissimilarity: Dissimilarity, units: list[tuple[str, list[str]]],
              unit_distances: np.ndarray, fixed: list[int], picks, settings: DissimilaritySettings,
              by_patient: bool, near_tie_share: float) -> dict[str, Any]:
    cases, values = dissimilarity.cases, dissimilarity.values
    position = {case: i for i, case in enumerate(cases)}
    chosen = fixed + [p.index for p in picks]
    nearest_unit = assign_to_nearest(unit_distances, chosen)
    represents = {units[u][0]: sorted(cases[i] for i in range(len(cases)) if nearest_unit[i] == u) for u in chosen}
    # the frame of the representing unit that is nearest to each volume (the figure's lines)
    nearest_case = {case: min(units[nearest_unit[i]][1], key=lambda m: (values[i, position[m]], m))
                    for i, case in enumerate(cases)}
    coordinates, kept_share = classical_mds(values)

    def entry(u: int) -> dict[str, Any]:
        name, members = units[u]
        head = {"patient": name} if by_patient else {"case": name}
        return {**head, "cases": members, "represents": represents[name]}

    suggested = [{"rank": rank, **entry(p.index), "score": round(p.share, 4), "gain": round(p.gain, 4),
                  "mean_dissimilarity_to_represented": round(float(np.mean(
                      [unit_distances[position[c], p.index] for c in represents[units[p.index][0]]])), 4),
                  "near_ties": [{("patient" if by_patient else "case"): units[index][0],
                                 "extra_cost_share": round(extra, 4)} for index, extra in p.near_ties]}
                 for rank, p in enumerate(picks, start=1)]
    return {
        "dataset": folder.name,
        "configuration": configuration,
        "registration_method": dissimilarity.method,
        "dissimilarity": {
            "terms": dissimilarity.terms,
            "definition": "image_weight * (1 - NCC after registration) / median + deformation_weight * mean "
                          "displacement mm / median, averaged over both directions; failed pairs count as "
                          "failed_pair_factor * the largest measured value (cctrnet/registration/dissimilarity.py)",
            "weights": {"image_weight": settings.image_weight, "deformation_weight": settings.deformation_weight,
                        "failed_pair_factor": settings.failed_pair_factor},
            "term_medians": dissimilarity.term_medians,
            "failed_pairs": dissimilarity.failed_pairs,
        },
        "selection": "greedy facility location from the labeled cases (cctrnet/registration/representatives.py); "
                     "score: share of the coverage cost before the first suggestion (sum over cases of the "
                     "dissimilarity to the nearest labeled case) that labeling this case removes",
        "near_tie_share": near_tie_share,
        "num_cases": len(cases),
        "unit": "patient" if by_patient else "case",
        "num_units": len(units),
        "already_labeled": [entry(u) for u in fixed],
        "suggested": suggested,
        "ids": [c for s in suggested for c in s["cases"]],
        "coverage_cost_before": round(coverage_cost(unit_distances, fixed), 4),
        "coverage_cost_after": round(coverage_cost(unit_distances, chosen), 4),
        "nearest_labeled": nearest_case,
        "cases": cases,
        "dissimilarity_matrix": np.round(values, MATRIX_DECIMALS).tolist(),
        "embedding_2d": {"method": "classical MDS", "share_of_variance": round(kept_share, 4),
                         "coordinates": {c: np.round(coordinates[i], MATRIX_DECIMALS).tolist()
                                         for i, c in enumerate(cases)}},
    }


def entry_cases(entry: dict[str, Any]) -> list[str]:
    """The volumes of a suggested or already-labeled entry: a patient's frames, or the one case (files written
    before patients were supported have ``case`` only; an entry with neither has none)."""
    return list(entry.get("cases") or ([entry["case"]] if "case" in entry else []))


def write_suggestion(suggestion: dict[str, Any], preprocessed_dataset_folder: Path,
                     output_folder: Path | None = None) -> tuple[Path, Path]:
    """Write ``suggested_labels.json`` and ``suggested_labels.png`` (atomically) into ``output_folder``
    (default ``registration/<configuration>/``); returns both paths."""
    from cctrnet.registration.suggestion_figure import plot_suggestion

    folder = (Path(output_folder) if output_folder is not None
              else Path(preprocessed_dataset_folder) / "registration" / suggestion["configuration"])
    json_path, figure_path = folder / SUGGESTION_FILE, folder / FIGURE_FILE
    save_json({**suggestion, "figure": FIGURE_FILE}, json_path)
    plot_suggestion(suggestion, figure_path)
    return json_path, figure_path


def near_ties_text(entry: dict[str, Any], unit: str) -> str:
    """A suggested entry's near ties as ``name (+0.7 %), ...`` (empty when it has none)."""
    return ", ".join(f"{tie.get(unit, '?')} (+{100 * tie['extra_cost_share']:.1f} %)"
                     for tie in entry.get("near_ties", []))


def describe(suggestion: dict[str, Any]) -> str:
    """The ranked list as text lines."""
    unit = suggestion.get("unit", "case")
    count = len(suggestion["suggested"])
    lines = [f"{suggestion['dataset']}: {count} {unit}{'s' if count != 1 else ''} to label next"
             + (f" ({len(suggestion['ids'])} volumes)" if unit == "patient" else "")
             + f", from the {suggestion['registration_method']} registrations of {suggestion['num_cases']} volumes"]

    def name(entry: dict[str, Any]) -> str:
        return entry["case"] if unit == "case" else f"{entry['patient']} ({', '.join(entry['cases'])})"

    for entry in suggestion["already_labeled"]:
        lines.append(f"  labeled  {name(entry):<16} represents {len(entry['represents'])}: "
                     f"{', '.join(entry['represents'])}")
    for entry in suggestion["suggested"]:
        lines.append(f"  {entry['rank']:>2}.      {name(entry):<16} score {entry['score']:.3f}  represents "
                     f"{len(entry['represents'])}: {', '.join(entry['represents'])}")
        ties = entry.get("near_ties", [])
        if ties:
            lines.append(f"           near tie{'s' if len(ties) > 1 else ''} (coverage cost at most "
                         f"{100 * suggestion.get('near_tie_share', NEAR_TIE_SHARE):g} % higher, an order that "
                         "registering again can change): "
                         + near_ties_text(entry, unit))
    lines.append(f"  coverage cost {suggestion['coverage_cost_before']:.3f} -> {suggestion['coverage_cost_after']:.3f} "
                 "(sum of every volume's dissimilarity to its nearest labeled "
                 f"{unit})")
    return "\n".join(lines)
