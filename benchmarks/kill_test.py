"""Kill tests (issue 13): SIGKILL cctr_plan_and_preprocess and cctr_train at random moments, rerun or resume,
and compare the final outputs with an uninterrupted run.

- ``plan_and_preprocess``: a tiny phantom is planned, preprocessed and registered once without interruption
  (the reference). Then, in a second folder, the same command is started and SIGKILLed until ``--kills``
  kills have landed (a run that finishes first does not count), each time rerun; a last run completes. Every
  preprocessed array and every registration record (its timing field left out) and transform must equal the
  reference's, byte for byte.
- ``train``: a short LabeledOnlyTrainer run on one torch thread and no loader workers (bitwise reproducible) is
  the reference; the same run is killed until ``--kills`` kills have landed and resumed with ``--c`` (or
  restarted when no checkpoint was written yet) until it finishes. The final weights must equal the
  reference's bitwise and the logged losses to the iteration.

The kills are spread over the whole work: kill i of n aims at a point drawn uniformly in the i-th n-th of
the first ``KILL_SHARE`` of the work (stratified), and is sent when the rerun should reach it: after the
reference's time to its first output plus the share of the reference's remaining time between the work
already saved (files present; iterations in the checkpoint) and that point. A rerun whose start-up takes
longer than the reference's is killed before it saves anything new; the next aim lies further on, so the
kills still move through preprocessing, registration and training. (Drawing from the whole reference time
instead lets reruns finish before their kill; drawing a share of the remaining time puts most kills at the
end.)
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "kill_test.json"
DATASET_ID = "61"
TIMING_KEYS = ("seconds",)
KILL_SHARE = 0.9  # the kills aim at the first 90 % of the work: later ones would often miss the end
MAX_ATTEMPTS_PER_KILL = 3
# case properties that name the raw files and their modification times: they differ between the reference's
# and the killed run's raw folders by construction (two generated copies), not because of a kill
RAW_FILE_KEYS = ("raw_files", "raw_signature")
SUMMARY_FILES = ("registration_report.json", "registration_report.png", "dataset_fingerprint.json",
                 "registration_choice.json")


def run(command: list[str], env: dict[str, str], kill_after_s: float | None = None) -> tuple[int, float]:
    """(exit code, wall seconds); SIGKILL to the whole process group after ``kill_after_s``."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        code = process.wait(timeout=kill_after_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        code = process.wait()
    return code, time.perf_counter() - started


def run_reference(command: list[str], env: dict[str, str], output: Path) -> tuple[int, float, float]:
    """(exit code, wall seconds, seconds until the first file appeared under ``output``)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    first_output = None
    while process.poll() is None:
        if first_output is None and output.exists() and next((p for p in output.rglob("*") if p.is_file()), None):
            first_output = time.perf_counter() - started
        time.sleep(0.05)
    total = time.perf_counter() - started
    return process.returncode, total, total if first_output is None else first_output


def kill_moment(rng: random.Random, first_output_s: float, reference_s: float, done_share: float, index: int,
                kills: int) -> tuple[float, float]:
    """(seconds after the start, the share of the work aimed at) for kill ``index`` (0-based) of ``kills``."""
    aim = KILL_SHARE * (index + rng.random()) / max(1, kills)
    work_s = max(0.0, reference_s - first_output_s)
    return max(0.5, first_output_s + max(0.0, aim - done_share) * work_s), aim


def environment(root: Path) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.update({"cctr_raw": str(root / "raw"), "cctr_preprocessed": str(root / "pre"), "cctr_results": str(root / "res")})
    return env


def digest_tree(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file; registration records without their timing fields."""
    digests = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = str(path.relative_to(folder))
        data = path.read_bytes()
        if path.name in SUMMARY_FILES:
            continue  # summaries with timings or figures, rebuilt from the records
        if path.suffix == ".json" and "/pairs/" in f"/{relative}":
            record = json.loads(data)
            for key in TIMING_KEYS:
                record.pop(key, None)
            data = json.dumps(record, sort_keys=True).encode()
        elif path.suffix == ".json" and path.parent.name == "2d" and "registration" not in path.parts:
            record = json.loads(data)  # a preprocessed case's properties
            for key in RAW_FILE_KEYS:
                record.pop(key, None)
            data = json.dumps(record, sort_keys=True).encode()
        digests[relative] = hashlib.sha256(data).hexdigest()
    return digests


