"""The report's plotly charts, built from the `analyze` dict (and the study, for the tune charts).

Every user string that plotly renders (arm labels, parameter names) is HTML-escaped first: plotly
draws a subset of HTML in labels and decodes entities, so the escaped text shows as typed.
"""

from __future__ import annotations

import html
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna
import plotly.graph_objects as go
from optuna.trial import TrialState

from ablate.report.verdicts import Design

# Colour per verdict; the verdict is always written out as well, so colour is never the only cue.
VERDICT_COLOURS = {
    "baseline": "#555555",
    "better": "#1a7f37",
    "worse": "#c62828",
    "equivalent": "#1f5fad",
    "undecided": "#8a8a8a",
    "incomplete": "#b26b00",
}
# Colour-blind-safe qualitative palette (Okabe and Ito, "Color Universal Design", 2008).
# Its yellow is left out: too faint on white.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000")
DASHES = ("solid", "dot", "dash", "dashdot", "longdash")
_LAYOUT = {"template": "plotly_white", "margin": {"l": 70, "r": 30, "t": 50, "b": 60}, "height": 420}


@dataclass
class Chart:
    """One chart slot: a plotly figure, or only a note saying why there is none.

    caption and notes are HTML: user text in them is escaped where they are made.
    """

    key: str
    title: str
    caption: str
    figure: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _fig_json(fig: go.Figure) -> dict[str, Any]:
    import json

    import plotly.io as pio

    return json.loads(pio.to_json(fig, validate=False))


def _mean(values: list[float | None]) -> float | None:
    xs = [v for v in values if v is not None and math.isfinite(v)]
    return sum(xs) / len(xs) if xs else None


def fold_chart(a: dict[str, Any]) -> Chart:
    """Per-fold scores per arm; lines join the same fold and seed across arms, so pairs are visible."""
    chart = Chart("folds", "Fold scores per arm",
                  "Each line is one fold and seed, the same validation participants for every arm; "
                  "black diamonds are arm means with their (descriptive) interval.")
    arms = a["arms"]
    if not arms or not any(v is not None for r in arms for v in r["scores"]):
        chart.notes.append("No fold scores yet.")
        return chart
    design = Design.of(a)
    names = [esc(r["arm"]) for r in arms]
    fig = go.Figure()
    for i in range(max(len(r["scores"]) for r in arms)):
        ys = [r["scores"][i] if i < len(r["scores"]) else None for r in arms]
        _, seed, fold = design.place(i)  # colour by fold, dash by seed
        fig.add_trace(go.Scatter(x=names, y=ys, mode="lines+markers", name=design.label(i), opacity=0.75,
                                 line={"width": 1, "color": PALETTE[fold % len(PALETTE)],
                                       "dash": DASHES[seed % len(DASHES)]}))
    means = [r["mean"] for r in arms]
    up = [(r["ci_high"] - r["mean"]) if r["ci_high"] is not None and r["mean"] is not None else None for r in arms]
    down = [(r["mean"] - r["ci_low"]) if r["ci_low"] is not None and r["mean"] is not None else None for r in arms]
    fig.add_trace(go.Scatter(x=names, y=means, mode="markers", name="mean [CI]",
                             marker={"symbol": "diamond", "size": 11, "color": "black"},
                             error_y={"type": "data", "symmetric": False, "array": up, "arrayminus": down}))
    fig.update_layout(**_LAYOUT, yaxis_title="accuracy (participant-grouped fold)", xaxis_title="arm")
    chart.figure = _fig_json(fig)
    return chart


