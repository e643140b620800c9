"""Deciding a trained run's post-processing from data its user has, and writing ``postprocessing.json``.

Evidence, both on the preprocessed grid of the run's dataset (``$cctr_preprocessed/DatasetXXX_Name/2d/``):

- ``labeled_cases``: the run's own training labels (``labeled_cases.json`` of the model folder);
- ``registered_labels``: for every unlabeled case of the run, the label of its BRS-selected labeled case
  warped onto it (the registrations the run was trained with, ``registration_method`` of config.json).
  Only registrations that exist are used; none are computed here. A dataset without them (registration
  ``none``) is decided from the training labels alone.

Never used: the labels that ``--labeled N`` hides (a real user does not have them) and the test-set
and validation predictions of ``cctr_train --val`` in ``test/`` and ``validation/`` (choosing on them is what this
avoids).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from cctrnet import paths
from cctrnet.inference.model_folder import ModelFolder
from cctrnet.postprocessing.decision import (
    SOURCE_LABELED,
    SOURCE_REGISTERED,
    PostprocessingSettings,
    decide_postprocessing,
)
from cctrnet.postprocessing.plan import PostprocessingPlan, save_postprocessing
from cctrnet.postprocessing.topology import TopologyEvidence, measure_topology
from cctrnet.utilities.file_io import load_json

LABELED_CASES_FILE = "labeled_cases.json"
RULE_TEXT = ("per structure (each class, and the whole foreground): keep its largest connected component when "
             "every evidence source with a volume containing it finds it one component (largest component >= "
             "single_component_min_share of its voxels) in at least the source's required fraction of those "
             "volumes; else none")


class PostprocessingDecisionError(RuntimeError):
    """The evidence cannot be read; the message names the file or folder."""


def labeled_label_maps(data_folder: Path, case_ids: Sequence[str]) -> Iterator[tuple[str, np.ndarray]]:
    """(case id, training label (z, y, x) of class indices) of each labeled case, one at a time."""
    from cctrnet.preprocessing.case_storage import case_files, load_preprocessed_case

    for case_id in case_ids:
        if not case_files(data_folder, case_id)["properties"].exists():
            raise PostprocessingDecisionError(f"{case_files(data_folder, case_id)['properties']}: labeled case "
                                              f"{case_id} of the run is not preprocessed")
        _, seg, _ = load_preprocessed_case(data_folder, case_id)
        if seg is None:
            raise PostprocessingDecisionError(f"{case_files(data_folder, case_id)['seg']}: labeled case {case_id} "
                                              "has no preprocessed label")
        yield case_id, np.asarray(seg)


def registered_label_maps(preprocessed_dataset_folder: Path, labeled_cases: Sequence[str], method: str,
                          configuration: str, excluded: Sequence[str] = ()
                          ) -> tuple[list[str], Callable[[], Iterator[tuple[str, np.ndarray]]]]:
    """(unlabeled cases without a usable registration, a generator of (case id, registered label)); cases in
    ``excluded`` (a run's held-out validation cases) are left out altogether."""
    from cctrnet.registration import brs
    from cctrnet.registration.training_access import load_training_registration

    registration = load_training_registration(preprocessed_dataset_folder, labeled_cases, method, configuration)
    left_out = set(excluded)
    selected = {u: q for u, q in registration.selected_labeled.items() if u not in left_out}
    missing = sorted(u for u, q in selected.items() if q is None)
    usable = sorted(u for u, q in selected.items() if q is not None)

    def maps() -> Iterator[tuple[str, np.ndarray]]:
        for unlabeled in usable:
            # brs.registered_label, not registration.registered_label: the latter keeps every map in memory
            labeled = registration.selected_labeled[unlabeled]
            yield unlabeled, brs.registered_label(registration.data_folder, registration.store, unlabeled, labeled)

    return missing, maps


def held_out_validation_cases(model_folder: Path) -> list[str]:
    """The training cases a run held out for validation (validation_cases.json): nothing of theirs, not even
    their images, may decide the post-processing that is then validated on them."""
    from cctrnet.training.validation_split import SOURCE_HELD_OUT, VALIDATION_CASES_JSON

    path = Path(model_folder) / VALIDATION_CASES_JSON
    if not path.is_file():
        return []
    record = load_json(path)
    return sorted(record.get("cases") or []) if record.get("source") == SOURCE_HELD_OUT else []


def determine_postprocessing(model_folder: str | os.PathLike, preprocessed_root: str | os.PathLike | None = None,
                             settings: PostprocessingSettings | None = None, use_registration: bool = True,
                             log: Callable[[str], Any] = print) -> PostprocessingPlan:
    """Decide the run's post-processing, write ``model_folder/postprocessing.json`` and return the plan."""
    settings = settings or PostprocessingSettings()
    model = ModelFolder.load(model_folder)
    labeled_file = model.path / LABELED_CASES_FILE
    if not labeled_file.exists():
        raise PostprocessingDecisionError(f"{labeled_file}: missing; the trainer writes it (a model folder of an "
                                          "older version: write {\"labeled\": [case ids]} into it)")
    run_cases = load_json(labeled_file)
    labeled = sorted(run_cases.get("labeled") or [])
    if not labeled:
        raise PostprocessingDecisionError(f"{labeled_file}: names no labeled case")
    dataset_name = model.config.get("dataset_name") or model.dataset_name
    preprocessed_dataset = Path(preprocessed_root or paths.preprocessed_folder()) / dataset_name
    configuration = model.configuration["data_identifier"]
    data_folder = preprocessed_dataset / configuration
    if not data_folder.is_dir():
        raise PostprocessingDecisionError(f"{data_folder}: preprocessed cases of {dataset_name} not found "
                                          "(set cctr_preprocessed to the folder the run was trained from)")

    class_indices = list(range(1, len(model.label_values)))
    evidence: list[TopologyEvidence] = [measure_topology(
        SOURCE_LABELED, labeled_label_maps(data_folder, labeled), class_indices, settings.connectivity,
        settings.single_component_min_share)]
    method = (model.config.get("settings") or {}).get("registration_method", "affine")
    if method == "auto":  # the choice the registration stage recorded for this labeled set
        from cctrnet.registration.method_choice import resolved_method

        method = resolved_method(preprocessed_dataset / "registration" / configuration, labeled) or "affine"
    registration_record: dict[str, Any] = {"method": method}
    if not use_registration:
        registration_record["not_used"] = "switched off"
    elif method == "none":
        registration_record["not_used"] = "the run has no registration"
    else:
        held_out = held_out_validation_cases(model.path)
        missing, maps = registered_label_maps(preprocessed_dataset, labeled, method, configuration, held_out)
        if held_out:
            registration_record["held_out_validation_cases_left_out"] = held_out
        registered = measure_topology(SOURCE_REGISTERED, maps(), class_indices, settings.connectivity,
                                      settings.single_component_min_share)
        registration_record.update(volumes=len(registered.case_ids), unlabeled_without_registration=missing)
        if registered.case_ids:
            evidence.append(registered)
        else:
            registration_record["not_used"] = f"no registration of the labeled cases onto an unlabeled case " \
                                               f"({method}) in {preprocessed_dataset}"

    names = {int(v): name for name, v in model.dataset_json["labels"].items()}
    plan, records = decide_postprocessing(evidence, model.label_values, names, settings)
    path = save_postprocessing(plan, model.path, names, records, extra={
        "rule": RULE_TEXT,
        "settings": settings.to_dict(),
        "sources": {SOURCE_LABELED: labeled, SOURCE_REGISTERED: registration_record},
        "held_out_check": "not made: the decision never reads predictions (every labeled case trains the model or is "
                          "held out for validation; validation/ and test/ predictions are never used to decide)",
    })
    used = ", ".join(f"{e.source} ({len(e.case_ids)} volumes)" for e in evidence)
    log(f"post-processing decided from {used}: {plan.describe(names)}; written to {path}")
    return plan
