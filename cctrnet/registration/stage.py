"""The registration stage: what ``cctr_plan_and_preprocess`` runs after preprocessing and the trainer calls.

``run_registration_stage(folder, labeled_case_ids, method, engine, num_processes, dask_scheduler,
configuration)`` registers every pair training needs that is not stored yet (see
:mod:`cctrnet.registration.pairs`), computes the missing BRS cycle scores, writes the quality report and
returns a :class:`RegistrationSummary`. It reads only the preprocessed cases of
``folder/<configuration>/`` (channel ``settings.channel``, 0 by default) and writes only under
``folder/registration/`` (layout in :mod:`cctrnet.registration.pair_store`).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from cctrnet.preprocessing.case_storage import list_preprocessed_cases, load_properties
from cctrnet.registration import brs
from cctrnet.registration.pair_store import PairStore, registration_folder
from cctrnet.registration.pairs import required_pairs, resolve_strategy
from cctrnet.registration.settings import (AFFINE_BASED_METHODS, DEFAULT_ENGINE, RegistrationSettings, check_engine,
                                           check_method)
from cctrnet.utilities.file_io import load_json


@dataclass
class RegistrationSummary:
    """What one call of the stage did."""

    method: str
    engine: str
    folder: Path | None
    num_pairs_needed: int = 0
    num_computed: int = 0
    num_reused: int = 0
    failed_pairs: list[tuple[str, str, str]] = field(default_factory=list)  # (moving, fixed, reason)
    seconds: float = 0.0
    pairs: list[tuple[str, str]] = field(default_factory=list, repr=False)  # the pairs this labeled set needs
    choice: Any = None  # the MethodChoice of --registration auto

    def describe(self) -> str:
        lines = [f"registration {self.method} ({self.engine}): {self.num_pairs_needed} pairs needed, "
                 f"{self.num_computed} computed, {self.num_reused} reused, {len(self.failed_pairs)} failed, "
                 f"{self.seconds:.1f} s"]
        lines += [f"  failed: {m} -> {f}: {reason}" for m, f, reason in self.failed_pairs]
        return "\n".join(lines)


def labeled_cases_of(data_folder: Path, case_ids: Sequence[str]) -> list[str]:
    return [c for c in case_ids if load_properties(data_folder, c).get("is_labeled")]


def run_registration_stage(
    preprocessed_dataset_folder: Path,
    labeled_case_ids: Sequence[str] | None,
    method: str = "affine",
    engine: str = DEFAULT_ENGINE,
    num_processes: int = 1,
    dask_scheduler: str | None = None,
    configuration: str = "2d",
    settings: RegistrationSettings | None = None,
    retry_failed: bool = False,
    write_report: bool = True,
) -> RegistrationSummary:
    """Compute the pairs, BRS scores and report for ``labeled_case_ids`` (None: every case with a label).

    ``method="auto"`` computes affine and affine_deformable and returns the summary of the one
    :mod:`cctrnet.registration.method_choice` keeps (``summary.choice`` holds the evidence).
    """
    from cctrnet.registration.runner import compute_missing_pairs

    check_method(method, allow_auto=True)
    if method == "auto":
        return _run_auto(preprocessed_dataset_folder, labeled_case_ids, engine, num_processes, dask_scheduler,
                         configuration, settings or RegistrationSettings(), retry_failed, write_report)
    check_engine(engine)
    if method == "affine_bspline" and engine == "torch":
        print("[cctrnet] the torch engine has no B-spline model; using simpleitk for affine_bspline", file=sys.stderr)
        engine = "simpleitk"
    if method == "affine_deformable" and engine != "torch":
        print("[cctrnet] affine_deformable is computed by the torch engine", file=sys.stderr)
        engine = "torch"
    settings = settings or RegistrationSettings()
    start = time.perf_counter()
    if method == "none":
        return RegistrationSummary(method, engine, None)
    data_folder = Path(preprocessed_dataset_folder) / configuration
    cases = list_preprocessed_cases(data_folder)
    if not cases:
        raise FileNotFoundError(f"no preprocessed cases in {data_folder}; run cctr_plan_and_preprocess first")
    with_labels = labeled_cases_of(data_folder, cases)
    if labeled_case_ids is None:
        labeled, all_as_unlabeled = with_labels, True
    else:
        labeled, all_as_unlabeled = sorted(labeled_case_ids), False
        problems = [c for c in labeled if c not in with_labels]
        if problems:
            raise ValueError(f"labeled cases without a preprocessed label in {data_folder}: {', '.join(problems)}")
    strategy = resolve_strategy(settings.point_map_strategy, len(cases), settings.reference_threshold)
    pairs = required_pairs(cases, labeled, all_as_unlabeled, method, strategy)
    store = PairStore(registration_folder(preprocessed_dataset_folder, configuration, method))
    affine_store = None
    if method in AFFINE_BASED_METHODS:  # the deformable stage starts from the affine of the same pair
        affine_store = PairStore(registration_folder(preprocessed_dataset_folder, configuration, "affine"))
        missing = [pair for pair in pairs if not store.has(*pair) or retry_failed]
        compute_missing_pairs(data_folder, affine_store, missing, "affine", engine, settings, num_processes,
                              dask_scheduler, retry_failed)
    new_results = compute_missing_pairs(data_folder, store, pairs, method, engine, settings,
                                        num_processes, dask_scheduler, retry_failed, affine_store)
    unlabeled_pairs = [(u, q) for q in labeled for u in cases if u != q and (all_as_unlabeled or u not in labeled)]
    brs.update_scores(data_folder, store, unlabeled_pairs, settings)
    summary = RegistrationSummary(method, engine, store.folder, len(pairs), len(new_results), len(pairs) - len(new_results),
                                  pairs=list(pairs))
    for moving, fixed in pairs:
        result = store.load(moving, fixed)
        if result is not None and not result.ok:
            summary.failed_pairs.append((moving, fixed, result.reason or "unknown"))
    if write_report:
        from cctrnet.registration.report import write_report as write_registration_report

        write_registration_report(Path(preprocessed_dataset_folder), configuration, labeled, settings)
    summary.seconds = time.perf_counter() - start
    print(f"[cctrnet] {summary.describe()}", file=sys.stderr)
    return summary


def dataset_patients(preprocessed_dataset_folder: Path) -> dict[str, str] | None:
    """Case id -> patient id from the preprocessed dataset.json (copied from the raw one), or None."""
    from cctrnet.dataset.patients import patient_of_case

    path = preprocessed_dataset_folder / "dataset.json"
    return patient_of_case(load_json(path)) if path.exists() else None


def _run_auto(preprocessed_dataset_folder: Path, labeled_case_ids: Sequence[str] | None, engine: str, num_processes: int,
              dask_scheduler: str | None, configuration: str, settings: RegistrationSettings, retry_failed: bool,
              write_report: bool) -> RegistrationSummary:
    from cctrnet.registration import method_choice
    from cctrnet.registration.runner import compute_missing_pairs

    summaries = {m: run_registration_stage(preprocessed_dataset_folder, labeled_case_ids, m, engine, num_processes,
                                           dask_scheduler, configuration, settings, retry_failed, write_report=False)
                 for m in method_choice.CANDIDATES}
    data_folder = Path(preprocessed_dataset_folder) / configuration
    labeled = (labeled_cases_of(data_folder, list_preprocessed_cases(data_folder)) if labeled_case_ids is None
               else sorted(labeled_case_ids))
    stores = {m: PairStore(registration_folder(preprocessed_dataset_folder, configuration, m)) for m in method_choice.CANDIDATES}
    patient_of = dataset_patients(Path(preprocessed_dataset_folder))
    extra = method_choice.leave_one_out_pairs(labeled, patient_of)  # present already when all labeled were candidates
    compute_missing_pairs(data_folder, stores["affine"], extra, "affine", engine, settings, num_processes, dask_scheduler)
    compute_missing_pairs(data_folder, stores["affine_deformable"], extra, "affine_deformable", "torch", settings,
                          num_processes, dask_scheduler, affine_store=stores["affine"])
    choice = method_choice.choose(data_folder, stores, labeled, summaries["affine_deformable"].pairs, settings,
                                  patient_of)
    method_choice.save_choice(stores["affine"].folder.parent, method_choice.choice_key(labeled_case_ids), choice)
    if write_report:
        from cctrnet.registration.report import write_report as write_registration_report

        write_registration_report(Path(preprocessed_dataset_folder), configuration, labeled, settings)
    summary = summaries[choice.method]
    summary.choice = choice
    return summary
