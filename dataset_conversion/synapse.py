"""Convert the Synapse multi-organ CT data (BTCV abdomen) into a cctrnet raw dataset.

Command: ``cctr_convert_synapse``. Two input layouts, told apart automatically (or by ``--layout``):

- ``nifti``, the download (the ``RawData`` level is optional)::

      RawData/Training/img/img0001.nii.gz      RawData/Training/label/label0001.nii.gz

  Case ``caseXXXX`` (the naming of TransUNet's lists) is ``imgXXXX`` with ``labelXXXX``. The 13 BTCV
  organs are reduced to the 8 evaluated by TransUNet and the CCT-R paper; the other five become background.
- ``transunet``, TransUNet's preprocessed release (``train_npz/``, ``test_vol_h5/``, see
  :mod:`dataset_conversion.synapse_transunet`): already 8 organs with our values, intensities scaled to
  [0, 1], no geometry stored, so the spacing is declared (``--spacing-zyx-mm``).

The split (default: TransUNet's 18 training / 12 test cases) decides each case's part.
"""
from __future__ import annotations

import argparse
import os
import re
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
from dataset_conversion.synapse_transunet import (
    SCALED_INTENSITY_RANGE,
    SOURCE_HU_WINDOW,
    release_folder,
    transunet_case_sources,
)

# BTCV label values of the download (its data description): 1 spleen, 2 right kidney, 3 left kidney,
# 4 gallbladder, 5 esophagus, 6 liver, 7 stomach, 8 aorta, 9 inferior vena cava, 10 portal and splenic
# vein, 11 pancreas, 12 right adrenal gland, 13 left adrenal gland.
BTCV_ORGANS = {
    1: "spleen", 2: "kidney_right", 3: "kidney_left", 4: "gallbladder", 5: "esophagus", 6: "liver",
    7: "stomach", 8: "aorta", 9: "inferior_vena_cava", 10: "portal_and_splenic_vein", 11: "pancreas",
    12: "adrenal_gland_right", 13: "adrenal_gland_left",
}
# Output labels in the order of the paper's and TransUNet's result tables.
SYNAPSE_LABELS = {
    "background": 0, "aorta": 1, "gallbladder": 2, "kidney_left": 3, "kidney_right": 4,
    "liver": 5, "pancreas": 6, "spleen": 7, "stomach": 8,
}
BTCV_TO_SYNAPSE = {value: SYNAPSE_LABELS.get(organ, 0) for value, organ in BTCV_ORGANS.items()}
# TransUNet's release already holds these values (its preprocessing applied BTCV_TO_SYNAPSE)
TRANSUNET_TO_SYNAPSE = {value: value for value in SYNAPSE_LABELS.values()}

LAYOUTS = ("auto", "nifti", "transunet")
# The TransUNet release stores no geometry. In-plane: a typical BTCV value (the scans range 0.54-0.98 mm,
# all 512 x 512); slices: a typical BTCV slice spacing (the scans range 2.5-5.0 mm).
DECLARED_SPACING_ZYX_MM = (3.0, 0.76, 0.76)

_CASE_ID = re.compile(r"^case(\d{4})$")


@dataclass(frozen=True)
class SynapseConversionSettings:
    """Defaults of the Synapse conversion (TransUNet's split and our dataset id)."""

    dataset_id: int = 28
    name: str = "Synapse"
    channel_name: str = "CT"
    split_file: Path = field(default_factory=lambda: packaged_split_file("synapse.json"))
    layout: str = "auto"  # one of LAYOUTS
    declared_spacing_zyx_mm: tuple[float, float, float] = DECLARED_SPACING_ZYX_MM  # transunet layout only
    # starts with "CT", so the planner keeps CTNormalization (dataset-wide statistics, linear in the scaled HU)
    transunet_channel_name: str = "CT_scaled_0_1"
    geometry_tolerance_mm: float = DEFAULT_GEOMETRY_TOLERANCE_MM  # label vs image header, nifti layout


