"""Computing the missing pairs of a store: in order, in local processes, on a Dask cluster, or batched.

Every finished pair is written at once, so a killed run loses only the pairs in flight. Before the work
starts the number of pairs is printed, and after the first few an estimate of the remaining time.

On Dask, results are written by this (the client) process as they arrive, so a worker that dies loses only
its task in flight; Dask first retries such a task on another worker (``distributed.scheduler.allowed-failures``),
and a task that still loses its worker leaves its pairs without a record (not "failed": the pair did nothing
wrong) and ends the run with ``PairsNotComputed`` after every other pair is stored, so the next run computes
exactly those. ``dask_scheduler="local"`` starts a ``LocalCluster`` of ``num_processes`` worker processes here.
Workers that advertise a ``GPU`` resource (``dask-worker ... --resources GPU=1``) run one batch at a time each.
"""
from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from tqdm import tqdm

from cctrnet.registration.pair_result import STATUS_FAILED, PairResult
from cctrnet.registration.pair_store import PairStore
from cctrnet.registration.settings import AFFINE_BASED_METHODS, RegistrationSettings
from cctrnet.utilities.progress_bars import quiet_bar_options

_PAIRS_BEFORE_ESTIMATE = 3
LOCAL_CLUSTER = "local"  # dask_scheduler value: an in-process LocalCluster of num_processes workers
GPU_RESOURCE = "GPU"  # the Dask worker resource that marks one GPU (dask-worker --resources GPU=1)


class PairsNotComputed(RuntimeError):
    """Pairs whose Dask worker died: no record was written, so the next run computes them."""


def compute_pair_job(data_folder: str, moving: str, fixed: str, method: str, settings_dict: dict[str, Any]) -> PairResult:
    """One SimpleITK pair, from files: what a local process or a Dask worker runs."""
    from cctrnet.registration.sitk_engine import register_pair_sitk
    from cctrnet.registration.volumes import load_volume

    settings = RegistrationSettings.from_dict(settings_dict)
    try:
        moving_zyx, moving_geometry = load_volume(Path(data_folder), moving, settings.channel)
        fixed_zyx, fixed_geometry = load_volume(Path(data_folder), fixed, settings.channel)
    except Exception as error:  # an unreadable case fails its pairs, not the run
        return PairResult(moving, fixed, method, "simpleitk", STATUS_FAILED, reason=f"{type(error).__name__}: {error}")
    return register_pair_sitk(fixed_zyx, fixed_geometry, moving_zyx, moving_geometry, method, settings, (moving, fixed))


def compute_missing_pairs(
    data_folder: Path,
    store: PairStore,
    pairs: Sequence[tuple[str, str]],
    method: str,
    engine: str,
    settings: RegistrationSettings,
    num_processes: int = 1,
    dask_scheduler: str | None = None,
    retry_failed: bool = False,
    affine_store: PairStore | None = None,
) -> list[PairResult]:
    """Register the pairs without a record (and failed ones if ``retry_failed``); return the new results.

    ``affine_store`` holds the affine registrations a method on top of the affine starts from.
    """
    todo = []
    for moving, fixed in pairs:
        existing = store.load(moving, fixed)
        if existing is None or (retry_failed and not existing.ok):
            todo.append((moving, fixed))
    print(f"[cctrnet] registration ({method}, {engine}): {len(pairs)} pairs needed, "
          f"{len(pairs) - len(todo)} already in {store.folder}, {len(todo)} to compute", file=sys.stderr)
    if not todo:
        return []
    # tuples as JSON lists, as the stamp holds them
    differing = store.settings_mismatch(json.loads(json.dumps(settings.to_dict())))
    if differing:
        print(f"[cctrnet] warning: the pairs already in {store.folder} were computed with settings {differing}; "
              f"the new pairs join them as they are. Delete {store.folder} (and the deformable folder built on it) "
              "to compute every pair with today's settings", file=sys.stderr)
    affine_folder = str(affine_store.folder) if affine_store is not None else None
    lost: list[tuple[tuple[str, str], str]] = []  # pairs whose Dask worker died, with the error
    if engine == "torch" and dask_scheduler:
        outcomes = _dask_batches(data_folder, todo, method, settings, dask_scheduler, affine_folder, num_processes,
                                 lost)
    elif engine == "torch":
        outcomes = _torch_batches(data_folder, todo, method, settings, _torch_threads(num_processes), affine_folder)
    elif dask_scheduler:
        outcomes = _dask(data_folder, todo, method, settings, dask_scheduler, num_processes, lost)
    elif num_processes > 1:
        outcomes = _processes(data_folder, todo, method, settings, num_processes)
    else:
        outcomes = (compute_pair_job(str(data_folder), m, f, method, settings.to_dict()) for m, f in todo)
    batch_size = settings.torch_batch_size if engine == "torch" else max(1, num_processes)
    results = _save_with_progress(outcomes, store, len(todo), batch_size)
    if lost:
        raise PairsNotComputed(
            f"{len(lost)} of {len(todo)} {method} pair(s) not computed: their Dask worker died ({lost[0][1]}); "
            f"the {len(results)} finished pair(s) are stored in {store.folder}; run the same command again to "
            "compute the rest")
    return results


