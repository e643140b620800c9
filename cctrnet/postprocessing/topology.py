"""How often each structure is one connected component across a set of label maps (one evidence source).

A label map holds class indices 0..n-1 on a preprocessed grid (training labels, or registered labels with
-1 where the warp left the atlas; -1 counts as "not this class"). A structure counts as one component in a
volume when its largest component holds at least ``single_component_min_share`` of its voxels, so specks
that nearest-neighbour warping or labelling leaves do not hide a shape that is one piece.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from cctrnet.postprocessing.components import largest_component_share

FOREGROUND = "foreground"  # key of the whole foreground (every class > 0 together)


@dataclass
class StructureTopology:
    """Counts for one structure: volumes that contain it, and those in which it is one component."""

    volumes: int = 0
    single_component: int = 0
    several_components: list[str] = field(default_factory=list)  # case ids
    largest_shares: list[float] = field(default_factory=list)

    @property
    def fraction_single(self) -> float | None:
        return self.single_component / self.volumes if self.volumes else None

    def add(self, case_id: str, share: float | None, single_component_min_share: float) -> None:
        if share is None:  # the structure is absent from this volume: no evidence either way
            return
        self.volumes += 1
        self.largest_shares.append(share)
        if share >= single_component_min_share:
            self.single_component += 1
        else:
            self.several_components.append(case_id)

    def to_dict(self) -> dict[str, Any]:
        return {"volumes_with_structure": self.volumes, "volumes_one_component": self.single_component,
                "fraction_one_component": self.fraction_single,
                "min_largest_component_share": min(self.largest_shares) if self.largest_shares else None,
                "cases_with_several_components": self.several_components}


@dataclass
class TopologyEvidence:
    """One source's counts per class index and for the whole foreground."""

    source: str
    classes: dict[int, StructureTopology]
    foreground: StructureTopology
    case_ids: list[str] = field(default_factory=list)

    def structure(self, key: int | str) -> StructureTopology:
        """Counts of a class index or ``FOREGROUND``; a class this source did not measure has none."""
        return self.foreground if key == FOREGROUND else self.classes.get(key, StructureTopology())


def measure_topology(source: str, label_maps: Iterable[tuple[str, np.ndarray]], class_indices: Sequence[int],
                     connectivity: int, single_component_min_share: float) -> TopologyEvidence:
    """Count, over ``(case_id, label map (z, y, x) of class indices)`` pairs, how often each class
    (``class_indices``, background excluded) and the foreground are one connected component."""
    evidence = TopologyEvidence(source, {c: StructureTopology() for c in class_indices}, StructureTopology())
    for case_id, label_map in label_maps:
        label_map = np.asarray(label_map)
        evidence.case_ids.append(case_id)
        for index in class_indices:
            share = largest_component_share(label_map == index, connectivity)
            evidence.classes[index].add(case_id, share, single_component_min_share)
        share = largest_component_share(label_map > 0, connectivity)
        evidence.foreground.add(case_id, share, single_component_min_share)
    return evidence
