"""Reading TransUNet's preprocessed Synapse release, the one the semi-supervised papers train on.

Layout (TransUNet's ``data/Synapse`` folder; the lists ship with the TransUNet repository)::

    train_npz/case0005_slice000.npz     arrays image (y, x), float in [0, 1], and label (y, x), 0..8
    test_vol_h5/case0001.npy.h5         HDF5 datasets image and label, (z, y, x), same scaling
    lists/lists_Synapse/train.txt       slice names (optional; checked when present)

Intensities were clipped to [-125, 275] HU and scaled to [0, 1]; labels already hold the 8 organs with the
values of :data:`dataset_conversion.synapse.SYNAPSE_LABELS`. The release stores no geometry, so every case
gets a *declared* grid: the spacing the caller gives, origin 0, identity direction.

A case is read from its HDF5 volume when there is one, otherwise from its training slices, stacked in
slice-number order; the numbers must run 0..N-1 without gaps and all slices must have one shape.
h5py is needed only for the volumes and is imported when one is read.
"""
from __future__ import annotations

import re
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from cctrnet.dataset.geometry import Geometry
from dataset_conversion.conversion_utils import split_part_of

TRAIN_FOLDER = "train_npz"
TEST_FOLDER = "test_vol_h5"
VOLUME_SUFFIX = ".npy.h5"
LISTS_SUBFOLDER = Path("lists") / "lists_Synapse"
TRAIN_LIST = "train.txt"
ARRAY_KEYS = ("image", "label")
SCALED_INTENSITY_RANGE = (0.0, 1.0)
# float32 rounding of the release's own scaling may step just outside [0, 1]
SCALED_INTENSITY_SLACK = 1e-4
SOURCE_HU_WINDOW = (-125.0, 275.0)
H5PY_HINT = "pip install h5py"
MISSING_NUMBERS_SHOWN = 8

_SLICE_FILE = re.compile(r"^(case\d{4})_slice(\d+)\.npz$")
_CASE_ID = re.compile(r"^case\d{4}$")


# --- layout -------------------------------------------------------------------------------------
def release_folder(synapse_root: Path) -> Path | None:
    """The folder holding train_npz/ or test_vol_h5/: the root itself, Synapse/ or data/Synapse/."""
    for candidate in (synapse_root, synapse_root / "Synapse", synapse_root / "data" / "Synapse"):
        if (candidate / TRAIN_FOLDER).is_dir() or (candidate / TEST_FOLDER).is_dir():
            return candidate
    return None


def train_list_file(synapse_root: Path, folder: Path) -> Path | None:
    """TransUNet's train.txt when present, next to the data or at the root given."""
    for base in (folder, synapse_root):
        candidate = base / LISTS_SUBFOLDER / TRAIN_LIST
        if candidate.is_file():
            return candidate
    return None


def slice_files_by_case(train_folder: Path) -> dict[str, dict[int, list[Path]]]:
    """case id -> slice number -> files with that number (more than one is a problem)."""
    found: dict[str, dict[int, list[Path]]] = defaultdict(lambda: defaultdict(list))
    if train_folder.is_dir():
        for path in sorted(train_folder.iterdir()):
            match = _SLICE_FILE.match(path.name)
            if match:
                found[match.group(1)][int(match.group(2))].append(path)
    return {case: dict(numbers) for case, numbers in found.items()}


def slice_number_problems(case_id: str, train_folder: Path, numbers: Mapping[int, Sequence[Path]]) -> list[str]:
    """Slice numbers of a case must be 0..N-1, each once."""
    problems = [f"{train_folder}: {case_id} has slice {number} twice ({', '.join(p.name for p in files)})"
                for number, files in sorted(numbers.items()) if len(files) > 1]
    missing = sorted(set(range(max(numbers) + 1)) - set(numbers))
    if missing:
        shown = ", ".join(f"{n:03d}" for n in missing[:MISSING_NUMBERS_SHOWN])
        more = f" and {len(missing) - MISSING_NUMBERS_SHOWN} more" if len(missing) > MISSING_NUMBERS_SHOWN else ""
        problems.append(f"{train_folder}: {case_id} slice numbers must run 000..{max(numbers):03d} without gaps; "
                        f"missing {shown}{more}")
    return problems


