"""Whether a finished job's record still stands for a job: the trainer settings it ran with against the ones
the job would run with now.

A job id names a row's settings on top of the trainer's defaults (``CCTRTrainer-w_rs_0.3``), so a default
changed in cctrnet.training.config silently changes what an id means. A record is *stale* when its recorded
settings differ from the job's present ones in anything that changes training; the runner then moves it to the
job it does stand for (re-filed) or sets it aside under ``stale/``, and trains the job anew. The same comparison
lets any finished record *serve* another job whose present settings it matches (one run, two ids), which
generalises the registration twin: a row forcing the method ``auto`` chose for the same labeled cases is that run.
"""
from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

from benchmarks.reproduce.jobs import Job
from benchmarks.reproduce.store import WorkFolder, read_json
from cctrnet.utilities.file_io import save_json

#: settings that only say what the run logs, how often it validates or checkpoints, how many loader processes
#: feed it: two runs that differ in them train the same networks
MONITORING_SETTINGS = frozenset({"num_workers", "checkpoint_every_seconds", "log_every", "pseudo_label_quality_every",
                                 "validation_every", "validation_max_slices_per_case", "validation_max_cases",
                                 "validation_window_step", "hidden_label_curve"})
AUTO = "auto"
STALE_FOLDER = "stale"
AUTO_REGISTRATION_CHOICE = re.compile(r"registration auto: (\w+)")  # cctr_train's log line


def expected_settings(job: Job) -> dict[str, Any] | None:
    """The trainer settings ``job`` runs with under the present defaults (None: not a cctrnet training)."""
    if job.method.kind != "train":
        return None
    from cctrnet.training.config import TrainerConfig, parse_set_arguments
    from cctrnet.training.trainers.registry import get_trainer_class

    trainer_class = get_trainer_class(job.method.trainer)
    overrides = {**trainer_class.config_defaults, **parse_set_arguments(list(job.run_settings)),
                 "seed": job.seed, "num_iterations": job.iterations}
    return TrainerConfig().with_overrides(overrides).to_dict()


def setting_changes(recorded: Mapping[str, Any], expected: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``setting -> (recorded, expected)`` for each setting that changes training and differs. A setting the
    record lacks was added after it ran; a new setting's default keeps the earlier behaviour (the rule for
    TrainerConfig), so the record ran with that default (or, for a default changed since, with the value
    ``BEHAVIOUR_BEFORE_SETTING_EXISTED`` names): equal to a job at that value, different from one at another.
    A setting inert in both runs (w_rs with rsl off) changes nothing."""
    from cctrnet.training.config import BEHAVIOUR_BEFORE_SETTING_EXISTED, TrainerConfig, inert_settings

    defaults = {**TrainerConfig().to_dict(), **BEHAVIOUR_BEFORE_SETTING_EXISTED}
    recorded = {**{key: defaults[key] for key in expected if key not in recorded and key in defaults}, **recorded}
    ignored = MONITORING_SETTINGS | (inert_settings(dict(recorded)) & inert_settings(dict(expected)))
    return {key: (recorded[key], value) for key, value in expected.items()
            if key not in ignored and key in recorded and recorded[key] != value}


def auto_choice(work: WorkFolder, dataset: str, labeled: int | None, seed: int,
                results: Mapping[str, dict] | None = None) -> str | None:
    """The method ``--registration auto`` chose for the labeled cases of (dataset, N, seed), from any run of them
    that used ``auto``, finished or set aside as stale (the choice depends on the labeled cases only, and those on
    N and the seed): its record's ``registration_auto_choice``, else its training log; None when none says."""
    results = work.all_results() if results is None else results
    candidates = [(record, work.run_folder(job_id)) for job_id, record in sorted(results.items())]
    candidates += [(read_json(path) or {}, path.parent / "run")
                   for path in sorted((work.root / STALE_FOLDER).glob("*/job.json"))]
    for record, run_folder in candidates:
        j = record.get("job", {})
        settings = record.get("settings") or {}
        if ((j.get("dataset"), j.get("labeled"), j.get("seed")) != (dataset, labeled, seed)
                or j.get("kind") != "train" or settings.get("registration_method", AUTO) != AUTO):
            continue
        # records written since 2026-12-02 say it (None: not logged); older ones have only the log
        chosen = (record["registration_auto_choice"] if "registration_auto_choice" in record
                  else logged_auto_choice(run_folder))
        if chosen:
            return chosen
    return None


