"""The affine metric benchmark's measurement on a tiny registered dataset: every field of its report entry."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.affine_metric_benchmark import measure  # noqa: E402
from tests.test_deformable_registration import write_dataset  # noqa: E402
from tests.test_registration import one_torch_thread  # noqa: E402,F401  (an autouse fixture: one thread)


@pytest.mark.parametrize("method", ["affine", "affine_deformable"])
def test_measure_reports_the_method_entry_and_the_leave_one_out_dice(tmp_path, method):
    dataset = write_dataset(tmp_path, count=3)
    run = measure(dataset, 40.0, 0.1, "2d", method)
    assert run["method"] == method and run["num_pairs"] == 6 and run["num_failed"] == len(run["failures"]) == 0
    assert run["sigma_mm"] == 40.0 and "quality" in run and run["seconds_per_pair_median"] > 0
    assert 0.5 < run["selected_dice_mean"] <= 1.0  # small known shifts: every selected label lands well
    assert run["selected_dice_per_class"] and all(0.0 <= d <= 1.0 for d in run["selected_dice_per_class"].values())
    assert run["between_patients_pairs"] == 6 and 0.5 < run["between_patients_dice_mean"] <= 1.0
