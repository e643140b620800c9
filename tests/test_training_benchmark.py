"""The training benchmark's own machinery: variant specs, block timing, summaries and overheads."""
from __future__ import annotations

import time

import pytest

from benchmarks.training_benchmark import (BlockTimes, Variant, _split, in_process_variant, overheads, parse_variant,
                                          run_block)


def test_parse_variant_reads_label_trainer_and_typed_settings() -> None:
    assert parse_variant("CTSTrainer") == Variant("CTSTrainer", "CTSTrainer", {})
    variant = parse_variant("CCTR, no REPS=CCTRTrainer:reps=false,n_anchors=200,w_c=0.01")
    assert variant.label == "CCTR, no REPS"
    assert variant.trainer_name == "CCTRTrainer"
    assert variant.overrides == {"reps": False, "n_anchors": 200, "w_c": 0.01}
    assert variant.describe() == "CCTRTrainer --set reps=False,n_anchors=200,w_c=0.01"


def test_parse_variant_refuses_unknown_trainers_and_settings() -> None:
    with pytest.raises(ValueError, match="unknown trainer"):
        parse_variant("NoSuchTrainer")
    with pytest.raises(ValueError, match="unknown setting"):
        parse_variant("CCTRTrainer:no_such_setting=1")


def test_in_process_variant_keeps_settings_and_sets_no_workers() -> None:
    variant = in_process_variant(Variant("CTS+RSL", "CCTRTrainer", {"scl": False}))
    assert variant == Variant("CTS+RSL (0 workers)", "CCTRTrainer", {"scl": False, "num_workers": 0})


def test_split_spreads_iterations_over_rounds() -> None:
    assert _split(30, 3) == [10, 10, 10]
    assert _split(10, 3) == [4, 3, 3]
    assert _split(2, 3) == [1, 1]


def test_overheads_compare_with_cts_of_the_same_data_setting() -> None:
    summary = {"CTS": {"median_seconds": 1.0}, "CCTR": {"median_seconds": 1.3},
               "CTS (0 workers)": {"median_seconds": 2.0}, "CCTR (0 workers)": {"median_seconds": 2.2},
               "LS": {"median_seconds": 0.25}}
    result = overheads(summary)
    assert set(result) == {"CCTR", "CCTR (0 workers)", "LS"}
    assert result["CCTR"] == pytest.approx(30.0)
    assert result["CCTR (0 workers)"] == pytest.approx(10.0)
    assert result["LS"] == pytest.approx(-75.0)


class _FakeTrainer:
    """Sleeps like a training step; part of each step counts as waiting for data."""

    def __init__(self, step_seconds: float, wait_seconds: float) -> None:
        self.step_seconds, self.wait = step_seconds, wait_seconds
        self.data_wait_seconds = 0.0
        self.iterations = 0

    def train_one_iteration(self) -> dict[str, float]:
        time.sleep(self.step_seconds)
        self.data_wait_seconds += self.wait
        self.iterations += 1
        return {}


def test_run_block_times_only_the_measured_iterations() -> None:
    trainer, times = _FakeTrainer(0.02, 0.005), BlockTimes()
    state = {"load_average_1min": 1.0, "other_cores_before": 0.0}
    run_block(trainer, warmup=2, measured=3, times=times, state=state)
    run_block(trainer, warmup=0, measured=2, times=times, state=state)
    assert trainer.iterations == 7
    summary = times.summary()
    assert summary["iterations"] == 5
    assert 0.02 <= summary["min_seconds"] <= summary["median_seconds"] <= summary["max_seconds"] < 0.5
    assert summary["data_wait_share"] == pytest.approx(5 * 0.005 / sum(times.iteration_seconds))
    assert summary["median_main_cpu_seconds"] < summary["median_seconds"]  # sleeping costs no CPU
    assert len(summary["other_cores_during"]) == 2 and summary["load_average_1min"] == [1.0, 1.0]