def logged_auto_choice(run_folder: Path) -> str | None:
    """The method ``--registration auto`` chose, read from a run folder's training logs (None: not logged)."""
    for log in sorted((Path(run_folder) / "logs").glob("*_train.log")):
        found = AUTO_REGISTRATION_CHOICE.findall(log.read_text(errors="replace"))
        if found:
            return found[-1]
    return None


def _registration_agrees(recorded: str, expected: str, chosen: str | None) -> bool:
    return recorded == expected or (chosen is not None and {recorded, expected} == {AUTO, chosen})


def serves(record: Mapping[str, Any], job: Job, chosen_registration: str | None = None) -> bool:
    """Whether the finished ``record`` is a run of ``job`` under the present settings: same dataset, trainer,
    N and seed, and the same training settings (budget and seed among them), where ``auto`` registration equals the method it chose
    for these labeled cases (``chosen_registration``)."""
    j = record.get("job", {})
    expected = expected_settings(job)
    recorded = record.get("settings")
    if (record.get("status") != "ok" or expected is None or not isinstance(recorded, dict)
            or (j.get("dataset"), j.get("kind"), j.get("trainer"), j.get("labeled"), j.get("seed"))
            != (job.dataset, job.method.kind, job.method.trainer, job.labeled, job.seed)):
        return False
    changes = setting_changes(recorded, expected)
    registration = changes.pop("registration_method", None)
    return not changes and (registration is None or _registration_agrees(*registration, chosen_registration))


def may_be_same_run(first: Job, second: Job) -> bool:
    """Whether ``second`` may turn out to be a run of ``first`` before either has run: the same training
    settings, except that ``first`` may leave the registration to ``auto`` where ``second`` forces one."""
    key = lambda job: (job.dataset, job.method.kind, job.method.trainer, job.labeled, job.seed)  # noqa: E731
    a, b = expected_settings(first), expected_settings(second)
    if a is None or b is None or key(first) != key(second):
        return False
    changes = setting_changes(a, b)
    registration = changes.pop("registration_method", None)
    return not changes and (registration is None or registration[0] == AUTO)


def stale_reason(record: Mapping[str, Any], job: Job, chosen_registration: str | None = None) -> str | None:
    """Why the finished record filed under ``job``'s id no longer stands for it ("trained with w_rs 1.0 (now
    0.3)"), or None. Records without recorded settings (nnU-Net, registration only) are never stale. Only trainer
    settings count: registrations made under other registration defaults are the preparation's concern."""
    expected = expected_settings(job)
    recorded = record.get("settings")
    if expected is None or not isinstance(recorded, dict) or record.get("status") != "ok":
        return None
    changes = setting_changes(recorded, expected)
    registration = changes.pop("registration_method", None)
    if registration is not None and not _registration_agrees(*registration, chosen_registration):
        changes["registration_method"] = registration
    if not changes:
        return None
    return "trained with " + ", ".join(f"{key} {old!r} (now {new!r})" for key, (old, new) in sorted(changes.items()))


def serving_record(work: WorkFolder, job: Job, results: Mapping[str, dict] | None = None) -> str | None:
    """The id of another finished record that is a run of ``job`` under the present settings, or None."""
    results = work.all_results() if results is None else results
    chosen = None
    for job_id, record in sorted(results.items()):
        if job_id == job.job_id or record.get("status") != "ok":
            continue
        if chosen is None:
            chosen = auto_choice(work, job.dataset, job.labeled, job.seed, results)
        if serves(record, job, chosen) and stale_reason(record, _job_of(record, job), chosen) is None:
            return job_id
    return None


def _job_of(record: Mapping[str, Any], like: Job) -> Job:
    """The Job a record was filed under, rebuilt from its job entry (settings and budget) on ``like``'s method."""
    j = record.get("job", {})
    method = replace(like.method, settings=tuple(j.get("settings", ())))
    return replace(like, method=method, iterations=int(j.get("iterations", like.iterations)))


