"""The conductor of ``cctr_plan_and_preprocess``: the stages below it, in order, for one dataset.

1. integrity check and fingerprint (one read of every training case; nothing is written on a problem)
2. plan for the chosen hardware -> ``plans.json``
3. preprocessing of every training case -> ``<configuration>/``, and of every validation case of ``imagesVal``
   (with its ``labelsVal`` label) -> ``<configuration>_validation/``, which registration and training never list
Outputs go to ``cctr_preprocessed/DatasetXXX_Name/`` next to a copy of the raw dataset.json. It lives above the
stage folders (fingerprint, planning, preprocessing) because it imports all three; each stage imports only what
lies below it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from cctrnet import paths
from cctrnet.dataset.integrity import DatasetIntegrityError
from cctrnet.dataset.raw_dataset import DatasetNotFoundError, RawDataset, find_dataset_folder
from cctrnet.utilities.file_io import load_json, save_json


class PipelineError(RuntimeError):
    """A dataset could not be planned or preprocessed; the message says why and names the files."""


def plan_for_device(fingerprint: dict[str, Any], dataset_json: dict[str, Any], device_name: str,
                    settings) -> dict[str, Any]:
    from cctrnet.planning.planner import plan_experiment
    from cctrnet.utilities.device import gpu_description, resolve_device

    device = resolve_device(device_name)
    if device.type == "cuda":
        gpu_name, memory_gb = gpu_description(device)
        return plan_experiment(fingerprint, dataset_json, "cuda", settings, gpu_name=gpu_name,
                               gpu_total_memory_gb=memory_gb)
    return plan_experiment(fingerprint, dataset_json, "cpu", settings)


def describe_plan(plans: dict[str, Any]) -> str:
    c = plans["configurations"]["2d"]
    cost = c["estimated_cost"]
    device = plans["planned_for"]["device"]
    if device == "cpu":
        budget = f"estimated {cost['step_seconds_both_branches']} s per step on the reference CPU"
    else:
        budget = f"estimated {cost['memory_gb_both_branches']} GB of {plans['planned_for']['gpu_memory_target_gb']} GB"
    return (f"  planned for {device}: in-plane spacing {c['spacing_yx'][0]:.3g} x {c['spacing_yx'][1]:.3g} mm, "
            f"patch {c['patch_size_yx'][0]} x {c['patch_size_yx'][1]}, batch {c['batch_size']} "
            f"({c['labeled_per_batch']} labeled + {c['unlabeled_per_batch']} unlabeled)\n"
            f"  branch A {c['branch_a']['network_class']} {c['branch_a']['kwargs']['features_per_stage']}, "
            f"branch B {c['branch_b']['network_class']}; {budget}")


def plan_and_preprocess_dataset(identifier: str, settings=None, device_name: str = "auto", num_processes: int = 1,
                                preprocess: bool = True, progress: bool = True) -> Path:
    """Run the stages for one dataset; returns its preprocessed folder."""
    from cctrnet.fingerprint.extract import extract_fingerprint
    from cctrnet.preprocessing.case_storage import validation_folder_name
    from cctrnet.preprocessing.preprocessor import preprocess_dataset

    try:
        raw_folder = find_dataset_folder(identifier, paths.raw_folder())
    except DatasetNotFoundError as error:
        raise PipelineError(str(error)) from None
    print(f"[{raw_folder.name}] checking and fingerprinting {raw_folder}")
    try:
        fingerprint = extract_fingerprint(raw_folder, num_processes=num_processes, progress=progress)
    except DatasetIntegrityError as error:
        raise PipelineError(str(error)) from None
    raw = RawDataset.load(raw_folder)
    out = paths.preprocessed_folder() / raw_folder.name
    print(f"  {fingerprint['num_training_cases']} training case(s): {fingerprint['num_labeled_cases']} labeled, "
          f"{fingerprint['num_unlabeled_cases']} unlabeled; writing to {out}")
    save_json(raw.dataset_json, out / paths.DATASET_JSON)
    save_json(fingerprint, out / paths.FINGERPRINT_JSON)

    plans = plan_for_device(fingerprint, raw.dataset_json, device_name, settings)
    save_json(plans, out / paths.PLANS_JSON)
    print(f"[{raw_folder.name}] plan written to {out / paths.PLANS_JSON}\n{describe_plan(plans)}")
    if not preprocess:
        return out
    configuration = plans["configurations"]["2d"]
    labels = sorted(raw.dataset_json["labels"].values())
    counts = preprocess_dataset(raw.training_cases(), configuration, labels, out / configuration["data_identifier"],
                                num_processes=num_processes, progress=progress)
    print(f"[{raw_folder.name}] preprocessed {counts['preprocessed']} case(s), "
          f"{counts['skipped_up_to_date']} already up to date, in {out / configuration['data_identifier']}")
    validation_cases = raw.validation_cases()
    if validation_cases:  # never registered, never sampled for training: a folder of their own
        validation_folder = out / validation_folder_name(configuration["data_identifier"])
        counts = preprocess_dataset(validation_cases, configuration, labels, validation_folder,
                                    num_processes=num_processes, progress=progress)
        print(f"[{raw_folder.name}] preprocessed {counts['preprocessed']} validation case(s) of "
              f"{raw_folder / 'imagesVal'}, {counts['skipped_up_to_date']} already up to date, in {validation_folder}")
    return out


def load_plans(preprocessed_dataset_folder: Path) -> dict[str, Any]:
    path = Path(preprocessed_dataset_folder) / paths.PLANS_JSON
    if not path.exists():
        raise PipelineError(f"{path}: no plan yet (run cctr_plan_and_preprocess -d {Path(preprocessed_dataset_folder).name})")
    return load_json(path)
