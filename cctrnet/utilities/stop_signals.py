"""Ctrl-C (SIGINT) and SIGTERM as requests to stop: a loop finishes its step, saves, and the command exits.

SIGTERM is what ``kill`` and cluster schedulers send; by default it ends Python at once, without ``finally``
blocks, so a checkpoint is lost and worker processes are left behind. The shell convention for the exit
status of a command stopped by signal N is 128 + N: 130 for Ctrl-C, 143 for SIGTERM.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_code(signum: int) -> int:
    return 128 + int(signum)


def signal_name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


class StopRequested(BaseException):
    """SIGTERM arrived outside a loop that handles it (a BaseException, like KeyboardInterrupt)."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(signal_name(signum))
        self.signum = signum


def raise_on_sigterm() -> None:
    """From now on SIGTERM raises :class:`StopRequested` (so ``finally`` blocks run, as for Ctrl-C)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_stop)


def _raise_stop(signum: int, _frame: Any) -> None:
    raise StopRequested(signum)


class StopFlag:
    """Set by the first stop signal; a second one stops at once (the user insists)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None

    def handle(self, signum: int, _frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt if signum == signal.SIGINT else StopRequested(signum)
        self.signum = signum


@contextmanager
def deferred_stop_signals() -> Iterator[StopFlag]:
    """Within the block SIGINT and SIGTERM only set the yielded flag; the previous handlers come back after.

    Worker processes forked inside the block inherit the flag handler, so a Ctrl-C sent to the whole process
    group does not end them before the loop has closed them in order.
    """
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield flag
        return
    previous = {signum: signal.signal(signum, flag.handle) for signum in STOP_SIGNALS}
    try:
        yield flag
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
