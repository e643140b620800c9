"""The suggestion benchmark's summary: per-choice means over the training seeds every choice has finished."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.label_suggestion_benchmark import same_run, summarise  # noqa: E402


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


def test_atlas_properties_compare_cases_on_shared_seeds_and_correlate():
    from benchmarks.atlas_properties import correlations, mean_test_dice

    def run(case: str, seed: int, dice: float) -> dict:
        return {"cases": [case], "seed": seed, "test_dice_percent": dice, "iterations": 10}

    results = {"LS/1/suggested/seed0": run("a", 0, 60.0), "LS/1/suggested/seed1": run("a", 1, 70.0),
               "LS/1/random0/seed0": run("b", 0, 80.0), "LS/1/random0/seed1": run("b", 1, 90.0),
               "LS/1/random1/seed0": run("c", 0, 50.0),  # seed 1 unfinished: every case is compared on seed 0
               "LS/1/random2/seed0": run("d", 0, 40.0),
               "LS/1/random3/seed0": run("e", 0, 30.0),
               "LS/2/random0/seed0": {"cases": ["a", "b"], "seed": 0, "test_dice_percent": 99.0},  # N=2: not a case
               "LS/1/suggested": run("a", 999, 0.0),  # the old one-seed layout is left out
               "CCTR/1/random0/seed0": run("a", 0, 1.0)}  # another trainer
    dice, seeds = mean_test_dice(results, "LS")
    assert seeds == [0] and dice == {"a": 60.0, "b": 80.0, "c": 50.0, "d": 40.0, "e": 30.0}
    rows = {case: {"test_dice": value, "rising": value / 10, "falling": -value, "constant": 1.0}
            for case, value in dice.items()}
    rows["f"] = {"test_dice": None, "rising": 100.0}  # not trained: not in the correlation
    table = correlations(rows)
    assert table["rising"]["spearman"] == pytest.approx(1.0) and table["falling"]["spearman"] == pytest.approx(-1.0)
    assert table["rising"]["cases"] == 5 and "constant" not in table  # no spread, no correlation


def test_a_case_drawn_again_reuses_the_finished_run_of_the_same_training():
    results = {"LS/1/random0/seed0": _entry(0, 70.0), "LS/1/random0/seed1": _entry(1, 60.0),
               "LS/1/random3/seed0": {**_entry(0, 70.0), "same_run_as": "LS/1/random0/seed0"},
               "LS/1/suggested": _entry(0, 10.0)}  # the old one-seed layout: never reused
    assert same_run(results, "LS", 1, ["c"], 0, 10) == "LS/1/random0/seed0"
    assert same_run(results, "LS", 1, ["c"], 2, 10) is None  # another seed
    assert same_run(results, "LS", 1, ["c"], 0, 300) is None  # another budget
    assert same_run(results, "LS", 1, ["d"], 0, 10) is None  # another case
    assert same_run(results, "CCTR", 1, ["c"], 0, 10) is None  # another trainer
    assert same_run(results, "LS", 2, ["c"], 0, 10) is None  # another N


def test_choices_select_named_draws_and_refuse_unknown_names():
    from benchmarks.label_suggestion_benchmark import select_choices

    draws = [["b"], ["c"], ["b"]]
    assert select_choices(["a"], draws, None) == [("suggested", ["a"]), ("random0", ["b"]), ("random1", ["c"]),
                                                   ("random2", ["b"])]
    assert select_choices(["a"], draws, ["random2", "suggested"]) == [("suggested", ["a"]), ("random2", ["b"])]
    with pytest.raises(ValueError, match="random3: no such choice"):
        select_choices(["a"], draws, ["random3"])


def test_random_draws_count_patients_when_the_dataset_declares_them_and_keep_the_phantom_draws():
    """The benchmark draws with cctr_train's rule; without patients that is the draw of the first phantom rows."""
    import numpy as np

    from cctrnet.dataset.labeled_selection import select_labeled_cases

    cases = [f"p{p}_{frame}" for p in range(6) for frame in ("ED", "ES")]
    patient_of = {case: case.split("_")[0] for case in cases}
    draw = select_labeled_cases(cases, 2, 1000, patient_of)
    assert len(draw) == 4 and len({patient_of[c] for c in draw}) == 2  # both frames of two patients
    assert draw == select_labeled_cases(cases, 2, 1000, patient_of)
    for seed in range(1000, 1020):
        assert select_labeled_cases(cases, 2, seed) == sorted(
            np.random.default_rng(seed).choice(cases, 2, replace=False).tolist())