def preprocess_kill_test(work: Path, kills: int, rng: random.Random) -> dict:
    plan = ["cctr_plan_and_preprocess", "-d", DATASET_ID, "--device", "cpu", "--no-progress", "-np", "1"]
    reference, killed = work / "reference", work / "killed"
    for root in (reference, killed):
        code, _ = run(["cctr_generate_phantom", "-d", DATASET_ID, "--tiny", "--num-training", "6", "--num-test", "1"],
                      environment(root))
        assert code == 0, "the generator failed"
    code, reference_seconds, first_output = run_reference(plan, environment(reference), reference / "pre")
    assert code == 0, "the uninterrupted cctr_plan_and_preprocess failed"
    expected_files = sum(1 for p in (reference / "pre").rglob("*") if p.is_file())
    moments = []
    while sum(not m["finished_before_kill"] for m in moments) < kills and len(moments) < MAX_ATTEMPTS_PER_KILL * kills:
        done = sum(1 for p in (killed / "pre").rglob("*") if p.is_file()) if (killed / "pre").exists() else 0
        landed = sum(not m["finished_before_kill"] for m in moments)
        moment, aim = kill_moment(rng, first_output, reference_seconds, done / max(1, expected_files), landed, kills)
        code, _ = run(plan, environment(killed), kill_after_s=moment)
        moments.append({"kill_after_s": round(moment, 2), "aimed_at_share": round(aim, 3), "files_before": done,
                        "finished_before_kill": code == 0})
    code, _ = run(plan, environment(killed))
    expected, found = digest_tree(reference / "pre"), digest_tree(killed / "pre")
    different = sorted(k for k in expected if found.get(k) != expected[k])
    return {"command": " ".join(plan), "reference_seconds": round(reference_seconds, 1),
            "reference_first_output_seconds": round(first_output, 1), "kills": moments,
            "final_exit_code": code, "files_compared": len(expected), "files_different": different,
            "files_extra": sorted(set(found) - set(expected)), "identical": code == 0 and not different}


def train_kill_test(work: Path, kills: int, iterations: int, rng: random.Random) -> dict:
    import torch

    root = work / "reference"  # preprocessed by the preprocessing test
    train = ["cctr_train", DATASET_ID, "-tr", "LabeledOnlyTrainer", "--labeled", "2", "--iterations", str(iterations),
             "--device", "cpu", "--no-progress", "--threads", "1", "--set", "num_workers=0", "log_every=1",
             "checkpoint_every_seconds=0"]
    env_reference = dict(environment(root), cctr_results=str(work / "res_reference"))
    env_killed = dict(environment(root), cctr_results=str(work / "res_killed"))
    from cctrnet.training.checkpoint import checkpoint_iteration

    code, reference_seconds, first_output = run_reference(train, env_reference, work / "res_reference")
    assert code == 0, "the uninterrupted cctr_train failed"
    moments, folder_of = [], lambda base: next(Path(base).glob("*/LabeledOnlyTrainer__labeled2__seed0"), None)
    while sum(not m["finished_before_kill"] for m in moments) < kills and len(moments) < MAX_ATTEMPTS_PER_KILL * kills:
        folder = folder_of(work / "res_killed")
        if folder is not None and (folder / "checkpoint_final.pth").exists():
            break
        resume = folder is not None and (folder / "checkpoint_latest.pth").exists()
        done = (checkpoint_iteration(folder / "checkpoint_latest.pth") or 0) if resume else 0
        # the run's last seconds are post-processing and the report, after checkpoint_final.pth is written: a
        # kill there leaves nothing to resume, so the moment stays within the iterations still to train
        landed = sum(not m["finished_before_kill"] for m in moments)
        moment, aim = kill_moment(rng, first_output, reference_seconds, done / iterations, landed, kills)
        code, _ = run(train + (["--c"] if resume else []), env_killed, kill_after_s=moment)
        moments.append({"kill_after_s": round(moment, 2), "aimed_at_share": round(aim, 3),
                        "resumed_from_iteration": done if resume else None, "finished_before_kill": code == 0})
    folder = folder_of(work / "res_killed")
    if folder is None or not (folder / "checkpoint_final.pth").exists():
        resume = folder is not None and (folder / "checkpoint_latest.pth").exists()
        code, _ = run(train + (["--c"] if resume else []), env_killed)
    reference = torch.load(folder_of(work / "res_reference") / "checkpoint_final.pth", weights_only=True)
    found = torch.load(folder_of(work / "res_killed") / "checkpoint_final.pth", weights_only=True)
    weights_equal = all(torch.equal(value, found["network_weights"][branch][key])
                        for branch, weights in reference["network_weights"].items() for key, value in weights.items())
    losses_equal = reference["log"].get("loss_total") == found["log"].get("loss_total")
    return {"command": " ".join(train), "reference_seconds": round(reference_seconds, 1),
            "reference_first_output_seconds": round(first_output, 1), "kills": moments,
            "weights_bitwise_equal": weights_equal, "losses_equal_to_the_iteration": losses_equal,
            "identical": weights_equal and losses_equal}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="kills per command (default 20)")
    parser.add_argument("--iterations", type=int, default=40, help="training iterations (default 40)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    work = args.keep or Path(tempfile.mkdtemp(prefix="cctr_kill_"))
    try:
        results = {"date": datetime.date.today().isoformat(), "kills_per_command": args.kills,
                   "preprocess": preprocess_kill_test(work, args.kills, rng)}
        results["train"] = train_kill_test(work, args.kills, args.iterations, rng)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{'command':<22} {'kills landed':>12} {'finished early':>14} {'identical':>9}")
    for name in ("preprocess", "train"):
        r = results[name]
        early = sum(k["finished_before_kill"] for k in r["kills"])
        print(f"{name:<22} {len(r['kills']) - early:>12} {early:>14} {str(r['identical']):>9}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2))
    print(f"written {args.output}")
    return 0 if results["preprocess"]["identical"] and results["train"]["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
