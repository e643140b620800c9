"""Writing a generated (synthetic) raw dataset: shared by the cardiac and brain phantom generators.

A generator supplies one function, ``make_case(seed) -> (image, label, geometry)``; this module draws
an independent seed per case, writes images, labels and dataset.json into a hidden sibling folder and
renames it at the end, so an interrupted run never leaves a dataset folder that looks complete.
"""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from cctrnet.dataset.geometry import Geometry

ALLOWED_FILE_ENDINGS = (".nii.gz", ".nii", ".mha", ".nrrd")

CaseMaker = Callable[[int], "tuple[np.ndarray, np.ndarray, Geometry]"]


def case_seed(dataset_seed: int, case_index: int) -> int:
    """Seed of case ``case_index`` of a dataset generated with ``dataset_seed`` (independent streams)."""
    state = np.random.SeedSequence(int(dataset_seed), spawn_key=(int(case_index),)).generate_state(1, dtype=np.uint32)
    return int(state[0])


def case_id(case_prefix: str, case_index: int) -> str:
    return f"{case_prefix}_{case_index:03d}"


@dataclass(frozen=True)
class GeneratedDatasetSpec:
    """What a generator writes: names, counts and the dataset.json content besides the cases."""

    dataset_id: int
    name: str
    case_prefix: str
    channel_names: dict[str, str]
    labels: dict[str, int]
    description: str
    generator_info: dict[str, Any]
    num_training: int = 20
    num_test: int = 10
    num_unlabeled: int = 0
    seed: int = 0
    file_ending: str = ".nii.gz"
    progress_label: str = field(default="dataset")

    def case_id(self, case_index: int) -> str:
        return case_id(self.case_prefix, case_index)


def check_dataset_arguments(dataset_id: int, name: str, num_training: int, num_test: int, num_unlabeled: int,
                            file_ending: str) -> None:
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset id must be in 1..999, got {dataset_id}")
    if not name or not all(ch.isalnum() or ch in "_-" for ch in name):
        raise ValueError(f"dataset name must be letters, digits, '_' or '-', got {name!r}")
    if num_training < 1:
        raise ValueError(f"num_training must be at least 1, got {num_training}")
    if num_test < 0:
        raise ValueError(f"num_test must be >= 0, got {num_test}")
    if not 0 <= num_unlabeled < num_training:
        raise ValueError(f"num_unlabeled must be in 0..num_training-1 = {num_training - 1} "
                         f"(at least one training case keeps its label), got {num_unlabeled}")
    if file_ending not in ALLOWED_FILE_ENDINGS:
        raise ValueError(f"file ending must be one of {', '.join(ALLOWED_FILE_ENDINGS)}, got {file_ending!r}")


def replace_folder(new_folder: Path, final_folder: Path) -> None:
    """Rename ``new_folder`` to ``final_folder``, moving an existing one aside first and deleting it after."""
    if not final_folder.exists():
        os.replace(new_folder, final_folder)
        return
    old_folder = final_folder.with_name(f".{final_folder.name}.old-{os.getpid()}")
    os.replace(final_folder, old_folder)
    os.replace(new_folder, final_folder)
    shutil.rmtree(old_folder, ignore_errors=True)


