"""Batches of the CCT-R trainer: a labeled and an unlabeled stream of augmented 2D patches.

``TrainingDataLoader.next_batch()`` returns ``{"labeled": {...}, "unlabeled": {...}}`` (``"unlabeled"`` is
None when the plan has no unlabeled samples per batch), each holding torch tensors:

- ``image`` (b, c, h, w) float32;
- ``target`` (b, h, w) int64: the label (labeled) or registered label (unlabeled), -1 = ignore;
- ``coords_zyx`` (b, 3, h, w) float32: per pixel, the continuous voxel coordinates (z, y, x) in the
  preprocessed volume it was sampled from, -1 where invalid; ``coords_valid`` (b, h, w) bool;
- ``volume_index`` (b,) int64, ``slice_z`` (b,) int64, ``case_ids`` list of str;
- unlabeled only, when ``provide_hidden_truth``: ``hidden_truth`` (b, h, w) int64, the true label of a
  case whose label is hidden for the run (-1 where unknown). For reporting only, never a training target.

Batch k is a pure function of (seed, k) (of (seed, k, rank) for a rank of data-parallel training): its random draws come from a generator seeded with both, and
batchgenerators' intensity transforms (which use numpy's global generator) are re-seeded per batch.
Worker w of n produces batches w, w + n, ... and batchgenerators' MultiThreadedAugmenter collects them
round-robin, so the sequence is the same for any number of workers, and resuming at iteration i
(``start_iteration=i``) continues the exact sequence.
"""
from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from cctrnet.training.data.augmentation import AugmentationSettings, draw_spatial_parameters, intensity_transforms
from cctrnet.training.data.patch_extraction import extract_patch
from cctrnet.training.data.sampling import crop_center_yx
from cctrnet.training.data.slice_dataset import SliceSource, build_volume_index


@dataclass(frozen=True)
class DataLoaderSettings:
    num_workers: int = 2  # 0: batches made in the calling process (tests, debugging)
    oversample_foreground_fraction: float = 0.33  # share of labeled samples centred on a foreground voxel
    slice_sampling: str = "slice"  # "slice": all slices equally likely; "case": a case first (nnU-Net)
    seed: int = 0
    provide_hidden_truth: bool = False
    pin_memory: bool = True  # only where CUDA is available
    num_cached_per_worker: int = 2
    # data-parallel training: rank r of a run draws its own stream, seeded with (seed, batch, r); None: one process
    rank_stream: int | None = None

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if not 0.0 <= self.oversample_foreground_fraction <= 1.0:
            raise ValueError(f"oversample_foreground_fraction must lie in [0, 1], got "
                             f"{self.oversample_foreground_fraction}")
        if self.slice_sampling not in ("slice", "case"):
            raise ValueError(f"slice_sampling must be 'slice' or 'case', got {self.slice_sampling!r}")


class TwoStreamBatchGenerator:
    """A batchgenerators data loader: each ``next`` gives one numpy batch, labeled samples first."""

    def __init__(self, labeled: SliceSource, unlabeled: SliceSource | None, labeled_per_batch: int,
                 unlabeled_per_batch: int, patch_size_yx: Sequence[int], augmentation: AugmentationSettings,
                 settings: DataLoaderSettings, first_batch_index: int = 0, num_producers: int = 1) -> None:
        self.labeled = labeled
        self.unlabeled = unlabeled
        self.labeled_per_batch = labeled_per_batch
        self.unlabeled_per_batch = unlabeled_per_batch if unlabeled is not None else 0
        self.patch_size_yx = tuple(int(p) for p in patch_size_yx)
        self.augmentation = augmentation
        self.settings = settings
        self.first_batch_index = first_batch_index
        self.num_producers = max(1, num_producers)
        self.thread_id = 0
        self._produced = 0

    def set_thread_id(self, thread_id: int) -> None:
        self.thread_id = thread_id

    def __iter__(self) -> "TwoStreamBatchGenerator":
        return self

    def __next__(self) -> dict[str, Any]:
        index = self.first_batch_index + self.thread_id + self._produced * self.num_producers
        self._produced += 1
        return self.generate_batch(index)

    def generate_batch(self, batch_index: int) -> dict[str, Any]:
        """Batch number ``batch_index`` (numpy, before intensity augmentation)."""
        entropy = [self.settings.seed, batch_index] + ([] if self.settings.rank_stream is None else [self.settings.rank_stream])
        sampling_seed, transform_seed = np.random.SeedSequence(entropy).spawn(2)
        rng = np.random.default_rng(sampling_seed)
        # batchgenerators' intensity transforms draw from numpy's and Python's global generators
        transform_state = transform_seed.generate_state(2)
        np.random.seed(int(transform_state[0]))
        random.seed(int(transform_state[1]))
        streams = [(self.labeled, self.labeled_per_batch, self.settings.oversample_foreground_fraction)]
        if self.unlabeled_per_batch > 0:
            streams.append((self.unlabeled, self.unlabeled_per_batch, 0.0))
        samples, info, hidden_truth = [], [], []
        for source, count, foreground_fraction in streams:
            for _ in range(count):
                force_foreground = foreground_fraction > 0 and rng.random() < foreground_fraction
                choice = source.draw(rng, force_foreground, self.settings.slice_sampling)
                case = source.cases[choice.case_position]
                image, label_channels = source.slice_views(choice.case_position, choice.z)
                center = crop_center_yx(rng, case.shape_zyx[1:], self.patch_size_yx, choice.foreground_yx)
                params = draw_spatial_parameters(rng, self.augmentation, self.patch_size_yx)
                sample = extract_patch(image, label_channels, choice.z, center, self.patch_size_yx, params,
                                       self.augmentation.image_interpolation_order)
                samples.append(sample)
                if source.provide_hidden_truth:
                    hidden_truth.append(sample.labels[1])
                info.append((case.case_id, case.volume_index, choice.z))
        batch = {
            "data": np.stack([s.image for s in samples]),
            "target": np.stack([s.labels[0] for s in samples]),
            "coords_zyx": np.stack([s.coords_zyx for s in samples]),
            "coords_valid": np.stack([s.coords_valid for s in samples]),
            "volume_index": np.array([i[1] for i in info], dtype=np.int64),
            "slice_z": np.array([i[2] for i in info], dtype=np.int64),
            "case_ids": [i[0] for i in info],
            "batch_index": batch_index,
        }
        if hidden_truth:
            batch["hidden_truth_unlabeled"] = np.stack(hidden_truth)
        return batch


