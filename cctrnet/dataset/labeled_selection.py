"""Which training cases count as labeled in a run with ``--labeled N``.

Rule: among the cases that have a label file, sorted by case id, draw N without replacement with
``numpy.random.default_rng(seed)``; the result is returned sorted. The same (cases, N, seed) always
gives the same choice, and the choice for N is not required to contain the one for N-1.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def select_labeled_cases(cases_with_labels: Sequence[str], num_labeled: int | None, seed: int = 0) -> list[str]:
    """The case ids whose labels a run may train on (all of them when ``num_labeled`` is None)."""
    pool = sorted(cases_with_labels)
    if num_labeled is None:
        return pool
    if num_labeled < 1:
        raise ValueError(f"--labeled must be at least 1, got {num_labeled}")
    if num_labeled > len(pool):
        raise ValueError(f"--labeled {num_labeled} asks for more labeled cases than the {len(pool)} that have labels")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(pool), size=num_labeled, replace=False)
    return sorted(pool[i] for i in chosen)
