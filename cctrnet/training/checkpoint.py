"""Checkpoints: written atomically, loaded with ``weights_only=True``, holding everything a resume needs.

``save_checkpoint(..., keep_previous=True)`` (the trainer's ``checkpoint_latest.pth``) first keeps the file it
replaces as ``<name>_previous.pth`` (``checkpoint_latest_previous.pth``): a hard link (or a copy) made under a
temporary name and renamed, so at every moment each of the two names holds a complete checkpoint. A checkpoint that
cannot be read (truncated, corrupt, not a checkpoint) raises :class:`CheckpointError`, which names the file and,
when one exists and reads, offers the previous checkpoint with its iteration and the command that puts it in place.
Nothing falls back silently: a resume from an older iteration is the user's choice.

Random states are stored in forms ``torch.load(weights_only=True)`` accepts: torch's as uint8 tensors,
Python's as nested tuples, numpy generators' as their plain ``bit_generator.state`` dicts.
"""
from __future__ import annotations

import errno
import os
import random
import shlex
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cctrnet.utilities.file_io import atomic_path


class CheckpointError(ValueError):
    """A checkpoint file cannot be used; the message names it and, when there is one, the previous checkpoint."""

    def __init__(self, message: str, path: Path, previous: Path | None = None):
        super().__init__(message)
        self.path = Path(path)
        self.previous = previous


def previous_checkpoint_path(path: Path) -> Path:
    """Where ``save_checkpoint(..., keep_previous=True)`` keeps the checkpoint it replaced."""
    path = Path(path)
    return path.with_name(f"{path.stem}_previous{path.suffix}")


def save_checkpoint(state: dict[str, Any], path: Path, keep_previous: bool = False) -> None:
    """Write ``state`` to ``path`` atomically; with ``keep_previous`` the replaced file becomes the previous one.

    The new checkpoint is written completely (under a temporary name) before the previous one is touched, so a
    failed write (disk full) leaves both the old file and its previous copy as they were.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            torch.save(state, tmp)
        except RuntimeError as error:  # torch's zip writer reports a full disk as a RuntimeError
            raise OSError(errno.EIO, str(error).strip().splitlines()[0] if str(error).strip() else "torch.save failed") from error
        if keep_previous and path.exists():
            _keep_as_previous(path)


def _keep_as_previous(path: Path) -> None:
    previous = previous_checkpoint_path(path)
    with atomic_path(previous) as tmp:
        tmp.unlink()
        try:
            os.link(path, tmp)  # no copy of the bytes where the filesystem allows it
        except OSError:
            shutil.copyfile(path, tmp)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; raises :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no checkpoint there" + _previous_offer(path), path, _readable_previous(path))
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # truncated zip, foreign pickle, unreadable file: all mean "not usable"
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: cannot be read as a checkpoint, it is truncated or corrupt "
                              f"({type(error).__name__}: {detail[:200]})" + _previous_offer(path),
                              path, _readable_previous(path)) from None
    if not isinstance(state, dict) or "iteration" not in state:
        raise CheckpointError(f"{path}: not a cctrnet training checkpoint (no iteration recorded)"
                              + _previous_offer(path), path, _readable_previous(path))
    return state


def checkpoint_iteration(path: Path) -> int | None:
    """The iteration recorded in a readable checkpoint, else None."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["iteration"])
    except Exception:
        return None


def _readable_previous(path: Path) -> Path | None:
    previous = previous_checkpoint_path(path)
    if previous == path or not previous.exists() or checkpoint_iteration(previous) is None:
        return None
    return previous


def _previous_offer(path: Path) -> str:
    previous = previous_checkpoint_path(path)
    if not previous.exists():
        return "; no previous checkpoint is kept beside it"
    iteration = checkpoint_iteration(previous)
    if iteration is None:
        return f"; the previous checkpoint {previous} cannot be read either"
    return (f"; the previous checkpoint {previous} (iteration {iteration}) reads; to continue from it, put it in "
            f"place with: cp {shlex.quote(str(previous))} {shlex.quote(str(path))}")


def global_random_state() -> dict[str, Any]:
    """Random states of torch (CPU and CUDA), numpy's legacy global generator and Python."""
    legacy = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy_legacy": {"key": torch.from_numpy(legacy[1].astype(np.int64)), "pos": int(legacy[2]),
                         "has_gauss": int(legacy[3]), "cached_gaussian": float(legacy[4])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_global_random_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(_to_tuple(state["python"]))
    legacy = state["numpy_legacy"]
    np.random.set_state(("MT19937", legacy["key"].numpy().astype(np.uint32), legacy["pos"], legacy["has_gauss"],
                         legacy["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _to_tuple(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_to_tuple(v) for v in value)
    return value
