"""ACDC-like cardiac population (``cctr_generate_acdc_population``): patients of five groups, ED and ES frames.

A raw dataset of synthetic short-axis cine MRI patients with ACDC's structure: the groups NOR, DCM, HCM, MINF
and ARV in turn (20 each of 100), two frames per patient, 1.5 T / 3 T-like scanners, and the split of the
semi-supervised literature (70 train / 10 validation / 20 test patients). Labels: 0 background, 1 RV cavity,
2 LV myocardium, 3 LV cavity (as ACDC and the cardiac phantom). See documentation/phantom.md.

Layout, as ``cctr_convert_acdc`` writes ACDC: training patients in imagesTr/labelsTr, validation patients in
imagesVal/labelsVal, test patients in imagesTs/labelsTs; ``dataset.json`` declares the patients
(``"patients": {"patient001": ["patient001_ED", "patient001_ES"], ...}``), ``splits.json`` the split and
``patients.json`` what each patient drew (group, targets, scanner; with appearance version 2 also its contrast,
coils, B0 field and breath-hold poses). ``--appearance-version`` chooses the image model (default 1, see
``acdc_appearance_v2_config``).
"""
from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Sequence

from dataset_conversion.acdc_population_config import APPEARANCE_VERSIONS, AcdcPopulationConfig
from dataset_conversion.acdc_population_groups import GROUPS
from dataset_conversion.acdc_population_patient import (FRAMES, frame_case_id, generate_patient, patient_group,
                                                        patient_id)
from dataset_conversion.generated_dataset import add_generator_arguments, case_seed, raw_root_or_default

LABELS = {"background": 0, "RV": 1, "MYO": 2, "LV": 3}
CHANNEL_NAMES = {"0": "MRI"}
SPLIT_PARTS = ("train", "val", "test")
PART_SUFFIX = {"train": "Tr", "val": "Val", "test": "Ts"}
# the split of the semi-supervised ACDC literature (SSL4MIS): 70 / 10 / 20 of 100 patients
DEFAULT_SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
DESCRIPTION = ("Synthetic ACDC-like cardiac cine MRI population (cctrnet): groups NOR, DCM, HCM, MINF, ARV; ED and "
               "ES frame per patient; labels RV cavity, LV myocardium, LV cavity.")


