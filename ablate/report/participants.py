"""Who an arm helps: per-participant accuracy of each arm, its paired difference to the baseline,
and whether an arm's effect differs between groups of participants.

From the predictions every trial stores per validation sequence (ablate.study.predictions). A
sequence is validated once per (repeat, seed); its correctness is averaged over them. A
participant's accuracy is the mean over their sequences; a group's difference is the mean of its
participants' differences (each participant counts once, as in the fold scores).

Intervals come from a two-stage bootstrap (participants, then sequences within each participant;
the paired difference of a sequence stays paired): per participant the within stage alone, per
group both. A group contrast (e.g. left- against right-dominant signers) is reported in words
when its interval excludes zero at 1 - 0.05/m, m = arms x attributes (Bonferroni), so the
sentences together hold a 5% family-wise error rate.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna

from ablate.report.verdicts import Design
from ablate.study import predictions
from ablate.study.records import TrialRecord

BOOT = 2000
ALPHA = 0.05


def _correct(t: optuna.trial.FrozenTrial, labels: np.ndarray, design: Design) -> np.ndarray | None:
    """Mean correctness per sequence over the trial's (repeat, seed) passes; None when the trial
    lacks a fold's predictions (a study from before they were stored, or an unfinished trial)."""
    preds = predictions.predictions(t)
    if len(preds) < design.slots:
        return None
    total, count = np.zeros(labels.size), np.zeros(labels.size)
    for p in preds.values():
        np.add.at(total, p.index, (p.predicted == labels[p.index]).astype(np.float64))
        np.add.at(count, p.index, 1.0)
    if (count != design.repeats * design.seeds).any():
        return None
    return total / count


def _within(diffs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """BOOT bootstrap means of one participant's per-sequence differences (multinomial over their
    distinct values: exact resampling, cheap however many sequences)."""
    values, counts = np.unique(diffs, return_counts=True)
    draws = rng.multinomial(diffs.size, counts / diffs.size, size=BOOT)
    return draws @ values / diffs.size


def _interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _groups(facts: list[dict[str, Any]]) -> dict[str, tuple[str, str, np.ndarray]]:
    """attribute -> (name of group A, of group B, mask of A over participants), where both exist."""
    out: dict[str, tuple[str, str, np.ndarray]] = {}
    out["dominant hand"] = ("left-dominant", "right-dominant", np.array([f["dominant_hand"] == "left" for f in facts]))
    for key, label in (("median_length", "sequence length"), ("no_hand_share", "frames without hands")):
        v = np.array([f[key] for f in facts], dtype=np.float64)
        out[label] = (f"{label} above the median", f"{label} at or below it", v > np.median(v))
    gen = [f.get("generator") for f in facts]
    if all(gen):
        out["left-handed (generator)"] = ("left-handed", "right-handed", np.array([g["left_handed"] for g in gen]))
        tilt = np.array([abs(g["tilt_deg"]) for g in gen])
        out["camera tilt (generator)"] = ("tilted more than the median", "tilted less", tilt > np.median(tilt))
    return {k: v for k, v in out.items() if v[2].any() and not v[2].all()}


def _effect(arm: str, attribute: str, group: tuple[str, str, np.ndarray], point: np.ndarray, boot: np.ndarray,
            level: float, rng: np.random.Generator) -> dict[str, Any]:
    """The arm's mean difference in each group and the gap between them, with bootstrap intervals."""
    names, reps = [], []
    out: dict[str, Any] = {"arm": arm, "attribute": attribute, "groups": {}, "level": level}
    for name, mask in ((group[0], group[2]), (group[1], ~group[2])):
        members = np.flatnonzero(mask)
        pick = members[rng.integers(0, members.size, (BOOT, members.size))]
        rep = boot[pick, rng.integers(0, BOOT, pick.shape)].mean(axis=1)
        lo, hi = _interval(rep, level)
        out["groups"][name] = {"participants": int(members.size), "difference": float(point[members].mean()),
                               "low": lo, "high": hi}
        names.append(name)
        reps.append(rep)
    a, b = (out["groups"][n]["difference"] for n in names)
    out["gap"], (out["gap_low"], out["gap_high"]) = a - b, _interval(reps[0] - reps[1], level)
    out["differs"] = bool(out["gap_low"] > 0 or out["gap_high"] < 0)
    if out["differs"]:
        more, less = (names[0], names[1]) if abs(a) >= abs(b) else (names[1], names[0])
        d_more, d_less = out["groups"][more]["difference"], out["groups"][less]["difference"]
        word = "better" if d_more > 0 else "worse"
        out["text"] = (f"{arm} is {word} mostly for {more} signers ({d_more:+.3f}) rather than for {less} ones "
                       f"({d_less:+.3f}): the gap {out['gap']:+.3f} [{out['gap_low']:+.3f}, {out['gap_high']:+.3f}] "
                       f"excludes zero at {level * 100:.3g}% (by {attribute})")
    return out


def panel(study: optuna.Study, reps: dict[str, TrialRecord | None], baseline: str, design: Design,
          arms: list[str]) -> dict[str, Any]:
    """{"participants": [...], "participant_effects": [...], "participant_note": str} (see the module)."""
    seqs = predictions.read_sequences(study)
    empty = {"participants": [], "participant_effects": []}
    if seqs is None:
        return empty | {"participant_note": "this study did not record its sequences (begun by an older version)"}
    who, labels, facts = seqs
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    correct = {a: _correct(trials[r.number], labels, design) for a, r in reps.items() if r and a in arms}
    correct = {a: c for a, c in correct.items() if c is not None}
    if baseline not in correct:
        return empty | {"participant_note": "the baseline has no complete per-sequence predictions yet"}
    n_p = len(facts)
    acc = {a: np.array([c[who == p].mean() if (who == p).any() else math.nan for p in range(n_p)])
           for a, c in correct.items()}
    rng = np.random.default_rng(0)
    rows = [{k: f[k] for k in f} | {"arms": {}} for f in facts]
    groups = _groups(facts)
    level = 1 - ALPHA / max(1, (len(correct) - 1) * len(groups))
    effects = []
    for a in correct:
        diff = acc[a] - acc[baseline]
        boot = np.stack([_within(correct[a][who == p] - correct[baseline][who == p], rng) for p in range(n_p)])
        for p, row in enumerate(rows):
            entry = {"accuracy": float(acc[a][p]), "difference": 0.0}
            if a != baseline:
                entry |= {"difference": float(diff[p])} | dict(zip(("low", "high"), _interval(boot[p], 0.95), strict=True))
            row["arms"][a] = entry
        if a != baseline:
            effects += [_effect(a, attr, g, diff, boot, level, rng) for attr, g in groups.items()]
    missing = [a for a in arms if a not in correct]
    note = f"no per-sequence predictions for {', '.join(missing)} (incomplete or older trials)" if missing else ""
    return {"participants": rows, "participant_effects": effects, "participant_note": note}
