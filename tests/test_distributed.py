"""Data-parallel training on CPU with gloo and 2 processes: the same losses as one process, the same memory
bank on every rank, one writer, a stop on any rank, resume with another number of processes, a killed rank."""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cctrnet.training.distributed import Distributed
from tests.test_training import SMALL_CPU_PLAN

FAST_SET = ["num_workers=0", "n_anchors=50", "n_negatives=50", "log_every=1", "learning_rate_cnn=2e-3",
            "learning_rate_transformer=1e-3"]
# shared sampling: the same batches as one process, so the curves differ only by floating-point summation
# order (and, through the discrete anchor sampling, the contrastive term, weighted 1e-3)
TOTAL_LOSS_RELATIVE_TOLERANCE = 1e-4
TERM_RELATIVE_TOLERANCE = 1e-3
CONTRASTIVE_RELATIVE_TOLERANCE = 0.05
SECONDS_TO_END_AFTER_A_KILL = 90


# --- without processes ---------------------------------------------------------------------------
def test_a_batch_that_does_not_divide_among_the_processes_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"4 labeled \+ 2 unlabeled slices does not divide among 3 processes.*use 1, 2 "
                                         r"processes"):
        Distributed(0, 3).local_batch(4, 2)
    assert Distributed(1, 2).local_batch(4, 2) == (2, 1)


def test_global_rows_and_their_owners_agree():
    n_l, n_u, world = 2, 3, 3
    for rank in range(world):
        d = Distributed(rank, world)
        rows = d.global_rows(n_l, n_u)
        owner, local = d.row_owners(rows, n_l, n_u)
        assert owner.tolist() == [rank] * (n_l + n_u) and local.tolist() == list(range(n_l + n_u))
    everything = torch.cat([Distributed(r, world).global_rows(n_l, n_u) for r in range(world)])
    assert sorted(everything.tolist()) == list(range(world * (n_l + n_u)))
    assert Distributed(1, world).global_rows(n_l, n_u)[:n_l].tolist() == [2, 3]  # labeled rows of all ranks first


def test_one_process_gathers_pixels_as_the_direct_read():
    features = torch.randn(4, 5, 6, 7)
    flat = torch.tensor([0, 41, 100, 167])
    expected = features.reshape(4, 5, 42)[flat // 42, :, flat % 42]
    assert torch.equal(Distributed().gather_pixels(features, flat, 2), expected)


def test_the_rank_command_line_leaves_out_the_process_flags():
    from cctrnet.training.distributed_launch import arguments_without_process_flags

    line = ["7", "--num-processes", "2", "--labeled", "2", "--num-gpus=2", "--num-p", "3", "--set", "a=1"]
    assert arguments_without_process_flags(line) == ["7", "--labeled", "2", "--set", "a=1"]


def test_num_gpus_without_gpus_says_to_use_num_processes():
    from cctrnet.training.distributed_launch import LaunchError, start_or_join_processes

    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has the GPUs")
    args = argparse.Namespace(num_gpus=2, num_processes=None, device="auto", threads=None)
    with pytest.raises(LaunchError, match="for CPU processes use --num-processes 2"):
        start_or_join_processes(args, [])
    with pytest.raises(LaunchError, match="--num-processes needs a positive number, got 0"):
        start_or_join_processes(argparse.Namespace(num_gpus=None, num_processes=0, device="cpu", threads=None), [])


# --- 2 gloo processes ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from dataset_conversion.phantom import generate_phantom_dataset
    from dataset_conversion.phantom_config import PhantomConfig
    from cctrnet.plan_and_preprocess import plan_and_preprocess_dataset

    root = tmp_path_factory.mktemp("ddp")
    env = {"cctr_raw": root / "raw", "cctr_preprocessed": root / "pre", "cctr_results": root / "res"}
    monkeypatch = pytest.MonkeyPatch()
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    generate_phantom_dataset(env["cctr_raw"], dataset_id=7, name="TinyTrain", num_training=6, num_test=1, seed=3,
                             config=PhantomConfig.tiny())
    plan_and_preprocess_dataset("7", settings=SMALL_CPU_PLAN, device_name="cpu", progress=False)
    yield env
    monkeypatch.undo()


def _command(*words: str, processes: int = 1, settings: tuple[str, ...] = ()) -> list[str]:
    line = [sys.executable, "-m", "cctrnet.cli.train", "7", "--labeled", "2", "--device", "cpu", "--threads", "1",
            "--no-progress", *words, "--set", *FAST_SET, *settings]
    return line + (["--num-processes", str(processes)] if processes > 1 else [])


def _run(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _folder(env, trainer: str, seed: int) -> Path:
    return Path(env["cctr_results"]) / "Dataset007_TinyTrain" / f"{trainer}__labeled2__seed{seed}"


def _history(folder: Path, name: str = "checkpoint_final.pth") -> dict[str, list[tuple[int, float]]]:
    return torch.load(folder / name, weights_only=True)["log"]


def _relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), 1e-12)


