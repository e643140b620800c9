"""Convert the ACDC cardiac MRI download into a cctrnet raw dataset (``cctr_convert_acdc``).

Input layout (as downloaded; the ``database`` level is optional)::

    database/training/patient001/{Info.cfg, patient001_4d.nii.gz,
                                  patient001_frame01.nii.gz, patient001_frame01_gt.nii.gz, ...}
    database/testing/patient101/...          (the 2017 release: testing/testing/patient101/...)

Each patient gives two cases, its end-diastolic (ED) and end-systolic (ES) frames as named in
Info.cfg (``ED: 1`` -> ``patient001_frame01``). Labels keep ACDC's values: 0 background, 1 RV,
2 MYO, 3 LV. The split (default: the paper's 70/10/20 patients) decides each patient's part.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from dataset_conversion.conversion_utils import (
    CaseSource,
    ConversionError,
    add_common_arguments,
    build_raw_dataset,
    label_lookup_table,
    output_root,
    packaged_split_file,
    resolve_split,
    split_part_of,
)
from dataset_conversion.geometry_tolerance import DEFAULT_GEOMETRY_TOLERANCE_MM

ACDC_LABELS = {"background": 0, "RV": 1, "MYO": 2, "LV": 3}


@dataclass(frozen=True)
class AcdcConversionSettings:
    """Defaults of the ACDC conversion (the paper's split and our dataset id)."""

    dataset_id: int = 27
    name: str = "ACDC"
    channel_name: str = "MRI"
    split_file: Path = field(default_factory=lambda: packaged_split_file("acdc.json"))
    geometry_tolerance_mm: float = DEFAULT_GEOMETRY_TOLERANCE_MM  # label vs image header, see geometry_tolerance


def patient_folders_roots(acdc_root: Path) -> list[Path]:
    """The folders holding ``patientXXX`` folders: training/ and testing/, with or without database/, and the
    2017 release's nested ``testing/testing/`` (or ``training/training/``) when that is where the patients are."""
    for base in (acdc_root, acdc_root / "database"):
        roots = [_patients_level(base / part) for part in ("training", "testing") if (base / part).is_dir()]
        if roots:
            return roots
    if any(p.is_dir() and p.name.startswith("patient") for p in acdc_root.iterdir()):
        return [acdc_root]
    return []


def _patients_level(part_folder: Path) -> Path:
    """``part_folder`` itself, or its same-named subfolder when only that one holds patient folders."""
    nested = part_folder / part_folder.name
    has_patients = any(p.is_dir() and p.name.startswith("patient") for p in part_folder.iterdir())
    return nested if nested.is_dir() and not has_patients else part_folder


def read_info_cfg(path: Path) -> dict[str, str]:
    """Key/value pairs of an ACDC Info.cfg (``ED: 1``, ``Group: DCM`` ...)."""
    info = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


def ed_es_frames(info_file: Path) -> tuple[int, int]:
    """The end-diastolic and end-systolic frame numbers; ValueError naming the file when absent."""
    info = read_info_cfg(info_file)
    frames = []
    for key in ("ED", "ES"):
        if key not in info:
            raise ValueError(f"{info_file}: no '{key}:' line (found keys {sorted(info)})")
        try:
            frames.append(int(float(info[key])))
        except ValueError:
            raise ValueError(f"{info_file}: '{key}: {info[key]}' is not a frame number") from None
    if frames[0] == frames[1]:
        raise ValueError(f"{info_file}: ED and ES name the same frame {frames[0]}")
    return frames[0], frames[1]


def acdc_case_sources(acdc_root: str | os.PathLike, split: Mapping[str, Any]) -> tuple[list[CaseSource], list[str]]:
    """Cases (ED and ES frame of every split patient) and the layout problems met on the way."""
    acdc_root = Path(acdc_root)
    if not acdc_root.is_dir():
        return [], [f"{acdc_root}: ACDC folder not found"]
    roots = patient_folders_roots(acdc_root)
    if not roots:
        return [], [f"{acdc_root}: neither training/ nor testing/ nor patientXXX folders found "
                    "(expected the ACDC download, e.g. database/training/patient001/)"]
    cases: list[CaseSource] = []
    problems: list[str] = []
    for patient, part in sorted(split_part_of(split).items()):
        folder = next((root / patient for root in roots if (root / patient).is_dir()), None)
        if folder is None:
            problems.append(f"{patient}: patient folder not found in {' or '.join(str(r) for r in roots)}")
            continue
        info_file = folder / "Info.cfg"
        if not info_file.is_file():
            problems.append(f"{info_file}: missing (it names the ED and ES frames)")
            continue
        try:
            frames = ed_es_frames(info_file)
        except ValueError as error:
            problems.append(str(error))
            continue
        for frame in frames:
            stem = f"{patient}_frame{frame:02d}"
            cases.append(CaseSource(stem, part, folder / f"{stem}.nii.gz", folder / f"{stem}_gt.nii.gz"))
    return cases, problems


def convert_acdc(
    acdc_root: str | os.PathLike,
    raw_root: str | os.PathLike,
    split: Mapping[str, Any] | str | os.PathLike | None = None,
    settings: AcdcConversionSettings = AcdcConversionSettings(),
    num_processes: int = 1,
    overwrite: bool = False,
) -> Path:
    """Convert an ACDC download into ``raw_root/DatasetXXX_Name``; returns that folder.

    ``split`` is a split dict, a split JSON path, or None for the paper's split. Raises
    ConversionError listing every problem when the input is incomplete; then nothing is written.
    """
    from cctrnet.dataset.raw_dataset import dataset_folder_name

    split = resolve_split(split, settings.split_file)
    cases, problems = acdc_case_sources(acdc_root, split)
    extra = {
        "name": settings.name,
        "description": "ACDC short-axis cine cardiac MRI, end-diastolic and end-systolic frames; "
                       "train/val/test parts as in the semi-supervised literature (see splits.json)",
        "reference": "Bernard et al., Deep learning techniques for automatic MRI cardiac multi-structures "
                     "segmentation and diagnosis: is the problem solved? IEEE TMI 37(11), 2018",
        "licence": "ACDC data may not be redistributed; obtain it yourself from the challenge organisers "
                   "and respect their terms of use",
        "split_source": split.get("source", "user-supplied split"),
        # both frames of a patient: cctr_train --labeled N then counts patients, as the paper's protocol does
        "patients": {patient: sorted(c.case_id for c in cases if c.case_id.rsplit("_frame", 1)[0] == patient)
                     for patient in sorted({c.case_id.rsplit("_frame", 1)[0] for c in cases})},
    }
    return build_raw_dataset(
        cases,
        Path(raw_root) / dataset_folder_name(settings.dataset_id, settings.name),
        label_lookup_table({v: v for v in ACDC_LABELS.values()}),
        settings.channel_name,
        ACDC_LABELS,
        split,
        extra,
        num_processes=num_processes,
        overwrite=overwrite,
        extra_problems=problems,
        geometry_tolerance_mm=settings.geometry_tolerance_mm,
    )


def build_parser() -> argparse.ArgumentParser:
    defaults = AcdcConversionSettings()
    parser = argparse.ArgumentParser(
        prog="cctr_convert_acdc",
        description="Convert the ACDC download (training/patientXXX folders) into a cctrnet raw dataset. "
                    "Both ED and ES frames become cases; the split decides imagesTr / imagesVal / imagesTs.",
    )
    parser.add_argument("-i", "--input", required=True,
                        help="ACDC folder: the one holding training/ and testing/ (or database/)")
    add_common_arguments(parser, defaults.dataset_id, defaults.name)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    settings = AcdcConversionSettings(dataset_id=args.dataset_id, name=args.name,
                                      geometry_tolerance_mm=args.geometry_tolerance_mm)
    try:
        folder = convert_acdc(args.input, output_root(args.output), args.split, settings,
                              num_processes=args.num_processes, overwrite=args.overwrite)
    except ConversionError as error:
        raise SystemExit(f"cctr_convert_acdc: {error}") from None
    print(f"wrote {folder}")


if __name__ == "__main__":
    main()