def forest_chart(a: dict[str, Any]) -> Chart:
    """Paired difference to the baseline per arm with its corrected interval, a zero line and the ROPE."""
    chart = Chart("forest", "Difference to the baseline",
                  f"Mean paired difference (arm minus {esc(a['baseline'])}) with the central 95% of its posterior "
                  "(the corrected t): 'better' when it lies wholly above the shaded region of practical "
                  "equivalence, 'equivalent' when 97.5% of it lies inside.")
    rows = [r for r in a["arms"] if r["verdict"] != "baseline" and r["diff"] is not None]
    if not rows:
        chart.notes.append("No arm has paired scores against the baseline yet.")
        return chart
    fig = go.Figure()
    for r in rows:
        lo, hi = r["diff_low"], r["diff_high"]
        fig.add_trace(go.Scatter(
            x=[r["diff"]], y=[esc(r["arm"])], mode="markers", name=esc(r["verdict"]), showlegend=False,
            marker={"size": 11, "color": VERDICT_COLOURS.get(r["verdict"], "#333333")},
            error_x={"type": "data", "symmetric": False, "array": [hi - r["diff"] if hi is not None else None],
                     "arrayminus": [r["diff"] - lo if lo is not None else None]},
            hovertemplate=f"{esc(r['arm'])}: %{{x:.4f}} ({esc(r['verdict'])})<extra></extra>"))
    shapes: list[dict[str, Any]] = [{"type": "line", "x0": 0, "x1": 0, "y0": 0, "y1": 1, "yref": "paper",
                                     "line": {"color": "black", "width": 1, "dash": "dash"}}]
    if a.get("rope"):
        low, high = a["rope"]
        shapes.insert(0, {"type": "rect", "x0": low, "x1": high, "y0": 0, "y1": 1, "yref": "paper",
                          "fillcolor": "#1f5fad", "opacity": 0.12, "line": {"width": 0}})
        chart.caption += f" The shaded band is the ROPE [{low:g}, {high:g}]."
    layout = _LAYOUT | {"height": max(220, 60 + 45 * len(rows))}
    fig.update_layout(**layout, shapes=shapes, xaxis_title="accuracy difference to the baseline",
                      yaxis={"autorange": "reversed", "type": "category"})
    chart.figure = _fig_json(fig)
    return chart


def curves_chart(a: dict[str, Any]) -> Chart:
    """Validation accuracy per epoch: thin lines per fold, a thick line for the mean over folds."""
    chart = Chart("curves", "Validation accuracy per epoch",
                  "Thin lines: one fold and seed; thick line: the mean over the folds that reached that epoch.")
    fig = go.Figure()
    for j, r in enumerate(a["arms"]):
        colour = PALETTE[j % len(PALETTE)]
        curves = [c.get("val_acc") or [] for c in r["curves"]]
        if not any(curves):
            continue
        name = esc(r["arm"])
        for c, acc in zip(r["curves"], curves):
            fig.add_trace(go.Scatter(x=list(range(1, len(acc) + 1)), y=acc, mode="lines+markers",
                                     line={"width": 1, "color": colour}, marker={"size": 3}, opacity=0.35,
                                     legendgroup=name, showlegend=False,
                                     name=f"{name} fold {c.get('fold')} seed {c.get('seed')}"))
        n = max(len(acc) for acc in curves)
        mean = [_mean([acc[e] for acc in curves if e < len(acc)]) for e in range(n)]
        fig.add_trace(go.Scatter(x=list(range(1, n + 1)), y=mean, mode="lines+markers", name=name,
                                 legendgroup=name, line={"width": 3, "color": colour}))
    if not fig.data:
        chart.notes.append("No training curves recorded yet.")
        return chart
    fig.update_layout(**_LAYOUT, xaxis_title="epoch", yaxis_title="validation accuracy")
    chart.figure = _fig_json(fig)
    return chart


def time_chart(a: dict[str, Any]) -> Chart:
    """Training time per arm, summed over the folds and seeds of its representative trial."""
    chart = Chart("time", "Training time per arm", "Seconds of training, summed over the arm's folds and seeds.")
    if not a["arms"]:
        chart.notes.append("No finished folds yet.")
        return chart
    fig = go.Figure(go.Bar(x=[esc(r["arm"]) for r in a["arms"]], y=[r["train_seconds"] for r in a["arms"]],
                           marker={"color": [PALETTE[j % len(PALETTE)] for j in range(len(a["arms"]))]},
                           hovertemplate="%{x}: %{y:.1f} s<extra></extra>"))
    fig.update_layout(**_LAYOUT, xaxis_title="arm", yaxis_title="seconds")
    chart.figure = _fig_json(fig)
    return chart


