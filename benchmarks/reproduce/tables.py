"""Mean and spread over seeds of every table row, and the markdown tables."""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from benchmarks.reproduce.jobs import PATIENT_DATASETS, Job, Selection, table_datasets, table_iterations, table_methods


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """(mean, sample standard deviation, n) of the finite values; std is None for fewer than 2."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return None, None, 0
    mean = sum(finite) / len(finite)
    if len(finite) < 2:
        return mean, None, len(finite)
    variance = sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)
    return mean, math.sqrt(variance), len(finite)


def aggregate_row(results: Sequence[dict[str, Any]], metrics_key: str = "metrics") -> dict[str, Any]:
    """Per-class and mean Dice / HD95 over the finished runs (one per seed) of one table row, from each
    run's ``metrics_key`` (``metrics``: as cctr_predict writes them; ``metrics_without_postprocessing``)."""
    ok = [dict(r, metrics=r[metrics_key]) for r in results if r.get("status") == "ok" and r.get(metrics_key)]
    classes: list[str] = []
    for r in ok:
        classes += [c for c in r["metrics"]["dice"] if c not in classes]
    row: dict[str, Any] = {"n_seeds": len(ok), "seeds": [r["job"]["seed"] for r in ok],
                           "failed": [r["job"]["seed"] for r in results if r.get("status") == "failed"],
                           "dice": {}, "hd95": {}}
    for metric in ("dice", "hd95"):
        for c in classes:
            m, s, n = mean_std(r["metrics"][metric].get(c) for r in ok)
            row[metric][c] = {"mean": m, "std": s, "n": n}
        m, s, n = mean_std(r["metrics"][f"mean_{metric}"] for r in ok)
        row[f"mean_{metric}"] = {"mean": m, "std": s, "n": n}
    return row


def build_table(table: str, selection: Selection, iterations: int, results: dict[str, dict],
                metrics_key: str = "metrics") -> list[dict[str, Any]]:
    """One block per dataset and N: its rows (method label -> aggregate over the selected seeds); the budget
    table has a row per method and budget, labelled "<method> @ <iterations> it", with ``iterations`` set."""
    blocks = []
    budgets = table_iterations(table, selection, iterations)
    for dataset in table_datasets(table, selection):
        for labeled in selection.labeled:
            rows = []
            for method in table_methods(table, selection):
                for budget in budgets:
                    # by id: rows whose settings make no difference for this N share a run (see Job.run_settings)
                    wanted = [Job(dataset, method, None if method.all_labels else labeled, seed, budget).job_id
                              for seed in selection.seeds]
                    runs = [results[i] for i in wanted if i in results]
                    label = f"{method.label} @ {budget} it" if len(budgets) > 1 else method.label
                    rows.append({"method": label, "method_label": method.label, "iterations": budget,
                                 "job_ids": wanted, **aggregate_row(runs, metrics_key)})
            blocks.append({"dataset": dataset, "labeled": labeled, "rows": rows})
    return blocks


def case_mean_dice(per_class: dict[str, float | None]) -> float | None:
    """A case's Dice averaged over its classes (the finite ones; None if it has none)."""
    return mean_std(per_class.values())[0]


def group_blocks(blocks: Sequence[dict[str, Any]], results: dict[str, dict], groups: dict[str, dict[str, str]],
                 metrics_key: str = "metrics") -> list[dict[str, Any]]:
    """Mean Dice by patient group of every row: per run, the mean over the group's cases of each case's
    class-mean Dice; then mean ± std over the seeds. ``groups``: dataset -> {case id: group}; blocks of a
    dataset without groups, or runs recorded before per-case Dice was kept, are left out."""
    out = []
    for block in blocks:
        case_group = groups.get(block["dataset"])
        if not case_group:
            continue
        names = sorted(set(case_group.values()))
        rows = []
        for row in block["rows"]:
            per_run: dict[str, list[float | None]] = {name: [] for name in names + ["all"]}
            used = 0
            for job_id in row["job_ids"]:
                run = results.get(job_id, {})
                cases = ((run.get(metrics_key) or {}).get("per_case_dice") if run.get("status") == "ok" else None)
                if not cases:
                    continue
                used += 1
                dice = {case: case_mean_dice(per_class) for case, per_class in cases.items()}
                for name in names:
                    per_run[name].append(mean_std(d for c, d in dice.items() if case_group.get(c) == name)[0])
                per_run["all"].append(mean_std(dice.values())[0])
            cells = {}
            for name, values in per_run.items():
                m, sd, n = mean_std(values)
                cells[name] = {"mean": m, "std": sd, "n": n}
            rows.append({"method": row["method"], "n_seeds": used, "groups": cells})
        out.append({"dataset": block["dataset"], "labeled": block["labeled"], "group_names": names, "rows": rows})
    return out


def labeled_text(dataset: str, labeled: int) -> str:
    """"1 labeled patient" where --labeled counts patients, else "2 labeled cases"."""
    unit = "patient" if dataset in PATIENT_DATASETS else "case"
    return f"{labeled} labeled {unit}{'s' if labeled != 1 else ''}"


def render_group_markdown(title: str, blocks: Sequence[dict[str, Any]]) -> str:
    lines = [f"## {title}", ""]
    for block in blocks:
        lines += [f"### {block['dataset']}, {labeled_text(block['dataset'], block['labeled'])}", ""]
        header = ["method", "n"] + block["group_names"] + ["all"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in block["rows"]:
            lines.append("| " + " | ".join([row["method"], str(row["n_seeds"])] + [
                format_value(row["groups"][g]) for g in block["group_names"] + ["all"]]) + " |")
        lines.append("")
    lines.append("Mean Dice % over each group's test volumes (every volume's Dice averaged over its classes first), "
                 "mean ± std over seeds; runs recorded before per-volume Dice was kept count as missing.")
    return "\n".join(lines) + "\n"


def format_value(cell: dict[str, Any] | None, digits: int = 1) -> str:
    if not cell or cell.get("mean") is None:
        return "–"
    text = f"{cell['mean']:.{digits}f}"
    if cell.get("std") is not None:
        text += f" ± {cell['std']:.{digits}f}"
    return text


def render_markdown(title: str, blocks: Sequence[dict[str, Any]], budget_lines: Sequence[str] = ()) -> str:
    """A markdown table per dataset and N: Dice % and HD95 mm per class and mean, mean ± std over seeds."""
    lines = [f"# {title}", ""] + [f"{line}" for line in budget_lines] + ([""] if budget_lines else [])
    for block in blocks:
        classes: list[str] = []
        for row in block["rows"]:
            classes += [c for c in row["dice"] if c not in classes]
        lines += [f"## {block['dataset']}, {labeled_text(block['dataset'], block['labeled'])}", ""]
        header = (["method", "n"] + [f"Dice {c}" for c in classes] + ["Dice mean"]
                  + [f"HD95 {c}" for c in classes] + ["HD95 mean"])
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for row in block["rows"]:
            n = str(row["n_seeds"]) + (f" ({len(row['failed'])} failed)" if row.get("failed") else "")
            cells = ([row["method"], n] + [format_value(row["dice"].get(c)) for c in classes]
                     + [format_value(row["mean_dice"])] + [format_value(row["hd95"].get(c)) for c in classes]
                     + [format_value(row["mean_hd95"])])
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Dice in %, HD95 in mm (cctr_evaluate on the test cases); mean ± sample std over seeds, "
                 "n = finished seeds; – = no finished run.")
    return "\n".join(lines) + "\n"
