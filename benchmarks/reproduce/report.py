"""Table outputs: <work>/reproduce_<table>.{json,md} (copied to benchmarks/results/), bar charts and curves
(documentation/images/reproduce_<table>.png, reproduce_pseudo_labels.png)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Sequence

from benchmarks.reproduce.figures import bar_chart, budget_curve, pseudo_label_curves
from benchmarks.reproduce.jobs import Job, Selection, table_iterations
from benchmarks.reproduce.record_validity import tabled_results
from benchmarks.reproduce.store import WorkFolder, read_json
from benchmarks.reproduce.tables import build_table, group_blocks, render_group_markdown, render_markdown
from cctrnet.utilities.file_io import save_json

REPOSITORY = Path(__file__).resolve().parent.parent.parent
PUBLISHED_RESULTS = REPOSITORY / "benchmarks" / "results"
PUBLISHED_IMAGES = REPOSITORY / "documentation" / "images"
TITLES = {"core": "Core table: LS, CPS, CTS, CCT-R, registration only, nnU-Net v2, fully supervised",
          "ablation": "Ablation (the paper's Table 5): CTS plus RSL, BRS, SCL, REPS",
          "registration": "CCT-R with affine and with affine + deformable registered labels and point maps",
          "robustness": "CCT-R with registered labels beyond the paper: a fading or lower w_rs, a majority of atlases",
          "budget": "Budget curve: LS, CTS and CCT-R at several training lengths"}


def budget_lines(work: WorkFolder, jobs: Sequence[Job], results: dict[str, dict], args: Any,
                 iterations: int | Sequence[int]) -> list[str]:
    """``iterations``: the one budget of a table, or the budgets of the budget table."""
    prepared = {d: read_json(work.prepare_path(d)) or {} for d in sorted({j.dataset for j in jobs})}
    if isinstance(iterations, int):
        length = f"{iterations} training iterations for every trained method"
        quality = f"every {max(1, iterations // 10)} iterations"
    else:
        length = f"{' / '.join(str(i) for i in iterations)} training iterations (one row each)"
        quality = "at 10 points of each run"
    lines = [f"**Budget**: {length} (cctrnet trainers; nnU-Net num_epochs x num_iterations_per_epoch = the same "
             f"number), CPU, this machine; pseudo-label Dice {quality}. Prediction mirroring "
             f"{'off' if args.disable_tta else 'on'} for every method."]
    for dataset, p in prepared.items():
        if p.get("plan"):
            plan = p["plan"]
            lines.append(f"- {dataset} ({p.get('dataset_name')}): cctrnet CPU plan (--cpu-step-seconds "
                         f"{p.get('cpu_step_seconds')}): spacing {[round(s, 2) for s in plan['spacing_yx']]} mm, "
                         f"patch {plan['patch_size_yx']}, batch {plan['batch_size']} ({plan['labeled_per_batch']} "
                         f"labeled + {plan['unlabeled_per_batch']} unlabeled), branch A {p.get('branch_a')}, "
                         f"branch B {p.get('branch_b')}.")
    nnunet = [r for r in results.values() if r.get("status") == "ok" and r.get("nnunet_plan")]
    if nnunet:
        plan = nnunet[0]["nnunet_plan"]
        if plan.get("mode") == "ours":
            lines.append(f"- nnU-Net v2 2d: its own pipeline (preprocessing, augmentation, deep supervision, SGD, "
                         f"poly schedule) with cctrnet's spacing, patch, batch and branch-A topology put into its "
                         f"plans.json ({plan['used_plan']}), because its own 2d plan ({plan['nnunet_own_plan']}) is "
                         "too slow on 2 CPU cores for this budget; trained on the labeled cases only.")
        else:
            lines.append(f"- nnU-Net v2 2d: its own 2d plan ({plan['used_plan']}); trained on the labeled cases only.")
    return lines


def patient_groups(work: WorkFolder, dataset: str) -> dict[str, str]:
    """{case id: group} from the raw dataset's patients.json (the ACDC-like generator writes one), else {}."""
    prepared = read_json(work.prepare_path(dataset)) or {}
    patients = read_json(work.raw / prepared.get("dataset_name", "-") / "patients.json") or {}
    return {case: p["group"] for p in patients.values() if isinstance(p, dict) and p.get("group")
            for case in (p.get("cases") or {}).values()}


