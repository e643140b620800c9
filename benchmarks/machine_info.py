"""What a benchmark result was measured on: machine, Python, library versions, cctrnet commit, date."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent


def installed_version(distribution: str, python_executable: str | None = None) -> str | None:
    """Version of an installed distribution, in this interpreter or in ``python_executable``'s environment."""
    if python_executable is None:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            return None
    code = f"from importlib import metadata; print(metadata.version({distribution!r}))"
    result = subprocess.run([python_executable, "-c", code], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def git_commit(repository: Path = REPOSITORY_ROOT) -> dict[str, object]:
    """HEAD of the checkout and whether the working tree differs from it."""
    def git(*arguments: str) -> str | None:
        result = subprocess.run(["git", "-C", str(repository), *arguments], capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "uncommitted_changes": bool(status) if status is not None else None}


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_info() -> dict[str, object]:
    """A JSON-ready description of this machine and environment."""
    try:
        usable_cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        usable_cpus = os.cpu_count()
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpu_count": usable_cpus,
        "load_average_1_5_15min": list(os.getloadavg()),
        "python": sys.version.split()[0],
        "torch": installed_version("torch"),
        "numpy": installed_version("numpy"),
        "SimpleITK": installed_version("SimpleITK"),
        "cctrnet": installed_version("cctrnet"),
        "cctrnet_git": git_commit(),
    }
