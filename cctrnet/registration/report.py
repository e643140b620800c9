"""Quality report of the registration stage: ``registration_report.json`` and ``registration_report.png``.

Written to ``registration/<configuration>/``; covers every method stored there (so affine and
affine + B-spline appear side by side once both were run): per pair the metric, time and status, the
failures, the deformable pairs' quality (folded voxels, inverse consistency), the ``--registration auto``
choices with their leave-one-out Dice, and, for every case that has a ground-truth label, the Dice of the BRS-selected registered
label against it (the "registration only" baseline on training data); a case that is itself a labeled
candidate is scored leave-one-out, with BRS choosing among the other labeled cases.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cctrnet.registration import brs
from cctrnet.registration.pair_store import PairStore
from cctrnet.registration.settings import METHODS, RegistrationSettings
from cctrnet.registration.volumes import load_label
from cctrnet.utilities.file_io import atomic_path, save_json


def class_dice(prediction: np.ndarray, truth: np.ndarray, classes: Sequence[int]) -> dict[int, float]:
    """Dice per class present in either map (ignored voxels, -1, count as no class)."""
    out = {}
    for value in classes:
        total = np.sum(prediction == value) + np.sum(truth == value)
        if total:
            out[int(value)] = float(2.0 * np.sum((prediction == value) & (truth == value)) / total)
    return out


def label_dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Mean Dice over the foreground classes present in either map (ignored voxels count as no class)."""
    classes = [c for c in np.union1d(np.unique(prediction), np.unique(truth)) if c > 0]
    scores = class_dice(prediction, truth, classes)
    return float(np.mean(list(scores.values()))) if scores else 1.0


def method_report(data_folder: Path, store: PairStore, labeled: Sequence[str], settings: RegistrationSettings) -> dict[str, Any]:
    results = store.all_results()
    pairs = [r.record() for r in results]
    seconds = [r.seconds for r in results if r.ok]
    scores = brs.load_scores(store)
    dice_selected: dict[str, dict[str, Any]] = {}
    for unlabeled in sorted(scores):
        # a labeled case is scored leave-one-out: BRS chooses among the other labeled cases
        candidates = [q for q in labeled if q != unlabeled]
        truth, _ = load_label(data_folder, unlabeled)
        chosen = brs.select_labeled(scores, unlabeled, candidates, settings) if candidates else None
        if truth is None or chosen is None:
            continue
        warped = brs.registered_label(data_folder, store, unlabeled, chosen)
        dice_selected[unlabeled] = {"labeled": chosen, "dice": label_dice(warped, truth),
                                    "leave_one_out": unlabeled in labeled}
    dices = [v["dice"] for v in dice_selected.values()]
    qualities = [r.quality for r in results if r.ok and "folded_fraction" in r.quality]  # deformable pairs
    quality = {}
    kept = sum(bool(r.quality.get("start_kept")) for r in results if r.ok)
    if kept:  # affine pairs whose centred start the optimiser could not improve (often two frames of one patient)
        quality["affine_start_kept"] = kept
    if qualities:
        quality |= {
            "folded_fraction_max": max(q["folded_fraction"] for q in qualities),
            "inverse_consistency_mm_p95_median": float(np.median([q["inverse_consistency_mm_p95"] for q in qualities])),
            "inverse_consistency_mm_p95_max": max(q["inverse_consistency_mm_p95"] for q in qualities),
            "displacement_mm_mean": float(np.mean([q["displacement_mm_mean"] for q in qualities])),
        }
    return {
        "num_pairs": len(results),
        "num_failed": sum(not r.ok for r in results),
        "failures": [{"moving": r.moving, "fixed": r.fixed, "reason": r.reason} for r in results if not r.ok],
        "seconds_per_pair_mean": float(np.mean(seconds)) if seconds else None,
        "seconds_per_pair_median": float(np.median(seconds)) if seconds else None,
        "registered_label_dice_mean": float(np.mean(dices)) if dices else None,
        "registered_label_dice": dice_selected,
        "quality": quality,
        "pairs": pairs,
    }


def write_report(preprocessed_dataset_folder: Path, configuration: str, labeled: Sequence[str],
                 settings: RegistrationSettings) -> Path:
    """Write the JSON and PNG report for every method stored under ``registration/<configuration>``."""
    root = Path(preprocessed_dataset_folder) / "registration" / configuration
    data_folder = Path(preprocessed_dataset_folder) / configuration
    from cctrnet.registration.method_choice import load_choices

    report = {"labeled_cases": list(labeled), "channel": settings.channel, "methods": {}, "choices": load_choices(root)}
    for method in METHODS:
        store = PairStore(root / method)
        if store.pairs_folder.is_dir():
            report["methods"][method] = method_report(data_folder, store, labeled, settings)
    path = root / "registration_report.json"
    save_json(report, path)
    _plot(report, root / "registration_report.png")
    return path


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = report["methods"]
    figure, (time_axis, dice_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for method, values in methods.items():
        seconds = [p["seconds"] for p in values["pairs"] if p["status"] == "ok"]
        if seconds:
            time_axis.hist(seconds, bins=20, alpha=0.6, label=f"{method} ({values['num_failed']} failed)")
    time_axis.set_xlabel("seconds per pair")
    time_axis.set_ylabel("pairs")
    time_axis.legend(fontsize=8)
    dice_data = {m: [d["dice"] for d in v["registered_label_dice"].values()] for m, v in methods.items()}
    dice_data = {m: d for m, d in dice_data.items() if d}
    if dice_data:
        dice_axis.boxplot(list(dice_data.values()), tick_labels=list(dice_data.keys()))
    dice_axis.set_ylabel("Dice of BRS-selected registered label")
    dice_axis.set_ylim(0, 1)
    figure.suptitle("cctrnet registration report")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100)
    plt.close(figure)
