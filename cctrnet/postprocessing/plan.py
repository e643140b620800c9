"""The post-processing a model folder asks for (``postprocessing.json``) and applying it to a label map.

Rules, nnU-Net's: keep only the largest connected component of the whole foreground (every label value
but 0 together), and/or per class keep only that class's largest component; everything else is "none".
The foreground rule runs first, then the class rules. Removed voxels become background (0), as in nnU-Net.

``postprocessing.json`` (written by :mod:`cctrnet.postprocessing.determine`, readable and editable)::

    {"format": 1, "connectivity": 3,
     "foreground": {"rule": "largest_component" | "none", "evidence": {...}},
     "classes": {"LV": {"label_value": 1, "rule": "largest_component" | "none", "evidence": {...}}, ...},
     ...}

Only ``connectivity`` and the ``rule`` / ``label_value`` entries are read back; the rest records why.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cctrnet.postprocessing.components import CONNECTIVITY_CHOICES, DEFAULT_CONNECTIVITY, largest_component
from cctrnet.utilities.file_io import load_json, save_json

POSTPROCESSING_FILE = "postprocessing.json"
FORMAT_VERSION = 1
RULE_LARGEST_COMPONENT = "largest_component"
RULE_NONE = "none"
RULES = (RULE_LARGEST_COMPONENT, RULE_NONE)
BACKGROUND_VALUE = 0


class PostprocessingFileError(ValueError):
    """A postprocessing.json that cannot be read or holds an unknown rule; the message names the file."""


@dataclass
class PostprocessingPlan:
    """Which rules to apply; ``class_rules`` maps label values (as written in the files) to a rule."""

    foreground_rule: str = RULE_NONE
    class_rules: dict[int, str] = field(default_factory=dict)
    connectivity: int = DEFAULT_CONNECTIVITY

    def __post_init__(self) -> None:
        unknown = [r for r in (self.foreground_rule, *self.class_rules.values()) if r not in RULES]
        if unknown:
            raise ValueError(f"unknown post-processing rule(s) {unknown}; known: {RULES}")
        if self.connectivity not in CONNECTIVITY_CHOICES:
            raise ValueError(f"connectivity must be one of {CONNECTIVITY_CHOICES}, got {self.connectivity!r}")
        if BACKGROUND_VALUE in self.class_rules:
            raise ValueError("the background (label 0) has no post-processing rule")

    @property
    def does_anything(self) -> bool:
        return self.foreground_rule != RULE_NONE or any(r != RULE_NONE for r in self.class_rules.values())

    def apply(self, segmentation_zyx: np.ndarray) -> np.ndarray:
        """A copy of the label map (label values, any grid) with the removed components set to background."""
        result = np.array(segmentation_zyx, copy=True)
        if self.foreground_rule == RULE_LARGEST_COMPONENT:
            foreground = result != BACKGROUND_VALUE
            result[foreground & ~largest_component(foreground, self.connectivity)] = BACKGROUND_VALUE
        for value, rule in sorted(self.class_rules.items()):
            if rule == RULE_LARGEST_COMPONENT:
                mask = result == value
                result[mask & ~largest_component(mask, self.connectivity)] = BACKGROUND_VALUE
        return result

    def describe(self, label_names: Mapping[int, str] | None = None) -> str:
        """``foreground: largest component; LV: largest component, RV: none``."""
        names = label_names or {}
        classes = ", ".join(f"{names.get(v, v)}: {_readable(r)}" for v, r in sorted(self.class_rules.items()))
        return f"foreground: {_readable(self.foreground_rule)}; {classes or 'no class rule'}"


def _readable(rule: str) -> str:
    return rule.replace("_", " ")


def save_postprocessing(plan: PostprocessingPlan, model_folder: str | os.PathLike, label_names: Mapping[int, str],
                        evidence: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``model_folder/postprocessing.json`` atomically; ``evidence`` maps "foreground" and class names
    to what decided them. Returns the file's path."""
    evidence = evidence or {}
    content: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "connectivity": plan.connectivity,
        "foreground": {"rule": plan.foreground_rule, "evidence": evidence.get("foreground")},
        "classes": {names: {"label_value": value, "rule": plan.class_rules.get(value, RULE_NONE),
                            "evidence": evidence.get(names)}
                    for value, names in sorted(label_names.items()) if value != BACKGROUND_VALUE},
        **(extra or {}),
    }
    path = Path(model_folder) / POSTPROCESSING_FILE
    save_json(content, path)
    return path


def load_postprocessing(model_folder: str | os.PathLike) -> PostprocessingPlan | None:
    """The plan in ``model_folder/postprocessing.json``; None when the folder has no such file."""
    path = Path(model_folder) / POSTPROCESSING_FILE
    if not path.exists():
        return None
    try:
        content = load_json(path)
        classes = content.get("classes", {})
        return PostprocessingPlan(
            foreground_rule=content.get("foreground", {}).get("rule", RULE_NONE),
            class_rules={int(entry["label_value"]): entry.get("rule", RULE_NONE) for entry in classes.values()},
            connectivity=int(content.get("connectivity", DEFAULT_CONNECTIVITY)),
        )
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        raise PostprocessingFileError(f"{path}: not a valid post-processing file ({error}); fix or delete it, "
                                      f"or run cctr_determine_postprocessing again") from error
