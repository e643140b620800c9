"""Intensity normalisation per channel, as chosen by the plan.

- ``CTNormalization``: clip to the dataset's foreground 0.5 / 99.5 percentiles, then z-score with the
  foreground mean and standard deviation (all from the fingerprint), so Hounsfield units keep their
  meaning across cases.
- ``ZScoreNormalization``: per-volume z-score (mean and standard deviation of the cropped volume), for
  MRI and other modalities whose intensities have no absolute scale.
"""
from __future__ import annotations

from typing import Any

import numpy as np

SCHEMES = ("CTNormalization", "ZScoreNormalization")
_EPSILON = 1e-8


def normalize_channel(volume: np.ndarray, scheme: str, parameters: dict[str, Any]) -> np.ndarray:
    volume = np.asarray(volume, dtype=np.float32)
    if scheme == "CTNormalization":
        clipped = np.clip(volume, parameters["percentile_00_5"], parameters["percentile_99_5"])
        return ((clipped - parameters["mean"]) / max(parameters["std"], _EPSILON)).astype(np.float32)
    if scheme == "ZScoreNormalization":
        mean, std = float(volume.mean()), float(volume.std())
        return ((volume - mean) / max(std, _EPSILON)).astype(np.float32)
    raise ValueError(f"unknown normalisation scheme {scheme!r}; known: {', '.join(SCHEMES)}")


def normalize(data_czyx: np.ndarray, channel_schemes: list[dict[str, Any]]) -> np.ndarray:
    """Normalise each channel of (c, z, y, x) data with the plan's ``normalization`` entries."""
    if len(channel_schemes) != data_czyx.shape[0]:
        raise ValueError(f"the plan normalises {len(channel_schemes)} channel(s), the case has {data_czyx.shape[0]}")
    return np.stack([normalize_channel(c, s["scheme"], s.get("parameters", {}))
                     for c, s in zip(data_czyx, channel_schemes)])
