"""One training run from the command line's choices: a new run, the resume of an unfinished one, or the
extension of a finished one. Each is its own act, and a folder in the wrong state for it is refused with
the command that fits.
"""
from __future__ import annotations

import shlex
from functools import partial
from pathlib import Path
from typing import Any, Sequence

from cctrnet import paths
from cctrnet.training.config import USED_ONLY_WITH, TrainerConfig, inert_settings
from cctrnet.training.run_record import FINAL, LATEST, RunRecord, keep_final_checkpoint, read_run_record, setting_differences
from cctrnet.training.run_setup import RunSetup, RunSetupError, prepare_run, run_folder_name
from cctrnet.training.validation import VALIDATION_SET, VALIDATION_SETS, check_evaluation_data, check_same_validation


class TrainingRunError(RuntimeError):
    """The run could not start or finish; the message says why."""


class TrainingStopped(Exception):
    """Training stopped on a signal after saving; ``str()`` is the one line to show the user."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


def run_command(dataset: str, trainer_name: str = "CCTRTrainer", num_labeled: int | None = None,
                labeled_cases: Sequence[str] | None = None, seed: int = 0, *extra: str,
                val_fraction: float | None = None, val_cases: Sequence[str] | None = None) -> str:
    """The ``cctr_train`` command line that addresses this run's model folder, plus ``extra``."""
    words = ["cctr_train", str(dataset)]
    if trainer_name != "CCTRTrainer":
        words += ["-tr", trainer_name]
    if labeled_cases:
        words += ["--labeled-cases", *sorted(set(labeled_cases))]
    elif num_labeled is not None:
        words += ["--labeled", str(num_labeled)]
    if seed != 0:
        words += ["--seed", str(seed)]
    if val_fraction is not None:
        words += ["--val-fraction", str(val_fraction)]
    elif val_cases:
        words += ["--val-cases", *sorted(set(val_cases))]
    return shlex.join([*words, *extra])


def make_trainer(dataset: str, trainer_name: str = "CCTRTrainer", num_labeled: int | None = None,
                 labeled_cases: Sequence[str] | None = None, seed: int = 0, iterations: int | None = None,
                 device_name: str = "auto", overrides: dict[str, Any] | None = None, output_folder: Path | None = None,
                 recorded_settings: dict[str, Any] | None = None, setup: RunSetup | None = None,
                 val_fraction: float | None = None, val_cases: Sequence[str] | None = None):
    """Build the trainer of a run (nothing trained yet); ``recorded_settings`` replace the defaults and
    the overrides; ``setup``, when the caller has prepared it already, saves preparing it twice."""
    from cctrnet.training.trainers.registry import get_trainer_class
    from cctrnet.utilities.device import resolve_device

    try:
        trainer_class = get_trainer_class(trainer_name)
        setup = setup if setup is not None else prepare_run(dataset, num_labeled, labeled_cases, seed, val_fraction,
                                                            val_cases)
        if recorded_settings is not None:
            settings = dict(recorded_settings)
        else:
            settings = {**trainer_class.config_defaults, **(overrides or {}), "seed": seed}
            if iterations is not None:
                settings["num_iterations"] = iterations
        config = TrainerConfig().with_overrides(settings)
        inert = sorted(inert_settings(config.to_dict()) & set(overrides or {}))
        if inert and recorded_settings is None:
            print(f"[cctrnet] note: {', '.join(inert)} change(s) nothing in this run of {trainer_name}: "
                  + "; ".join(f"{key} needs {' or '.join(USED_ONLY_WITH[key])} on" for key in inert))
        device = resolve_device(device_name)
    except (ValueError, TypeError, RunSetupError, RuntimeError) as error:
        raise TrainingRunError(str(error)) from None
    if output_folder is None:
        output_folder = model_folder_of(setup.dataset_name, trainer_name, setup.num_labeled, seed)
    return trainer_class(setup, config, device, output_folder)


def model_folder_of(dataset_name: str, trainer_name: str, num_labeled: int, seed: int) -> Path:
    return paths.results_folder() / dataset_name / run_folder_name(trainer_name, num_labeled, seed)


