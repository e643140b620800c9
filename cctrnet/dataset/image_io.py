"""Reading and writing volumes with their geometry through SimpleITK (any format it reads)."""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from cctrnet.dataset.geometry import Geometry
from cctrnet.utilities.file_io import atomic_path

SUPPORTED_FILE_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")


class ImageReadError(RuntimeError):
    """A file could not be read as a 3D image; the message names the file."""


def read_image(path: str | os.PathLike, dtype: type = np.float32) -> tuple[np.ndarray, Geometry]:
    """Read one single-channel 3D image: array indexed (z, y, x) and its geometry."""
    import SimpleITK as sitk

    path = Path(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown error"
        raise ImageReadError(f"{path}: cannot be read as an image ({first_line})") from error
    if image.GetDimension() != 3:
        raise ImageReadError(f"{path}: expected a 3D image, found {image.GetDimension()}D of size {image.GetSize()}")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageReadError(
            f"{path}: expected one component per voxel, found {image.GetNumberOfComponentsPerPixel()} "
            "(store each channel as its own file, {case}_{channel:04d})"
        )
    array = sitk.GetArrayFromImage(image)
    return array.astype(dtype, copy=False), Geometry.from_sitk(image)


def read_case_images(paths: Sequence[str | os.PathLike]) -> tuple[np.ndarray, Geometry]:
    """Read the channels of one case into a (c, z, y, x) float32 array; all must share one grid."""
    arrays, geometry = [], None
    for path in paths:
        array, g = read_image(path)
        if geometry is not None and not geometry.same_grid(g):
            raise ImageReadError(f"{path}: grid differs from channel 0 ({'; '.join(geometry.differences(g))})")
        geometry = geometry or g
        arrays.append(array)
    if geometry is None:
        raise ValueError("read_case_images needs at least one file")
    return np.stack(arrays), geometry


def write_image(array_zyx: np.ndarray, geometry: Geometry, path: str | os.PathLike, compress: bool = True) -> None:
    """Write a (z, y, x) array with the given geometry, atomically; format from the file ending."""
    import SimpleITK as sitk

    array_zyx = np.asarray(array_zyx)
    if array_zyx.dtype == np.bool_:
        array_zyx = array_zyx.astype(np.uint8)
    if array_zyx.dtype == np.float64:
        array_zyx = array_zyx.astype(np.float32)
    image = sitk.GetImageFromArray(array_zyx)
    geometry.apply_to_sitk(image)
    with atomic_path(path) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), compress)
        except RuntimeError as error:  # SimpleITK reports a full disk or a refused write as a RuntimeError
            lines = str(error).strip().splitlines()
            raise OSError(errno.EIO, lines[-1].strip() if lines else "SimpleITK could not write it") from error


def file_ending_of(path: str | os.PathLike) -> str:
    """The image file ending of a path, double endings such as .nii.gz included."""
    name = Path(path).name.lower()
    for ending in sorted(SUPPORTED_FILE_ENDINGS, key=len, reverse=True):
        if name.endswith(ending):
            return ending
    return Path(path).suffix
