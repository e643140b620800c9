"""Means over cases and classes, the printed table, and JSON-safe numbers for summary.json."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np


def mean_per_class(per_case: Sequence[Mapping[str, Any]], labels: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    """Mean over cases of each class's Dice and HD95; NaN entries (both masks empty) are left out.

    ``per_case`` holds records with ``record["classes"][class_name]`` as made by ``evaluate_case``.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, label in labels.items():
        entries = [record["classes"][name] for record in per_case if name in record["classes"]]
        dice = _finite([e["dice_percent"] for e in entries])
        hd95 = _finite([e["hd95_mm"] for e in entries])
        out[name] = {
            "label": int(label),
            "dice_percent": _mean(dice),
            "hd95_mm": _mean(hd95),
            "num_cases": len(entries),
            "num_cases_in_dice_mean": len(dice),
            "num_cases_in_hd95_mean": len(hd95),
            "num_cases_both_empty": sum(e["ref_empty"] and e["pred_empty"] for e in entries),
            "num_cases_reference_empty_prediction_not": sum(e["ref_empty"] and not e["pred_empty"] for e in entries),
            "num_cases_prediction_empty_reference_not": sum(e["pred_empty"] and not e["ref_empty"] for e in entries),
            "volume_ref_ml_mean": _mean([e["volume_ref_ml"] for e in entries]),
            "volume_pred_ml_mean": _mean([e["volume_pred_ml"] for e in entries]),
        }
    return out


def overall_mean(per_class: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Mean over classes of the per-class means (classes whose mean is undefined are left out)."""
    dice = _finite([c["dice_percent"] for c in per_class.values()])
    hd95 = _finite([c["hd95_mm"] for c in per_class.values()])
    return {
        "dice_percent": _mean(dice),
        "hd95_mm": _mean(hd95),
        "num_classes_in_dice_mean": len(dice),
        "num_classes_in_hd95_mean": len(hd95),
    }


def format_table(per_class: Mapping[str, Mapping[str, Any]], mean: Mapping[str, Any]) -> str:
    """One aligned row per class and a final mean row: Dice % and HD95 mm."""
    header = ("class", "label", "Dice %", "HD95 mm", "cases")
    rows = [
        (name, str(c["label"]), _fmt(c["dice_percent"]), _fmt(c["hd95_mm"]), str(c["num_cases"]))
        for name, c in per_class.items()
    ]
    rows.append(("mean", "", _fmt(mean["dice_percent"]), _fmt(mean["hd95_mm"]), ""))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *[line(r) for r in rows[:-1]], rule, line(rows[-1])])


def json_safe(value: Any) -> Any:
    """Replace NaN and infinities by None (null) recursively, since JSON has no NaN."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2f}"
