"""Steady-state signal of balanced SSFP (TrueFISP / FIESTA / b-FFE), the sequence of short-axis cine MRI.

The magnetisation is followed through one repetition: an RF rotation by the flip angle (its phase alternating
between repetitions, as cine sequences do), then free precession by the off-resonance phase with T1 and T2
relaxation for one TR. The steady state is the fixed point of that affine map, solved as a 3 x 3 linear system per
parameter set; the signal is the transverse magnitude at TE = TR / 2. On resonance and for TR << T2 it reduces to
the familiar sin(a) / ((1 + cos(a)) + (1 - cos(a)) T1 / T2); at an off-resonance phase of +-pi per TR it falls
to nearly zero: the dark bands of bSSFP, 1 / TR apart in frequency (Scheffler and Lehnhardt, Eur Radiol 13:2409,
2003, describe both).
"""
from __future__ import annotations

import numpy as np


def bssfp_signal(t1_ms: np.ndarray | float, t2_ms: np.ndarray | float, flip_deg: np.ndarray | float,
                 tr_ms: np.ndarray | float, off_resonance_rad: np.ndarray | float = 0.0) -> np.ndarray:
    """Steady-state transverse magnitude at TE = TR / 2 per unit equilibrium magnetisation (float64).

    ``off_resonance_rad`` is the precession phase per TR (2 pi x off-resonance frequency x TR); every argument
    broadcasts against the others.
    """
    t1, t2, flip, tr, theta = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (t1_ms, t2_ms, np.deg2rad(flip_deg), tr_ms, off_resonance_rad)))
    e1, e2 = np.exp(-tr / t1), np.exp(-tr / t2)
    # the alternating RF phase is the same as an extra half turn of precession per TR
    precession = theta + np.pi
    cos_p, sin_p = np.cos(precession), np.sin(precession)
    cos_a, sin_a = np.cos(flip), np.sin(flip)
    shape = t1.shape
    relax_and_precess = np.zeros(shape + (3, 3))
    relax_and_precess[..., 0, 0], relax_and_precess[..., 0, 1] = e2 * cos_p, -e2 * sin_p
    relax_and_precess[..., 1, 0], relax_and_precess[..., 1, 1] = e2 * sin_p, e2 * cos_p
    relax_and_precess[..., 2, 2] = e1
    rf = np.zeros(shape + (3, 3))
    rf[..., 0, 0] = 1.0
    rf[..., 1, 1], rf[..., 1, 2] = cos_a, sin_a
    rf[..., 2, 1], rf[..., 2, 2] = -sin_a, cos_a
    recovery = np.zeros(shape + (3, 1))
    recovery[..., 2, 0] = 1.0 - e1
    # just after the RF pulse: m = RF (P m + recovery)
    after_rf = np.linalg.solve(np.eye(3) - rf @ relax_and_precess, rf @ recovery)[..., 0]
    return np.hypot(after_rf[..., 0], after_rf[..., 1]) * np.exp(-0.5 * tr / t2)
