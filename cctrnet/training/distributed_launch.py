"""Starting the processes of a data-parallel run, and joining one: ``cctr_train --num-processes N`` or torchrun.

- ``cctr_train ... --num-processes N`` (alias ``--num-gpus N``, which also requires N CUDA devices) starts N
  copies of the same command on this machine, each with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
  MASTER_PORT set, exactly as ``torchrun --nproc-per-node N -m cctrnet.cli.train ...`` does, and watches them;
- a process that finds WORLD_SIZE > 1 in its environment (from the line above, or from torchrun on one or
  several machines) joins the process group: NCCL on CUDA (GPU LOCAL_RANK), gloo on CPU.
"""
from __future__ import annotations

import argparse
import io
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Sequence, TextIO

if TYPE_CHECKING:  # torch loads only when a run starts: the parser answers --help before heavy imports
    import torch

    from cctrnet.training.distributed import Distributed

#: environment variables every process of a run needs (torchrun sets them; so does spawn_training)
ENVIRONMENT_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
STOP_EXIT_CODES = (128 + signal.SIGINT, 128 + signal.SIGTERM)  # a rank stopped by Ctrl-C or SIGTERM, after saving
PROCESS_FLAGS = ("--num-processes", "--num-gpus")


@dataclass(frozen=True)
class DistributedSettings:
    """Launch settings (not run settings: a run can be resumed with other values).

    ``timeout_seconds`` bounds how long a rank waits for the others in one collective (also rank 0
    computing missing registrations before training, while the others wait); a rank that *dies* is noticed
    at once (its sockets close, and the launcher watches its children). Environment:
    ``CCTR_DDP_TIMEOUT_SECONDS``.
    """

    timeout_seconds: float = 600.0
    stop_grace_seconds: float = 30.0  # after one rank failed: how long the others get to end before SIGKILL
    poll_seconds: float = 0.2  # how often the launcher looks at its children
    master_addr: str = "127.0.0.1"  # single-machine launch

    @classmethod
    def from_environment(cls) -> "DistributedSettings":
        text = os.environ.get("CCTR_DDP_TIMEOUT_SECONDS")
        if text is None:
            return cls()
        try:
            seconds = float(text)
        except ValueError:
            raise ValueError(f"CCTR_DDP_TIMEOUT_SECONDS must be a number of seconds, got {text!r}") from None
        if seconds <= 0:
            raise ValueError(f"CCTR_DDP_TIMEOUT_SECONDS must be positive, got {seconds}")
        return cls(timeout_seconds=seconds)


