"""Best registration selection (METHOD.md §5) and the registered labels it chooses.

For an unlabeled volume v_j and a labeled candidate v_q the cycle image is v_j resampled into v_q's grid
(pair j onto q) and back into its own grid (pair q onto j). RMSE and mutual information between the cycle
image and v_j, over the voxels whose cycle stays inside both volumes, are stored per (j, q) in
``brs_scores.json``. For a given labeled set both terms are min-max normalised across j's candidates and
``S = w_rmse * RMSE_n - w_mi * MI_n``; the lowest S wins (ties: the smaller case id). With one candidate
it is chosen; a candidate whose pairs failed is never chosen, and with no usable candidate none is.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from cctrnet.registration.pair_store import PairStore
from cctrnet.registration.settings import IGNORE_LABEL, RegistrationSettings
from cctrnet.registration.transforms import resample
from cctrnet.registration.volumes import load_label, load_volume
from cctrnet.utilities.file_io import load_json, save_json, save_npy
from cctrnet.utilities.progress_bars import quiet_bar_options

ScoreMatrix = dict[str, dict[str, dict[str, float]]]  # unlabeled -> labeled -> {"rmse", "mi"}


def mutual_information(a: np.ndarray, b: np.ndarray, bins: int) -> float:
    """Mutual information (nats) of two equally long samples from their joint histogram."""
    if a.size == 0:
        return float("nan")
    joint, _, _ = np.histogram2d(a, b, bins=bins)
    joint = joint / joint.sum()
    p_a, p_b = joint.sum(axis=1, keepdims=True), joint.sum(axis=0, keepdims=True)
    nonzero = joint > 0
    return float(np.sum(joint[nonzero] * np.log(joint[nonzero] / (p_a @ p_b)[nonzero])))


def cycle_score(data_folder: Path, store: PairStore, unlabeled: str, labeled: str, settings: RegistrationSettings) -> dict[str, float]:
    """{"rmse", "mi"} of v_j against its forward-and-back cycle through the labeled volume's grid."""
    image_j, geometry_j = load_volume(data_folder, unlabeled, settings.channel)
    _, geometry_q = load_volume(data_folder, labeled, settings.channel)
    forward = store.transform(unlabeled, labeled)
    backward = store.transform(labeled, unlabeled)
    on_q = resample(image_j, geometry_j, geometry_q, forward)
    cycle = resample(on_q, geometry_q, geometry_j, backward)
    inside_q = resample(np.ones(geometry_j.shape_zyx, np.uint8), geometry_j, geometry_q, forward, nearest=True)
    inside = resample(inside_q, geometry_q, geometry_j, backward, nearest=True).astype(bool)
    if not inside.any():
        return {"rmse": float("nan"), "mi": float("nan")}
    difference = cycle[inside] - image_j[inside]
    return {
        "rmse": float(np.sqrt(np.mean(difference.astype(np.float64) ** 2))),
        "mi": mutual_information(cycle[inside], image_j[inside], settings.brs_histogram_bins),
    }


def scores_path(store: PairStore) -> Path:
    return store.folder / "brs_scores.json"


def load_scores(store: PairStore) -> ScoreMatrix:
    path = scores_path(store)
    return load_json(path)["scores"] if path.exists() else {}


def update_scores(
    data_folder: Path, store: PairStore, pairs: Sequence[tuple[str, str]], settings: RegistrationSettings,
    save_every: int = 200,
) -> ScoreMatrix:
    """Add the cycle score of every (unlabeled, labeled) in ``pairs`` whose two registrations succeeded."""
    scores = load_scores(store)
    todo = [(u, q) for u, q in pairs if q not in scores.get(u, {})
            and store.successful(u, q) and store.successful(q, u)]
    for count, (u, q) in enumerate(tqdm(todo, desc="BRS cycle scores", unit="pair", **quiet_bar_options(enabled=bool(todo))), start=1):
        scores.setdefault(u, {})[q] = cycle_score(data_folder, store, u, q, settings)
        if count % save_every == 0:
            save_json({"score": "cycle RMSE and MI (METHOD.md section 5)", "scores": scores}, scores_path(store))
    if todo:
        save_json({"score": "cycle RMSE and MI (METHOD.md section 5)", "scores": scores}, scores_path(store))
    return scores


def select_labeled(scores: ScoreMatrix, unlabeled: str, labeled_set: Sequence[str], settings: RegistrationSettings) -> str | None:
    """The BRS choice for ``unlabeled`` among ``labeled_set``: a pure function of the score matrix."""
    row = scores.get(unlabeled, {})
    candidates = sorted(q for q in labeled_set if q in row and np.isfinite(row[q]["rmse"]) and np.isfinite(row[q]["mi"]))
    if not candidates:
        return None
    rmse = _min_max([row[q]["rmse"] for q in candidates])
    mi = _min_max([row[q]["mi"] for q in candidates])
    combined = settings.brs_weight_rmse * rmse - settings.brs_weight_mi * mi
    return candidates[int(np.argmin(combined))]


def _min_max(values: Sequence[float]) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    span = values.max() - values.min()
    return np.zeros_like(values) if span <= 0 else (values - values.min()) / span


def registered_label_path(store: PairStore, unlabeled: str, labeled: str) -> Path:
    return store.folder / "registered_labels" / f"{unlabeled}__from__{labeled}.npy"


def registered_label(data_folder: Path, store: PairStore, unlabeled: str, labeled: str) -> np.ndarray:
    """The labeled case's label warped (nearest neighbour) onto the unlabeled grid; outside = IGNORE_LABEL.

    Cached on disk; the pair (labeled onto unlabeled) must have succeeded.
    """
    path = registered_label_path(store, unlabeled, labeled)
    if path.exists():
        return np.load(path)
    if not store.successful(labeled, unlabeled):
        raise LookupError(f"no successful registration of {labeled} onto {unlabeled} in {store.folder}")
    label_q, geometry_q = load_label(data_folder, labeled)
    if label_q is None:
        raise ValueError(f"case {labeled} in {data_folder} has no label to register")
    _, geometry_u = load_label(data_folder, unlabeled)
    transform = store.transform(labeled, unlabeled)
    warped = resample(label_q, geometry_q, geometry_u, transform, nearest=True, default_value=IGNORE_LABEL).astype(np.int16)
    save_npy(warped, path)
    return warped