def _save_with_progress(outcomes: Iterable[PairResult], store: PairStore, total: int, batch_size: int = 1
                        ) -> list[PairResult]:
    """Save each result as it comes; the time estimate is measured between results, after a full batch.

    Why not from the start: the first results can be failures known at once (an unreadable case, a failed
    affine), and start-up (imports, the first batch's loading) is not paid again per pair.
    """
    results = []
    first_time = first_count = None
    estimated = False
    with tqdm(total=total, desc="registering pairs", unit="pair", file=sys.stderr, **quiet_bar_options()) as bar:
        for result in outcomes:
            store.save(result)
            results.append(result)
            bar.update(1)
            now = time.perf_counter()
            if first_time is None and result.seconds > 0:
                first_time, first_count = now, len(results)
            measured = len(results) - (first_count or 0)
            if (not estimated and first_time is not None and measured >= max(_PAIRS_BEFORE_ESTIMATE, batch_size)
                    and total > len(results)):
                estimated = True
                per_pair = (now - first_time) / measured
                bar.write(file=sys.stderr, s=f"[cctrnet] estimate: {per_pair:.2f} s per pair, about "
                          f"{per_pair * (total - len(results)) / 60:.1f} min for the remaining {total - len(results)} pairs")
            if not result.ok:
                bar.write(f"[cctrnet] pair {result.moving} -> {result.fixed} failed: {result.reason}", file=sys.stderr)
    return results


def _processes(data_folder: Path, todo: Sequence[tuple[str, str]], method: str, settings: RegistrationSettings,
               num_processes: int) -> Iterator[PairResult]:
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no forked torch/ITK thread state
    with ProcessPoolExecutor(num_processes, mp_context=context) as pool:
        futures = {pool.submit(compute_pair_job, str(data_folder), m, f, method, settings.to_dict()): (m, f) for m, f in todo}
        for future in as_completed(futures):
            yield _future_result(future, futures[future], method, "simpleitk")


def _dask(data_folder: Path, todo: Sequence[tuple[str, str]], method: str, settings: RegistrationSettings,
          scheduler: str, num_processes: int, lost: list) -> Iterator[PairResult]:
    """Submit the SimpleITK pair jobs to a Dask scheduler (workers must see ``data_folder``)."""
    calls = [(str(data_folder), m, f, method, settings.to_dict()) for m, f in todo]
    for pair, (result, error) in _on_dask(scheduler, compute_pair_job, calls, todo, num_processes):
        if error is None:
            yield result
        elif _worker_lost(error):
            lost.append((pair, f"{type(error).__name__}: {error}"))
        else:
            yield _worker_failure(pair, method, "simpleitk", error)