def train(dataset: str, trainer_name: str = "CCTRTrainer", num_labeled: int | None = None,
          labeled_cases: Sequence[str] | None = None, seed: int = 0, iterations: int | None = None,
          device_name: str = "auto", resume: bool = False, overrides: dict[str, Any] | None = None,
          progress: bool = True, validate: bool = False, extend_to: int | None = None,
          val_fraction: float | None = None, val_cases: Sequence[str] | None = None,
          validation_set: str = VALIDATION_SET) -> Path:
    """Train a new run, resume an unfinished one (``resume``) or extend a finished one (``extend_to``), then
    optionally (``validate``) evaluate on ``validation_set``: ``"validation"`` (the run's validation cases) or
    ``"test"`` (imagesTs, only when named); returns the model folder."""
    if resume and extend_to is not None:
        raise TrainingRunError("--c continues an unfinished run, --extend-to a finished one: give one of them")
    if extend_to is not None and iterations is not None:
        raise TrainingRunError("--extend-to N sets the new length; leave out --iterations")
    command = partial(run_command, dataset, trainer_name, num_labeled, labeled_cases, seed,
                      val_fraction=val_fraction, val_cases=val_cases)
    if validation_set not in VALIDATION_SETS:
        raise TrainingRunError(f"--val-set must be one of {', '.join(VALIDATION_SETS)}, got {validation_set!r}")
    check_prepared(dataset)
    try:
        setup = prepare_run(dataset, num_labeled, labeled_cases, seed, val_fraction, val_cases)
    except RunSetupError as error:
        raise TrainingRunError(str(error)) from None
    if validate:  # fail before registration, training and an extension's moving of files, when the data is missing
        try:
            check_evaluation_data(setup.dataset_name, validation_set, setup.validation)
        except ValueError as error:
            raise TrainingRunError(str(error)) from None
    folder = model_folder_of(setup.dataset_name, trainer_name, len(setup.labeled_cases), seed)
    try:
        record = read_run_record(folder)
        check_same_validation(folder, setup.validation)
    except ValueError as error:
        raise TrainingRunError(str(error)) from None
    if resume or extend_to is not None:
        record = _check_continuation(record, folder, resume, extend_to, iterations, overrides or {}, command)
        trainer = make_trainer(dataset, trainer_name, num_labeled, labeled_cases, seed, device_name=device_name,
                               output_folder=folder, recorded_settings=record.settings, setup=setup)
    else:
        _check_new_run(folder, record, command)
        trainer = make_trainer(dataset, trainer_name, num_labeled, labeled_cases, seed, iterations, device_name,
                               overrides, folder, setup=setup)
    if resume or extend_to is not None:
        checkpoint = folder / (LATEST if resume else FINAL)
        try:
            trainer.load(checkpoint)
        except (ValueError, KeyError, RuntimeError, OSError) as error:
            raise TrainingRunError(f"{checkpoint}: cannot continue from it: {error}") from None
    if resume:
        trainer.restore_run_record(record.num_iterations, record.schedule, record.extensions)
        print(f"resuming {folder} at iteration {trainer.iteration} of {trainer.num_iterations}")
    elif extend_to is not None:
        trainer.restore_run_record(record.num_iterations, record.schedule, record.extensions)
        kept = trainer.distributed.on_main(keep_final_checkpoint, folder, record.num_iterations)
        trainer.extend_to(extend_to, kept)
        trainer.write_run_files()  # the extension is on record before the first new iteration
        print(f"extending {folder} from {record.num_iterations} to {extend_to} iterations; the finished model is "
              f"kept as {folder / kept}; the learning rate restarts at its initial value and decays to 0 at "
              f"{extend_to}, w_cps holds its maximum")
    print(f"training {trainer.name} on {trainer.setup.dataset_name}: {len(trainer.setup.labeled_cases)} labeled, "
          f"{len(trainer.setup.unlabeled_cases)} unlabeled cases, {trainer.num_iterations} iterations on "
          f"{trainer.device}; writing to {trainer.output_folder}")
    from cctrnet.training.trainers.base import TrainingInterrupted

    try:
        trainer.run(progress=progress)
    except TrainingInterrupted as stop:
        raise TrainingStopped(f"stopped by {stop.signal_name} at iteration {trainer.iteration} of "
                              f"{trainer.num_iterations}; checkpoint {folder / LATEST}; resume with: "
                              f"{command('--c')}", stop.signum) from None
    if not trainer.distributed.is_main:  # data-parallel: rank 0 alone post-processes, validates and reports
        return trainer.output_folder
    print(f"finished; data loading took {trainer.data_wait_share():.1%} of the time; model in {trainer.output_folder}")
    _determine_postprocessing(trainer.output_folder)
    if validate:
        from cctrnet.training.validation import validate_model

        validate_model(trainer.output_folder, trainer.setup.dataset_name, device_name, progress, validation_set)
    from cctrnet.report.page import write_report_safely

    write_report_safely(trainer.output_folder)  # report.html, a view of the run: never fails it
    return trainer.output_folder