def train_list_problems(list_file: Path, train_folder: Path, case_ids: Sequence[str]) -> list[str]:
    """Slices that train.txt lists for the given cases but that are not in train_npz/ (a truncated download)."""
    wanted = set(case_ids)
    listed = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
    absent = [name for name in listed if name.split("_slice")[0] in wanted
              and not (train_folder / f"{name}.npz").is_file()]
    if not absent:
        return []
    shown = ", ".join(absent[:MISSING_NUMBERS_SHOWN])
    more = f" and {len(absent) - MISSING_NUMBERS_SHOWN} more" if len(absent) > MISSING_NUMBERS_SHOWN else ""
    return [f"{list_file}: lists {len(absent)} slice(s) not found in {train_folder}: {shown}{more}"]


# --- reading ------------------------------------------------------------------------------------
def declared_geometry(shape_zyx: Sequence[int], spacing_zyx_mm: Sequence[float]) -> Geometry:
    """The grid given to a release without geometry: declared spacing, origin 0, identity direction."""
    return Geometry(tuple(shape_zyx), tuple(reversed([float(s) for s in spacing_zyx_mm])), (0.0, 0.0, 0.0))


def import_h5py(for_file: Path) -> Any:
    """h5py, imported only when a volume is read; ValueError naming the file when it is not installed."""
    try:
        import h5py
    except ImportError:
        raise ValueError(f"{for_file}: reading TransUNet's HDF5 volumes needs h5py, which is not installed; "
                         f"run `{H5PY_HINT}`") from None
    return h5py


def h5py_problems(volume_files: Sequence[Path]) -> list[str]:
    """One problem naming the first volume when h5py is missing (instead of one per volume)."""
    if not volume_files:
        return []
    try:
        import_h5py(volume_files[0])
    except ValueError as error:
        others = f" (and {len(volume_files) - 1} more volume(s))" if len(volume_files) > 1 else ""
        return [f"{error}{others}"]
    return []


def scaled_intensity_problem(image: np.ndarray, source: Path) -> str | None:
    """The release's images are scaled to [0, 1]; anything else means another preprocessing."""
    if image.size == 0 or not np.all(np.isfinite(image)):
        return f"{source}: image is empty or holds NaN / infinite values"
    low, high = float(image.min()), float(image.max())
    lowest, highest = SCALED_INTENSITY_RANGE
    if low < lowest - SCALED_INTENSITY_SLACK or high > highest + SCALED_INTENSITY_SLACK:
        return (f"{source}: image intensities span {low:g}..{high:g}, expected {lowest:g}..{highest:g} "
                f"(TransUNet's release is clipped to {SOURCE_HU_WINDOW[0]:g}.."
                f"{SOURCE_HU_WINDOW[1]:g} HU and scaled); for unscaled NIfTI scans use the raw layout")
    return None


class ReleaseFileError(ValueError):
    """A file of the release was read but does not hold what the release's files hold; names the file."""


def _arrays_of(content: Any, source: Path) -> tuple[np.ndarray, np.ndarray]:
    """image and label of an opened npz or h5 file, which must have the same shape."""
    keys = sorted(content.keys())
    absent = [k for k in ARRAY_KEYS if k not in keys]
    if absent:
        raise ReleaseFileError(f"{source}: no {' or '.join(absent)} array "
                               f"(found {keys}; expected {', '.join(ARRAY_KEYS)})")
    image, label = np.asarray(content["image"]), np.asarray(content["label"])
    if image.shape != label.shape:
        raise ReleaseFileError(f"{source}: image shape {image.shape} differs from label shape {label.shape}")
    return image, label


