"""Which ordered pairs (moving, fixed) training needs, and how maps between volumes are obtained.

- RSL and BRS: for every labeled candidate q and every unlabeled u, both (q onto u) (warps q's label into
  u's grid; maps u's points to q) and (u onto q) (the forward half of the BRS cycle). With
  ``labeled_case_ids=None`` every case with a label is a candidate and "unlabeled" means any other case,
  so every later choice of labeled set finds its pairs already computed.
- REPS needs a point map from any volume i to any other j. The map i -> j is the transform of the pair
  (j onto i); for an affine, the inverse of (i onto j) is exact and serves too, and so does ``exp(-v)`` of a
  velocity-field pair, so one direction per unordered pair suffices for both. ``point_map_strategy="reference"`` instead maps every volume through one
  reference volume (i -> r -> j): about N (affine) or 2N (B-spline) registrations instead of N^2/2,
  at the price of composing two registration errors.
"""
from __future__ import annotations

from typing import Sequence

from cctrnet.registration.settings import INVERTIBLE_METHODS


def brs_pairs(all_cases: Sequence[str], labeled_cases: Sequence[str], all_as_unlabeled: bool) -> list[tuple[str, str]]:
    """Ordered (moving, fixed) pairs between labeled candidates and unlabeled cases, both directions."""
    labeled = set(labeled_cases)
    pairs = []
    for q in sorted(labeled):
        for u in all_cases:
            if u == q or (not all_as_unlabeled and u in labeled):
                continue
            pairs += [(q, u), (u, q)]
    return list(dict.fromkeys(pairs))  # labeled candidates that are also "unlabeled" appear twice


def reference_case(all_cases: Sequence[str]) -> str:
    """The reference volume for reference point maps: the middle case id in sorted order."""
    ordered = sorted(all_cases)
    return ordered[len(ordered) // 2]


def point_map_pairs(all_cases: Sequence[str], method: str, strategy: str, existing: set[tuple[str, str]]) -> list[tuple[str, str]]:
    """Pairs REPS needs beyond ``existing``, so that every volume maps to every other."""
    invertible = method in INVERTIBLE_METHODS
    needed: list[tuple[str, str]] = []
    have = set(existing)
    if strategy == "reference":
        r = reference_case(all_cases)
        for i in all_cases:
            if i == r:
                continue
            for pair in ((r, i), (i, r)):
                if pair in have:
                    continue
                if invertible and (pair[1], pair[0]) in have:
                    continue
                needed.append(pair)
                have.add(pair)
        return needed
    if strategy != "direct":
        raise ValueError(f"unknown point map strategy '{strategy}'; choose direct, reference or auto")
    ordered = sorted(all_cases)
    for a_index, a in enumerate(ordered):
        for b in ordered[a_index + 1:]:
            directions = [(b, a), (a, b)]
            if invertible:
                if not any(d in have for d in directions):
                    needed.append(directions[0])
                    have.add(directions[0])
            else:
                for d in directions:
                    if d not in have:
                        needed.append(d)
                        have.add(d)
    return needed


def resolve_strategy(strategy: str, num_cases: int, reference_threshold: int) -> str:
    if strategy == "auto":
        return "direct" if num_cases <= reference_threshold else "reference"
    return strategy


def required_pairs(
    all_cases: Sequence[str], labeled_cases: Sequence[str], all_as_unlabeled: bool, method: str, strategy: str
) -> list[tuple[str, str]]:
    """Every ordered pair training needs, each once, BRS pairs first."""
    pairs = brs_pairs(all_cases, labeled_cases, all_as_unlabeled)
    return pairs + point_map_pairs(all_cases, method, strategy, set(pairs))
