"""How many CPU threads torch may use: all cores on an idle machine, fewer when other work keeps cores busy.

Why: torch's CPU kernels synchronise their threads many times per step. With more threads than free
cores, threads wait for each other's time slices; on the 2-core development machine a training step with
2 threads took 4.7 s while another process kept one core busy, against 0.3 s with 1 thread.
The busy cores are measured over a short window when the command starts (not the 1-minute load average,
which still counts a pipeline's previous step, e.g. preprocessing, a minute after it ended).
"""
from __future__ import annotations

import os
import time

THREADS_ENVIRONMENT_VARIABLE = "OMP_NUM_THREADS"
MEASUREMENT_SECONDS = 0.3  # window over which other processes' CPU use is measured at start-up
ROUNDING_MARGIN = 0.5  # a core that other processes keep busy half of the time or more counts as busy


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def own_cpu_seconds() -> float:
    """CPU seconds of this process and its live children (e.g. data-loading workers)."""
    import psutil

    total = 0.0
    me = psutil.Process()
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has been busy (all processes) since boot."""
    import psutil

    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def others_busy_cores(seconds: float = MEASUREMENT_SECONDS) -> float:
    """Cores that other processes kept busy during ``seconds`` of our idling."""
    busy, own, start = busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
    time.sleep(seconds)
    elapsed = time.perf_counter() - start
    return max(0.0, (busy_cpu_seconds() - busy) - (own_cpu_seconds() - own)) / elapsed


def choose_cpu_threads(requested: int | None = None) -> tuple[int, str | None]:
    """(threads, note): ``requested``, else $OMP_NUM_THREADS, else the cores other processes leave free now.

    ``note`` explains a reduction below the number of cores (None when all cores are used or the user chose).
    """
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads must be at least 1, got {requested}")
        return requested, None
    from_environment = os.environ.get(THREADS_ENVIRONMENT_VARIABLE, "").strip()
    if from_environment.isdigit() and int(from_environment) > 0:
        return int(from_environment), None
    cores = usable_cores()
    busy = others_busy_cores()
    free = max(1, min(cores, int(cores - busy + ROUNDING_MARGIN)))
    if free >= cores:
        return cores, None
    return free, (f"other processes keep about {busy:.1f} of {cores} cores busy: using {free} torch thread(s), "
                  "since more threads than free cores can make each step many times slower; --threads N to choose")


def apply_cpu_threads(requested: int | None = None) -> int:
    """Set torch's thread count from ``choose_cpu_threads`` and print the note, if any, on stderr."""
    import sys

    import torch

    threads, note = choose_cpu_threads(requested)
    torch.set_num_threads(threads)
    if note:
        print(note, file=sys.stderr)
    return threads
