"""benchmarks/reproduce/record_validity.py: a record without a setting added after it ran, when that setting's
default has changed since (rsl_decay: none when added, cosine since 2026-12-03)."""
from __future__ import annotations

from benchmarks.reproduce.jobs import Selection, build_jobs
from benchmarks.reproduce.record_validity import serves, stale_reason
from tests.test_reproduce_benchmark import _record_of


def _row(label: str):
    (job,) = build_jobs(Selection(datasets=["acdc2"], labeled=[1], seeds=[0], tables=["robustness"], rows=[label]),
                        2000)
    return job


def test_a_record_without_a_setting_ran_with_its_value_before_the_default_changed():
    (default_cctr,) = build_jobs(Selection(datasets=["acdc2"], labeled=[1], seeds=[0], methods=["CCTR"]), 2000)
    decaying, constant = _row("+ w_rs decaying over the run"), _row("w_rs constant (the paper's schedule)")
    older = _record_of(constant)
    del older["settings"]["rsl_decay"]  # written before the setting existed: a constant weight
    assert serves(older, constant, "affine_deformable")
    assert not serves(older, decaying, "affine_deformable")
    assert "rsl_decay 'none' (now 'cosine')" in stale_reason(older, default_cctr, "affine_deformable")
    # the decaying row is today's default CCT-R: its run serves the default row
    assert serves(_record_of(decaying), default_cctr, "affine_deformable")
