"""Seconds for ``--help`` and for an argument error of every command (the target: under 0.5 s each).

These were assertions inside tests (``--help`` under 2 s, 5 s); on a busy shared machine a subprocess start can take
longer than any fixed limit, so the tests keep only the functional part and the time is measured here.

    python benchmarks/cli_latency_benchmark.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = ["plan_and_preprocess", "register", "train", "predict", "evaluate", "determine_postprocessing"]
TARGET_SECONDS = 0.5


def seconds(arguments: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", *arguments], capture_output=True, text=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per command; the minimum is reported")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "cli_latency.json")
    args = parser.parse_args(argv)
    rows = []
    print(f"{'command':28s} {'--help s':>9s} {'bad argument s':>15s}")
    for command in COMMANDS:
        module = f"cctrnet.cli.{command}"
        help_s = min(seconds([module, "--help"]) for _ in range(args.repeats))
        error_s = min(seconds([module, "--no-such-option"]) for _ in range(args.repeats))
        rows.append({"command": f"cctr_{command}", "help_seconds": round(help_s, 3),
                     "argument_error_seconds": round(error_s, 3),
                     "under_target": help_s < TARGET_SECONDS and error_s < TARGET_SECONDS})
        print(f"cctr_{command:23s} {help_s:9.3f} {error_s:15.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "target_seconds": TARGET_SECONDS,
                                    "commands": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
