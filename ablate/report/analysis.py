"""A study's evidence as one JSON-ready dict: the single source of the HTML report, `ablate report
--format json`, the optuna-dashboard note and `ablate finalize`'s choice, so all show the same numbers.

It reads the study through its typed records (ablate.study.records) and asks the study's mode
which trial stands for each arm.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna

from scipy import stats

from ablate.report.participants import panel
from ablate.report.stats import DECISION, POWER, detectable, repeats_needed
from ablate.report.verdicts import ArmStats, Design, compare_arms
from ablate.study import records
from ablate.study.modes import mode_of
from ablate.study.records import FoldScore, StudyMeta, TrialRecord
from ablate.study.speed import pareto

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
LEAKY_SUFFIX = records.LEAKY_SUFFIX


def _leakage(study: optuna.Study, arms: list[dict[str, Any]]) -> None:
    """Put each arm's grouped and ungrouped (leaky) fold scores side by side, when both studies exist."""
    name = study.study_name
    grouped_name = name[: -len(LEAKY_SUFFIX)] if name.endswith(LEAKY_SUFFIX) else name
    other = records.load_sibling(study, grouped_name + LEAKY_SUFFIX if name == grouped_name else grouped_name)
    if other is None:
        return
    theirs = {r["arm"]: r["scores"] for r in analyze(other, with_leakage=False)["arms"]}
    for r in arms:
        if r["arm"] in theirs and any(v is not None for v in theirs[r["arm"]]):
            pair = (r["scores"], theirs[r["arm"]])
            grouped, ungrouped = pair if name == grouped_name else pair[::-1]
            r["leakage"] = {"grouped": grouped, "ungrouped": ungrouped}


def fold_vector(rec: TrialRecord, n_slots: int) -> list[float | None]:
    """The trial's fold scores placed at their step ((repeat * seeds + seed) * K + fold); None where missing."""
    out: list[float | None] = [None] * n_slots
    for f in rec.folds:
        if 0 <= f.step < n_slots:
            out[f.step] = float(f.score)
    return out


def _arm_info(rec: TrialRecord | None, recs: list[TrialRecord], baseline_sources: dict[str, str]) -> dict[str, Any]:
    counts = {s: sum(r.state == s for r in recs) for s in STATES}
    counts["FAIL"] -= sum(r.unfinished and r.state == "FAIL" for r in recs)  # retried copies are not failures
    reasons = sorted({r.fail_reason for r in recs if r.fail_reason and not r.unfinished})
    sources = rec.sources if rec else {}
    cost = (rec.speed if rec else None) or {}
    return {
        "parameters": cost.get("parameters"), "latency_ms": cost.get("latency_ms"),
        "trials": counts,
        "trial": rec.number if rec else None,
        "state": rec.state if rec else "no trial",
        "train_seconds": float(sum(f.seconds for f in rec.folds)) if rec else 0.0,
        "params": dict(rec.params) if rec else {},
        "fail_reasons": reasons,
        "curves": [{"fold": f.fold, "seed": f.seed, **f.curve} for f in rec.folds] if rec else [],
        # where this arm's recipe differs from the baseline's, and why (resolve's provenance)
        "sources": {k: v for k, v in sources.items() if baseline_sources.get(k) != v},
        "trained_on": sorted({_where(f) for f in rec.folds}) if rec else [],
    }


def _where(f: FoldScore) -> str:
    """'cuda:1 (NVIDIA H100) with CUDA graphs (whole steps) at bf16', 'cpu at off'; '' for folds
    recorded before devices were. The graphs' record (Step.graphs) as it is, "on" (the model
    alone in graphs) said by "with CUDA graphs" alone. The precision comes last
    (`_precision_warning` reads it there)."""
    if not f.device:
        return ""
    detail = "" if f.graphs == "on" else f.graphs.removeprefix("on, ")
    graphs = "" if not f.graphs else " (CUDA graphs failed)" if f.graphs.startswith("failed") else \
        " with CUDA graphs" + (f" ({detail})" if detail else "")
    return f.device + (f" ({f.gpu})" if f.gpu else "") + graphs + f" at {f.amp or 'off'}"


