"""How many CPU threads torch may use: all cores on an idle machine, fewer when other work keeps cores busy.

Why: torch's CPU kernels synchronise their threads many times per step. With more threads than free
cores, threads wait for each other's time slices; on the 2-core development machine a training step with
2 threads took 4.7 s while another process kept one core busy, against 0.3 s with 1 thread.
"""
from __future__ import annotations

import os

THREADS_ENVIRONMENT_VARIABLE = "OMP_NUM_THREADS"
LOAD_MARGIN = 0.5  # a core counts as busy when the 1-minute load average exceeds this share of it


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def choose_cpu_threads(requested: int | None = None) -> tuple[int, str | None]:
    """(threads, note): ``requested``, else $OMP_NUM_THREADS, else the cores the load average leaves free.

    ``note`` explains a reduction below the number of cores (None when all cores are used or the user chose).
    """
    cores = usable_cores()
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads must be at least 1, got {requested}")
        return requested, None
    from_environment = os.environ.get(THREADS_ENVIRONMENT_VARIABLE, "").strip()
    if from_environment.isdigit() and int(from_environment) > 0:
        return int(from_environment), None
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cores, None
    free = max(1, min(cores, int(cores - busy + LOAD_MARGIN)))
    if free >= cores:
        return cores, None
    return free, (f"other processes keep about {busy:.1f} of {cores} cores busy (1-minute load average): using "
                  f"{free} torch thread(s), since more threads than free cores can make each step many times "
                  "slower; --threads N to choose")


def apply_cpu_threads(requested: int | None = None) -> int:
    """Set torch's thread count from ``choose_cpu_threads`` and print the note, if any, on stderr."""
    import sys

    import torch

    threads, note = choose_cpu_threads(requested)
    torch.set_num_threads(threads)
    if note:
        print(note, file=sys.stderr)
    return threads