def read_slice(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """image and label (y, x) of one training slice; ValueError naming the file on anything unreadable."""
    try:
        with np.load(path) as content:
            return _arrays_of(content, path)
    except ReleaseFileError:
        raise
    except (OSError, EOFError, ValueError, AttributeError, zipfile.BadZipFile) as error:
        # np.load returns a bare array (no context manager) for an .npy file renamed to .npz
        raise ValueError(f"{path}: cannot be read as an npz file with image and label arrays ({error})") from None


@dataclass(frozen=True)
class SliceStackCase:
    """A training case of the release: its 2D slices, stacked along z in slice-number order."""

    case_id: str
    part: str
    train_folder: Path
    slice_files: tuple[Path, ...]  # sorted by slice number
    slice_numbers: tuple[int, ...]
    spacing_zyx_mm: tuple[float, float, float]

    @property
    def label_source(self) -> Path:
        return self.train_folder / f"{self.case_id}_slice*.npz"

    def input_problems(self) -> list[str]:
        numbers: dict[int, list[Path]] = defaultdict(list)
        for number, path in zip(self.slice_numbers, self.slice_files):
            numbers[number].append(path)
        return slice_number_problems(self.case_id, self.train_folder, numbers)

    def read_arrays(self) -> tuple[np.ndarray, np.ndarray, Geometry]:
        images, labels = [], []
        for path in self.slice_files:
            image, label = read_slice(path)
            if image.ndim != 2:
                raise ValueError(f"{path}: expected a 2D slice, found shape {image.shape}")
            if images and image.shape != images[0].shape:
                raise ValueError(f"{self.label_source}: {self.case_id} slices differ in shape: {path.name} is "
                                 f"{image.shape}, {self.slice_files[0].name} is {images[0].shape}")
            images.append(image)
            labels.append(label)
        image_zyx = np.stack(images).astype(np.float32)
        problem = scaled_intensity_problem(image_zyx, self.label_source)
        if problem:
            raise ValueError(problem)
        return image_zyx, np.stack(labels), declared_geometry(image_zyx.shape, self.spacing_zyx_mm)


@dataclass(frozen=True)
class VolumeCase:
    """A test case of the release: one HDF5 file with the image and label volumes (z, y, x)."""

    case_id: str
    part: str
    volume_file: Path
    spacing_zyx_mm: tuple[float, float, float]

    @property
    def label_source(self) -> Path:
        return self.volume_file

    def input_problems(self) -> list[str]:
        return [] if self.volume_file.is_file() else [f"{self.volume_file}: missing (needed for case {self.case_id})"]

    def read_arrays(self) -> tuple[np.ndarray, np.ndarray, Geometry]:
        h5py = import_h5py(self.volume_file)
        try:
            with h5py.File(self.volume_file, "r") as content:
                image, label = _arrays_of(content, self.volume_file)
        except OSError as error:
            raise ValueError(f"{self.volume_file}: cannot be read as an HDF5 file ({error})") from None
        if image.ndim != 3:
            raise ValueError(f"{self.volume_file}: expected 3D (z, y, x) volumes, found shape {image.shape}")
        image_zyx = image.astype(np.float32)
        problem = scaled_intensity_problem(image_zyx, self.volume_file)
        if problem:
            raise ValueError(problem)
        return image_zyx, label, declared_geometry(image_zyx.shape, self.spacing_zyx_mm)


def transunet_case_sources(
    synapse_root: Path, split: Mapping[str, Any], spacing_zyx_mm: Sequence[float],
) -> tuple[list[SliceStackCase | VolumeCase], list[str]]:
    """Cases of the split read from the release, and the layout problems met on the way."""
    folder = release_folder(synapse_root)
    if folder is None:
        return [], [f"{synapse_root}: no {TRAIN_FOLDER}/ or {TEST_FOLDER}/ folder in it, in Synapse/ or in "
                    "data/Synapse/ (expected TransUNet's preprocessed release)"]
    spacing = tuple(float(s) for s in spacing_zyx_mm)
    problems = spacing_problems(spacing)
    train_folder, test_folder = folder / TRAIN_FOLDER, folder / TEST_FOLDER
    slices = slice_files_by_case(train_folder)
    cases: list[SliceStackCase | VolumeCase] = []
    for case_id, part in sorted(split_part_of(split).items()):
        volume_file = test_folder / f"{case_id}{VOLUME_SUFFIX}"
        if not _CASE_ID.match(case_id):
            problems.append(f"split: case id '{case_id}' is not of the form caseXXXX (four digits)")
        elif volume_file.is_file():
            cases.append(VolumeCase(case_id, part, volume_file, spacing))
        elif case_id in slices:
            numbers = sorted(slices[case_id].items())
            cases.append(SliceStackCase(case_id, part, train_folder,
                                        tuple(p for _, files in numbers for p in files),
                                        tuple(n for n, files in numbers for _ in files), spacing))
        else:
            problems.append(f"{case_id}: neither {volume_file} nor {train_folder}/{case_id}_slice*.npz found")
    list_file = train_list_file(synapse_root, folder)
    if list_file is not None:
        problems.extend(train_list_problems(list_file, train_folder,
                                            [c.case_id for c in cases if isinstance(c, SliceStackCase)]))
    problems.extend(h5py_problems([c.volume_file for c in cases if isinstance(c, VolumeCase)]))
    return cases, problems


def spacing_problems(spacing_zyx_mm: Sequence[float]) -> list[str]:
    """A declared spacing must be three positive, finite millimetre values."""
    if len(spacing_zyx_mm) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing_zyx_mm):
        return [f"declared spacing (z, y, x) {tuple(spacing_zyx_mm)} mm must be three positive, finite values"]
    return []
