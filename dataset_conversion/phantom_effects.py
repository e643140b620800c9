"""Optional acquisition effects the phantom renderer applies when a subject carries them.

Each is a plain object the renderer asks one question of; a subject without them renders exactly as before.

- ``SliceMotion``: each slice sees the patient displaced rigidly in plane (another breath-hold position), so
  image and label of that slice move together.
- ``OffResonance``: a B0 field map and, per tissue, the bSSFP signal against the off-resonance phase per TR
  (dark bands).
- a receive field: any callable of world points, multiplying the noise-free image (surface-coil shading).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

SpatialField = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
PROFILE_BINS = 1024  # phase steps over one period of the bSSFP off-resonance profile


@dataclass(frozen=True)
class SliceMotion:
    """Per slice (z index), the patient's in-plane displacement seen by that slice: a shift along the grid's x and
    y axes (mm) and a rotation (rad, from the grid's x towards its y axis) about the centre of the slice."""

    shift_xy_mm: np.ndarray  # (nz, 2)
    rotation_rad: np.ndarray  # (nz,)

    def grid_xy_mm(self, along_x_mm: np.ndarray, along_y_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """In-plane positions (mm along the grid's x and y axes, each (nz, ny, nx)) at which every voxel samples
        the patient: the inverse of the patient's displacement applied to the nominal grid ``along_x_mm`` (1, 1,
        nx) and ``along_y_mm`` (1, ny, 1)."""
        centre_x = np.float32(0.5 * (float(along_x_mm.min()) + float(along_x_mm.max())))
        centre_y = np.float32(0.5 * (float(along_y_mm.min()) + float(along_y_mm.max())))
        cos = np.cos(self.rotation_rad).astype(np.float32)[:, None, None]
        sin = np.sin(self.rotation_rad).astype(np.float32)[:, None, None]
        u = along_x_mm - centre_x - self.shift_xy_mm[:, 0].astype(np.float32)[:, None, None]
        v = along_y_mm - centre_y - self.shift_xy_mm[:, 1].astype(np.float32)[:, None, None]
        return centre_x + cos * u + sin * v, centre_y - sin * u + cos * v


@dataclass(frozen=True)
class OffResonance:
    """B0 off-resonance (Hz at world points) and the relative bSSFP signal of every tissue against the precession
    phase per TR: ``tissue_profile[tissue, k]`` at phase -pi + 2 pi k / PROFILE_BINS, 1 on resonance."""

    field_hz: SpatialField
    tr_ms: float
    tissue_profile: np.ndarray  # (number of tissues, PROFILE_BINS) float32

    def factor(self, tissue: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Signal factor (float32, the shape of ``tissue``) of each voxel's tissue at its off-resonance."""
        cycles = np.asarray(self.field_hz(x, y, z), dtype=np.float64) * (self.tr_ms * 1e-3) + 0.5
        index = np.floor((cycles - np.floor(cycles)) * PROFILE_BINS).astype(np.intp) % PROFILE_BINS
        return self.tissue_profile[tissue, index]