class SplitStreamsToTorch:
    """Numpy batch -> {"labeled": {...}, "unlabeled": {...}} of tensors.

    Run in the main process: batches cross the worker queues as numpy arrays, which avoids torch's
    file-descriptor sharing (fragile when workers stop with batches in flight) at the cost of one copy.
    """

    def __init__(self, labeled_per_batch: int, unlabeled_per_batch: int, provide_hidden_truth: bool) -> None:
        self.labeled_per_batch = labeled_per_batch
        self.unlabeled_per_batch = unlabeled_per_batch
        self.provide_hidden_truth = provide_hidden_truth

    def __call__(self, **batch: Any) -> dict[str, Any]:
        import torch

        n = self.labeled_per_batch

        def part(rows: slice, with_hidden_truth: bool) -> dict[str, Any]:
            out = {
                "image": torch.from_numpy(np.ascontiguousarray(batch["data"][rows], dtype=np.float32)),
                "target": torch.from_numpy(batch["target"][rows].astype(np.int64)),
                "coords_zyx": torch.from_numpy(np.ascontiguousarray(batch["coords_zyx"][rows])),
                "coords_valid": torch.from_numpy(np.ascontiguousarray(batch["coords_valid"][rows])),
                "volume_index": torch.from_numpy(batch["volume_index"][rows].copy()),
                "slice_z": torch.from_numpy(batch["slice_z"][rows].copy()),
                "case_ids": list(batch["case_ids"][rows]),
            }
            if with_hidden_truth:
                out["hidden_truth"] = torch.from_numpy(batch["hidden_truth_unlabeled"].astype(np.int64))
            return out

        unlabeled = None
        if self.unlabeled_per_batch > 0:
            unlabeled = part(slice(n, n + self.unlabeled_per_batch), self.provide_hidden_truth)
        return {"labeled": part(slice(0, n), False), "unlabeled": unlabeled, "batch_index": batch["batch_index"]}


