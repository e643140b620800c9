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
from typing import Sequence

from cctrnet.preprocessing.case_storage import list_preprocessed_cases, load_properties
from cctrnet.registration import brs
from cctrnet.registration.pair_store import PairStore, registration_folder
from cctrnet.registration.pairs import required_pairs, resolve_strategy
from cctrnet.registration.settings import DEFAULT_ENGINE, RegistrationSettings, check_engine, check_method


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
    """Compute the pairs, BRS scores and report for ``labeled_case_ids`` (None: every case with a label)."""
    from cctrnet.registration.runner import compute_missing_pairs

    check_method(method)
    check_engine(engine)
    if method == "affine_bspline" and engine == "torch":
        print("[cctrnet] the torch engine registers affine only; using simpleitk for affine_bspline", file=sys.stderr)
        engine = "simpleitk"
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
    new_results = compute_missing_pairs(data_folder, store, pairs, method, engine, settings,
                                        num_processes, dask_scheduler, retry_failed)
    unlabeled_pairs = [(u, q) for q in labeled for u in cases if u != q and (all_as_unlabeled or u not in labeled)]
    brs.update_scores(data_folder, store, unlabeled_pairs, settings)
    summary = RegistrationSummary(method, engine, store.folder, len(pairs), len(new_results), len(pairs) - len(new_results))
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
