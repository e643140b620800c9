"""What a model folder records about its run: settings, length, schedules, and whether it finished.

``config.json`` is the record; ``checkpoint_final.pth`` exists exactly when the run reached its recorded
length (an extension moves it aside to ``checkpoint_final_<iterations>.pth`` before training on).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cctrnet.training.schedules import ScheduleSpan
from cctrnet.utilities.file_io import atomic_path, load_json

CONFIG_JSON = "config.json"
LATEST = "checkpoint_latest.pth"
FINAL = "checkpoint_final.pth"


@dataclass
class RunRecord:
    folder: Path
    config: dict[str, Any]

    @property
    def num_iterations(self) -> int:
        return int(self.config["num_iterations"])

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.config["settings"])

    @property
    def schedule(self) -> ScheduleSpan:
        # folders written before extensions existed: one span over the whole run
        if "schedule" in self.config:
            return ScheduleSpan.from_dict(self.config["schedule"])
        return ScheduleSpan.for_new_run(self.num_iterations)

    @property
    def extensions(self) -> list[dict[str, Any]]:
        return list(self.config.get("extensions", []))

    @property
    def finished(self) -> bool:
        return (self.folder / FINAL).exists()

    @property
    def has_checkpoint(self) -> bool:
        return (self.folder / LATEST).exists()


def read_run_record(folder: Path) -> RunRecord | None:
    """The run recorded in ``folder``, or None when it holds no config.json."""
    path = Path(folder) / CONFIG_JSON
    if not path.exists():
        return None
    try:
        config = load_json(path)
        int(config["num_iterations"]), dict(config["settings"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a readable run record ({error}); delete the folder to start over") from None
    return RunRecord(Path(folder), config)


def setting_differences(recorded: dict[str, Any], requested: dict[str, Any]) -> list[str]:
    """``key: recorded -> requested`` for every requested setting that differs from the recorded one."""
    missing = object()
    return [f"{key}: {recorded.get(key)!r} -> {value!r}" for key, value in sorted(requested.items())
            if recorded.get(key, missing) != value]


def keep_final_checkpoint(folder: Path, iterations: int) -> str:
    """Move ``checkpoint_final.pth`` aside as ``checkpoint_final_<iterations>.pth``; returns the new name.

    Copied atomically before the original is removed, so a kill in between leaves both, never neither.
    """
    kept = f"checkpoint_final_{iterations}.pth"
    with atomic_path(Path(folder) / kept) as tmp:
        shutil.copyfile(Path(folder) / FINAL, tmp)
    (Path(folder) / FINAL).unlink()
    return kept
