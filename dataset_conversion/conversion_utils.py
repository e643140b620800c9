"""Shared machinery of the public-dataset converters: splits, input checks, atomic dataset assembly.

A converter describes each output case as a :class:`CaseSource` (where its image and label files come
from and which part of the split it belongs to), or as an :class:`ArrayCaseSource` for releases stored
as arrays without image headers, and gives a label lookup table; :func:`build_raw_dataset` checks
every input, writes the cases into a hidden sibling folder and renames it into place only when all
went well, so a failed conversion never leaves half a dataset behind. How far a label's header geometry
may differ from its image's is the converter's ``geometry_tolerance_mm`` (see ``geometry_tolerance``).

Split parts map to folders: ``train`` -> imagesTr/labelsTr, ``val`` -> imagesVal/labelsVal (our
extension of the nnU-Net layout), ``test`` -> imagesTs/labelsTs.
"""
from __future__ import annotations

import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence, Union

import numpy as np

from cctrnet.dataset.dataset_json import write_dataset_json
from cctrnet.dataset.geometry import Geometry
from cctrnet.utilities.file_io import atomic_path, load_json, save_json
from dataset_conversion.geometry_tolerance import (
    DEFAULT_GEOMETRY_TOLERANCE_MM,
    TOLERANCE_OPTION,
    check_label_geometry,
    tolerance_problems,
)

SPLIT_PARTS = ("train", "val", "test")
PART_FOLDERS: dict[str, tuple[str, str]] = {
    "train": ("imagesTr", "labelsTr"),
    "val": ("imagesVal", "labelsVal"),
    "test": ("imagesTs", "labelsTs"),
}
FILE_ENDING = ".nii.gz"
SPLITS_FOLDER = Path(__file__).resolve().parent / "splits"


class ConversionError(RuntimeError):
    """The input cannot be converted; the message lists every problem found, each naming its file."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        count = len(self.problems)
        header = f"{count} problem{'s' if count != 1 else ''} found, nothing was written:"
        super().__init__("\n".join([header] + [f"  - {p}" for p in self.problems]))


@dataclass(frozen=True)
class CaseSource:
    """One output case: its id, its split part and the source files of its image and label."""

    case_id: str
    part: str
    image_file: Path
    label_file: Path


class ArrayCaseSource(Protocol):
    """One output case read as arrays, for a release that stores no image headers (its grid is declared).

    ``input_problems`` finds what can be found without reading voxels (missing files, gaps); ``read_arrays``
    returns the image and label, both (z, y, x), and the grid to write them with, and raises ValueError
    naming the file on anything wrong. ``label_source`` names the label's file(s) in messages.
    """

    case_id: str
    part: str

    @property
    def label_source(self) -> Path: ...

    def input_problems(self) -> list[str]: ...

    def read_arrays(self) -> tuple[np.ndarray, np.ndarray, Geometry]: ...


Case = Union[CaseSource, ArrayCaseSource]


def default_num_processes() -> int:
    return max(1, min(4, os.cpu_count() or 1))


# --- splits -------------------------------------------------------------------------------------
def packaged_split_file(file_name: str) -> Path:
    """Path of a split file shipped in ``dataset_conversion/splits``."""
    return SPLITS_FOLDER / file_name


def load_split(path: str | os.PathLike) -> dict[str, Any]:
    """Load a split JSON file (``train``, ``val``, ``test`` lists of ids) and check it."""
    path = Path(path)
    try:
        split = load_json(path)
    except FileNotFoundError:
        raise ConversionError([f"{path}: split file not found"]) from None
    except ValueError as error:
        raise ConversionError([f"{path}: not valid JSON ({error})"]) from None
    problems = split_problems(split, path)
    if problems:
        raise ConversionError(problems)
    return split


def split_problems(split: Any, source: str | os.PathLike = "split") -> list[str]:
    """Every problem of a split dict: parts must be lists of unique ids shared by no two parts."""
    if not isinstance(split, dict):
        return [f"{source}: must hold a JSON object with the keys {', '.join(SPLIT_PARTS)}"]
    problems = []
    seen: dict[str, str] = {}
    for part in SPLIT_PARTS:
        ids = split.get(part, [])
        if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
            problems.append(f'{source}: "{part}" must be a list of id strings, found {ids!r}')
            continue
        for identifier in ids:
            if identifier in seen:
                problems.append(f'{source}: "{identifier}" appears in "{seen[identifier]}" and again in "{part}"')
            seen[identifier] = part
    if isinstance(split.get("train"), list) and not split["train"]:
        problems.append(f'{source}: "train" must not be empty')
    order = split.get("labeled_order")
    if order is not None and isinstance(split.get("train"), list) and sorted(order) != sorted(split["train"]):
        problems.append(f'{source}: "labeled_order" must list exactly the "train" ids (in some order)')
    return problems


def resolve_split(split: Mapping[str, Any] | str | os.PathLike | None, default_file: Path) -> dict[str, Any]:
    """A checked split from a dict, from a JSON path, or (None) from the converter's packaged file."""
    if split is None or isinstance(split, (str, os.PathLike)):
        return load_split(split if split is not None else default_file)
    problems = split_problems(split)
    if problems:
        raise ConversionError(problems)
    return dict(split)


