"""Which training volumes to label first: ``cctr_suggest_labels``, from the stored registrations alone.

``suggest_labels(folder, num_cases, labeled_cases)`` builds the dissimilarity of
:mod:`cctrnet.registration.dissimilarity` between every two preprocessed training volumes, runs the greedy
facility location of :mod:`cctrnet.registration.representatives` from the cases already labeled, and
returns the contract written to ``registration/<configuration>/suggested_labels.json`` (with the figure
``suggested_labels.png`` beside it): the suggested cases in rank order, each with its score and the cases it
represents. No label is read, so a dataset without any label works.
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
                   registration_settings: RegistrationSettings | None = None) -> dict[str, Any]:
    """The suggestion contract (see the module docstring); nothing is written."""
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
    try:
        picks = greedy_facility_location(dissimilarity.values, num_cases, [cases.index(c) for c in labeled])
    except ValueError as error:
        raise SuggestionError(str(error)) from None
    return _contract(folder, configuration, dissimilarity, labeled, picks, settings or DissimilaritySettings())


def _contract(folder: Path, configuration: str, dissimilarity: Dissimilarity, labeled: list[str], picks,
              settings: DissimilaritySettings) -> dict[str, Any]:
    cases, values = dissimilarity.cases, dissimilarity.values
    fixed = [cases.index(c) for c in labeled]
    chosen = fixed + [p.index for p in picks]
    nearest = assign_to_nearest(values, chosen)
    represents = {cases[s]: sorted(cases[i] for i in range(len(cases)) if nearest[i] == s) for s in chosen}
    coordinates, kept_share = classical_mds(values)
    suggested = [{"rank": rank, "case": cases[p.index], "score": round(p.share, 4), "gain": round(p.gain, 4),
                  "represents": represents[cases[p.index]],
                  "mean_dissimilarity_to_represented": round(float(np.mean(
                      [values[p.index, cases.index(c)] for c in represents[cases[p.index]]])), 4)}
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
        "num_cases": len(cases),
        "already_labeled": [{"case": c, "represents": represents[c]} for c in labeled],
        "suggested": suggested,
        "ids": [s["case"] for s in suggested],
        "coverage_cost_before": round(coverage_cost(values, fixed), 4),
        "coverage_cost_after": round(coverage_cost(values, chosen), 4),
        "nearest_labeled": {c: cases[nearest[i]] for i, c in enumerate(cases)},
        "cases": cases,
        "dissimilarity_matrix": np.round(values, MATRIX_DECIMALS).tolist(),
        "embedding_2d": {"method": "classical MDS", "share_of_variance": round(kept_share, 4),
                         "coordinates": {c: np.round(coordinates[i], MATRIX_DECIMALS).tolist()
                                         for i, c in enumerate(cases)}},
    }


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


def describe(suggestion: dict[str, Any]) -> str:
    """The ranked list as text lines."""
    lines = [f"{suggestion['dataset']}: {len(suggestion['ids'])} case(s) to label next, from the "
             f"{suggestion['registration_method']} registrations of {suggestion['num_cases']} volumes"]
    for entry in suggestion["already_labeled"]:
        lines.append(f"  labeled  {entry['case']:<16} represents {len(entry['represents'])}: "
                     f"{', '.join(entry['represents'])}")
    for entry in suggestion["suggested"]:
        lines.append(f"  {entry['rank']:>2}.      {entry['case']:<16} score {entry['score']:.3f}  represents "
                     f"{len(entry['represents'])}: {', '.join(entry['represents'])}")
    lines.append(f"  coverage cost {suggestion['coverage_cost_before']:.3f} -> {suggestion['coverage_cost_after']:.3f} "
                 "(sum of every case's dissimilarity to its nearest labeled case)")
    return "\n".join(lines)
