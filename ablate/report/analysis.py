"""A study's evidence as one JSON-ready dict: the single source of the HTML report, `ablate report
--format json` and the optuna-dashboard note, so all three show the same numbers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from ablate.report.stats import compare_arms

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
LEAKY_SUFFIX = "-leaky"  # `ablate run SPACE --leaky-folds` runs the study SPACE-PRESET-leaky


def _leakage(study: optuna.Study, arms: list[dict[str, Any]]) -> None:
    """Put each arm's grouped and ungrouped (leaky) fold scores side by side, when both studies exist."""
    name = study.study_name
    grouped_name = name[: -len(LEAKY_SUFFIX)] if name.endswith(LEAKY_SUFFIX) else name
    try:
        other = optuna.load_study(study_name=grouped_name + LEAKY_SUFFIX if name == grouped_name else grouped_name,
                                  storage=study._storage)
    except KeyError:
        return
    theirs = {r["arm"]: r["scores"] for r in analyze(other, with_leakage=False)["arms"]}
    for r in arms:
        if r["arm"] in theirs and any(v is not None for v in theirs[r["arm"]]):
            pair = (r["scores"], theirs[r["arm"]])
            grouped, ungrouped = pair if name == grouped_name else pair[::-1]
            r["leakage"] = {"grouped": grouped, "ungrouped": ungrouped}


def fold_vector(t: FrozenTrial, n_slots: int) -> list[float | None]:
    """The trial's fold scores placed at their step (seed * K + fold); None where missing."""
    out: list[float | None] = [None] * n_slots
    for f in t.user_attrs.get("folds", []):
        if 0 <= f["step"] < n_slots:
            out[f["step"]] = float(f["score"])
    return out


def _representative(trials: list[FrozenTrial], mode: str) -> FrozenTrial | None:
    """The trial whose folds stand for the arm: the compare-stage one ('both'), the best complete
    one ('tune'), else the complete, then the pruned, then the failed trial with most folds."""
    if mode == "both":
        trials = [t for t in trials if t.user_attrs.get("stage") == "compare"] or []
    order = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.FAIL: 2}
    usable = [t for t in trials if t.state in order and t.user_attrs.get("folds")]
    if not usable:
        return None
    return min(usable, key=lambda t: (order[t.state], -(t.value or 0.0), -len(t.user_attrs["folds"]), t.number))


def _arm(t: FrozenTrial) -> str | None:
    return t.user_attrs.get("arm") or t.params.get("arm") or (t.system_attrs.get("fixed_params") or {}).get("arm")


def analyze(study: optuna.Study, alpha: float = 0.05, rope: tuple[float, float] | None = None,
            with_leakage: bool = True) -> dict[str, Any]:
    """Everything a reader needs to judge the study: setup, per-arm statistics, trial counts, warnings."""
    ua = study.user_attrs
    arms: list[str] = list(ua.get("arms", []))
    baseline = ua.get("baseline", arms[0] if arms else "")
    mode = ua.get("mode", "ablation")
    n_slots = int(ua.get("folds", 5)) * int(ua.get("seeds", 1))
    trials = study.get_trials(deepcopy=False)
    by_arm: dict[str, list[FrozenTrial]] = {a: [] for a in arms}
    for t in trials:
        a = _arm(t)
        if a in by_arm:
            by_arm[a].append(t)
    reps = {a: _representative(ts, mode) for a, ts in by_arm.items()}
    scores = {a: (fold_vector(r, n_slots) if r else [None] * n_slots) for a, r in reps.items()}
    folds = [f for r in reps.values() if r for f in r.user_attrs.get("folds", [])]
    n_train = float(np.mean([f["n_train"] for f in folds])) if folds else math.nan
    n_test = float(np.mean([f["n_val"] for f in folds])) if folds else math.nan
    rows = compare_arms(scores, baseline, n_train, n_test, alpha=alpha, rope=rope) if folds and baseline in scores else []
    out_arms = []
    for row in rows:
        ts = by_arm[row.arm]
        r = reps[row.arm]
        counts = {s: sum(t.state.name == s for t in ts) for s in STATES}
        stale = sum(bool(t.user_attrs.get("stale") or t.user_attrs.get("interrupted")) for t in ts)
        counts["FAIL"] -= stale  # unfinished-and-retried trials are not failures of the arm
        info = row.to_json() | {
            "trials": counts,
            "trial": r.number if r else None,
            "state": r.state.name if r else "no trial",
            "scores": scores[row.arm],
            "train_seconds": float(sum(f["seconds"] for f in r.user_attrs.get("folds", []))) if r else 0.0,
            "params": {k: v for k, v in r.params.items() if k != "arm"} if r else {},
            "fail_reasons": sorted({t.user_attrs["fail_reason"] for t in ts if "fail_reason" in t.user_attrs}),
            "curves": [{"fold": f["fold"], "seed": f["seed"], **f.get("curve", {})} for f in r.user_attrs.get("folds", [])] if r else [],
        }
        if r and r.state == TrialState.PRUNED:
            info["warnings"].append("pruned: only the folds it finished count, and it is no result on its own")
        if counts["FAIL"]:
            info["warnings"].append(f"{counts['FAIL']} failed trial(s): " + "; ".join(info["fail_reasons"])[:300])
        out_arms.append(info)
    if with_leakage:
        _leakage(study, out_arms)
    warnings = []
    if ua.get("fold_kind") == "ungrouped-leaky":
        warnings.append("UNGROUPED (leaky) folds: the same participants are in training and validation; "
                        "these scores only measure how much leakage flatters accuracy")
    if mode == "tune":
        warnings.append("tune mode: each arm's figure is its best trial out of several, which flatters it; "
                        "use mode 'both' for a comparison with fresh seeds")
    if n_slots < 6:
        warnings.append(f"{n_slots} paired scores per arm: the Wilcoxon test needs at least 6 (use --seeds 2)")
    unfinished = sum(not t.state.is_finished() for t in trials)
    if unfinished:
        warnings.append(f"{unfinished} trial(s) still waiting or running: the study is not finished")
    return {
        "study": study.study_name, "space": ua.get("space"), "question": ua.get("question", ""),
        "axis": ua.get("axis"), "mode": mode, "baseline": baseline, "preset": ua.get("preset"),
        "folds": ua.get("folds"), "seeds": ua.get("seeds"), "fold_seed": ua.get("fold_seed"),
        "fingerprint": ua.get("fingerprint"), "data": ua.get("data", {}), "recipe": ua.get("recipe", {}),
        "storage": ua.get("storage", ""), "alpha": alpha, "rope": list(rope) if rope else None,
        "n_train": n_train, "n_test": n_test, "finished": unfinished == 0 and bool(trials),
        "n_trials": len(trials), "arms": out_arms, "warnings": warnings,
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