@contextmanager
def staged_dataset_folder(raw_root: Path, dataset_id: int, name: str, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden sibling folder to write ``raw_root/DatasetXXX_Name`` into; renamed into place on success.

    Refuses an existing folder without ``overwrite`` and an id already used by a dataset of another name; an
    error (or Ctrl-C) inside the block removes the partial folder.
    """
    from cctrnet.dataset.raw_dataset import available_datasets, dataset_folder_name

    raw_root = Path(raw_root)
    final_folder = raw_root / dataset_folder_name(dataset_id, name)
    if final_folder.exists() and not overwrite:
        raise FileExistsError(f"{final_folder}: already exists; pass --overwrite (overwrite=True) to replace it")
    same_id = [other for other in available_datasets(raw_root)
               if other.startswith(f"Dataset{dataset_id:03d}_") and other != final_folder.name]
    if same_id:
        raise FileExistsError(f"{raw_root}: dataset id {dataset_id} is already used by {', '.join(same_id)}; "
                              "choose another --dataset-id (an id must name one dataset)")
    raw_root.mkdir(parents=True, exist_ok=True)
    partial_folder = raw_root / f".{final_folder.name}.partial-{os.getpid()}"
    if partial_folder.exists():
        shutil.rmtree(partial_folder)
    partial_folder.mkdir()
    try:
        yield partial_folder
        replace_folder(partial_folder, final_folder)
    except BaseException:
        shutil.rmtree(partial_folder, ignore_errors=True)
        raise


def write_case_files(folder: Path, split: str, case: str, image: np.ndarray, label: np.ndarray | None,
                     geometry: Geometry, ending: str) -> None:
    """``images{split}/{case}_0000{ending}`` and, when ``label`` is given, ``labels{split}/{case}{ending}``."""
    from cctrnet.dataset.image_io import write_image

    write_image(image, geometry, folder / f"images{split}" / f"{case}_0000{ending}")
    if label is not None:
        write_image(label, geometry, folder / f"labels{split}" / f"{case}{ending}")


def write_generated_dataset(raw_root: Path, spec: GeneratedDatasetSpec, make_case: CaseMaker,
                            overwrite: bool = False, show_progress: bool = True) -> Path:
    """Write ``raw_root/DatasetXXX_Name`` from ``make_case`` and return its path.

    Training cases are ``<prefix>_000`` .. ``<prefix>_{num_training-1}``; the last ``num_unlabeled`` of them
    get no label file. Test cases continue the numbering and have labels in ``labelsTs``.
    """
    from tqdm import tqdm

    from cctrnet.dataset.dataset_json import write_dataset_json
    from cctrnet.dataset.raw_dataset import dataset_folder_name

    check_dataset_arguments(spec.dataset_id, spec.name, spec.num_training, spec.num_test, spec.num_unlabeled,
                            spec.file_ending)
    final_folder = Path(raw_root) / dataset_folder_name(spec.dataset_id, spec.name)
    ending = spec.file_ending
    with staged_dataset_folder(Path(raw_root), spec.dataset_id, spec.name, overwrite) as partial_folder:
        cases = [("Tr", index, index < spec.num_training - spec.num_unlabeled) for index in range(spec.num_training)]
        cases += [("Ts", spec.num_training + index, True) for index in range(spec.num_test)]
        for split, index, labeled in tqdm(cases, desc=f"{spec.progress_label} {final_folder.name}", unit="case",
                                          disable=not show_progress):
            image, label, geometry = make_case(case_seed(spec.seed, index))
            write_case_files(partial_folder, split, spec.case_id(index), image, label if labeled else None,
                             geometry, ending)
        write_dataset_json(partial_folder, spec.channel_names, spec.labels, spec.num_training, ending,
                           name=spec.name, description=spec.description, numTest=spec.num_test,
                           numUnlabeled=spec.num_unlabeled, generator=spec.generator_info)
    return final_folder


def add_generator_arguments(parser: Any, dataset_id: int, name: str, preview_help: str) -> None:
    """The options every generator shares: where and under which id and name, seed, format, overwrite, preview."""
    parser.add_argument("--raw-root", type=Path, default=None,
                        help="folder of the raw datasets (default: cctrnet.paths.raw_folder(), env var cctr_raw)")
    parser.add_argument("-d", "--dataset-id", type=int, default=dataset_id,
                        help=f"dataset id, 1..999 (default {dataset_id})")
    parser.add_argument("--name", default=name, help=f"dataset name (default {name})")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed; the same seed gives identical files' arrays")
    parser.add_argument("--file-ending", default=".nii.gz", choices=ALLOWED_FILE_ENDINGS,
                        help="image format (default .nii.gz)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder of that name")
    parser.add_argument("--preview", type=Path, metavar="PNG", default=None, help=preview_help)


def raw_root_or_default(raw_root: Path | None) -> Path:
    """``--raw-root`` when given, else cctrnet's raw folder (``$cctr_raw``)."""
    if raw_root is not None:
        return raw_root
    from cctrnet.paths import raw_folder

    return raw_folder()
