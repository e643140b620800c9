"""Pieces shared by the command-line entry points (kept free of heavy imports)."""
from __future__ import annotations

import argparse
import os
import sys


def default_num_processes() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def add_device_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help=f"{what}: auto picks cuda when a GPU is present, else cpu (default: auto)")


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads of torch (default: $OMP_NUM_THREADS, else the cores that other "
                             "processes leave free)")


def fail(message: str, code: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code
