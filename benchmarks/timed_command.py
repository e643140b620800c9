"""Run a command line, time it, and time its phases from the moment marker lines appear in its output."""
from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence


@dataclass(frozen=True)
class PhaseMarker:
    """A phase ends when a line of the command's output matches ``end_pattern`` (a regex, searched).

    ``end_pattern=None`` marks the last phase, which ends when the command exits.
    """
    name: str
    end_pattern: str | None


@dataclass
class TimedRun:
    command: list[str]
    return_code: int
    wall_seconds: float
    cpu_seconds: float  # user + system time of the command and every process it waited for
    phase_seconds: dict[str, float | None]  # None: the phase's marker never appeared
    load_average_1min_before: float
    load_average_1min_after: float
    log_path: str
    output_tail: list[str] = field(default_factory=list)
    timed_out: bool = False

    @property
    def succeeded(self) -> bool:
        return self.return_code == 0 and not self.timed_out


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def phase_durations(marker_times: Mapping[str, float | None], markers: Sequence[PhaseMarker],
                    end_seconds: float) -> dict[str, float | None]:
    """Each phase's seconds from the times its end markers were seen (seconds since the start).

    A phase whose marker was not seen gets None, and the next seen phase absorbs its time.
    """
    durations: dict[str, float | None] = {}
    previous_end = 0.0
    for marker in markers:
        end = end_seconds if marker.end_pattern is None else marker_times.get(marker.name)
        if end is None:
            durations[marker.name] = None
            continue
        durations[marker.name] = max(0.0, end - previous_end)
        previous_end = end
    return durations


def run_timed(command: Sequence[str], env: Mapping[str, str], markers: Sequence[PhaseMarker], log_path: Path,
              timeout_seconds: float, tail_lines: int = 30) -> TimedRun:
    """Run ``command`` with ``env`` (stdout and stderr merged into ``log_path``) and time it and its phases.

    The child is made to flush every line (PYTHONUNBUFFERED) so marker times are the times the lines were
    written, not the times a buffer filled.
    """
    env = {**env, "PYTHONUNBUFFERED": "1"}
    compiled = [(m.name, re.compile(m.end_pattern)) for m in markers if m.end_pattern is not None]
    marker_times: dict[str, float | None] = {}
    tail: list[str] = []
    log_path.parent.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    cpu_before = _children_cpu_seconds()
    start = time.perf_counter()
    with open(log_path, "w") as log, subprocess.Popen(list(command), env=dict(env), stdout=subprocess.PIPE,
                                                      stderr=subprocess.STDOUT, text=True, errors="replace",
                                                      bufsize=1, start_new_session=True) as process:
        # a watchdog, because a silent hung command would block the line loop below forever; it ends the
        # command's own process group, so worker processes that hold the output pipe open go too
        timed_out = threading.Event()

        def kill_process_group() -> None:
            timed_out.set()
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        watchdog = threading.Timer(timeout_seconds, kill_process_group)
        watchdog.start()
        try:
            assert process.stdout is not None
            for line in process.stdout:
                now = time.perf_counter() - start
                log.write(line)
                tail = (tail + [line.rstrip("\n")])[-tail_lines:]
                for name, pattern in compiled:
                    if name not in marker_times and pattern.search(line):
                        marker_times[name] = now
            return_code = process.wait()
        finally:
            watchdog.cancel()
    wall_seconds = time.perf_counter() - start
    return TimedRun(command=list(command), return_code=return_code, wall_seconds=wall_seconds,
                    cpu_seconds=_children_cpu_seconds() - cpu_before,
                    phase_seconds=phase_durations(marker_times, markers, wall_seconds),
                    load_average_1min_before=load_before, load_average_1min_after=os.getloadavg()[0],
                    log_path=str(log_path), output_tail=tail, timed_out=timed_out.is_set())