def with_per_case_dice(work: WorkFolder, results: dict[str, dict]) -> dict[str, dict]:
    """``results`` with per-volume test Dice filled in from the run folder's summary.json for runs recorded
    before the job record kept it (the record itself is not rewritten)."""
    from benchmarks.reproduce.runner import metrics_from_summary

    out = dict(results)
    for job_id, result in results.items():
        metrics = result.get("metrics") or {}
        if result.get("status") != "ok" or metrics.get("per_case_dice"):
            continue
        summary = read_json(work.run_folder(job_id) / "predictions" / "summary.json")
        if summary and summary.get("mean_per_class"):
            out[job_id] = {**result, "metrics": {**metrics, **metrics_from_summary(summary)}}
    return out


def machine() -> dict[str, Any]:
    from benchmarks.machine_info import machine_info

    return machine_info()


def write_table_outputs(table: str, selection: Selection, jobs: Sequence[Job], work: WorkFolder, args: Any,
                        iterations: int, publish: bool) -> str:
    results, notes = tabled_results(work, jobs)  # no record trained under other defaults in a row not its own
    blocks = build_table(table, selection, iterations, results)
    wanted = {jid for block in blocks for row in block["rows"] for jid in row["job_ids"]}
    budgets = table_iterations(table, selection, iterations)
    lines = budget_lines(work, [j for j in jobs if j.job_id in wanted], results, args,
                         budgets if table == "budget" else iterations)
    lines += [f"Trained under other defaults: {note}." for note in notes
              if note.split(":", 1)[0] in wanted]
    markdown = render_markdown(TITLES[table], blocks, lines)
    unprocessed = build_table(table, selection, iterations, results, "metrics_without_postprocessing")
    if any(row["n_seeds"] for block in unprocessed for row in block["rows"]):
        markdown += "\n" + render_markdown(
            TITLES[table] + " - without post-processing", unprocessed,
            ["The same runs' predictions before the model folder's postprocessing.json (cctr_predict "
             "--save-without-postprocessing); rows without a trained model (registration only, nnU-Net) are "
             "absent here."]).replace("# ", "## ", 1)
    by_group = group_blocks(blocks, with_per_case_dice(work, results),
                            {d: patient_groups(work, d) for d in selection.datasets})
    if any(row["n_seeds"] for block in by_group for row in block["rows"]):
        markdown += "\n" + render_group_markdown(TITLES[table] + " - by patient group (test, post-processed)",
                                                  by_group)
    validation = build_table(table, selection, iterations, results, "metrics_validation")
    if any(row["n_seeds"] for block in validation for row in block["rows"]):
        markdown += "\n" + render_markdown(
            TITLES[table] + " - validation patients", validation,
            ["The same runs on the validation volumes (imagesVal, with post-processing): the numbers that choose "
             "settings beyond the paper; the test tables above only report."]).replace("# ", "## ", 1)
    data = {"table": table, "selection": vars(selection), "iterations": iterations, "budget": lines,
            "command": " ".join(["python", "benchmarks/reproduce.py", *getattr(args, "argv", [])]),
            "arguments": {k: str(v) for k, v in vars(args).items()}, "machine": machine(),
            "prepare": {d: read_json(work.prepare_path(d)) for d in selection.datasets},
            "blocks": blocks, "blocks_without_postprocessing": unprocessed,
            "blocks_validation": validation, "blocks_by_group": by_group,
            "runs": {jid: results[jid] for jid in sorted(wanted) if jid in results}}
    json_path = work.root / f"reproduce_{table}.json"
    md_path = work.root / f"reproduce_{table}.md"
    save_json(data, json_path)
    md_path.write_text(markdown)
    if table == "budget":
        png = budget_curve(blocks, TITLES[table].split(":")[0], work.root / f"reproduce_{table}.png")
    else:
        png = bar_chart(blocks, TITLES[table].split(":")[0] + f" ({iterations} iterations)",
                        work.root / f"reproduce_{table}.png")
    if publish:
        PUBLISHED_RESULTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(json_path, PUBLISHED_RESULTS / json_path.name)
        shutil.copyfile(md_path, PUBLISHED_RESULTS / md_path.name)
        if png is not None:
            PUBLISHED_IMAGES.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(png, PUBLISHED_IMAGES / png.name)
    return markdown


def write_curves(selection: Selection, jobs: Sequence[Job], work: WorkFolder, publish: bool) -> Path | None:
    """Pseudo-label Dice curves of the selected core-table semi-supervised runs (all tables if none)."""
    results, _ = tabled_results(work, jobs)
    core = [results[j.job_id] for j in jobs if j.job_id in results and j.method.trainer in
            ("CPSTrainer", "CTSTrainer", "CCTRTrainer") and not j.method.settings]
    chosen = core or [results[j.job_id] for j in jobs if j.job_id in results]
    path = pseudo_label_curves(chosen, work.root / "reproduce_pseudo_labels.png")
    if path is not None and publish:
        PUBLISHED_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, PUBLISHED_IMAGES / path.name)
    return path
