"""Registration on a real Dask LocalCluster of worker processes: a worker killed mid-task loses no finished
pair, leaves its pairs without a record, and a rerun computes exactly those (through the local cluster option)."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from cctrnet.registration import runner
from cctrnet.registration.pair_store import PairStore
from cctrnet.registration.transforms import affine_matrix_4x4, transform_from_file
from tests.test_registration import FAST, standard_dataset

distributed = pytest.importorskip("distributed", reason="dask[distributed] is not installed")
pytestmark = pytest.mark.usefixtures("single_torch_thread")

REAL_BATCH_JOB = runner.compute_batch_job
DOOMED_MARKER = "kill_worker_on.txt"  # in the data folder: "moving,fixed" of the pair whose worker dies


def dying_batch_job(data_folder: str, pairs, *rest):
    """The torch batch job, except that a batch holding the doomed pair kills its worker process mid-task."""
    marker = Path(data_folder) / DOOMED_MARKER
    if marker.exists() and tuple(marker.read_text().split(",")) in [tuple(p) for p in pairs]:
        time.sleep(0.2)  # the task is running
        os.kill(os.getpid(), signal.SIGKILL)
    return REAL_BATCH_JOB(data_folder, pairs, *rest)


def test_a_killed_worker_loses_no_finished_pair_and_a_rerun_completes(tmp_path, monkeypatch):
    import dask

    dataset = standard_dataset(tmp_path)
    data_folder = dataset / "2d"
    pairs = [("c1", "c0"), ("c2", "c0"), ("c3", "c0"), ("c0", "c1")]
    settings = runner.RegistrationSettings(**{**FAST.to_dict(), "torch_batch_size": 1})
    doomed = ("c2", "c0")
    (data_folder / DOOMED_MARKER).write_text(",".join(doomed))
    monkeypatch.setattr(runner, "compute_batch_job", dying_batch_job)
    store = PairStore(tmp_path / "dask")
    # dask_scheduler="local": a LocalCluster of -np (2) worker processes, its scheduler in this process
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):  # no retry: the task's worker is lost
        with pytest.raises(runner.PairsNotComputed, match=r"not computed: their Dask worker died.*run the same"):
            runner.compute_missing_pairs(data_folder, store, pairs, "affine", "torch", settings, num_processes=2,
                                         dask_scheduler=runner.LOCAL_CLUSTER)
    finished = {(r.moving, r.fixed): store.record_path(r.moving, r.fixed).stat().st_mtime_ns
                for r in store.all_results()}
    assert doomed not in finished and finished  # the other batches were stored as they came
    assert all(store.load(*pair).ok for pair in finished)  # a lost worker is no failed pair

    (data_folder / DOOMED_MARKER).unlink()
    monkeypatch.undo()
    again = runner.compute_missing_pairs(data_folder, store, pairs, "affine", "torch", settings)
    assert {(r.moving, r.fixed) for r in again} == set(pairs) - set(finished)
    assert all(store.record_path(*pair).stat().st_mtime_ns == t for pair, t in finished.items())
    local = PairStore(tmp_path / "local")
    runner.compute_missing_pairs(data_folder, local, pairs, "affine", "torch", settings)
    for pair in pairs:
        a = affine_matrix_4x4(transform_from_file(local.transform_path(*pair)))
        b = affine_matrix_4x4(transform_from_file(store.transform_path(*pair)))
        assert np.allclose(a, b, atol=1e-5)

