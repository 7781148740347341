"""The `ablate finalize` page: the composed recipe, why each part was chosen, its accuracy and the export checks.

Rendered from the finalize summary (the dict also saved as final.json) in the study report's look.
Every string from the summary goes through `esc`: arm, study and path names are user text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import plotly.graph_objects as go

from ablate.files import atomic_write
from ablate.report.charts import _LAYOUT, Chart, _fig_json, esc
from ablate.report.export_html import GREEN, RED, _finite, export_section
from ablate.report.fmt import DASH, acc, duration, signed, with_interval
from ablate.report.html import _RENDER_JS, PLOTLY_JS, _figures_json, page
from ablate.report.setup_html import _component, _kv_table
from ablate.report.verdict_html import verdict_tag
from ablate.report.writer import _now, report_stem, write_index, write_plotly_js

FINAL_HTML = "final.html"
RECIPE_KEYS = ("features", "model", "loss", "optimizer", "schedule", "augmentations", "epochs", "batch_size",
               "folds", "fold_seed")



def status_section(s: dict[str, Any]) -> str:
    exp = s.get("export")
    if not isinstance(exp, dict):
        return '<p id="status"><b>not exported</b> <span class="muted">(finalize ran without the export)</span></p>'
    if exp.get("deliverable"):
        return f'<p id="status"><b style="color:{GREEN}">ready:</b> <code>{esc(exp["deliverable"])}</code></p>'
    broken = "".join(f"<li>{esc(b)}</li>" for b in exp.get("broken") or [])
    earlier = f" ({esc(exp['earlier_deliverable'])})" if exp.get("earlier_deliverable") else ""
    return (f'<p id="status"><b style="color:{RED}">NOT READY</b>: the exported model breaks these targets, '
            f'so this run delivered no model file{earlier}:</p><ul class="warn" id="broken">{broken}</ul>')


def recipe_section(s: dict[str, Any]) -> str:
    config = s.get("config") or {}
    rows = [(key, esc(_component(config[key]))) for key in RECIPE_KEYS if key in config]
    table = _kv_table(rows) if rows else '<p class="note">No recipe recorded.</p>'
    return '<h2 id="recipe">Recipe</h2><p>The base recipe with every chosen change applied.</p>' + table


def _probs(r: dict[str, Any]) -> str:
    """P(worse) / P(equivalent) / P(better), or a dash (the baseline; evidence from older versions)."""
    if r.get("p_better") is None:
        return DASH
    return f"{r['p_worse']:.3f} / {r['p_equivalent']:.3f} / {r['p_better']:.3f}"


def _evidence_table(ch: dict[str, Any]) -> str:
    rows = ch.get("evidence") or []
    if not rows:
        return '<p class="note">No evidence rows recorded.</p>'
    head = ("<tr><th>arm</th><th>mean accuracy [CI]</th><th>difference to baseline [95% posterior interval]</th>"
            "<th>P(worse) / P(equivalent) / P(better)</th><th>verdict</th><th>state</th></tr>")
    body = []
    for r in rows:
        chosen = r.get("arm") == ch.get("chosen")
        diff = ("baseline" if r.get("verdict") == "baseline"
                else with_interval(r.get("diff"), r.get("diff_low"), r.get("diff_high"), signed))
        mark = ' <span class="muted">(chosen)</span>' if chosen else ""
        attrs = ' class="chosen" style="background:#e6f4ea"' if chosen else ""
        body.append(f'<tr{attrs}><td class="arm">{esc(r.get("arm"))}{mark}</td>'
                    f'<td class="num">{with_interval(r.get("mean"), r.get("ci_low"), r.get("ci_high"))}</td>'
                    f'<td class="num">{diff}</td><td class="num">{_probs(r)}</td>'
                    f'<td class="verdict">{verdict_tag(str(r.get("verdict")))}</td><td>{esc(r.get("state"))}</td></tr>')
    return f'<table class="evidence">{head}{"".join(body)}</table>'


def provenance_section(s: dict[str, Any], linked: set[str]) -> str:
    """One block per study that set part of the recipe; linked: the studies whose report is beside the page."""
    parts = ['<h2 id="provenance">Where each part comes from</h2>']
    choices = s.get("choices") or []
    if not choices:
        return parts[0] + "<p>No study was used: the base recipe as it is.</p>"
    for ch in choices:
        study = str(ch.get("study"))
        name = (f'<a href="{esc(quote(report_stem(study) + ".html"))}">{esc(study)}</a>' if study in linked
                else esc(study))
        changes = ch.get("changes") or {}
        rows = [
            ("mode", esc(ch.get("mode"))), ("baseline", esc(ch.get("baseline"))),
            ("chosen", f"<b>{esc(ch.get('chosen'))}</b>"), ("why", esc(ch.get("reason"))),
            ("changes", esc("; ".join(f"{k} = {_component(v)}" for k, v in changes.items())) or "none"),
        ]
        parts.append(f'<h3>{esc(ch.get("space"))}: study {name}</h3>' + _kv_table(rows) + _evidence_table(ch))
    return "".join(parts)


def accuracy_chart(oof: dict[str, Any]) -> Chart:
    chart = Chart("oof", "Out-of-fold accuracy per fold",
                  "Bars: each fold model on its held-out participants; dashed line: pooled over every sequence.")
    folds = oof.get("folds") or []
    if not folds:
        chart.notes.append("No fold results.")
        return chart
    fig = go.Figure(go.Bar(x=[f"fold {f.get('fold')}" for f in folds], y=[_finite(f.get("acc")) for f in folds],
                           marker={"color": "#0072B2"}, hovertemplate="%{x}: %{y:.4f}<extra></extra>"))
    pooled = _finite(oof.get("pooled"))
    shapes = [] if pooled is None else [{"type": "line", "x0": 0, "x1": 1, "xref": "paper", "y0": pooled,
                                         "y1": pooled, "line": {"color": "black", "width": 2, "dash": "dash"}}]
    fig.update_layout(**(_LAYOUT | {"height": 300}), shapes=shapes, yaxis_title="accuracy", xaxis_title="fold")
    chart.figure = _fig_json(fig)
    return chart


def accuracy_section(s: dict[str, Any], chart: Chart) -> str:
    training = s.get("training") or {}
    if training.get("full_data"):
        return ('<h2 id="accuracy">Accuracy</h2><p id="no-oof"><b>No out-of-fold estimate.</b> '
                f'{esc(training.get("note", ""))}</p>')
    oof = training.get("oof") or {}
    trained: dict[Any, dict[str, Any]] = {}  # fold -> its seeds' training time, and whether all were resumed
    for f in training.get("folds") or []:
        t = trained.setdefault(f.get("fold"), {"seconds": 0.0, "resumed": True})
        t["seconds"] += _finite(f.get("seconds")) or 0.0
        t["resumed"] = t["resumed"] and bool(f.get("resumed"))
    body = []
    for f in oof.get("folds") or []:
        t = trained.get(f.get("fold"), {})
        resumed = DASH if "resumed" not in t else ("yes" if t["resumed"] else "no")
        body.append(f'<tr><td class="num">{esc(f.get("fold"))}</td><td class="num acc">{acc(_finite(f.get("acc")))}</td>'
                    f'<td class="num">{esc(f.get("n"))}</td><td class="num">{duration(_finite(t.get("seconds")))}</td>'
                    f"<td>{resumed}</td></tr>")
    table = ('<table id="oof-table"><tr><th>fold</th><th>out-of-fold accuracy</th><th>sequences</th>'
             f'<th>training time</th><th>resumed</th></tr>{"".join(body)}</table>') if body else \
        '<p class="note">No fold results recorded.</p>'
    pooled = (f'<p><b>Pooled out-of-fold accuracy: <span id="pooled">{acc(_finite(oof.get("pooled")))}</span></b> '
              f'over {esc(oof.get("n", DASH))} sequences. Every sequence is predicted by the fold model(s) that did '
              "not see its participant (a fold's seeds combined by the ensemble rule), so this estimates the accuracy "
              "of the exported ensemble (which also combines the other folds' models, and is usually a bit better "
              "than this).</p>")
    pooled += _rules_table(oof)
    plot = ('<p id="noplotly" hidden>The chart needs the file plotly.min.js in the same folder as this page; '
            'the tables do not.</p>')
    if chart.figure is not None:
        plot += f'<div class="chart"><div class="plot" id="chart-{esc(chart.key)}"></div>'
        plot += f'<p class="note">{chart.caption}</p></div>'
    plot += "".join(f'<p class="note">{n}</p>' for n in chart.notes)
    return '<h2 id="accuracy">Accuracy</h2>' + table + pooled + plot


def _rules_table(oof: dict[str, Any]) -> str:
    """With several seeds per fold: the ensemble rules on each fold's held-out sequences."""
    rules = oof.get("rules") or {}
    if not rules:
        return ""
    rows = "".join(f'<tr><td>{esc(r)}{" (exported)" if r == oof.get("rule") else ""}</td>'
                   f'<td class="num acc">{acc(_finite(v.get("pooled")))}</td></tr>' for r, v in rules.items())
    return (f"<p>Each fold's {esc(oof.get('seeds'))} seeds combined by each rule, on that fold's held-out "
            "sequences, pooled (the write-up found voting and the maximum worse than the mean):</p>"
            f'<table id="rules-table"><tr><th>rule</th><th>out-of-fold accuracy</th></tr>{rows}</table>')


