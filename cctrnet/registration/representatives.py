"""Which volumes best represent a dataset, from a dissimilarity matrix (pure numpy).

**Greedy facility location** (the k-medians objective): the cost of a labeled set S is
``sum_i min_{s in S} d(i, s)``, how far every volume is from its nearest labeled volume, with
``d(i, {}) = max d`` before anything is labeled. Starting from the cases already labeled, each step adds the
case that lowers the cost most (ties: the smaller case id), so the choice is deterministic, honours the labeled
cases, and the choice for n is the choice for n - 1 plus one case (label them in rank order). The covered
amount ``N max d - cost`` is monotone submodular, so greedy is within (1 - 1/e) of the best set of its size.

The same greedy works between two sets: ``distances[i, u]`` from every volume i to every candidate u (a patient,
whose distance to a volume is that of its nearest frame), so the choice can be made over patients while the
cost still counts volumes.

**Classical MDS** (Torgerson): the 2D points whose distances best match the dissimilarity, for the figure only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


@dataclass
class Pick:
    """One suggested case: its 0-based index, the cost it removed and that gain's share of the cost before the
    first suggestion (non-increasing with the rank, since the gains of a submodular cover shrink).
    ``near_ties``: (index, extra share) of the other candidates of the same step whose cost is within the
    tolerance of the chosen one's, nearest first; the extra share is ``(cost - chosen cost) / chosen cost``."""

    index: int
    gain: float
    share: float
    near_ties: list[tuple[int, float]] = field(default_factory=list)


def _cost(distances: np.ndarray, chosen: Sequence[int], empty_cost: float) -> float:
    if not chosen:
        return float(distances.shape[0] * empty_cost)
    return float(distances[:, list(chosen)].min(axis=1).sum())


def coverage_cost(distances: np.ndarray, chosen: Sequence[int]) -> float:
    """``sum_i min_{s in chosen} d(i, s)`` (``N * max d`` for an empty set)."""
    return _cost(distances, chosen, float(distances.max()))


def greedy_facility_location(distances: np.ndarray, num_new: int, fixed: Sequence[int] = (),
                              unit: str = "case", near_tie_share: float = 0.0) -> list[Pick]:
    """``num_new`` candidate (column) indices added greedily to ``fixed`` (never re-chosen); ties go to the lower
    index. ``distances`` is (volumes, candidates); square when the candidates are the volumes themselves.
    Each pick lists the candidates whose cost at that step is at most ``near_tie_share`` (relative) above it."""
    if distances.ndim != 2 or 0 in distances.shape:
        raise ValueError(f"the dissimilarity must be a non-empty matrix, got shape {distances.shape}")
    size = distances.shape[1]
    chosen = list(dict.fromkeys(int(i) for i in fixed))
    if num_new < 1:
        raise ValueError(f"the number of {unit}s to suggest must be at least 1, got {num_new}")
    if num_new > size - len(chosen):
        raise ValueError(f"{num_new} {unit}(s) asked for, but only {size - len(chosen)} of the {size} are not "
                         "labeled yet")
    empty_cost = float(distances.max())
    picks = []
    start = _cost(distances, chosen, empty_cost)
    for _ in range(num_new):
        before = _cost(distances, chosen, empty_cost)
        best_index, best_cost = -1, np.inf
        costs = {}
        for candidate in range(size):
            if candidate in chosen:
                continue
            costs[candidate] = cost = _cost(distances, chosen + [candidate], empty_cost)
            if cost < best_cost - 1e-12:  # strict: the first (lowest) index wins a tie
                best_index, best_cost = candidate, cost
        chosen.append(best_index)
        gain = before - best_cost
        picks.append(Pick(best_index, gain, gain / start if start > 0 else 0.0,
                          _near_ties(costs, best_index, best_cost, near_tie_share)))
    return picks


def _near_ties(costs: dict[int, float], best_index: int, best_cost: float, tolerance: float
               ) -> list[tuple[int, float]]:
    scale = best_cost if best_cost > 0 else 1.0
    extra = sorted(((cost - best_cost) / scale, index) for index, cost in costs.items() if index != best_index)
    return [(index, float(share)) for share, index in extra if share <= tolerance + 1e-12]


def assign_to_nearest(distances: np.ndarray, chosen: Sequence[int]) -> list[int]:
    """For every row, the element of ``chosen`` (columns) nearest to it (ties: the first). With a square matrix a
    chosen index is its own."""
    columns = list(chosen)
    nearest = [columns[int(k)] for k in np.argmin(distances[:, columns], axis=1)]
    if distances.shape[0] == distances.shape[1]:
        for index in columns:
            nearest[index] = index
    return nearest


def classical_mds(distances: np.ndarray, dimensions: int = 2) -> tuple[np.ndarray, float]:
    """(N, dimensions) coordinates in the dissimilarity's unit and the share of the positive eigenvalues they
    keep (1.0: the distances are exactly Euclidean in that many dimensions). Signs are fixed (the largest
    coordinate of each axis is positive), so the figure is the same on every run."""
    size = distances.shape[0]
    centring = np.eye(size) - np.ones((size, size)) / size
    gram = -0.5 * centring @ (distances ** 2) @ centring
    eigenvalues, eigenvectors = np.linalg.eigh((gram + gram.T) / 2)
    order = np.argsort(eigenvalues)[::-1][:dimensions]
    kept = np.clip(eigenvalues[order], 0.0, None)
    coordinates = eigenvectors[:, order] * np.sqrt(kept)
    for axis in range(coordinates.shape[1]):
        if coordinates[np.argmax(np.abs(coordinates[:, axis])), axis] < 0:
            coordinates[:, axis] *= -1
    positive = eigenvalues[eigenvalues > 0].sum()
    if coordinates.shape[1] < dimensions:  # fewer than `dimensions` volumes
        coordinates = np.pad(coordinates, ((0, 0), (0, dimensions - coordinates.shape[1])))
    return coordinates, float(kept.sum() / positive) if positive > 0 else 1.0
