"""Noise of a magnitude MR image, shared by the phantom generators."""
from __future__ import annotations

import numpy as np


def rician_int16(clean: np.ndarray, noise_sd: float, rng: np.random.Generator,
                 dtype: type = np.float32) -> np.ndarray:
    """|clean + complex Gaussian noise of standard deviation ``noise_sd``|, rounded and clipped to int16.

    A magnitude image carries Rician, not Gaussian, noise: Gaussian noise on the real and imaginary channels.
    """
    sd = dtype(noise_sd)
    real = clean + sd * rng.standard_normal(clean.shape, dtype=dtype)
    imaginary = sd * rng.standard_normal(clean.shape, dtype=dtype)
    magnitude = np.sqrt(real * real + imaginary * imaginary)
    return np.clip(np.rint(magnitude), 0, np.iinfo(np.int16).max).astype(np.int16)
