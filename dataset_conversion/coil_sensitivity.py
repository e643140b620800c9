"""Receive sensitivity of surface-coil arrays: the shading of phased-array cardiac MRI.

By reciprocity (Hoult and Richards, J Magn Reson 24:71, 1976) a receive coil sees a voxel with the weight of the
field the coil would produce there per unit current, counted only transverse to B0. Each coil is a circular loop;
its field is the closed-form Biot-Savart field of a loop (complete elliptic integrals; on its axis the familiar
a^2 / (a^2 + d^2)^(3/2) fall-off with depth d). Images of several coils are combined as the root sum of squares
(Roemer et al., The NMR phased array, Magn Reson Med 16:192, 1990). Positions are world (LPS) millimetres;
B0 points along the patient's long axis (world z), as in a cylindrical-bore scanner.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

B0_DIRECTION_XYZ = (0.0, 0.0, 1.0)


@dataclass(frozen=True)
class LoopCoil:
    """A circular receive loop: centre (world mm), unit normal and radius (mm)."""

    centre_xyz_mm: tuple[float, float, float]
    normal_xyz: tuple[float, float, float]
    radius_mm: float

    def field_xyz(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The loop's field per unit current at world points (x, y, z: equal shapes, mm), in units of mu0 / pi,
        as float64 world components."""
        from scipy.special import ellipe, ellipk

        normal = np.asarray(self.normal_xyz, dtype=np.float64)
        normal = normal / np.linalg.norm(normal)
        offset = [np.asarray(c, dtype=np.float64) - m for c, m in zip((x, y, z), self.centre_xyz_mm)]
        axial = offset[0] * normal[0] + offset[1] * normal[1] + offset[2] * normal[2]
        radial_vector = [o - axial * n for o, n in zip(offset, normal)]
        a = float(self.radius_mm)
        # on the axis the radial component vanishes; a floor keeps the division finite there
        rho = np.maximum(np.sqrt(sum(r * r for r in radial_vector)), 1e-6 * a)
        squared_sum = a * a + rho * rho + axial * axial
        alpha2 = np.maximum(squared_sum - 2 * a * rho, 1e-12 * a * a)
        beta = np.sqrt(squared_sum + 2 * a * rho)
        m = 1.0 - alpha2 / (beta * beta)
        big_e, big_k = ellipe(m), ellipk(m)
        along_normal = ((a * a - rho * rho - axial * axial) * big_e + alpha2 * big_k) / (2 * alpha2 * beta)
        along_radius = axial * (squared_sum * big_e - alpha2 * big_k) / (2 * alpha2 * beta * rho)
        return tuple(along_normal * n + along_radius * r / rho for n, r in zip(normal, radial_vector))


def array_sensitivity(coils: Sequence[LoopCoil], x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Root sum of squares over ``coils`` of each coil's field transverse to B0, at world points (float64)."""
    b0 = np.asarray(B0_DIRECTION_XYZ)
    total = np.zeros(np.shape(x), dtype=np.float64)
    for coil in coils:
        field = coil.field_xyz(x, y, z)
        along_b0 = sum(f * b for f, b in zip(field, b0))
        total += sum(f * f for f in field) - along_b0 * along_b0
    return np.sqrt(total)
