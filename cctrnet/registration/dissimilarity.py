"""A dissimilarity between every two training volumes, read from the stored pair registrations.

For every unordered pair {i, j} the stored records (i onto j) and (j onto i) of one method are read (either
direction serves; with both, the terms are averaged):

- **image term**: what remains different after registration. For the normalised cross-correlation metrics
  of the torch engines (``metric_final`` is the negative global NCC of the affine, the negative local NCC of
  the deformable stage) it is ``1 - NCC`` (0 for identical images, about 1 for unrelated ones); for any other
  metric (SimpleITK's Mattes mutual information, lower is better) the final metric shifted so that the best
  pair of the dataset is 0.
- **deformation term**: how much the anatomy had to be bent to match, the mean displacement in mm of the
  deformable field (``quality["displacement_mm_mean"]``); used only when every measured pair has it (the
  ``affine_deformable`` method), since the affine records carry no deformation size.

Each term is divided by its median over the measured pairs, so the two are on one scale, and the
dissimilarity is ``image_weight * image + deformation_weight * deformation``. A pair whose registrations all
failed counts as ``failed_pair_factor`` times the largest measured dissimilarity (a registration that cannot
match two volumes is evidence that they differ). A pair with no record at all is *missing*: the caller
registers it or refuses (:func:`missing_pairs`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from cctrnet.registration.pair_result import PairResult
from cctrnet.registration.pair_store import PairStore

NCC_METRICS = ("negative_normalised_cross_correlation", "negative_local_normalised_cross_correlation")


@dataclass(frozen=True)
class DissimilaritySettings:
    """Weights of the terms (each already scaled to median 1 over the dataset's pairs)."""

    image_weight: float = 1.0
    deformation_weight: float = 0.5
    #: a pair whose registrations failed counts as this many times the largest measured dissimilarity
    failed_pair_factor: float = 1.0


@dataclass
class Dissimilarity:
    """Symmetric (N, N) dissimilarity with a zero diagonal between ``cases`` (sorted ids)."""

    cases: list[str]
    values: np.ndarray
    method: str
    terms: list[str]
    #: unordered pairs whose every stored direction failed, with the reasons
    failed_pairs: list[dict[str, str]] = field(default_factory=list)
    #: term -> the median used to scale it (in the term's own unit)
    term_medians: dict[str, float] = field(default_factory=dict)

    def index(self, case: str) -> int:
        return self.cases.index(case)


def missing_pairs(store: PairStore, cases: Sequence[str]) -> list[tuple[str, str]]:
    """Unordered pairs (a, b), a < b, with no record in either direction."""
    ordered = sorted(cases)
    return [(a, b) for k, a in enumerate(ordered) for b in ordered[k + 1:]
            if not store.has(a, b) and not store.has(b, a)]


def _image_term(result: PairResult, best_other_metric: float) -> float:
    if result.metric_name in NCC_METRICS:
        return 1.0 + float(result.metric_final)
    return float(result.metric_final) - best_other_metric


def build_dissimilarity(store: PairStore, cases: Sequence[str], method: str,
                        settings: DissimilaritySettings | None = None) -> Dissimilarity:
    """The dissimilarity from ``store``; raises ValueError naming the store when pairs are missing or no pair
    succeeded."""
    settings = settings or DissimilaritySettings()
    ordered = sorted(cases)
    if len(ordered) < 2:
        raise ValueError(f"{len(ordered)} training case(s): a choice needs at least two volumes")
    gaps = missing_pairs(store, ordered)
    if gaps:
        raise ValueError(f"{len(gaps)} pair(s) have no registration in {store.pairs_folder} (e.g. "
                         f"{gaps[0][0]} and {gaps[0][1]}); register them with cctr_register or let "
                         "cctr_suggest_labels register them")
    results: dict[tuple[int, int], list[PairResult]] = {}
    reasons: dict[tuple[int, int], list[str]] = {}
    for a_index, a in enumerate(ordered):
        for b_index in range(a_index + 1, len(ordered)):
            b = ordered[b_index]
            for moving, fixed in ((a, b), (b, a)):
                result = store.load(moving, fixed)
                if result is None:
                    continue
                if result.ok and result.metric_final is not None and np.isfinite(result.metric_final):
                    results.setdefault((a_index, b_index), []).append(result)
                else:
                    reasons.setdefault((a_index, b_index), []).append(result.reason or "no final metric")
    measured = [r for pair in results.values() for r in pair]
    if not measured:
        raise ValueError(f"every registration in {store.pairs_folder} failed: no dissimilarity can be measured")
    other = [float(r.metric_final) for r in measured if r.metric_name not in NCC_METRICS]
    best_other = min(other) if other else 0.0
    with_deformation = all("displacement_mm_mean" in r.quality for r in measured)
    terms = ["image"] + (["deformation"] if with_deformation and settings.deformation_weight > 0 else [])
    raw = {term: {} for term in terms}
    for pair, pair_results in results.items():
        raw["image"][pair] = float(np.mean([_image_term(r, best_other) for r in pair_results]))
        if "deformation" in raw:
            raw["deformation"][pair] = float(np.mean([r.quality["displacement_mm_mean"] for r in pair_results]))
    weights = {"image": settings.image_weight, "deformation": settings.deformation_weight}
    medians = {term: float(np.median(list(values.values()))) for term, values in raw.items()}
    combined = {pair: sum(weights[t] * raw[t][pair] / (medians[t] if medians[t] > 0 else 1.0) for t in terms)
                for pair in results}
    matrix = np.zeros((len(ordered), len(ordered)))
    for (i, j), value in combined.items():
        matrix[i, j] = matrix[j, i] = value
    failed_value = settings.failed_pair_factor * max(combined.values())
    failed = []
    for (i, j), why in sorted(reasons.items()):
        if (i, j) not in results:
            matrix[i, j] = matrix[j, i] = failed_value
            failed.append({"cases": f"{ordered[i]} / {ordered[j]}", "reason": "; ".join(dict.fromkeys(why))})
    return Dissimilarity(ordered, matrix, method, terms, failed, medians)