def _determine_postprocessing(model_folder: Path) -> None:
    """Decide the post-processing now, so cctr_predict applies it; a failure leaves the model usable without."""
    from cctrnet.postprocessing.determine import PostprocessingDecisionError, determine_postprocessing

    try:
        determine_postprocessing(model_folder)
    except (PostprocessingDecisionError, OSError, ValueError, LookupError) as error:
        print(f"post-processing not decided ({error}); predictions will not be post-processed until "
              f"cctr_determine_postprocessing -m {model_folder} succeeds")


def check_prepared(dataset: str) -> None:
    """A dataset that is not preprocessed: say where we looked, and whether the raw one exists to prepare."""
    from cctrnet.dataset.raw_dataset import DatasetNotFoundError, find_dataset_folder

    try:
        find_dataset_folder(dataset, paths.preprocessed_folder())
        return
    except DatasetNotFoundError as not_preprocessed:
        try:
            raw = find_dataset_folder(dataset, paths.raw_folder())
        except DatasetNotFoundError as not_raw:
            raise TrainingRunError(
                f"{not_preprocessed}\n{not_raw}\n  put the raw dataset into the raw folder "
                "(documentation/dataset_format.md; cctr_generate_phantom -d 1 writes a phantom one), then prepare it "
                f"with: cctr_plan_and_preprocess -d {dataset}") from None
        raise TrainingRunError(f"{not_preprocessed}\n  the raw dataset is {raw}; prepare it with: "
                               f"cctr_plan_and_preprocess -d {dataset}") from None


def _check_new_run(folder: Path, record: RunRecord | None, command) -> None:
    if (folder / FINAL).exists():
        length = f" of {record.num_iterations} iterations" if record else ""
        further = (f"{command('--extend-to', str(2 * record.num_iterations))} (any length above the current one)"
                   if record else "--extend-to N")
        raise TrainingRunError(f"{folder} holds a finished run{length}; to train it further: {further}; to start "
                               "over, delete the folder")
    if (folder / LATEST).exists():
        raise TrainingRunError(f"{folder} holds an unfinished run; resume it with: {command('--c')} "
                               "(or delete the folder to start over)")


def _check_continuation(record: RunRecord | None, folder: Path, resume: bool, extend_to: int | None,
                        iterations: int | None, overrides: dict[str, Any], command) -> RunRecord:
    flag = "--c" if resume else f"--extend-to {extend_to}"
    if record is None or not (record.has_checkpoint or record.finished):
        raise TrainingRunError(f"{flag}: no run in {folder} ({LATEST} and config.json missing); start it with: "
                               f"{command()}")
    if resume and record.finished:
        raise TrainingRunError(
            f"{folder} holds a finished run of {record.num_iterations} iterations ({FINAL}); --c only continues "
            f"unfinished runs. To train it further: {command('--extend-to', str(2 * record.num_iterations))} "
            "(any length above the current one)")
    if resume and iterations is not None and iterations != record.num_iterations:
        raise TrainingRunError(
            f"--c continues the run to its recorded {record.num_iterations} iterations ({folder / 'config.json'}); "
            f"--iterations {iterations} differs. Resume without --iterations: {command('--c')}; once it has "
            f"finished, extend it with --extend-to {iterations}")
    if extend_to is not None:
        if not record.finished:
            raise TrainingRunError(f"--extend-to extends a finished run; {folder} has no {FINAL} (unfinished at "
                                   f"{record.num_iterations} iterations). Finish it first: {command('--c')}")
        if extend_to <= record.num_iterations:
            raise TrainingRunError(f"--extend-to {extend_to}: the run already has {record.num_iterations} iterations; "
                                   "give a larger number")
    changed = setting_differences(record.settings, overrides)
    if changed:
        raise TrainingRunError(f"{flag} keeps the run's recorded settings ({folder / 'config.json'}); --set would "
                               f"change {'; '.join(changed)}. Leave out --set, or train a new run (another --seed "
                               "or folder)")
    return record