def split_counts(num_patients: int, fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS) -> dict[str, int]:
    """Patients per part (largest remainder); every part with a positive fraction gets at least one patient
    when there are enough, and training always gets one."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0 or fractions[0] == 0:
        raise ValueError(f"split fractions must be three numbers >= 0 (train > 0), got {list(fractions)}")
    if num_patients < 1:
        raise ValueError(f"the number of patients must be at least 1, got {num_patients}")
    total = float(sum(fractions))
    exact = [num_patients * f / total for f in fractions]
    counts = [int(e) for e in exact]
    for index in sorted(range(3), key=lambda i: exact[i] - counts[i], reverse=True)[:num_patients - sum(counts)]:
        counts[index] += 1
    for index in (1, 2):  # a requested part never ends up empty when patients can be spared from training
        if fractions[index] > 0 and counts[index] == 0 and counts[0] > 1:
            counts[index], counts[0] = 1, counts[0] - 1
    return dict(zip(SPLIT_PARTS, counts))


def split_patients(num_patients: int, fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS) -> dict[str, list[str]]:
    """Patient ids per part: the first patients train, then validation, then test. The groups come in turn,
    so each part holds the groups in equal shares (70 / 10 / 20 of 100: 14 / 2 / 4 per group)."""
    counts = split_counts(num_patients, fractions)
    ids = [patient_id(i) for i in range(num_patients)]
    first_val, first_test = counts["train"], counts["train"] + counts["val"]
    return {"train": ids[:first_val], "val": ids[first_val:first_test], "test": ids[first_test:]}


def _write_patient(arguments: tuple[int, int, AcdcPopulationConfig, str, Path, str]) -> dict[str, Any]:
    """Generate patient ``index`` and write its two frames into ``folder``; returns its patients.json entry."""
    from dataset_conversion.generated_dataset import write_case_files

    index, seed, config, part, folder, ending = arguments
    patient = generate_patient(index, case_seed(seed, index), config)
    for frame in FRAMES:
        write_case_files(folder, PART_SUFFIX[part], frame_case_id(patient.patient, frame), patient.images[frame],
                         patient.labels[frame], patient.geometry, ending)
    return {"split": part, **patient.info()}


def generate_acdc_population_dataset(
    raw_root: Path,
    dataset_id: int = 3,
    name: str = "ACDCPopulation",
    num_patients: int = 100,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    seed: int = 0,
    file_ending: str = ".nii.gz",
    overwrite: bool = False,
    config: AcdcPopulationConfig | None = None,
    num_processes: int = 1,
    show_progress: bool = True,
) -> Path:
    """Write ``raw_root/DatasetXXX_Name`` and return its path. Patient *i* is drawn from
    ``case_seed(seed, i)`` and belongs to group ``patient_group(i)``, whatever the number of patients."""
    from tqdm import tqdm

    from cctrnet.dataset.dataset_json import write_dataset_json
    from cctrnet.dataset.raw_dataset import dataset_folder_name
    from cctrnet.utilities.file_io import save_json
    from dataset_conversion.generated_dataset import check_dataset_arguments, staged_dataset_folder

    config = config or AcdcPopulationConfig()
    split = split_patients(num_patients, split_fractions)
    check_dataset_arguments(dataset_id, name, 2 * len(split["train"]), 0, 0, file_ending)
    part_of = {patient: part for part, patients in split.items() for patient in patients}
    with staged_dataset_folder(Path(raw_root), dataset_id, name, overwrite) as folder:
        jobs = [(i, seed, config, part_of[patient_id(i)], folder, file_ending) for i in range(num_patients)]
        progress = dict(total=len(jobs), desc=f"patients {dataset_folder_name(dataset_id, name)}", unit="patient",
                        disable=not show_progress)
        if num_processes <= 1:
            infos = [_write_patient(job) for job in tqdm(jobs, **progress)]
        else:
            with ProcessPoolExecutor(max_workers=num_processes) as pool:
                infos = list(tqdm(pool.map(_write_patient, jobs), **progress))
        patients = {patient_id(i): [frame_case_id(patient_id(i), f) for f in FRAMES] for i in range(num_patients)}
        write_dataset_json(
            folder, CHANNEL_NAMES, LABELS, 2 * len(split["train"]), file_ending, name=name, description=DESCRIPTION,
            numValidation=2 * len(split["val"]), numTest=2 * len(split["test"]), patients=patients,
            generator={"program": "cctr_generate_acdc_population", "seed": seed, "num_patients": num_patients,
                       "split_fractions": list(split_fractions), "appearance_version": config.appearance_version,
                       "config": config.to_dict(),
                       "groups": {group: ranges.to_dict() for group, ranges in GROUPS.items()}})
        save_json({"unit": "patient", "source": "cctr_generate_acdc_population: first patients train, then val, "
                   "then test (groups in turn)", **split,
                   "cases": {part: [c for p in ids for c in patients[p]] for part, ids in split.items()}},
                  folder / "splits.json")
        save_json({patient_id(i): info for i, info in enumerate(infos)}, folder / "patients.json")
    return Path(raw_root) / dataset_folder_name(dataset_id, name)


def write_preview_png(path: Path, seed: int = 0, config: AcdcPopulationConfig | None = None) -> Path:
    """One row per group (its first patient): ED and ES, each as a mid-ventricular slice and a long-axis cut, in the
    configuration's appearance version (named in the title when it is not 1)."""
    from dataset_conversion.phantom import PREVIEW_COLOURS
    from dataset_conversion.preview import write_frames_preview

    config = config or AcdcPopulationConfig()
    rows = []
    for index in range(len(GROUPS)):
        patient = generate_patient(index, case_seed(seed, index), config)
        rows.append((f"{patient.patient} {patient_group(index)} {patient.scanner.field_strength_t:g} T",
                     [(frame, patient.images[frame], patient.labels[frame]) for frame in FRAMES], patient.geometry))
    version = "" if config.appearance_version == 1 else f" (appearance version {config.appearance_version})"
    return write_frames_preview(path, rows, PREVIEW_COLOURS,
                                f"ACDC-like population{version}: RV (blue), myocardium (yellow), LV (red)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cctr_generate_acdc_population",
        description="Write a synthetic ACDC-like cardiac MRI population (groups NOR, DCM, HCM, MINF, ARV; ED and ES "
                    "frames; labels RV 1, MYO 2, LV 3) split into imagesTr / imagesVal / imagesTs by patient.")
    add_generator_arguments(parser, 3, "ACDCPopulation", "only write a PNG of one patient per group (ED and ES), then exit")
    parser.add_argument("--patients", type=int, default=100, help="patients, the groups in turn (default 100)")
    parser.add_argument("--split", type=float, nargs=3, default=list(DEFAULT_SPLIT_FRACTIONS),
                        metavar=("TRAIN", "VAL", "TEST"), help="fractions of patients per part (default 0.7 0.1 0.2)")
    parser.add_argument("--tiny", action="store_true", help="80x80 px, 6-9 thick slices: a small dataset for tests")
    parser.add_argument("-np", "--num-processes", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--appearance-version", type=int, choices=APPEARANCE_VERSIONS, default=1,
                        help="image appearance model: 1, one tissue-intensity model for all patients (default; every "
                             "documented result used it), or 2, adding per-patient contrast, coil shading, 3 T "
                             "bands and breath-hold misregistration (documentation/phantom.md)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    config = AcdcPopulationConfig.tiny() if args.tiny else AcdcPopulationConfig()
    config = config.with_changes(appearance_version=args.appearance_version)
    if args.preview is not None:
        print(f"preview written to {write_preview_png(args.preview, seed=args.seed, config=config)}")
        return
    args.raw_root = raw_root_or_default(args.raw_root)
    try:
        folder = generate_acdc_population_dataset(args.raw_root, args.dataset_id, args.name, args.patients, args.split,
                                                  args.seed, args.file_ending, args.overwrite, config,
                                                  args.num_processes)
    except (FileExistsError, ValueError) as error:
        raise SystemExit(f"cctr_generate_acdc_population: error: {error}") from None
    print(f"wrote {folder}")


if __name__ == "__main__":
    main()
