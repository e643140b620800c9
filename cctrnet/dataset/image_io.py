"""Reading and writing volumes with their geometry through SimpleITK (any format it reads)."""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from cctrnet.dataset.geometry import Geometry
from cctrnet.utilities.file_io import atomic_path

SUPPORTED_FILE_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")


class ImageReadError(RuntimeError):
    """A file could not be read as a 3D image; the message names the file."""


def read_image(path: str | os.PathLike, dtype: type | None = np.float32) -> tuple[np.ndarray, Geometry]:
    """Read one single-channel 3D image: array indexed (z, y, x) and its geometry.

    ``dtype=None`` keeps the file's own voxel type (for checks that a conversion could hide).
    """
    import SimpleITK as sitk

    path = Path(path)
    if path.is_dir():
        raise ImageReadError(f"{path}: is a folder, not an image file")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise ImageReadError(f"{path}: cannot be read as an image ({_reader_message(str(error), path)})") from error
    if image.GetDimension() != 3:
        raise ImageReadError(f"{path}: expected a 3D image, found {image.GetDimension()}D of size {image.GetSize()}")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageReadError(
            f"{path}: expected one component per voxel, found {image.GetNumberOfComponentsPerPixel()} "
            "(store each channel as its own file, {case}_{channel:04d})"
        )
    if 0 in image.GetSize():
        raise ImageReadError(f"{path}: the image is empty (size (x, y, z) {image.GetSize()})")
    array = sitk.GetArrayFromImage(image)
    return (array if dtype is None else array.astype(dtype, copy=False)), Geometry.from_sitk(image)


def _reader_message(text: str, path: Path) -> str:
    """ITK's exception text as one line: the error itself, without source locations and object addresses."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("Exception thrown in SimpleITK")]
    lines = [re.sub(r"^(ITK|sitk)(::| )ERROR:\s*", "", line) for line in lines]
    lines = [re.sub(r"^\w+\(0x[0-9a-f]+\):\s*", "", line) for line in lines]
    message = "; ".join(lines).replace(str(path), "the file") or "unknown error"
    hint = ""
    if "spacing" in message.lower():
        hint = " (the spacing in the header must be positive and finite)"
    elif "direction" in message.lower():
        hint = " (the direction matrix in the header must be invertible and finite)"
    elif "dimension" in message.lower():
        hint = " (expected a 3D image)"
    return (message[:300] + ("..." if len(message) > 300 else "")) + hint


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
