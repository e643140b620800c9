"""The validation Dice curve measured during training, or the unsupervised proxy when there is no validation set.

Every ``validation_every`` iterations (and at the last one) the current branch A predicts evenly spaced slices
(at most ``validation_max_slices_per_case`` per case, all slices when 0) of at most ``validation_max_cases``
volumes with the inference sliding window (no mirroring, tiles ``validation_window_step`` of a patch apart: without
overlap by default, the cheapest), on the preprocessed grid, and the Dice of its argmax
is pooled over those slices and volumes per foreground class, then averaged over the classes present
(:func:`cctrnet.training.pseudo_label_quality.pseudo_label_dice`). It is recorded as ``val_dice_A`` (drawn in the
"validation Dice" panel of progress.png) and written to training_log.txt. It is a cheap running estimate on the
preprocessed grid; ``cctr_train --val`` gives the exact figures on the raw grid after training.

Without a validation set, when the trainer has registered labels (RSL or REPS), the same measurement against
the registered labels of the unlabeled training volumes is recorded as ``proxy_registered_agreement_A`` in a
panel of its own: how far branch A agrees with the registration. It needs no truth, and it is no validation: the
network is trained towards those very labels, and they carry the registration's errors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from cctrnet.preprocessing.case_storage import load_preprocessed_case
from cctrnet.training.pseudo_label_quality import pseudo_label_dice

VALIDATION_KEY = "val_dice_A"
PROXY_KEY = "proxy_registered_agreement_A"
HIDDEN_LABEL_KEY = "dice_hidden_A"


@dataclass
class CurveVolume:
    """The slices of one volume that the curve evaluates: image (c, z, y, x) and reference (z, y, x)."""

    case_id: str
    image_czyx: np.ndarray
    reference_zyx: np.ndarray


def evenly_spaced_slices(num_slices: int, max_slices: int) -> list[int]:
    """``max_slices`` z indices spread over the volume, ends included (all of them when ``max_slices`` is 0)."""
    if max_slices <= 0 or max_slices >= num_slices:
        return list(range(num_slices))
    return sorted({int(round(z)) for z in np.linspace(0, num_slices - 1, max_slices)})


def curve_volume(case_id: str, image_czyx: np.ndarray, reference_zyx: np.ndarray, max_slices: int) -> CurveVolume:
    slices = evenly_spaced_slices(image_czyx.shape[1], max_slices)
    return CurveVolume(case_id, np.ascontiguousarray(image_czyx[:, slices], dtype=np.float32),
                       np.asarray(reference_zyx[slices], dtype=np.int64))


class ValidationCurve:
    """One curve (validation Dice or the proxy) over a fixed set of slices, measured with branch A."""

    def __init__(self, key: str, what: str, volumes: Sequence[CurveVolume], every_iterations: int,
                 window_step_fraction: float = 1.0):
        self.key = key
        self.what = what  # for the log: "12 slices of 2 imagesVal cases"
        self.volumes = list(volumes)
        self.every_iterations = int(every_iterations)
        self.window_step_fraction = float(window_step_fraction)

    def due(self, iteration: int, num_iterations: int) -> bool:
        """Whether iteration ``iteration`` (counted from 1) is measured."""
        return self.every_iterations > 0 and (iteration % self.every_iterations == 0 or iteration == num_iterations)

    def measure(self, branch: Any, patch_size_yx: Sequence[int], num_classes: int, device: Any) -> float:
        """Pooled mean foreground Dice of ``branch``'s argmax over the curve's slices (NaN: no foreground)."""
        import torch

        from cctrnet.inference.sliding_window import BranchEnsemble, SlidingWindowSettings, predict_volume

        settings = SlidingWindowSettings(step_fraction=self.window_step_fraction, mirroring=False)
        was_training = branch.training
        branch.eval()
        try:
            predictions = [predict_volume(v.image_czyx, BranchEnsemble([branch]), patch_size_yx, num_classes,
                                          settings, device).argmax(axis=0) for v in self.volumes]
        finally:
            branch.train(was_training)
        prediction = torch.as_tensor(np.concatenate([p.reshape(-1) for p in predictions]))
        reference = torch.as_tensor(np.concatenate([v.reference_zyx.reshape(-1) for v in self.volumes]))
        return pseudo_label_dice(prediction, reference, num_classes)


def build_validation_curve(trainer) -> tuple[ValidationCurve | None, str]:
    """The curve of a run and one line for the log that says what it measures (or why there is none)."""
    setup, config = trainer.setup, trainer.config
    validation = setup.validation
    if config.validation_every <= 0:
        return None, "validation curve off (validation_every=0)"
    max_slices, max_cases = config.validation_max_slices_per_case, config.validation_max_cases
    if validation.cases:
        volumes = []
        for case in validation.cases[:max_cases] if max_cases > 0 else validation.cases:
            data, seg, _ = load_preprocessed_case(validation.data_folder, case)
            if seg is None:
                raise ValueError(f"{validation.data_folder / case}.json: validation case {case} has no label")
            volumes.append(curve_volume(case, data, seg, max_slices))
        what = (f"{sum(v.reference_zyx.shape[0] for v in volumes)} slices of {len(volumes)} "
                f"{'imagesVal' if validation.source == 'imagesVal' else 'held-out'} case(s)")
        return (ValidationCurve(VALIDATION_KEY, what, volumes, config.validation_every, config.validation_window_step),
                f"{validation.describe()}; validation Dice of branch A every {config.validation_every} iterations "
                f"on {what}")
    message = validation.describe()
    registration = getattr(trainer, "registration", None)
    if registration is None or not setup.unlabeled_cases:
        return None, f"{message}; no unsupervised proxy either ({trainer.name} trains without registered labels)"
    volumes = []
    for case in setup.unlabeled_cases:
        if max_cases > 0 and len(volumes) >= max_cases:
            break
        registered = registration.registered_label(case)
        if registered is None:
            continue
        data, _, _ = load_preprocessed_case(setup.data_folder, case)
        volumes.append(curve_volume(case, data, registered, max_slices))
    if not volumes:
        return None, f"{message}; no unsupervised proxy either (no unlabeled case has a registered label)"
    what = f"{sum(v.reference_zyx.shape[0] for v in volumes)} slices of {len(volumes)} unlabeled case(s)"
    return (ValidationCurve(PROXY_KEY, what, volumes, config.validation_every, config.validation_window_step),
            f"{message}. Unsupervised proxy instead: agreement (Dice) of branch A with the registered labels every "
            f"{config.validation_every} iterations on {what}; not a validation (the network learns from these labels)")


def spread_choice(items: Sequence[str], count: int) -> list[str]:
    """``count`` items spread evenly over ``items`` (sorted), ends included; every item when count <= 0."""
    ordered = sorted(items)
    return [ordered[i] for i in evenly_spaced_slices(len(ordered), count)]


def build_hidden_label_curve(trainer) -> tuple[ValidationCurve | None, str | None]:
    """Branch A's Dice on fixed slices of unlabeled training cases whose labels the dataset hides (simulated
    semi-supervision; None on a genuinely unlabeled dataset), and one line for the log."""
    setup, config = trainer.setup, trainer.config
    hidden = setup.hidden_label_cases
    if not hidden or not config.hidden_label_curve or config.validation_every <= 0:
        return None, None
    volumes = []
    for case in spread_choice(hidden, config.validation_max_cases):
        data, seg, _ = load_preprocessed_case(setup.data_folder, case)
        if seg is not None:
            volumes.append(curve_volume(case, data, seg, config.validation_max_slices_per_case))
    if not volumes:
        return None, None
    what = f"{sum(v.reference_zyx.shape[0] for v in volumes)} slices of {len(volumes)} unlabeled training case(s)"
    return (ValidationCurve(HIDDEN_LABEL_KEY, what, volumes, config.validation_every, config.validation_window_step),
            f"hidden-label curve: Dice of branch A against the hidden labels of {what} every "
            f"{config.validation_every} iterations (simulated semi-supervision; hidden_label_curve=false: off)")


__all__ = ["HIDDEN_LABEL_KEY", "PROXY_KEY", "VALIDATION_KEY", "ValidationCurve", "build_hidden_label_curve",
           "build_validation_curve", "curve_volume", "evenly_spaced_slices", "spread_choice"]