def training_folder(synapse_root: Path) -> Path | None:
    """The folder holding img/ and label/: RawData/Training, Training, or the root itself."""
    for candidate in (synapse_root / "RawData" / "Training", synapse_root / "Training", synapse_root):
        if (candidate / "img").is_dir() and (candidate / "label").is_dir():
            return candidate
    return None


def detect_layout(synapse_root: Path, layout: str = "auto") -> tuple[str | None, list[str]]:
    """``nifti`` or ``transunet`` for the folder (``auto`` looks at what is there), or None and the problem."""
    if layout not in LAYOUTS:
        return None, [f"layout '{layout}' is not one of {', '.join(LAYOUTS)}"]
    if not synapse_root.is_dir():
        return None, [f"{synapse_root}: Synapse folder not found"]
    if layout != "auto":
        return layout, []
    nifti, transunet = training_folder(synapse_root), release_folder(synapse_root)
    if nifti is not None and transunet is not None:
        return None, [f"{synapse_root}: holds both the NIfTI download ({nifti}) and TransUNet's release ({transunet}); "
                      "choose one with --layout nifti or --layout transunet"]
    if nifti is None and transunet is None:
        return None, [f"{synapse_root}: no img/ and label/ folders under RawData/Training, Training or the folder "
                      "itself (expected the Synapse download, e.g. RawData/Training/img/img0001.nii.gz), and no "
                      "train_npz/ or test_vol_h5/ (TransUNet's preprocessed release)"]
    return ("nifti" if nifti is not None else "transunet"), []


def synapse_case_sources(synapse_root: str | os.PathLike, split: Mapping[str, Any]) -> tuple[list[CaseSource], list[str]]:
    """Cases of the split with their img/label files, and the layout problems met on the way."""
    synapse_root = Path(synapse_root)
    if not synapse_root.is_dir():
        return [], [f"{synapse_root}: Synapse folder not found"]
    folder = training_folder(synapse_root)
    if folder is None:
        return [], [f"{synapse_root}: no img/ and label/ folders under RawData/Training, Training or the folder "
                    "itself (expected the Synapse download, e.g. RawData/Training/img/img0001.nii.gz)"]
    cases, problems = [], []
    for case_id, part in sorted(split_part_of(split).items()):
        match = _CASE_ID.match(case_id)
        if not match:
            problems.append(f"split: case id '{case_id}' is not of the form caseXXXX (four digits)")
            continue
        number = match.group(1)
        cases.append(CaseSource(case_id, part, folder / "img" / f"img{number}.nii.gz",
                                folder / "label" / f"label{number}.nii.gz"))
    return cases, problems


