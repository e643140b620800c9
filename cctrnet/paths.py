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
