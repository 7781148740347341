"""The report's setup tables: the study's settings, the base recipe with where each value came
from (ablate.resolve's provenance), what each arm changes, and tuned parameters. HTML strings;
every user-supplied string goes through `esc`."""

from __future__ import annotations

from typing import Any

from ablate.report.charts import esc
from ablate.report.fmt import DASH, plain


def _kv_table(rows: list[tuple[str, str]]) -> str:
    """Key-value rows; values are HTML already (callers escape)."""
    body = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _component(value: Any) -> str:
    if isinstance(value, dict) and "name" in value:
        params = ", ".join(f"{k} {plain(v)}" for k, v in (value.get("params") or {}).items())
        return f"{value['name']}" + (f" ({params})" if params else "")
    if isinstance(value, list):
        return ", ".join(_component(x) for x in value) or "none"
    return plain(value)


def origin(sources: dict[str, str], key: str) -> str:
    """Where a recipe key's value (and its parameters' values) came from, grouped by source:
    'base.yaml; width, heads: preset quick; ff_mult: default of transformer'."""
    by: dict[str, list[str]] = {}
    if key in sources:
        by.setdefault(sources[key], []).append("")
    for k, v in sources.items():
        if k.startswith(f"{key}.params."):
            by.setdefault(v, []).append(k.rsplit(".", 1)[1])
    parts = [(f"{', '.join(n for n in names if n)}: " if any(names) else "") + source for source, names in by.items()]
    return "; ".join(parts)


def recipe_table(a: dict[str, Any]) -> str:
    axis = a.get("axis")
    sources = a.get("sources") or {}
    rows = []
    for key, value in (a.get("recipe") or {}).items():
        text = esc(_component(value))
        if key == axis:
            text += ' <span class="muted">(the baseline arm\'s; this is what the arms vary)</span>'
        if origin(sources, key):
            text += f'<br><span class="muted">from {esc(origin(sources, key))}</span>'
        rows.append((key, text))
    return _kv_table(rows) if rows else '<p class="note">No recipe recorded.</p>'


def setup_section(a: dict[str, Any], versions: dict[str, str], commit: str) -> str:
    data = a.get("data") or {}
    arms = ", ".join(esc(r["arm"]) + (" (baseline)" if r["verdict"] == "baseline" else "") for r in a["arms"])
    per_fold = (f"about {a['n_train']:.0f} training and {a['n_test']:.0f} validation sequences per fold"
                if a.get("n_train") is not None and a.get("n_test") is not None else DASH)
    rows = [
        ("what varies", f"the <b>{esc(a.get('axis'))}</b>, in <b>{esc(a.get('mode'))}</b> mode"),
        ("arms", arms or esc(a.get("baseline"))),
        ("recipe", esc(a.get("recipe_name") or "baseline")),
        ("preset", esc(a.get("preset"))),
        ("evidence", f"{esc(a.get('repeats') or 1)} repeat(s) x {esc(a.get('folds'))} participant-grouped folds "
                     f"(fold seed {esc(a.get('fold_seed'))} + repeat) x {esc(a.get('seeds'))} seed(s) averaged per fold, "
                     "the same splits for every arm"),
        ("data", f"fingerprint <code>{esc(a.get('fingerprint'))}</code>: {esc(data.get('sequences'))} sequences, "
                 f"{esc(data.get('signs'))} signs, {esc(data.get('participants'))} participants; {esc(per_fold)}"),
        ("data source", esc(data.get("source"))),
        ("trials", f"{esc(a.get('n_trials'))} ({'finished' if a.get('finished') else 'NOT finished'})"),
        ("decision rule", f"ROPE [{a['rope'][0]:+g}, {a['rope'][1]:+g}], posterior probability "
                          f"{a.get('decision', 0.975):g}; details at alpha {a['alpha']:g} (Holm)"),
        ("storage", esc(a.get("storage"))),
        ("trained on", esc("; ".join(sorted({w for r in a["arms"] for w in r.get("trained_on", []) if w})) or DASH)),
        ("versions", esc(", ".join(f"{k} {v}" for k, v in versions.items()))),
        ("ablate commit", f"<code>{esc(commit)}</code>"),
    ]
    return '<h2 id="setup">Setup</h2>' + _kv_table(rows) + "<h3>Base recipe</h3>" + recipe_table(a)


def differences_table(a: dict[str, Any]) -> str:
    """Per arm, the values that differ from the baseline's recipe and where they came from."""
    rows = [r for r in a["arms"] if r.get("sources") and r["verdict"] != "baseline"]
    if not rows:
        return ""
    body = "".join(f"<tr><td>{esc(r['arm'])}</td><td>"
                   + esc("; ".join(f"{k}: {v}" for k, v in r["sources"].items())) + "</td></tr>" for r in rows)
    return ("<h3>What each arm changes</h3><p>The values whose origin differs from the baseline arm's "
            "(resolved by <code>ablate.resolve</code>, in the order component default, base.yaml, preset, arm, "
            "tuned value, stage and seed).</p>"
            f"<table><tr><th>arm</th><th>value: from</th></tr>{body}</table>")


def params_table(a: dict[str, Any]) -> str:
    rows = [r for r in a["arms"] if r["params"]]
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{esc(r['arm'])}</td><td class=\"num\">{esc(r['trial'])}</td><td>"
        + esc(", ".join(f"{k} = {plain(v)}" for k, v in r["params"].items())) + "</td></tr>" for r in rows)
    return ("<h3>Tuned parameters</h3><p>The parameters of the trial that stands for each arm.</p>"
            f"<table><tr><th>arm</th><th>trial</th><th>parameters</th></tr>{body}</table>")
