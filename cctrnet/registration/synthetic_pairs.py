"""Synthetic volumes with labels and known transforms, for tests and the registration benchmark.

A volume holds nested ellipsoids (labels 1..3) on a textured background; a second volume of the pair is
the first one's anatomy seen through a known affine (and optionally a smooth deformation), so the
registration's answer and the Dice of a warped label can be checked against the truth.
"""
from __future__ import annotations

import numpy as np

from cctrnet.dataset.geometry import Geometry


def make_subject(
    shape_zyx: tuple[int, int, int],
    spacing_xyz: tuple[float, float, float],
    seed: int,
    world_to_subject: np.ndarray | None = None,
    deformation_mm: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """(image float32, label int16, geometry); the anatomy is defined in physical space (mm).

    ``world_to_subject`` (4x4, physical xyz) moves the anatomy: the label at physical point p is that of
    the template at ``world_to_subject @ p``. ``deformation_mm`` adds a smooth sine displacement.
    """
    rng = np.random.default_rng(seed)
    geometry = Geometry(shape_zyx, spacing_xyz, tuple(-0.5 * (np.asarray(shape_zyx[::-1]) - 1) * spacing_xyz))
    index = np.stack(np.meshgrid(*[np.arange(s) for s in shape_zyx], indexing="ij"), axis=-1).reshape(-1, 3)
    points_xyz = geometry.index_zyx_to_physical_xyz(index)
    if world_to_subject is not None:
        points_xyz = points_xyz @ world_to_subject[:3, :3].T + world_to_subject[:3, 3]
    extent_xyz = np.asarray(shape_zyx[::-1]) * np.asarray(spacing_xyz)
    if deformation_mm:
        phase = points_xyz / extent_xyz * 2 * np.pi
        points_xyz = points_xyz + deformation_mm * np.stack(
            [np.sin(phase[:, 1]), np.sin(phase[:, 0]), 0.2 * np.sin(phase[:, 0] + phase[:, 1])], axis=-1
        )
    label = _template_label(points_xyz, extent_xyz)
    intensities = np.array([0.0, 1.0, 2.2, 3.1], dtype=np.float32)
    texture = 0.3 * np.sin(points_xyz[:, 0] / 7.0) * np.cos(points_xyz[:, 1] / 9.0)
    image = intensities[label] + texture.astype(np.float32)
    image = image.reshape(shape_zyx) + rng.normal(0, 0.1, shape_zyx).astype(np.float32)
    return image.astype(np.float32), label.reshape(shape_zyx).astype(np.int16), geometry


def _template_label(points_xyz: np.ndarray, extent_xyz: np.ndarray) -> np.ndarray:
    """Nested off-centre ellipsoids (radii relative to the volume's extent) and a small side blob."""
    label = np.zeros(len(points_xyz), dtype=np.int16)
    radii = extent_xyz * np.array([0.33, 0.28, 0.38])
    body = np.sum(((points_xyz - extent_xyz * [0.03, -0.02, 0.0]) / radii) ** 2, axis=1)
    label[body < 1] = 1
    inner = np.sum(((points_xyz - extent_xyz * [0.1, 0.05, 0.0]) / (radii * [0.45, 0.5, 0.7])) ** 2, axis=1)
    label[inner < 1] = 2
    blob = np.sum(((points_xyz - extent_xyz * [-0.15, -0.1, 0.05]) / (radii * [0.25, 0.2, 0.5])) ** 2, axis=1)
    label[blob < 1] = 3
    return label


def random_affine(seed: int, rotation_deg: float = 8.0, scale: float = 0.06, shift_mm: float = 4.0) -> np.ndarray:
    """A 4x4 physical affine: rotation about z up to ``rotation_deg``, per-axis scale, in-plane shift."""
    rng = np.random.default_rng(seed)
    angle = np.deg2rad(rng.uniform(-rotation_deg, rotation_deg))
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ np.diag(1 + rng.uniform(-scale, scale, 3))
    matrix[:3, 3] = rng.uniform(-shift_mm, shift_mm, 3) * [1, 1, 0.3]
    return matrix


def dice(a: np.ndarray, b: np.ndarray, labels: tuple[int, ...] = (1, 2, 3)) -> float:
    """Mean Dice over the given foreground labels (a label absent from both counts as 1)."""
    scores = []
    for value in labels:
        in_a, in_b = a == value, b == value
        total = in_a.sum() + in_b.sum()
        scores.append(1.0 if total == 0 else 2.0 * np.logical_and(in_a, in_b).sum() / total)
    return float(np.mean(scores))
