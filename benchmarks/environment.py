"""Where the benchmarks keep their data and nnU-Net: shared by every benchmark script."""
from __future__ import annotations

import os
from pathlib import Path

# nnU-Net v2's own virtual environment (benchmarks/nnunet_env.sh creates it); never cctrnet's environment
NNUNET_VENV = Path(os.environ.get("CCTR_BENCH_NNUNET_VENV", "~/.cache/cctrnet-bench/venv-nnunet")).expanduser()


def point_paths_to(work_dir: Path) -> None:
    """Point cctrnet's raw, preprocessed and results folders (this process and its children) into ``work_dir``."""
    for name in ("raw", "preprocessed", "results"):
        os.environ[f"cctr_{name}"] = str(Path(work_dir) / name)