def split_part_of(split: Mapping[str, Any]) -> dict[str, str]:
    """Map every id in the split to its part name."""
    return {identifier: part for part in SPLIT_PARTS for identifier in split.get(part, [])}


# --- label maps ---------------------------------------------------------------------------------
def label_lookup_table(source_to_target: Mapping[int, int]) -> np.ndarray:
    """uint8 table indexed by a source label value; values not in the mapping map to 0 (background).

    The table covers 0..max(source); a source value beyond it is an error found by :func:`remap_labels`.
    """
    size = max(source_to_target) + 1
    table = np.zeros(size, dtype=np.uint8)
    for source, target in source_to_target.items():
        table[int(source)] = int(target)
    return table


def remap_labels(label_zyx: np.ndarray, table: np.ndarray, label_file: Path) -> np.ndarray:
    """Apply the lookup table; raises ValueError naming the file on non-integer or unknown values."""
    as_int = label_zyx.astype(np.int64)
    if not np.array_equal(as_int, label_zyx):
        raise ValueError(f"{label_file}: label map holds non-integer values")
    if as_int.size and (as_int.min() < 0 or as_int.max() >= len(table)):
        unknown = [int(v) for v in np.unique(as_int[(as_int < 0) | (as_int >= len(table))])]
        raise ValueError(f"{label_file}: unexpected label value(s) {unknown}; expected 0..{len(table) - 1}")
    return table[as_int]


# --- input checks -------------------------------------------------------------------------------
def read_header_geometry(path: Path) -> Geometry:
    """Geometry of an image file from its header only (no voxel data read)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        last_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown error"
        raise ValueError(f"{path}: cannot be read as an image ({last_line})") from None
    if reader.GetDimension() != 3:
        raise ValueError(f"{path}: expected a 3D image, found {reader.GetDimension()}D of size {reader.GetSize()}")
    if reader.GetNumberOfComponents() != 1:
        raise ValueError(f"{path}: expected one component per voxel, found {reader.GetNumberOfComponents()}")
    return Geometry(tuple(reversed(reader.GetSize())), reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())


@dataclass
class InputCheck:
    """What the checks before writing found: problems stop the conversion, warnings (one per case) do not."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    cases_given_image_geometry: list[str] = field(default_factory=list)


def check_case_sources(
    cases: Iterable[Case], geometry_tolerance_mm: float = DEFAULT_GEOMETRY_TOLERANCE_MM,
) -> InputCheck:
    """Missing files, unreadable headers and image/label grid differences beyond the tolerance, all of them."""
    check = InputCheck()
    for case in cases:
        if not isinstance(case, CaseSource):
            check.problems.extend(case.input_problems())
            continue
        missing = [f for f in (case.image_file, case.label_file) if not f.is_file()]
        check.problems.extend(f"{f}: missing (needed for case {case.case_id})" for f in missing)
        if missing:
            continue
        try:
            image_geometry = read_header_geometry(case.image_file)
            label_geometry = read_header_geometry(case.label_file)
        except ValueError as error:
            check.problems.append(str(error))
            continue
        outcome = check_label_geometry(case.image_file, image_geometry, case.label_file, label_geometry,
                                       geometry_tolerance_mm)
        if outcome.problem:
            check.problems.append(outcome.problem)
        if outcome.warning:
            check.warnings.append(outcome.warning)
            check.cases_given_image_geometry.append(case.case_id)
    return check