def stale_reason_of(work: WorkFolder, job: Job, results: Mapping[str, dict]) -> str | None:
    """stale_reason() of the record filed under ``job``'s id, with the registration ``auto`` chose for it."""
    chosen = auto_choice(work, job.dataset, job.labeled, job.seed, results)
    return stale_reason(results.get(job.job_id) or {}, job, chosen)


def refile_target(work: WorkFolder, job: Job, jobs: Sequence[Job], results: Mapping[str, dict],
                  taken: Collection[str] = frozenset()) -> Job | None:
    """The listed, unfinished job (not in ``taken``) that ``job``'s stale record is a run of, or None."""
    record = results[job.job_id]
    chosen = auto_choice(work, job.dataset, job.labeled, job.seed, results)
    return next((j for j in jobs if j.job_id != job.job_id and j.job_id not in taken and not work.finished(j.job_id)
                 and serves(record, j, chosen)), None)


def refile_plan(work: WorkFolder, jobs: Sequence[Job], results: Mapping[str, dict]) -> dict[str, str]:
    """stale job id -> the id its record is re-filed as, for the listed jobs (what the runner will do)."""
    plan: dict[str, str] = {}
    for job in jobs:
        if work.finished(job.job_id) and stale_reason_of(work, job, results):
            target = refile_target(work, job, jobs, results, set(plan.values()))
            if target is not None:
                plan[job.job_id] = target.job_id
    return plan


def tabled_results(work: WorkFolder, jobs: Sequence[Job]) -> tuple[dict[str, dict], list[str]]:
    """The records to table for ``jobs`` under the present settings, and a note per change: a stale record is
    left out of its own row (and shown in the row it is a run of, as the runner will re-file it); a job without
    a record of its own shows another finished run with its settings. Nothing on disk changes."""
    results = work.all_results()
    shown = dict(results)
    notes = []
    plan = refile_plan(work, jobs, results)
    for job in jobs:
        reason = stale_reason_of(work, job, results) if work.finished(job.job_id) else None
        if reason:
            record = shown.pop(job.job_id)
            # shown away from its run folder: keep what its log says auto chose
            record = {**record, "registration_auto_choice": (record.get("registration_auto_choice")
                                                             or logged_auto_choice(work.run_folder(job.job_id)))}
            target = plan.get(job.job_id)
            if target is not None:
                shown[target] = record
            notes.append(f"{job.job_id}: {reason}; "
                         + (f"shown as {target}" if target else "left out"))
    for job in jobs:
        if job.job_id not in shown:
            source = serving_record(work, job, shown)
            if source is not None:
                shown[job.job_id] = {**shown[source], "same_run_as": shown[source].get("same_run_as", source)}
    return shown, notes


def move_record(work: WorkFolder, job_id: str, target: Mapping[str, Any] | None, reason: str) -> Path:
    """Move a stale record (its JSON and run folder) to the job it stands for (``target``: that job's record
    entry, with its "id") or, when None, under ``stale/``; paths inside the record follow; returns the new JSON
    path. Nothing is deleted."""
    record = read_json(work.result_path(job_id)) or {}
    old_folder = work.run_folder(job_id)
    to_job_id = None if target is None else target["id"]
    if to_job_id is not None:
        new_json, new_folder = work.result_path(to_job_id), work.run_folder(to_job_id)
    else:
        base = work.root / STALE_FOLDER / job_id
        suffix = 1
        while base.exists():
            base = work.root / STALE_FOLDER / f"{job_id}.{suffix}"
            suffix += 1
        new_json, new_folder = base / "job.json", base / "run"
    if new_json.exists() or new_folder.exists():
        raise FileExistsError(f"cannot move the stale record {job_id} to {new_json.parent}: {new_json.name} or "
                              f"{new_folder} exists already")
    new_folder.parent.mkdir(parents=True, exist_ok=True)
    if old_folder.exists():
        shutil.move(str(old_folder), str(new_folder))
    if record.get("model_folder", "").startswith(str(old_folder)):
        record["model_folder"] = str(new_folder) + record["model_folder"][len(str(old_folder)):]
    record["moved_from"] = {"job_id": job_id, "reason": reason}
    if target is not None:
        record["job"] = dict(target)
    save_json(record, new_json)  # written before the old JSON goes, so the record exists at every moment
    work.result_path(job_id).unlink()
    return new_json
