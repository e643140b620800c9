"""The report page: header with the run's state, a list of what is missing, then one section per part.

``write_report(model_folder, output=None, evaluation_summary=None)`` writes ``report.html`` (atomically)
into the model folder or to ``output``; ``write_report_safely`` is the one call the training and evaluation
commands make: it never raises, and says in one line where the page is or why there is none.
"""
from __future__ import annotations

import time
import traceback
from html import escape
from pathlib import Path
from typing import Callable

from cctrnet.report import sections
from cctrnet.report.sources import ReportSources, read_sources
from cctrnet.utilities.file_io import atomic_path

REPORT_FILE = "report.html"

SECTIONS: list[tuple[str, str, Callable[[ReportSources], tuple[str, list[str]]]]] = [
    ("dataset", "Dataset, plan and networks", sections.dataset_section),
    ("cases", "Labeled and unlabeled cases", sections.cases_section),
    ("registration", "Registration", sections.registration_section),
    ("training", "Training curves", sections.training_section),
    ("metrics", "Validation / test metrics", sections.metrics_section),
    ("overlays", "Best, median and worst case", sections.overlays_section),
]

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2430;background:#f4f6f9}
header{background:#1f3a5f;color:#fff;padding:18px 32px}header h1{margin:0 0 4px;font-size:22px}
header .sub{opacity:.85;font-size:13px}nav{background:#fff;border-bottom:1px solid #d8dde5;padding:8px 32px;
position:sticky;top:0;z-index:2}nav a{margin-right:18px;color:#1f3a5f;text-decoration:none;font-size:14px}
main{padding:16px 32px;max-width:1200px}section{background:#fff;border:1px solid #d8dde5;border-radius:8px;
padding:12px 20px;margin:14px 0}h2{font-size:18px;margin:6px 0 10px;color:#1f3a5f}h3{font-size:15px;margin:16px 0 6px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:14px 0}.card{background:#fff;border:1px solid #d8dde5;
border-radius:8px;padding:10px 16px;min-width:150px}.card .v{font-size:22px;font-weight:600;color:#1f3a5f}
.card .k{font-size:12px;color:#5b6575}.state-finished{color:#1a7f37}.state-progress{color:#b35900}
.state-none{color:#b42318}table{border-collapse:collapse;font-size:13px;margin:6px 0}th,td{border:1px solid #e1e5eb;
padding:3px 9px;text-align:right}th{background:#eef2f7}td:first-child,th:first-child{text-align:left}
table.sortable th{cursor:pointer;user-select:none}table.sortable th:after{content:' \\2195';color:#9aa4b2}
tbody tr:nth-child(even){background:#fafbfc}.missing{color:#8a4b00;background:#fff4e5;border-left:4px solid #f0a030;
padding:4px 10px;margin:4px 0;font-size:13px}.kv{display:grid;grid-template-columns:max-content auto;gap:2px 16px;
font-size:14px}.kv dt{color:#5b6575}.kv dd{margin:0}img.wide{max-width:100%;border:1px solid #e1e5eb;margin:6px 0}
.thumbs{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;background:#fafbfc;border:1px solid #e1e5eb;padding:6px}
figcaption{font-size:13px;text-align:center}.chips{display:flex;flex-wrap:wrap;gap:4px}.chip{font-size:12px;
padding:2px 8px;border-radius:10px;background:#e8ecf2}.chip.labeled{background:#1f3a5f;color:#fff}
.chip.hidden{background:#d5e6f7}.legend{font-size:12px;color:#5b6575}pre{font-size:12px;white-space:pre-wrap}
"""

SORT_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('th').forEach(function(th, column){
    th.addEventListener('click', function(){
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var ascending = th.dataset.order !== 'asc'; th.dataset.order = ascending ? 'asc' : 'desc';
      rows.sort(function(a, b){
        var x = a.cells[column], y = b.cells[column];
        var p = x.dataset.sort, q = y.dataset.sort;
        var r = (p !== undefined && q !== undefined)
          ? ((p === '' ? Infinity : +p) - (q === '' ? Infinity : +q))
          : x.textContent.localeCompare(y.textContent);
        return ascending ? r : -r;
      });
      rows.forEach(function(row){ body.appendChild(row); });
    });
  });
});
"""


def _state(sources: ReportSources) -> tuple[str, str]:
    config, history = sources.config or {}, sources.history
    total = config.get("num_iterations")
    reached = history.last_iteration if history else None
    if sources.finished:
        return "finished", f"finished ({total} iterations)"
    if sources.has_checkpoint or reached:
        return "progress", f"in progress: iteration {reached if reached is not None else '?'} of {total or '?'}"
    return "none", "no training yet (no checkpoint, no logged iteration)"


def _cards(sources: ReportSources, state_text: str, state_class: str) -> str:
    chosen = sources.labeled_cases or {}
    evaluation = (sources.evaluation or {}).get("mean", {})
    methods = (sources.registration_report or {}).get("methods", {})
    shown = sections._shown_method(sources.registration_report) if methods else None
    cards = [("state", f"<span class='state-{state_class}'>{escape(state_text)}</span>"),
             ("labeled / unlabeled", f"{len(chosen.get('labeled', []))} / {len(chosen.get('unlabeled', []))}"
              if chosen else "–"),
             ("mean Dice", f"{evaluation['dice_percent']:.1f} %" if evaluation.get("dice_percent") is not None else "–"),
             ("mean HD95", f"{evaluation['hd95_mm']:.1f} mm" if evaluation.get("hd95_mm") is not None else "–"),
             ("registration", escape(shown) if shown else "–"),
             ("registered-label Dice", f"{methods[shown]['registered_label_dice_mean']:.3f}"
              if shown and methods[shown].get("registered_label_dice_mean") is not None else "–")]
    return "<div class='cards'>" + "".join(f"<div class='card'><div class='v'>{v}</div><div class='k'>{escape(k)}</div>"
                                           "</div>" for k, v in cards) + "</div>"


def render_report(sources: ReportSources) -> str:
    """The whole page as one string (images inlined)."""
    state_class, state_text = _state(sources)
    missing = list(sources.missing)
    bodies = []
    for anchor, title, build in SECTIONS:
        try:
            body, section_missing = build(sources)
        except Exception as error:  # one broken part must not hide the others
            body, section_missing = "", [f"{title.lower()}: could not be drawn ({type(error).__name__}: {error})"]
            traceback.print_exc()
        missing += section_missing
        own = [m for m in missing if m.split(":")[0].lower() in title.lower()] if not body else []
        bodies.append(f"<section id='{anchor}'><h2>{escape(title)}</h2>"
                      f"{body or sections.missing_note(own or ['nothing to show (see the list above)'])}</section>")
    config = sources.config or {}
    name = config.get("dataset_name") or (sources.plans or {}).get("dataset_name") or "unknown dataset"
    header = (f"<header><h1>{escape(str(config.get('trainer', 'model')))} on {escape(str(name))}</h1>"
              f"<div class='sub'>{escape(str(sources.model_folder))} · report of {time.strftime('%Y-%m-%d %H:%M')}"
              " · regenerated from the files on disk by cctr_report</div></header>")
    nav = "<nav>" + "".join(f"<a href='#{a}'>{escape(t)}</a>" for a, t, _ in SECTIONS) + "</nav>"
    missing_box = ("<section id='missing'><h2>Not available</h2>" + sections.missing_note(missing) + "</section>"
                   if missing else "")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>cctrnet report: {escape(str(name))}</title><style>{STYLE}</style></head><body>"
            f"{header}{nav}<main>{_cards(sources, state_text, state_class)}{missing_box}{''.join(bodies)}</main>"
            f"<script>{SORT_SCRIPT}</script></body></html>")


def write_report(model_folder: Path, output: Path | None = None, evaluation_summary: Path | None = None) -> Path:
    """Write the page; returns its path."""
    sources = read_sources(Path(model_folder), evaluation_summary)
    path = Path(output) if output is not None else Path(model_folder) / REPORT_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(render_report(sources), encoding="utf-8")
    return path


def write_report_safely(model_folder: Path, output: Path | None = None,
                        evaluation_summary: Path | None = None) -> Path | None:
    """``write_report`` that never raises: prints where the page is, or why it could not be written."""
    try:
        path = write_report(model_folder, output, evaluation_summary)
    except Exception as error:  # the report is a view of the run; it must never fail the run
        print(f"report not written ({type(error).__name__}: {error}); retry with: cctr_report -m {model_folder}")
        return None
    print(f"report: {path}")
    return path