def speed_chart(a: dict[str, Any]) -> Chart | None:
    """Mean accuracy against single-sequence latency, one point per arm, the Pareto front joined
    (arms no other arm beats on both); None where latency is not measured (axes that do not change
    the inference graph)."""
    speed = a.get("speed")
    if not speed:
        return None
    chart = Chart("speed", "Accuracy and latency",
                  f"Mean accuracy against the exported model's latency per sequence ({esc(speed.get('runtime'))}, "
                  "the mean over the data's length quantiles of the fastest of 10 calls), and the Pareto front: the "
                  "arms no other arm beats on both. On a shared machine a model's latency moves by up to about 20% "
                  "from one timing to the next: smaller differences are noise" + (f" (load up to {speed['max_load']:.1f} while these were measured)"
                                    if speed.get("max_load") is not None else "") + ".")
    rows = [r for r in a["arms"] if r.get("latency_ms") is not None and r.get("mean") is not None]
    chart.notes += [esc(n) for n in speed.get("notes", [])]
    if not rows:
        chart.notes.append("No arm's latency was measured.")
        return chart
    front = [r for name in speed["pareto"] for r in rows if r["arm"] == name]
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=[r["latency_ms"] for r in rows], y=[r["mean"] for r in rows], mode="markers+text", name="arms",
        text=[esc(r["arm"]) for r in rows], textposition="top center",
        marker={"size": 11, "color": [VERDICT_COLOURS.get(r["verdict"], "#8a8a8a") for r in rows]},
        customdata=[[r["verdict"], r.get("parameters") or 0] for r in rows],
        hovertemplate="%{text}: %{y:.4f} at %{x:.2f} ms, %{customdata[1]:,} parameters (%{customdata[0]})"
                      "<extra></extra>"))
    fig.add_trace(go.Scatter(x=[r["latency_ms"] for r in front], y=[r["mean"] for r in front], mode="lines",
                             name="Pareto front", line={"color": "#000000", "dash": "dot"}, hoverinfo="skip"))
    fig.update_layout(**_LAYOUT, xaxis_title="latency per sequence (ms, 1 CPU thread)",
                      yaxis_title="mean accuracy")
    chart.figure = _fig_json(fig)
    return chart


def _escape_figure(fig: dict[str, Any]) -> dict[str, Any]:
    """Escape the study's strings (parameter names, choices) inside an optuna-made figure."""
    def clean(v: Any) -> Any:
        if isinstance(v, str):
            # keep plotly's own hover markup, escape the rest
            return esc(v).replace("&lt;extra&gt;&lt;/extra&gt;", "<extra></extra>").replace("&lt;br&gt;", "<br>")
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    for trace in fig.get("data", []):
        for key in ("x", "y", "text", "hovertext", "hovertemplate", "name"):
            if key in trace:
                trace[key] = clean(trace[key])
    return fig


def tune_charts(study: optuna.Study) -> list[Chart]:
    """Optimisation history and PED-ANOVA parameter importance (tune and both modes)."""
    history = Chart("history", "Optimisation history",
                    "Mean accuracy of every finished trial in order, and the best so far.")
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if done:
        fig = optuna.visualization.plot_optimization_history(study, target_name="mean accuracy")
        fig.update_layout(**_LAYOUT, title_text="")  # the page's heading names it
        history.figure = _escape_figure(_fig_json(fig))
    else:
        history.notes.append("No completed trial yet.")
    importance = Chart("importance", "Parameter importance (PED-ANOVA)",
                       "How much each parameter separates the best trials from the rest "
                       "(optuna's PedAnovaImportanceEvaluator); with few trials it is a rough hint only.")
    varying = {name for name in {p for t in done for p in t.params}
               if len({repr(t.params.get(name)) for t in done}) > 1}
    if len(done) < 2 or not varying:
        importance.notes.append(f"Needs at least 2 completed trials whose parameters differ "
                                f"({len(done)} completed so far).")
        return [history, importance]
    from optuna.importance import PedAnovaImportanceEvaluator

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fig = optuna.visualization.plot_param_importances(study, evaluator=PedAnovaImportanceEvaluator())
        except (ValueError, RuntimeError) as e:  # optuna refuses some degenerate studies
            importance.notes.append(f"optuna could not compute importances: {esc(e)}")
            return [history, importance]
    fig.update_layout(**_LAYOUT, title_text="")
    importance.figure = _escape_figure(_fig_json(fig))
    importance.notes += sorted({f"optuna: {esc(w.message)}" for w in caught})
    return [history, importance]


def study_charts(a: dict[str, Any], study: optuna.Study | None) -> list[Chart]:
    """Every chart of a study report, in page order."""
    charts = [fold_chart(a), forest_chart(a), curves_chart(a), time_chart(a)]
    speed = speed_chart(a)
    if speed is not None:
        charts.append(speed)
    if study is not None and a.get("mode") in ("tune", "both"):
        charts += tune_charts(study)
    return charts
