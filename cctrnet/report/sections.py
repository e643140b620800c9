"""The HTML of each report section, from :class:`~cctrnet.report.sources.ReportSources`.

Every section function returns ``(html, missing)``: the fragment and the sentences naming what it could not
show. A failure inside one section (an unreadable image, a network that no longer builds) is caught by the
page and named there; the other sections still render.
"""
from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cctrnet.report import figures
from cctrnet.report.sources import ReportSources

#: registered-label examples shown, failures listed before "... and N more"
REGISTRATION_EXAMPLES = 3
MAX_FAILURE_ROWS = 20
#: curves expected of a two-branch run; a one-branch run names the ones it lacks
TWO_BRANCH_CURVES = ("loss_sup_A", "loss_sup_B", "w_cps", "dice_pseudo_A", "dice_pseudo_B", "dice_registered")


def _number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    if isinstance(value, float) and (abs(value) >= 1e4 or 0 < abs(value) < 1e-3):
        return f"{value:.{digits}g}"
    return f"{value:.{digits}f}" if isinstance(value, float) else escape(str(value))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], sortable: bool = False, digits: int = 3) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(
        f"<td data-sort='{cell if isinstance(cell, (int, float)) and cell == cell else ''}'>{_number(cell, digits)}</td>"
        if isinstance(cell, (int, float, type(None))) else f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    kind = " class='sortable'" if sortable else ""
    return f"<table{kind}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def class_legend(sources: ReportSources) -> str:
    """Coloured chips naming the classes of the overlays."""
    labels = (sources.dataset_json or sources.plans or {}).get("labels", {})
    chips = "".join(f"<span class='chip' style='background:{figures.LABEL_COLOURS[(int(v) - 1) % len(figures.LABEL_COLOURS)]};"
                    f"color:#fff'>{escape(name)}</span>" for name, v in labels.items() if int(v) > 0)
    return f"<p class='legend'>{chips}</p>" if chips else ""


def missing_note(lines: Sequence[str]) -> str:
    return "".join(f"<p class='missing'>missing: {escape(line)}</p>" for line in lines)


def key_values(pairs: Sequence[tuple[str, Any]]) -> str:
    return "<dl class='kv'>" + "".join(f"<dt>{escape(k)}</dt><dd>{v if isinstance(v, str) else _number(v)}</dd>"
                                       for k, v in pairs) + "</dl>"


def dataset_section(sources: ReportSources) -> tuple[str, list[str]]:
    plans, config, dataset = sources.plans, sources.config, sources.dataset_json
    missing = []
    if plans is None and config is None:
        return "", ["plan and run settings (plans.json, config.json)"]
    plans = plans or {}
    configuration = plans.get("configurations", {}).get("2d", {})
    labels = (dataset or plans).get("labels", {})
    pairs = [("dataset", escape(str(plans.get("dataset_name") or (config or {}).get("dataset_name")))),
             ("labels", escape(", ".join(f"{name} = {value}" for name, value in labels.items()))),
             ("channels", escape(", ".join(f"{k}: {v}" for k, v in plans.get("channel_names", {}).items()))),
             ("training cases (dataset.json)", (dataset or {}).get("numTraining")),
             ("planned for", escape(str(plans.get("planned_for", {}).get("device", "–")))),
             ("median spacing (z, y, x) mm", escape(" × ".join(f"{v:.2f}" for v in plans.get("original_median_spacing_zyx", [])))),
             ("2D spacing (y, x) mm", escape(" × ".join(f"{v:.2f}" for v in configuration.get("spacing_yx", [])))),
             ("patch (y, x)", escape(" × ".join(str(v) for v in configuration.get("patch_size_yx", [])))),
             ("batch (labeled + unlabeled)", escape(f"{configuration.get('batch_size', '–')} ("
                                                    f"{configuration.get('labeled_per_batch', '–')} + "
                                                    f"{configuration.get('unlabeled_per_batch', '–')})"))]
    if config:
        pairs += [("trainer", escape(str(config.get("trainer")))), ("trained on", escape(str(config.get("device")))),
                  ("iterations (recorded length)", config.get("num_iterations"))]
    html = key_values(pairs)
    architectures = (config or {}).get("architectures") or {
        b: configuration[b] for b in ("branch_a", "branch_b") if b in configuration}
    if architectures:
        try:
            counts = figures.parameter_counts(architectures, max(1, len(plans.get("channel_names", {0: 0}))),
                                              int(plans.get("num_classes", len(labels) or 2)))
        except Exception as error:  # a report must not fail on a network that no longer builds
            counts = {}
            missing.append(f"parameter counts: the recorded networks do not build here ({error})")
        rows = [[escape(branch), escape(a.get("network_class", "?")), counts.get(branch)]
                for branch, a in architectures.items()]
        html += "<h3>Networks</h3>" + table(["branch", "network", "parameters"], rows)
    return html, missing


def cases_section(sources: ReportSources) -> tuple[str, list[str]]:
    chosen = sources.labeled_cases
    if chosen is None:
        return "", ["labeled / unlabeled cases (labeled_cases.json)"]
    labeled, unlabeled = chosen.get("labeled", []), chosen.get("unlabeled", [])
    hidden = set(chosen.get("hidden_labels", []))
    rule = chosen.get("rule", "given")
    html = (f"<p><b>{len(labeled)}</b> labeled and <b>{len(unlabeled)}</b> unlabeled training cases "
            f"(choice: <code>{escape(str(rule))}</code>, seed {escape(str(chosen.get('seed', '–')))}). "
            f"{len(hidden)} unlabeled case(s) have a hidden label, used only to measure pseudo-label quality.</p>")
    html += "<div class='chips'>" + "".join(f"<span class='chip labeled'>{escape(c)}</span>" for c in labeled)
    html += "".join(f"<span class='chip{' hidden' if c in hidden else ''}'>{escape(c)}</span>" for c in unlabeled)
    html += "</div><p class='legend'><span class='chip labeled'>labeled</span> <span class='chip hidden'>unlabeled, "\
            "hidden label</span> <span class='chip'>unlabeled</span></p>"
    suggestion = sources.suggestion
    if suggestion:
        ids = suggestion.get("ids", [])
        from cctrnet.registration.label_suggestion import entry_cases, near_ties_text

        already = {c for e in suggestion.get("already_labeled", []) for c in entry_cases(e)}
        html += (f"<p>cctr_suggest_labels suggested <b>{escape(', '.join(ids))}</b> "
                 f"({escape(str(suggestion.get('registration_method')))} registrations); "
                 f"this run labels {'exactly these' if set(ids) | already == set(labeled) else 'other cases'}.</p>")
        unit = suggestion.get("unit", "case")
        ties = [f"rank {e.get('rank')}: {near_ties_text(e, unit)}"
                for e in suggestion.get("suggested", []) if e.get("near_ties")]
        if ties:
            html += (f"<p>Near ties (coverage cost at most {100 * suggestion.get('near_tie_share', 0):g} % higher, "
                     f"an order that registering again can change): {escape('; '.join(ties))}.</p>")
        figure = sources.registration_folder / suggestion.get("figure", "suggested_labels.png")
        if figure.is_file():
            html += f"<img class='wide' src='{figures.file_uri(figure)}' alt='label suggestion'>"
    return html, []


def registration_section(sources: ReportSources) -> tuple[str, list[str]]:
    folder = sources.registration_folder
    if folder is None or not folder.is_dir():
        return "", []  # named by the sources reader
    report = sources.registration_report or {"methods": {}, "choices": _read_choices(folder)}
    html = ""
    rows = []
    for method, values in report.get("methods", {}).items():
        quality = values.get("quality") or {}
        rows.append([escape(method), values.get("num_pairs"), values.get("num_failed"),
                     values.get("seconds_per_pair_median"), values.get("registered_label_dice_mean"),
                     quality.get("folded_fraction_max"), quality.get("inverse_consistency_mm_p95_median")])
    if rows:
        html += table(["method", "pairs", "failed", "s / pair (median)", "registered-label Dice (mean)",
                       "folded fraction (max)", "inverse consistency mm p95 (median)"], rows)
    for key, choice in (report.get("choices") or {}).items():
        if isinstance(choice, dict):
            html += (f"<p>--registration auto for {escape(key)}: <b>{escape(str(choice.get('method')))}</b> "
                     f"({escape(str(choice.get('reason', '')))})</p>")
    failures = [(m, f) for m, values in report.get("methods", {}).items() for f in values.get("failures", [])]
    if failures:
        shown = [[escape(m), escape(f["moving"]), escape(f["fixed"]), escape(str(f.get("reason")))]
                 for m, f in failures[:MAX_FAILURE_ROWS]]
        html += "<h3>Failed pairs</h3>" + table(["method", "moving", "fixed", "reason"], shown)
        if len(failures) > MAX_FAILURE_ROWS:
            html += f"<p>… and {len(failures) - MAX_FAILURE_ROWS} more (registration_report.json)</p>"
    elif rows:
        html += "<p>No failed pair.</p>"
    method = _shown_method(report) if report.get("methods") or report.get("choices") else _stored_method(folder)
    dice_rows = [[escape(case), escape(v["labeled"]), v["dice"], "yes" if v.get("leave_one_out") else ""]
                 for case, v in sorted(report.get("methods", {}).get(method, {}).get("registered_label_dice", {}).items())]
    if dice_rows:
        candidates = len(report.get("labeled_cases", []))
        html += (f"<h3>Registered labels ({escape(method)}): Dice of the BRS-selected label per case, "
                 f"with the report's {candidates} labeled candidate(s)</h3>" + table(
                     ["case", "label from", "Dice", "leave-one-out"], dice_rows, sortable=True))
    png = folder / "registration_report.png"
    if png.is_file():
        html += f"<img class='wide' src='{figures.file_uri(png)}' alt='registration report'>"
    examples, missing = _registered_examples(sources, method) if method else ("", [])
    return html + examples, missing


def _read_choices(folder: Path) -> dict[str, Any]:
    from cctrnet.registration.method_choice import load_choices

    try:
        return load_choices(folder)
    except (OSError, ValueError):
        return {}


def _stored_method(folder: Path) -> str | None:
    for method in ("affine_deformable", "affine", "affine_bspline"):
        if (folder / method / "registered_labels").is_dir():
            return method
    return None


def _shown_method(report: dict[str, Any]) -> str:
    methods = list(report.get("methods", {}))
    chosen = [c.get("method") for c in (report.get("choices") or {}).values() if isinstance(c, dict)]
    for method in chosen + methods:
        if method in methods or not methods:
            return method
    return methods[0] if methods else "affine"


def _registered_examples(sources: ReportSources, method: str) -> tuple[str, list[str]]:
    from cctrnet.registration.volumes import load_label, load_volume

    chosen = sources.labeled_cases or {}
    labeled, unlabeled = set(chosen.get("labeled", [])), chosen.get("unlabeled", [])
    folder = sources.registration_folder / method / "registered_labels"
    files = sorted(p for p in folder.glob("*__from__*.npy")
                   if p.name.split("__from__")[0] in unlabeled and p.stem.split("__from__")[1] in labeled) \
        if folder.is_dir() else []
    if not files:
        return "", [f"registered-label examples: no registered label of this run's unlabeled cases in {folder}"]
    data_folder = sources.preprocessed_folder / "2d"
    one_per_case = list({p.name.split("__from__")[0]: p for p in reversed(files)}.values())[::-1]
    html = ("<h3>Registered labels on unlabeled cases</h3>" + class_legend(sources)
            + "<div class='thumbs'>")
    for path in one_per_case[:REGISTRATION_EXAMPLES]:
        unlabeled_case, source = path.stem.split("__from__")
        image, geometry = load_volume(data_folder, unlabeled_case, 0)
        warped = np.load(path)
        truth, _ = load_label(data_folder, unlabeled_case)
        panels = [(f"registered from {source}", warped)] + ([("hidden truth", truth)] if truth is not None else [])
        aspect = geometry.spacing_zyx[1] / geometry.spacing_zyx[2]
        uri = figures.overlay_row_uri(image, panels, figures.best_slice(truth, warped), aspect)
        html += f"<figure><img src='{uri}' alt='{escape(unlabeled_case)}'><figcaption>{escape(unlabeled_case)}</figcaption></figure>"
    return html + "</div>", []


def training_section(sources: ReportSources) -> tuple[str, list[str]]:
    history = sources.history
    if history is None:
        return "", []  # named by the sources reader
    if not history.curves:
        return "<p>The log has no iteration yet.</p>", ["training curves: training_log.txt holds no logged iteration"]
    missing = []
    branches = (sources.config or {}).get("branches", [])
    absent = [k for k in TWO_BRANCH_CURVES if k not in history.curves]
    if absent:
        why = "a one-branch run" if len(branches) == 1 else "not logged"
        missing.append(f"curves {', '.join(absent)} ({why})")
    uri = figures.curves_uri(history.curves)
    html = f"<img class='wide' src='{uri}' alt='training curves'>" if uri else ""
    rows = [[escape(key), points[-1][0], points[-1][1], min(v for _, v in points), max(v for _, v in points)]
            for key, points in sorted(history.curves.items())]
    html += "<h3>Last logged values</h3>" + table(["curve", "iteration", "last", "min", "max"], rows, sortable=True, digits=4)
    if history.events:
        html += "<details><summary>log events</summary><pre>" + escape("\n".join(history.events)) + "</pre></details>"
    return html, missing


def _case_scores(evaluation: dict[str, Any]) -> list[tuple[str, float, dict[str, Any]]]:
    out = []
    for case in evaluation.get("per_case", []):
        dices = [c.get("dice_percent") for c in case.get("classes", {}).values() if c.get("dice_percent") is not None]
        out.append((case["case"], float(np.mean(dices)) if dices else float("nan"), case))
    return out


def metrics_section(sources: ReportSources) -> tuple[str, list[str]]:
    evaluation = sources.evaluation
    if evaluation is None:
        return "", []
    mean = evaluation.get("mean", {})
    html = (f"<p>{evaluation.get('num_cases_evaluated', '–')} of {evaluation.get('num_reference_cases', '–')} "
            f"reference cases evaluated from <code>{escape(str(sources.evaluation_path))}</code>: mean Dice "
            f"<b>{_number(mean.get('dice_percent'), 1)} %</b>, mean HD95 <b>{_number(mean.get('hd95_mm'), 1)} mm</b>.</p>")
    classes = evaluation.get("mean_per_class", {})
    html += table(["class", "Dice %", "HD95 mm", "cases", "volume ref ml", "volume pred ml"],
                  [[escape(name), v.get("dice_percent"), v.get("hd95_mm"), v.get("num_cases"),
                    v.get("volume_ref_ml_mean"), v.get("volume_pred_ml_mean")] for name, v in classes.items()], digits=1)
    names = list(classes)
    rows = [[escape(case), score, *[x for n in names for x in (entry["classes"].get(n, {}).get("dice_percent"),
                                                            entry["classes"].get(n, {}).get("hd95_mm"))]]
            for case, score, entry in _case_scores(evaluation)]
    headers = ["case", "mean Dice %", *[f"{n} {m}" for n in names for m in ("Dice %", "HD95 mm")]]
    html += "<h3>Per case (click a column to sort)</h3>" + table(headers, rows, sortable=True, digits=1)
    problems = {k: v for k, v in evaluation.get("problems", {}).items() if v}
    if problems:
        html += missing_note([f"evaluation problem {k}: {', '.join(map(str, v))}" for k, v in problems.items()])
    return html, []


def _image_of(reference_file: Path, case: str, file_ending: str) -> Path | None:
    folder = reference_file.parent
    if not folder.name.startswith("labels"):
        return None
    candidate = folder.parent / ("images" + folder.name[len("labels"):]) / f"{case}_0000{file_ending}"
    return candidate if candidate.is_file() else None


def overlays_section(sources: ReportSources) -> tuple[str, list[str]]:
    from cctrnet.dataset.image_io import read_image

    evaluation = sources.evaluation
    if evaluation is None:
        return "", []
    scored = sorted((s for s in _case_scores(evaluation) if s[1] == s[1]), key=lambda s: (s[1], s[0]))
    if not scored:
        return "", ["overlay thumbnails: no evaluated case"]
    picks = [("worst", scored[0]), ("median", scored[len(scored) // 2]), ("best", scored[-1])]
    seen, html, missing = set(), class_legend(sources) + "<div class='thumbs'>", []
    for title, (case, score, entry) in reversed(picks):
        if case in seen:
            continue
        seen.add(case)
        reference, geometry = read_image(entry["reference_file"], np.int16)
        prediction, _ = read_image(entry["prediction_file"], np.int16)
        image_path = _image_of(Path(entry["reference_file"]), case, evaluation.get("file_ending", ".nii.gz"))
        image = read_image(image_path)[0] if image_path else None
        if image is None:
            missing.append(f"image of {case} next to {entry['reference_file']} (thumbnail without the image)")
        aspect = geometry.spacing_zyx[1] / geometry.spacing_zyx[2]
        uri = figures.overlay_row_uri(image, [("prediction", prediction), ("reference", reference)],
                                      figures.best_slice(reference, prediction), aspect)
        html += (f"<figure><img src='{uri}' alt='{escape(case)}'><figcaption>{title}: {escape(case)}, mean Dice "
                 f"{score:.1f} %</figcaption></figure>")
    return html + "</div>", missing
