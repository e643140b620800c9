"""The suggestion benchmark's summary: per-choice means over the training seeds every choice has finished."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.label_suggestion_benchmark import summarise  # noqa: E402


def _entry(seed: int, dice: float) -> dict:
    return {"cases": ["c"], "seed": seed, "test_dice_percent": dice, "iterations": 10}


def test_summary_compares_choices_on_the_seeds_they_all_share():
    results = {
        "LS/1/suggested/seed0": _entry(0, 70.0), "LS/1/suggested/seed1": _entry(1, 60.0),
        "LS/1/random0/seed0": _entry(0, 50.0), "LS/1/random0/seed1": _entry(1, 70.0),
        "LS/1/random1/seed0": _entry(0, 80.0), "LS/1/random1/seed1": _entry(1, 90.0),
        "LS/1/random2/seed0": _entry(0, 40.0),  # seed 1 not finished: the comparison uses seed 0 only
        "LS/2/suggested/seed0": _entry(0, 1.0),  # another N, no random choice yet
        "LS/1/suggested": _entry(999, 10.0),  # a result of the old one-seed layout is not mixed in
    }
    summary = summarise(results, "LS", 1)
    assert summary["training_seeds"] == [0]
    assert summary["suggested"] == 70.0 and sorted(summary["random_means"]) == [40.0, 50.0, 80.0]
    assert summary["random_beaten"] == 2 and summary["random_mean"] == pytest.approx(170 / 3)
    del results["LS/1/random2/seed0"]
    both = summarise(results, "LS", 1)
    assert both["training_seeds"] == [0, 1] and both["suggested"] == 65.0
    assert sorted(both["random_means"]) == [60.0, 85.0] and both["random_beaten"] == 1
    assert both["random_std"] == pytest.approx(12.5)
    assert summarise(results, "LS", 2) is None and summarise(results, "CCTRTrainer", 1) is None
