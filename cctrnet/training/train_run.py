"""One training run from the command line's choices: set-up, trainer, optional resume, training."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from cctrnet import paths
from cctrnet.training.config import TrainerConfig
from cctrnet.training.run_setup import RunSetupError, prepare_run, run_folder_name


class TrainingRunError(RuntimeError):
    """The run could not start or finish; the message says why."""


def make_trainer(dataset: str, trainer_name: str = "CCTRTrainer", num_labeled: int | None = None,
                 labeled_cases: Sequence[str] | None = None, seed: int = 0, iterations: int | None = None,
                 device_name: str = "auto", overrides: dict[str, Any] | None = None, output_folder: Path | None = None):
    """Build the trainer of a run (nothing trained yet)."""
    from cctrnet.training.trainers.registry import get_trainer_class
    from cctrnet.utilities.device import resolve_device

    try:
        trainer_class = get_trainer_class(trainer_name)
        setup = prepare_run(dataset, num_labeled, labeled_cases, seed)
        settings = {**trainer_class.config_defaults, **(overrides or {}), "seed": seed}
        if iterations is not None:
            settings["num_iterations"] = iterations
        config = TrainerConfig().with_overrides(settings)
        device = resolve_device(device_name)
    except (ValueError, RunSetupError, RuntimeError) as error:
        raise TrainingRunError(str(error)) from None
    if output_folder is None:
        output_folder = (paths.results_folder() / setup.dataset_name /
                         run_folder_name(trainer_name, setup.num_labeled, seed))
    return trainer_class(setup, config, device, output_folder)


def train(dataset: str, trainer_name: str = "CCTRTrainer", num_labeled: int | None = None,
          labeled_cases: Sequence[str] | None = None, seed: int = 0, iterations: int | None = None,
          device_name: str = "auto", resume: bool = False, overrides: dict[str, Any] | None = None,
          progress: bool = True, validate: bool = False) -> Path:
    """Train (or resume) a run, then optionally validate on the test images; returns its model folder."""
    trainer = make_trainer(dataset, trainer_name, num_labeled, labeled_cases, seed, iterations, device_name, overrides)
    latest = trainer.output_folder / "checkpoint_latest.pth"
    if resume:
        if not latest.exists():
            raise TrainingRunError(f"--c: {latest} does not exist; start the run without --c")
        trainer.load(latest)
        print(f"resuming {trainer.output_folder} at iteration {trainer.iteration}")
    elif (trainer.output_folder / "checkpoint_final.pth").exists() or latest.exists():
        raise TrainingRunError(f"{trainer.output_folder} already holds a run; resume it with --c or delete the folder")
    print(f"training {trainer.name} on {trainer.setup.dataset_name}: {len(trainer.setup.labeled_cases)} labeled, "
          f"{len(trainer.setup.unlabeled_cases)} unlabeled cases, {trainer.num_iterations} iterations on "
          f"{trainer.device}; writing to {trainer.output_folder}")
    if validate:  # fail before training, not after, when the test data is missing
        _check_validation_data(trainer.setup.dataset_name)
    trainer.run(progress=progress)
    print(f"finished; data loading took {trainer.data_wait_share():.1%} of the time; model in {trainer.output_folder}")
    _determine_postprocessing(trainer.output_folder)
    if validate:
        from cctrnet.training.validation import validate_model

        validate_model(trainer.output_folder, trainer.setup.dataset_name, device_name, progress)
    return trainer.output_folder


def _determine_postprocessing(model_folder: Path) -> None:
    """Decide the post-processing now, so cctr_predict applies it; a failure leaves the model usable without."""
    from cctrnet.postprocessing.determine import PostprocessingDecisionError, determine_postprocessing

    try:
        determine_postprocessing(model_folder)
    except (PostprocessingDecisionError, OSError, ValueError, LookupError) as error:
        print(f"post-processing not decided ({error}); predictions will not be post-processed until "
              f"cctr_determine_postprocessing -m {model_folder} succeeds")


def _check_validation_data(dataset_name: str) -> None:
    raw = paths.raw_folder() / dataset_name
    missing = [str(raw / sub) for sub in ("imagesTs", "labelsTs") if not (raw / sub).is_dir()]
    if missing:
        raise TrainingRunError(f"--val needs {' and '.join(missing)}")