# --- writing ------------------------------------------------------------------------------------
def output_files(case: Case, dataset_folder: Path) -> tuple[Path, Path]:
    """Where a case's (single-channel) image and label go inside a dataset folder."""
    images_folder, labels_folder = PART_FOLDERS[case.part]
    return (
        dataset_folder / images_folder / f"{case.case_id}_0000{FILE_ENDING}",
        dataset_folder / labels_folder / f"{case.case_id}{FILE_ENDING}",
    )


def convert_case(case: Case, dataset_folder: Path, table: np.ndarray) -> str | None:
    """Write one case; returns a problem message instead of raising so all failures can be listed."""
    from cctrnet.dataset.image_io import ImageReadError, read_image, write_image

    image_out, label_out = output_files(case, dataset_folder)
    if not isinstance(case, CaseSource):
        try:
            image_zyx, label_zyx, geometry = case.read_arrays()
            write_image(image_zyx.astype(np.float32, copy=False), geometry, image_out)
            write_image(remap_labels(label_zyx, table, case.label_source), geometry, label_out)
        except (ValueError, OSError) as error:
            return str(error)
        return None
    try:
        geometry = read_header_geometry(case.image_file)
        if case.image_file.name.lower().endswith(FILE_ENDING):
            with atomic_path(image_out) as tmp:  # nothing changes: keep the original bytes
                shutil.copyfile(case.image_file, tmp)
        else:
            image_zyx, geometry = read_image(case.image_file, dtype=np.float32)
            write_image(image_zyx, geometry, image_out)
        label_zyx, _ = read_image(case.label_file, dtype=np.float32)
        # the label takes the image's geometry exactly (the grids were checked to agree within the tolerance)
        write_image(remap_labels(label_zyx, table, case.label_file), geometry, label_out)
    except (ValueError, ImageReadError, OSError) as error:
        return str(error)
    return None


def _convert_case_star(arguments: tuple[Case, Path, np.ndarray]) -> str | None:
    return convert_case(*arguments)


def _convert_all(cases: Sequence[Case], staging: Path, table: np.ndarray, num_processes: int) -> list[str]:
    from tqdm import tqdm

    jobs = [(case, staging, table) for case in cases]
    progress = dict(total=len(jobs), desc="converting cases", unit="case")
    if num_processes <= 1:
        results = [_convert_case_star(job) for job in tqdm(jobs, **progress)]
    else:
        with ProcessPoolExecutor(max_workers=num_processes) as pool:
            results = list(tqdm(pool.map(_convert_case_star, jobs), **progress))
    return [r for r in results if r is not None]


