"""``cctr_predict --num-gpus N``: N worker processes on this machine, each with its own device and cases.

Each worker is ``cctr_predict`` itself (a fresh interpreter: no CUDA or thread state is shared) with the
same options, one share of the cases (``CasePart.split``: the workers' cases together are exactly the
parent's part) and its own device: on a CUDA machine worker g sees only the g-th visible GPU
(``CUDA_VISIBLE_DEVICES``), on a CPU machine each worker gets an equal share of the free cores
(``cctrnet/utilities/cpu_threads.py``; ``--threads`` sets the threads of each worker). A worker that fails
does not stop the others; the exit status is the worst of the workers', and ``--continue`` fills in what a
failed worker left undone.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Sequence

from cctrnet.inference.parts import CasePart

CUDA_DEVICES_VARIABLE = "CUDA_VISIBLE_DEVICES"
EXIT_KILLED = 1  # the status reported for a worker ended by a signal


@dataclass(frozen=True)
class WorkerPlan:
    """One worker process: its share of the cases, its device and, on CUDA, the GPU it sees."""

    part: CasePart
    device: str  # "cuda" or "cpu"
    threads: int
    visible_gpu: str | None  # the CUDA_VISIBLE_DEVICES entry of its GPU


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (ids or UUIDs)."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get(CUDA_DEVICES_VARIABLE)
    if listed is not None and listed.strip():
        return [entry.strip() for entry in listed.split(",") if entry.strip()][: torch.cuda.device_count()]
    return [str(index) for index in range(torch.cuda.device_count())]


def plan_workers(part: CasePart, num_workers: int, device_name: str, threads_requested: int | None) -> list[WorkerPlan]:
    """Where each of ``num_workers`` workers runs; ValueError when the machine cannot give it."""
    from cctrnet.utilities.cpu_threads import choose_cpu_threads

    gpus = visible_gpus() if device_name in ("auto", "cuda") else []
    if device_name == "cuda" and not gpus:
        raise ValueError("--device cuda was asked for, but torch sees no CUDA GPU (use --device cpu or auto)")
    if gpus and num_workers > len(gpus):
        raise ValueError(f"--num-gpus {num_workers}, but this machine shows {len(gpus)} GPU(s) "
                         f"({CUDA_DEVICES_VARIABLE}={','.join(gpus)})")
    if threads_requested is not None:
        threads = threads_requested
    else:
        free, _ = choose_cpu_threads()
        threads = max(1, free // num_workers)
    return [WorkerPlan(share, "cuda" if gpus else "cpu", threads, gpus[g] if gpus else None)
            for g, share in enumerate(part.split(num_workers))]


def run_workers(plans: Sequence[WorkerPlan], worker_arguments: Sequence[str]) -> int:
    """Start every worker (``python -m cctrnet.cli.predict ARGS`` plus its part, device and threads), wait.

    Returns the highest exit status. Ctrl-C or SIGTERM stops every worker.
    """
    processes = []
    try:
        for plan in plans:
            environment = dict(os.environ, OMP_NUM_THREADS=str(plan.threads))
            if plan.visible_gpu is not None:
                environment[CUDA_DEVICES_VARIABLE] = plan.visible_gpu
            command = [sys.executable, "-m", "cctrnet.cli.predict", *worker_arguments,
                       "-num_parts", str(plan.part.num_parts), "-part_id", str(plan.part.part_id),
                       "--device", plan.device, "--threads", str(plan.threads), "--quiet"]
            processes.append(subprocess.Popen(command, env=environment))
            where = f"GPU {plan.visible_gpu}" if plan.visible_gpu is not None else f"CPU, {plan.threads} thread(s)"
            print(f"worker {len(processes) - 1}: {plan.part.describe()} on {where} (pid {processes[-1].pid})",
                  flush=True)
        codes = [process.wait() for process in processes]
    except BaseException:  # KeyboardInterrupt, SystemExit from SIGTERM: no worker outlives the command
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait()
        raise
    for index, code in enumerate(codes):
        if code != 0:
            print(f"worker {index} ({plans[index].part.describe()}) ended with exit status {code}; "
                  "rerun with --continue to predict what it left", file=sys.stderr)
    return max((code if code >= 0 else EXIT_KILLED for code in codes), default=0)