class TrainingDataLoader:
    """Endless two-stream batches, made by ``num_workers`` background processes (0: in process)."""

    def __init__(self, folder: str | os.PathLike, labeled_case_ids: Sequence[str],
                 unlabeled_case_ids: Sequence[str], patch_size_yx: Sequence[int], labeled_per_batch: int,
                 unlabeled_per_batch: int, registered_labels: Mapping[str, np.ndarray | None] | None = None,
                 augmentation: AugmentationSettings | None = None, settings: DataLoaderSettings | None = None,
                 start_iteration: int = 0, volume_index: Mapping[str, int] | None = None) -> None:
        from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
        from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
        from batchgenerators.transforms.abstract_transforms import Compose

        self.augmentation = augmentation if augmentation is not None else AugmentationSettings()
        self.settings = settings if settings is not None else DataLoaderSettings()
        overlap = sorted(set(labeled_case_ids) & set(unlabeled_case_ids))
        if overlap:
            raise ValueError(f"cases cannot be both labeled and unlabeled: {overlap}")
        if labeled_per_batch < 1 or unlabeled_per_batch < 0:
            raise ValueError(f"need labeled_per_batch >= 1 and unlabeled_per_batch >= 0, got "
                             f"{labeled_per_batch} and {unlabeled_per_batch}")
        if not labeled_case_ids:
            raise ValueError("the labeled stream needs at least one labeled case")
        if unlabeled_per_batch > 0 and not unlabeled_case_ids:
            raise ValueError(f"unlabeled_per_batch is {unlabeled_per_batch} but there are no unlabeled cases")
        self.volume_index = dict(volume_index) if volume_index is not None else build_volume_index(
            list(labeled_case_ids) + list(unlabeled_case_ids))
        self.labeled_source = SliceSource(folder, labeled_case_ids, "labeled", self.volume_index)
        self.unlabeled_source = None
        if unlabeled_per_batch > 0:
            self.unlabeled_source = SliceSource(folder, unlabeled_case_ids, "unlabeled", self.volume_index,
                                                registered_labels, self.settings.provide_hidden_truth)
        channels = {c.num_channels for s in (self.labeled_source, self.unlabeled_source) if s for c in s.cases}
        if len(channels) != 1:
            raise ValueError(f"all cases in {folder} must have the same number of channels, found {sorted(channels)}")
        self.num_channels = channels.pop()
        self.patch_size_yx = tuple(int(p) for p in patch_size_yx)
        self.labeled_per_batch = labeled_per_batch
        self.unlabeled_per_batch = unlabeled_per_batch
        generator = TwoStreamBatchGenerator(
            self.labeled_source, self.unlabeled_source, labeled_per_batch, unlabeled_per_batch, self.patch_size_yx,
            self.augmentation, self.settings, first_batch_index=start_iteration,
            num_producers=self.settings.num_workers)
        intensity = intensity_transforms(self.augmentation)
        transform = Compose(intensity) if intensity else None
        if self.settings.num_workers == 0:
            self._augmenter = SingleThreadedAugmenter(generator, transform)
        else:
            self._augmenter = MultiThreadedAugmenter(
                generator, transform, self.settings.num_workers, self.settings.num_cached_per_worker,
                seeds=None, pin_memory=False)
        self._to_torch = SplitStreamsToTorch(labeled_per_batch, unlabeled_per_batch,
                                             self.settings.provide_hidden_truth)
        self.wait_seconds = 0.0  # total time next_batch() spent waiting for data
        self.batches_served = 0

    @classmethod
    def from_plan(cls, folder: str | os.PathLike, plans: Mapping[str, Any], labeled_case_ids: Sequence[str],
                  unlabeled_case_ids: Sequence[str], configuration: str = "2d", **kwargs: Any) -> "TrainingDataLoader":
        """Patch size and samples per stream from ``plans.json``'s configuration."""
        try:
            config = plans["configurations"][configuration]
            patch, n_labeled, n_unlabeled = (config["patch_size_yx"], config["labeled_per_batch"],
                                             config["unlabeled_per_batch"])
        except KeyError as missing:
            raise KeyError(f"plans lack {missing} in configuration {configuration!r}") from None
        return cls(folder, labeled_case_ids, unlabeled_case_ids, patch, n_labeled, n_unlabeled, **kwargs)

    @property
    def num_training_slices(self) -> int:
        """Slices of all training cases (M + K in the method's notation)."""
        sources = [self.labeled_source] + ([self.unlabeled_source] if self.unlabeled_source else [])
        return sum(s.num_slices for s in sources)

    def next_batch(self) -> dict[str, Any]:
        """The next batch; the time this call blocks is added to ``wait_seconds``."""
        start = time.perf_counter()
        if self.settings.num_workers == 0:
            # batches re-seed numpy's and Python's global generators; keep the caller's streams untouched
            numpy_state, python_state = np.random.get_state(), random.getstate()
            try:
                raw = next(self._augmenter)
            finally:
                np.random.set_state(numpy_state)
                random.setstate(python_state)
        else:
            raw = next(self._augmenter)
        batch = self._to_torch(**raw)
        if self.settings.pin_memory:
            import torch
            if torch.cuda.is_available():
                from batchgenerators.dataloading.nondet_multi_threaded_augmenter import (
                    pin_memory_of_all_eligible_items_in_dict)
                batch = pin_memory_of_all_eligible_items_in_dict(batch)
        self.wait_seconds += time.perf_counter() - start
        self.batches_served += 1
        return batch

    def pop_wait_seconds(self) -> float:
        """Waiting time since the previous call (or since the start), then reset."""
        seconds, self.wait_seconds = self.wait_seconds, 0.0
        return seconds

    def close(self) -> None:
        """Stop the worker processes."""
        finish = getattr(self._augmenter, "_finish", None)
        if finish is not None:
            finish()

    def __enter__(self) -> "TrainingDataLoader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