def launched_by_environment() -> bool:
    """Whether this process is one rank of a launched run (torchrun or ``--num-processes``)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def initialize_from_environment(device: torch.device, settings: DistributedSettings | None = None) -> Distributed:
    """Join the process group described by RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT.

    Backend: NCCL on CUDA (each process on GPU LOCAL_RANK), gloo on CPU.
    """
    import torch

    from cctrnet.training.distributed import current

    settings = settings if settings is not None else DistributedSettings.from_environment()
    missing = [key for key in ENVIRONMENT_KEYS if key not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={os.environ.get('WORLD_SIZE')} asks for data-parallel training, but "
                         f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set (start it with torchrun "
                         "or cctr_train --num-processes N)")
    rank, world_size, local_rank = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local_rank} but this machine has {torch.cuda.device_count()} CUDA devices")
        torch.cuda.set_device(local_rank)
    torch.distributed.init_process_group(backend, init_method="env://", rank=rank, world_size=world_size,
                                         timeout=timedelta(seconds=settings.timeout_seconds))
    return current()


def shutdown() -> None:
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


class _PrefixedStream(io.TextIOBase):
    """A text stream that starts every line with a prefix (stderr of ranks other than 0)."""

    def __init__(self, stream: TextIO, prefix: str):
        self.stream, self.prefix, self._at_line_start = stream, prefix, True

    def write(self, text: str) -> int:
        out = []
        for piece in text.splitlines(keepends=True):
            if self._at_line_start:
                out.append(self.prefix)
            out.append(piece)
            self._at_line_start = piece.endswith("\n")
        self.stream.write("".join(out))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def quiet_other_ranks(dist: Distributed) -> None:
    """Ranks other than 0 print nothing on stdout and mark their stderr lines with ``[rank r]``."""
    if dist.is_main:
        return
    sys.stdout = open(os.devnull, "w")
    sys.stderr = _PrefixedStream(sys.stderr, f"[rank {dist.rank}] ")


# --- the launcher (cctr_train --num-processes N) ---------------------------------------------------
def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def spawn_training(arguments: Sequence[str], num_processes: int, threads: int | None,
                   settings: DistributedSettings | None = None, module: str = "cctrnet.cli.train") -> int:
    """Start ``num_processes`` ranks of ``python -m module arguments`` on this machine and watch them.

    - Ctrl-C or SIGTERM reaching this launcher is passed on to every rank (each in its own session, so a
      terminal's Ctrl-C reaches them once, through here); they stop after the same iteration, rank 0 saves.
    - a rank that ends with an error or is killed: the others are terminated (SIGTERM, then SIGKILL after
      ``stop_grace_seconds``), with a message naming it; nothing waits for a collective time-out.
    Returns the exit status: 0, the ranks' stop status (130/143), or 1 after a failure.
    """
    settings = settings if settings is not None else DistributedSettings.from_environment()
    port = _free_port(settings.master_addr)
    base_env = dict(os.environ)
    if threads is None and "OMP_NUM_THREADS" not in base_env:  # share the cores between the ranks
        base_env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // num_processes))
    children: list[subprocess.Popen] = []
    for rank in range(num_processes):
        env = {**base_env, "RANK": str(rank), "WORLD_SIZE": str(num_processes), "LOCAL_RANK": str(rank),
               "LOCAL_WORLD_SIZE": str(num_processes), "MASTER_ADDR": settings.master_addr, "MASTER_PORT": str(port)}
        children.append(subprocess.Popen([sys.executable, "-m", module, *arguments], env=env, start_new_session=True))
    print(f"[cctrnet] started {num_processes} training processes (pids "
          f"{', '.join(str(c.pid) for c in children)}); rank 0 writes the model folder", file=sys.stderr)
    received: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        received.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _watch(children, settings)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _watch(children: list[subprocess.Popen], settings: DistributedSettings) -> int:
    stopping_since: float | None = None
    while True:
        codes = [child.poll() for child in children]
        failed = [(rank, code) for rank, code in enumerate(codes) if code is not None and code not in (0, *STOP_EXIT_CODES)]
        if failed:
            rank, code = failed[0]
            _terminate(children, settings)
            print(f"error: training rank {rank} (pid {children[rank].pid}) ended with {describe_exit(code)}; the other "
                  f"{len(children) - 1} rank(s) were stopped. The model folder keeps its last checkpoint_latest.pth; "
                  "resume with the same command and --c", file=sys.stderr)
            return 1
        if all(code is not None for code in codes):
            stops = [code for code in codes if code in STOP_EXIT_CODES]
            return stops[0] if stops else 0
        if any(code is not None for code in codes):  # some ended well (or stopped), the others should follow
            stopping_since = stopping_since if stopping_since is not None else time.monotonic()
            if time.monotonic() - stopping_since > settings.timeout_seconds + settings.stop_grace_seconds:
                late = [rank for rank, code in enumerate(codes) if code is None]
                _terminate(children, settings)
                print(f"error: rank(s) {late} did not end after the others did; they were stopped", file=sys.stderr)
                return 1
        time.sleep(settings.poll_seconds)


def _terminate(children: list[subprocess.Popen], settings: DistributedSettings) -> None:
    """SIGTERM to the ranks still running, SIGKILL to whatever is left of their sessions after the grace time."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + settings.stop_grace_seconds
    while time.monotonic() < deadline and any(child.poll() is None for child in children):
        time.sleep(settings.poll_seconds)
    for child in children:  # each rank leads its own process group: this takes its data-loader workers too
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        child.wait()


# --- the command line ----------------------------------------------------------------------------
def add_process_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--num-processes", type=int, default=None, metavar="N",
                       help="data-parallel training in N processes on this machine, each with 1/N of the plan's "
                            "batch: one GPU each on CUDA (NCCL), CPU processes otherwise (gloo); several "
                            "machines: torchrun (documentation/commands.md)")
    group.add_argument("--num-gpus", type=int, default=None, metavar="N",
                       help="--num-processes N that also requires N CUDA devices (nnU-Net's name)")


def arguments_without_process_flags(arguments: Sequence[str]) -> list[str]:
    """The command line of one rank: the launcher's, less ``--num-processes``/``--num-gpus`` (argparse prefixes too)."""
    out: list[str] = []
    skip_next = False
    for token in arguments:
        if skip_next:
            skip_next = False
            continue
        flag = token.split("=", 1)[0]
        if flag.startswith("--num-") and any(f.startswith(flag) for f in PROCESS_FLAGS):
            skip_next = "=" not in token
            continue
        out.append(token)
    return out


class LaunchError(ValueError):
    """A process count or launch environment that cannot start or join a run (the message says which flag)."""


def start_or_join_processes(args: argparse.Namespace, arguments: Sequence[str]) -> int | None:
    """``--num-processes N > 1``: start the ranks, watch them, return the exit status. A rank (WORLD_SIZE > 1 in
    the environment): join the process group and return None, as does a single-process run. Raises LaunchError
    for a count or environment that cannot work."""
    import torch

    from cctrnet.utilities.device import resolve_device

    wants_gpus = args.num_gpus is not None
    n = args.num_gpus if wants_gpus else args.num_processes
    flag = "--num-gpus" if wants_gpus else "--num-processes"
    if n is not None and n < 1:
        raise LaunchError(f"{flag} needs a positive number, got {n}")
    if wants_gpus:
        found = torch.cuda.device_count()
        if args.device == "cpu" or found < n:
            raise LaunchError(f"--num-gpus {n} needs {n} CUDA devices, torch sees {found}"
                        f"{' (and --device cpu was given)' if args.device == 'cpu' else ''}; for CPU processes "
                        f"use --num-processes {n}")
    if launched_by_environment():
        if n is not None and n > 1:
            raise LaunchError(f"{flag} {n} inside a launched run (WORLD_SIZE={os.environ['WORLD_SIZE']} is set, e.g. by "
                        f"torchrun): give either, not both")
        try:
            dist = initialize_from_environment(resolve_device(args.device))
        except (ValueError, RuntimeError) as error:
            raise LaunchError(f"cannot join the data-parallel run: {error}") from error
        quiet_other_ranks(dist)
        import atexit

        atexit.register(shutdown)
        return None
    if n is None or n == 1:
        return None
    return spawn_training(arguments_without_process_flags(arguments), n, args.threads)