def _on_dask(scheduler: str, function: Any, calls: Sequence[tuple], items: Sequence[Any], num_processes: int = 1,
             one_per_gpu: bool = False) -> Iterator[tuple[Any, tuple]]:
    """(item, (result, None) or (None, error)) for each ``function(*call)`` run on the cluster, as they finish.

    ``one_per_gpu``: where the workers advertise a ``GPU`` resource, each task holds one GPU while it runs.
    """
    try:
        from distributed import Client
        from distributed import as_completed as dask_as_completed
    except ImportError as error:
        raise ImportError('--dask-scheduler needs dask.distributed: pip install "dask[distributed]"') from error
    with _dask_client(Client, scheduler, num_processes) as client:
        resources = {GPU_RESOURCE: 1} if one_per_gpu and _workers_have_gpus(client) else None
        futures = [client.submit(function, *call, pure=False, resources=resources) for call in calls]
        keys = {future.key: item for future, item in zip(futures, items)}
        for future in dask_as_completed(futures):
            try:
                yield keys[future.key], (future.result(), None)
            except Exception as error:  # a crashed worker fails its pairs, not the run
                yield keys[future.key], (None, error)


@contextmanager
def _dask_client(client_class: Any, scheduler: str, num_processes: int) -> Iterator[Any]:
    if scheduler != LOCAL_CLUSTER:
        with client_class(scheduler, timeout=30) as client:
            yield client
        return
    from distributed import LocalCluster

    print(f"[cctrnet] registration: a local Dask cluster of {num_processes} worker process(es)", file=sys.stderr)
    with LocalCluster(n_workers=num_processes, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with client_class(cluster) as client:
            yield client


def _workers_have_gpus(client: Any) -> bool:
    workers = client.scheduler_info().get("workers", {})
    return any(GPU_RESOURCE in (info.get("resources") or {}) for info in workers.values())


def _worker_lost(error: BaseException) -> bool:
    """Whether a task's error means its worker died (not that the pair failed)."""
    lost_types: list[type] = []
    try:
        from distributed import KilledWorker
        from distributed.comm.core import CommClosedError

        lost_types += [KilledWorker, CommClosedError]
    except ImportError:
        pass
    from concurrent.futures import CancelledError

    return isinstance(error, (*lost_types, CancelledError))


def _worker_failure(pair: tuple[str, str], method: str, engine: str, error: Exception) -> PairResult:
    return PairResult(pair[0], pair[1], method, engine, STATUS_FAILED, reason=f"worker error: {type(error).__name__}: {error}")


def _future_result(future: Any, pair: tuple[str, str], method: str, engine: str) -> PairResult:
    try:
        return future.result()
    except Exception as error:  # a crashed worker fails its pair, not the run
        return _worker_failure(pair, method, engine, error)


def _batches(todo: Sequence[tuple[str, str]], size: int) -> list[list[tuple[str, str]]]:
    return [list(todo[start: start + size]) for start in range(0, len(todo), size)]


def compute_batch_job(data_folder: str, pairs: Sequence[tuple[str, str]], method: str, settings_dict: dict[str, Any],
                      affine_folder: str | None = None, num_threads: int | None = None,
                      volume_cache: dict[str, Any] | None = None, level_images: Any = None) -> list[PairResult]:
    """One batch of pairs with the torch engine, from files: what the local loop or a Dask worker runs.

    ``affine_folder``: the affine pair store a deformable batch starts from (its pairs must be finished).
    ``volume_cache`` (case id -> volume) and ``level_images`` (a torch_engine.LevelImages) carry loaded volumes
    and their affine pyramid images from one batch to the next.
    """
    import torch

    from cctrnet.registration.torch_engine import PairVolumes, register_batch_torch
    from cctrnet.registration.volumes import load_volume

    settings = RegistrationSettings.from_dict(settings_dict)
    if num_threads is not None:
        torch.set_num_threads(max(1, num_threads))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cache = {} if volume_cache is None else volume_cache

    def volume(case_id: str) -> Any:
        if case_id not in cache:
            cache[case_id] = load_volume(Path(data_folder), case_id, settings.channel)
        return cache[case_id]

    batch, starts, failed = [], [], []
    affine_store = PairStore(Path(affine_folder)) if affine_folder else None
    for moving, fixed in pairs:
        try:
            start = _affine_start(affine_store, moving, fixed) if method in AFFINE_BASED_METHODS else None
            batch.append(PairVolumes(moving, fixed, *volume(fixed), *volume(moving)))
            starts.append(start)
        except Exception as error:  # an unreadable case or a failed affine fails its pairs, not the run
            failed.append(PairResult(moving, fixed, method, "torch", STATUS_FAILED, reason=f"{type(error).__name__}: {error}"))
    if not batch:
        return failed
    if method == "affine":
        return failed + register_batch_torch(batch, settings, device, level_images)
    if method == "affine_deformable":
        from cctrnet.registration.deformable_engine import register_batch_deformable

        matrices, texts = zip(*starts)
        return failed + register_batch_deformable(batch, matrices, texts, settings, device)
    raise ValueError(f"the torch engine registers affine and affine_deformable, not {method}; "
                     f"use --registration-engine simpleitk")


class AffineStartMissing(RuntimeError):
    """The affine registration a deformable pair starts from failed or is missing."""


def _affine_start(affine_store: PairStore | None, moving: str, fixed: str) -> tuple[Any, str]:
    from cctrnet.registration.transforms import affine_matrix_4x4, transform_from_file

    if affine_store is None:
        raise AffineStartMissing("no affine registrations to start from")
    result = affine_store.load(moving, fixed)
    if result is None or not result.ok:
        reason = "missing" if result is None else result.reason
        raise AffineStartMissing(f"the affine registration of this pair failed ({reason})")
    path = affine_store.transform_path(moving, fixed)
    return affine_matrix_4x4(transform_from_file(path)), path.read_text()


def _torch_threads(num_processes: int) -> int:
    """-np threads, but never more than the cores other processes leave free (training's rule)."""
    from cctrnet.utilities.cpu_threads import choose_cpu_threads

    free, note = choose_cpu_threads()
    threads = max(1, min(num_processes, free))
    if threads < num_processes and note:
        print(f"[cctrnet] registration: {note.replace('--threads N to choose', 'set OMP_NUM_THREADS to choose')}",
              file=sys.stderr)
    return threads


def _batches_by_fixed(todo: Sequence[tuple[str, str]], size: int) -> list[list[tuple[str, str]]]:
    """Batches of pairs that share their fixed volume where possible: a batch is padded to its largest grids,
    and one fixed grid per batch pads the least (a pair's result does not depend on its batch)."""
    return _batches(sorted(todo, key=lambda pair: (pair[1], pair[0])), size)


def _torch_batches(data_folder: Path, todo: Sequence[tuple[str, str]], method: str, settings: RegistrationSettings,
                   num_threads: int, affine_folder: str | None) -> Iterator[PairResult]:
    from cctrnet.registration.torch_engine import LevelImages

    cache: dict[str, Any] = {}
    level_images = LevelImages()
    batches = _batches_by_fixed(todo, settings.torch_batch_size)
    for number, chunk in enumerate(batches):
        yield from compute_batch_job(str(data_folder), chunk, method, settings.to_dict(), affine_folder, num_threads, cache,
                                     level_images)
        needed = {case for later in batches[number + 1:] for pair in later for case in pair}
        for case_id in [c for c in cache if c not in needed]:
            del cache[case_id]
        level_images.keep_only(array for array, _ in cache.values())


def _dask_batches(data_folder: Path, todo: Sequence[tuple[str, str]], method: str, settings: RegistrationSettings,
                  scheduler: str, affine_folder: str | None, num_processes: int, lost: list) -> Iterator[PairResult]:
    """Batches of the torch engine as Dask tasks (workers must see ``data_folder``); one task, one batch.

    A worker with a GPU registers on it (its ``CUDA_VISIBLE_DEVICES`` decides which), one thread otherwise.
    """
    batches = _batches_by_fixed(todo, settings.torch_batch_size)
    calls = [(str(data_folder), chunk, method, settings.to_dict(), affine_folder, 1) for chunk in batches]
    for chunk, (results, error) in _on_dask(scheduler, compute_batch_job, calls, batches, num_processes,
                                            one_per_gpu=True):
        if error is None:
            yield from results
        elif _worker_lost(error):
            lost.extend((pair, f"{type(error).__name__}: {error}") for pair in chunk)
        else:
            yield from (_worker_failure(pair, method, "torch", error) for pair in chunk)