def build_raw_dataset(
    cases: Sequence[Case],
    dataset_folder: str | os.PathLike,
    label_table: np.ndarray,
    channel_name: str,
    labels: Mapping[str, int],
    split: Mapping[str, Any],
    dataset_json_extra: Mapping[str, Any],
    num_processes: int = 1,
    overwrite: bool = False,
    extra_problems: Sequence[str] = (),
    geometry_tolerance_mm: float = DEFAULT_GEOMETRY_TOLERANCE_MM,
) -> Path:
    """Check all inputs, then write the whole raw dataset or nothing; returns the dataset folder.

    ``extra_problems`` are layout problems the converter found itself (missing folders, bad Info.cfg);
    they are reported together with the file checks done here. A label whose header geometry differs from
    its image's by at most ``geometry_tolerance_mm`` (largest voxel displacement) is written with its image's
    geometry after a warning on stderr; a larger difference is a problem.
    """
    dataset_folder = Path(dataset_folder).resolve()
    problems = list(extra_problems) + tolerance_problems(geometry_tolerance_mm)
    if dataset_folder.exists() and not overwrite:
        problems.append(f"{dataset_folder}: already exists (use --overwrite to replace it)")
    unknown_parts = sorted({c.part for c in cases} - set(PART_FOLDERS))
    if unknown_parts:
        problems.append(f"unknown split part(s) {unknown_parts}; expected {', '.join(SPLIT_PARTS)}")
    if not problems and not any(c.part == "train" for c in cases):
        problems.append("no training case to convert")
    check = check_case_sources(cases, geometry_tolerance_mm)
    problems.extend(check.problems)
    if problems:
        raise ConversionError(problems)
    for warning in check.warnings:
        print(f"[cctrnet] warning: {warning}", file=sys.stderr)
    dataset_json_extra = {**dataset_json_extra, "geometry_tolerance_mm": geometry_tolerance_mm,
                          "labels_given_image_geometry": sorted(check.cases_given_image_geometry)}

    staging = dataset_folder.parent / f".{dataset_folder.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        problems = _convert_all(cases, staging, label_table, num_processes)
        if problems:
            raise ConversionError(problems)
        _write_contract_files(cases, staging, channel_name, labels, split, dataset_json_extra)
        _move_into_place(staging, dataset_folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return dataset_folder


def _write_contract_files(
    cases: Sequence[Case],
    folder: Path,
    channel_name: str,
    labels: Mapping[str, int],
    split: Mapping[str, Any],
    dataset_json_extra: Mapping[str, Any],
) -> None:
    case_ids = {part: sorted(c.case_id for c in cases if c.part == part) for part in SPLIT_PARTS}
    extra = dict(dataset_json_extra)
    extra.setdefault("numValidation", len(case_ids["val"]))
    extra.setdefault("numTest", len(case_ids["test"]))
    write_dataset_json(folder, {0: channel_name}, labels, len(case_ids["train"]), FILE_ENDING, **extra)
    split_copy = dict(split)
    split_copy["cases"] = case_ids
    save_json(split_copy, folder / "splits.json")


def _move_into_place(staging: Path, dataset_folder: Path) -> None:
    """Rename the finished staging folder to its final name, replacing an old dataset last."""
    old = None
    if dataset_folder.exists():
        old = dataset_folder.parent / f".{dataset_folder.name}.old-{os.getpid()}"
        os.replace(dataset_folder, old)
    os.replace(staging, dataset_folder)
    if old is not None:
        shutil.rmtree(old)


def add_common_arguments(parser: Any, dataset_id: int, name: str) -> None:
    """Options shared by all converters (output location, dataset id and name, split, processes)."""
    parser.add_argument("-o", "--output", default=None,
                        help="root folder of raw datasets (default: the cctr_raw environment variable)")
    parser.add_argument("-d", "--dataset-id", type=int, default=dataset_id,
                        help=f"numeric id of the new dataset (default: {dataset_id})")
    parser.add_argument("-n", "--name", default=name, help=f"name of the new dataset (default: {name})")
    parser.add_argument("--split", default=None,
                        help="split JSON file with train/val/test id lists (default: the paper's split, shipped "
                             "in dataset_conversion/splits)")
    parser.add_argument("-np", "--num-processes", type=int, default=default_num_processes(),
                        help=f"worker processes (default: {default_num_processes()})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset of the same name")
    parser.add_argument(TOLERANCE_OPTION, type=float, default=DEFAULT_GEOMETRY_TOLERANCE_MM, metavar="MM",
                        help="largest distance (mm) a voxel may move between a label's header grid and its image's "
                             "(origin, spacing and direction together); up to it the label gets its image's geometry "
                             "after a warning, beyond it the conversion stops "
                             f"(default: {DEFAULT_GEOMETRY_TOLERANCE_MM:g})")


def output_root(argument: str | None) -> Path:
    """The raw-dataset root: ``-o`` when given, else cctrnet's configured raw folder."""
    if argument:
        return Path(argument).expanduser().resolve()
    from cctrnet.paths import raw_folder

    return raw_folder()
