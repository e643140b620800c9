"""Checkpoints: a truncated or corrupt file is named and the previous checkpoint is offered; saves keep one."""
import errno
import shlex
import subprocess

import pytest
import torch

from cctrnet.training.checkpoint import (CheckpointError, load_checkpoint, previous_checkpoint_path,
                                         save_checkpoint)


def _state(iteration: int) -> dict:
    return {"iteration": iteration, "network_weights": {"a": {"w": torch.full((4,), float(iteration))}}}


def test_keep_previous_keeps_exactly_the_replaced_checkpoint(tmp_path):
    path = tmp_path / "checkpoint_latest.pth"
    save_checkpoint(_state(1), path, keep_previous=True)
    assert not previous_checkpoint_path(path).exists()  # nothing to keep yet
    save_checkpoint(_state(2), path, keep_previous=True)
    save_checkpoint(_state(3), path, keep_previous=True)
    assert load_checkpoint(path)["iteration"] == 3
    assert load_checkpoint(previous_checkpoint_path(path))["iteration"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_latest.pth", "checkpoint_latest_previous.pth"]


def test_without_keep_previous_nothing_is_kept(tmp_path):
    path = tmp_path / "checkpoint_final.pth"
    save_checkpoint(_state(1), path)
    save_checkpoint(_state(2), path)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_final.pth"]


@pytest.mark.parametrize("keep_bytes", [0, 1, 100, 0.5, 0.99])
def test_a_truncated_checkpoint_names_the_file_and_offers_the_previous(tmp_path, keep_bytes):
    path = tmp_path / "checkpoint_latest.pth"
    save_checkpoint(_state(5), path, keep_previous=True)
    save_checkpoint(_state(6), path, keep_previous=True)
    data = path.read_bytes()
    cut = int(len(data) * keep_bytes) if isinstance(keep_bytes, float) else keep_bytes
    path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "truncated or corrupt" in message
    previous = previous_checkpoint_path(path)
    assert info.value.previous == previous
    assert f"{previous} (iteration 5)" in message
    # the offered command works: after it, the checkpoint loads at the previous iteration
    command = message.split("put it in place with: ")[1]
    subprocess.run(shlex.split(command), check=True)
    assert load_checkpoint(path)["iteration"] == 5


def test_a_corrupt_checkpoint_without_previous_says_so(tmp_path):
    path = tmp_path / "checkpoint_latest.pth"
    save_checkpoint(_state(1), path)
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 50)  # a zip header and nothing behind it
    with pytest.raises(CheckpointError, match="no previous checkpoint is kept") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and info.value.previous is None


class NotAllowed:
    """A class weights_only=True refuses to unpickle."""


def test_a_foreign_pickle_is_refused_by_weights_only(tmp_path):
    path = tmp_path / "checkpoint_latest.pth"
    torch.save({"iteration": 1, "object": NotAllowed()}, path)  # loading this would need arbitrary unpickling
    with pytest.raises(CheckpointError, match="cannot be read as a checkpoint"):
        load_checkpoint(path)


def test_a_missing_checkpoint_offers_the_previous(tmp_path):
    path = tmp_path / "checkpoint_latest.pth"
    save_checkpoint(_state(1), path, keep_previous=True)
    save_checkpoint(_state(2), path, keep_previous=True)
    path.unlink()
    with pytest.raises(CheckpointError, match="no checkpoint there.*iteration 1"):
        load_checkpoint(path)


def test_a_full_disk_while_saving_keeps_both_checkpoints(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_latest.pth"
    save_checkpoint(_state(1), path, keep_previous=True)
    save_checkpoint(_state(2), path, keep_previous=True)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full(state, f, *args, **kwargs):
        with open(f, "wb") as out:
            out.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match="checkpoint_latest.pth") as info:
        save_checkpoint(_state(3), path, keep_previous=True)
    assert info.value.errno == errno.ENOSPC
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temporary left, nothing changed

