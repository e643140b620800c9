"""Torch thread count: the user's choice, else $OMP_NUM_THREADS, else the cores other processes leave free."""
import pytest

from cctrnet.utilities import cpu_threads


@pytest.fixture
def four_cores(monkeypatch):
    monkeypatch.setattr(cpu_threads, "usable_cores", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def _others_busy(monkeypatch, cores):
    monkeypatch.setattr(cpu_threads, "others_busy_cores", lambda seconds=0.0: cores)


@pytest.mark.parametrize("busy, expected", [(0.0, 4), (0.4, 4), (1.0, 3), (2.6, 1), (3.7, 1), (9.0, 1)])
def test_free_cores_from_other_processes(four_cores, monkeypatch, busy, expected):
    _others_busy(monkeypatch, busy)
    threads, note = cpu_threads.choose_cpu_threads()
    assert threads == expected
    assert (note is None) == (expected == 4)
    if note:
        assert "--threads" in note and f"{busy:.1f} of 4 cores" in note


def test_explicit_choice_and_environment_win(four_cores, monkeypatch):
    _others_busy(monkeypatch, 3.9)
    assert cpu_threads.choose_cpu_threads(3) == (3, None)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert cpu_threads.choose_cpu_threads() == (2, None)
    with pytest.raises(ValueError, match="at least 1"):
        cpu_threads.choose_cpu_threads(0)


def test_train_command_rejects_zero_threads(capsys):
    from cctrnet.cli.train import main

    assert main(["1", "--threads", "0"]) == 1
    assert "--threads must be at least 1" in capsys.readouterr().err
