"""The work folder's layout and its result files: one JSON per job (written with save_json); a rerun skips them."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DEFAULT_WORK_DIR = Path(__file__).resolve().parent.parent / "results" / "reproduce"


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


class WorkFolder:
    """``work/``: cctr_raw, cctr_preprocessed (shared by all jobs), jobs/<id>.json, runs/<id>/ (models, logs)."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()

    @property
    def raw(self) -> Path:
        return self.root / "cctr_raw"

    @property
    def preprocessed(self) -> Path:
        return self.root / "cctr_preprocessed"

    def run_folder(self, job_id: str) -> Path:
        return self.root / "runs" / job_id

    def result_path(self, job_id: str) -> Path:
        return self.root / "jobs" / f"{job_id}.json"

    def prepare_path(self, dataset: str) -> Path:
        return self.root / "prepare" / f"{dataset}.json"

    def environment(self, results: Path | None = None) -> dict[str, str]:
        """Environment of a cctrnet subprocess: every folder inside the work folder."""
        env = dict(os.environ)
        env.update({"cctr_raw": str(self.raw), "cctr_preprocessed": str(self.preprocessed),
                    "cctr_results": str(results or self.root / "cctr_results"), "PYTHONUNBUFFERED": "1"})
        return env

    def load_result(self, job_id: str) -> dict | None:
        return read_json(self.result_path(job_id))

    def finished(self, job_id: str) -> bool:
        """A job counts as done when its result says ok; failed jobs are retried by a rerun."""
        result = self.load_result(job_id)
        return bool(result) and result.get("status") == "ok"

    def all_results(self) -> dict[str, dict]:
        folder = self.root / "jobs"
        results = {}
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            data = read_json(path)
            if data is not None:
                results[path.stem] = data
        return results