def analyze(study: optuna.Study, alpha: float = 0.05, rope: tuple[float, float] | None = None,
            with_leakage: bool = True) -> dict[str, Any]:
    """Everything a reader needs to judge the study: setup, per-arm statistics, trial counts, warnings.
    `rope` overrides the study's own (its space file's, else the default +-0.005)."""
    meta = records.read_meta(study)
    mode = mode_of(meta.mode)
    rope = (float(rope[0]), float(rope[1])) if rope else (float(meta.rope[0]), float(meta.rope[1]))
    design = Design(int(meta.repeats), int(meta.seeds), int(meta.folds))
    arms = list(meta.arms)
    baseline = meta.baseline or (arms[0] if arms else "")
    recs = records.trial_records(study, meta)
    by_arm: dict[str, list[TrialRecord]] = {a: [r for r in recs if r.arm == a] for a in arms}
    reps = {a: mode.representative(rs) for a, rs in by_arm.items()}
    scores = {a: (fold_vector(r, design.slots) if r else [None] * design.slots) for a, r in reps.items()}
    complete = {a: bool(r) and r.state == "COMPLETE" and not r.unfinished for a, r in reps.items()}
    folds = [f for r in reps.values() if r for f in r.folds]
    n_train = float(np.mean([f.n_train for f in folds])) if folds else math.nan
    n_test = float(np.mean([f.n_val for f in folds])) if folds else math.nan
    rows = compare_arms(scores, baseline, design, n_test / n_train, rope, alpha, complete) \
        if folds and baseline in scores else []
    base_rep = reps.get(baseline)
    base_sources = base_rep.sources if base_rep else {}
    out_arms = []
    for row in rows:
        info = row.to_json() | {"scores": scores[row.arm]} | _arm_info(reps[row.arm], by_arm[row.arm], base_sources)
        if reps[row.arm] and reps[row.arm].state == "PRUNED":
            info["warnings"].append("pruned: only the folds it finished count, and it is no result on its own")
        if info["trials"]["FAIL"]:
            info["warnings"].append(f"{info['trials']['FAIL']} failed trial(s): " + "; ".join(info["fail_reasons"])[:300])
        out_arms.append(info)
    if with_leakage:
        _leakage(study, out_arms)
    return _summary(study, meta, recs, out_arms, alpha, rope, n_train, n_test, base_sources) | {
        "sensitivity": sensitivity(rows, design, n_test / n_train if folds else math.nan, rope),
        "speed": _speed(reps, out_arms),
        **panel(study, reps, baseline, design, complete),
        "warnings": _warnings(meta, mode.warnings(), recs) + _precision_warning(out_arms)}


def _speed(reps: dict[str, TrialRecord | None], arms: list[dict[str, Any]]) -> dict[str, Any] | None:
    """How the arms' latencies were measured, and which arms are on the accuracy-latency Pareto
    front; None when no arm's latency was measured (axes that do not change the inference graph)."""
    timed = [r.speed for r in reps.values() if r and r.speed and r.speed.get("latency_ms") is not None]
    notes = sorted({f"{a}: {r.speed['note']}" for a, r in reps.items() if r and r.speed and r.speed.get("note")})
    if not timed:
        return {"runtime": None, "pareto": [], "notes": notes} if notes else None
    points = {a["arm"]: (a["mean"], a["latency_ms"]) for a in arms
              if a.get("latency_ms") is not None and a.get("mean") is not None}
    loads = [s["load"] for s in timed if s.get("load") is not None]
    return {"runtime": timed[0]["runtime"], "lengths": timed[0]["lengths"], "pareto": pareto(points),
            "max_load": max(loads) if loads else None, "notes": notes}


HALF_POINT = 0.005  # the improvement beyond the ROPE's edge the summary asks the design about


def sensitivity(rows: list[ArmStats], design: Design, rho: float, rope: tuple[float, float]) -> dict[str, Any]:
    """What the design could have detected: the smallest improvement called "better" with 80% power
    at the typical (median) spread of the arms' unit differences, and the repeats that would detect
    one half a point beyond the ROPE's edge (None: repeats alone cannot, see stats.repeats_needed)."""
    sds = [r.sd_diff for r in rows[1:] if math.isfinite(r.sd_diff) and r.sd_diff > 0]
    if not sds or not math.isfinite(rho):
        return {"sd_diff": None, "mde": None, "target": rope[1] + HALF_POINT, "repeats_needed": None,
                "mde_limit": None, "units": design.units}
    sd = float(np.median(sds))
    limit = rope[1] + (stats.norm.ppf(DECISION) + stats.norm.ppf(POWER)) * math.sqrt(rho) * sd
    return {"sd_diff": sd, "mde": detectable(sd, design.units, rho, rope), "target": rope[1] + HALF_POINT,
            "repeats_needed": repeats_needed(sd, design.folds, rho, HALF_POINT, rope), "mde_limit": float(limit),
            "units": design.units}


