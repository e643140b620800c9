"""One pair from arrays, with whichever engine a method needs, and the SimpleITK transform of its result.

What callers outside the stage use when a pair is not stored (the registration-only baseline on new
images): affine through the engine asked for (torch by default, the engine ``cctr_plan_and_preprocess`` stores
the dataset's own pairs with, so a new image is registered as the training volumes were), affine_bspline
through SimpleITK (the torch engine has no B-spline model), affine_deformable through the torch engine (its
affine first, then the deformable stage from it).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cctrnet.dataset.geometry import Geometry
from cctrnet.registration.pair_result import PairResult
from cctrnet.registration.settings import RegistrationSettings, check_engine, check_method


def register_pair(fixed_zyx: np.ndarray, fixed_geometry: Geometry, moving_zyx: np.ndarray, moving_geometry: Geometry,
                  method: str, settings: RegistrationSettings, names: tuple[str, str] = ("moving", "fixed"),
                  device: str = "cpu", engine: str = "torch") -> PairResult:
    """Register moving onto fixed; a failure is returned as a failed PairResult, never raised. ``engine``
    chooses the affine engine (affine_bspline is always SimpleITK's, affine_deformable always torch's)."""
    check_method(method)
    check_engine(engine)
    torch_affine = method == "affine" and engine == "torch"
    if method != "affine_deformable" and not torch_affine:
        from cctrnet.registration.sitk_engine import register_pair_sitk

        return register_pair_sitk(fixed_zyx, fixed_geometry, moving_zyx, moving_geometry, method, settings, names)
    from cctrnet.registration.deformable_engine import register_batch_deformable
    from cctrnet.registration.torch_engine import PairVolumes, register_batch_torch

    pair = PairVolumes(names[0], names[1], fixed_zyx, fixed_geometry, moving_zyx, moving_geometry)
    affine = register_batch_torch([pair], settings, device)[0]
    if torch_affine:
        return affine
    if not affine.ok:
        affine.method = method
        affine.reason = f"the affine registration this pair starts from failed: {affine.reason}"
        return affine
    matrix = affine_matrix_of_text(affine.transform_text)
    return register_batch_deformable([pair], [matrix], [affine.transform_text], settings, device)[0]


def result_transform(result: PairResult, inverse: bool = False) -> Any:
    """The SimpleITK transform (fixed points -> moving points, or its inverse) of a successful result."""
    from cctrnet.registration.transforms import stored_transform

    if not result.ok or result.transform_text is None:
        raise ValueError(f"pair {result.moving} -> {result.fixed} has no transform: {result.reason}")
    with tempfile.TemporaryDirectory() as folder:
        transform_path, field_path = Path(folder) / "t.tfm", Path(folder) / "v.npz"
        transform_path.write_text(result.transform_text)
        if result.field_bytes is not None:
            field_path.write_bytes(result.field_bytes)
        return stored_transform(transform_path, field_path if result.field_bytes is not None else None, inverse)


def affine_matrix_of_text(transform_text: str) -> np.ndarray:
    """The 4x4 physical matrix (fixed points -> moving points) of an affine .tfm text."""
    from cctrnet.registration.transforms import affine_matrix_4x4, transform_from_file

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.tfm"
        path.write_text(transform_text)
        return affine_matrix_4x4(transform_from_file(path))
