"""Cardiac phantom: a raw dataset of synthetic short-axis cine MRI volumes, like ACDC, from a seed.

Labels: 0 background, 1 RV cavity, 2 LV myocardium, 3 LV cavity. The torso, lungs, liver, spine,
aorta, atria, pericardial fat and the RV free wall are drawn but not labeled. See
documentation/phantom.md for what varies between subjects and by how much.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from cctrnet.dataset.geometry import Geometry
from dataset_conversion.generated_dataset import (GeneratedDatasetSpec, add_generator_arguments, case_id, case_seed,
                                                 raw_root_or_default, write_generated_dataset)
from dataset_conversion.phantom_config import PhantomConfig

if TYPE_CHECKING:
    from dataset_conversion.phantom_anatomy import Acquisition

LABELS = {"background": 0, "RV": 1, "MYO": 2, "LV": 3}
CHANNEL_NAMES = {"0": "MRI"}
CASE_PREFIX = "phantom"
PREVIEW_COLOURS = ((0.2, 0.5, 1.0), (1.0, 0.8, 0.1), (1.0, 0.2, 0.2))  # RV, MYO, LV
DESCRIPTION = ("Synthetic cardiac short-axis MRI phantom (cctrnet). Labels: RV cavity, LV myocardium, LV cavity; "
               "torso, lungs, liver, spine, aorta, atria, fat and RV free wall are present but unlabeled.")


def generate_phantom_subject(seed: int, config: PhantomConfig | None = None) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """One subject: image (int16, (z, y, x)), label (uint8, (z, y, x)) and its ``Geometry``.

    The same seed and config always give byte-identical arrays and the same geometry.
    """
    from dataset_conversion.phantom_anatomy import sample_subject_parameters
    from dataset_conversion.phantom_render import render_subject

    config = config or PhantomConfig()
    rng = np.random.default_rng(int(seed))
    subject = sample_subject_parameters(rng, config)
    image, label = render_subject(subject, config, rng)
    return image, label, subject_geometry(subject.acquisition, config.oblique_direction)


def subject_geometry(acquisition: "Acquisition", oblique_direction: bool = True) -> Geometry:
    """The written grid of a subject: its oblique short-axis stack moved by the patient offset, or (identity)
    the same arrays on an axis-aligned grid centred in plane on the world origin."""
    if oblique_direction:
        direction = acquisition.oblique_direction
        origin = acquisition.oblique_origin_xyz_mm + acquisition.patient_offset_xyz_mm
    else:
        direction = np.eye(3)
        nz, ny, nx = acquisition.shape_zyx
        sx, sy, _ = acquisition.spacing_xyz_mm
        origin = np.array([-sx * (nx - 1) / 2, -sy * (ny - 1) / 2, 0.0])
    return Geometry(acquisition.shape_zyx, acquisition.spacing_xyz_mm, tuple(float(v) for v in origin),
                    tuple(float(v) for v in direction.ravel()))


def generate_phantom_dataset(
    raw_root: Path,
    dataset_id: int = 1,
    name: str = "CardiacPhantom",
    num_training: int = 20,
    num_test: int = 10,
    num_unlabeled: int = 0,
    seed: int = 0,
    file_ending: str = ".nii.gz",
    overwrite: bool = False,
    config: PhantomConfig | None = None,
    show_progress: bool = True,
) -> Path:
    """Write ``raw_root/DatasetXXX_Name`` and return its path.

    Training cases are ``phantom_000`` .. ``phantom_{num_training-1}``; the last ``num_unlabeled`` of them
    get no label file. Test cases continue the numbering and have labels in ``labelsTs``. Written to a
    hidden sibling folder and renamed at the end (see ``dataset_conversion.generated_dataset``).
    """
    config = config or PhantomConfig()
    spec = GeneratedDatasetSpec(
        dataset_id=dataset_id, name=name, case_prefix=CASE_PREFIX, channel_names=CHANNEL_NAMES, labels=LABELS,
        description=DESCRIPTION, num_training=num_training, num_test=num_test, num_unlabeled=num_unlabeled,
        seed=seed, file_ending=file_ending, progress_label="phantom",
        generator_info={"program": "cctr_generate_phantom", "seed": seed, "config": config.to_dict()})
    return write_generated_dataset(raw_root, spec, lambda subject_seed: generate_phantom_subject(subject_seed, config),
                                   overwrite=overwrite, show_progress=show_progress)


def write_preview_png(path: Path, seed: int = 0, num_subjects: int = 3, slices_per_subject: int = 4,
                      config: PhantomConfig | None = None) -> Path:
    """Save a figure of a few slices (base to apex) of the first training subjects, labels overlaid."""
    from dataset_conversion.preview import write_subjects_preview

    subjects = [(case_id(CASE_PREFIX, row), *generate_phantom_subject(case_seed(seed, row), config))
                for row in range(num_subjects)]
    return write_subjects_preview(path, subjects, PREVIEW_COLOURS,
                                  "Cardiac phantom: RV (blue), myocardium (yellow), LV (red)", slices_per_subject)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cctr_generate_phantom",
        description="Write a synthetic cardiac short-axis MRI dataset (ACDC-like labels: RV 1, MYO 2, LV 3) in the "
                    "raw layout DatasetXXX_Name/{imagesTr,labelsTr,imagesTs,labelsTs}.")
    add_generator_arguments(parser, 1, "CardiacPhantom",
                            "only write a PNG of slices of the first 3 training subjects with labels, then exit")
    parser.add_argument("--num-training", type=int, default=20, help="training cases in imagesTr (default 20)")
    parser.add_argument("--num-test", type=int, default=10, help="test cases in imagesTs with labelsTs (default 10)")
    parser.add_argument("--num-unlabeled", type=int, default=0,
                        help="how many training cases (the last ones) are written without a label file (default 0)")
    parser.add_argument("--direction", choices=("oblique", "identity"), default="oblique",
                        help="direction matrix: the subject's oblique short-axis orientation in the patient frame "
                             "(default) or identity; the arrays are the same either way")
    parser.add_argument("--size", type=int, nargs=2, metavar=("MIN", "MAX"), default=None,
                        help="in-plane size range in pixels (default 176 216)")
    parser.add_argument("--tiny", action="store_true",
                        help="64x64 px, 6 thick slices (PhantomConfig.tiny()): a small dataset for quick tests")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    config = PhantomConfig.tiny() if args.tiny else PhantomConfig()
    config = config.with_changes(oblique_direction=args.direction == "oblique")
    if args.size is not None:
        config = config.with_changes(in_plane_size_range_px=tuple(args.size))
    if args.preview is not None:
        print(f"preview written to {write_preview_png(args.preview, seed=args.seed, config=config)}")
        return
    args.raw_root = raw_root_or_default(args.raw_root)
    try:
        folder = generate_phantom_dataset(args.raw_root, args.dataset_id, args.name, args.num_training, args.num_test,
                                          args.num_unlabeled, args.seed, args.file_ending, args.overwrite, config)
    except (FileExistsError, ValueError) as error:
        raise SystemExit(f"cctr_generate_phantom: error: {error}") from None
    print(f"wrote {folder}")


if __name__ == "__main__":
    main()
