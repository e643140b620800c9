"""The paper-claims benchmark (issue 6): LS, CPS, CTS, CCT-R, registration only, nnU-Net v2 and the fully
supervised bound on the phantom and brain datasets, plus the paper's Table 5 ablation; resumable.

Every job writes ``<work>/jobs/<id>.json`` atomically when it ends (ok or failed); a rerun skips finished
jobs, retries failed ones, resumes a killed cctr_train with --c and a killed nnU-Net run with --c. All data,
models and predictions stay in the work folder (cctr_raw, cctr_preprocessed and cctr_results point there).

    python benchmarks/reproduce.py --dry-run                      # the job list and estimated times
    python benchmarks/reproduce.py                                # core table, both datasets, N 1 2, seeds 0 1
    python benchmarks/reproduce.py --tables ablation --seeds 0 1 2
    python benchmarks/reproduce.py --datasets phantom --labeled 1 --seeds 0 --methods LS CTS regonly \\
        --iterations 20 --work-dir /tmp/repro_smoke --no-publish
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
import traceback
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
if str(REPOSITORY) not in sys.path:
    sys.path.insert(0, str(REPOSITORY))

from benchmarks.reproduce.jobs import (DATASETS, DEFAULT_BUDGETS, METHOD_ALIASES, PREPARE_SECONDS,  # noqa: E402
                                       TABLES, Job, Selection, build_jobs, calibration, default_iterations,
                                       registration_twin)
from benchmarks.reproduce import record_validity  # noqa: E402
from benchmarks.reproduce.store import DEFAULT_WORK_DIR, WorkFolder  # noqa: E402
from cctrnet.utilities.file_io import save_json  # noqa: E402

DEFAULT_CPU_STEP_SECONDS = 0.6


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n")[1:]))
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=["phantom", "brain"])
    parser.add_argument("--methods", nargs="+", default=None, metavar="M",
                        help=f"core-table methods ({' '.join(k for k in METHOD_ALIASES if k != 'CCT-R')}); default all")
    parser.add_argument("--rows", nargs="+", default=None, metavar="LABEL",
                        help="only these rows of the non-core tables, by label (e.g. \"w_rs 0.3\"); default all")
    parser.add_argument("--labeled", nargs="+", type=int, default=[1, 2], metavar="N")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1], metavar="S")
    parser.add_argument("--tables", nargs="+", choices=TABLES, default=["core"])
    parser.add_argument("--budgets", nargs="+", type=int, default=list(DEFAULT_BUDGETS), metavar="IT",
                        help="training iterations of the budget table's runs (default: %(default)s); the other "
                             "tables use --iterations")
    parser.add_argument("--iterations", type=int, default=None,
                        help="iterations of every trained method, nnU-Net included (default: so that the selected "
                             "jobs take about --target-hours on this machine, from measured step times)")
    parser.add_argument("--target-hours", type=float, default=1.0, help="for the default --iterations")
    parser.add_argument("--cpu-step-seconds", type=float, default=DEFAULT_CPU_STEP_SECONDS,
                        help="compute budget of cctrnet's CPU plan (resolution, patch); lower is coarser and faster")
    parser.add_argument("--nnunet-plan", choices=("ours", "own"), default="ours",
                        help="ours: nnU-Net with cctrnet's spacing, patch, batch and branch-A topology (default); "
                             "own: nnU-Net's own 2d plan (several times slower per iteration on CPU)")
    parser.add_argument("--nnunet-venv", type=Path, default=None, help="nnU-Net environment (benchmarks/nnunet_env.sh)")
    parser.add_argument("--tta", dest="disable_tta", action="store_false",
                        help="predict with mirroring (cctrnet and nnU-Net; about 4x slower prediction). Default: "
                             "no mirroring for every method, to fit the hour")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="jobs run side by side, each with cores/workers torch threads ($OMP_NUM_THREADS, "
                             "unless set); default: %(default)s here (the cores, at most 2: a small 2d network "
                             "uses one core better than two)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where cctrnet trains and predicts (default: cpu, the device of the recorded tables; the "
                             "plan is the CPU plan on either, so a cuda row trains the same networks, only longer)")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR)
    parser.add_argument("--no-publish", action="store_true",
                        help="do not copy tables to benchmarks/results/ and figures to documentation/images/")
    parser.add_argument("--report-only", action="store_true", help="rebuild tables and figures from finished jobs")
    parser.add_argument("--dry-run", action="store_true", help="print the job list with estimated times and exit")
    return parser.parse_args(argv)


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def selection_of(args: argparse.Namespace) -> Selection:
    return Selection(datasets=list(args.datasets), methods=args.methods, labeled=list(args.labeled),
                     seeds=list(args.seeds), tables=list(args.tables), budgets=list(args.budgets),
                     rows=None if args.rows is None else list(args.rows))


def job_record(job: Job) -> dict:
    m = job.method
    return {"id": job.job_id, "dataset": job.dataset, "kind": m.kind, "method_label": m.label, "trainer": m.trainer,
            "settings": list(job.run_settings), "labeled": job.labeled, "seed": job.seed, "iterations": job.iterations}


def job_state(work: WorkFolder, job: Job, listed: set[str], results: dict[str, dict] | None = None) -> str:
    """``done``, ``stale`` (finished under settings that differ from the job's present ones, e.g. a changed
    default; see record_validity), ``shared`` (another finished record is a run of it: its registration twin
    when ``auto`` chose the method it forces, or any run with the same settings), ``after twin`` (the twin is in
    ``listed`` and has not run) or ``to run``; the dry run prints it and run_jobs() schedules by it."""
    results = work.all_results() if results is None else results
    if work.finished(job.job_id):
        return "stale" if record_validity.stale_reason_of(work, job, results) else "done"
    if record_validity.serving_record(work, job, results) is not None:
        return "shared"
    twin = registration_twin(job)
    if twin is not None and twin[0].job_id in listed and not work.finished(twin[0].job_id):
        return "after twin"
    return "to run"


def set_aside_stale_records(work: WorkFolder, jobs: list[Job]) -> None:
    """Move each stale record to the listed job it is a run of under the present settings (re-filed), else
    under stale/, so the job trains anew and no finished run is lost."""
    from benchmarks.reproduce import runner

    for job in jobs:
        results = work.all_results()
        if not work.finished(job.job_id):
            continue
        reason = record_validity.stale_reason_of(work, job, results)
        if reason is None:
            continue
        target = record_validity.refile_target(work, job, jobs, results)
        moved = record_validity.move_record(work, job.job_id, None if target is None else job_record(target), reason)
        runner.log(f"{job.job_id}: stale ({reason}); moved to {moved.parent if target is None else target.job_id}"
                   f"{'' if target is None else ', the job it is a run of'}; {job.job_id} is trained anew unless "
                   "another finished run has its settings")


def print_dry_run(jobs: list[Job], work: WorkFolder, args: argparse.Namespace, iterations: int,
                  measured: dict[str, tuple[float, float]]) -> None:
    total, pending = 0.0, 0
    print(f"{len(jobs)} job(s), {iterations} iterations each (trained methods), CPU plan budget "
          f"{args.cpu_step_seconds} s/step, work folder {work.root}")
    print(f"{'job':62s} {'state':9s} {'estimate':>9s}")
    listed = {job.job_id for job in jobs}
    results = work.all_results()
    refiled = record_validity.refile_plan(work, jobs, results)
    states = {job.job_id: job_state(work, job, listed, results) for job in jobs}
    _, _, same_run = wait_for_same_runs([(j.job_id, j) for j in jobs if states[j.job_id] == "to run"], [])
    for job in jobs:
        state = "after twin" if job.job_id in same_run else states[job.job_id]
        source = record_validity.serving_record(work, job, results) if state == "stale" else None
        if job.job_id in refiled.values() and not work.finished(job.job_id):
            state = "re-filed"
        free = state in ("done", "shared", "re-filed") or source is not None
        seconds = 0.0 if free else job.estimated_seconds(args.cpu_step_seconds, measured)
        total += seconds
        pending += not free
        print(f"{job.job_id:62s} {state:9s} {seconds / 60:8.1f}m")
        if state == "stale":
            then = f"recorded as {source}, a run of it" if source else "trained anew"
            where = f"re-filed as {refiled[job.job_id]}" if job.job_id in refiled else "set aside under stale/"
            print(f"    {record_validity.stale_reason_of(work, job, results)}: {where}, then {then}")
    print("(shared: recorded as another finished run with the same settings, e.g. its registration twin when auto "
          "chose the forced method; after twin: shared or trained once the twin has run, counted as to run; "
          "stale: finished under other defaults; re-filed: a stale record of another id is this job's run)")
    from benchmarks.reproduce.store import read_json

    prepare = sum(PREPARE_SECONDS for d in sorted({j.dataset for j in jobs})
                  if (read_json(work.prepare_path(d)) or {}).get("status") != "ok")
    wall = total / max(1, args.workers)
    source = (f"{len(measured)} method(s) timed from finished jobs here, the others from the built-in step times "
              "at the speed those ran on their dataset" if measured else "all from the built-in step times")
    print(f"estimated ({source}): {total / 3600:.2f} h of job time for {pending} "
          f"job(s) to run, {wall / 3600:.2f} h with {args.workers} worker(s), plus {prepare / 3600:.2f} h to "
          f"generate, plan, preprocess and register the dataset(s) not yet prepared; total {(wall + prepare) / 3600:.2f} h")


def run_job(work: WorkFolder, job: Job, prepared: dict, args: argparse.Namespace) -> dict:
    from benchmarks.reproduce import runner

    started = time.perf_counter()
    record = {"job": job_record(job), "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    try:
        if job.method.kind == "train":
            result = runner.run_training_job(work, job, prepared, args.disable_tta, device=args.device)
        elif job.method.kind == "regonly":
            result = runner.run_regonly_job(work, job, prepared)
        else:
            from benchmarks.environment import NNUNET_VENV
            from benchmarks.reproduce.nnunet import run_nnunet_job

            result = run_nnunet_job(work, job, prepared, args.nnunet_plan, args.disable_tta,
                                    args.nnunet_venv or NNUNET_VENV)
        record.update({"status": "ok", **result})
    except KeyboardInterrupt:
        raise
    except Exception as error:  # recorded; the benchmark goes on with the next job
        if runner.STOPPING.is_set():  # killed by the stop: the rerun resumes it, it did not fail
            record.update({"status": "interrupted"})
            return record
        record.update({"status": "failed", "error": runner.describe_error(error),
                       "traceback": traceback.format_exc(limit=5)})
    record["wall_seconds"] = round(time.perf_counter() - started, 1)
    save_json(record, work.result_path(job.job_id))
    return record


def run_jobs(jobs: list[Job], work: WorkFolder, args: argparse.Namespace,
             measured: dict[str, tuple[float, float]]) -> None:
    """Prepare each dataset once, then run the jobs not yet finished, ``args.workers`` at a time.

    Jobs run in worker threads (one thread each waits on its commands); the main thread only collects results,
    so a stop (KeyboardInterrupt there) is passed to every running command by stop_running_commands()."""
    from benchmarks.reproduce import runner

    if args.workers > 1 and "OMP_NUM_THREADS" not in os.environ:  # inherited by every job's commands
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.workers))
    prepared: dict[str, dict | None] = {}
    for dataset in dict.fromkeys(j.dataset for j in jobs):
        runner.log(f"[prepare] {dataset}")
        try:
            prepared[dataset] = runner.prepare_dataset(work, dataset, args.cpu_step_seconds)
        except Exception as error:
            prepared[dataset] = None
            runner.log(f"[prepare] {dataset} FAILED, its jobs are skipped: {runner.describe_error(error)}")
    set_aside_stale_records(work, [j for j in jobs if prepared[j.dataset] is not None])
    todo, waiting = [], []
    listed = {job.job_id for job in jobs}
    for index, job in enumerate(jobs, 1):
        state = job_state(work, job, listed)
        if state == "done":
            runner.log(f"[{index}/{len(jobs)}] {job.job_id}: done, skipped")
        elif prepared[job.dataset] is None:
            continue
        elif state in ("shared", "after twin"):
            waiting.append((f"[{index}/{len(jobs)}] {job.job_id}", job))  # may be the twin's run: decided after it
        else:
            todo.append((f"[{index}/{len(jobs)}] {job.job_id}", job))
    todo, waiting, twins = wait_for_same_runs(todo, waiting)
    run_pool(todo, waiting, work, prepared, args, measured, twins)


def wait_for_same_runs(todo: list[tuple[str, Job]], waiting: list[tuple[str, Job]]
                       ) -> tuple[list[tuple[str, Job]], list[tuple[str, Job]], dict[str, str]]:
    """Move each job of ``todo`` that may be the same run as an earlier one (two rows with the same settings, or
    a row forcing a method after the ``auto`` row) to ``waiting``, so one trains and the other is recorded as its
    run (or trains after it, when ``auto`` chose otherwise); returns todo, waiting and job id -> the id it waits for."""
    twins = {job.job_id: twin for _, job in waiting if (twin := _twin_id(job)) is not None}
    kept: list[tuple[str, Job]] = []
    waiting = list(waiting)
    for name, job in todo:
        earlier = next((k for _, k in kept if record_validity.may_be_same_run(k, job)), None)
        if earlier is None:
            kept.append((name, job))
        else:
            waiting.append((name, job))
            twins[job.job_id] = earlier.job_id
    return kept, waiting, twins


def record_shared_run(work: WorkFolder, job: Job, name: str) -> bool:
    """Record ``job`` as another finished run that is a run of it under the present settings (its registration
    twin when ``auto`` chose the very method ``job`` forces, or any record with the same settings)."""
    from benchmarks.reproduce import runner

    source = record_validity.serving_record(work, job)
    if source is None:
        return False
    found = work.load_result(source)
    original = found.get("same_run_as", source)
    record = {**found, "job": job_record(job), "same_run_as": original}
    record.pop("moved_from", None)
    save_json(record, work.result_path(job.job_id))
    runner.log(f"{name}: the same run as {original} (same settings"
               f"{', registration auto chose the forced method' if registration_twin(job) else ''}), recorded as such")
    return True


def _twin_id(job: Job) -> str | None:
    twin = registration_twin(job)
    return None if twin is None else twin[0].job_id


def run_pool(todo: list[tuple[str, Job]], waiting: list[tuple[str, Job]], work: WorkFolder,
             prepared: dict[str, dict | None], args: argparse.Namespace,
             measured: dict[str, tuple[float, float]], twins: dict[str, str] | None = None) -> None:
    """Run ``todo`` ``args.workers`` at a time; each job of ``waiting`` once the job it waits for (``twins``; by
    default its registration twin) has ended: recorded as that job's run, or run itself."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    from benchmarks.reproduce import runner

    def one(name: str, job: Job) -> dict:
        runner.log(f"{name} (about {job.estimated_seconds(args.cpu_step_seconds, measured) / 60:.1f} min)")
        return run_job(work, job, prepared[job.dataset], args)

    def twin_of(job: Job) -> str | None:
        return (twins or {}).get(job.job_id, _twin_id(job))

    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        futures = {pool.submit(one, name, job): (name, job) for name, job in todo}
        waiting = list(waiting)
        try:
            while futures or waiting:
                unfinished = {job.job_id for _, job in futures.values()}
                for name, job in [w for w in waiting if twin_of(w[1]) not in unfinished]:
                    waiting.remove((name, job))
                    if not record_shared_run(work, job, name):
                        futures[pool.submit(one, name, job)] = (name, job)
                if not futures:
                    break
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in done:
                    name, _ = futures.pop(future)
                    record = future.result()
                    if record["status"] == "interrupted":
                        continue
                    summary = (f"mean Dice {record['metrics']['mean_dice']:.1f} %" if record["status"] == "ok"
                               and record["metrics"]["mean_dice"] is not None
                               else record.get("error", "").splitlines()[0])
                    runner.log(f"{name} {record['status']} in {record['wall_seconds']:.0f} s: {summary}")
        except KeyboardInterrupt:
            for future in futures:
                future.cancel()
            runner.stop_running_commands()
            raise


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    selection = selection_of(args)
    if args.workers < 1:
        print("reproduce.py: --workers must be at least 1", file=sys.stderr)
        return 2
    work = WorkFolder(args.work_dir)
    measured = calibration(work.all_results())
    try:
        iterations = args.iterations or default_iterations(selection, args.cpu_step_seconds,
                                                           args.target_hours * 3600.0, workers=args.workers,
                                                           measured=measured)
        jobs = build_jobs(selection, iterations)
    except ValueError as error:
        print(f"reproduce.py: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        print_dry_run(jobs, work, args, iterations, measured)
        return 0
    from benchmarks.reproduce import report, runner

    if not args.report_only:
        runner.install_stop_signals()
        problem = runner.check_commands(work.environment())
        if problem:
            print(f"reproduce.py: {problem}", file=sys.stderr)
            return 2
        try:
            run_jobs(jobs, work, args, measured)
        except KeyboardInterrupt:
            runner.log("stopped: running commands were asked to save and stop; run the same command to resume")
            return 130
    for table in selection.tables:
        text = report.write_table_outputs(table, selection, jobs, work, args, iterations, publish=not args.no_publish)
        print(text)
    report.write_curves(selection, jobs, work, publish=not args.no_publish)
    return 0


if __name__ == "__main__":
    sys.exit(main())