def footer_section(s: dict[str, Any], generated: str) -> str:
    items = [esc(w) for w in s.get("warnings") or []]
    warnings = ('<h2 id="warnings">Warnings</h2>'
                + (f'<ul class="warn">{"".join(f"<li>{w}</li>" for w in items)}</ul>' if items else "<p>None.</p>"))
    data = s.get("data") or {}
    rows = [
        ("data", f"fingerprint <code>{esc(data.get('fingerprint'))}</code>: {esc(data.get('sequences'))} sequences, "
                 f"{esc(data.get('signs'))} signs; cache <code>{esc(data.get('cache'))}</code>"),
        ("recipe", esc(s.get("recipe", "baseline"))), ("training preset", esc(s.get("preset"))),
        ("studies' preset", esc(s.get("study_preset"))),
        ("storage", esc(s.get("storage"))),
        ("versions", esc(", ".join(f"{k} {v}" for k, v in (s.get("versions") or {}).items()))),
        ("ablate commit", f"<code>{esc(s.get('git'))}</code>"),
        ("total time", duration(_finite(s.get("seconds")))),
    ]
    return (warnings + '<h2 id="setup">Setup</h2>' + _kv_table(rows)
            + f'<footer>Made by ablate finalize on {esc(generated)}. The same numbers are in final.json in the '
              'output folder; all study reports: <a href="index.html">index.html</a>.</footer>')


def render_final(s: dict[str, Any], generated: str, linked: set[str] | frozenset[str] = frozenset()) -> str:
    """The whole page; linked: the study names whose report page is beside this one."""
    chart = accuracy_chart((s.get("training") or {}).get("oof") or {})
    body = "\n".join(["<h1>Final model</h1>", status_section(s), recipe_section(s), provenance_section(s, set(linked)),
                      accuracy_section(s, chart), export_section(s), footer_section(s, generated)])
    scripts = (f'<script src="{PLOTLY_JS}"></script>\n<script id="figures" type="application/json">'
               f"{_figures_json([chart])}</script>\n<script>{_RENDER_JS}</script>\n")
    return page("ablate: final model", body, scripts)


def write_final_page(summary: dict[str, Any], reports_dir: Path) -> Path:
    """Write reports_dir/final.html (and plotly.min.js beside it), then the index so it links the page."""
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    write_plotly_js(reports_dir)
    linked = {str(c.get("study")) for c in summary.get("choices") or []
              if (reports_dir / f"{report_stem(str(c.get('study')))}.html").is_file()}
    path = reports_dir / FINAL_HTML
    atomic_write(path, render_final(summary, _now(), linked))
    write_index(reports_dir)
    return path
