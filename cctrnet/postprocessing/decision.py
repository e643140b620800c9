"""Choosing the rules from topology evidence: thresholds and the rule, nothing read from disk.

Rule (per class, and the same for the whole foreground): keep the largest component when every evidence
source that has at least ``min_volumes_per_source`` volumes containing the structure finds it one
component in at least that source's required fraction of those volumes; otherwise "none". No source with
such volumes: "none". Requiring every source to agree is deliberate: a wrong "keep the largest" deletes true
anatomy, a wrong "none" only leaves the strays that the prediction had anyway.

Sources: ``registered_labels`` (the run's labeled cases warped onto every unlabeled case; "nearly always
one component", so a fraction below 1 is tolerated: a warp can clip a structure at the field of view) and
``labeled_cases`` (the run's own training labels: one component in every one of them).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

from cctrnet.postprocessing.components import CONNECTIVITY_CHOICES, DEFAULT_CONNECTIVITY
from cctrnet.postprocessing.plan import RULE_LARGEST_COMPONENT, RULE_NONE, PostprocessingPlan
from cctrnet.postprocessing.topology import FOREGROUND, TopologyEvidence

SOURCE_REGISTERED = "registered_labels"
SOURCE_LABELED = "labeled_cases"


@dataclass(frozen=True)
class PostprocessingSettings:
    """Thresholds of the decision (documentation/prediction.md, "Post-processing")."""

    connectivity: int = DEFAULT_CONNECTIVITY  # scipy rank-3 connectivity, 3 = 26 neighbours (components.py)
    # a structure is "one component" in a volume when its largest component holds this share of its voxels:
    # a residual piece of at most 5% costs at most ~5% of that class's Dice if a prediction had it and it is removed
    single_component_min_share: float = 0.95
    # fraction of a source's volumes (those containing the structure) in which it must be one component
    registered_min_fraction: float = 0.9
    labeled_min_fraction: float = 1.0
    min_volumes_per_source: int = 1  # a source with fewer volumes containing the structure is not used for it

    def __post_init__(self) -> None:
        if self.connectivity not in CONNECTIVITY_CHOICES:
            raise ValueError(f"connectivity must be one of {CONNECTIVITY_CHOICES}, got {self.connectivity!r}")
        for name in ("single_component_min_share", "registered_min_fraction", "labeled_min_fraction"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in (0, 1], got {getattr(self, name)!r}")
        if self.min_volumes_per_source < 1:
            raise ValueError(f"min_volumes_per_source must be at least 1, got {self.min_volumes_per_source!r}")

    def required_fraction(self, source: str) -> float:
        if source == SOURCE_REGISTERED:
            return self.registered_min_fraction
        if source == SOURCE_LABELED:
            return self.labeled_min_fraction
        raise ValueError(f"unknown evidence source {source!r}; known: {SOURCE_REGISTERED}, {SOURCE_LABELED}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_structure(key: int | str, evidence: Sequence[TopologyEvidence], settings: PostprocessingSettings
                     ) -> tuple[str, dict[str, Any]]:
    """(rule, what decided it) for a class index or ``FOREGROUND``."""
    record: dict[str, Any] = {}
    verdicts = []
    for source in evidence:
        topology = source.structure(key)
        required = settings.required_fraction(source.source)
        used = topology.volumes >= settings.min_volumes_per_source
        passes = used and topology.fraction_single >= required
        record[source.source] = {**topology.to_dict(), "required_fraction": required, "used": used,
                                 "one_component": passes if used else None}
        if used:
            verdicts.append(passes)
    if not verdicts:
        record["reason"] = "no evidence source has a volume with this structure"
        return RULE_NONE, record
    if all(verdicts):
        record["reason"] = "one component in every source used"
        return RULE_LARGEST_COMPONENT, record
    record["reason"] = "several components in at least one source"
    return RULE_NONE, record


def decide_postprocessing(evidence: Sequence[TopologyEvidence], label_values: Sequence[int],
                          label_names: Mapping[int, str], settings: PostprocessingSettings
                          ) -> tuple[PostprocessingPlan, dict[str, Any]]:
    """The plan and its evidence by structure name ("foreground" and each class name).

    Evidence counts class indices (i = the i-th smallest label value, as in the preprocessed files); the
    plan speaks label values, as in the written predictions.
    """
    values = sorted(int(v) for v in label_values)
    foreground_rule, foreground_record = decide_structure(FOREGROUND, evidence, settings)
    records: dict[str, Any] = {FOREGROUND: foreground_record}
    class_rules = {}
    for index, value in enumerate(values):
        if index == 0:
            continue
        rule, records[label_names.get(value, str(value))] = decide_structure(index, evidence, settings)
        class_rules[value] = rule
    return PostprocessingPlan(foreground_rule, class_rules, settings.connectivity), records
