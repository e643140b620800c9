"""Checkpoints: written atomically, loaded with ``weights_only=True``, holding everything a resume needs.

Random states are stored in forms ``torch.load(weights_only=True)`` accepts: torch's as uint8 tensors,
Python's as nested tuples, numpy generators' as their plain ``bit_generator.state`` dicts.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cctrnet.utilities.file_io import atomic_path


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no checkpoint there")
    return torch.load(path, map_location=device, weights_only=True)


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