def test_two_processes_with_shared_sampling_give_the_losses_of_one_and_the_same_bank(tiny_dataset):
    iterations = 6
    _run(_command("--seed", "1", "--iterations", str(iterations), settings=("ddp_sampling=shared",)))
    one = _folder(tiny_dataset, "CCTRTrainer", 1)
    reference = one.with_name("one_process")
    one.rename(reference)
    result = _run(_command("--seed", "1", "--iterations", str(iterations), processes=2,
                           settings=("ddp_sampling=shared",)))
    two = _history(one)
    single = _history(reference)
    assert [i for i, _ in two["loss_total"]] == list(range(1, iterations + 1))
    for key, points in single.items():
        if not key.startswith("loss_"):
            continue
        tolerance = (TOTAL_LOSS_RELATIVE_TOLERANCE if key == "loss_total" else
                     CONTRASTIVE_RELATIVE_TOLERANCE if key.startswith("loss_scl") else TERM_RELATIVE_TOLERANCE)
        worst = max(_relative(a, b) for (_, a), (_, b) in zip(points, two[key]))
        assert worst <= tolerance, (key, worst, points, two[key])
    log = (one / "training_log.txt").read_text()
    assert f"replicas identical on 2 ranks at iteration {iterations}" in log  # weights and both memory banks
    assert log.count(f"it {iterations}: loss_total") == 1  # one writer
    assert torch.load(one / "checkpoint_final.pth", weights_only=True)["world_size"] == 2
    assert result.stdout.count("training CCTRTrainer on") == 1  # rank 1 prints nothing on stdout


def _wait_for_line(process: subprocess.Popen, log: Path, text: str) -> None:
    deadline = time.monotonic() + 300
    while not (log.exists() and text in log.read_text()):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"no {text!r} in {log}"
        time.sleep(0.2)


def _rank_processes(launcher_pid: int):
    import psutil

    ranks = {}
    for child in psutil.Process(launcher_pid).children():
        rank = child.environ().get("RANK")
        if rank is not None:
            ranks[int(rank)] = child
    return ranks


def test_sigterm_on_one_rank_stops_both_and_one_process_resumes_the_run(tiny_dataset):
    iterations = 12
    folder = _folder(tiny_dataset, "CCTRTrainer", 4)
    process = subprocess.Popen(_command("--seed", "4", "--iterations", str(iterations), processes=2),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_line(process, folder / "training_log.txt", " it 2:")
    ranks = _rank_processes(process.pid)
    assert sorted(ranks) == [0, 1]
    ranks[1].send_signal(signal.SIGTERM)  # one rank only: the other learns it at the next iteration
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr, stderr
    assert sum("stopped by SIGTERM" in line and not line.startswith("[rank") for line in stderr.splitlines()) == 1
    stopped_at = torch.load(folder / "checkpoint_latest.pth", weights_only=True)["iteration"]
    assert 2 <= stopped_at < iterations
    assert f"replicas identical on 2 ranks at iteration {stopped_at}" in (folder / "training_log.txt").read_text()
    _run(_command("--seed", "4", "--c"))  # another number of processes: one
    history = _history(folder)
    assert [i for i, _ in history["loss_total"]] == list(range(1, iterations + 1))
    assert "resumed with 1 process(es) from a checkpoint written by 2" in (folder / "training_log.txt").read_text()


def test_a_killed_rank_ends_the_run_with_a_message_and_leaves_no_process(tiny_dataset):
    import psutil

    folder = _folder(tiny_dataset, "LabeledOnlyTrainer", 5)
    process = subprocess.Popen(_command("-tr", "LabeledOnlyTrainer", "--seed", "5", "--iterations", "100000",
                                        processes=2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_line(process, folder / "training_log.txt", " it 2:")
    ranks = _rank_processes(process.pid)
    survivors = [ranks[0], *ranks[0].children(recursive=True)]
    ranks[1].send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=SECONDS_TO_END_AFTER_A_KILL)
    assert process.returncode == 1, stderr
    assert f"training rank 1 (pid {ranks[1].pid}) ended with killed by SIGKILL" in stderr, stderr
    time.sleep(0.5)
    alive = [p.pid for p in survivors if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes outlived the run: {alive}"
    if os.path.exists(f"/proc/{ranks[0].pid}"):
        assert psutil.Process(ranks[0].pid).status() == psutil.STATUS_ZOMBIE
