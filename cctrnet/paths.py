"""Where raw datasets, preprocessed data and trained models live.

Set by the environment variables ``cctr_raw``, ``cctr_preprocessed`` and ``cctr_results``; when one is
unset, a folder of that name under the current working directory is used and this is said once on
stderr, so a new user needs no set-up.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

_ENV_NAMES = ("cctr_raw", "cctr_preprocessed", "cctr_results")
_already_said: set[str] = set()


def _folder(env_name: str) -> Path:
    value = os.environ.get(env_name)
    if value:
        return Path(value).expanduser().resolve()
    default = (Path.cwd() / env_name).resolve()
    if env_name not in _already_said:
        _already_said.add(env_name)
        print(f"[cctrnet] {env_name} is not set; using {default}", file=sys.stderr)
    return default


def folder_origin(env_name: str) -> str:
    """How the folder of ``env_name`` is chosen now: the variable's value, or the default under the cwd."""
    if os.environ.get(env_name):
        return f"set by the environment variable {env_name}"
    return f"the default ./{env_name} under the current directory, as the environment variable {env_name} is not set"


def _env_name_of(root: Path) -> str | None:
    """Which of the three variables' folders ``root`` is (as they are chosen now), if any."""
    resolved = Path(root).expanduser().resolve()
    for env_name in _ENV_NAMES:
        value = os.environ.get(env_name)
        chosen = Path(value).expanduser().resolve() if value else (Path.cwd() / env_name).resolve()
        if chosen == resolved:
            return env_name
    return None


def describe_root(root: Path) -> str:
    """``root`` with how it was chosen, when it is one of the three folders; e.g. for error messages."""
    env_name = _env_name_of(root)
    resolved = Path(root).expanduser().resolve()
    return f"{resolved} ({folder_origin(env_name)})" if env_name else str(resolved)


def root_kind(root: Path) -> str:
    """"raw", "preprocessed" or "results" for the three folders, "" for any other folder."""
    env_name = _env_name_of(root)
    return env_name.removeprefix("cctr_") if env_name else ""


def raw_folder() -> Path:
    """Root of the raw datasets (``DatasetXXX_Name`` folders)."""
    return _folder("cctr_raw")


def preprocessed_folder() -> Path:
    """Root of fingerprints, plans and preprocessed cases."""
    return _folder("cctr_preprocessed")


def results_folder() -> Path:
    """Root of trained models."""
    return _folder("cctr_results")


# File names of the stage contracts inside cctr_preprocessed/DatasetXXX_Name/
DATASET_JSON = "dataset.json"
FINGERPRINT_JSON = "dataset_fingerprint.json"
PLANS_JSON = "plans.json"
