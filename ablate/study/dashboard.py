"""The optuna-dashboard view of a study: a Markdown note and one chart of fold scores per arm,
both replaced in place after every trial (the chart under a fixed id), and file artifacts (each
trial's curves, the study's report).

Built from `ablate.report.analysis.analyze`, so the note shows the report's numbers.
"""

from __future__ import annotations

from typing import Any

import optuna

from ablate.report.analysis import analyze, md, verdict_table_markdown
from ablate.report.participants_html import effect_sentences
from ablate.report.verdict_html import sensitivity_text
from ablate.report.verdicts import Design
from ablate.study import records

FOLD_CHART_ID = "ablate-fold-scores"  # save_plotly_graph_object overwrites the chart saved under this id


def note_markdown(a: dict[str, Any]) -> str:
    recipe = a.get("recipe", {})
    parts = ", ".join(f"{k}: {md(recipe[k]['name'])}" for k in ("features", "model", "loss", "optimizer") if k in recipe)
    augs = ", ".join(md(x["name"]) for x in recipe.get("augmentations", []))
    data = a.get("data", {})
    lines = [
        f"# {md(a['study'])}",
        f"**Question.** {md(a['question'])}",
        f"**What varies:** the {md(a['axis'])} ({md(a['mode'])} mode); baseline arm **{md(a['baseline'])}**.",
        f"**Base recipe** ({md(a.get('recipe_name', 'baseline'))}): {parts}; augmentations {augs or 'none'}; batch {recipe.get('batch_size')}, "
        f"{recipe.get('epochs')} epochs (preset {md(a['preset'])}).",
        f"**Evidence:** {a.get('repeats') or 1} repeat(s) x {a['folds']} participant-grouped folds x {a['seeds']} "
        "seed(s) (averaged per fold), paired across arms; "
        f"data {md(a['fingerprint'])} ({data.get('sequences')} sequences, {data.get('participants')} participants, "
        f"{data.get('signs')} signs); storage {md(a['storage'])}.",
        "",
        "## Current verdict" + ("" if a["finished"] else " (study not finished)"),
        verdict_table_markdown(a) if a["arms"] else "_no finished folds yet_",
        "",
        "Verdicts: the Bayesian correlated t-test (the Nadeau-Bengio corrected t as a posterior) against the "
        f"ROPE [{a['rope'][0]:+g}, {a['rope'][1]:+g}]; better, worse or equivalent at posterior probability "
        f"{a.get('decision', 0.975):g}, else undecided; incomplete without the full design.",
        "",
        md(sensitivity_text(a)),
        "",
        "## Who each arm helps",
        *([f"- {md(t)}" for t in effect_sentences(a)] or ["No arm's effect differs between groups of participants "
                                                          "(family-wise 5% per arm)." if a.get("participants") else
                                                          "_no participant panel yet_"]),
    ]
    warnings = [md(w) for w in a["warnings"]] + [f"{md(r['arm'])}: {md(w)}" for r in a["arms"] for w in r["warnings"]]
    if warnings:
        lines += ["", "## Warnings"] + [f"- {w}" for w in warnings]
    return "\n".join(lines)


def fold_chart(a: dict[str, Any]) -> Any:
    """Per-fold scores per arm, points joined by fold so the pairing is visible."""
    import plotly.graph_objects as go

    fig = go.Figure()
    n = max((len(r["scores"]) for r in a["arms"]), default=0)
    for i in range(n):
        fig.add_trace(go.Scatter(x=[r["arm"] for r in a["arms"]], y=[r["scores"][i] for r in a["arms"]],
                                 mode="lines+markers", name=Design.of(a).label(i)))
    fig.update_layout(title="Fold scores per arm (lines join the same fold)", yaxis_title="accuracy")
    return fig


def refresh_note(study: optuna.Study) -> None:
    """Rewrite the study's note and chart; never lets a dashboard problem stop a study."""
    try:
        import optuna_dashboard

        a = analyze(study)
        optuna_dashboard.save_note(study, note_markdown(a))
        if a["arms"]:
            optuna_dashboard.save_plotly_graph_object(study, fold_chart(a), graph_object_id=FOLD_CHART_ID)
        records.write_summary(study, [{k: r[k] for k in ("arm", "n", "mean", "diff", "verdict")} for r in a["arms"]])
    except Exception as e:  # noqa: BLE001 - the note is a convenience; the trials are the record
        import sys

        print(f"ablate: warning: could not update the dashboard note ({type(e).__name__}: {e})", file=sys.stderr)


def artifact_store() -> Any:
    """The file artifact store beside the default storage ($ABLATE_HOME/artifacts); `ablate dashboard` serves it."""
    from optuna.artifacts import FileSystemArtifactStore

    from ablate.data.cache import ablate_home

    path = ablate_home() / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(path))


def attach(study_or_trial: Any, path: str, mimetype: str) -> None:
    """Upload a file (a trial's curves, the study's report) as an artifact the dashboard shows."""
    try:
        from optuna.artifacts import upload_artifact

        upload_artifact(artifact_store=artifact_store(), file_path=path, study_or_trial=study_or_trial,
                        mimetype=mimetype)
    except Exception as e:  # noqa: BLE001 - artifacts are a convenience; the trials are the record
        import sys

        print(f"ablate: warning: could not attach {path} ({type(e).__name__}: {e})", file=sys.stderr)
