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

from ablate.report.stats import compare_arms
from ablate.study import records
from ablate.study.modes import mode_of
from ablate.study.records import FoldScore, StudyMeta, TrialRecord

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
    """The trial's fold scores placed at their step (seed * K + fold); None where missing."""
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
    return {
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
    """'cuda:1 (NVIDIA H100) at bf16', 'cpu at off'; '' for folds recorded before devices were."""
    if not f.device:
        return ""
    return f.device + (f" ({f.gpu})" if f.gpu else "") + f" at {f.amp or 'off'}"


def analyze(study: optuna.Study, alpha: float = 0.05, rope: tuple[float, float] | None = None,
            with_leakage: bool = True) -> dict[str, Any]:
    """Everything a reader needs to judge the study: setup, per-arm statistics, trial counts, warnings."""
    meta = records.read_meta(study)
    mode = mode_of(meta.mode)
    arms = list(meta.arms)
    baseline = meta.baseline or (arms[0] if arms else "")
    n_slots = int(meta.folds) * int(meta.seeds)
    recs = records.trial_records(study, meta)
    by_arm: dict[str, list[TrialRecord]] = {a: [r for r in recs if r.arm == a] for a in arms}
    reps = {a: mode.representative(rs) for a, rs in by_arm.items()}
    scores = {a: (fold_vector(r, n_slots) if r else [None] * n_slots) for a, r in reps.items()}
    folds = [f for r in reps.values() if r for f in r.folds]
    n_train = float(np.mean([f.n_train for f in folds])) if folds else math.nan
    n_test = float(np.mean([f.n_val for f in folds])) if folds else math.nan
    rows = compare_arms(scores, baseline, n_train, n_test, alpha=alpha, rope=rope) if folds and baseline in scores else []
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
        "warnings": _warnings(meta, mode.warnings(), recs, n_slots) + _precision_warning(out_arms)}


def _precision_warning(arms: list[dict[str, Any]]) -> list[str]:
    """Arms that ran at different precisions (a study resumed on another kind of machine) are not
    compared on equal terms."""
    amps = {w.rsplit(" at ", 1)[1] for r in arms for w in r["trained_on"] if w}
    if len(amps) < 2:
        return []
    return [f"the arms ran at different precisions ({', '.join(sorted(amps))}): a study resumed on another kind of "
            "machine; differences may come from the precision, not the arms (see each arm's trained_on)"]


def _warnings(meta: StudyMeta, mode_warnings: list[str], recs: list[TrialRecord], n_slots: int) -> list[str]:
    out = []
    if meta.fold_kind == "ungrouped-leaky":
        out.append("UNGROUPED (leaky) folds: the same participants are in training and validation; "
                   "these scores only measure how much leakage flatters accuracy")
    out += mode_warnings
    if n_slots < 6:
        out.append(f"{n_slots} paired scores per arm: the Wilcoxon test needs at least 6 (use --seeds 2)")
    unfinished = sum(not r.finished for r in recs)
    if unfinished:
        out.append(f"{unfinished} trial(s) still waiting or running: the study is not finished")
    return out


def _summary(study: optuna.Study, meta: StudyMeta, recs: list[TrialRecord], arms: list[dict[str, Any]], alpha: float,
             rope: tuple[float, float] | None, n_train: float, n_test: float, sources: dict[str, str]) -> dict[str, Any]:
    return {
        "study": study.study_name, "space": meta.space, "question": meta.question, "axis": meta.axis,
        "mode": meta.mode, "baseline": meta.baseline, "preset": meta.preset, "folds": meta.folds,
        "seeds": meta.seeds, "fold_seed": meta.fold_seed, "fingerprint": meta.fingerprint, "data": meta.data,
        "recipe": meta.recipe, "sources": sources, "storage": meta.storage, "alpha": alpha,
        "rope": list(rope) if rope else None, "n_train": n_train, "n_test": n_test,
        "finished": bool(recs) and all(r.finished for r in recs), "n_trials": len(recs), "arms": arms,
    }


def _fmt(v: Any, digits: int = 4) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _fmt_p(v: Any) -> str:
    """p-values with 3 significant digits, as in the HTML report."""
    return "–" if v is None else f"{v:.3g}"


def md(text: Any) -> str:
    """User text made inert in Markdown: HTML, table pipes and emphasis characters escaped."""
    import html

    out = html.escape(str(text), quote=False)
    for ch in "\\|*_`[]#":
        out = out.replace(ch, "\\" + ch)
    return out


def verdict_table_markdown(a: dict[str, Any]) -> str:
    """The summary table as Markdown (the dashboard note)."""
    lines = ["| arm | folds | mean acc [95% CI] | diff vs baseline [CI] | p corrected (Holm) | p Wilcoxon (Holm) | verdict |",
             "|---|---|---|---|---|---|---|"]
    for r in a["arms"]:
        lines.append(
            f"| {md(r['arm'])} | {r['n']} | {_fmt(r['mean'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] | "
            f"{_fmt(r['diff'])} [{_fmt(r['diff_low'])}, {_fmt(r['diff_high'])}] | "
            f"{_fmt_p(r['p_corrected_holm'])} | {_fmt_p(r['p_wilcoxon_holm'])} | {md(r['verdict'])} |")
    return "\n".join(lines)
