"""The trainer's data loader, configured from the run set-up, the settings and the registration stage.

In data-parallel training each rank loads its share of the global batch (``Distributed.local_batch``):
``ddp_sampling=per_rank`` draws it from the rank's own stream; ``shared`` makes the single-process batch on
every rank and keeps the rank's rows (the same batches for any number of processes, at that many times the
data work).
"""
from __future__ import annotations

from typing import Any

from cctrnet.training.data.augmentation import AugmentationSettings
from cctrnet.training.data.loader import DataLoaderSettings, TrainingDataLoader


def build_training_loader(trainer) -> TrainingDataLoader:
    setup, config = trainer.setup, trainer.config
    configuration = setup.configuration
    with_unlabeled = bool(getattr(trainer, "needs_unlabeled", False)) and bool(setup.unlabeled_cases)
    registered = None
    if config.rsl and getattr(trainer, "registration", None) is not None:
        registered = {case: trainer.registration.registered_label(case) for case in setup.unlabeled_cases}
    dist = trainer.distributed
    n_labeled, n_unlabeled = configuration["labeled_per_batch"], configuration["unlabeled_per_batch"] if with_unlabeled else 0
    shared = dist.enabled and config.ddp_sampling == "shared"
    if dist.enabled and not shared:
        n_labeled, n_unlabeled = dist.local_batch(n_labeled, n_unlabeled)
    settings = DataLoaderSettings(
        num_workers=config.num_workers, oversample_foreground_fraction=config.foreground_oversampling,
        seed=config.seed, provide_hidden_truth=with_unlabeled and bool(setup.hidden_label_cases),
        rank_stream=dist.rank if dist.enabled and not shared else None)
    augmentation = AugmentationSettings() if config.augment else AugmentationSettings.identity()
    loader = TrainingDataLoader(
        setup.data_folder, setup.labeled_cases, setup.unlabeled_cases if with_unlabeled else [],
        configuration["patch_size_yx"], n_labeled, n_unlabeled, registered, augmentation, settings,
        start_iteration=trainer.iteration, volume_index={case: i for i, case in enumerate(setup.all_cases)})
    return RankRowsOfSharedBatch(loader, dist) if shared else loader


class RankRowsOfSharedBatch:
    """The single-process batch, cut to this rank's labeled and unlabeled rows (``ddp_sampling=shared``)."""

    def __init__(self, loader: TrainingDataLoader, dist) -> None:
        self.loader = loader
        self.n_labeled, self.n_unlabeled = dist.local_batch(loader.labeled_per_batch, loader.unlabeled_per_batch)
        self.rank = dist.rank

    def next_batch(self) -> dict[str, Any]:
        batch = self.loader.next_batch()
        out = dict(batch)
        for stream, n in (("labeled", self.n_labeled), ("unlabeled", self.n_unlabeled)):
            if batch.get(stream) is not None:
                rows = slice(self.rank * n, (self.rank + 1) * n)
                out[stream] = {key: value[rows] for key, value in batch[stream].items()}
        return out

    @property
    def wait_seconds(self) -> float:
        return self.loader.wait_seconds

    def close(self) -> None:
        self.loader.close()
