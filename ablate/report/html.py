"""A study report and the reports' index as self-contained HTML pages, rendered from the `analyze` dict.

Every user-supplied string goes through `esc` (html.escape); the chart data is JSON inside a
<script type="application/json"> with <, > and & written as \\u escapes, so no text can close the
script element. plotly.js is loaded from plotly.min.js beside the page: no network is needed.
"""

from __future__ import annotations

import json
from typing import Any

from ablate.report.charts import Chart, esc
from ablate.report.fmt import DASH, acc, duration, plain, pval, signed, with_interval
from ablate.report.participants_html import participant_section
from ablate.report.setup_html import differences_table, params_table, setup_section
from ablate.report.verdict_html import details_section, how_to_read, summary_table, verdict_summary

__all__ = ["DASH", "PLOTLY_JS", "acc", "duration", "page", "plain", "pval", "render_index", "render_report", "signed",
           "verdict_summary", "with_interval"]

PLOTLY_JS = "plotly.min.js"

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       max-width: 1150px; margin: 1.5em auto; padding: 0 1em; color: #1b1b1b; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; }
.question { font-size: 1.15em; font-style: italic; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.55em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv th { width: 13em; }
.verdict { font-weight: 600; white-space: nowrap; }
.tag { display: inline-block; padding: 0 0.4em; border-radius: 3px; color: #fff; }
.note, .muted { color: #555; } .warn li { margin: 0.2em 0; }
.chart { break-inside: avoid; page-break-inside: avoid; margin: 1em 0 2em; }
.plot { width: 100%; min-height: 220px; }
td.study { white-space: nowrap; }
code { background: #f4f4f4; padding: 0 0.2em; }
#noplotly { background: #fff3cd; border: 1px solid #e0c060; padding: 0.5em; }
footer { margin-top: 3em; font-size: 0.85em; color: #555; }
@media print { body { max-width: none; margin: 0; } a { color: inherit; text-decoration: none; }
               h2 { break-after: avoid; } tr { break-inside: avoid; } }
"""


def warnings_section(a: dict[str, Any]) -> str:
    items = [esc(w) for w in a["warnings"]]
    items += [f"<b>{esc(r['arm'])}</b>: {esc(w)}" for r in a["arms"] for w in r["warnings"]]
    if not items:
        return '<h2 id="warnings">Warnings</h2><p>None.</p>'
    return '<h2 id="warnings">Warnings</h2><ul class="warn">' + "".join(f"<li>{w}</li>" for w in items) + "</ul>"


def leakage_section(a: dict[str, Any]) -> str:
    """Grouped vs ungrouped folds, where the study measured both (key "leakage", study-wide or per arm)."""
    found = [("whole study", a["leakage"])] if a.get("leakage") else []
    found += [(r["arm"], r["leakage"]) for r in a["arms"] if r.get("leakage")]
    if not found:
        return ""
    body = []
    for label, leak in found:
        grouped = [v for v in leak.get("grouped", []) if v is not None]
        ungrouped = [v for v in leak.get("ungrouped", []) if v is not None]
        g = sum(grouped) / len(grouped) if grouped else None
        u = sum(ungrouped) / len(ungrouped) if ungrouped else None
        over = u - g if g is not None and u is not None else None
        points = f" ({over * 100:+.1f} points)" if over is not None else ""
        body.append(f"<tr><td>{esc(label)}</td><td class=\"num\">{acc(g)} (n {len(grouped)})</td>"
                    f"<td class=\"num\">{acc(u)} (n {len(ungrouped)})</td><td class=\"num\">{signed(over)}{points}</td></tr>")
    return ('<h2 id="leakage">Leakage check</h2><p>Folds split without grouping by participant put the same signers in '
            "training and validation; the difference is how much such a split over-states accuracy.</p>"
            "<table><tr><th></th><th>mean, grouped folds</th><th>mean, ungrouped folds</th>"
            f"<th>over-statement (accuracy)</th></tr>{''.join(body)}</table>")


def _figures_json(charts: list[Chart]) -> str:
    figs = {c.key: c.figure for c in charts if c.figure is not None}
    text = json.dumps(figs, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def charts_section(charts: list[Chart]) -> str:
    parts = ['<h2 id="charts">Charts</h2><p id="noplotly" hidden>The charts need the file plotly.min.js in the same '
             "folder as this page; the tables above do not.</p>"]
    for c in charts:
        parts.append(f'<div class="chart"><h3>{esc(c.title)}</h3><p class="note">{c.caption}</p>')
        if c.figure is not None:
            parts.append(f'<div class="plot" id="chart-{esc(c.key)}"></div>')
        parts += [f'<p class="note">{n}</p>' for n in c.notes]
        parts.append("</div>")
    return "".join(parts)


_RENDER_JS = """(function () {
  var figs = JSON.parse(document.getElementById("figures").textContent);
  if (typeof Plotly === "undefined") { document.getElementById("noplotly").hidden = false; return; }
  Object.keys(figs).forEach(function (k) {
    Plotly.newPlot("chart-" + k, figs[k].data, figs[k].layout, {responsive: true, displaylogo: false});
  });
})();"""


def page(title: str, body: str, scripts: str = "") -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n{scripts}</body></html>\n")


def render_report(a: dict[str, Any], charts: list[Chart], generated: str, json_href: str) -> str:
    """The whole study page. `a` is the `report_json` dict; json_href the relative link to it."""
    state = "" if a["finished"] else ' <span class="tag" style="background:#b26b00">not finished</span>'
    body = "\n".join([
        f"<h1>Study {esc(a['study'])}{state}</h1>",
        f'<p class="question">{esc(a["question"]) or "(no question written in the search space)"}</p>',
        f"<p><b>In one line:</b> {esc(verdict_summary(a))}.</p>",
        setup_section(a, a["versions"], a["commit"]),
        '<h2 id="summary">Summary</h2>', summary_table(a), params_table(a), differences_table(a), how_to_read(a),
        details_section(a), participant_section(a), warnings_section(a), leakage_section(a), charts_section(charts),
        f'<footer>Made by ablate on {esc(generated)}. The same numbers as JSON: '
        f'<a href="{esc(json_href)}">{esc(json_href)}</a>.</footer>',
    ])
    scripts = (f'<script src="{PLOTLY_JS}"></script>\n<script id="figures" type="application/json">'
               f"{_figures_json(charts)}</script>\n<script>{_RENDER_JS}</script>\n")
    return page(f"ablate: {a['study']}", body, scripts)


def render_index(entries: list[tuple[str, dict[str, Any]]], generated: str, final_href: str | None = None) -> str:
    """The list of study reports; entries are (relative href, report dict); final_href links `ablate finalize`'s page."""
    rows = []
    for href, a in entries:
        rows.append(f'<tr><td class="study"><a href="{esc(href)}">{esc(a["study"])}</a></td><td>{esc(a.get("question"))}</td>'
                    f'<td>{esc(a.get("mode"))}</td><td>{esc(a.get("preset"))}</td>'
                    f'<td>{"yes" if a.get("finished") else "no"}</td><td>{esc(verdict_summary(a))}</td></tr>')
    table = ("<table><tr><th>study</th><th>question</th><th>mode</th><th>preset</th><th>finished</th>"
             f"<th>verdicts</th></tr>{''.join(rows)}</table>") if rows else "<p>No reports yet.</p>"
    final = (f'<p id="final"><a href="{esc(final_href)}">Final model</a>: the composed recipe, where each part comes '
             "from, its accuracy and the export checks.</p>") if final_href else ""
    body = f"<h1>ablate studies</h1>{final}{table}<footer>Made by ablate on {esc(generated)}.</footer>"
    return page("ablate studies", body)