def _precision_warning(arms: list[dict[str, Any]]) -> list[str]:
    """Arms that ran at different precisions (a study resumed on another kind of machine) are not
    compared on equal terms."""
    amps = {w.rsplit(" at ", 1)[1] for r in arms for w in r["trained_on"] if w}
    if len(amps) < 2:
        return []
    return [f"the arms ran at different precisions ({', '.join(sorted(amps))}): a study resumed on another kind of "
            "machine; differences may come from the precision, not the arms (see each arm's trained_on)"]


def _warnings(meta: StudyMeta, mode_warnings: list[str], recs: list[TrialRecord]) -> list[str]:
    out = []
    if meta.fold_kind == "ungrouped-leaky":
        out.append("UNGROUPED (leaky) folds: the same participants are in training and validation; "
                   "these scores only measure how much leakage flatters accuracy")
    out += mode_warnings
    unfinished = sum(not r.finished for r in recs)
    if unfinished:
        out.append(f"{unfinished} trial(s) still waiting or running: the study is not finished")
    return out


def _summary(study: optuna.Study, meta: StudyMeta, recs: list[TrialRecord], arms: list[dict[str, Any]], alpha: float,
             rope: tuple[float, float] | None, n_train: float, n_test: float, sources: dict[str, str]) -> dict[str, Any]:
    return {
        "study": study.study_name, "space": meta.space, "question": meta.question, "axis": meta.axis,
        "mode": meta.mode, "baseline": meta.baseline, "preset": meta.preset,
        "recipe_name": meta.recipe_name, "folds": meta.folds,
        "seeds": meta.seeds, "repeats": meta.repeats, "decision": DECISION, "fold_seed": meta.fold_seed, "fingerprint": meta.fingerprint, "data": meta.data,
        "recipe": meta.recipe, "sources": sources, "storage": meta.storage, "alpha": alpha,
        "rope": list(rope) if rope else None, "n_train": n_train, "n_test": n_test,
        "finished": bool(recs) and all(r.finished for r in recs), "n_trials": len(recs), "arms": arms,
    }


def _fmt(v: Any, digits: int = 4, sign: str = "") -> str:
    return "–" if v is None else f"{v:{sign}.{digits}f}"


TABLE_HEAD = ("arm", "units", "mean acc", "diff vs baseline [95% interval]", "P(worse/equiv/better)",
              "detectable", "verdict")


def verdict_cells(a: dict[str, Any]) -> list[tuple[str, ...]]:
    """The verdict table's rows as text cells (the terminal and the dashboard note; the HTML report
    shows the same numbers): units complete of the design, the posterior interval the verdict was
    decided on, the three posterior probabilities and the smallest detectable improvement."""
    units = int(a.get("repeats") or 1) * int(a.get("folds") or 0)
    out = []
    for r in a["arms"]:
        base = r["verdict"] == "baseline"
        diff = "baseline" if base else f"{_fmt(r['diff'], sign='+')} [{_fmt(r['diff_low'], sign='+')}, " \
                                       f"{_fmt(r['diff_high'], sign='+')}]"
        probs = "" if base or r["p_better"] is None else \
            f"{r['p_worse']:.3f} / {r['p_equivalent']:.3f} / {r['p_better']:.3f}"
        out.append((str(r["arm"]), f"{r['n_units']}/{units}", _fmt(r["mean"]), diff, probs,
                    "" if base else _fmt(r["mde"], sign="+"), str(r["verdict"])))
    return out


def md(text: Any) -> str:
    """User text made inert in Markdown: HTML, table pipes and emphasis characters escaped."""
    import html

    out = html.escape(str(text), quote=False)
    for ch in "\\|*_`[]#":
        out = out.replace(ch, "\\" + ch)
    return out


def verdict_table_markdown(a: dict[str, Any]) -> str:
    """The summary table as Markdown (the dashboard note)."""
    lines = ["| " + " | ".join(TABLE_HEAD) + " |", "|" + "---|" * len(TABLE_HEAD)]
    lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in verdict_cells(a)]
    return "\n".join(lines)
