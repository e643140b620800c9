"""The trainer's data loader, configured from the run set-up, the settings and the registration stage."""
from __future__ import annotations

from cctrnet.training.data.augmentation import AugmentationSettings
from cctrnet.training.data.loader import DataLoaderSettings, TrainingDataLoader


def build_training_loader(trainer) -> TrainingDataLoader:
    setup, config = trainer.setup, trainer.config
    configuration = setup.configuration
    with_unlabeled = bool(getattr(trainer, "needs_unlabeled", False)) and bool(setup.unlabeled_cases)
    registered = None
    if config.rsl and getattr(trainer, "registration", None) is not None:
        registered = {case: trainer.registration.registered_label(case) for case in setup.unlabeled_cases}
    settings = DataLoaderSettings(
        num_workers=config.num_workers, oversample_foreground_fraction=config.foreground_oversampling,
        seed=config.seed, provide_hidden_truth=with_unlabeled and bool(setup.hidden_label_cases))
    augmentation = AugmentationSettings() if config.augment else AugmentationSettings.identity()
    return TrainingDataLoader(
        setup.data_folder, setup.labeled_cases, setup.unlabeled_cases if with_unlabeled else [],
        configuration["patch_size_yx"], configuration["labeled_per_batch"],
        configuration["unlabeled_per_batch"] if with_unlabeled else 0, registered, augmentation, settings,
        start_iteration=trainer.iteration, volume_index={case: i for i, case in enumerate(setup.all_cases)})