def convert_synapse(
    synapse_root: str | os.PathLike,
    raw_root: str | os.PathLike,
    split: Mapping[str, Any] | str | os.PathLike | None = None,
    settings: SynapseConversionSettings = SynapseConversionSettings(),
    num_processes: int = 1,
    overwrite: bool = False,
) -> Path:
    """Convert a Synapse download into ``raw_root/DatasetXXX_Name``; returns that folder.

    ``split`` is a split dict, a split JSON path, or None for TransUNet's split. Raises
    ConversionError listing every problem when the input is incomplete; then nothing is written.
    """
    from cctrnet.dataset.raw_dataset import dataset_folder_name

    split = resolve_split(split, settings.split_file)
    synapse_root = Path(synapse_root)
    layout, problems = detect_layout(synapse_root, settings.layout)
    extra: dict[str, Any] = {
        "name": settings.name,
        "reference": "Landman et al., MICCAI 2015 Multi-Atlas Labeling Beyond the Cranial Vault workshop and "
                     "challenge; split of Chen et al., TransUNet, arXiv:2102.04306",
        "licence": "Synapse/BTCV data may not be redistributed; obtain it yourself from the Synapse platform "
                   "and respect its terms of use",
        "split_source": split.get("source", "user-supplied split"),
        "source_layout": layout,
    }
    cases: list = []
    if layout == "transunet":
        cases, layout_problems = transunet_case_sources(synapse_root, split, settings.declared_spacing_zyx_mm)
        channel_name, table = settings.transunet_channel_name, label_lookup_table(TRANSUNET_TO_SYNAPSE)
        extra.update({
            "description": "Synapse multi-organ abdominal CT, TransUNet's preprocessed release (8 organs); "
                           "intensities clipped and scaled by TransUNet, spacing declared by the converter",
            "source_label_mapping": {f"{value} {organ}": value for organ, value in SYNAPSE_LABELS.items()},
            "intensity_scaling": {"source_hu_window": list(SOURCE_HU_WINDOW),
                                  "scaled_to": list(SCALED_INTENSITY_RANGE),
                                  "by": "TransUNet's preprocessing, before this conversion"},
            "declared_spacing_zyx_mm": [float(s) for s in settings.declared_spacing_zyx_mm],
            "geometry_note": "the release stores no geometry: every case has the declared spacing, origin 0 and "
                             "identity direction; millimetre results (HD95) are in that declared scale",
        })
    else:
        cases, layout_problems = synapse_case_sources(synapse_root, split) if layout == "nifti" else ([], [])
        channel_name, table = settings.channel_name, label_lookup_table({0: 0, **BTCV_TO_SYNAPSE})
        extra.update({
            "description": "Synapse multi-organ abdominal CT (MICCAI 2015 Multi-Atlas Labeling Beyond the Cranial "
                           "Vault), 8 organs as evaluated by TransUNet; other BTCV organs are background",
            "source_label_mapping": {f"{value} {organ}": BTCV_TO_SYNAPSE[value]
                                     for value, organ in BTCV_ORGANS.items()},
        })
    return build_raw_dataset(
        cases,
        Path(raw_root) / dataset_folder_name(settings.dataset_id, settings.name),
        table,
        channel_name,
        SYNAPSE_LABELS,
        split,
        extra,
        num_processes=num_processes,
        overwrite=overwrite,
        extra_problems=problems + layout_problems,
        geometry_tolerance_mm=settings.geometry_tolerance_mm,
    )


def build_parser() -> argparse.ArgumentParser:
    defaults = SynapseConversionSettings()
    parser = argparse.ArgumentParser(
        prog="cctr_convert_synapse",
        description="Convert the Synapse multi-organ CT download (RawData/Training/img and label) or TransUNet's "
                    "preprocessed release (train_npz/, test_vol_h5/) into a cctrnet raw dataset with the 8 organs "
                    "of TransUNet; the split decides imagesTr / imagesTs.",
    )
    parser.add_argument("-i", "--input", required=True,
                        help="Synapse folder: the one holding RawData/ (or Training/, or img/ and label/), or "
                             "TransUNet's data folder (holding train_npz/ and test_vol_h5/, or Synapse/ with them)")
    parser.add_argument("--layout", choices=LAYOUTS, default=defaults.layout,
                        help="input layout: nifti (the download), transunet (TransUNet's release) or auto, which "
                             f"tells them apart by their folders (default: {defaults.layout})")
    parser.add_argument("--spacing-zyx-mm", type=float, nargs=3, default=None, metavar=("Z", "Y", "X"),
                        help="spacing declared for every case of the transunet layout, which stores none "
                             f"(default: {' '.join(f'{s:g}' for s in defaults.declared_spacing_zyx_mm)})")
    add_common_arguments(parser, defaults.dataset_id, defaults.name)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    spacing = DECLARED_SPACING_ZYX_MM if args.spacing_zyx_mm is None else tuple(args.spacing_zyx_mm)
    settings = SynapseConversionSettings(dataset_id=args.dataset_id, name=args.name, layout=args.layout,
                                         declared_spacing_zyx_mm=spacing,
                                         geometry_tolerance_mm=args.geometry_tolerance_mm)
    if args.spacing_zyx_mm is not None and detect_layout(Path(args.input), args.layout)[0] == "nifti":
        parser.error("--spacing-zyx-mm applies to the transunet layout only; the NIfTI download's headers hold "
                     "each scan's spacing")
    try:
        folder = convert_synapse(args.input, output_root(args.output), args.split, settings,
                                 num_processes=args.num_processes, overwrite=args.overwrite)
    except ConversionError as error:
        raise SystemExit(f"cctr_convert_synapse: {error}") from None
    print(f"wrote {folder}")


if __name__ == "__main__":
    main()
